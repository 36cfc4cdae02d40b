/*
 * Unit tests for policy/admission: the gates, the FIFO queue per key and per
 * key and caller, the queue limit and timeout with honest retry-afters,
 * vendor 429 blocks, the breaker and its one probe, the concurrency cap,
 * abandoned tickets, outcomes, a config changed mid-flight, and the wakes
 * the module asks of its owner - all on a fake clock (`now` is a parameter;
 * nothing here sleeps).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/admission.h"
#include "policy/breaker.h"

/* ------------------------------------------------------------------------ */
/* The fake owner and its fetches                                           */

/* The owner's alarm clock: the last wake asked for. */
struct owner {
	int64_t in_ms; /* -1: never asked */
	int calls;
};

static void on_wake(void *arg, int64_t in_ms)
{
	struct owner *o = arg;

	assert_true(in_ms >= 0);
	o->in_ms = in_ms;
	o->calls++;
}

/* A fetch owning a ticket: what admission told it, and in which order. */
struct fake {
	struct admit_ticket t;
	int wanted; /* what the wanted callback answers */
	int wanted_calls;
	int granted; /* the order it was granted in (go), 0: not */
	int refused; /* refuse callbacks */
	enum admit_refusal why;
	int64_t retry;
	void (*then)(struct fake *f); /* runs inside go or refuse */
	struct admission *a;
	int64_t now; /* for `then` */
};

static int grants; /* go callbacks so far, in every test */

static void on_go(void *arg)
{
	struct fake *f = arg;

	assert_int_equal(f->granted, 0);
	f->granted = ++grants;
	if (f->then)
		f->then(f);
}

static void on_refuse(void *arg, enum admit_refusal why, int64_t retry_after_ms)
{
	struct fake *f = arg;

	f->refused++;
	f->why = why;
	f->retry = retry_after_ms;
	if (f->then)
		f->then(f);
}

static int on_wanted(void *arg)
{
	struct fake *f = arg;

	f->wanted_calls++;
	return f->wanted;
}

static void fake_init(struct fake *f, size_t n)
{
	memset(f, 0, n * sizeof(*f));
	for (size_t i = 0; i < n; i++)
		f[i].wanted = 1;
}

/* Distinct 32-byte hashes (the first 8 bytes spread, as a SHA-256's). */
static const uint8_t *key(unsigned n)
{
	static uint8_t keys[64][ADMIT_KEY_LEN];
	uint64_t z = (n + 1) * UINT64_C(0x9E3779B97F4A7C15);

	assert_true(n < 64);
	z = (z ^ (z >> 31)) * UINT64_C(0xBF58476D1CE4E5B9);
	memset(keys[n], (int)n, ADMIT_KEY_LEN);
	memcpy(keys[n], &z, sizeof(z));
	return keys[n];
}

enum { K1 = 1, K2, K3, K4, K5, C1 = 20, C2, IP1 = 40, IP2 };

/* Asks with may_queue for key k, caller c and client ip (0: none). Keeps an
 * immediate refusal's reason in f. */
static int ask_full(struct admission *a, struct fake *f, unsigned k, unsigned c,
		    unsigned ip, int may_queue, int64_t now)
{
	enum admit_refusal why = 0;
	int64_t retry = -1;
	int rc;

	rc = admission_ask(a, &f->t, key(k), c ? key(c) : NULL, ip ? key(ip) : NULL,
			   may_queue, on_go, on_refuse, on_wanted, f, now, &why, &retry);
	if (rc < 0) {
		assert_true(retry >= 1);
		f->why = why;
		f->retry = retry;
	} else {
		assert_int_equal(retry, 0);
	}
	return rc;
}

static int ask(struct admission *a, struct fake *f, unsigned k, int64_t now)
{
	return ask_full(a, f, k, 0, 0, 1, now);
}

/* One token a second, burst 1, ten at once, ten queued per key for 5 s, no
 * breaker, no gates. */
static struct admit_config base_config(void)
{
	struct admit_config c = {
	    .rate = 1.0,
	    .burst = 1,
	    .caller_rate = 0,
	    .caller_burst = 0,
	    .concurrency = 10,
	    .queue_limit = 10,
	    .queue_timeout_ms = 5000,
	    .breaker_threshold = 0,
	    .breaker_cooldown_ms = 1000,
	    .new_key_rate = 0,
	    .client_rate = 0,
	    .client_burst = 0,
	};

	return c;
}

static struct admission *make(const struct admit_config *c, struct owner *o)
{
	struct admission *a;

	o->in_ms = -1;
	o->calls = 0;
	a = admission_new(c, on_wake, o);
	assert_non_null(a);
	return a;
}

/* ------------------------------------------------------------------------ */
/* Construction                                                             */

