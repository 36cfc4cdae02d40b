/*
 * query: validation and normalisation of the contacts query; see query.h.
 *
 * Three steps, each reporting the first rule broken:
 *   1. whole-query checks: raw length, number of non-empty segments;
 *   2. one pass over the '&'-separated segments in order of appearance:
 *      decode name and value, then duplicates, emptiness, and the
 *      parameter's own format and range; the normalised value (plain
 *      decimal, lower-case UUID, UTC timestamp, decoded text) is stored,
 *      still unencoded, in the arena;
 *   3. cross-parameter rules (the custom field pair, at least one time
 *      filter), then the canonical query and the ignored list are written.
 *
 * Data model: `struct parse` lives on the caller's stack (about 9 KiB) and
 * holds one slot per known parameter, indexed in byte order of the names,
 * so writing the slots out in index order sorts the canonical query. The
 * arena holds the decoded names of dropped parameters and the normalised
 * values of kept ones, in order of appearance.
 *
 * Invariants:
 *   - every write is bounded by its destination: the arena by ARENA_MAX,
 *     the scratch buffer by QUERY_RAW_MAX (a value decodes to at most as
 *     many bytes as its raw form), the caller's buffers by their sizes;
 *   - the arena cannot run out: the raw query is at most QUERY_RAW_MAX
 *     bytes, decoding never lengthens, a normalised number, UUID, entity
 *     type or custom value is no longer than its decoded form, and only the
 *     two timestamps grow (to 24 bytes from at least 10); the check in
 *     arena_reserve() is a second fence, not a rule;
 *   - err->parameter and err->message are NUL-terminated valid UTF-8: names
 *     that failed to decode are shown in their raw form with every byte
 *     outside printable ASCII written as %XX, decoded names are cut on a
 *     character boundary; a segment with an empty name is reported as
 *     "query";
 *   - on QUERY_OK the canonical query is non-empty (at least one of days,
 *     created_after, updated_after is in it) and NUL-terminated.
 *
 * Choices where the vendor is silent: a timestamp fraction beyond
 * milliseconds is truncated; a decoded name that is empty ("=1") is dropped
 * without being listed in `ignored`; when not even the first dropped name
 * fits in `ignored`, the list is just "...".
 */
#include "policy/query.h"

#include "policy/check.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum param {
	P_CREATED_AFTER = 0,
	P_CUSTOM_FIELD_KEY,
	P_CUSTOM_FIELD_VALUE,
	P_DAYS,
	P_ENTITY_TYPE,
	P_LIMIT,
	P_OFFSET,
	P_PIPELINE_ID,
	P_STAGE_ID,
	P_UPDATED_AFTER,
	P_COUNT,
};

/* In byte order: the canonical query lists parameters in this order. */
static const char *const param_names[P_COUNT] = {
	[P_CREATED_AFTER] = "created_after",
	[P_CUSTOM_FIELD_KEY] = "custom_field_key",
	[P_CUSTOM_FIELD_VALUE] = "custom_field_value",
	[P_DAYS] = "days",
	[P_ENTITY_TYPE] = "entity_type",
	[P_LIMIT] = "limit",
	[P_OFFSET] = "offset",
	[P_PIPELINE_ID] = "pipeline_id",
	[P_STAGE_ID] = "stage_id",
	[P_UPDATED_AFTER] = "updated_after",
};

static const unsigned present_bit[P_COUNT] = {
	[P_CREATED_AFTER] = QUERY_P_CREATED_AFTER,
	[P_CUSTOM_FIELD_KEY] = QUERY_P_CUSTOM_FIELD,
	[P_CUSTOM_FIELD_VALUE] = QUERY_P_CUSTOM_FIELD,
	[P_DAYS] = QUERY_P_DAYS,
	[P_ENTITY_TYPE] = QUERY_P_ENTITY_TYPE,
	[P_LIMIT] = QUERY_P_LIMIT,
	[P_OFFSET] = QUERY_P_OFFSET,
	[P_PIPELINE_ID] = QUERY_P_PIPELINE_ID,
	[P_STAGE_ID] = QUERY_P_STAGE_ID,
	[P_UPDATED_AFTER] = QUERY_P_UPDATED_AFTER,
};

