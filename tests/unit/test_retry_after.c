/*
 * Unit tests for policy/retry_after: delta-seconds, the three HTTP-date
 * forms, the calendar against a naive day count, RFC 850's century, and
 * malformed values (refused, the output untouched).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "policy/retry_after.h"

#define T1994 INT64_C(784111777000) /* Sun, 06 Nov 1994 08:49:37 GMT */

static int64_t ra_ok(const char *v, int64_t now_ms)
{
	int64_t d = -12345;

	if (limit_parse_retry_after(v, now_ms, &d) != 0)
		fail_msg("refused: \"%s\"", v);
	assert_true(d >= 0 && d <= LIMIT_DELAY_MAX_MS);
	return d;
}

static void ra_bad(const char *v)
{
	int64_t d = -12345;

	if (limit_parse_retry_after(v, T1994, &d) != -1)
		fail_msg("accepted: \"%s\"", v != NULL ? v : "(null)");
	assert_int_equal(d, -12345); /* untouched */
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(ra_ok("0", 0), 0);
	assert_int_equal(ra_ok("120", 0), 120000);
	assert_int_equal(ra_ok("007", 0), 7000);
	assert_int_equal(ra_ok(" \t 5 \t ", 0), 5000);
	assert_int_equal(ra_ok("86400", 0), LIMIT_DELAY_MAX_MS);
	assert_int_equal(ra_ok("86401", 0), LIMIT_DELAY_MAX_MS);
	assert_int_equal(ra_ok("99999999999999999999999999999999999999", 0),
			 LIMIT_DELAY_MAX_MS);
	assert_int_equal(ra_ok("0000000000000000000000000000000000000003", 0), 3000);
	ra_bad(NULL);
	ra_bad("");
	ra_bad("   ");
	ra_bad("\t");
	ra_bad("-1");
	ra_bad("+1");
	ra_bad("1.5");
	ra_bad("12a");
	ra_bad("1 2");
	ra_bad("0x10");
	ra_bad("5\r\n");
	ra_bad("\n5");
	ra_bad("five");
}

static void test_retry_after_dates(void **state)
{
	(void)state;
	/* The three forms of RFC 9110's example. */
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:37 GMT", T1994 - 5000), 5000);
	assert_int_equal(ra_ok("Sunday, 06-Nov-94 08:49:37 GMT", T1994 - 5000), 5000);
	assert_int_equal(ra_ok("Sun Nov  6 08:49:37 1994", T1994 - 5000), 5000);
	assert_int_equal(
	    ra_ok("Wed Nov 16 08:49:37 1994", T1994 + INT64_C(10) * 86400000 - 5000),
	    5000);
	assert_int_equal(ra_ok(" Sun, 06 Nov 1994 08:49:37 GMT\t", T1994 - 1), 1);
	/* Past or now: 0. Far future: clamped. Sub-second now. */
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:37 GMT", T1994), 0);
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:37 GMT", T1994 + 999999), 0);
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:37 GMT", 0), LIMIT_DELAY_MAX_MS);
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:37 GMT", INT64_MIN),
			 LIMIT_DELAY_MAX_MS);
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:37 GMT", INT64_MAX), 0);
	assert_int_equal(ra_ok("Sun, 06 Nov 1994 08:49:38 GMT", T1994 + 250), 750);
	/* The weekday must be a name but need not match the date. */
	assert_int_equal(ra_ok("Mon, 06 Nov 1994 08:49:37 GMT", T1994 - 5000), 5000);
	/* Known instants; second 60 (a leap second) counts as 60. */
	assert_int_equal(ra_ok("Thu, 01 Jan 1970 00:00:00 GMT", -1000), 1000);
	assert_int_equal(
	    ra_ok("Wed, 01 Mar 2000 00:00:00 GMT", INT64_C(951868800000) - 1), 1);
	assert_int_equal(
	    ra_ok("Thu, 29 Feb 2024 00:00:00 GMT", INT64_C(1709164800000) - 7), 7);
	assert_int_equal(
	    ra_ok("Tue, 29 Feb 2000 23:59:60 GMT", INT64_C(951868800000) - 1), 1);
	assert_int_equal(
	    ra_ok("Fri, 31 Dec 9999 23:59:59 GMT", INT64_C(253402300799000) - 3), 3);
}

