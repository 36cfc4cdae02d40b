/*
 * breaker: see breaker.h for the states and the one invariant (at most one
 * probe outstanding). The only state change outside success, failure and
 * abandon is limit_breaker_allow handing out the probe.
 */
#include "policy/breaker.h"

#include <limits.h>
#include <string.h>

#include "policy/check.h"

void limit_breaker_init(struct limit_breaker *b, unsigned failure_threshold,
			int64_t cooldown_ms)
{
	AN(b);
	memset(b, 0, sizeof(*b));
	b->state = LIMIT_BREAKER_CLOSED;
	b->threshold = failure_threshold;
	if (cooldown_ms < 0)
		cooldown_ms = 0;
	b->cooldown_ms =
	    cooldown_ms < LIMIT_DELAY_MAX_MS ? cooldown_ms : LIMIT_DELAY_MAX_MS;
}

static void breaker_open(struct limit_breaker *b, int64_t now_ms)
{
	b->state = LIMIT_BREAKER_OPEN;
	b->reopen_ms = now_ms + b->cooldown_ms;
}

enum limit_verdict limit_breaker_peek(const struct limit_breaker *b, int64_t now_ms,
				      int64_t *retry_after_ms)
{
	int64_t wait = 0;
	enum limit_verdict v = LIMIT_ALLOW;

	AN(b);
	CHECK(now_ms >= 0 && now_ms <= LIMIT_NOW_MAX);
	if (b->threshold == 0)
		goto out;
	switch (b->state) {
	case LIMIT_BREAKER_CLOSED:
		break;
	case LIMIT_BREAKER_OPEN:
		if (now_ms >= b->reopen_ms) {
			v = LIMIT_PROBE;
			break;
		}
		v = LIMIT_DENY;
		wait = b->reopen_ms - now_ms;
		/* A clock gone backwards cannot make the wait longer than a
		 * whole cool-down. */
		if (wait > b->cooldown_ms)
			wait = b->cooldown_ms;
		if (wait < 1)
			wait = 1;
		break;
	case LIMIT_BREAKER_HALF_OPEN:
		v = LIMIT_DENY;
		wait = LIMIT_PROBE_WAIT_MS;
		break;
	}
out:
	if (retry_after_ms != NULL)
		*retry_after_ms = wait;
	return v;
}

enum limit_verdict limit_breaker_allow(struct limit_breaker *b, int64_t now_ms,
				       int64_t *retry_after_ms)
{
	enum limit_verdict v = limit_breaker_peek(b, now_ms, retry_after_ms);

	/* The one state change: handing out the probe. */
	if (v == LIMIT_PROBE)
		b->state = LIMIT_BREAKER_HALF_OPEN;
	return v;
}

void limit_breaker_success(struct limit_breaker *b)
{
	AN(b);
	b->state = LIMIT_BREAKER_CLOSED;
	b->failures = 0;
}

void limit_breaker_failure(struct limit_breaker *b, int64_t now_ms)
{
	AN(b);
	CHECK(now_ms >= 0 && now_ms <= LIMIT_NOW_MAX);
	if (b->failures < UINT_MAX)
		b->failures++;
	if (b->threshold == 0)
		return;
	switch (b->state) {
	case LIMIT_BREAKER_CLOSED:
		if (b->failures >= b->threshold)
			breaker_open(b, now_ms);
		break;
	case LIMIT_BREAKER_HALF_OPEN:
		breaker_open(b, now_ms);
		break;
	case LIMIT_BREAKER_OPEN:
		break;
	}
}

void limit_breaker_abandon(struct limit_breaker *b)
{
	AN(b);
	/* reopen_ms was already reached when the probe went out, so the next
	 * allow hands out a new probe. */
	if (b->state == LIMIT_BREAKER_HALF_OPEN)
		b->state = LIMIT_BREAKER_OPEN;
}

const char *limit_breaker_state_name(enum limit_breaker_state s)
{
	switch (s) {
	case LIMIT_BREAKER_OPEN:
		return "open";
	case LIMIT_BREAKER_HALF_OPEN:
		return "half-open";
	case LIMIT_BREAKER_CLOSED:
		break;
	}
	return "closed";
}
