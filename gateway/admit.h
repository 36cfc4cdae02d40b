/*
 * admit: admission control on the fetch layer's event loop - the decisions
 * of policy/admission (read its header: the gates, the FIFO queue, tickets,
 * refusals and their retry-afters, the breaker) plus the two things a pure
 * module cannot have: the clock and the timer.
 *
 * Each function is its admission_* namesake; the types, ADMIT_* bounds and
 * admit_limit_name are policy/admission's. What this layer adds: one
 * libevent timer, armed where policy/admission asks to be woken and firing
 * admission_pump with the loop's monotonic clock (event_gettime_monotonic),
 * which is also the clock callers pass as now_ms; admit_set_config reads it
 * itself.
 *
 * Callbacks (go, refuse, wanted) run from the timer or from admit_ask,
 * admit_done, admit_cancel and admit_set_config, on the loop's thread.
 *
 * Threads: one per fetch layer, everything on the upstream loop's thread.
 */
#ifndef CG_GATEWAY_ADMIT_H
#define CG_GATEWAY_ADMIT_H

#include <stddef.h>
#include <stdint.h>

#include "policy/admission.h"

struct event_base;
struct admit;

/* Creates the admission control on `base` (for its timer). NULL on bad
 * settings (a rate or burst policy/bucket refuses). */
struct admit *admit_new(struct event_base *base, const struct admit_config *cfg);

/* Frees it. Every ticket must be done or cancelled first. */
void admit_free(struct admit *a);

/* admission_set_config at the loop's time now. */
int admit_set_config(struct admit *a, const struct admit_config *cfg);

/* admission_ask. */
int admit_ask(struct admit *a, struct admit_ticket *t, const uint8_t *key,
	      const uint8_t *caller, const uint8_t *client, int may_queue, admit_go_fn go,
	      admit_refuse_fn refuse, admit_wanted_fn wanted, void *arg, int64_t now_ms,
	      enum admit_refusal *why, int64_t *retry_after_ms);

/* admission_mark_known, admission_forget_known. */
void admit_mark_known(struct admit *a, const uint8_t *key);
void admit_forget_known(struct admit *a, const uint8_t *key);

/* admission_done, admission_cancel (the ticket knows its admission). */
void admit_done(struct admit_ticket *t, enum admit_outcome outcome,
		int64_t retry_after_ms, int64_t now_ms);
void admit_cancel(struct admit_ticket *t, int64_t now_ms);

/* admission_blocked_ms. */
int64_t admit_blocked_ms(const struct admit *a, const uint8_t *key, int64_t now_ms);

/* admission_breaker_until: for publishing to other threads. */
int64_t admit_breaker_until(const struct admit *a);

/* admission_breaker_open. */
int admit_breaker_open(const struct admit *a, int64_t now_ms);

/* For logs and metrics: admission_keys_blocked, _queued, _running,
 * _breaker_state. */
size_t admit_keys_blocked(const struct admit *a, int64_t now_ms);
size_t admit_queued(const struct admit *a);
size_t admit_running(const struct admit *a);
const char *admit_breaker_state(const struct admit *a);

#endif