#define ARENA_MAX (QUERY_RAW_MAX + 64) /* see the invariants above */
#define DAYS_MIN 1
#define DAYS_MAX 365
#define LIMIT_MIN 1
#define LIMIT_MAX 1000
#define TS_FORMAT_MSG "%s must be an ISO 8601 timestamp, e.g. 2024-01-15T10:00:00.000Z"
#define TS_MIN_MS INT64_C(-62167219200000) /* 0000-01-01T00:00:00.000Z */
#define TS_MAX_MS INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */
#define MS_PER_DAY INT64_C(86400000)

struct span {
	size_t off, len; /* into the arena */
};

/* A parameter that may end up in `ignored`, in order of appearance. */
struct dropped {
	struct span name; /* decoded name; unused for entity_type */
	int entity_type;  /* listed only if entity_type is dropped in the end */
};

struct parse {
	struct query *out;
	struct query_error *err;
	int set[P_COUNT];
	struct span val[P_COUNT]; /* normalised, unencoded value */
	struct dropped dropped[QUERY_PARAMS_MAX];
	size_t n_dropped;
	size_t arena_len;
	char arena[ARENA_MAX];
	char scratch[QUERY_RAW_MAX]; /* the current segment's decoded value */
};

__attribute__((format(printf, 3, 4))) static enum query_status
fail(struct query_error *err, const char *parameter, const char *fmt, ...)
{
	va_list ap;

	snprintf(err->parameter, sizeof(err->parameter), "%s", parameter);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return QUERY_INVALID;
}

static enum query_status fail_query_too_long(struct query_error *err)
{
	return fail(err, "query", "the query is too long: at most %d bytes", QUERY_RAW_MAX);
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Length of the UTF-8 sequence starting at s[0] (of n > 0 bytes), or 0 if
 * it is not well formed: no overlongs, no surrogates, nothing above
 * U+10FFFF, no truncated sequence.
 */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0], cp, min;
	size_t len;

	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0) {
		len = 2, cp = c & 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3, cp = c & 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t k = 1; k < len; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[k] & 0x3fu);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static int utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	for (size_t i = 0, k; i < n; i += k) {
		k = utf8_seq(u + i, n - i);
		if (k == 0)
			return 0;
	}
	return 1;
}

enum decode_result { DECODE_OK, DECODE_ESCAPE, DECODE_NUL, DECODE_UTF8, DECODE_LONG };

/*
 * Percent-decodes s[0..n) into out[0..cap) ('+' is a space) and checks the
 * result is valid UTF-8 without NUL bytes. *out_len is set on DECODE_OK.
 */
static enum decode_result decode(const char *s, size_t n, char *out, size_t cap,
				 size_t *out_len)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			int hi, lo;

			if (n - i < 3)
				return DECODE_ESCAPE;
			hi = hexval((unsigned char)s[i + 1]);
			lo = hexval((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0)
				return DECODE_ESCAPE;
			c = (char)(hi * 16 + lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c == '\0')
			return DECODE_NUL;
		if (o == cap)
			return DECODE_LONG;
		out[o++] = c;
	}
	if (!utf8_valid(out, o))
		return DECODE_UTF8;
	*out_len = o;
	return DECODE_OK;
}

static int is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

static int is_printable(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

/*
 * Writes src[0..n) into dst (size > 0), bytes for which `plain` holds as
 * they are and all others as %XX (upper-case hex), stopping before the first
 * one that would not fit with the NUL. Returns the length written; *cut says
 * whether it stopped early.
 */
static size_t pct_encode(char *dst, size_t size, const char *src, size_t n,
			 int (*plain)(unsigned char), int *cut)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	*cut = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];
		int literal = plain(c);

		if (size - o <= (literal ? 1u : 3u)) { /* no room for it and the NUL */
			*cut = 1;
			break;
		}
		if (literal) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '%';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return o;
}

