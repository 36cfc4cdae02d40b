/*
 * Unit tests for policy/bucket: token buckets (honest waits, refunds, blocks,
 * the bound on the table, the burst + rate * W property under a pseudo-random
 * load).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/bucket.h"

/* A test-local xorshift64*, independent of the module's generator. */
static uint64_t xs_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static unsigned xs_below(uint64_t *s, unsigned n)
{
	return (unsigned)(xs_next(s) % n);
}

/* A distinct, well-spread 32-byte key for each n. */
static void make_key(uint8_t key[LIMIT_KEY_LEN], unsigned n)
{
	uint64_t s = UINT64_C(0x9E3779B97F4A7C15) * (n + 1), v;
	size_t i;

	for (i = 0; i < LIMIT_KEY_LEN; i += 8) {
		v = xs_next(&s);
		memcpy(key + i, &v, 8);
	}
}

/* Keys whose first 8 bytes (the hash) are all equal: one long chain. */
static void make_colliding_key(uint8_t key[LIMIT_KEY_LEN], unsigned n)
{
	memset(key, 0xAB, LIMIT_KEY_LEN);
	memcpy(key + 8, &n, sizeof(n));
}

static void test_table_new_arguments(void **state)
{
	struct limit_table *t;

	(void)state;
	assert_null(limit_table_new(0.0, 1.0, 10));
	assert_null(limit_table_new(-1.0, 1.0, 10));
	assert_null(limit_table_new(NAN, 1.0, 10));
	assert_null(limit_table_new(INFINITY, 1.0, 10));
	assert_null(limit_table_new(LIMIT_RATE_MIN / 2, 1.0, 10));
	assert_null(limit_table_new(LIMIT_RATE_MAX * 2, 1.0, 10));
	assert_null(limit_table_new(1.0, 0.5, 10));
	assert_null(limit_table_new(1.0, 0.0, 10));
	assert_null(limit_table_new(1.0, NAN, 10));
	assert_null(limit_table_new(1.0, INFINITY, 10));
	assert_null(limit_table_new(1.0, LIMIT_BURST_MAX * 2, 10));
	assert_null(limit_table_new(1.0, 1.0, 0));
	assert_null(limit_table_new(1.0, 1.0, (size_t)LIMIT_MAX_KEYS + 1));
	limit_table_free(NULL);

	t = limit_table_new(LIMIT_RATE_MIN, 1.0, 1);
	assert_non_null(t);
	assert_int_equal(limit_table_size(t), 0);
	limit_table_free(t);
	t = limit_table_new(LIMIT_RATE_MAX, LIMIT_BURST_MAX, 3);
	assert_non_null(t);
	limit_table_free(t);
}

static void test_take_full_bucket_then_wait(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 3.0, 16);
	uint8_t a[LIMIT_KEY_LEN], b[LIMIT_KEY_LEN];

	(void)state;
	make_key(a, 1);
	make_key(b, 2);
	/* A new key starts with burst tokens; wait_ms creates nothing. */
	assert_int_equal(limit_wait_ms(t, a, 1000), 0);
	assert_int_equal(limit_table_size(t), 0);
	assert_int_equal(limit_take(t, a, 1000), 0);
	assert_int_equal(limit_table_size(t), 1);
	assert_int_equal(limit_take(t, a, 1000), 0);
	assert_int_equal(limit_take(t, a, 1000), 0);
	assert_int_equal(limit_take(t, a, 1000), 1000);
	assert_int_equal(limit_wait_ms(t, a, 1000), 1000);
	assert_int_equal(limit_take(t, a, 1400), 600); /* refused takes change nothing */
	assert_int_equal(limit_wait_ms(t, a, 1999), 1);
	/* Other keys are independent. */
	assert_int_equal(limit_take(t, b, 1999), 0);
	assert_int_equal(limit_take(t, a, 2000), 0);
	assert_int_equal(limit_take(t, a, 2000), 1000);
	/* A long idle time refills to burst, not beyond. */
	assert_int_equal(limit_take(t, a, 1000000), 0);
	assert_int_equal(limit_take(t, a, 1000000), 0);
	assert_int_equal(limit_take(t, a, 1000000), 0);
	assert_int_equal(limit_take(t, a, 1000000), 1000);
	assert_int_equal(limit_table_size(t), 2);
	limit_table_free(t);
}

