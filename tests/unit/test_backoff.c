/*
 * Unit tests for policy/backoff: the splitmix64 reference sequence and
 * full-jitter backoff (its range, spread and edges).
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "policy/backoff.h"

static void test_rng(void **state)
{
	uint64_t s = 0, a = 42, b = 42;
	int i;

	(void)state;
	/* The reference splitmix64 sequence from seed 0. */
	assert_true(limit_rng_next(&s) == UINT64_C(0xe220a8397b1dcdaf));
	assert_true(limit_rng_next(&s) == UINT64_C(0x6e789e6aa1b965f4));
	assert_true(limit_rng_next(&s) == UINT64_C(0x06c45d188009454f));
	for (i = 0; i < 100; i++)
		assert_true(limit_rng_next(&a) == limit_rng_next(&b));
}

static void test_backoff_range(void **state)
{
	uint64_t rng = 7;
	unsigned attempt;
	int i;
	int64_t d, ceiling, lo, hi, sum;

	(void)state;
	for (attempt = 0; attempt < 20; attempt++) {
		ceiling =
		    (INT64_C(100) << attempt) < 30000 ? (INT64_C(100) << attempt) : 30000;
		lo = INT64_MAX;
		hi = 0;
		sum = 0;
		for (i = 0; i < 4000; i++) {
			d = limit_backoff_ms(attempt, 100, 30000, &rng);
			assert_true(d >= 1 && d <= ceiling);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
			sum += d;
		}
		/* Full jitter spreads over the whole range, mean near half. */
		assert_true(lo <= ceiling / 50 + 1);
		assert_true(hi >= ceiling - ceiling / 50 - 1);
		assert_true(llabs(sum / 4000 - (ceiling + 1) / 2) <= ceiling / 20 + 1);
	}
}

static void test_backoff_edges(void **state)
{
	uint64_t rng = 0, r1 = 99, r2 = 99;
	int i;
	int64_t d;

	(void)state;
	for (i = 0; i < 200; i++) {
		/* Huge attempts: capped, no overflow (UBSan would say). */
		d = limit_backoff_ms(UINT_MAX, 100, 5000, &rng);
		assert_true(d >= 1 && d <= 5000);
		d = limit_backoff_ms(63, 1, 5000, &rng);
		assert_true(d >= 1 && d <= 5000);
		d = limit_backoff_ms(31, INT64_MAX, INT64_MAX, &rng);
		assert_true(d >= 1 && d <= LIMIT_DELAY_MAX_MS);
		d = limit_backoff_ms(40, 3, INT64_MAX, &rng);
		assert_true(d >= 1 && d <= LIMIT_DELAY_MAX_MS);
		/* Cap below base: the cap wins. */
		d = limit_backoff_ms(0, 1000, 10, &rng);
		assert_true(d >= 1 && d <= 10);
		/* Base and cap below 1 are 1: never 0. */
		assert_int_equal(limit_backoff_ms(0, 0, 0, &rng), 1);
		assert_int_equal(limit_backoff_ms(5, -7, -7, &rng), 1);
		assert_int_equal(limit_backoff_ms(0, 1, 1, &rng), 1);
		d = limit_backoff_ms(0, 0, 1000, &rng);
		assert_true(d >= 1 && d <= 1);
		d = limit_backoff_ms(1, 1, 1000, &rng);
		assert_true(d >= 1 && d <= 2);
	}
	/* Deterministic for a given state. */
	for (i = 0; i < 50; i++)
		assert_int_equal(limit_backoff_ms((unsigned)i % 8, 50, 10000, &r1),
				 limit_backoff_ms((unsigned)i % 8, 50, 10000, &r2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rng),
	    cmocka_unit_test(test_backoff_range),
	    cmocka_unit_test(test_backoff_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