long query_encode(char *dst, size_t dst_size, const char *src, size_t len)
{
	int cut;
	size_t o;

	if (dst_size == 0)
		return -1;
	o = pct_encode(dst, dst_size, src, len, is_unreserved, &cut);
	return cut ? -1 : (long)o;
}

/*
 * A name for err->parameter from a raw (undecodable) name: printable ASCII
 * as is, any other byte as %XX, cut before the escape or byte that would
 * not fit.
 */
static void who_raw(char *dst, size_t size, const char *s, size_t n)
{
	int cut;

	pct_encode(dst, size, s, n, is_printable, &cut);
}

/* A name for err->parameter from a decoded (valid UTF-8) name. */
static void who_decoded(char *dst, size_t size, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0;

	while (o < n) {
		size_t k = utf8_seq(u + o, n - o);

		if (k == 0 || size - o <= k)
			break;
		o += k;
	}
	memcpy(dst, s, o);
	dst[o] = '\0';
}

/*
 * The error for a segment that failed to decode. `who` names the parameter;
 * one whose name is empty is reported as "query".
 */
static enum query_status decode_error(struct parse *p, const char *who,
				      enum decode_result r)
{
	const char *subject = who;

	if (who[0] == '\0') {
		who = "query";
		subject = "a parameter with an empty name";
	}
	switch (r) {
	case DECODE_ESCAPE:
		return fail(p->err, who,
			    "%s has a malformed percent-escape: '%%' must be followed by "
			    "two hex digits",
			    subject);
	case DECODE_NUL:
		return fail(p->err, who, "%s contains a NUL byte", subject);
	case DECODE_UTF8:
		return fail(p->err, who, "%s is not valid UTF-8 once decoded", subject);
	case DECODE_LONG:
		return fail_query_too_long(p->err);
	case DECODE_OK:
		break;
	}
	return QUERY_OK;
}

/* Space for len more bytes at the end of the arena, or NULL. */
static char *arena_reserve(struct parse *p, size_t len)
{
	if (len > ARENA_MAX - p->arena_len)
		return NULL;
	return p->arena + p->arena_len;
}

/* Stores a parameter's normalised value. */
static enum query_status put_value(struct parse *p, enum param id, const char *v,
				   size_t len)
{
	char *at = arena_reserve(p, len);

	if (at == NULL)
		return fail_query_too_long(p->err);
	memmove(at, v, len);
	p->val[id].off = p->arena_len;
	p->val[id].len = len;
	p->arena_len += len;
	return QUERY_OK;
}

/*
 * Plain decimal numbers: DIGITS or DIGITS.DIGITS, ASCII only. On success
 * the integer part (leading zeros stripped, at least one digit) and the
 * fraction (trailing zeros stripped, maybe empty) are spans of s, and
 * int_value is the integer part, or UINT64_MAX when it has more than 18
 * digits (above every bound here; nothing overflows).
 */
struct decimal {
	const char *ip, *fp;
	size_t ip_len, fp_len;
	uint64_t int_value;
};

static int parse_decimal(const char *s, size_t n, struct decimal *d)
{
	size_t i = 0;

	while (i < n && is_digit(s[i]))
		i++;
	if (i == 0)
		return -1;
	d->ip = s;
	d->ip_len = i;
	d->fp = s + n;
	d->fp_len = 0;
	if (i < n) {
		size_t start;

		if (s[i] != '.')
			return -1;
		start = ++i;
		while (i < n && is_digit(s[i]))
			i++;
		if (i != n || i == start)
			return -1;
		d->fp = s + start;
		d->fp_len = n - start;
	}
	while (d->ip_len > 1 && d->ip[0] == '0')
		d->ip++, d->ip_len--;
	while (d->fp_len > 0 && d->fp[d->fp_len - 1] == '0')
		d->fp_len--;
	d->int_value = 0;
	if (d->ip_len > 18) {
		d->int_value = UINT64_MAX;
	} else {
		for (size_t k = 0; k < d->ip_len; k++)
			d->int_value = d->int_value * 10 + (uint64_t)(d->ip[k] - '0');
	}
	return 0;
}