/* For awkward rates the wait is exact: one ms less is too early. */
static void test_wait_is_honest(void **state)
{
	static const double rates[] = {
	    3.0, 0.7, 7.3, 1000.0, 2500.0, 1.0 / 3.0, LIMIT_RATE_MIN, 123.456};
	size_t i;
	int k;
	uint8_t key[LIMIT_KEY_LEN];

	(void)state;
	make_key(key, 7);
	for (i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		struct limit_table *t = limit_table_new(rates[i], 2.5, 4);
		int64_t now = 5000, w;

		assert_non_null(t);
		for (k = 0; k < 200; k++) {
			w = limit_take(t, key, now);
			if (w == 0)
				continue;
			assert_true(w >= 1);
			assert_int_equal(limit_wait_ms(t, key, now), w);
			if (w > 1)
				assert_true(limit_wait_ms(t, key, now + w - 1) > 0);
			assert_int_equal(limit_wait_ms(t, key, now + w), 0);
			now += w;
			assert_int_equal(limit_take(t, key, now), 0);
		}
		limit_table_free(t);
	}
}

static void test_refund(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 2.0, 4);
	uint8_t a[LIMIT_KEY_LEN], b[LIMIT_KEY_LEN];
	int i;

	(void)state;
	make_key(a, 1);
	make_key(b, 2);
	limit_refund(t, b); /* unknown key: no-op, no bucket */
	assert_int_equal(limit_table_size(t), 0);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 1000);
	limit_refund(t, a);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 1000);
	/* Many refunds never raise the bucket above burst. */
	for (i = 0; i < 10; i++)
		limit_refund(t, a);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 1000);
	/* A refund of a partly refilled bucket: 0.5 + 1 tokens. */
	assert_int_equal(limit_take(t, a, 500), 500);
	limit_refund(t, a);
	assert_int_equal(limit_take(t, a, 500), 0);
	assert_int_equal(limit_take(t, a, 500), 500);
	limit_table_free(t);
}

static void test_time_backwards(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 2.0, 4);
	uint8_t a[LIMIT_KEY_LEN], b[LIMIT_KEY_LEN];

	(void)state;
	make_key(a, 1);
	make_key(b, 2);
	assert_int_equal(limit_take(t, a, 10000), 0);
	assert_int_equal(limit_take(t, a, 10000), 0);
	/* Going back adds nothing; the wait counts from the later time. */
	assert_int_equal(limit_take(t, a, 4000), 7000);
	assert_int_equal(limit_wait_ms(t, a, 0), 11000);
	assert_int_equal(limit_take(t, a, 10999), 1);
	/* Back and forth does not count the same interval twice. */
	assert_int_equal(limit_take(t, a, 11000), 0);
	assert_int_equal(limit_take(t, a, 10500), 1500);
	assert_int_equal(limit_take(t, a, 11500), 500);
	assert_int_equal(limit_take(t, a, 12000), 0);
	assert_int_equal(limit_take(t, a, 12000), 1000);
	/* A new key seen at an earlier time is full as of the table's clock:
	 * it has burst tokens and gains nothing until time passes it. */
	assert_int_equal(limit_take(t, b, 3000), 0);
	assert_int_equal(limit_take(t, b, 3000), 0);
	assert_int_equal(limit_take(t, b, 3000), 9000 + 1000);
	assert_int_equal(limit_take(t, b, 13000), 0);
	assert_int_equal(limit_take(t, b, 13000), 1000);
	limit_table_free(t);
}

