/*
 * query: see query.h.
 *
 * One pass over the '&'-separated segments fills one slot per known
 * parameter with its normalised, still unencoded value (decoded bytes,
 * plain decimal, lower-case UUID, UTC timestamp); a second step applies
 * the cross-parameter rules; the last writes the slots out in name order,
 * percent-encoded canonically. Slots are indexed in name order, so writing
 * them out in index order sorts the query.
 */
#include "policy/query.h"

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
	"created_after", "custom_field_key", "custom_field_value", "days",
	"entity_type",   "limit",            "offset",             "pipeline_id",
	"stage_id",      "updated_after",
};

#define NAME_MAX_LEN 64 /* longer decoded names are unknown parameters */

struct slot {
	int set;
	size_t len;
	char val[QUERY_STRING_MAX];
};

struct parse {
	struct slot slot[P_COUNT];
	struct query *out;
	struct query_error *err;
	size_t ignored_len;
	int ignored_full;
};

__attribute__((format(printf, 3, 4)))
static enum query_status fail(struct query_error *err, const char *parameter,
			      const char *fmt, ...)
{
	va_list ap;

	snprintf(err->parameter, sizeof(err->parameter), "%s", parameter);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return QUERY_INVALID;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

enum decode_result { DECODE_OK, DECODE_ESCAPE, DECODE_NUL, DECODE_UTF8, DECODE_LONG };

/* Checks that s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
static int utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t len;
		unsigned cp, min;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (n - i < len)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

/* Percent-decodes s[0..n) into out ('+' is a space). */
static enum decode_result decode(const char *s, size_t n, char *out,
				 size_t out_size, size_t *out_len)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			int hi, lo;

			if (n - i < 3)
				return DECODE_ESCAPE;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return DECODE_ESCAPE;
			c = (char)(hi * 16 + lo);
			i += 2;
			if (c == '\0')
				return DECODE_NUL;
		} else if (c == '+') {
			c = ' ';
		} else if (c == '\0') {
			return DECODE_NUL;
		}
		if (o == out_size)
			return DECODE_LONG;
		out[o++] = c;
	}
	if (!utf8_valid((const unsigned char *)out, o))
		return DECODE_UTF8;
	*out_len = o;
	return DECODE_OK;
}