/* Writes the decimal in canonical form; it is never longer than its source. */
static enum query_status put_decimal(struct parse *p, enum param id,
				     const struct decimal *d)
{
	size_t len = d->ip_len + (d->fp_len ? 1 + d->fp_len : 0);
	char *at = arena_reserve(p, len);

	if (at == NULL)
		return fail_query_too_long(p->err);
	memmove(at, d->ip, d->ip_len);
	if (d->fp_len) {
		at[d->ip_len] = '.';
		memmove(at + d->ip_len + 1, d->fp, d->fp_len);
	}
	p->val[id].off = p->arena_len;
	p->val[id].len = len;
	p->arena_len += len;
	return QUERY_OK;
}

static enum query_status parse_days(struct parse *p, const char *v, size_t n)
{
	struct decimal d;
	uint32_t milli = 0;

	if (parse_decimal(v, n, &d) != 0)
		return fail(p->err, "days", "days must be a number");
	if (d.int_value < DAYS_MIN || d.int_value > DAYS_MAX ||
	    (d.int_value == DAYS_MAX && d.fp_len > 0))
		return fail(p->err, "days", "days must be between %d and %d", DAYS_MIN,
			    DAYS_MAX);
	for (size_t k = 0; k < 3; k++) /* truncated after the third decimal */
		milli = milli * 10 + (k < d.fp_len ? (uint32_t)(d.fp[k] - '0') : 0);
	p->out->days_milli = (uint32_t)d.int_value * 1000u + milli;
	return put_decimal(p, P_DAYS, &d);
}