static void test_new_refuses_bad_settings(void **state)
{
	struct admit_config c = base_config();
	struct owner o;

	(void)state;
	c.rate = 0;
	assert_null(admission_new(&c, on_wake, &o));
	c = base_config();
	c.burst = 0;
	assert_null(admission_new(&c, on_wake, &o));
	c = base_config();
	c.caller_rate = 1.0;
	c.caller_burst = 0; /* a caller table of burst 0 */
	assert_null(admission_new(&c, on_wake, &o));
	c = base_config();
	c.client_rate = 1e12;
	c.client_burst = 1;
	assert_null(admission_new(&c, on_wake, &o));
	admission_free(NULL);
	c = base_config();
	admission_free(make(&c, &o));
	assert_string_equal(admit_limit_name(ADMIT_KEY_RATE), "key_rate");
	assert_string_equal(admit_limit_name(ADMIT_CALLER_QUOTA), "caller_quota");
	assert_string_equal(admit_limit_name(ADMIT_QUEUE_FULL), "queue_full");
	assert_string_equal(admit_limit_name(ADMIT_QUEUE_TIMEOUT), "queue_timeout");
	assert_string_equal(admit_limit_name(ADMIT_BLOCKED), "vendor_429");
	assert_string_equal(admit_limit_name(ADMIT_BREAKER), "breaker");
	assert_string_equal(admit_limit_name(ADMIT_ABANDONED), "abandoned");
	assert_string_equal(admit_limit_name(ADMIT_NEW_KEY), "new_key_rate");
	assert_string_equal(admit_limit_name(ADMIT_CLIENT_RATE), "client_rate");
}

/* ------------------------------------------------------------------------ */
/* The queue                                                                */

/* One line per key, first come first served; other keys pass by. */
static void test_fifo_per_key(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a = make(&c, &o);
	struct fake f[6];

	(void)state;
	fake_init(f, 6);
	grants = 0;
	assert_int_equal(ask(a, &f[0], K1, 0), 1); /* the burst */
	assert_int_equal(o.calls, 0);		   /* granted at once: no walk */
	assert_int_equal(ask(a, &f[1], K1, 0), 0);
	/* wake at its token (1 s), the sweep being as soon */
	assert_int_equal(o.in_ms, 1000);
	assert_int_equal(ask(a, &f[2], K1, 10), 0);
	assert_int_equal(admission_queued(a), 2);
	/* another key is not held up by K1's line */
	assert_int_equal(ask(a, &f[3], K2, 10), 1);
	assert_int_equal(admission_running(a), 2);
	/* nothing is due before the token */
	admission_pump(a, 999);
	assert_int_equal(f[1].granted, 0);
	assert_int_equal(o.in_ms, 1);
	/* a newcomer with a token there does not jump the line: asking walks
	 * the queue, which gives the token to the first in line */
	assert_int_equal(ask(a, &f[4], K1, 1000), 0);
	assert_int_equal(f[1].granted, 1);
	assert_int_equal(f[2].granted, 0);
	assert_int_equal(f[4].granted, 0);
	admission_pump(a, 2000);
	assert_int_equal(f[2].granted, 2);
	assert_int_equal(f[4].granted, 0);
	admission_pump(a, 3000);
	assert_int_equal(f[4].granted, 3);
	assert_int_equal(admission_queued(a), 0);
	assert_int_equal(o.in_ms, 0); /* nothing queued: no wake */
	assert_int_equal(admission_running(a), 5);
	/* every granted ticket was asked whether it is still wanted */
	assert_true(f[1].wanted_calls >= 1 && f[2].wanted_calls >= 1);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(f[i].refused, 0);
		admission_done(&f[i].t, ADMIT_OK, 0, 3000);
	}
	assert_int_equal(admission_running(a), 0);
	admission_free(a);
}

/* With caller quotas a line is key and caller: a caller that used up its
 * own bucket does not hold up the key's other callers. */
static void test_fifo_per_key_and_caller(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[5];

	(void)state;
	c.rate = 100;
	c.burst = 100;
	c.caller_rate = 1;
	c.caller_burst = 1;
	a = make(&c, &o);
	fake_init(f, 5);
	grants = 0;
	assert_int_equal(ask_full(a, &f[0], K1, C1, 0, 1, 0), 1);
	assert_int_equal(ask_full(a, &f[1], K1, C1, 0, 1, 0), 0); /* C1 is dry */
	assert_int_equal(ask_full(a, &f[2], K1, C2, 0, 1, 0), 1); /* C2 passes */
	/* without queueing, the caller's bucket is the limit met; the retry
	 * counts its token and the one ahead in its line */
	assert_int_equal(ask_full(a, &f[3], K1, C1, 0, 0, 0), -1);
	assert_int_equal(f[3].why, ADMIT_CALLER_QUOTA);
	assert_int_equal(f[3].retry, 2000);
	/* a second ticket of C1's line: the one ahead costs another second */
	assert_int_equal(ask_full(a, &f[4], K1, C1, 0, 1, 0), 0);
	admission_pump(a, 1000);
	assert_int_equal(f[1].granted, 1);
	assert_int_equal(f[4].granted, 0);
	admission_pump(a, 2000);
	assert_int_equal(f[4].granted, 2);
	for (int i = 0; i < 5; i++)
		if (i != 3)
			admission_done(&f[i].t, ADMIT_OK, 0, 2000);
	admission_free(a);
}

/* --queue-limit per line: the next one is refused with what the line ahead
 * of it would cost. */