long query_encode(char *dst, size_t dst_size, const char *src, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (dst_size == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
			    c == '_' || c == '~';

		if (o + (plain ? 1 : 3) >= dst_size) {
			dst[o] = '\0';
			return -1;
		}
		if (plain) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '%';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return (long)o;
}

/*
 * Plain decimal numbers: DIGITS or DIGITS.DIGITS. On success the integer
 * part (leading zeros stripped) and fraction (trailing zeros stripped) are
 * returned as spans of s; *int_value is the integer part when it has at most
 * 18 digits, else UINT64_MAX (out of every range here).
 */
struct decimal {
	const char *ip, *fp;
	size_t ip_len, fp_len;
	uint64_t int_value;
};

static int parse_decimal(const char *s, size_t n, struct decimal *d)
{
	size_t i = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
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
		while (i < n && s[i] >= '0' && s[i] <= '9')
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

static void put_decimal(struct slot *sl, const struct decimal *d)
{
	memcpy(sl->val, d->ip, d->ip_len);
	sl->len = d->ip_len;
	if (d->fp_len) {
		sl->val[sl->len++] = '.';
		memcpy(sl->val + sl->len, d->fp, d->fp_len);
		sl->len += d->fp_len;
	}
}

static enum query_status parse_days(struct parse *p, const char *v, size_t n)
{
	struct decimal d;
	uint32_t milli = 0;

	if (parse_decimal(v, n, &d) != 0)
		return fail(p->err, "days", "%s must be a number", "days");
	if (d.int_value < 1 || d.int_value > 365 || (d.int_value == 365 && d.fp_len))
		return fail(p->err, "days", "%s must be between 1 and 365", "days");
	for (size_t k = 0; k < 3; k++)
		milli = milli * 10 + (k < d.fp_len ? (uint32_t)(d.fp[k] - '0') : 0);
	p->out->days_milli = (uint32_t)d.int_value * 1000 + milli;
	put_decimal(&p->slot[P_DAYS], &d);
	return QUERY_OK;
}

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
	put_decimal(&p->slot[id], &d);
	return QUERY_OK;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

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

/* Reads exactly `n` digits at s[*i]; returns the value or -1. */
static long digits(const char *s, size_t len, size_t *i, size_t n)
{
	long v = 0;

	if (len - *i < n)
		return -1;
	for (size_t k = 0; k < n; k++) {
		char c = s[*i + k];

		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*i += n;
	return v;
}

static int leap(long y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

#define BAD_TIMESTAMP "%s must be an ISO 8601 timestamp, e.g. 2024-01-15T10:00:00.000Z"
#define TS_MIN_MS INT64_C(-62167219200000)  /* 0000-01-01T00:00:00.000Z */
#define TS_MAX_MS INT64_C(253402300799999)  /* 9999-12-31T23:59:59.999Z */

static enum query_status parse_timestamp(struct parse *p, enum param id,
					 const char *s, size_t n, int64_t *ms_out)
{
	static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	const char *name = param_names[id];
	long y, mo, d, hh = 0, mi = 0, ss = 0, frac_ms = 0, off = 0;
	size_t i = 0;
	int64_t ms, day, y_out;
	unsigned m_out, d_out;
	long tod;
	struct slot *sl = &p->slot[id];

	if ((y = digits(s, n, &i, 4)) < 0 || i >= n || s[i++] != '-' ||
	    (mo = digits(s, n, &i, 2)) < 0 || i >= n || s[i++] != '-' ||
	    (d = digits(s, n, &i, 2)) < 0)
		return fail(p->err, name, BAD_TIMESTAMP, name);
	if (mo < 1 || mo > 12 ||
	    d < 1 || d > (long)mdays[mo - 1] + (mo == 2 && leap(y)))
		return fail(p->err, name, "%s is not a valid calendar date", name);
	if (i < n) {
		if (s[i] != 'T' && s[i] != 't')
			return fail(p->err, name, BAD_TIMESTAMP, name);
		i++;
		if ((hh = digits(s, n, &i, 2)) < 0 || i >= n || s[i++] != ':' ||
		    (mi = digits(s, n, &i, 2)) < 0)
			return fail(p->err, name, BAD_TIMESTAMP, name);
		if (i < n && s[i] == ':') {
			i++;
			if ((ss = digits(s, n, &i, 2)) < 0)
				return fail(p->err, name, BAD_TIMESTAMP, name);
			if (i < n && s[i] == '.') {
				size_t start = ++i;

				while (i < n && s[i] >= '0' && s[i] <= '9') {
					if (i - start < 3)
						frac_ms = frac_ms * 10 + (s[i] - '0');
					i++;
				}
				if (i == start || i - start > 9)
					return fail(p->err, name, BAD_TIMESTAMP, name);
				for (size_t k = i - start; k < 3; k++)
					frac_ms *= 10;
			}
		}
		if (hh > 23 || mi > 59 || ss > 59)
			return fail(p->err, name, "%s has a time of day out of range", name);
		if (i == n)
			return fail(p->err, name,
				    "%s must include a time zone, e.g. Z or +02:00", name);
		if (s[i] == 'Z' || s[i] == 'z') {
			i++;
		} else if (s[i] == '+' || s[i] == '-') {
			long sign = s[i++] == '-' ? -1 : 1, oh, om;

			if ((oh = digits(s, n, &i, 2)) < 0)
				return fail(p->err, name, BAD_TIMESTAMP, name);
			if (i < n && s[i] == ':')
				i++;
			if ((om = digits(s, n, &i, 2)) < 0 || oh > 23 || om > 59)
				return fail(p->err, name, BAD_TIMESTAMP, name);
			off = sign * (oh * 3600 + om * 60);
		} else if (s[i] == ' ') {
			return fail(p->err, name,
				    "%s has a space before its offset: a '+' in a URL "
				    "means a space, write it as %%2B", name);
		} else {
			return fail(p->err, name, BAD_TIMESTAMP, name);
		}
		if (i != n)
			return fail(p->err, name, BAD_TIMESTAMP, name);
	}
	ms = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400000 +
	     ((int64_t)hh * 3600 + mi * 60 + ss - off) * 1000 + frac_ms;
	if (ms < TS_MIN_MS || ms > TS_MAX_MS)
		return fail(p->err, name, "%s is out of range once converted to UTC", name);
	*ms_out = ms;
	day = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000); /* floor */
	tod = (long)(ms - day * 86400000);
	civil_from_days(day, &y_out, &m_out, &d_out);
	sl->len = (size_t)snprintf(sl->val, sizeof(sl->val),
				   "%04lld-%02u-%02uT%02ld:%02ld:%02ld.%03ldZ",
				   (long long)y_out, m_out, d_out, tod / 3600000,
				   tod / 60000 % 60, tod / 1000 % 60, tod % 1000);
	return QUERY_OK;
}

static int is_hex(char c)
{
	return hexval(c) >= 0;
}

static enum query_status parse_uuid(struct parse *p, enum param id, const char *s,
				    size_t n)
{
	const char *name = param_names[id];
	struct slot *sl = &p->slot[id];
	int nil = 1, max = 1;

	if (n != 36)
		return fail(p->err, name, "%s must be a UUID", name);
	for (size_t i = 0; i < 36; i++) {
		char c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return fail(p->err, name, "%s must be a UUID", name);
		} else if (!is_hex(c)) {
			return fail(p->err, name, "%s must be a UUID", name);
		} else {
			nil &= c == '0';
			max &= c == 'f' || c == 'F';
		}
		sl->val[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
	}
	if (!nil && !max &&
	    (s[14] < '1' || s[14] > '8' || !strchr("89abAB", s[19])))
		return fail(p->err, name, "%s must be a UUID", name);
	sl->len = 36;
	return QUERY_OK;
}

/* Adds a dropped parameter's name to out->ignored, once. */
static void note_ignored(struct parse *p, const char *name, size_t len)
{
	char enc[QUERY_IGNORED_MAX];
	char *list = p->out->ignored;
	long elen;
	size_t need;

	if (p->ignored_full)
		return;
	elen = query_encode(enc, sizeof(enc), name, len);
	if (elen >= 0) {
		for (const char *at = list; (at = strstr(at, enc)) != NULL; at++) {
			if ((at == list || at[-1] == ',') &&
			    (at[elen] == ',' || at[elen] == '\0'))
				return; /* already listed */
		}
	}
	need = (p->ignored_len ? 1 : 0) + (size_t)(elen < 0 ? 0 : elen);
	if (elen < 0 || p->ignored_len + need + 4 >= QUERY_IGNORED_MAX) {
		memcpy(list + p->ignored_len, ",...", 5);
		if (p->ignored_len == 0)
			memcpy(list, "...", 4);
		p->ignored_full = 1;
		return;
	}
	if (p->ignored_len)
		list[p->ignored_len++] = ',';
	memcpy(list + p->ignored_len, enc, (size_t)elen + 1);
	p->ignored_len += (size_t)elen;
}

static enum param find_param(const char *name, size_t len)
{
	for (int i = 0; i < P_COUNT; i++)
		if (strlen(param_names[i]) == len && memcmp(param_names[i], name, len) == 0)
			return (enum param)i;
	return P_COUNT;
}

static enum query_status decode_error(struct parse *p, const char *who,
				      enum decode_result r)
{
	switch (r) {
	case DECODE_ESCAPE:
		return fail(p->err, who, "%s has a malformed percent-escape", who);
	case DECODE_NUL:
		return fail(p->err, who, "%s contains a NUL byte", who);
	case DECODE_UTF8:
		return fail(p->err, who, "%s is not valid UTF-8", who);
	case DECODE_LONG:
		return fail(p->err, who, "%s must be at most %d bytes", who, QUERY_STRING_MAX);
	case DECODE_OK:
		break;
	}
	return QUERY_OK;
}

static enum query_status parse_segment(struct parse *p, const char *seg, size_t n)
{
	const char *eq = memchr(seg, '=', n);
	size_t raw_name_len = eq ? (size_t)(eq - seg) : n;
	const char *raw_val = eq ? eq + 1 : seg + n;
	size_t raw_val_len = n - raw_name_len - (eq ? 1 : 0);
	char name[NAME_MAX_LEN], who[32];
	size_t name_len;
	enum decode_result r;
	enum param id;
	struct slot *sl;
	char val[QUERY_STRING_MAX];
	size_t val_len;
	uint32_t u;

	snprintf(who, sizeof(who), "%.*s", (int)(raw_name_len < 31 ? raw_name_len : 31),
		 seg);
	r = decode(seg, raw_name_len, name, sizeof(name), &name_len);
	if (r == DECODE_LONG) {
		note_ignored(p, seg, raw_name_len < 32 ? raw_name_len : 32);
		return QUERY_OK; /* no known name is that long */
	}
	if (r != DECODE_OK)
		return decode_error(p, who, r);
	id = find_param(name, name_len);
	if (id == P_COUNT) {
		char vbuf[QUERY_STRING_MAX];
		size_t vlen;

		/* unknown: dropped, but its bytes must still be sane */
		r = decode(raw_val, raw_val_len, vbuf, sizeof(vbuf), &vlen);
		if (r != DECODE_OK && r != DECODE_LONG)
			return decode_error(p, who, r);
		note_ignored(p, name, name_len);
		return QUERY_OK;
	}
	sl = &p->slot[id];
	if (sl->set)
		return fail(p->err, param_names[id], "%s appears more than once",
			    param_names[id]);
	r = decode(raw_val, raw_val_len, val, sizeof(val), &val_len);
	if (r != DECODE_OK)
		return decode_error(p, param_names[id], r);
	if (val_len == 0)
		return fail(p->err, param_names[id], "%s must not be empty", param_names[id]);
	sl->set = 1;
	switch (id) {
	case P_DAYS:
		return parse_days(p, val, val_len);
	case P_LIMIT:
		if (parse_int(p, id, val, val_len, 1, 1000, &u) != QUERY_OK)
			return QUERY_INVALID;
		p->out->limit = u;
		return QUERY_OK;
	case P_OFFSET:
		if (parse_int(p, id, val, val_len, 0, QUERY_OFFSET_MAX, &u) != QUERY_OK)
			return QUERY_INVALID;
		p->out->offset = u;
		return QUERY_OK;
	case P_CREATED_AFTER:
		return parse_timestamp(p, id, val, val_len, &p->out->created_after_ms);
	case P_UPDATED_AFTER:
		return parse_timestamp(p, id, val, val_len, &p->out->updated_after_ms);
	case P_STAGE_ID:
	case P_PIPELINE_ID:
		return parse_uuid(p, id, val, val_len);
	case P_ENTITY_TYPE:
		if (!(val_len == 6 && memcmp(val, "ticket", 6) == 0) &&
		    !(val_len == 8 && memcmp(val, "customer", 8) == 0))
			return fail(p->err, "entity_type", "%s must be ticket or customer",
				    "entity_type");
		break;
	case P_CUSTOM_FIELD_KEY:
	case P_CUSTOM_FIELD_VALUE:
	case P_COUNT:
		break;
	}
	memcpy(sl->val, val, val_len);
	sl->len = val_len;
	return QUERY_OK;
}

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

enum query_status query_normalise(const char *raw, size_t raw_len,
				  struct query *out, struct query_error *err)
{
	struct parse p;
	size_t start = 0, segments = 0, o = 0;
	struct slot *s = p.slot;

	for (int id = 0; id < P_COUNT; id++)
		p.slot[id].set = 0; /* the value buffers need no clearing */
	p.ignored_len = 0;
	p.ignored_full = 0;
	out->canonical[0] = '\0';
	out->canonical_len = 0;
	out->ignored[0] = '\0';
	out->present = 0;
	out->days_milli = out->limit = out->offset = 0;
	out->created_after_ms = out->updated_after_ms = 0;
	p.out = out;
	p.err = err;
	if (raw_len > QUERY_RAW_MAX)
		return fail(err, "query", "the query is longer than %d bytes", QUERY_RAW_MAX);
	for (size_t i = 0; i <= raw_len; i++) {
		if (i < raw_len && raw[i] != '&')
			continue;
		if (i > start) {
			if (++segments > QUERY_PARAMS_MAX)
				return fail(err, "query", "the query has more than %d parameters",
					    QUERY_PARAMS_MAX);
			if (parse_segment(&p, raw + start, i - start) != QUERY_OK)
				return QUERY_INVALID;
		}
		start = i + 1;
	}

	if (s[P_CUSTOM_FIELD_KEY].set != s[P_CUSTOM_FIELD_VALUE].set) {
		return s[P_CUSTOM_FIELD_KEY].set
			       ? fail(err, "custom_field_value",
				      "%s is required with custom_field_key",
				      "custom_field_value")
			       : fail(err, "custom_field_key",
				      "%s is required with custom_field_value",
				      "custom_field_key");
	}
	if (!s[P_DAYS].set && !s[P_CREATED_AFTER].set && !s[P_UPDATED_AFTER].set)
		return fail(err, "days",
			    "at least one of days, created_after or updated_after is required");
	if (s[P_ENTITY_TYPE].set && !s[P_CUSTOM_FIELD_KEY].set) {
		s[P_ENTITY_TYPE].set = 0; /* the vendor ignores it without the pair */
		note_ignored(&p, "entity_type", 11);
	}

	for (int id = 0; id < P_COUNT; id++) {
		size_t name_len = strlen(param_names[id]);
		long n;

		if (!s[id].set)
			continue;
		out->present |= present_bit[id];
		if (o + (o ? 1 : 0) + name_len + 1 >= QUERY_CANON_MAX)
			goto too_long;
		if (o)
			out->canonical[o++] = '&';
		memcpy(out->canonical + o, param_names[id], name_len);
		o += name_len;
		out->canonical[o++] = '=';
		n = query_encode(out->canonical + o, QUERY_CANON_MAX - o, s[id].val,
				 s[id].len);
		if (n < 0)
			goto too_long;
		o += (size_t)n;
	}
	out->canonical[o] = '\0';
	out->canonical_len = o;
	return QUERY_OK;
too_long:
	return fail(err, "query", "the normalised query is longer than %d bytes",
		    QUERY_CANON_MAX - 1);
}