/* limit and offset: an integer by value ("10.0" is 10) within [min, max]. */
static enum query_status parse_int(struct parse *p, enum param id, const char *v,
				   size_t n, uint64_t min, uint64_t max,
				   uint32_t *value)
{
	const char *name = param_names[id];
	struct decimal d;

	if (parse_decimal(v, n, &d) != 0 || d.fp_len != 0)
		return fail(p->err, name, "%s must be an integer", name);
	if (d.int_value < min || d.int_value > max)
		return fail(p->err, name, "%s must be between %llu and %llu", name,
			    (unsigned long long)min, (unsigned long long)max);
	*value = (uint32_t)d.int_value;
	return put_decimal(p, id, &d);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* The inverse of days_from_civil(). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(long y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static long days_in_month(long y, long m)
{
	static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30,
						31, 31, 30, 31, 30, 31};

	return mdays[m - 1] + (m == 2 && is_leap(y));
}

/* Reads exactly `count` ASCII digits at s[*i]; returns 0, or -1 (no change). */
static int read_digits(const char *s, size_t n, size_t *i, size_t count, long *v)
{
	long x = 0;

	if (n - *i < count)
		return -1;
	for (size_t k = 0; k < count; k++) {
		if (!is_digit(s[*i + k]))
			return -1;
		x = x * 10 + (s[*i + k] - '0');
	}
	*i += count;
	*v = x;
	return 0;
}

static int read_char(const char *s, size_t n, size_t *i, char c)
{
	if (*i >= n || s[*i] != c)
		return -1;
	(*i)++;
	return 0;
}

/* The fields of a timestamp as written, before any range check. */
struct timestamp {
	long year, month, day, hour, minute, second, milli;
	long off_sign, off_hour, off_minute;
};

enum ts_syntax { TS_OK, TS_FORMAT, TS_NO_ZONE, TS_SPACE_OFFSET };

/*
 * YYYY-MM-DD, or YYYY-MM-DD'T'HH:MM[:SS[.f{1,9}]] followed by Z, +HH:MM,
 * -HH:MM, +HHMM or -HHMM ('t' and 'z' too).
 */
static enum ts_syntax ts_scan(const char *s, size_t n, struct timestamp *t)
{
	size_t i = 0;

	memset(t, 0, sizeof(*t));
	t->off_sign = 1;
	if (read_digits(s, n, &i, 4, &t->year) || read_char(s, n, &i, '-') ||
	    read_digits(s, n, &i, 2, &t->month) || read_char(s, n, &i, '-') ||
	    read_digits(s, n, &i, 2, &t->day))
		return TS_FORMAT;
	if (i == n)
		return TS_OK; /* a date alone: midnight UTC */
	if (s[i] != 'T' && s[i] != 't')
		return TS_FORMAT;
	i++;
	if (read_digits(s, n, &i, 2, &t->hour) || read_char(s, n, &i, ':') ||
	    read_digits(s, n, &i, 2, &t->minute))
		return TS_FORMAT;
	if (read_char(s, n, &i, ':') == 0) {
		if (read_digits(s, n, &i, 2, &t->second))
			return TS_FORMAT;
		if (read_char(s, n, &i, '.') == 0) {
			size_t start = i, k;

			while (i < n && is_digit(s[i])) {
				if (i - start < 3) /* truncated, not rounded */
					t->milli = t->milli * 10 + (s[i] - '0');
				i++;
			}
			k = i - start;
			if (k < 1 || k > 9)
				return TS_FORMAT;
			for (; k < 3; k++)
				t->milli *= 10;
		}
	}
	if (i == n)
		return TS_NO_ZONE;
	if (s[i] == 'Z' || s[i] == 'z') {
		i++;
	} else if (s[i] == '+' || s[i] == '-' || s[i] == ' ') {
		char sign = s[i++];

		if (read_digits(s, n, &i, 2, &t->off_hour))
			return TS_FORMAT;
		(void)read_char(s, n, &i, ':');
		if (read_digits(s, n, &i, 2, &t->off_minute) || i != n)
			return TS_FORMAT;
		if (sign == ' ')
			return TS_SPACE_OFFSET; /* a literal '+' decoded as a space */
		t->off_sign = sign == '-' ? -1 : 1;
	} else {
		return TS_FORMAT;
	}
	return i == n ? TS_OK : TS_FORMAT;
}

static enum query_status parse_timestamp(struct parse *p, enum param id,
					 const char *s, size_t n, int64_t *ms_out)
{
	const char *name = param_names[id];
	struct timestamp t;
	int64_t ms, day, y;
	unsigned m, d;
	long tod;
	char buf[32];
	int len;

	switch (ts_scan(s, n, &t)) {
	case TS_OK:
		break;
	case TS_FORMAT:
		return fail(p->err, name, TS_FORMAT_MSG, name);
	case TS_NO_ZONE:
		return fail(p->err, name, "%s must include a time zone, e.g. Z or +02:00",
			    name);
	case TS_SPACE_OFFSET:
		return fail(p->err, name,
			    "%s has a space before its UTC offset: '+' in a query means "
			    "a space, write it as %%2B",
			    name);
	}
	if (t.month < 1 || t.month > 12)
		return fail(p->err, name, "%s has month %02ld; months are 01 to 12", name,
			    t.month);
	if (t.day < 1 || t.day > days_in_month(t.year, t.month))
		return fail(p->err, name, "%s has day %02ld, which %04ld-%02ld does not have",
			    name, t.day, t.year, t.month);
	if (t.hour > 23 || t.minute > 59 || t.second > 59)
		return fail(p->err, name,
			    "%s has a time of day out of range (00:00:00 to 23:59:59)", name);
	if (t.off_hour > 23 || t.off_minute > 59)
		return fail(p->err, name,
			    "%s has a UTC offset out of range (hours 00 to 23, minutes 00 "
			    "to 59)",
			    name);
	ms = days_from_civil(t.year, (unsigned)t.month, (unsigned)t.day) * MS_PER_DAY +
	     ((int64_t)t.hour * 3600 + t.minute * 60 + t.second -
	      t.off_sign * (t.off_hour * 3600 + t.off_minute * 60)) *
		     1000 +
	     t.milli;
	if (ms < TS_MIN_MS || ms > TS_MAX_MS)
		return fail(p->err, name,
			    "%s falls outside the years 0000 to 9999 once converted to UTC",
			    name);
	*ms_out = ms;
	day = ms >= 0 ? ms / MS_PER_DAY : -((-ms + MS_PER_DAY - 1) / MS_PER_DAY);
	tod = (long)(ms - day * MS_PER_DAY);
	civil_from_days(day, &y, &m, &d);
	len = snprintf(buf, sizeof(buf), "%04lld-%02u-%02uT%02ld:%02ld:%02ld.%03ldZ",
		       (long long)y, m, d, tod / 3600000, tod / 60000 % 60,
		       tod / 1000 % 60, tod % 1000);
	if (len != 24)
		return fail(p->err, name, TS_FORMAT_MSG, name); /* cannot happen */
	return put_value(p, id, buf, (size_t)len);
}

/*
 * 8-4-4-4-12 hex digits with version 1..8 and variant 8, 9, a or b; or the
 * nil or max UUID. Stored lower-cased.
 */
static enum query_status parse_uuid(struct parse *p, enum param id, const char *s,
				    size_t n)
{
	const char *name = param_names[id];
	char lower[36];
	int nil = 1, max = 1;

	if (n != sizeof(lower))
		return fail(p->err, name, "%s must be a UUID", name);
	for (size_t i = 0; i < sizeof(lower); i++) {
		char c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return fail(p->err, name, "%s must be a UUID", name);
		} else if (hexval((unsigned char)c) < 0) {
			return fail(p->err, name, "%s must be a UUID", name);
		} else {
			if (c >= 'A' && c <= 'F')
				c = (char)(c - 'A' + 'a');
			nil &= c == '0';
			max &= c == 'f';
		}
		lower[i] = c;
	}
	if (!nil && !max &&
	    (lower[14] < '1' || lower[14] > '8' ||
	     (lower[19] != '8' && lower[19] != '9' && lower[19] != 'a' && lower[19] != 'b')))
		return fail(p->err, name, "%s must be a UUID", name);
	return put_value(p, id, lower, sizeof(lower));
}