static void test_queue_limit(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[6];

	(void)state;
	c.queue_limit = 2;
	c.queue_timeout_ms = 60000;
	a = make(&c, &o);
	fake_init(f, 6);
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K1, 0), 0);
	assert_int_equal(ask(a, &f[2], K1, 0), 0);
	assert_int_equal(ask(a, &f[3], K1, 0), -1);
	assert_int_equal(f[3].why, ADMIT_QUEUE_FULL);
	assert_int_equal(f[3].retry, 1000 + 2 * 1000); /* its token after two */
	/* another key has its own line */
	assert_int_equal(ask(a, &f[4], K2, 0), 1);
	assert_int_equal(ask(a, &f[5], K2, 0), 0);
	assert_int_equal(admission_queued(a), 3);
	/* cancelling a queued ticket: no callback, its place is free */
	admission_cancel(&f[2].t, 0);
	assert_int_equal(f[2].refused + f[2].granted, 0);
	assert_int_equal(admission_queued(a), 2);
	assert_int_equal(ask(a, &f[2], K1, 0), 0);
	admission_cancel(&f[1].t, 0);
	admission_cancel(&f[2].t, 0);
	admission_cancel(&f[5].t, 0);
	assert_int_equal(o.in_ms, 0);
	/* cancelling a granted ticket ends it; again, or a never-asked one:
	 * nothing */
	admission_cancel(&f[0].t, 0);
	admission_cancel(&f[0].t, 0);
	admission_cancel(&f[3].t, 0); /* refused at once: idle */
	admission_done(&f[4].t, ADMIT_OK, 0, 0);
	assert_int_equal(admission_running(a), 0);
	fake_init(f, 1);
	admission_cancel(&f[0].t, 0);
	admission_free(a);
}

/* A wait that cannot end within --queue-timeout is refused at once, with a
 * retry-after that is honest: asking again then succeeds. */
static void test_refused_at_once_when_too_slow(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[5];

	(void)state;
	c.queue_timeout_ms = 2500;
	a = make(&c, &o);
	fake_init(f, 5);
	grants = 0;
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K1, 0), 0); /* its token in 1 s */
	assert_int_equal(ask(a, &f[2], K1, 0), 0); /* in 2 s */
	assert_int_equal(ask(a, &f[3], K1, 0), -1);
	assert_int_equal(f[3].why, ADMIT_QUEUE_TIMEOUT); /* behind others */
	assert_int_equal(f[3].retry, 3000);
	admission_pump(a, 1000);
	admission_pump(a, 2000);
	assert_int_equal(f[1].granted, 1);
	assert_int_equal(f[2].granted, 2);
	assert_int_equal(ask_full(a, &f[3], K1, 0, 0, 0, 2999), -1);
	assert_int_equal(f[3].why, ADMIT_KEY_RATE); /* first in line: the bucket */
	assert_int_equal(f[3].retry, 1);
	assert_int_equal(ask(a, &f[3], K1, 3000), 1);
	for (int i = 0; i < 4; i++)
		admission_done(&f[i].t, ADMIT_OK, 0, 3000);
	admission_free(a);

	/* first in line, its own token too far off */
	c.rate = 0.1;
	a = make(&c, &o);
	fake_init(f, 2);
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K1, 0), -1);
	assert_int_equal(f[1].why, ADMIT_KEY_RATE);
	assert_int_equal(f[1].retry, 10000);
	assert_int_equal(ask_full(a, &f[1], K1, 0, 0, 0, 9999), -1);
	assert_int_equal(f[1].retry, 1);
	assert_int_equal(ask(a, &f[1], K1, 10000), 1);
	admission_done(&f[0].t, ADMIT_OK, 0, 10000);
	admission_done(&f[1].t, ADMIT_OK, 0, 10000);
	admission_free(a);
}

/* A queued ticket whose deadline passes is refused with ADMIT_QUEUE_TIMEOUT,
 * and the owner is woken for that deadline. */
static void test_queue_timeout(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[3];

	(void)state;
	c.burst = 10;
	c.concurrency = 1;
	c.queue_timeout_ms = 1500;
	a = make(&c, &o);
	fake_init(f, 3);
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K2, 0), 0); /* waits for a slot */
	assert_int_equal(o.in_ms, 1000);	   /* the sweep first */
	admission_pump(a, 1000);
	assert_int_equal(o.in_ms, 500);		/* then its deadline */
	assert_int_equal(f[1].wanted_calls, 2); /* asked on each sweep */
	admission_pump(a, 1499);
	assert_int_equal(f[1].refused, 0);
	admission_pump(a, 1500);
	assert_int_equal(f[1].refused, 1);
	assert_int_equal(f[1].why, ADMIT_QUEUE_TIMEOUT);
	assert_int_equal(f[1].retry, 1); /* its tokens are there: 1 ms at least */
	assert_int_equal(admission_queued(a), 0);
	assert_int_equal(o.in_ms, 0);
	/* it took no token: K2 still has its whole burst */
	c.concurrency = 20;
	assert_int_equal(admission_set_config(a, &c, 1500), 0);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(ask(a, &f[2], K2, 1500), 1);
		admission_done(&f[2].t, ADMIT_OK, 0, 1500);
	}
	assert_int_equal(ask(a, &f[2], K2, 1500), 0);
	admission_cancel(&f[2].t, 1500);
	admission_done(&f[0].t, ADMIT_OK, 0, 1500);
	admission_free(a);
}

/* ------------------------------------------------------------------------ */
/* Vendor blocks and the breaker                                            */

