/*
 * Unit tests for policy/query: every rule with its edge values, exact
 * canonical forms, and classes of spellings that must normalise to one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/query.h"

static struct query q;
static struct query_error e;

static enum query_status norm(const char *raw)
{
	return query_normalise(raw, strlen(raw), &q, &e);
}

/* raw -> canonical ("" for QUERY_INVALID, with `param` the parameter named) */
struct case_ {
	const char *raw;
	const char *canonical;
	const char *param;
};

static void run_cases(const struct case_ *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		enum query_status st = norm(cases[i].raw);

		if (cases[i].canonical[0]) {
			if (st != QUERY_OK)
				fail_msg("'%s': refused (%s: %s), expected '%s'", cases[i].raw,
					 e.parameter, e.message, cases[i].canonical);
			if (strcmp(q.canonical, cases[i].canonical) != 0)
				fail_msg("'%s': got '%s', expected '%s'", cases[i].raw,
					 q.canonical, cases[i].canonical);
			assert_int_equal(q.canonical_len, strlen(q.canonical));
		} else {
			if (st != QUERY_INVALID)
				fail_msg("'%s': accepted as '%s', expected refusal on %s",
					 cases[i].raw, q.canonical, cases[i].param);
			if (strcmp(e.parameter, cases[i].param) != 0)
				fail_msg("'%s': names '%s' (%s), expected '%s'", cases[i].raw,
					 e.parameter, e.message, cases[i].param);
			assert_true(strlen(e.message) > 10);
		}
	}
}

#define RUN(c) run_cases(c, sizeof(c) / sizeof(c[0]))

