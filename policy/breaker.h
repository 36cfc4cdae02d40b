/*
 * breaker: the circuit breaker of one upstream host (struct limit_breaker,
 * a plain value). Pure: the clock is a parameter (policy/limit.h).
 *
 * States: closed (requests flow; consecutive failures are counted) -> open
 * (at failure_threshold consecutive failures; everything denied for
 * cooldown_ms) -> half-open (the cool-down is over and exactly one request,
 * the probe, is outstanding; the rest are denied) -> closed on the probe's
 * success, or open for another cool-down on its failure, or back to open with
 * the cool-down already over (next caller probes) when the probe is
 * abandoned. A threshold of 0 disables the breaker: always LIMIT_ALLOW.
 *
 * Invariant: at most one probe is outstanding at a time.
 *
 * Ownership: the caller owns the value (embed one per upstream host); every
 * pointer argument is borrowed for the call only. Not thread-safe.
 */
#ifndef CG_POLICY_BREAKER_H
#define CG_POLICY_BREAKER_H

#include <stdint.h>

#include "policy/limit.h"

#define LIMIT_PROBE_WAIT_MS 1000 /* retry-after while a probe is out */

enum limit_breaker_state {
	LIMIT_BREAKER_CLOSED = 0,
	LIMIT_BREAKER_OPEN,
	LIMIT_BREAKER_HALF_OPEN, /* a probe is outstanding */
};

enum limit_verdict {
	LIMIT_ALLOW = 0, /* closed: send */
	LIMIT_PROBE,	 /* send: this request is the probe; report its end with
			  * success, failure or abandon */
	LIMIT_DENY,	 /* do not send; *retry_after_ms says when to ask again */
};

/* A plain value: embed one per upstream host; read `state` for metrics. */
struct limit_breaker {
	enum limit_breaker_state state;
	unsigned threshold;  /* consecutive failures that open it; 0: disabled */
	unsigned failures;   /* consecutive failures counted (saturating) */
	int64_t cooldown_ms; /* in [0, LIMIT_DELAY_MAX_MS] */
	int64_t reopen_ms;   /* open: when the next probe may go */
};

/*
 * Initialises `b` closed with no failures. cooldown_ms is clamped into
 * [0, LIMIT_DELAY_MAX_MS]. failure_threshold 0 disables the breaker.
 */
void limit_breaker_init(struct limit_breaker *b, unsigned failure_threshold,
			int64_t cooldown_ms);

/*
 * May a request go to this host at now_ms? LIMIT_ALLOW when closed (or
 * disabled); LIMIT_PROBE when open, the cool-down is over and no probe is
 * outstanding (the breaker goes half-open; the caller must later call
 * success, failure or abandon for this request); LIMIT_DENY otherwise, with
 * *retry_after_ms (may be NULL) set to the remaining cool-down, or to
 * LIMIT_PROBE_WAIT_MS while the probe is outstanding - always >= 1. On ALLOW
 * and PROBE *retry_after_ms is set to 0.
 */
enum limit_verdict limit_breaker_allow(struct limit_breaker *b, int64_t now_ms,
				       int64_t *retry_after_ms);

/*
 * The verdict limit_breaker_allow would give at now_ms, with the same
 * *retry_after_ms (may be NULL), without changing the breaker: LIMIT_PROBE
 * here means "a probe may go", not "this is the probe". For deciding whether
 * to queue or refuse before asking for real.
 */
enum limit_verdict limit_breaker_peek(const struct limit_breaker *b, int64_t now_ms,
				      int64_t *retry_after_ms);

/*
 * The host answered (any answer that shows it works, e.g. 2xx or 4xx other
 * than 429): closes the breaker and resets the failure count.
 */
void limit_breaker_success(struct limit_breaker *b);

/*
 * The host failed (connect error, timeout, 5xx) at now_ms. Closed: counts the
 * consecutive failure and opens at the threshold for cooldown_ms. Half-open
 * (the probe failed): opens again for another cool-down from now_ms. Open: a
 * late failure of a request admitted earlier; the deadline is kept.
 * The breaker cannot tell a probe's answer from a late one of a request sent
 * before it opened; either is taken as the probe's.
 */
void limit_breaker_failure(struct limit_breaker *b, int64_t now_ms);

/*
 * The probe ended without an answer either way (the client left and the
 * request was cancelled): half-open goes back to open with the cool-down
 * over, so the next limit_breaker_allow hands out a new probe. Any other
 * state: no-op.
 */
void limit_breaker_abandon(struct limit_breaker *b);

/* "closed", "open" or "half-open", for logs and metrics; static storage. */
const char *limit_breaker_state_name(enum limit_breaker_state s);

#endif