static void test_vendor_429_block(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[5];

	(void)state;
	c.burst = 10;
	c.concurrency = 1;
	a = make(&c, &o);
	fake_init(f, 5);
	assert_int_equal(ask(a, &f[0], K1, 100), 1);
	assert_int_equal(ask(a, &f[1], K1, 100), 0); /* waits for the slot */
	assert_int_equal(ask(a, &f[2], K2, 100), 0);
	/* the vendor said 429, Retry-After 7 s: K1's queued ticket is refused
	 * with what is left of it, K2's goes */
	admission_done(&f[0].t, ADMIT_LIMITED, 7000, 100);
	assert_int_equal(f[1].refused, 1);
	assert_int_equal(f[1].why, ADMIT_BLOCKED);
	assert_int_equal(f[1].retry, 7000);
	assert_true(f[2].granted > 0);
	assert_int_equal(admission_blocked_ms(a, key(K1), 2100), 5000);
	assert_int_equal(admission_blocked_ms(a, key(K2), 2100), 0);
	assert_int_equal(admission_keys_blocked(a, 2100), 1);
	/* asked again within the block: refused at once, queue or not */
	assert_int_equal(ask(a, &f[3], K1, 2100), -1);
	assert_int_equal(f[3].why, ADMIT_BLOCKED);
	assert_int_equal(f[3].retry, 5000);
	assert_int_equal(ask_full(a, &f[3], K1, 0, 0, 0, 7099), -1);
	assert_int_equal(f[3].retry, 1);
	/* a 429 is an answer: the breaker does not count it */
	assert_string_equal(admission_breaker_state(a), "closed");
	admission_done(&f[2].t, ADMIT_OK, 0, 7100);
	assert_int_equal(admission_keys_blocked(a, 7100), 0);
	assert_int_equal(ask(a, &f[3], K1, 7100), 1);
	/* without a usable Retry-After: ADMIT_DEFAULT_BLOCK_MS */
	admission_done(&f[3].t, ADMIT_LIMITED, 0, 8000);
	assert_int_equal(admission_blocked_ms(a, key(K1), 8000), ADMIT_DEFAULT_BLOCK_MS);
	assert_int_equal(ask(a, &f[4], K1, 8000 + ADMIT_DEFAULT_BLOCK_MS), 1);
	admission_done(&f[4].t, ADMIT_OK, 0, 40000);
	admission_free(a);
}

/* Open, then half-open with exactly one probe; abandoned probes are handed
 * out again; queued tickets are refused when it opens. */
static void test_breaker_single_probe(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[8];

	(void)state;
	c.burst = 100;
	c.rate = 100;
	c.breaker_threshold = 2;
	c.breaker_cooldown_ms = 5000;
	a = make(&c, &o);
	fake_init(f, 8);
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K2, 0), 1);
	admission_done(&f[0].t, ADMIT_FAILED, 0, 100);
	assert_string_equal(admission_breaker_state(a), "closed");
	admission_done(&f[1].t, ADMIT_FAILED, 0, 200); /* second in a row */
	assert_string_equal(admission_breaker_state(a), "open");
	assert_int_equal(admission_breaker_until(a), 5200);
	assert_true(admission_breaker_open(a, 300));
	/* refused at once, queue or not, with the rest of the cool-down */
	assert_int_equal(ask(a, &f[2], K1, 300), -1);
	assert_int_equal(f[2].why, ADMIT_BREAKER);
	assert_int_equal(f[2].retry, 4900);
	assert_int_equal(ask_full(a, &f[2], K3, 0, 0, 0, 5199), -1);
	assert_int_equal(f[2].retry, 1);
	/* cool-down over: one probe; the rest wait for it */
	assert_false(admission_breaker_open(a, 5200));
	assert_int_equal(ask(a, &f[2], K1, 5200), 1);
	assert_string_equal(admission_breaker_state(a), "half-open");
	assert_int_equal(admission_breaker_until(a), 0);
	assert_int_equal(ask(a, &f[3], K2, 5200), -1);
	assert_int_equal(f[3].why, ADMIT_BREAKER);
	assert_int_equal(f[3].retry, LIMIT_PROBE_WAIT_MS);
	assert_int_equal(ask_full(a, &f[3], K2, 0, 0, 0, 5200), -1);
	assert_int_equal(f[3].retry, LIMIT_PROBE_WAIT_MS);
	/* the probe abandoned (its client left): the next caller probes */
	admission_done(&f[2].t, ADMIT_NOTHING, 0, 5300);
	assert_string_equal(admission_breaker_state(a), "open");
	assert_int_equal(ask(a, &f[3], K2, 5300), 1);
	assert_string_equal(admission_breaker_state(a), "half-open");
	/* the probe fails: another whole cool-down from its failure */
	admission_done(&f[3].t, ADMIT_FAILED, 0, 6000);
	assert_int_equal(admission_breaker_until(a), 11000);
	assert_int_equal(ask(a, &f[4], K1, 6000), -1);
	assert_int_equal(f[4].retry, 5000);
	/* the next probe answers: closed */
	assert_int_equal(ask(a, &f[4], K1, 11000), 1);
	admission_done(&f[4].t, ADMIT_OK, 0, 11100);
	assert_string_equal(admission_breaker_state(a), "closed");
	assert_int_equal(ask(a, &f[5], K1, 11100), 1);
	assert_int_equal(ask(a, &f[6], K2, 11100), 1);

	/* queued tickets are refused when the breaker opens under them */
	c.concurrency = 2;
	c.breaker_threshold = 1;
	assert_int_equal(admission_set_config(a, &c, 11100), 0);
	assert_int_equal(ask(a, &f[7], K3, 11100), 0); /* no slot */
	admission_done(&f[5].t, ADMIT_FAILED, 0, 11200);
	assert_int_equal(f[7].refused, 1);
	assert_int_equal(f[7].why, ADMIT_BREAKER);
	assert_int_equal(f[7].retry, 5000);
	admission_done(&f[6].t, ADMIT_OK, 0, 11300); /* late answer: closes */
	assert_string_equal(admission_breaker_state(a), "closed");
	admission_free(a);
}