static void test_days(void **state)
{
	static const struct case_ c[] = {
		{"days=1", "days=1", NULL},
		{"days=365", "days=365", NULL},
		{"days=030", "days=30", NULL},
		{"days=7.50", "days=7.5", NULL},
		{"days=365.0", "days=365", NULL},
		{"days=0001.5", "days=1.5", NULL},
		{"days=0", "", "days"},
		{"days=0.999", "", "days"},
		{"days=366", "", "days"},
		{"days=365.001", "", "days"},
		{"days=1000", "", "days"},
		{"days=-1", "", "days"},
		{"days=%2B1", "", "days"},
		{"days=1e2", "", "days"},
		{"days=0x10", "", "days"},
		{"days=%201", "", "days"},
		{"days=1.", "", "days"},
		{"days=.5", "", "days"},
		{"days=99999999999999999999999", "", "days"},
		{"days=", "", "days"},
		{"days", "", "days"},
		{"days=1&days=1", "", "days"},
		{"days=%D9%A3", "", "days"}, /* an Arabic-Indic digit three */
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=7.5"), QUERY_OK);
	assert_int_equal(q.days_milli, 7500);
	assert_int_equal(norm("days=1.0009"), QUERY_OK);
	assert_int_equal(q.days_milli, 1000);
	assert_true(q.present == QUERY_P_DAYS);
}

static void test_limit_offset(void **state)
{
	static const struct case_ c[] = {
		{"days=1&limit=1", "days=1&limit=1", NULL},
		{"days=1&limit=1000", "days=1&limit=1000", NULL},
		{"days=1&limit=010", "days=1&limit=10", NULL},
		{"days=1&limit=10.0", "days=1&limit=10", NULL},
		{"days=1&limit=0", "", "limit"},
		{"days=1&limit=1001", "", "limit"},
		{"days=1&limit=10.5", "", "limit"},
		{"days=1&limit=-1", "", "limit"},
		{"days=1&offset=0", "days=1&offset=0", NULL},
		{"days=1&offset=000", "days=1&offset=0", NULL},
		{"days=1&offset=2147483647", "days=1&offset=2147483647", NULL},
		{"days=1&offset=2147483648", "", "offset"},
		{"days=1&offset=-1", "", "offset"},
		{"days=1&offset=184467440737095516160", "", "offset"},
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("offset=20&limit=5&days=2"), QUERY_OK);
	assert_int_equal(q.limit, 5);
	assert_int_equal(q.offset, 20);
	assert_true(q.present == (QUERY_P_DAYS | QUERY_P_LIMIT | QUERY_P_OFFSET));
}

static void test_timestamps(void **state)
{
	static const struct case_ c[] = {
		{"created_after=2024-01-15T10:00:00.000Z",
		 "created_after=2024-01-15T10%3A00%3A00.000Z", NULL},
		{"created_after=2024-01-15", "created_after=2024-01-15T00%3A00%3A00.000Z", NULL},
		{"created_after=2024-01-15T10:00Z", "created_after=2024-01-15T10%3A00%3A00.000Z", NULL},
		{"created_after=2024-01-15t10:00:00z", "created_after=2024-01-15T10%3A00%3A00.000Z", NULL},
		{"created_after=2024-01-15T12:00:00%2B02:00",
		 "created_after=2024-01-15T10%3A00%3A00.000Z", NULL},
		{"created_after=2024-01-15T12:00:00%2B0200",
		 "created_after=2024-01-15T10%3A00%3A00.000Z", NULL},
		{"created_after=2024-01-15T05:30:00-05:30",
		 "created_after=2024-01-15T11%3A00%3A00.000Z", NULL},
		{"updated_after=2024-01-15T10:00:00.5Z", "updated_after=2024-01-15T10%3A00%3A00.500Z", NULL},
		{"updated_after=2024-01-15T10:00:00.123456789Z",
		 "updated_after=2024-01-15T10%3A00%3A00.123Z", NULL},
		{"updated_after=2024-01-15T10:00:00.9999Z",
		 "updated_after=2024-01-15T10%3A00%3A00.999Z", NULL}, /* truncated */
		{"updated_after=2024-12-31T23:30:00-01:00",
		 "updated_after=2025-01-01T00%3A30%3A00.000Z", NULL}, /* crosses a year */
		{"updated_after=2024-03-01T00:30:00%2B01:00",
		 "updated_after=2024-02-29T23%3A30%3A00.000Z", NULL}, /* back into a leap day */
		{"updated_after=1969-12-31T23:59:59.999Z",
		 "updated_after=1969-12-31T23%3A59%3A59.999Z", NULL},
		{"updated_after=0000-01-01T00:00:00Z", "updated_after=0000-01-01T00%3A00%3A00.000Z", NULL},
		{"updated_after=9999-12-31T23:59:59.999Z",
		 "updated_after=9999-12-31T23%3A59%3A59.999Z", NULL},
		{"created_after=2024-02-29", "created_after=2024-02-29T00%3A00%3A00.000Z", NULL},
		{"created_after=2000-02-29", "created_after=2000-02-29T00%3A00%3A00.000Z", NULL},
		{"created_after=2023-02-29", "", "created_after"},
		{"created_after=1900-02-29", "", "created_after"},
		{"created_after=2024-04-31", "", "created_after"},
		{"created_after=2024-13-01", "", "created_after"},
		{"created_after=2024-00-10", "", "created_after"},
		{"created_after=2024-01-15T24:00:00Z", "", "created_after"},
		{"created_after=2024-01-15T23:60:00Z", "", "created_after"},
		{"created_after=2024-01-15T23:59:60Z", "", "created_after"},
		{"created_after=2024-01-15T10:00:00", "", "created_after"},  /* no zone */
		{"created_after=2024-01-15T10:00:00+02:00", "", "created_after"}, /* '+' is a space */
		{"created_after=2024-01-15T10:00:00.Z", "", "created_after"},
		{"created_after=2024-01-15T10:00:00.1234567890Z", "", "created_after"},
		{"created_after=2024-01-15T10:00:00%2B24:00", "", "created_after"},
		{"created_after=2024-01-15T10:00:00%2B02:60", "", "created_after"},
		{"created_after=2024-1-15", "", "created_after"},
		{"created_after=20240115", "", "created_after"},
		{"created_after=yesterday", "", "created_after"},
		{"created_after=0000-01-01T00:30:00%2B01:00", "", "created_after"},
		{"created_after=9999-12-31T23:59:59-01:00", "", "created_after"},
		{"updated_after=2024-01-15T10:00:00ZZ", "", "updated_after"},
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("updated_after=1970-01-01T00:00:01.500Z"), QUERY_OK);
	assert_int_equal(q.updated_after_ms, 1500);
	assert_int_equal(norm("created_after=1969-12-31T23:59:59Z"), QUERY_OK);
	assert_int_equal(q.created_after_ms, -1000);
	assert_non_null(strstr((norm("created_after=2024-01-15T10:00:00+02:00"), e.message),
			       "%2B"));
}

static void test_uuids(void **state)
{
	static const struct case_ c[] = {
		{"days=1&stage_id=123E4567-E89B-12D3-A456-426614174000",
		 "days=1&stage_id=123e4567-e89b-12d3-a456-426614174000", NULL},
		{"days=1&pipeline_id=123e4567-E89B-82d3-B456-426614174000",
		 "days=1&pipeline_id=123e4567-e89b-82d3-b456-426614174000", NULL},
		{"days=1&stage_id=00000000-0000-0000-0000-000000000000",
		 "days=1&stage_id=00000000-0000-0000-0000-000000000000", NULL},
		{"days=1&stage_id=FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
		 "days=1&stage_id=ffffffff-ffff-ffff-ffff-ffffffffffff", NULL},
		{"days=1&stage_id=123e4567-e89b-02d3-a456-426614174000", "", "stage_id"}, /* version 0 */
		{"days=1&stage_id=123e4567-e89b-92d3-a456-426614174000", "", "stage_id"}, /* version 9 */
		{"days=1&stage_id=123e4567-e89b-12d3-c456-426614174000", "", "stage_id"}, /* variant */
		{"days=1&stage_id=123e4567e89b12d3a456426614174000", "", "stage_id"},
		{"days=1&stage_id=123e4567-e89b-12d3-a456-42661417400", "", "stage_id"},
		{"days=1&stage_id=123e4567-e89b-12d3-a456-4266141740000", "", "stage_id"},
		{"days=1&pipeline_id=g23e4567-e89b-12d3-a456-426614174000", "", "pipeline_id"},
	};

	(void)state;
	RUN(c);
}

static void test_custom_fields_and_entity(void **state)
{
	static const struct case_ c[] = {
		{"days=1&custom_field_key=status&custom_field_value=Active",
		 "custom_field_key=status&custom_field_value=Active&days=1", NULL},
		{"days=1&custom_field_key=region&custom_field_value=S%C3%A3o+Paulo",
		 "custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=1", NULL},
		{"days=1&custom_field_key=a%2Fb&custom_field_value=%7E_.-",
		 "custom_field_key=a%2Fb&custom_field_value=~_.-&days=1", NULL},
		{"days=1&custom_field_key=status", "", "custom_field_value"},
		{"days=1&custom_field_value=x", "", "custom_field_key"},
		{"days=1&custom_field_key=&custom_field_value=x", "", "custom_field_key"},
		{"days=1&custom_field_key=s&custom_field_value=%00", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=%C0%AF", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=%ED%A0%80", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=%F4%90%80%80", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=%C3", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=%ZZ", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=%4", "", "custom_field_value"},
		{"days=1&custom_field_key=s&custom_field_value=x&entity_type=ticket",
		 "custom_field_key=s&custom_field_value=x&days=1&entity_type=ticket", NULL},
		{"days=1&custom_field_key=s&custom_field_value=x&entity_type=customer",
		 "custom_field_key=s&custom_field_value=x&days=1&entity_type=customer", NULL},
		{"days=1&entity_type=ticket", "days=1", NULL}, /* dropped without the pair */
		{"days=1&entity_type=Ticket", "", "entity_type"},
		{"days=1&entity_type=both", "", "entity_type"},
	};
	char raw[2200], big[1100];

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=1&entity_type=ticket"), QUERY_OK);
	assert_string_equal(q.ignored, "entity_type");
	memset(big, 'a', 1024);
	big[1024] = '\0';
	snprintf(raw, sizeof(raw), "days=1&custom_field_key=k&custom_field_value=%s", big);
	assert_int_equal(norm(raw), QUERY_OK);
	snprintf(raw, sizeof(raw), "days=1&custom_field_key=k&custom_field_value=%sa", big);
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "custom_field_value");
}