/* A naive day count checks days_from_civil for every month of 1970-2400. */
static void test_retry_after_calendar(void **state)
{
	static const char *const mon[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int64_t days = 0;
	int y, m, leap, last;
	char buf[64];

	(void)state;
	for (y = 1970; y <= 2400; y++) {
		leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
		for (m = 0; m < 12; m++) {
			last = mdays[m] + (m == 1 && leap);
			snprintf(buf, sizeof(buf), "Mon, 01 %s %04d 00:00:00 GMT", mon[m],
				 y);
			assert_int_equal(ra_ok(buf, days * 86400000 - 42), 42);
			snprintf(buf, sizeof(buf), "Mon, %02d %s %04d 12:00:00 GMT", last,
				 mon[m], y);
			assert_int_equal(
			    ra_ok(buf, (days + last - 1) * 86400000 + 43200000 - 42), 42);
			snprintf(buf, sizeof(buf), "Mon, %02d %s %04d 12:00:00 GMT",
				 last + 1, mon[m], y);
			ra_bad(buf);
			days += last;
		}
	}
}

static void test_retry_after_rfc850_century(void **state)
{
	/* 2025-06-15T00:00:00Z */
	int64_t now2025 = INT64_C(1749945600000);

	(void)state;
	/* 94 from 2025: 2094 is more than 50 years ahead, so 1994 (past). */
	assert_int_equal(ra_ok("Sunday, 06-Nov-94 08:49:37 GMT", now2025), 0);
	/* 30 from 2025: 2030 (future, clamped). */
	assert_int_equal(ra_ok("Saturday, 15-Jun-30 00:00:00 GMT", now2025),
			 LIMIT_DELAY_MAX_MS);
	/* 25 from 2025: later today. */
	assert_int_equal(ra_ok("Sunday, 15-Jun-25 00:00:09 GMT", now2025), 9000);
	/* 75 from 2025: 2075 is exactly 50 years ahead, still the future. */
	assert_int_equal(ra_ok("Saturday, 15-Jun-75 00:00:00 GMT", now2025),
			 LIMIT_DELAY_MAX_MS);
	/* 76: 2076 is 51 years ahead, so 1976 (past). */
	assert_int_equal(ra_ok("Monday, 15-Jun-76 00:00:00 GMT", now2025), 0);
	/* Leap day in a two-digit year: 00 from 2025 is 2000, a leap year. */
	assert_int_equal(ra_ok("Tuesday, 29-Feb-00 00:00:00 GMT", now2025), 0);
	ra_bad("Tuesday, 29-Feb-01 00:00:00 GMT");
	/* Near the end of a century the next one is meant. */
	assert_int_equal(ra_ok("Monday, 01-Jan-01 00:00:00 GMT",
			       INT64_C(4102444800000) - 2000), /* 2100-01-01 - 2 s */
			 LIMIT_DELAY_MAX_MS);
}

static void test_retry_after_malformed_dates(void **state)
{
	(void)state;
	/* Bad names: months and weekdays are case-sensitive. */
	ra_bad("Sun, 06 Noc 1994 08:49:37 GMT");
	ra_bad("Sun, 06 nov 1994 08:49:37 GMT");
	ra_bad("Sun, 06 NOV 1994 08:49:37 GMT");
	ra_bad("Sun, 06 November 1994 08:49:37 GMT");
	ra_bad("sun, 06 Nov 1994 08:49:37 GMT");
	ra_bad("Sux, 06 Nov 1994 08:49:37 GMT");
	ra_bad("Sunday, 06 Nov 1994 08:49:37 GMT");
	ra_bad("Sun, 06-Nov-94 08:49:37 GMT");
	ra_bad("Sundy, 06-Nov-94 08:49:37 GMT");
	/* Out-of-range fields. */
	ra_bad("Sun, 00 Nov 1994 08:49:37 GMT");
	ra_bad("Sun, 31 Nov 1994 08:49:37 GMT");
	ra_bad("Sun, 29 Feb 1994 08:49:37 GMT");
	ra_bad("Sun, 29 Feb 1900 08:49:37 GMT");
	ra_bad("Sun, 32 Jan 1994 08:49:37 GMT");
	ra_bad("Sun, 06 Nov 1994 24:00:00 GMT");
	ra_bad("Sun, 06 Nov 1994 08:60:37 GMT");
	ra_bad("Sun, 06 Nov 1994 08:49:61 GMT");
	ra_bad("Sun Nov  0 08:49:37 1994");
	ra_bad("Sun Feb 30 08:49:37 1994");
	/* Wrong shapes. */
	ra_bad("Sun, 6 Nov 1994 08:49:37 GMT");
	ra_bad("Sun, 06 Nov 94 08:49:37 GMT");
	ra_bad("Sun, 06 Nov 1994 8:49:37 GMT");
	ra_bad("Sun, 06 Nov 1994 08:49 GMT");
	ra_bad("Sun, 06 Nov 1994 08:49:37 UTC");
	ra_bad("Sun, 06 Nov 1994 08:49:37 gmt");
	ra_bad("Sun, 06 Nov 1994 08:49:37");
	ra_bad("Sun,  06 Nov 1994 08:49:37 GMT");
	ra_bad("Sun, 06  Nov 1994 08:49:37 GMT");
	ra_bad("Sun, 06 Nov 1994 08:49:37 +0000");
	ra_bad("Sun, 06 Nov -994 08:49:37 GMT");
	ra_bad("Sun Nov 6 08:49:37 1994");
	ra_bad("Sun Nov  6 08:49:37 94");
	ra_bad("Sun Nov   6 08:49:37 1994");
	ra_bad("Sunday, 06-Nov-1994 08:49:37 GMT");
	ra_bad("1994-11-06T08:49:37Z");
	/* Trailing junk and truncation. */
	ra_bad("Sun, 06 Nov 1994 08:49:37 GMTx");
	ra_bad("Sun, 06 Nov 1994 08:49:37 GMT GMT");
	ra_bad("Sun, 06 Nov 1994 08:49:37 GMT;");
	ra_bad("Sun Nov  6 08:49:37 1994 GMT");
	ra_bad("Sun Nov  6 08:49:37 19945");
	ra_bad("Sunday, 06-Nov-94 08:49:37 GMT\r");
	ra_bad("Sun, 06 Nov 1994 08:4");
	ra_bad("Sun,");
	ra_bad("Sun");
	ra_bad("S");
	ra_bad(",");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_retry_after_seconds),
	    cmocka_unit_test(test_retry_after_dates),
	    cmocka_unit_test(test_retry_after_calendar),
	    cmocka_unit_test(test_retry_after_rfc850_century),
	    cmocka_unit_test(test_retry_after_malformed_dates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