/* While the probe is out, an ask that may not queue (a refresh, a retry) is
 * refused before the gates: it spends no client or new-key token. */
static void test_half_open_refuses_before_the_gates(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[3];

	(void)state;
	c.burst = 10;
	c.breaker_threshold = 1;
	c.client_rate = 1;
	c.client_burst = 1;
	a = make(&c, &o);
	fake_init(f, 3);
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	admission_done(&f[0].t, ADMIT_FAILED, 0, 0);  /* open until 1000 */
	assert_int_equal(ask(a, &f[0], K1, 1000), 1); /* the probe */
	assert_int_equal(ask_full(a, &f[1], K2, 0, IP1, 0, 1000), -1);
	assert_int_equal(f[1].why, ADMIT_BREAKER);
	assert_int_equal(f[1].retry, LIMIT_PROBE_WAIT_MS);
	admission_done(&f[0].t, ADMIT_OK, 0, 1000);
	/* IP1's one token is still there */
	assert_int_equal(ask_full(a, &f[2], K2, 0, IP1, 0, 1000), 1);
	admission_done(&f[2].t, ADMIT_OK, 0, 1000);
	admission_free(a);
}

/* Outcomes: OK and LIMITED reset the count of failures, NOTHING is neither,
 * a ticket not granted is left alone. */
static void test_outcomes_feed_the_breaker(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[1];
	static const enum admit_outcome seq[] = {
	    ADMIT_FAILED, ADMIT_OK,	 ADMIT_FAILED, ADMIT_LIMITED,
	    ADMIT_FAILED, ADMIT_NOTHING, ADMIT_NOTHING};

	(void)state;
	c.rate = 1000;
	c.burst = 1000;
	c.breaker_threshold = 2;
	a = make(&c, &o);
	fake_init(f, 1);
	for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
		/* LIMITED blocks K1 for 1 ms: the next ask is 10 ms on */
		assert_int_equal(ask(a, &f[0], K1, (int64_t)i * 10), 1);
		admission_done(&f[0].t, seq[i], 1, (int64_t)i * 10);
		assert_string_equal(admission_breaker_state(a), "closed");
	}
	assert_int_equal(ask(a, &f[0], K2, 100), 1);
	admission_done(&f[0].t, ADMIT_FAILED, 0, 100); /* second in a row */
	assert_string_equal(admission_breaker_state(a), "open");
	/* done twice: nothing */
	admission_done(&f[0].t, ADMIT_OK, 0, 100);
	assert_string_equal(admission_breaker_state(a), "open");
	assert_int_equal(admission_running(a), 0);
	admission_free(a);
}

/* ------------------------------------------------------------------------ */
/* Concurrency, gates, abandoned tickets                                    */

static void test_concurrency_cap(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[4];

	(void)state;
	c.burst = 100;
	c.concurrency = 2;
	a = make(&c, &o);
	fake_init(f, 4);
	grants = 0;
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K2, 0), 1);
	assert_int_equal(ask(a, &f[2], K3, 0), 0); /* no slot: it waits */
	assert_int_equal(ask(a, &f[3], K4, 0), 0);
	assert_int_equal(admission_running(a), 2);
	/* without queueing: refused, its tokens are there, the slots are not */
	{
		struct fake g;

		fake_init(&g, 1);
		assert_int_equal(ask_full(a, &g, K5, 0, 0, 0, 0), -1);
		assert_int_equal(g.why, ADMIT_QUEUE_FULL);
		assert_int_equal(g.retry, 1);
	}
	/* a slot freed goes to the first in the queue, at once */
	admission_done(&f[1].t, ADMIT_OK, 0, 10);
	assert_int_equal(f[2].granted, 1);
	assert_int_equal(f[3].granted, 0);
	admission_cancel(&f[0].t, 20); /* a granted one cancelled frees its slot */
	assert_int_equal(f[3].granted, 2);
	assert_int_equal(admission_running(a), 2);
	assert_int_equal(admission_queued(a), 0);
	admission_done(&f[2].t, ADMIT_OK, 0, 30);
	admission_done(&f[3].t, ADMIT_OK, 0, 30);
	admission_free(a);
}

/* --new-key-rate: one token per key never answered 2xx, which may then go
 * on for ADMIT_TRYING_MS; known keys pass free. */