static void test_structure(void **state)
{
	static const struct case_ c[] = {
		{"", "", "days"},
		{"limit=5", "", "days"},
		{"&&&", "", "days"},
		{"days=1&&&limit=5&", "days=1&limit=5", NULL},
		{"foo=1&days=2&bar", "days=2", NULL},
		{"Days=2&days=3", "days=3", NULL}, /* names are case-sensitive */
		{"days=2&x=%00", "", "x"},
		{"days=2&x=%G1", "", "x"},
		{"days=2&%=1", "", "%"},
	};
	char raw[QUERY_RAW_MAX + 8];
	size_t o = 0;

	(void)state;
	RUN(c);
	assert_int_equal(norm("limit=010&days=030&foo=1"), QUERY_OK);
	assert_string_equal(q.canonical, "days=30&limit=10");
	assert_string_equal(q.ignored, "foo");
	assert_int_equal(norm("a=1&b=2&a=3&days=2&c%20d=4"), QUERY_OK);
	assert_string_equal(q.ignored, "a,b,c%20d");
	assert_int_equal(norm("days=1"), QUERY_OK);
	assert_string_equal(q.ignored, "");

	/* the ignored list is bounded and says it was cut */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1");
	for (int i = 0; i < 60; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&unknown_param_%02d=1", i);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_true(strlen(q.ignored) < QUERY_IGNORED_MAX);
	assert_non_null(strstr(q.ignored, ",..."));

	/* too many segments, too long */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1");
	for (int i = 0; i < QUERY_PARAMS_MAX; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&x=1");
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");
	memset(raw, 'a', QUERY_RAW_MAX + 1);
	memcpy(raw, "days=1&x=", 9);
	raw[QUERY_RAW_MAX + 1] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");
	assert_int_equal(query_normalise(NULL, 0, &q, &e), QUERY_INVALID);
}

/* Spellings within a group must give the same canonical bytes. */
static void test_equivalence_classes(void **state)
{
	static const char *const groups[][6] = {
		{"days=30&limit=10", "limit=10&days=30", "days=030&limit=010",
		 "limit=10.0&days=30.000&zz=1", "days=30&&limit=1%30", NULL},
		{"days=7&stage_id=123e4567-e89b-12d3-a456-426614174000",
		 "stage_id=123E4567-E89B-12D3-A456-426614174000&days=7",
		 "stage_id=123e4567-E89B-12d3-A456-426614174000&days=7.0", NULL},
		{"updated_after=2024-01-15T10:00:00.000Z&limit=1000",
		 "limit=1000&updated_after=2024-01-15T10:00:00Z",
		 "updated_after=2024-01-15T12:00:00%2B02:00&limit=1000",
		 "updated_after=2024-01-15T07:00:00.000-03:00&limit=1000",
		 "updated_after=2024-01-15T10%3A00%3A00.0000Z&limit=1000", NULL},
		{"days=1&custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo",
		 "custom_field_value=S%C3%A3o+Paulo&custom_field_key=region&days=1",
		 "days=1&custom_field_key=%72egion&custom_field_value=S%c3%a3o Paulo", NULL},
		{"days=2", "days=2&entity_type=ticket", "days=2&other=1", NULL},
	};

	(void)state;
	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
		char first[QUERY_CANON_MAX];

		assert_int_equal(norm(groups[g][0]), QUERY_OK);
		memcpy(first, q.canonical, q.canonical_len + 1);
		for (size_t i = 1; groups[g][i]; i++) {
			if (norm(groups[g][i]) != QUERY_OK)
				fail_msg("'%s' refused: %s", groups[g][i], e.message);
			if (strcmp(first, q.canonical) != 0)
				fail_msg("'%s' -> '%s', but '%s' -> '%s'", groups[g][i],
					 q.canonical, groups[g][0], first);
		}
	}
}

static void test_encode(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(query_encode(out, sizeof(out), "aZ09-._~", 8), 8);
	assert_string_equal(out, "aZ09-._~");
	assert_int_equal(query_encode(out, sizeof(out), "a b:/", 5), 11);
	assert_string_equal(out, "a%20b%3A%2F");
	assert_int_equal(query_encode(out, 4, "abc", 3), 3); /* exact fit */
	assert_int_equal(query_encode(out, 3, "abc", 3), -1);
	assert_string_equal(out, "ab");
	assert_int_equal(query_encode(out, 3, "\xff", 1), -1);
	assert_int_equal(query_encode(out, 0, "a", 1), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_limit_offset),
		cmocka_unit_test(test_timestamps),
		cmocka_unit_test(test_uuids),
		cmocka_unit_test(test_custom_fields_and_entity),
		cmocka_unit_test(test_structure),
		cmocka_unit_test(test_equivalence_classes),
		cmocka_unit_test(test_encode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
