/* Unit tests for policy/ttl: classes, inheritance, the clock as a parameter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/ttl.h"

static struct query q_days(uint32_t days_milli)
{
	struct query q;

	memset(&q, 0, sizeof(q));
	q.present = QUERY_P_DAYS;
	q.days_milli = days_milli;
	return q;
}

static void test_classes(void **state)
{
	struct ttl_policy p = {60, 10, 600, 90};
	struct query q = q_days(30000);

	(void)state;
	assert_int_equal(ttl_classify(&p, &q), TTL_CLASS_DEFAULT);
	assert_int_equal(ttl_seconds(&p, &q), 60);
	q = q_days(89999); /* 89.999 days */
	assert_int_equal(ttl_classify(&p, &q), TTL_CLASS_DEFAULT);
	q = q_days(90000);
	assert_int_equal(ttl_classify(&p, &q), TTL_CLASS_WIDE);
	assert_int_equal(ttl_seconds(&p, &q), 600);
	q.present |= QUERY_P_UPDATED_AFTER; /* the cursor class wins */
	assert_int_equal(ttl_classify(&p, &q), TTL_CLASS_CURSOR);
	assert_int_equal(ttl_seconds(&p, &q), 10);
	memset(&q, 0, sizeof(q));
	q.present = QUERY_P_CREATED_AFTER | QUERY_P_LIMIT;
	assert_int_equal(ttl_classify(&p, &q), TTL_CLASS_CURSOR);
	assert_string_equal(ttl_class_name(TTL_CLASS_CURSOR), "cursor");
	assert_string_equal(ttl_class_name(TTL_CLASS_WIDE), "wide");
	assert_string_equal(ttl_class_name(TTL_CLASS_DEFAULT), "default");
}

static void test_inherit_and_zero(void **state)
{
	struct ttl_policy p = {45, TTL_INHERIT, 0, 90};
	struct query q = q_days(365000);

	(void)state;
	assert_int_equal(ttl_seconds(&p, &q), 0); /* wide answers not stored */
	q.present = QUERY_P_UPDATED_AFTER;
	assert_int_equal(ttl_seconds(&p, &q), 45); /* cursor inherits ttl */
	assert_int_equal(ttl_expires_ms(&p, &q, 1000), 46000);
	p.ttl_s = TTL_MAX_S;
	assert_int_equal(ttl_expires_ms(&p, &q, INT64_C(1) << 40),
			 (INT64_C(1) << 40) + (int64_t)TTL_MAX_S * 1000);
}

/* Issue 16: an answer served at exactly its expiry millisecond said ttl=0
 * while being treated as stale. One boundary: stale iff ttl <= -1. */
static void test_freshness_boundary(void **state)
{
	const int64_t exp = 61000;

	(void)state;
	assert_false(ttl_is_stale(exp, exp - 1));
	assert_int_equal(ttl_left_s(exp, exp - 1), 0);
	assert_int_equal(ttl_left_s(exp, exp - 1000), 1);
	assert_int_equal(ttl_left_s(exp, exp - 60000), 60);
	assert_true(ttl_is_stale(exp, exp));
	assert_int_equal(ttl_left_s(exp, exp), -1);
	assert_int_equal(ttl_left_s(exp, exp + 999), -1);
	assert_int_equal(ttl_left_s(exp, exp + 1000), -2);
	for (int64_t now = exp - 3000; now < exp + 3000; now++)
		assert_int_equal(ttl_is_stale(exp, now), ttl_left_s(exp, now) <= -1);
	assert_true(ttl_left_s(INT64_MIN + 5, INT64_MAX) < 0); /* no overflow */
	assert_true(ttl_left_s(INT64_MAX, INT64_MIN) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes),
		cmocka_unit_test(test_inherit_and_zero),
		cmocka_unit_test(test_freshness_boundary),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