static void test_new_key_rate_gate(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[2];

	(void)state;
	c.rate = 100;
	c.burst = 100;
	c.new_key_rate = 1; /* burst max(1, rate) */
	a = make(&c, &o);
	fake_init(f, 2);
	assert_int_equal(ask(a, &f[0], K1, 0), 1); /* K1: new, takes the token */
	assert_int_equal(ask(a, &f[1], K2, 0), -1);
	assert_int_equal(f[1].why, ADMIT_NEW_KEY); /* never queued */
	assert_int_equal(f[1].retry, 1000);
	admission_done(&f[0].t, ADMIT_OK, 0, 0);
	/* K1 is being tried: not charged again */
	assert_int_equal(ask(a, &f[0], K1, 500), 1);
	admission_done(&f[0].t, ADMIT_OK, 0, 500);
	/* known keys pass free */
	admission_mark_known(a, key(K3));
	assert_int_equal(ask(a, &f[1], K3, 500), 1);
	admission_done(&f[1].t, ADMIT_OK, 0, 500);
	/* the trying window ends: K1, never marked known, is new again */
	assert_int_equal(ask(a, &f[0], K1, ADMIT_TRYING_MS + 1), 1); /* fresh token */
	assert_int_equal(ask(a, &f[1], K2, ADMIT_TRYING_MS + 1), -1);
	assert_int_equal(f[1].why, ADMIT_NEW_KEY);
	admission_done(&f[0].t, ADMIT_OK, 0, ADMIT_TRYING_MS + 1);
	/* a key the vendor refused (401) is forgotten: new again */
	admission_forget_known(a, key(K3));
	assert_int_equal(ask(a, &f[1], K3, ADMIT_TRYING_MS + 1), -1);
	assert_int_equal(f[1].why, ADMIT_NEW_KEY);
	admission_free(a);
}

/* --client-rate: a bucket per client address, refusing at once; a client
 * refused gives back the new-key token it took. */
static void test_client_rate_gate(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[4];

	(void)state;
	c.rate = 100;
	c.burst = 100;
	c.client_rate = 1;
	c.client_burst = 2;
	a = make(&c, &o);
	fake_init(f, 4);
	assert_int_equal(ask_full(a, &f[0], K1, 0, IP1, 1, 0), 1);
	assert_int_equal(ask_full(a, &f[1], K2, 0, IP1, 1, 0), 1);
	assert_int_equal(ask_full(a, &f[2], K3, 0, IP1, 1, 0), -1);
	assert_int_equal(f[2].why, ADMIT_CLIENT_RATE); /* never queued */
	assert_int_equal(f[2].retry, 1000);
	assert_int_equal(admission_queued(a), 0);
	/* other clients, and asks without a client, are not held */
	assert_int_equal(ask_full(a, &f[2], K3, 0, IP2, 1, 0), 1);
	assert_int_equal(ask_full(a, &f[3], K3, 0, 0, 1, 0), 1);
	for (int i = 0; i < 4; i++)
		admission_done(&f[i].t, ADMIT_OK, 0, 0);
	assert_int_equal(ask_full(a, &f[0], K1, 0, IP1, 1, 1000), 1);
	admission_done(&f[0].t, ADMIT_OK, 0, 1000);
	admission_free(a);

	/* with --new-key-rate too: the client gate's refusal refunds the
	 * new-key token, so the next new key still gets it */
	c.new_key_rate = 1;
	c.client_burst = 1;
	a = make(&c, &o);
	fake_init(f, 4);
	admission_mark_known(a, key(K1));
	assert_int_equal(ask_full(a, &f[0], K1, 0, IP1, 1, 0), 1); /* known: free */
	assert_int_equal(ask_full(a, &f[1], K2, 0, IP1, 1, 0), -1);
	assert_int_equal(f[1].why, ADMIT_CLIENT_RATE);
	assert_int_equal(ask_full(a, &f[2], K3, 0, IP2, 1, 0), 1); /* K3 new */
	assert_int_equal(ask_full(a, &f[3], K4, 0, 0, 1, 0), -1);
	assert_int_equal(f[3].why, ADMIT_NEW_KEY);
	admission_done(&f[0].t, ADMIT_OK, 0, 0);
	admission_done(&f[2].t, ADMIT_OK, 0, 0);
	admission_free(a);
}

/* A queued ticket nobody wants any more is refused ADMIT_ABANDONED and
 * costs no token; `wanted` is asked before a grant and on every sweep. */
