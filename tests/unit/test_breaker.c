/*
 * Unit tests for policy/breaker: the circuit breaker's cycle (closed, open,
 * half-open with one probe), its edges and its clamps.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/breaker.h"

static void test_breaker_disabled(void **state)
{
	struct limit_breaker b;
	int64_t ra = -1;
	int i;

	(void)state;
	limit_breaker_init(&b, 0, 1000);
	for (i = 0; i < 100; i++)
		limit_breaker_failure(&b, i);
	assert_int_equal(limit_breaker_peek(&b, 100, &ra), LIMIT_ALLOW);
	assert_int_equal(limit_breaker_allow(&b, 100, &ra), LIMIT_ALLOW);
	assert_int_equal(ra, 0);
	assert_string_equal(limit_breaker_state_name(b.state), "closed");
}

static void test_breaker_cycle(void **state)
{
	struct limit_breaker b;
	int64_t ra = -1;

	(void)state;
	limit_breaker_init(&b, 3, 10000);
	assert_string_equal(limit_breaker_state_name(b.state), "closed");
	/* Consecutive failures only: a success resets the count. */
	limit_breaker_failure(&b, 100);
	limit_breaker_failure(&b, 200);
	limit_breaker_success(&b);
	limit_breaker_failure(&b, 300);
	limit_breaker_failure(&b, 400);
	assert_int_equal(limit_breaker_allow(&b, 450, &ra), LIMIT_ALLOW);
	assert_int_equal(ra, 0);
	limit_breaker_failure(&b, 500); /* third in a row: open */
	assert_int_equal(b.state, LIMIT_BREAKER_OPEN);
	assert_string_equal(limit_breaker_state_name(b.state), "open");
	assert_int_equal(limit_breaker_allow(&b, 500, &ra), LIMIT_DENY);
	assert_int_equal(ra, 10000);
	assert_int_equal(limit_breaker_allow(&b, 10499, &ra), LIMIT_DENY);
	assert_int_equal(ra, 1);
	/* Late failures of requests sent before it opened keep the deadline. */
	limit_breaker_failure(&b, 5000);
	assert_int_equal(limit_breaker_allow(&b, 10499, NULL), LIMIT_DENY);
	/* Peeking never hands out the probe. */
	assert_int_equal(limit_breaker_peek(&b, 10499, &ra), LIMIT_DENY);
	assert_int_equal(ra, 1);
	assert_int_equal(limit_breaker_peek(&b, 10500, &ra), LIMIT_PROBE);
	assert_int_equal(ra, 0);
	assert_int_equal(limit_breaker_peek(&b, 10500, NULL), LIMIT_PROBE);
	assert_int_equal(b.state, LIMIT_BREAKER_OPEN);
	/* Cool-down over: one probe, the rest denied while it is out. */
	assert_int_equal(limit_breaker_allow(&b, 10500, &ra), LIMIT_PROBE);
	assert_int_equal(ra, 0);
	assert_string_equal(limit_breaker_state_name(b.state), "half-open");
	assert_int_equal(limit_breaker_allow(&b, 10500, &ra), LIMIT_DENY);
	assert_int_equal(ra, LIMIT_PROBE_WAIT_MS);
	assert_int_equal(limit_breaker_peek(&b, 10500, &ra), LIMIT_DENY);
	assert_int_equal(ra, LIMIT_PROBE_WAIT_MS);
	assert_int_equal(limit_breaker_allow(&b, 99999, &ra), LIMIT_DENY);
	assert_int_equal(ra, LIMIT_PROBE_WAIT_MS);
	/* The probe fails: another whole cool-down from its failure. */
	limit_breaker_failure(&b, 12000);
	assert_int_equal(b.state, LIMIT_BREAKER_OPEN);
	assert_int_equal(limit_breaker_allow(&b, 12000, &ra), LIMIT_DENY);
	assert_int_equal(ra, 10000);
	assert_int_equal(limit_breaker_allow(&b, 22000, &ra), LIMIT_PROBE);
	/* The probe is abandoned: the next caller probes at once. */
	limit_breaker_abandon(&b);
	assert_int_equal(b.state, LIMIT_BREAKER_OPEN);
	assert_int_equal(limit_breaker_allow(&b, 22001, &ra), LIMIT_PROBE);
	assert_int_equal(limit_breaker_allow(&b, 22001, &ra), LIMIT_DENY);
	/* The probe succeeds: closed, count reset. */
	limit_breaker_success(&b);
	assert_int_equal(b.state, LIMIT_BREAKER_CLOSED);
	assert_int_equal(b.failures, 0);
	assert_int_equal(limit_breaker_allow(&b, 22002, &ra), LIMIT_ALLOW);
	limit_breaker_failure(&b, 23000);
	limit_breaker_failure(&b, 23000);
	assert_int_equal(limit_breaker_allow(&b, 23000, &ra), LIMIT_ALLOW);
	limit_breaker_failure(&b, 23000);
	assert_int_equal(limit_breaker_allow(&b, 23000, &ra), LIMIT_DENY);
	/* Abandon outside half-open is a no-op. */
	limit_breaker_abandon(&b);
	assert_int_equal(b.state, LIMIT_BREAKER_OPEN);
	limit_breaker_success(&b);
	limit_breaker_abandon(&b);
	assert_int_equal(b.state, LIMIT_BREAKER_CLOSED);
}

static void test_breaker_edges(void **state)
{
	struct limit_breaker b;
	int64_t ra = -1;

	(void)state;
	/* Threshold 1, cool-down 0: the next request is a probe at once. */
	limit_breaker_init(&b, 1, 0);
	limit_breaker_failure(&b, 1000);
	assert_int_equal(limit_breaker_allow(&b, 1000, &ra), LIMIT_PROBE);
	assert_int_equal(limit_breaker_allow(&b, 1000, &ra), LIMIT_DENY);
	assert_true(ra >= 1);
	/* Cool-downs are clamped into [0, LIMIT_DELAY_MAX_MS]. */
	limit_breaker_init(&b, 1, -5);
	assert_int_equal(b.cooldown_ms, 0);
	limit_breaker_init(&b, 1, INT64_MAX);
	assert_int_equal(b.cooldown_ms, LIMIT_DELAY_MAX_MS);
	/* A clock gone backwards never asks for more than one cool-down. */
	limit_breaker_init(&b, 1, 5000);
	limit_breaker_failure(&b, 100000);
	assert_int_equal(limit_breaker_allow(&b, 10, &ra), LIMIT_DENY);
	assert_int_equal(ra, 5000);
	/* The failure count saturates. */
	limit_breaker_init(&b, UINT_MAX, 5000);
	b.failures = UINT_MAX - 1;
	limit_breaker_failure(&b, 0);
	assert_int_equal(b.failures, UINT_MAX);
	assert_int_equal(b.state, LIMIT_BREAKER_OPEN);
	limit_breaker_failure(&b, 0);
	assert_int_equal(b.failures, UINT_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_breaker_disabled),
	    cmocka_unit_test(test_breaker_cycle),
	    cmocka_unit_test(test_breaker_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