static void test_block(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 2.0, 4);
	uint8_t a[LIMIT_KEY_LEN], b[LIMIT_KEY_LEN];

	(void)state;
	make_key(a, 1);
	make_key(b, 2);
	assert_int_equal(limit_blocked_until(t, a), 0);
	assert_int_equal(limit_take(t, a, 1000), 0);
	assert_int_equal(limit_block(t, a, 5000), 0);
	assert_int_equal(limit_blocked_until(t, a), 5000);
	assert_int_equal(limit_take(t, a, 1000), 4000);
	assert_int_equal(limit_wait_ms(t, a, 4999), 1);
	/* An earlier block keeps the later deadline; a later one extends. */
	assert_int_equal(limit_block(t, a, 3000), 0);
	assert_int_equal(limit_blocked_until(t, a), 5000);
	assert_int_equal(limit_block(t, a, 6000), 0);
	assert_int_equal(limit_blocked_until(t, a), 6000);
	assert_int_equal(limit_take(t, a, 5000), 1000);
	/* Tokens refilled during the block: two at once when it ends. */
	assert_int_equal(limit_take(t, a, 6000), 0);
	assert_int_equal(limit_take(t, a, 6000), 0);
	/* Empty bucket, short block: the token wait is the longer. */
	assert_int_equal(limit_block(t, a, 6300), 0);
	assert_int_equal(limit_take(t, a, 6000), 1000);
	assert_int_equal(limit_blocked_until(t, a), 6300); /* past now is kept */
	/* A block for a new key creates its bucket (full). */
	assert_int_equal(limit_block(t, b, 9000), 0);
	assert_int_equal(limit_table_size(t), 2);
	assert_int_equal(limit_take(t, b, 7000), 2000);
	assert_int_equal(limit_take(t, b, 9000), 0);
	assert_int_equal(limit_take(t, b, 9000), 0);
	assert_int_equal(limit_take(t, b, 9000), 1000);
	limit_table_free(t);
}

static void test_set_rate(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 4.0, 4);
	uint8_t a[LIMIT_KEY_LEN];

	(void)state;
	make_key(a, 1);
	assert_int_equal(limit_take(t, a, 0), 0); /* 3 tokens left */
	assert_int_equal(limit_table_set_rate(t, 0.0, 4.0), -1);
	assert_int_equal(limit_table_set_rate(t, 1.0, 0.9), -1);
	assert_int_equal(limit_table_set_rate(t, NAN, 2.0), -1);
	/* Lower burst: the 3 tokens are capped at 2. */
	assert_int_equal(limit_table_set_rate(t, 10.0, 2.0), 0);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 0);
	assert_int_equal(limit_take(t, a, 0), 100); /* the new rate */
	assert_int_equal(limit_take(t, a, 100), 0);
	/* Higher burst: no free tokens, refill up to the new size. */
	assert_int_equal(limit_table_set_rate(t, 10.0, 5.0), 0);
	assert_int_equal(limit_take(t, a, 100), 100);
	assert_int_equal(limit_take(t, a, 10000), 0);
	assert_int_equal(limit_take(t, a, 10000), 0);
	assert_int_equal(limit_take(t, a, 10000), 0);
	assert_int_equal(limit_take(t, a, 10000), 0);
	assert_int_equal(limit_take(t, a, 10000), 0);
	assert_int_equal(limit_take(t, a, 10000), 100);
	limit_table_free(t);
}