static void test_abandoned_costs_no_token(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[4];
	int calls;

	(void)state;
	c.rate = 2; /* a token every 500 ms: between the sweeps */
	c.queue_timeout_ms = 60000;
	a = make(&c, &o);
	fake_init(f, 4);
	grants = 0;
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K1, 0), 0);
	assert_int_equal(ask(a, &f[2], K1, 0), 0);
	f[1].wanted = 0; /* its clients left */
	calls = f[2].wanted_calls;
	admission_pump(a, 500); /* a token is there: asked before the grant */
	assert_int_equal(f[1].refused, 1);
	assert_int_equal(f[1].why, ADMIT_ABANDONED);
	assert_int_equal(f[1].retry, 0);
	assert_int_equal(f[1].granted, 0);
	/* the token it did not take went to the next, asked too */
	assert_int_equal(f[2].granted, 1);
	assert_int_equal(f[2].wanted_calls, calls + 1);
	admission_done(&f[0].t, ADMIT_OK, 0, 500);
	admission_done(&f[2].t, ADMIT_OK, 0, 500);
	assert_int_equal(ask(a, &f[3], K1, 1000), 1); /* K1's next token is there */
	admission_done(&f[3].t, ADMIT_OK, 0, 1000);

	/* a ticket far from its token is asked on the sweeps only */
	c.rate = 0.01; /* a token per 100 s */
	assert_int_equal(admission_set_config(a, &c, 2000), 0);
	fake_init(f, 3);
	assert_int_equal(ask(a, &f[0], K2, 2000), 1);
	assert_int_equal(ask(a, &f[1], K2, 2000), -1); /* 100 s > 60 s */
	c.queue_timeout_ms = 200000;
	assert_int_equal(admission_set_config(a, &c, 2000), 0);
	assert_int_equal(ask(a, &f[1], K2, 2000), 0);
	calls = f[1].wanted_calls;
	admission_pump(a, 2500); /* not a sweep */
	assert_int_equal(f[1].wanted_calls, calls);
	admission_pump(a, 3000 + ADMIT_SWEEP_MS);
	assert_int_equal(f[1].wanted_calls, calls + 1);
	f[1].wanted = 0;
	admission_pump(a, 3000 + 2 * ADMIT_SWEEP_MS);
	assert_int_equal(f[1].why, ADMIT_ABANDONED);
	assert_int_equal(o.in_ms, 0);
	admission_done(&f[0].t, ADMIT_OK, 0, 6000);
	admission_free(a);
}

/* ------------------------------------------------------------------------ */
/* Config changes, re-entrant callbacks, wakes                              */

static void test_set_config_mid_flight(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[6];
	struct admit_config bad = c;

	(void)state;
	a = make(&c, &o);
	fake_init(f, 6);
	grants = 0;
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K1, 0), 0); /* token in 1 s */
	assert_int_equal(ask(a, &f[2], K1, 0), 0); /* 2 s */
	/* refused settings change nothing */
	bad.rate = 0;
	assert_int_equal(admission_set_config(a, &bad, 10), -1);
	assert_int_equal(f[1].granted, 0);
	/* nor a good key rate beside a bad caller burst: the key rate is not
	 * taken either (it would grant f[1] and f[2] at once) */
	bad = c;
	bad.rate = 1000;
	bad.burst = 5;
	bad.caller_rate = 1;
	bad.caller_burst = 0;
	assert_int_equal(admission_set_config(a, &bad, 10), -1);
	admission_pump(a, 20);
	assert_int_equal(f[1].granted, 0);
	/* a faster rate: what is queued goes at once (10 ms at 1000/s make
	 * 10 tokens, capped at the new burst of 5) */
	c.rate = 1000;
	c.burst = 5;
	assert_int_equal(admission_set_config(a, &c, 10), 0);
	assert_int_equal(f[1].granted, 1);
	assert_int_equal(f[2].granted, 2);
	assert_int_equal(o.in_ms, 0);
	/* a lower cap: those running keep going, new ones wait */
	c.concurrency = 2;
	assert_int_equal(admission_set_config(a, &c, 10), 0);
	assert_int_equal(ask(a, &f[3], K2, 10), 0);
	admission_done(&f[0].t, ADMIT_OK, 0, 20); /* 3 running -> 2: no slot yet */
	assert_int_equal(f[3].granted, 0);
	admission_done(&f[1].t, ADMIT_OK, 0, 20);
	assert_int_equal(f[3].granted, 3);
	/* queued tickets keep their deadlines under a new timeout */
	assert_int_equal(ask(a, &f[4], K3, 20), 0); /* deadline 5020 */
	c.queue_timeout_ms = 100;
	assert_int_equal(admission_set_config(a, &c, 30), 0);
	admission_pump(a, 5019);
	assert_int_equal(f[4].refused, 0);
	admission_pump(a, 5020);
	assert_int_equal(f[4].why, ADMIT_QUEUE_TIMEOUT);
	/* caller quotas switched on: tickets that name a caller are held to it */
	c.caller_rate = 1;
	c.caller_burst = 1;
	c.concurrency = 10;
	assert_int_equal(admission_set_config(a, &c, 5020), 0);
	assert_int_equal(ask_full(a, &f[4], K4, C1, 0, 0, 5020), 1);
	assert_int_equal(ask_full(a, &f[5], K4, C1, 0, 0, 5020), -1);
	assert_int_equal(f[5].why, ADMIT_CALLER_QUOTA);
	/* the breaker switched off while open: closed */
	admission_done(&f[4].t, ADMIT_OK, 0, 5020);
	c.breaker_threshold = 1;
	assert_int_equal(admission_set_config(a, &c, 5020), 0);
	assert_int_equal(ask(a, &f[4], K5, 5020), 1);
	admission_done(&f[4].t, ADMIT_FAILED, 0, 5020);
	assert_true(admission_breaker_open(a, 5020));
	c.breaker_threshold = 0;
	assert_int_equal(admission_set_config(a, &c, 5020), 0);
	assert_string_equal(admission_breaker_state(a), "closed");
	admission_done(&f[2].t, ADMIT_OK, 0, 5020);
	admission_done(&f[3].t, ADMIT_OK, 0, 5020);
	assert_int_equal(admission_running(a), 0);
	admission_free(a);
}

/* Callbacks may call back in: a granted fetch that fails to start ends at
 * once; a refused fetch's owner asks again. The walk settles, in order. */
