/*
 * admit: see admit.h. The struct owns the policy/admission handle and the
 * timer its wakes arm; nothing else.
 */
#include "gateway/admit.h"

#include <event2/event.h>
#include <stdlib.h>

#include "gateway/clock.h"
#include "policy/check.h"

#define ADMIT_MAGIC 0x41444d54u

struct admit {
	unsigned magic;
	struct admission *adm;
	struct event *timer; /* pending when admission asked to be woken */
};

/* The monotonic clock callers pass as now_ms too. */
static int64_t mono_ms(const struct admit *a)
{
	return loop_mono_ms(event_get_base(a->timer));
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct admit *a = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	admission_pump(a->adm, mono_ms(a));
}

/* admission_wake_fn: arms the timer in_ms from now, or stops it (0). */
static void on_wake(void *arg, int64_t in_ms)
{
	struct admit *a = arg;
	struct timeval tv = {.tv_sec = in_ms / 1000, .tv_usec = (in_ms % 1000) * 1000};

	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	CHECK(in_ms >= 0);
	if (in_ms == 0)
		evtimer_del(a->timer);
	else
		evtimer_add(a->timer, &tv);
}

struct admit *admit_new(struct event_base *base, const struct admit_config *cfg)
{
	struct admit *a = calloc(1, sizeof(*a));

	AN(a);
	a->magic = ADMIT_MAGIC;
	a->timer = evtimer_new(base, on_timer, a);
	a->adm = admission_new(cfg, on_wake, a);
	if (a->timer == NULL || a->adm == NULL) {
		admit_free(a);
		return NULL;
	}
	return a;
}

void admit_free(struct admit *a)
{
	if (a == NULL)
		return;
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	admission_free(a->adm);
	if (a->timer)
		event_free(a->timer);
	a->magic = 0;
	free(a);
}

int admit_set_config(struct admit *a, const struct admit_config *cfg)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_set_config(a->adm, cfg, mono_ms(a));
}

int admit_ask(struct admit *a, struct admit_ticket *t, const uint8_t *key,
	      const uint8_t *caller, const uint8_t *client, int may_queue, admit_go_fn go,
	      admit_refuse_fn refuse, admit_wanted_fn wanted, void *arg, int64_t now_ms,
	      enum admit_refusal *why, int64_t *retry_after_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_ask(a->adm, t, key, caller, client, may_queue, go, refuse,
			     wanted, arg, now_ms, why, retry_after_ms);
}

void admit_mark_known(struct admit *a, const uint8_t *key)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	admission_mark_known(a->adm, key);
}

void admit_forget_known(struct admit *a, const uint8_t *key)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	admission_forget_known(a->adm, key);
}

void admit_done(struct admit_ticket *t, enum admit_outcome outcome,
		int64_t retry_after_ms, int64_t now_ms)
{
	admission_done(t, outcome, retry_after_ms, now_ms);
}

void admit_cancel(struct admit_ticket *t, int64_t now_ms)
{
	admission_cancel(t, now_ms);
}

int64_t admit_blocked_ms(const struct admit *a, const uint8_t *key, int64_t now_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_blocked_ms(a->adm, key, now_ms);
}

int64_t admit_breaker_until(const struct admit *a)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_breaker_until(a->adm);
}

int admit_breaker_open(const struct admit *a, int64_t now_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_breaker_open(a->adm, now_ms);
}

size_t admit_keys_blocked(const struct admit *a, int64_t now_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_keys_blocked(a->adm, now_ms);
}

size_t admit_queued(const struct admit *a)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_queued(a->adm);
}

size_t admit_running(const struct admit *a)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_running(a->adm);
}

const char *admit_breaker_state(const struct admit *a)
{
	CHECK_OBJ_NOTNULL(a, ADMIT_MAGIC);
	return admission_breaker_state(a->adm);
}