/* A full table reclaims only buckets that are full and not blocked. */
static void test_full_table_reclaim(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 2.0, 4);
	uint8_t k[6][LIMIT_KEY_LEN];
	unsigned i;

	(void)state;
	for (i = 0; i < 6; i++)
		make_key(k[i], i);
	/* Four keys each take one token at different times. */
	for (i = 0; i < 4; i++)
		assert_int_equal(limit_take(t, k[i], 1000 + 100 * i), 0);
	assert_int_equal(limit_table_size(t), 4);
	/* A fifth is refused: the soonest full bucket is k[0] at 2000. */
	assert_int_equal(limit_wait_ms(t, k[4], 1500), 500);
	assert_int_equal(limit_take(t, k[4], 1500), 500);
	assert_int_equal(limit_table_size(t), 4);
	/* Known keys still work while new ones are refused. */
	assert_int_equal(limit_take(t, k[1], 1500), 0);
	assert_int_equal(limit_take(t, k[4], 2000), 0); /* reclaims k[0] */
	assert_int_equal(limit_table_size(t), 4);
	/* k[0] was full, so coming back as a new key changes nothing for it.
	 * At 2100 nothing is full yet (k[2] will be at 2200); at 2400 it
	 * reclaims k[2] (k[1] is still drained). */
	assert_int_equal(limit_take(t, k[0], 2100), 100);
	assert_int_equal(limit_take(t, k[0], 2400), 0);
	assert_int_equal(limit_take(t, k[0], 2400), 0);
	assert_int_equal(limit_take(t, k[0], 2400), 1000);
	assert_int_equal(limit_take(t, k[2], 2400), 0); /* reclaims k[3] */
	/* A blocked full bucket is not reclaimable (but see below). */
	assert_int_equal(limit_block(t, k[1], 100000), 0);
	assert_int_equal(limit_take(t, k[3], 50000), 0); /* reclaims k[4] */
	assert_int_equal(limit_take(t, k[4], 50000), 0); /* reclaims k[0] */
	assert_int_equal(limit_blocked_until(t, k[1]), 100000);
	assert_int_equal(limit_take(t, k[1], 50000), 50000);
	limit_table_free(t);
}

/* Among blocked buckets, the least recently used is forgotten first. */
static void test_full_table_forgets_lru_blocked(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 1.0, 3);
	uint8_t k[5][LIMIT_KEY_LEN];
	unsigned i;

	(void)state;
	for (i = 0; i < 5; i++)
		make_key(k[i], 200 + i);
	/* each takes its token at a different time, then is blocked */
	for (i = 0; i < 3; i++) {
		assert_int_equal(limit_take(t, k[i], 100 * (i + 1)), 0);
		assert_int_equal(limit_block(t, k[i], 1000000), 0);
	}
	assert_int_equal(limit_take(t, k[3], 400), 0); /* forgets k[0], the oldest */
	assert_int_equal(limit_blocked_until(t, k[0]), 0);
	assert_int_equal(limit_blocked_until(t, k[1]), 1000000);
	assert_int_equal(limit_blocked_until(t, k[2]), 1000000);
	/* blocks for new keys on a full table of blocked ones are recorded */
	assert_int_equal(limit_block(t, k[4], 2000000), 0); /* forgets k[1] */
	assert_int_equal(limit_blocked_until(t, k[4]), 2000000);
	assert_int_equal(limit_blocked_until(t, k[1]), 0);
	limit_table_free(t);
	/* a table of drained, unblocked buckets still refuses a new key */
	t = limit_table_new(1.0, 1.0, 2);
	assert_int_equal(limit_take(t, k[0], 0), 0);
	assert_int_equal(limit_take(t, k[1], 0), 0);
	assert_int_equal(limit_take(t, k[2], 0), 1000);
	limit_table_free(t);
}

static void test_full_table_all_blocked(void **state)
{
	struct limit_table *t = limit_table_new(1000.0, 1.0, 3);
	uint8_t k[4][LIMIT_KEY_LEN];
	unsigned i;

	(void)state;
	for (i = 0; i < 4; i++)
		make_key(k[i], 100 + i);
	for (i = 0; i < 3; i++)
		assert_int_equal(limit_block(t, k[i], 60000 + 1000 * i), 0);
	/* a full table of blocked buckets: the new key takes one of them */
	assert_int_equal(limit_take(t, k[3], 10), 0);
	assert_int_equal(limit_blocked_until(t, k[0]), 0); /* forgotten */
	assert_int_equal(limit_blocked_until(t, k[1]), 61000);
	limit_table_free(t);
	/* The refusal wait is clamped to LIMIT_DELAY_MAX_MS: a drained
	 * bucket that refills in a century. */
	t = limit_table_new(LIMIT_RATE_MIN, 1.0, 1);
	assert_int_equal(limit_take(t, k[0], 0), 0);
	assert_int_equal(limit_take(t, k[1], 0), LIMIT_DELAY_MAX_MS);
	limit_table_free(t);
}

