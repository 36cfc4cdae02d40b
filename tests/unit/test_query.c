/*
 * Unit tests for policy/query: every rule with its edge values, the exact
 * canonical form of a few queries, classes of spellings that must normalise
 * to the same bytes, the order in which rules are checked, the ignored
 * list and its bound, query_encode on its own, and a sweep of generated
 * inputs checking the output invariants (run under ASan/UBSan and valgrind
 * for the memory side).
 *
 * Cases are tables: raw query -> canonical query, or -> the parameter named
 * in the error (and, where given, the exact message).
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

/* Whether s[0..n) is well-formed UTF-8 (an independent, table-free check). */
static int utf8_ok(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned c = u[i], cp;
		size_t len;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4, cp = c & 0x07;
		else
			return 0;
		if (n - i < len)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((u[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (u[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

/* The invariants of the header, whatever the input. */
static void check_invariants(enum query_status st)
{
	if (st == QUERY_OK) {
		assert_true(memchr(q.canonical, '\0', sizeof(q.canonical)) != NULL);
		assert_int_equal(q.canonical_len, strlen(q.canonical));
		assert_true(q.canonical_len > 0 && q.canonical_len < QUERY_CANON_MAX);
		assert_true(memchr(q.ignored, '\0', sizeof(q.ignored)) != NULL);
		assert_true(q.present & (QUERY_P_DAYS | QUERY_P_CREATED_AFTER |
					 QUERY_P_UPDATED_AFTER));
		for (size_t i = 0; i < q.canonical_len; i++) {
			char c = q.canonical[i];

			assert_true((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				    (c >= '0' && c <= '9') || strchr("-._~%&=", c));
		}
	} else {
		assert_int_equal(st, QUERY_INVALID);
		assert_true(memchr(e.parameter, '\0', sizeof(e.parameter)) != NULL);
		assert_true(memchr(e.message, '\0', sizeof(e.message)) != NULL);
		assert_true(strlen(e.parameter) > 0);
		assert_true(strlen(e.message) > 10);
		assert_true(utf8_ok(e.parameter, strlen(e.parameter)));
		assert_true(utf8_ok(e.message, strlen(e.message)));
	}
}

/*
 * raw -> canonical; or canonical NULL: refused naming `param`, with exactly
 * `message` when that is not NULL.
 */
struct case_ {
	const char *raw;
	const char *canonical;
	const char *param;
	const char *message;
};

static void run_cases(const struct case_ *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		enum query_status st = norm(c[i].raw);

		check_invariants(st);
		if (c[i].canonical) {
			if (st != QUERY_OK)
				fail_msg("'%s': refused (%s: %s), expected '%s'", c[i].raw,
					 e.parameter, e.message, c[i].canonical);
			if (strcmp(q.canonical, c[i].canonical) != 0)
				fail_msg("'%s': got '%s', expected '%s'", c[i].raw, q.canonical,
					 c[i].canonical);
			continue;
		}
		if (st != QUERY_INVALID)
			fail_msg("'%s': accepted as '%s', expected refusal on %s", c[i].raw,
				 q.canonical, c[i].param);
		if (strcmp(e.parameter, c[i].param) != 0)
			fail_msg("'%s': names '%s' (%s), expected '%s'", c[i].raw, e.parameter,
				 e.message, c[i].param);
		if (c[i].message && strcmp(e.message, c[i].message) != 0)
			fail_msg("'%s': says '%s', expected '%s'", c[i].raw, e.message,
				 c[i].message);
	}
}

#define RUN(c) run_cases(c, sizeof(c) / sizeof(c[0]))
#define OK(raw, canon) {raw, canon, NULL, NULL}
#define BAD(raw, param) {raw, NULL, param, NULL}
#define BADM(raw, param, msg) {raw, NULL, param, msg}

#define DAYS_RANGE "days must be between 1 and 365"
#define DAYS_NUMBER "days must be a number"
#define LIMIT_RANGE "limit must be between 1 and 1000"
#define LIMIT_INT "limit must be an integer"
#define OFFSET_RANGE "offset must be between 0 and 2147483647"
#define OFFSET_INT "offset must be an integer"
#define CA_FORMAT "created_after must be an ISO 8601 timestamp, e.g. 2024-01-15T10:00:00.000Z"
#define CA_ZONE "created_after must include a time zone, e.g. Z or +02:00"
#define UA_FORMAT "updated_after must be an ISO 8601 timestamp, e.g. 2024-01-15T10:00:00.000Z"
#define NEED_ONE "at least one of days, created_after or updated_after is required"

/* ---- numbers ---------------------------------------------------------- */

static void test_days(void **state)
{
	static const struct case_ c[] = {
		OK("days=1", "days=1"),
		OK("days=365", "days=365"),
		OK("days=1.5", "days=1.5"),
		OK("days=365.0", "days=365"),
		OK("days=365.000", "days=365"),
		OK("days=030", "days=30"),
		OK("days=7.50", "days=7.5"),
		OK("days=30.000", "days=30"),
		OK("days=0001.5", "days=1.5"),
		OK("days=1.0", "days=1"),
		OK("days=364.999999999999999999999", "days=364.999999999999999999999"),
		OK("days=00000000000000000000000000000000000001", "days=1"),
		OK("days=%33%30", "days=30"),
		BADM("days=0", "days", DAYS_RANGE),
		BADM("days=0.0", "days", DAYS_RANGE),
		BADM("days=0.999", "days", DAYS_RANGE),
		BADM("days=366", "days", DAYS_RANGE),
		BADM("days=365.001", "days", DAYS_RANGE),
		BADM("days=365.0000000001", "days", DAYS_RANGE),
		BADM("days=1000", "days", DAYS_RANGE),
		BADM("days=99999999999999999999999", "days", DAYS_RANGE),
		BADM("days=18446744073709551617", "days", DAYS_RANGE),
		BADM("days=000000000000000000000366", "days", DAYS_RANGE),
		BADM("days=-1", "days", DAYS_NUMBER),
		BADM("days=%2B1", "days", DAYS_NUMBER),
		BADM("days=+1", "days", DAYS_NUMBER), /* '+' is a space */
		BADM("days=%201", "days", DAYS_NUMBER),
		BADM("days=1%20", "days", DAYS_NUMBER),
		BADM("days=1e2", "days", DAYS_NUMBER),
		BADM("days=1E2", "days", DAYS_NUMBER),
		BADM("days=0x10", "days", DAYS_NUMBER),
		BADM("days=1.", "days", DAYS_NUMBER),
		BADM("days=.5", "days", DAYS_NUMBER),
		BADM("days=1..5", "days", DAYS_NUMBER),
		BADM("days=1.5.1", "days", DAYS_NUMBER),
		BADM("days=1,5", "days", DAYS_NUMBER),
		BADM("days=abc", "days", DAYS_NUMBER),
		BADM("days=Infinity", "days", DAYS_NUMBER),
		BADM("days=NaN", "days", DAYS_NUMBER),
		BADM("days=%D9%A3", "days", DAYS_NUMBER), /* an Arabic-Indic digit */
		BADM("days=%EF%BC%91", "days", DAYS_NUMBER), /* a full-width digit */
		BADM("days=", "days", "days must not be empty"),
		BADM("days", "days", "days must not be empty"),
	};
	static const struct {
		const char *raw;
		uint32_t milli;
	} m[] = {
		{"days=1", 1000},	{"days=7.5", 7500},   {"days=7.50", 7500},
		{"days=1.0001", 1000}, {"days=1.0009", 1000}, {"days=1.999999", 1999},
		{"days=365", 365000},  {"days=364.999", 364999}, {"days=0001.25", 1250},
	};

	(void)state;
	RUN(c);
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		assert_int_equal(norm(m[i].raw), QUERY_OK);
		assert_int_equal(q.days_milli, m[i].milli);
		assert_int_equal(q.present, QUERY_P_DAYS);
	}
}

/* Arbitrarily many leading zeros are fine; huge numbers never overflow. */
static void test_long_numbers(void **state)
{
	char raw[QUERY_RAW_MAX + 1];
	size_t o;

	(void)state;
	o = (size_t)snprintf(raw, sizeof(raw), "days=");
	memset(raw + o, '0', 3000);
	o += 3000;
	snprintf(raw + o, sizeof(raw) - o, "30.5000");
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.canonical, "days=30.5");
	assert_int_equal(q.days_milli, 30500);

	/* a 3000-digit fraction is kept digit for digit */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1.");
	memset(raw + o, '0', 2999);
	o += 2999;
	snprintf(raw + o, sizeof(raw) - o, "1");
	assert_int_equal(norm(raw), QUERY_OK);
	assert_int_equal(q.canonical_len, strlen("days=1.") + 3000);
	assert_int_equal(q.days_milli, 1000);

	o = (size_t)snprintf(raw, sizeof(raw), "days=");
	memset(raw + o, '9', 4000);
	raw[o + 4000] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.message, DAYS_RANGE);

	o = (size_t)snprintf(raw, sizeof(raw), "days=1&offset=");
	memset(raw + o, '0', 3000);
	snprintf(raw + o + 3000, sizeof(raw) - o - 3000, "2147483647");
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.canonical, "days=1&offset=2147483647");
	assert_int_equal(q.offset, 2147483647u);

	o = (size_t)snprintf(raw, sizeof(raw), "days=1&limit=");
	memset(raw + o, '1', 3000);
	raw[o + 3000] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.message, LIMIT_RANGE);
}

static void test_limit(void **state)
{
	static const struct case_ c[] = {
		OK("days=1&limit=1", "days=1&limit=1"),
		OK("days=1&limit=1000", "days=1&limit=1000"),
		OK("days=1&limit=010", "days=1&limit=10"),
		OK("days=1&limit=10.0", "days=1&limit=10"),
		OK("days=1&limit=10.000", "days=1&limit=10"),
		OK("days=1&limit=0001000.0", "days=1&limit=1000"),
		BADM("days=1&limit=0", "limit", LIMIT_RANGE),
		BADM("days=1&limit=0.0", "limit", LIMIT_RANGE),
		BADM("days=1&limit=1001", "limit", LIMIT_RANGE),
		BADM("days=1&limit=99999999999999999999999", "limit", LIMIT_RANGE),
		BADM("days=1&limit=10.5", "limit", LIMIT_INT),
		BADM("days=1&limit=0.5", "limit", LIMIT_INT),
		BADM("days=1&limit=1000.1", "limit", LIMIT_INT),
		BADM("days=1&limit=-1", "limit", LIMIT_INT),
		BADM("days=1&limit=1e3", "limit", LIMIT_INT),
		BADM("days=1&limit=0x10", "limit", LIMIT_INT),
		BADM("days=1&limit=10.", "limit", LIMIT_INT),
		BADM("days=1&limit=%2010", "limit", LIMIT_INT),
		BADM("days=1&limit=abc", "limit", LIMIT_INT),
		BADM("days=1&limit=", "limit", "limit must not be empty"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=1&limit=0010.00"), QUERY_OK);
	assert_int_equal(q.limit, 10);
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_LIMIT);
}

static void test_offset(void **state)
{
	static const struct case_ c[] = {
		/* skipping none is the default: offset=0 is the absent offset */
		OK("days=1&offset=0", "days=1"),
		OK("days=1&offset=000", "days=1"),
		OK("days=1&offset=0.0", "days=1"),
		OK("days=1&limit=5&offset=0", "days=1&limit=5"),
		OK("days=1&offset=20", "days=1&offset=20"),
		OK("days=1&offset=2147483647", "days=1&offset=2147483647"),
		OK("days=1&offset=2147483647.000", "days=1&offset=2147483647"),
		BADM("days=1&offset=2147483648", "offset", OFFSET_RANGE),
		BADM("days=1&offset=4294967296", "offset", OFFSET_RANGE),
		BADM("days=1&offset=18446744073709551616", "offset", OFFSET_RANGE),
		BADM("days=1&offset=184467440737095516160", "offset", OFFSET_RANGE),
		BADM("days=1&offset=-1", "offset", OFFSET_INT),
		BADM("days=1&offset=-0", "offset", OFFSET_INT),
		BADM("days=1&offset=1.5", "offset", OFFSET_INT),
		BADM("days=1&offset=1e3", "offset", OFFSET_INT),
		BADM("days=1&offset=", "offset", "offset must not be empty"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=1&offset=2147483647"), QUERY_OK);
	assert_int_equal(q.offset, 2147483647u);
	assert_int_equal(norm("offset=20&limit=5&days=2"), QUERY_OK);
	assert_int_equal(q.limit, 5);
	assert_int_equal(q.offset, 20);
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_LIMIT | QUERY_P_OFFSET);
}

/* ---- timestamps ------------------------------------------------------- */

#define CA(t) "created_after=" t
#define UA(t) "updated_after=" t
#define CA_OUT(d, hms) "created_after=" d "T" hms "Z"

static void test_timestamp_forms(void **state)
{
	static const struct case_ c[] = {
		/* every accepted shape */
		OK(CA("2024-01-15"), "created_after=2024-01-15T00%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00Z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00:00Z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00:00.000Z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		/* every zone form */
		OK(CA("2024-01-15T12:00:00%2B02:00"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T12:00:00%2B0200"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T07:00:00-03:00"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T07:00:00-0300"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T05:30:00-05:30"), "created_after=2024-01-15T11%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00%2B00:00"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00-00:00"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00:00.5%2B0100"), "created_after=2024-01-15T09%3A00%3A00.500Z"),
		OK(CA("2024-01-15T00:00:00%2B23:59"), "created_after=2024-01-14T00%3A01%3A00.000Z"),
		OK(CA("2024-01-15T00:00:00-23:59"), "created_after=2024-01-15T23%3A59%3A00.000Z"),
		/* lower-case separators */
		OK(CA("2024-01-15t10:00:00z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15t10:00:00Z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15T10:00:00z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		OK(CA("2024-01-15t10:00-01:00"), "created_after=2024-01-15T11%3A00%3A00.000Z"),
		/* percent-encoded colons */
		OK(CA("2024-01-15T10%3A00%3A00Z"), "created_after=2024-01-15T10%3A00%3A00.000Z"),
		/* fraction lengths 1..9: milliseconds, the rest truncated */
		OK(UA("2024-01-15T10:00:00.1Z"), "updated_after=2024-01-15T10%3A00%3A00.100Z"),
		OK(UA("2024-01-15T10:00:00.12Z"), "updated_after=2024-01-15T10%3A00%3A00.120Z"),
		OK(UA("2024-01-15T10:00:00.123Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T10:00:00.1239Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T10:00:00.12399Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T10:00:00.123999Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T10:00:00.1239999Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T10:00:00.12399999Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T10:00:00.123999999Z"), "updated_after=2024-01-15T10%3A00%3A00.123Z"),
		OK(UA("2024-01-15T23:59:59.9999Z"), "updated_after=2024-01-15T23%3A59%3A59.999Z"),
		OK(UA("2024-01-15T10:00:00.000000000Z"), "updated_after=2024-01-15T10%3A00%3A00.000Z"),
	};

	(void)state;
	RUN(c);
}

static void test_timestamp_calendar(void **state)
{
	static const struct case_ c[] = {
		OK(CA("2024-02-29"), CA_OUT("2024-02-29", "00%3A00%3A00.000")),
		OK(CA("2000-02-29"), CA_OUT("2000-02-29", "00%3A00%3A00.000")),
		OK(CA("1600-02-29"), CA_OUT("1600-02-29", "00%3A00%3A00.000")),
		OK(CA("0000-02-29"), CA_OUT("0000-02-29", "00%3A00%3A00.000")),
		OK(CA("2023-02-28"), CA_OUT("2023-02-28", "00%3A00%3A00.000")),
		OK(CA("2024-01-31"), CA_OUT("2024-01-31", "00%3A00%3A00.000")),
		OK(CA("2024-04-30"), CA_OUT("2024-04-30", "00%3A00%3A00.000")),
		OK(CA("2024-12-31T23:59:59Z"), CA_OUT("2024-12-31", "23%3A59%3A59.000")),
		OK(CA("2024-01-01T00:00:00Z"), CA_OUT("2024-01-01", "00%3A00%3A00.000")),
		BAD(CA("2023-02-29"), "created_after"),
		BAD(CA("1900-02-29"), "created_after"),
		BAD(CA("2100-02-29"), "created_after"),
		BAD(CA("2024-02-30"), "created_after"),
		BAD(CA("2024-04-31"), "created_after"),
		BAD(CA("2024-06-31"), "created_after"),
		BAD(CA("2024-09-31"), "created_after"),
		BAD(CA("2024-11-31"), "created_after"),
		BAD(CA("2024-01-32"), "created_after"),
		BAD(CA("2024-01-00"), "created_after"),
		BAD(CA("2024-00-10"), "created_after"),
		BAD(CA("2024-13-01"), "created_after"),
		BAD(CA("2024-99-99"), "created_after"),
		BAD(CA("2024-01-15T24:00:00Z"), "created_after"),
		BAD(CA("2024-01-15T24:00Z"), "created_after"),
		BAD(CA("2024-01-15T23:60:00Z"), "created_after"),
		BAD(CA("2024-01-15T23:59:60Z"), "created_after"),
		BAD(CA("2024-01-15T99:99:99Z"), "created_after"),
		BAD(CA("2024-01-15T10:00:00%2B24:00"), "created_after"),
		BAD(CA("2024-01-15T10:00:00%2B02:60"), "created_after"),
		BAD(CA("2024-01-15T10:00:00-2400"), "created_after"),
		BAD(UA("2023-02-29T10:00:00Z"), "updated_after"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm(CA("2023-02-29")), QUERY_INVALID);
	assert_string_equal(e.message, "created_after has day 29, which 2023-02 does not have");
	assert_int_equal(norm(CA("2024-13-01")), QUERY_INVALID);
	assert_string_equal(e.message, "created_after has month 13; months are 01 to 12");
}

/* Offsets that move the instant across a day, month or year, and the range. */
static void test_timestamp_boundaries(void **state)
{
	static const struct case_ c[] = {
		OK(UA("2024-01-15T23:30:00-01:00"), "updated_after=2024-01-16T00%3A30%3A00.000Z"),
		OK(UA("2024-01-16T00:30:00%2B01:00"), "updated_after=2024-01-15T23%3A30%3A00.000Z"),
		OK(UA("2024-01-31T23:00:00-02:00"), "updated_after=2024-02-01T01%3A00%3A00.000Z"),
		OK(UA("2024-02-29T23:00:00-02:00"), "updated_after=2024-03-01T01%3A00%3A00.000Z"),
		OK(UA("2023-02-28T23:00:00-02:00"), "updated_after=2023-03-01T01%3A00%3A00.000Z"),
		OK(UA("2024-03-01T00:30:00%2B01:00"), "updated_after=2024-02-29T23%3A30%3A00.000Z"),
		OK(UA("2023-03-01T00:30:00%2B01:00"), "updated_after=2023-02-28T23%3A30%3A00.000Z"),
		OK(UA("2024-12-31T23:30:00-01:00"), "updated_after=2025-01-01T00%3A30%3A00.000Z"),
		OK(UA("2025-01-01T00:30:00%2B01:00"), "updated_after=2024-12-31T23%3A30%3A00.000Z"),
		OK(UA("1970-01-01T00:30:00%2B01:00"), "updated_after=1969-12-31T23%3A30%3A00.000Z"),
		OK(UA("1969-12-31T23:59:59.5Z"), "updated_after=1969-12-31T23%3A59%3A59.500Z"),
		/* the ends of the range, and offsets pushing past them */
		OK(UA("0000-01-01T00:00:00Z"), "updated_after=0000-01-01T00%3A00%3A00.000Z"),
		OK(UA("0000-01-01"), "updated_after=0000-01-01T00%3A00%3A00.000Z"),
		OK(UA("0000-01-01T00:30:00-01:00"), "updated_after=0000-01-01T01%3A30%3A00.000Z"),
		OK(UA("0000-01-01T01:00:00%2B01:00"), "updated_after=0000-01-01T00%3A00%3A00.000Z"),
		OK(UA("9999-12-31T23:59:59.999Z"), "updated_after=9999-12-31T23%3A59%3A59.999Z"),
		OK(UA("9999-12-31T23:59:59%2B01:00"), "updated_after=9999-12-31T22%3A59%3A59.000Z"),
		OK(UA("9999-12-31T22:59:59.999-01:00"), "updated_after=9999-12-31T23%3A59%3A59.999Z"),
		BAD(UA("0000-01-01T00:30:00%2B01:00"), "updated_after"),
		BAD(UA("0000-01-01T00:00:00%2B00:01"), "updated_after"),
		BAD(UA("0000-01-01T00:59:59.999%2B01:00"), "updated_after"),
		BAD(UA("9999-12-31T23:59:59-01:00"), "updated_after"),
		BAD(UA("9999-12-31T23:00:00-01:00"), "updated_after"),
		BAD(UA("9999-12-31T23:59-00:01"), "updated_after"),
	};
	static const struct {
		const char *raw;
		int64_t ms;
	} m[] = {
		{UA("1970-01-01T00:00:00Z"), 0},
		{UA("1970-01-01T00:00:01.500Z"), 1500},
		{UA("1969-12-31T23:59:59Z"), -1000},
		{UA("1969-12-31T23:59:59.5Z"), -500},
		{UA("2024-01-15T10:00:00Z"), INT64_C(1705312800000)},
		{UA("2024-01-15T12:00:00%2B02:00"), INT64_C(1705312800000)},
		{UA("2000-02-29"), INT64_C(951782400000)},
		{UA("0001-01-01"), INT64_C(-62135596800000)},
		{UA("0000-01-01"), INT64_C(-62167219200000)},
		{UA("9999-12-31T23:59:59.999Z"), INT64_C(253402300799999)},
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm(UA("9999-12-31T23:59:59-01:00")), QUERY_INVALID);
	assert_string_equal(e.message,
			    "updated_after falls outside the years 0000 to 9999 once converted "
			    "to UTC");
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		assert_int_equal(norm(m[i].raw), QUERY_OK);
		assert_true(q.updated_after_ms == m[i].ms);
		assert_int_equal(q.present, QUERY_P_UPDATED_AFTER);
	}
	assert_int_equal(norm(CA("2024-01-15T12:00:00%2B02:00")), QUERY_OK);
	assert_true(q.created_after_ms == INT64_C(1705312800000));
	assert_int_equal(q.present, QUERY_P_CREATED_AFTER);
}

static void test_timestamp_refused(void **state)
{
	static const struct case_ c[] = {
		BADM(CA("2024-01-15T10:00:00"), "created_after", CA_ZONE),
		BADM(CA("2024-01-15T10:00"), "created_after", CA_ZONE),
		BADM(CA("2024-01-15T10:00:00.123"), "created_after", CA_ZONE),
		BADM(CA("2024-01-15t10:00:00"), "created_after", CA_ZONE),
		BADM(CA("2024-01-15T10"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T1:00:00Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:0:00Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:0Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00.5Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00.Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00.1234567890Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00,5Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15 10:00:00Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15+10:00:00Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15x10:00:00Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00ZZ"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00UTC"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00GMT"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00%2B02"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00%2B2:00"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00%2B02:0"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00%2B020"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00%2B02:00:00"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00%2B02:00Z"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15T10:00:00Z%2B02:00"), "created_after", CA_FORMAT),
		BADM(CA("2024-1-15"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-5"), "created_after", CA_FORMAT),
		BADM(CA("24-01-15"), "created_after", CA_FORMAT),
		BADM(CA("02024-01-15"), "created_after", CA_FORMAT),
		BADM(CA("%2B2024-01-15"), "created_after", CA_FORMAT),
		BADM(CA("-2024-01-15"), "created_after", CA_FORMAT),
		BADM(CA("20240115"), "created_after", CA_FORMAT),
		BADM(CA("20240115T100000Z"), "created_after", CA_FORMAT),
		BADM(CA("2024/01/15"), "created_after", CA_FORMAT),
		BADM(CA("2024-01"), "created_after", CA_FORMAT),
		BADM(CA("2024"), "created_after", CA_FORMAT),
		BADM(CA("yesterday"), "created_after", CA_FORMAT),
		BADM(CA("1705312800000"), "created_after", CA_FORMAT),
		BADM(CA("%202024-01-15"), "created_after", CA_FORMAT),
		BADM(CA("2024-01-15%20"), "created_after", CA_FORMAT),
		BADM(CA("%D9%A2024-01-15"), "created_after", CA_FORMAT),
		BADM(UA("garbage"), "updated_after", UA_FORMAT),
		BADM(CA(""), "created_after", "created_after must not be empty"),
		BADM(UA(""), "updated_after", "updated_after must not be empty"),
		/* a literal '+' arrives as a space: refused with a hint */
		BAD(CA("2024-01-15T10:00:00+02:00"), "created_after"),
		BAD(CA("2024-01-15T10:00:00%2002:00"), "created_after"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm(CA("2024-01-15T10:00:00+02:00")), QUERY_INVALID);
	assert_non_null(strstr(e.message, "%2B"));
}

/* Every day of some years: accepted iff it exists, one day apart, round trip. */
static void test_timestamp_every_day(void **state)
{
	static const int years[] = {0,    1,    4,    99,   100,  400,  1599, 1600, 1700,
				    1899, 1900, 1969, 1970, 1971, 1999, 2000, 2023, 2024,
				    2100, 2400, 9998, 9999};

	(void)state;
	for (size_t yi = 0; yi < sizeof(years) / sizeof(years[0]); yi++) {
		int y = years[yi];
		int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
		int64_t prev = 0;
		int have_prev = 0;

		for (int m = 1; m <= 12; m++) {
			for (int d = 1; d <= 31; d++) {
				static const int mdays[] = {31, 28, 31, 30, 31, 30,
							    31, 31, 30, 31, 30, 31};
				int valid = d <= mdays[m - 1] + (m == 2 && leap);
				char raw[64], want[64];
				enum query_status st;

				snprintf(raw, sizeof(raw), "created_after=%04d-%02d-%02d", y, m, d);
				st = norm(raw);
				check_invariants(st);
				if (!valid) {
					assert_int_equal(st, QUERY_INVALID);
					assert_string_equal(e.parameter, "created_after");
					continue;
				}
				if (st != QUERY_OK)
					fail_msg("'%s' refused: %s", raw, e.message);
				snprintf(want, sizeof(want),
					 "created_after=%04d-%02d-%02dT00%%3A00%%3A00.000Z", y, m,
					 d);
				assert_string_equal(q.canonical, want);
				if (have_prev)
					assert_true(q.created_after_ms - prev == 86400000);
				prev = q.created_after_ms;
				have_prev = 1;
			}
		}
	}
}

/* ---- UUIDs ------------------------------------------------------------ */

#define UUID_MSG(n) n " must be a UUID"

static void test_uuids(void **state)
{
	static const struct case_ c[] = {
		OK("days=1&stage_id=123e4567-e89b-12d3-a456-426614174000",
		   "days=1&stage_id=123e4567-e89b-12d3-a456-426614174000"),
		OK("days=1&stage_id=123E4567-E89B-12D3-A456-426614174000",
		   "days=1&stage_id=123e4567-e89b-12d3-a456-426614174000"),
		OK("days=1&stage_id=123e4567-E89b-12D3-a456-426614174ABC",
		   "days=1&stage_id=123e4567-e89b-12d3-a456-426614174abc"),
		OK("days=1&pipeline_id=123e4567-e89b-82d3-B456-426614174000",
		   "days=1&pipeline_id=123e4567-e89b-82d3-b456-426614174000"),
		/* every version 1..8 and variant 8, 9, a, b, A, B */
		OK("days=1&stage_id=00000000-0000-1000-8000-000000000000",
		   "days=1&stage_id=00000000-0000-1000-8000-000000000000"),
		OK("days=1&stage_id=00000000-0000-4000-9000-000000000000",
		   "days=1&stage_id=00000000-0000-4000-9000-000000000000"),
		OK("days=1&stage_id=00000000-0000-7000-a000-000000000000",
		   "days=1&stage_id=00000000-0000-7000-a000-000000000000"),
		OK("days=1&stage_id=00000000-0000-8000-B000-000000000000",
		   "days=1&stage_id=00000000-0000-8000-b000-000000000000"),
		/* nil and max, any case */
		OK("days=1&stage_id=00000000-0000-0000-0000-000000000000",
		   "days=1&stage_id=00000000-0000-0000-0000-000000000000"),
		OK("days=1&stage_id=ffffffff-ffff-ffff-ffff-ffffffffffff",
		   "days=1&stage_id=ffffffff-ffff-ffff-ffff-ffffffffffff"),
		OK("days=1&stage_id=FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
		   "days=1&stage_id=ffffffff-ffff-ffff-ffff-ffffffffffff"),
		OK("days=1&pipeline_id=FFFFffff-ffFF-FfFf-fFfF-ffffffffFFFF",
		   "days=1&pipeline_id=ffffffff-ffff-ffff-ffff-ffffffffffff"),
		OK("days=1&stage_id=123e4567%2De89b-12d3-a456-426614174000",
		   "days=1&stage_id=123e4567-e89b-12d3-a456-426614174000"),
		BADM("days=1&stage_id=123e4567-e89b-02d3-a456-426614174000", "stage_id",
		     UUID_MSG("stage_id")), /* version 0 */
		BAD("days=1&stage_id=123e4567-e89b-92d3-a456-426614174000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-f2d3-a456-426614174000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-7456-426614174000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-c456-426614174000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-C456-426614174000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-0456-426614174000", "stage_id"),
		/* almost nil, almost max: not special */
		BAD("days=1&stage_id=00000000-0000-0000-0000-000000000001", "stage_id"),
		BAD("days=1&stage_id=ffffffff-ffff-ffff-ffff-fffffffffffe", "stage_id"),
		/* shape */
		BAD("days=1&stage_id=123e4567e89b12d3a456426614174000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-a456-42661417400", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-a456-4266141740000", "stage_id"),
		BAD("days=1&stage_id=123e4567-e89b-12d3-a4564-26614174000", "stage_id"),
		BAD("days=1&stage_id={123e4567-e89b-12d3-a456-426614174000}", "stage_id"),
		BAD("days=1&stage_id=%20123e4567-e89b-12d3-a456-42661417400", "stage_id"),
		BAD("days=1&stage_id=urn:uuid:123e4567-e89b-12d3-a456-426614174000", "stage_id"),
		BAD("days=1&stage_id=g23e4567-e89b-12d3-a456-426614174000", "stage_id"),
		BAD("days=1&stage_id=not-a-uuid", "stage_id"),
		BADM("days=1&pipeline_id=g23e4567-e89b-12d3-a456-426614174000", "pipeline_id",
		     UUID_MSG("pipeline_id")),
		BADM("days=1&pipeline_id=", "pipeline_id", "pipeline_id must not be empty"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=1&stage_id=00000000-0000-0000-0000-000000000000&"
			      "pipeline_id=ffffffff-ffff-ffff-ffff-ffffffffffff"),
			 QUERY_OK);
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_STAGE_ID | QUERY_P_PIPELINE_ID);
}

/* ---- custom field pair and entity_type ------------------------------- */

#define PAIR(k, v) "custom_field_key=" k "&custom_field_value=" v

static void test_custom_pair(void **state)
{
	static const struct case_ c[] = {
		OK("days=1&" PAIR("status", "Active"),
		   "custom_field_key=status&custom_field_value=Active&days=1"),
		OK("days=1&" PAIR("region", "S%C3%A3o+Paulo"),
		   "custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=1"),
		OK("days=1&" PAIR("region", "S%C3%A3o%20Paulo"),
		   "custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=1"),
		OK("days=1&" PAIR("region", "S\xc3\xa3o Paulo"), /* literal bytes */
		   "custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=1"),
		OK("days=1&" PAIR("a%2Fb", "%7E_.-"),
		   "custom_field_key=a%2Fb&custom_field_value=~_.-&days=1"),
		OK("days=1&" PAIR("k", "%2B%26%3D%25"), /* + & = % as data */
		   "custom_field_key=k&custom_field_value=%2B%26%3D%25&days=1"),
		OK("days=1&" PAIR("k", "a=b=c"), /* split at the first '=' only */
		   "custom_field_key=k&custom_field_value=a%3Db%3Dc&days=1"),
		OK("days=1&" PAIR("k", "%F0%9F%98%80"), /* emoji, 4 bytes */
		   "custom_field_key=k&custom_field_value=%F0%9F%98%80&days=1"),
		OK("days=1&" PAIR("k", "%F4%8F%BF%BF"), /* U+10FFFF */
		   "custom_field_key=k&custom_field_value=%F4%8F%BF%BF&days=1"),
		OK("days=1&" PAIR("k", "%ED%9F%BF%EE%80%80"), /* around the surrogates */
		   "custom_field_key=k&custom_field_value=%ED%9F%BF%EE%80%80&days=1"),
		OK("days=1&" PAIR("k", "+"), "custom_field_key=k&custom_field_value=%20&days=1"),
		OK("days=1&" PAIR("k", "%0A"), "custom_field_key=k&custom_field_value=%0A&days=1"),
		BADM("days=1&custom_field_key=status", "custom_field_value",
		     "custom_field_value is required with custom_field_key"),
		BADM("days=1&custom_field_value=x", "custom_field_key",
		     "custom_field_key is required with custom_field_value"),
		BADM("days=1&" PAIR("", "x"), "custom_field_key",
		     "custom_field_key must not be empty"),
		BADM("days=1&" PAIR("k", ""), "custom_field_value",
		     "custom_field_value must not be empty"),
		BAD("days=1&custom_field_key&custom_field_value=x", "custom_field_key"),
		BAD("days=1&" PAIR("k", "%00"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "a%00b"), "custom_field_value"),
		BAD("days=1&" PAIR("%00", "x"), "custom_field_key"),
		BAD("days=1&" PAIR("k", "%C0%AF"), "custom_field_value"),   /* overlong '/' */
		BAD("days=1&" PAIR("k", "%E0%80%AF"), "custom_field_value"), /* overlong */
		BAD("days=1&" PAIR("k", "%F0%80%80%AF"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%ED%A0%80"), "custom_field_value"), /* surrogate */
		BAD("days=1&" PAIR("k", "%ED%BF%BF"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%F4%90%80%80"), "custom_field_value"), /* > U+10FFFF */
		BAD("days=1&" PAIR("k", "%F8%88%80%80%80"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%C3"), "custom_field_value"), /* cut short */
		BAD("days=1&" PAIR("k", "%E2%82"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%80"), "custom_field_value"), /* lone continuation */
		BAD("days=1&" PAIR("k", "%FF"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "\xff"), "custom_field_value"), /* literal byte */
		BAD("days=1&" PAIR("%C0%AF", "x"), "custom_field_key"),
		BAD("days=1&" PAIR("k", "%ZZ"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%4"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "100%"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%%41"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%G1"), "custom_field_value"),
		BAD("days=1&" PAIR("k", "%-1"), "custom_field_value"),
	};
	char raw[QUERY_RAW_MAX + 1], big[1100];

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=1&" PAIR("k", "%C0%AF")), QUERY_INVALID);
	assert_string_equal(e.message, "custom_field_value is not valid UTF-8 once decoded");
	assert_int_equal(norm("days=1&" PAIR("k", "%00")), QUERY_INVALID);
	assert_string_equal(e.message, "custom_field_value contains a NUL byte");
	assert_int_equal(norm("days=1&" PAIR("k", "%zz")), QUERY_INVALID);
	assert_non_null(strstr(e.message, "malformed percent-escape"));
	assert_int_equal(norm("days=1&" PAIR("k", "v")), QUERY_OK);
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_CUSTOM_FIELD);

	/* 1024 decoded bytes is the most, counted after decoding */
	memset(big, 'a', 1024);
	big[1024] = '\0';
	snprintf(raw, sizeof(raw), "days=1&" PAIR("k", "%s"), big);
	assert_int_equal(norm(raw), QUERY_OK);
	snprintf(raw, sizeof(raw), "days=1&" PAIR("k", "%sa"), big);
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "custom_field_value");
	assert_string_equal(e.message, "custom_field_value must be at most 1024 bytes");
	snprintf(raw, sizeof(raw), "days=1&" PAIR("%sb", "v"), big);
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.message, "custom_field_key must be at most 1024 bytes");
	/* 512 two-byte characters are 1024 bytes; one more is too many */
	for (int i = 0; i < 512; i++)
		memcpy(big + 2 * i, "\xc3\xa9", 2);
	big[1024] = '\0';
	snprintf(raw, sizeof(raw), "days=1&" PAIR("k", "%s"), big);
	assert_int_equal(norm(raw), QUERY_OK);
	snprintf(raw, sizeof(raw), "days=1&" PAIR("k", "%s%%C3%%A9"), big);
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "custom_field_value");
	/* 1024 spaces as '+': 1024 decoded bytes, 3072 encoded */
	memset(big, '+', 1024);
	big[1024] = '\0';
	snprintf(raw, sizeof(raw), "days=1&" PAIR("k", "%s"), big);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_int_equal(q.canonical_len, strlen("custom_field_key=k&custom_field_value=") +
						  3072 + strlen("&days=1"));
}

static void test_entity_type(void **state)
{
	static const struct case_ c[] = {
		OK("days=1&" PAIR("s", "x") "&entity_type=ticket",
		   "custom_field_key=s&custom_field_value=x&days=1&entity_type=ticket"),
		OK("entity_type=customer&days=1&" PAIR("s", "x"),
		   "custom_field_key=s&custom_field_value=x&days=1&entity_type=customer"),
		OK("days=1&entity_type=ticket", "days=1"),
		OK("days=1&entity_type=customer", "days=1"),
		BADM("days=1&entity_type=Ticket", "entity_type",
		     "entity_type must be ticket or customer"),
		BAD("days=1&entity_type=TICKET", "entity_type"),
		BAD("days=1&entity_type=Customer", "entity_type"),
		BAD("days=1&entity_type=both", "entity_type"),
		BAD("days=1&entity_type=ticket%20", "entity_type"),
		BAD("days=1&entity_type=tickets", "entity_type"),
		BAD("days=1&entity_type=ticke", "entity_type"),
		BAD("days=1&entity_type=ticket,customer", "entity_type"),
		BAD("days=1&" PAIR("s", "x") "&entity_type=Ticket", "entity_type"),
		BADM("days=1&entity_type=", "entity_type", "entity_type must not be empty"),
		BAD("days=1&entity_type=ticket&entity_type=ticket", "entity_type"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("days=1&entity_type=ticket"), QUERY_OK);
	assert_string_equal(q.ignored, "entity_type");
	assert_int_equal(q.present, QUERY_P_DAYS);
	assert_int_equal(norm("days=1&entity_type=ticket&" PAIR("s", "x")), QUERY_OK);
	assert_string_equal(q.ignored, "");
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_CUSTOM_FIELD | QUERY_P_ENTITY_TYPE);
}

/* ---- structure -------------------------------------------------------- */

static void test_decoding_errors_name_the_parameter(void **state)
{
	static const struct case_ c[] = {
		BAD("days=%zz", "days"),
		BAD("days=%4", "days"),
		BAD("days=%", "days"),
		BAD("days=%00", "days"),
		BAD("days=1&x=%00", "x"),
		BAD("days=1&x=%G1", "x"),
		BAD("days=1&x=%4", "x"),
		BAD("days=1&x=%C0%AF", "x"),
		BAD("x=%zz&days=1", "x"),
		BAD("days=1&%78=%zz", "x"),          /* the decoded name */
		BAD("days=1&%C3%A9=%zz", "\xc3\xa9"), /* decoded, UTF-8 */
		BAD("days=1&a+b=%zz", "a b"),
		/* the name itself is broken: its raw form, safely */
		BAD("days=1&%=1", "%"),
		BAD("days=1&%zz=1", "%zz"),
		BAD("days=1&a%4=1", "a%4"),
		BAD("days=1&%00=1", "%00"),
		BAD("days=1&%C0%AF=1", "%C0%AF"),
		BAD("days=1&%ED%A0%80", "%ED%A0%80"),
		BAD("days=1&\xff=1", "%FF"),
		BAD("days=1&a\xc3=1", "a%C3"),
		BAD("days=1&%zz", "%zz"),
		/* an empty name: the query is named */
		BADM("days=1&=%zz", "query",
		     "a parameter with an empty name has a malformed percent-escape: '%' "
		     "must be followed by two hex digits"),
		BADM("=%00&days=1", "query", "a parameter with an empty name contains a NUL byte"),
	};
	char raw[256];
	size_t len;

	(void)state;
	RUN(c);

	/* a literal NUL byte inside raw_len */
	assert_int_equal(query_normalise("days=1\0", 7, &q, &e), QUERY_INVALID);
	assert_string_equal(e.parameter, "days");
	assert_string_equal(e.message, "days contains a NUL byte");
	assert_int_equal(query_normalise("days=1&a\0b=1", 12, &q, &e), QUERY_INVALID);
	assert_string_equal(e.parameter, "a%00b");

	/* raw_len is honoured: bytes after it are not read */
	assert_int_equal(query_normalise("days=7&limit=zz", 6, &q, &e), QUERY_OK);
	assert_string_equal(q.canonical, "days=7");

	/* long names are cut to fit, never inside an escape or a character */
	len = (size_t)snprintf(raw, sizeof(raw), "days=1&%%zz");
	memset(raw + len, 'n', 100);
	raw[len + 100] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_int_equal(strlen(e.parameter), sizeof(e.parameter) - 1);
	assert_memory_equal(e.parameter, "%zznnn", 6);
	check_invariants(QUERY_INVALID);

	len = (size_t)snprintf(raw, sizeof(raw), "days=1&");
	for (int i = 0; i < 40; i++)
		len += (size_t)snprintf(raw + len, sizeof(raw) - len, "\xff");
	snprintf(raw + len, sizeof(raw) - len, "=1");
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_int_equal(strlen(e.parameter), 30); /* ten %FF, not a cut escape */
	check_invariants(QUERY_INVALID);

	len = (size_t)snprintf(raw, sizeof(raw), "days=1&");
	for (int i = 0; i < 20; i++)
		len += (size_t)snprintf(raw + len, sizeof(raw) - len, "%%C3%%A9");
	snprintf(raw + len, sizeof(raw) - len, "=%%zz");
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_int_equal(strlen(e.parameter), 30); /* fifteen 'é', not a cut one */
	check_invariants(QUERY_INVALID);
	assert_true(strlen(e.message) < sizeof(e.message));
}

static void test_duplicates_and_empty(void **state)
{
	static const struct case_ c[] = {
		BADM("days=1&days=1", "days", "days appears more than once"),
		BADM("days=1&days=2", "days", "days appears more than once"),
		BADM("days=1&days=", "days", "days appears more than once"),
		BADM("days=1&days", "days", "days appears more than once"),
		BADM("days=1&%64ays=1", "days", "days appears more than once"),
		BAD("days=1&limit=1&limit=1", "limit"),
		BAD("days=1&offset=1&offset=2", "offset"),
		BAD("created_after=2024-01-01&created_after=2024-01-01", "created_after"),
		BAD("updated_after=2024-01-01&updated_after=2024-01-02", "updated_after"),
		BAD("days=1&stage_id=00000000-0000-0000-0000-000000000000&"
		    "stage_id=00000000-0000-0000-0000-000000000000",
		    "stage_id"),
		BAD("days=1&pipeline_id=00000000-0000-0000-0000-000000000000&"
		    "pipeline_id=00000000-0000-0000-0000-000000000000",
		    "pipeline_id"),
		BAD("days=1&" PAIR("a", "b") "&custom_field_key=a", "custom_field_key"),
		BAD("days=1&" PAIR("a", "b") "&custom_field_value=b", "custom_field_value"),
		BADM("days=1&limit=", "limit", "limit must not be empty"),
		BADM("days=1&limit", "limit", "limit must not be empty"),
		BADM("days=1&stage_id=", "stage_id", "stage_id must not be empty"),
		BADM("days=1&custom_field_value", "custom_field_value",
		     "custom_field_value must not be empty"),
		/* unknown parameters may repeat and be empty */
		OK("days=1&x=1&x=2&x=&x", "days=1"),
	};

	(void)state;
	RUN(c);
}

static void test_structure(void **state)
{
	static const struct case_ c[] = {
		BADM("", "days", NEED_ONE),
		BADM("&", "days", NEED_ONE),
		BADM("&&&", "days", NEED_ONE),
		BADM("limit=5", "days", NEED_ONE),
		BADM("foo=bar", "days", NEED_ONE),
		BADM("Days=2", "days", NEED_ONE), /* names are case-sensitive */
		BADM("DAYS=2&Created_after=2024-01-01", "days", NEED_ONE),
		BADM("limit=5&offset=0&" PAIR("a", "b") "&entity_type=ticket", "days", NEED_ONE),
		OK("days=1&&&limit=5&", "days=1&limit=5"),
		OK("&days=1", "days=1"),
		OK("days=1&", "days=1"),
		OK("foo=1&days=2&bar", "days=2"),
		OK("Days=2&days=3", "days=3"),
		OK("=1&days=3", "days=3"),
		OK("=&days=3&=", "days=3"),
		OK("days=3&%3D=1", "days=3"),
		OK("days=3&days%3D4", "days=3"), /* the name "days=4", unknown */
		OK("%64%61%79%73=3", "days=3"),  /* a known name spelt in escapes */
		OK("d%61ys=3", "days=3"),
		OK("created_after=2024-01-01", "created_after=2024-01-01T00%3A00%3A00.000Z"),
		OK("updated_after=2024-01-01", "updated_after=2024-01-01T00%3A00%3A00.000Z"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(query_normalise(NULL, 0, &q, &e), QUERY_INVALID);
	assert_string_equal(e.parameter, "days");
	assert_string_equal(e.message, NEED_ONE);
	assert_int_equal(query_normalise("", 0, &q, &e), QUERY_INVALID);
}

/* The first rule broken, in order: whole query, each segment, across. */
static void test_check_order(void **state)
{
	static const struct case_ c[] = {
		/* per segment, in order of appearance */
		BADM("days=abc&limit=0", "days", DAYS_NUMBER),
		BADM("limit=0&days=abc", "limit", LIMIT_RANGE),
		BAD("x=%zz&days=abc", "x"),
		BAD("days=abc&x=%zz", "days"),
		/* within one segment: decoding, duplicate, empty, format */
		BAD("%zz=%zz", "%zz"),
		BADM("days=1&days=%zz", "days",
		     "days has a malformed percent-escape: '%' must be followed by two hex "
		     "digits"),
		BADM("days=1&days=", "days", "days appears more than once"),
		BADM("days=1&days=abc", "days", "days appears more than once"),
		/* segments before the cross-parameter rules */
		BAD("custom_field_key=a&days=abc", "days"),
		BAD("custom_field_key=a&entity_type=x", "entity_type"),
		BAD("entity_type=x", "entity_type"),
		BAD("limit=0", "limit"),
		/* the custom pair before the at-least-one rule */
		BAD("custom_field_key=a", "custom_field_value"),
		BAD("custom_field_value=a", "custom_field_key"),
	};
	char raw[QUERY_RAW_MAX + 16];
	size_t o;

	(void)state;
	RUN(c);

	/* whole-query checks come before any segment's */
	o = (size_t)snprintf(raw, sizeof(raw), "days=abc");
	for (int i = 0; i < QUERY_PARAMS_MAX; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&x=1");
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");

	o = (size_t)snprintf(raw, sizeof(raw), "days=abc&x=");
	memset(raw + o, 'a', QUERY_RAW_MAX + 1 - o);
	raw[QUERY_RAW_MAX + 1] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");
	assert_non_null(strstr(e.message, "too long"));
}

static void test_bounds(void **state)
{
	char raw[QUERY_RAW_MAX + 16];
	size_t o;

	(void)state;
	/* exactly QUERY_RAW_MAX bytes is accepted, one more is not */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1&x=");
	memset(raw + o, 'a', QUERY_RAW_MAX - o);
	raw[QUERY_RAW_MAX] = '\0';
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.canonical, "days=1");
	assert_string_equal(q.ignored, "x");
	raw[QUERY_RAW_MAX] = 'a';
	raw[QUERY_RAW_MAX + 1] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");
	assert_non_null(strstr(e.message, "too long"));

	/* QUERY_PARAMS_MAX segments are accepted, one more is not... */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1");
	for (int i = 1; i < QUERY_PARAMS_MAX; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&x%d=1", i);
	assert_int_equal(norm(raw), QUERY_OK);
	snprintf(raw + o, sizeof(raw) - o, "&y");
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");
	assert_non_null(strstr(e.message, "more than 64"));
	/* ...and empty segments do not count */
	o = (size_t)snprintf(raw, sizeof(raw), "&&days=1&&");
	for (int i = 1; i < QUERY_PARAMS_MAX; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&&x=1&");
	assert_int_equal(norm(raw), QUERY_OK);

	/* the canonical query fills QUERY_CANON_MAX - 1 bytes exactly, no more */
	{
		/* "custom_field_key=" K "&custom_field_value=" V "&days=1": 44 fixed */
		size_t v_len = QUERY_CANON_MAX - 1 - 44 - 3 * 1024;

		o = (size_t)snprintf(raw, sizeof(raw), "custom_field_key=");
		memset(raw + o, '+', 1024);
		o += 1024;
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&custom_field_value=");
		memset(raw + o, 'v', v_len);
		o += v_len;
		snprintf(raw + o, sizeof(raw) - o, "&days=1");
		assert_int_equal(norm(raw), QUERY_OK);
		assert_int_equal(q.canonical_len, QUERY_CANON_MAX - 1);
		assert_int_equal(strlen(q.canonical), QUERY_CANON_MAX - 1);

		o -= v_len;
		memset(raw + o, 'v', v_len + 1);
		o += v_len + 1;
		snprintf(raw + o, sizeof(raw) - o, "&days=1");
		assert_int_equal(norm(raw), QUERY_INVALID);
		assert_string_equal(e.parameter, "query");
	}
	/* both values at their most, all escaped: far over the canonical bound */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1&custom_field_key=");
	memset(raw + o, '+', 1024);
	o += 1024;
	o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&custom_field_value=");
	memset(raw + o, '+', 1024);
	raw[o + 1024] = '\0';
	assert_int_equal(norm(raw), QUERY_INVALID);
	assert_string_equal(e.parameter, "query");
	check_invariants(QUERY_INVALID);
}

/* ---- the ignored list ------------------------------------------------- */

static void test_ignored(void **state)
{
	static const struct {
		const char *raw, *ignored;
	} c[] = {
		{"days=1", ""},
		{"limit=010&days=030&foo=1", "foo"},
		{"foo=1&days=2&bar", "foo,bar"},
		{"a=1&b=2&a=3&days=2&c%20d=4", "a,b,c%20d"},
		{"a=1&%61=2&a&days=1", "a"}, /* the same decoded name */
		{"Days=1&days=1&DAYS=1", "Days,DAYS"},
		{"a+b=1&a%20b=2&days=1", "a%20b"},
		{"a,b=1&days=1", "a%2Cb"},
		{"%C3%A9=1&days=1", "%C3%A9"},
		{"%7E.-_=1&days=1", "~.-_"},
		{"foo=1&entity_type=ticket&days=1&bar=2", "foo,entity_type,bar"},
		{"entity_type=ticket&foo=1&" PAIR("k", "v") "&days=1", "foo"},
		{"=1&foo&=2&days=1", "foo"}, /* empty names are not listed */
	};
	char raw[QUERY_RAW_MAX + 1], want[QUERY_IGNORED_MAX + 8];
	size_t o;

	(void)state;
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		if (norm(c[i].raw) != QUERY_OK)
			fail_msg("'%s' refused: %s", c[i].raw, e.message);
		if (strcmp(q.ignored, c[i].ignored) != 0)
			fail_msg("'%s': ignored '%s', expected '%s'", c[i].raw, q.ignored,
				 c[i].ignored);
	}

	/* many names: cut, ends in ",...", within bounds, in order */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1");
	for (int i = 0; i < 60; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&unknown_param_%02d=1", i);
	assert_int_equal(norm(raw), QUERY_OK);
	o = strlen(q.ignored);
	assert_true(o <= QUERY_IGNORED_MAX - 1);
	assert_true(o > 200);
	assert_string_equal(q.ignored + o - 4, ",...");
	assert_memory_equal(q.ignored, "unknown_param_00,unknown_param_01,", 34);
	/* 16 names of 16 bytes and 15 commas are 271 bytes: 14 fit with ",..." */
	assert_int_equal(o, 14 * 17 - 1 + 4);

	/* a list of exactly QUERY_IGNORED_MAX - 1 bytes is whole */
	memset(want, 'n', QUERY_IGNORED_MAX - 1);
	want[QUERY_IGNORED_MAX - 1] = '\0';
	snprintf(raw, sizeof(raw), "days=1&%s=1", want);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.ignored, want);
	/* one byte more: not even the first name fits */
	snprintf(raw, sizeof(raw), "days=1&%sn=1", want);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.ignored, "...");

	/* 251 + ",b": fits whole (253); 251 + ",bcde": 256, cut after the first */
	memset(want, 'n', 251);
	want[251] = '\0';
	snprintf(raw, sizeof(raw), "days=1&%s=1&b", want);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_int_equal(strlen(q.ignored), 253);
	assert_string_equal(q.ignored + 251, ",b");
	snprintf(raw, sizeof(raw), "days=1&%s=1&bcde", want);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_int_equal(strlen(q.ignored), 255);
	assert_string_equal(q.ignored + 251, ",...");
	/* 252 + ",bcd": 256, and 252 + ",..." would not fit either */
	memset(want, 'n', 252);
	want[252] = '\0';
	snprintf(raw, sizeof(raw), "days=1&%s=1&bcd", want);
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.ignored, "...");
	/* an escaped name is measured encoded: 85 'é' are 510 bytes */
	o = (size_t)snprintf(raw, sizeof(raw), "days=1&a=1&");
	for (int i = 0; i < 85; i++)
		o += (size_t)snprintf(raw + o, sizeof(raw) - o, "%%C3%%A9");
	assert_int_equal(norm(raw), QUERY_OK);
	assert_string_equal(q.ignored, "a,...");
}

/* ---- equivalence classes and exact forms ------------------------------ */

/* Spellings within a group must give the same canonical bytes. */
static void test_equivalence_classes(void **state)
{
	static const char *const groups[][10] = {
		{"days=30&limit=10", "limit=10&days=30", "days=030&limit=010",
		 "limit=10.0&days=30.000&zz=1", "days=30&&limit=1%30", "&limit=10&days=30&",
		 "%64ays=30&%6C%69%6D%69%74=10", "days=%33%30&limit=10&Days=5",
		 "days=00000030.0&limit=0010.000", NULL},
		{"days=7.5", "days=7.50", "days=07.500", "days=0007.5000&x=1", NULL},
		{"days=7&stage_id=123e4567-e89b-12d3-a456-426614174000",
		 "stage_id=123E4567-E89B-12D3-A456-426614174000&days=7",
		 "stage_id=123e4567-E89B-12d3-A456-426614174000&days=7.0",
		 "stage_id=%31%32%33e4567-e89b-12d3-a456-426614174000&days=7", NULL},
		{"updated_after=2024-01-15T10:00:00.000Z&limit=1000",
		 "limit=1000&updated_after=2024-01-15T10:00:00Z",
		 "limit=1000&updated_after=2024-01-15T10:00Z",
		 "limit=1000&updated_after=2024-01-15t10:00:00z",
		 "updated_after=2024-01-15T12:00:00%2B02:00&limit=1000",
		 "updated_after=2024-01-15T12:00:00%2B0200&limit=1000",
		 "updated_after=2024-01-15T07:00:00.000-03:00&limit=1000",
		 "updated_after=2024-01-15T10:00:00%2B00:00&limit=1000",
		 "updated_after=2024-01-15T10%3A00%3A00.0000Z&limit=1000", NULL},
		{"created_after=2024-01-15", "created_after=2024-01-15T00:00Z",
		 "created_after=2024-01-15T00:00:00.000000000Z",
		 "created_after=2024-01-14T23:00:00-01:00",
		 "created_after=2024-01-15T01:00:00.0009%2B01:00", NULL},
		{"days=1&custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo",
		 "custom_field_value=S%C3%A3o+Paulo&custom_field_key=region&days=1",
		 "days=1&custom_field_key=%72egion&custom_field_value=S%c3%a3o Paulo",
		 "days=1&custom_field_key=region&custom_field_value=S\xc3\xa3o%20Paulo",
		 "days=1&custom_field_key=%72%65%67%69%6F%6E&custom_field_value=%53%C3%A3o+Paulo",
		 NULL},
		{"days=1&custom_field_key=k&custom_field_value=Abc",
		 "days=1&custom_field_key=k&custom_field_value=%41bc",
		 "days=1&custom_field_key=k&custom_field_value=%41%62%63",
		 "days=1&custom_field_key=k&custom_field_value=A%62c&foo=%41", NULL},
		{"days=2", "days=2&entity_type=ticket", "days=2&other=1", "other&days=2",
		 "days=2&entity_type=customer&x=%41", NULL},
	};

	(void)state;
	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
		char first[QUERY_CANON_MAX];

		if (norm(groups[g][0]) != QUERY_OK)
			fail_msg("'%s' refused: %s", groups[g][0], e.message);
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

/* Queries that mean different things must not share a canonical form. */
static void test_distinct(void **state)
{
	static const char *const pairs[][2] = {
		{"days=7.5", "days=7.5001"},
		{"days=7", "days=7&limit=7"},
		{"days=1&custom_field_key=a&custom_field_value=b",
		 "days=1&custom_field_key=b&custom_field_value=a"},
		{"days=1&custom_field_key=k&custom_field_value=a+b",
		 "days=1&custom_field_key=k&custom_field_value=a%2Bb"},
		{"days=1&custom_field_key=k&custom_field_value=A",
		 "days=1&custom_field_key=k&custom_field_value=a"},
		{"days=1&custom_field_key=k&custom_field_value=v&entity_type=ticket",
		 "days=1&custom_field_key=k&custom_field_value=v"},
		{"updated_after=2024-01-15T10:00:00.001Z", "updated_after=2024-01-15T10:00:00Z"},
		{"created_after=2024-01-15", "updated_after=2024-01-15"},
	};
	char first[QUERY_CANON_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		assert_int_equal(norm(pairs[i][0]), QUERY_OK);
		memcpy(first, q.canonical, q.canonical_len + 1);
		assert_int_equal(norm(pairs[i][1]), QUERY_OK);
		if (strcmp(first, q.canonical) == 0)
			fail_msg("'%s' and '%s' both -> '%s'", pairs[i][0], pairs[i][1], first);
	}
}

static void test_exact_canonical(void **state)
{
	static const struct case_ c[] = {
		OK("limit=010&days=030&foo=1", "days=30&limit=10"),
		OK("updated_after=2024-01-15T12:00:00%2B02:00&limit=1000&offset=2000",
		   "limit=1000&offset=2000&updated_after=2024-01-15T10%3A00%3A00.000Z"),
		OK("pipeline_id=123E4567-E89B-12D3-A456-426614174000&days=365",
		   "days=365&pipeline_id=123e4567-e89b-12d3-a456-426614174000"),
		OK("days=1&" PAIR("a b", "x*y'z!(){}[]\"<>^`|\\"),
		   "custom_field_key=a%20b&custom_field_value="
		   "x%2Ay%27z%21%28%29%7B%7D%5B%5D%22%3C%3E%5E%60%7C%5C&days=1"),
		/* every parameter at once, given in reverse order */
		OK("updated_after=2024-01-15T10:00:00Z&"
		   "stage_id=00000000-0000-0000-0000-000000000000&"
		   "pipeline_id=FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF&offset=05&limit=050&"
		   "entity_type=ticket&days=07.50&custom_field_value=V+1&"
		   "custom_field_key=K&created_after=2024-01-01",
		   "created_after=2024-01-01T00%3A00%3A00.000Z&custom_field_key=K&"
		   "custom_field_value=V%201&days=7.5&entity_type=ticket&limit=50&offset=5&"
		   "pipeline_id=ffffffff-ffff-ffff-ffff-ffffffffffff&"
		   "stage_id=00000000-0000-0000-0000-000000000000&"
		   "updated_after=2024-01-15T10%3A00%3A00.000Z"),
	};

	(void)state;
	RUN(c);
	assert_int_equal(norm("limit=010&days=030&foo=1"), QUERY_OK);
	assert_string_equal(q.canonical, "days=30&limit=10");
	assert_int_equal(q.canonical_len, 16);
	assert_string_equal(q.ignored, "foo");
	assert_int_equal(q.days_milli, 30000);
	assert_int_equal(q.limit, 10);
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_LIMIT);

	assert_int_equal(norm(c[4].raw), QUERY_OK);
	assert_int_equal(q.present, QUERY_P_DAYS | QUERY_P_CREATED_AFTER |
					    QUERY_P_UPDATED_AFTER | QUERY_P_LIMIT |
					    QUERY_P_OFFSET | QUERY_P_STAGE_ID |
					    QUERY_P_PIPELINE_ID | QUERY_P_CUSTOM_FIELD |
					    QUERY_P_ENTITY_TYPE);
	assert_int_equal(q.days_milli, 7500);
	assert_int_equal(q.limit, 50);
	assert_int_equal(q.offset, 5);
	assert_true(q.created_after_ms == INT64_C(1704067200000));
	assert_true(q.updated_after_ms == INT64_C(1705312800000));
	assert_string_equal(q.ignored, "");
}

/* ---- query_encode ----------------------------------------------------- */

static void test_encode(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(query_encode(out, sizeof(out), "aZ09-._~", 8), 8);
	assert_string_equal(out, "aZ09-._~");
	assert_int_equal(query_encode(out, sizeof(out), "a b:/", 5), 11);
	assert_string_equal(out, "a%20b%3A%2F");
	assert_int_equal(query_encode(out, sizeof(out), "\xc3\xa9\x00", 3), 9);
	assert_memory_equal(out, "%C3%A9%00", 10);
	assert_int_equal(query_encode(out, sizeof(out), "", 0), 0);
	assert_string_equal(out, "");
	assert_int_equal(query_encode(out, 1, "", 0), 0);
	/* exact fit, one short */
	assert_int_equal(query_encode(out, 4, "abc", 3), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(query_encode(out, 3, "abc", 3), -1);
	assert_string_equal(out, "ab");
	assert_int_equal(query_encode(out, 4, "%", 1), 3);
	assert_string_equal(out, "%25");
	assert_int_equal(query_encode(out, 3, "%", 1), -1);
	assert_string_equal(out, ""); /* never half an escape */
	assert_int_equal(query_encode(out, 4, "a b", 3), -1);
	assert_string_equal(out, "a");
	assert_int_equal(query_encode(out, 1, "a", 1), -1);
	assert_string_equal(out, "");
	assert_int_equal(query_encode(out, 0, "a", 1), -1);
	assert_int_equal(query_encode(out, 0, "", 0), -1);
	/* the writes stay inside dst_size */
	memset(out, 'X', sizeof(out));
	assert_int_equal(query_encode(out, 5, "abcdefgh", 8), -1);
	assert_string_equal(out, "abcd");
	assert_int_equal(out[5], 'X');

	/* every byte: unreserved literal, anything else %XX upper-case */
	for (int b = 0; b < 256; b++) {
		char in = (char)b, want[4];
		int plain = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
			    (b >= '0' && b <= '9') || b == '-' || b == '.' || b == '_' ||
			    b == '~';

		if (plain)
			snprintf(want, sizeof(want), "%c", b);
		else
			snprintf(want, sizeof(want), "%%%02X", b);
		assert_int_equal(query_encode(out, sizeof(out), &in, 1), (long)strlen(want));
		assert_string_equal(out, want);
	}
}

/* ---- generated inputs ------------------------------------------------- */

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

/* Random queries from pieces that matter; only the invariants are checked. */
static void test_generated(void **state)
{
	static const char *const pieces[] = {
		"days",	     "limit",	   "offset",	 "created_after", "updated_after",
		"stage_id",  "pipeline_id", "entity_type", "custom_field_key",
		"custom_field_value", "=", "=", "&", "&", "%", "%2B", "%00", "%C3", "%A9",
		"%zz", "+",  "0", "1", "9", "30", "365", ".", "-", ":", "T", "Z", "z",
		"2024-01-15", "T10:00:00", ".123456789", "%2B02:00", "-0300",
		"123e4567-e89b-12d3-a456-426614174000", "ticket", "customer", "\xff",
		"\xc3\xa9", "x", "Days", "99999999999999999999",
	};
	char raw[QUERY_RAW_MAX + 64];

	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		size_t o = 0, n = rng() % 40;

		for (size_t k = 0; k < n; k++) {
			const char *pc = pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))];
			size_t len = strlen(pc);

			memcpy(raw + o, pc, len);
			o += len;
		}
		check_invariants(query_normalise(raw, o, &q, &e));
	}
	/* raw bytes, any value, any length up to past the bound */
	for (int iter = 0; iter < 2000; iter++) {
		size_t n = rng() % (iter % 100 == 0 ? sizeof(raw) : 64);

		for (size_t k = 0; k < n; k++)
			raw[k] = (char)(rng() & 0xff);
		check_invariants(query_normalise(raw, n, &q, &e));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_long_numbers),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_offset),
		cmocka_unit_test(test_timestamp_forms),
		cmocka_unit_test(test_timestamp_calendar),
		cmocka_unit_test(test_timestamp_boundaries),
		cmocka_unit_test(test_timestamp_refused),
		cmocka_unit_test(test_timestamp_every_day),
		cmocka_unit_test(test_uuids),
		cmocka_unit_test(test_custom_pair),
		cmocka_unit_test(test_entity_type),
		cmocka_unit_test(test_decoding_errors_name_the_parameter),
		cmocka_unit_test(test_duplicates_and_empty),
		cmocka_unit_test(test_structure),
		cmocka_unit_test(test_check_order),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_ignored),
		cmocka_unit_test(test_equivalence_classes),
		cmocka_unit_test(test_distinct),
		cmocka_unit_test(test_exact_canonical),
		cmocka_unit_test(test_encode),
		cmocka_unit_test(test_generated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