static enum param find_param(const char *name, size_t len)
{
	for (int i = 0; i < P_COUNT; i++)
		if (strlen(param_names[i]) == len && memcmp(param_names[i], name, len) == 0)
			return (enum param)i;
	return P_COUNT;
}

/* Checks a known parameter's decoded, non-empty value and stores it. */
static enum query_status parse_value(struct parse *p, enum param id, const char *v,
				     size_t n)
{
	const char *name = param_names[id];

	switch (id) {
	case P_DAYS:
		return parse_days(p, v, n);
	case P_LIMIT:
		return parse_int(p, id, v, n, LIMIT_MIN, LIMIT_MAX, &p->out->limit);
	case P_OFFSET:
		return parse_int(p, id, v, n, 0, QUERY_OFFSET_MAX, &p->out->offset);
	case P_CREATED_AFTER:
		return parse_timestamp(p, id, v, n, &p->out->created_after_ms);
	case P_UPDATED_AFTER:
		return parse_timestamp(p, id, v, n, &p->out->updated_after_ms);
	case P_STAGE_ID:
	case P_PIPELINE_ID:
		return parse_uuid(p, id, v, n);
	case P_ENTITY_TYPE:
		if (!(n == 6 && memcmp(v, "ticket", 6) == 0) &&
		    !(n == 8 && memcmp(v, "customer", 8) == 0))
			return fail(p->err, name, "%s must be ticket or customer", name);
		break;
	case P_CUSTOM_FIELD_KEY:
	case P_CUSTOM_FIELD_VALUE:
		if (n > QUERY_STRING_MAX)
			return fail(p->err, name, "%s must be at most %d bytes", name,
				    QUERY_STRING_MAX);
		break;
	case P_COUNT:
		return fail(p->err, "query", "internal error: unknown parameter");
	}
	return put_value(p, id, v, n);
}