/* Every key hashes to the same chain: lookups, reclaims from the middle. */
static void test_colliding_keys(void **state)
{
	struct limit_table *t = limit_table_new(1.0, 1.0, 64);
	uint8_t key[LIMIT_KEY_LEN];
	unsigned i;

	(void)state;
	for (i = 0; i < 64; i++) {
		make_colliding_key(key, i);
		assert_int_equal(limit_take(t, key, 0), 0);
	}
	for (i = 0; i < 64; i++) {
		make_colliding_key(key, i);
		assert_int_equal(limit_take(t, key, 0), 1000);
	}
	assert_int_equal(limit_table_size(t), 64);
	/* From 1000 all are full again: 64 new keys reclaim all 64 buckets,
	 * unlinking them from every position in the one chain. */
	for (i = 64; i < 128; i++) {
		make_colliding_key(key, i);
		assert_int_equal(limit_take(t, key, 1000 + i), 0);
		assert_int_equal(limit_take(t, key, 1000 + i), 1000);
	}
	assert_int_equal(limit_table_size(t), 64);
	for (i = 0; i < 128; i++) {
		make_colliding_key(key, i);
		assert_int_equal(limit_wait_ms(t, key, 2000), i < 64 ? 64 : i);
	}
	limit_table_free(t);
}

/*
 * The property: for one key, over any window, the successful takes number at
 * most burst + rate * W. Checked over every pair of successes i <= j, with
 * W the time between them. `e` are the times the bucket accounted them at.
 */
static void check_window_bound(const int64_t *e, size_t n, double rate, double burst)
{
	/* j - i + 1 <= burst + rate * (e_j - e_i) for all i <= j  <=>
	 * f(j) - min_{i <= j} f(i) <= burst - 1, with f(i) = i - rate * e_i. */
	double f, fmin = 0.0;
	size_t j;

	for (j = 0; j < n; j++) {
		f = (double)j - rate * (double)e[j] / 1000.0;
		if (j > 0)
			assert_true(e[j] >= e[j - 1]);
		if (j == 0 || f < fmin)
			fmin = f;
		if (f - fmin > burst - 1.0 + 1e-9)
			fail_msg("take %zu at %lld ms: over burst %g + rate %g * W", j,
				 (long long)e[j], burst, rate);
	}
}

#define PROP_KEYS 4
#define PROP_STEPS 6000

/*
 * Pseudo-random take attempts for a few keys, with bursts of traffic, idle
 * gaps and (in the second half) the clock jumping backwards. The time a
 * success is accounted at is the bucket's stamp: the latest of the table's
 * clock when the key was first seen and the times of its successful takes.
 * Every refusal's wait is checked to be honest.
 */