static struct fake *next_in_then;

static void done_at_once(struct fake *f)
{
	admission_done(&f->t, ADMIT_NOTHING, 0, f->now);
}

static void ask_again(struct fake *f)
{
	struct fake *g = next_in_then;

	next_in_then = NULL;
	if (g != NULL)
		assert_int_equal(ask(f->a, g, K2, f->now), 0); /* queued, no recursion */
}

static void test_reentrant_callbacks(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[5];
	struct fake g;

	(void)state;
	c.burst = 10;
	c.concurrency = 1;
	a = make(&c, &o);
	fake_init(f, 5);
	grants = 0;
	for (int i = 0; i < 5; i++) {
		f[i].a = a;
		f[i].now = 100;
	}
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	f[1].then = done_at_once; /* granted, fails to start */
	f[2].then = done_at_once;
	assert_int_equal(ask(a, &f[1], K1, 0), 0);
	assert_int_equal(ask(a, &f[2], K1, 0), 0);
	assert_int_equal(ask(a, &f[3], K1, 0), 0);
	admission_done(&f[0].t, ADMIT_OK, 0, 100);
	/* f1 granted and ended, f2 the same, then f3 holds the slot */
	assert_int_equal(f[1].granted, 1);
	assert_int_equal(f[2].granted, 2);
	assert_int_equal(f[3].granted, 3);
	assert_int_equal(admission_running(a), 1);
	assert_int_equal(admission_queued(a), 0);
	/* a refused owner asks again from its callback */
	f[4].then = ask_again;
	f[4].now = 5100;
	assert_int_equal(ask(a, &f[4], K1, 100), 0); /* deadline 5100 */
	fake_init(&g, 1);
	next_in_then = &g;
	admission_pump(a, 5100);
	assert_int_equal(f[4].why, ADMIT_QUEUE_TIMEOUT);
	assert_int_equal(admission_queued(a), 1); /* g, asked from inside */
	assert_int_equal(o.in_ms, 1000);	  /* the outer walk's: a sweep */
	admission_cancel(&g.t, 5100);
	admission_done(&f[3].t, ADMIT_OK, 0, 5100);
	admission_free(a);
}

/* The wake the owner is asked for: the soonest of a token, a deadline and
 * the next sweep, relative to the now of the call; 0 when nothing waits. */
static void test_wake_times(void **state)
{
	struct admit_config c = base_config();
	struct owner o;
	struct admission *a;
	struct fake f[3];

	(void)state;
	c.rate = 4; /* a token every 250 ms */
	c.queue_timeout_ms = 600;
	a = make(&c, &o);
	fake_init(f, 3);
	assert_int_equal(ask(a, &f[0], K1, 0), 1);
	assert_int_equal(ask(a, &f[1], K1, 0), 0);
	assert_int_equal(o.in_ms, 250); /* its token */
	assert_int_equal(ask(a, &f[2], K1, 100), 0);
	assert_int_equal(o.in_ms, 150); /* f1's token, first in line */
	admission_pump(a, 250);
	assert_true(f[1].granted > 0);
	assert_int_equal(o.in_ms, 250); /* f2's token at 500 */
	admission_pump(a, 500);
	assert_true(f[2].granted > 0);
	assert_int_equal(o.in_ms, 0);
	/* a deadline: the wake is never less than 1 ms */
	admission_done(&f[0].t, ADMIT_OK, 0, 500);
	admission_done(&f[1].t, ADMIT_OK, 0, 500);
	admission_done(&f[2].t, ADMIT_OK, 0, 500);
	c.concurrency = 1;
	c.burst = 2;
	assert_int_equal(admission_set_config(a, &c, 1000), 0);
	assert_int_equal(ask(a, &f[0], K2, 1000), 1);
	assert_int_equal(ask(a, &f[1], K3, 1000), 0); /* slot: deadline 1600 */
	assert_int_equal(o.in_ms, 600);
	admission_pump(a, 1599);
	assert_int_equal(o.in_ms, 1);
	admission_pump(a, 1600);
	assert_int_equal(f[1].why, ADMIT_QUEUE_TIMEOUT);
	assert_int_equal(o.in_ms, 0);
	admission_done(&f[0].t, ADMIT_OK, 0, 1600);
	admission_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_refuses_bad_settings),
	    cmocka_unit_test(test_fifo_per_key),
	    cmocka_unit_test(test_fifo_per_key_and_caller),
	    cmocka_unit_test(test_queue_limit),
	    cmocka_unit_test(test_refused_at_once_when_too_slow),
	    cmocka_unit_test(test_queue_timeout),
	    cmocka_unit_test(test_vendor_429_block),
	    cmocka_unit_test(test_breaker_single_probe),
	    cmocka_unit_test(test_half_open_refuses_before_the_gates),
	    cmocka_unit_test(test_outcomes_feed_the_breaker),
	    cmocka_unit_test(test_concurrency_cap),
	    cmocka_unit_test(test_new_key_rate_gate),
	    cmocka_unit_test(test_client_rate_gate),
	    cmocka_unit_test(test_abandoned_costs_no_token),
	    cmocka_unit_test(test_set_config_mid_flight),
	    cmocka_unit_test(test_reentrant_callbacks),
	    cmocka_unit_test(test_wake_times),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
