/*
 * retry_after: see retry_after.h.
 *
 * A date is matched by one small parser per form over a cursor (each matcher
 * advances it only on success), then checked as a whole (date_valid), then
 * turned into Unix-epoch milliseconds with integer arithmetic only.
 */
#include "policy/retry_after.h"

#include <stdbool.h>
#include <string.h>

#include "policy/check.h"

static const char *const wkday_short[7] = {"Mon", "Tue", "Wed", "Thu",
					   "Fri", "Sat", "Sun"};
static const char *const wkday_long[7] = {"Monday", "Tuesday",	"Wednesday", "Thursday",
					  "Friday", "Saturday", "Sunday"};
static const char *const month_name[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* A cursor over [p, end); every matcher advances it only on success. */
struct cur {
	const char *p;
	const char *end;
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static bool lit(struct cur *c, const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
		return false;
	c->p += n;
	return true;
}

/* Exactly n digits. */
static bool digits(struct cur *c, int n, int *v)
{
	int i, x = 0;

	if (c->end - c->p < n)
		return false;
	for (i = 0; i < n; i++) {
		if (!is_digit(c->p[i]))
			return false;
		x = x * 10 + (c->p[i] - '0');
	}
	c->p += n;
	*v = x;
	return true;
}

/* One of the n names; returns its index or -1. */
static int name(struct cur *c, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (lit(c, names[i]))
			return i;
	return -1;
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/*
 * Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard
 * Hinnant's days_from_civil). m in 1..12, d in 1..31.
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The Gregorian year of day z since 1970-01-01 (Hinnant's civil_from_days). */
static int64_t year_from_days(int64_t z)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	return yoe + era * 400 + (mp >= 10); /* months Jan, Feb end the era year */
}

struct date {
	int64_t year;
	int mon; /* 1..12 */
	int day, hour, min, sec;
};

/* hour ":" minute ":" second, each 2DIGIT */
static bool time_of_day(struct cur *c, struct date *d)
{
	return digits(c, 2, &d->hour) && lit(c, ":") && digits(c, 2, &d->min) &&
	       lit(c, ":") && digits(c, 2, &d->sec);
}

static bool month(struct cur *c, struct date *d)
{
	int m = name(c, month_name, 12);

	d->mon = m + 1;
	return m >= 0;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool imf_fixdate(struct cur c, struct date *d)
{
	int y;

	if (name(&c, wkday_short, 7) < 0 || !lit(&c, ", ") || !digits(&c, 2, &d->day) ||
	    !lit(&c, " ") || !month(&c, d) || !lit(&c, " ") || !digits(&c, 4, &y) ||
	    !lit(&c, " ") || !time_of_day(&c, d) || !lit(&c, " GMT"))
		return false;
	d->year = y;
	return c.p == c.end;
}

/* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"; the century comes later. */
static bool rfc850_date(struct cur c, struct date *d)
{
	int y;

	if (name(&c, wkday_long, 7) < 0 || !lit(&c, ", ") || !digits(&c, 2, &d->day) ||
	    !lit(&c, "-") || !month(&c, d) || !lit(&c, "-") || !digits(&c, 2, &y) ||
	    !lit(&c, " ") || !time_of_day(&c, d) || !lit(&c, " GMT"))
		return false;
	d->year = y;
	return c.p == c.end;
}

/* asctime-date: "Sun Nov  6 08:49:37 1994" (day: 2DIGIT or SP DIGIT) */
static bool asctime_date(struct cur c, struct date *d)
{
	int y;

	if (name(&c, wkday_short, 7) < 0 || !lit(&c, " ") || !month(&c, d) ||
	    !lit(&c, " "))
		return false;
	if (!(lit(&c, " ") ? digits(&c, 1, &d->day) : digits(&c, 2, &d->day)) ||
	    !lit(&c, " ") || !time_of_day(&c, d) || !lit(&c, " ") || !digits(&c, 4, &y))
		return false;
	d->year = y;
	return c.p == c.end;
}

static bool date_valid(const struct date *d)
{
	return d->year >= 0 && d->year <= 9999 && d->mon >= 1 && d->mon <= 12 &&
	       d->day >= 1 && d->day <= days_in_month(d->year, d->mon) && d->hour <= 23 &&
	       d->min <= 59 && d->sec <= 60;
}

/* Floor division for the day of a (possibly negative) epoch time. */
static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/*
 * RFC 9110: a two-digit year more than 50 years in the future is the most
 * recent past year with the same last two digits.
 */
static int64_t full_year(int yy, int64_t now_ms)
{
	int64_t now_year = year_from_days(floor_div(now_ms, INT64_C(86400000)));
	int64_t y = now_year - ((now_year % 100) + 100) % 100 + yy;

	if (y > now_year + 50)
		y -= 100;
	else if (y + 100 <= now_year + 50)
		y += 100;
	return y;
}

int limit_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms)
{
	struct cur c;
	struct date d;
	int64_t secs, at_ms;

	AN(delay_ms);
	if (value == NULL)
		return -1;
	c.p = value;
	c.end = value + strlen(value);
	while (c.p < c.end && is_ows(*c.p))
		c.p++;
	while (c.end > c.p && is_ows(c.end[-1]))
		c.end--;
	if (c.p == c.end)
		return -1;

	if (is_digit(*c.p)) {
		/* delta-seconds; stop growing at the clamp so nothing overflows */
		secs = 0;
		for (; c.p < c.end; c.p++) {
			if (!is_digit(*c.p))
				return -1;
			if (secs <= LIMIT_DELAY_MAX_MS / 1000)
				secs = secs * 10 + (*c.p - '0');
		}
		if (secs > LIMIT_DELAY_MAX_MS / 1000)
			secs = LIMIT_DELAY_MAX_MS / 1000;
		*delay_ms = secs * 1000;
		return 0;
	}

	memset(&d, 0, sizeof(d));
	if (rfc850_date(c, &d))
		d.year = full_year((int)d.year, now_ms);
	else if (!imf_fixdate(c, &d) && !asctime_date(c, &d))
		return -1;
	if (!date_valid(&d))
		return -1;
	/* |at_ms| < 2^49 for years 0..9999: no overflow below. */
	at_ms = ((days_from_civil(d.year, d.mon, d.day) * 24 + d.hour) * 60 + d.min) *
		    INT64_C(60000) +
		d.sec * INT64_C(1000);
	if (now_ms >= at_ms)
		*delay_ms = 0;
	else if (now_ms < at_ms - LIMIT_DELAY_MAX_MS)
		*delay_ms = LIMIT_DELAY_MAX_MS;
	else
		*delay_ms = at_ms - now_ms;
	return 0;
}