static void test_window_property(void **state)
{
	static const double rates[] = {1.0, 2.5, 0.3, 40.0, 7.77};
	static const double bursts[] = {1.0, 3.0, 1.5, 10.0, 2.2};
	static int64_t succ[PROP_KEYS][PROP_STEPS];
	size_t c, i, k, nsucc[PROP_KEYS];
	unsigned refused = 0;
	uint64_t rng = UINT64_C(0x1234567887654321);
	uint8_t keys[PROP_KEYS][LIMIT_KEY_LEN];
	int64_t stamp[PROP_KEYS], now, clock, w;
	unsigned r;

	(void)state;
	for (k = 0; k < PROP_KEYS; k++)
		make_key(keys[k], (unsigned)(1000 + k));
	for (c = 0; c < sizeof(rates) / sizeof(rates[0]); c++) {
		struct limit_table *t = limit_table_new(rates[c], bursts[c], 16);
		unsigned total = 0;

		now = 1000;
		clock = 0;
		memset(nsucc, 0, sizeof(nsucc));
		for (k = 0; k < PROP_KEYS; k++)
			stamp[k] = -1;
		for (i = 0; i < PROP_STEPS; i++) {
			r = xs_below(&rng, 100);
			if (r < 60)
				now += xs_below(&rng, 40); /* busy */
			else if (r < 95)
				now += xs_below(&rng, 1500);
			else
				now += xs_below(&rng, 20000); /* idle */
			if (i > PROP_STEPS / 2 && xs_below(&rng, 10) == 0)
				now -= xs_below(&rng, 3000); /* clock steps back */
			if (now < 0)
				now = 0;
			if (now > clock)
				clock = now;
			k = xs_below(&rng, PROP_KEYS);
			if (stamp[k] < 0)
				stamp[k] = clock; /* the bucket is created now */
			w = limit_take(t, keys[k], now);
			if (w == 0) {
				if (now > stamp[k])
					stamp[k] = now;
				succ[k][nsucc[k]++] = stamp[k];
				total++;
				continue;
			}
			assert_true(w >= 1);
			refused++;
			if (w > 1)
				assert_true(limit_wait_ms(t, keys[k], now + w - 1) > 0);
			assert_int_equal(limit_wait_ms(t, keys[k], now + w), 0);
		}
		for (k = 0; k < PROP_KEYS; k++)
			check_window_bound(succ[k], nsucc[k], rates[c], bursts[c]);
		assert_true(total > PROP_STEPS / 20);
		limit_table_free(t);
	}
	/* The load was heavy enough to be limited. */
	assert_true(refused > 500);
}

#define CHURN_KEYS 12
#define CHURN_STEPS 8000

/*
 * The same property with more keys than the table holds: buckets are
 * reclaimed and keys refused, but no key ever exceeds its limit.
 */
static void test_window_property_full_table(void **state)
{
	static int64_t succ[CHURN_KEYS][CHURN_STEPS];
	size_t i, k, nsucc[CHURN_KEYS];
	uint64_t rng = UINT64_C(0xdeadbeefcafef00d);
	uint8_t keys[CHURN_KEYS][LIMIT_KEY_LEN];
	struct limit_table *t = limit_table_new(2.0, 3.0, 5);
	int64_t now = 0, w;
	unsigned refused = 0;

	(void)state;
	memset(nsucc, 0, sizeof(nsucc));
	for (k = 0; k < CHURN_KEYS; k++)
		make_key(keys[k], (unsigned)(5000 + k));
	for (i = 0; i < CHURN_STEPS; i++) {
		now += xs_below(&rng, 4) == 0 ? xs_below(&rng, 3000) : xs_below(&rng, 50);
		k = xs_below(&rng, CHURN_KEYS);
		w = limit_take(t, keys[k], now);
		if (w == 0)
			succ[k][nsucc[k]++] = now;
		else
			refused++;
		assert_true(w >= 0);
		assert_true(limit_table_size(t) <= 5);
		if (w == 0 && xs_below(&rng, 50) == 0)
			assert_int_equal(limit_block(t, keys[k], now + 700), 0);
	}
	for (k = 0; k < CHURN_KEYS; k++)
		check_window_bound(succ[k], nsucc[k], 2.0, 3.0);
	assert_true(refused > 0);
	assert_int_equal(limit_table_size(t), 5);
	limit_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table_new_arguments),
	    cmocka_unit_test(test_take_full_bucket_then_wait),
	    cmocka_unit_test(test_wait_is_honest),
	    cmocka_unit_test(test_refund),
	    cmocka_unit_test(test_time_backwards),
	    cmocka_unit_test(test_block),
	    cmocka_unit_test(test_set_rate),
	    cmocka_unit_test(test_full_table_reclaim),
	    cmocka_unit_test(test_full_table_all_blocked),
	    cmocka_unit_test(test_full_table_forgets_lru_blocked),
	    cmocka_unit_test(test_colliding_keys),
	    cmocka_unit_test(test_window_property),
	    cmocka_unit_test(test_window_property_full_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
