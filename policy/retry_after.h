/*
 * retry_after: RFC 9110 section 10.2.3 Retry-After, to a delay; with it the
 * three HTTP-date forms of section 5.6.7. Pure: no libc time functions, no
 * clock (now_ms is a parameter), no allocation.
 *
 * The calendar is the proleptic Gregorian one, years 0 to 9999, computed with
 * Howard Hinnant's days_from_civil; the whole date is checked (day of month
 * against the month and leap year) before it is turned into milliseconds, so
 * every accepted date is a real instant and nothing overflows.
 */
#ifndef CG_POLICY_RETRY_AFTER_H
#define CG_POLICY_RETRY_AFTER_H

#include <stdint.h>

#include "policy/limit.h"

/*
 * Parses a Retry-After field value (NUL-terminated, borrowed): optional
 * whitespace (SP / HTAB) around either delta-seconds (1*DIGIT; values above
 * LIMIT_DELAY_MAX_MS / 1000 are clamped, never overflow) or an HTTP-date in
 * IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), obsolete RFC 850
 * ("Sunday, 06-Nov-94 08:49:37 GMT"; a two-digit year more than 50 years
 * ahead of now_ms is taken as the previous century's) or asctime
 * ("Sun Nov  6 08:49:37 1994") form. Names are case-sensitive as in RFC 9110;
 * the weekday must be a valid name but is not checked against the date;
 * second 60 (a leap second) is accepted. For a date, now_ms is the wall clock
 * in Unix-epoch ms: a date in the past gives 0, the delay is clamped to
 * LIMIT_DELAY_MAX_MS. Returns 0 with *delay_ms set, or -1 on anything
 * malformed (NULL, empty, junk, out-of-range field), *delay_ms untouched.
 * delay_ms must not be NULL.
 */
int limit_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms);

#endif