static enum query_status parse_segment(struct parse *p, const char *seg, size_t n)
{
	const char *eq = memchr(seg, '=', n);
	size_t raw_name_len = eq ? (size_t)(eq - seg) : n;
	const char *raw_val = eq ? eq + 1 : seg + n;
	size_t raw_val_len = eq ? n - raw_name_len - 1 : 0;
	char who[sizeof(p->err->parameter)];
	char *name = p->arena + p->arena_len; /* kept only if dropped */
	size_t name_len, val_len;
	enum decode_result r;
	enum param id;

	r = decode(seg, raw_name_len, name, ARENA_MAX - p->arena_len, &name_len);
	if (r != DECODE_OK) {
		who_raw(who, sizeof(who), seg, raw_name_len);
		return decode_error(p, who, r);
	}
	who_decoded(who, sizeof(who), name, name_len);
	r = decode(raw_val, raw_val_len, p->scratch, sizeof(p->scratch), &val_len);
	if (r != DECODE_OK)
		return decode_error(p, who, r);
	id = find_param(name, name_len);
	if (id == P_COUNT) { /* unknown: dropped, listed in `ignored` */
		struct dropped *d = &p->dropped[p->n_dropped++];

		d->name.off = p->arena_len;
		d->name.len = name_len;
		d->entity_type = 0;
		p->arena_len += name_len;
		return QUERY_OK;
	}
	if (p->set[id])
		return fail(p->err, param_names[id], "%s appears more than once",
			    param_names[id]);
	if (val_len == 0)
		return fail(p->err, param_names[id], "%s must not be empty", param_names[id]);
	p->set[id] = 1;
	if (id == P_ENTITY_TYPE) { /* its place in `ignored`, should it be dropped */
		struct dropped *d = &p->dropped[p->n_dropped++];

		d->name.off = d->name.len = 0;
		d->entity_type = 1;
	}
	return parse_value(p, id, p->scratch, val_len);
}

/* Whether dropped[i]'s name was already listed by an earlier entry. */
static int dropped_before(const struct parse *p, size_t i)
{
	const struct dropped *d = &p->dropped[i];

	for (size_t j = 0; j < i; j++) {
		const struct dropped *e = &p->dropped[j];

		if (!e->entity_type && e->name.len == d->name.len &&
		    memcmp(p->arena + e->name.off, p->arena + d->name.off, d->name.len) == 0)
			return 1;
	}
	return 0;
}

/*
 * Writes out->ignored: the dropped names in order of appearance, encoded,
 * once each, joined with ','. If they do not all fit, the list is cut after
 * the last name that leaves room for ",..." and ends in ",...".
 */
static void write_ignored(struct parse *p)
{
	char *list = p->out->ignored;
	size_t len = 0, keep = 0; /* keep: a cut point that leaves room for ",..." */

	list[0] = '\0';
	for (size_t i = 0; i < p->n_dropped; i++) {
		const struct dropped *d = &p->dropped[i];
		const char *name = d->entity_type ? param_names[P_ENTITY_TYPE]
						  : p->arena + d->name.off;
		size_t name_len = d->entity_type ? strlen(name) : d->name.len;
		size_t sep = len ? 1 : 0;
		long n;

		if (d->entity_type && p->set[P_ENTITY_TYPE])
			continue; /* kept in the canonical query */
		if (name_len == 0 || (!d->entity_type && dropped_before(p, i)))
			continue;
		n = len + sep < QUERY_IGNORED_MAX
			    ? query_encode(list + len + sep, QUERY_IGNORED_MAX - len - sep,
					   name, name_len)
			    : -1;
		if (n < 0) {
			memcpy(list + keep, keep ? ",..." : "...", keep ? 5 : 4);
			return;
		}
		if (sep)
			list[len] = ',';
		len += sep + (size_t)n;
		if (len + 4 < QUERY_IGNORED_MAX)
			keep = len;
	}
	list[len] = '\0';
}

/* Writes out->canonical from the slots, in name order. */
static enum query_status write_canonical(struct parse *p)
{
	struct query *out = p->out;
	size_t o = 0;

	for (int id = 0; id < P_COUNT; id++) {
		size_t name_len = strlen(param_names[id]);
		long n;

		if (!p->set[id])
			continue;
		out->present |= present_bit[id];
		if ((o ? 1 : 0) + name_len + 1 >= QUERY_CANON_MAX - o)
			goto too_long;
		if (o)
			out->canonical[o++] = '&';
		memcpy(out->canonical + o, param_names[id], name_len);
		o += name_len;
		out->canonical[o++] = '=';
		n = query_encode(out->canonical + o, QUERY_CANON_MAX - o,
				 p->arena + p->val[id].off, p->val[id].len);
		if (n < 0)
			goto too_long;
		o += (size_t)n;
	}
	out->canonical[o] = '\0';
	out->canonical_len = o;
	return QUERY_OK;
too_long:
	out->canonical[0] = '\0';
	return fail(p->err, "query", "the normalised query is too long: at most %d bytes",
		    QUERY_CANON_MAX - 1);
}

enum query_status query_normalise(const char *raw, size_t raw_len,
				  struct query *out, struct query_error *err)
{
	struct parse p;
	size_t segments = 0, start = 0;
	int *set = p.set;

	CHECK(out != NULL && err != NULL && (raw != NULL || raw_len == 0));
	memset(p.set, 0, sizeof(p.set));
	p.n_dropped = 0;
	p.arena_len = 0;
	p.out = out;
	p.err = err;
	out->canonical[0] = '\0';
	out->canonical_len = 0;
	out->ignored[0] = '\0';
	out->present = 0;
	out->days_milli = out->limit = out->offset = 0;
	out->created_after_ms = out->updated_after_ms = 0;
	err->parameter[0] = err->message[0] = '\0';

	/* 1. the whole query */
	if (raw_len > QUERY_RAW_MAX)
		return fail_query_too_long(err);
	for (size_t i = 0; i < raw_len; i++)
		if (raw[i] != '&' && (i == 0 || raw[i - 1] == '&'))
			segments++;
	if (segments > QUERY_PARAMS_MAX)
		return fail(err, "query", "the query has more than %d parameters",
			    QUERY_PARAMS_MAX);

	/* 2. each segment, in order of appearance */
	for (size_t i = 0; i <= raw_len; i++) {
		if (i < raw_len && raw[i] != '&')
			continue;
		if (i > start && parse_segment(&p, raw + start, i - start) != QUERY_OK)
			return QUERY_INVALID;
		start = i + 1;
	}

	/* 3. across parameters */
	if (set[P_CUSTOM_FIELD_KEY] && !set[P_CUSTOM_FIELD_VALUE])
		return fail(err, "custom_field_value",
			    "custom_field_value is required with custom_field_key");
	if (set[P_CUSTOM_FIELD_VALUE] && !set[P_CUSTOM_FIELD_KEY])
		return fail(err, "custom_field_key",
			    "custom_field_key is required with custom_field_value");
	if (!set[P_DAYS] && !set[P_CREATED_AFTER] && !set[P_UPDATED_AFTER])
		return fail(err, "days",
			    "at least one of days, created_after or updated_after is required");
	if (!set[P_CUSTOM_FIELD_KEY])
		set[P_ENTITY_TYPE] = 0; /* the vendor ignores it without the pair */
	if (set[P_OFFSET] && out->offset == 0)
		set[P_OFFSET] = 0; /* skipping none is the vendor's default: one question */
	if (write_canonical(&p) != QUERY_OK)
		return QUERY_INVALID;
	write_ignored(&p);
	return QUERY_OK;
}
