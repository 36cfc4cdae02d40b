/*
 * sim_data: see sim_data.h for the data model and its invariants.
 *
 * Written independently of policy/query.c on purpose: the simulator plays
 * the vendor, so a normalisation bug in the gateway shows up as a difference
 * between the two.
 *
 * A query goes: split on '&' -> percent-decode every name and value ('+' is
 * a space; a bad escape or a decoded NUL anywhere is a 400) -> keep the known
 * parameters (each at most once, never empty) -> validate and convert each ->
 * filter every contact (all filters AND) -> sort (a total order: ties by id)
 * -> offset, limit -> JSON. Equivalent spellings convert to equal filters,
 * so they give identical bytes.
 */
#include "tests/sim/sim_data.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define DAY_MS INT64_C(86400000)
#define SPAN_MS (400 * DAY_MS)     /* contacts are created within 400 days */
#define OFFSET_MAX INT64_C(2147483647)
#define LIMIT_MAX 1000
#define DAYS_MAX 365

static const char *const platforms[] = {
	"whatsapp", "web-whatsapp", "instagram", "webchat", "sms",
	"messenger", "tiktok", "voice", "playground",
};
static const char *const statuses[] = {"UNATTENDED", "ATTENDED", "CLOSED"};
static const char *const first_names[] = {
	"Ana", "Bruno", "Carla", "Diego", "Elena", "Felipe", "Gabriela", "Hugo",
	"Isabel", "Jos\xc3\xa9", "Karina", "Lucas", "Mariana", "Nicol\xc3\xa1s",
	"Olivia", "Pablo",
};
static const char *const last_names[] = {
	"Rojas", "Silva", "Mu\xc3\xb1oz", "P\xc3\xa9rez", "Gonz\xc3\xa1lez", "Soto",
	"D\xc3\xad" "az", "O'Brien",
};
static const char *const field_keys[SIM_FIELDS] = {"status", "tier", "region"};
#define FIELD_VALUES_MAX 4
static const char *const field_values[SIM_FIELDS][FIELD_VALUES_MAX] = {
	{"Active", "Churned", "Trial", NULL},
	{"gold", "silver", "bronze", NULL},
	{"north", "south", "S\xc3\xa3o Paulo", "New York"},
};
static const int field_value_count[SIM_FIELDS] = {3, 3, 4};

/* ---- the generator ---- */

/* splitmix64: small, fast, the same everywhere. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* A number in [0, n); n > 0. The modulo bias is irrelevant here. */
static uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return rng_next(s) % n;
}

/* FNV-1a of the key text: the org depends on the key, not its position. */
static uint64_t key_hash(const char *key)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * UINT64_C(0x100000001b3);
	return h;
}

/* A lower-case version-4 UUID with the RFC 4122 variant. */
static void make_uuid(uint64_t *s, char out[SIM_UUID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = rng_next(s), b = rng_next(s);
	char d[32];
	size_t o = 0;

	for (int i = 0; i < 16; i++) {
		d[i] = hex[(a >> (i * 4)) & 15];
		d[16 + i] = hex[(b >> (i * 4)) & 15];
	}
	d[12] = '4';                        /* version 4 */
	d[16] = "89ab"[(b >> 62) & 3];      /* RFC 4122 variant */
	for (int i = 0; i < 32; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[o++] = '-';
		out[o++] = d[i];
	}
	out[o] = '\0';
}

int sim_org_build(struct sim_org *org, const char *key, uint64_t seed,
		  size_t n_contacts, int64_t now_ms)
{
	uint64_t s = seed;
	size_t klen = strlen(key);

	memset(org, 0, sizeof(*org));
	if (klen == 0 || klen >= sizeof(org->key) || n_contacts > SIM_CONTACTS_MAX)
		return -1;
	s = rng_next(&s) ^ key_hash(key);
	memcpy(org->key, key, klen + 1);
	make_uuid(&s, org->client_id);
	for (int p = 0; p < SIM_PIPELINES; p++)
		make_uuid(&s, org->pipeline_id[p]);
	for (int i = 0; i < SIM_STAGES; i++)
		make_uuid(&s, org->stage_id[i]);
	org->contacts = calloc(n_contacts ? n_contacts : 1, sizeof(*org->contacts));
	if (org->contacts == NULL)
		return -1;
	org->n = n_contacts;
	for (size_t i = 0; i < n_contacts; i++) {
		struct sim_contact *c = &org->contacts[i];
		int64_t age = (int64_t)rng_below(&s, (uint64_t)SPAN_MS);

		make_uuid(&s, c->id);
		snprintf(c->name, sizeof(c->name), "%s %s",
			 first_names[rng_below(&s, N(first_names))],
			 last_names[rng_below(&s, N(last_names))]);
		if (rng_below(&s, 5))
			snprintf(c->phone, sizeof(c->phone), "+569%08llu",
				 (unsigned long long)rng_below(&s, 100000000));
		if (rng_below(&s, 3))
			snprintf(c->email, sizeof(c->email), "contact%zu.%08llx@example.com",
				 i, (unsigned long long)(rng_next(&s) & 0xffffffffu));
		/* the first contacts show every platform, whatever the seed */
		c->platform = i < N(platforms) ? platforms[i]
					       : platforms[rng_below(&s, N(platforms))];
		c->chat_status = statuses[rng_below(&s, N(statuses))];
		c->created_ms = now_ms - age;
		c->last_message_ms = c->created_ms + (int64_t)rng_below(&s, (uint64_t)age + 1);
		c->updated_ms = c->created_ms + (int64_t)rng_below(&s, (uint64_t)age + 1);
		if (rng_below(&s, 4))
			make_uuid(&s, c->ai_customer_id);
		c->default_stage = rng_below(&s, 3) ? (int)rng_below(&s, SIM_STAGES) : -1;
		c->blocked = rng_below(&s, 20) == 0;
		c->is_chat_read = (int)rng_below(&s, 2);
		c->has_ticket = rng_below(&s, 3) != 0;
		c->ticket_stage = -1;
		if (c->has_ticket) {
			make_uuid(&s, c->ticket_id);
			if (rng_below(&s, 8))
				c->ticket_stage = (int)rng_below(&s, SIM_STAGES);
		}
		for (int f = 0; f < SIM_FIELDS; f++) {
			uint64_t nv = (uint64_t)field_value_count[f];

			c->customer_field[f] = rng_below(&s, 2) ? (int)rng_below(&s, nv) : -1;
			c->ticket_field[f] = c->has_ticket && rng_below(&s, 2)
				? (int)rng_below(&s, nv) : -1;
		}
	}
	return 0;
}

/* --data adversarial: names whose JSON needs escapes, or looks like JSON. */
static const char *const hostile_names[] = {
	"Ana \"La Jefa\" Rojas",
	"C:\\Users\\ana\\",
	"]},{\"id\":\"x\"}]",
	"\",\"updated_at\":\"2099-01-01T00:00:00.000Z",
	"\"last_message_at\":\"2000-01-01T00:00:00.000Z\"}",
	"tab\there\nnew\rline",
	"\x01\x1f control \x7f",
	"\\\"",
	"\\u0022 not an escape",
	"emoji \xf0\x9f\x98\x80 \xf0\x9f\x87\xa8\xf0\x9f\x87\xb1",
	"\xe6\x9d\x8e\xe5\xb0\x8f\xe9\xbe\x8d Zh\xc5\x8du",
	"\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 rtl",
	"e\xcc\x81 combining",
	"\xe2\x80\xa8 separators \xe2\x80\xa9",
	"bad \xff\xfe utf8 \xc3",
	"{[(<,>)]}",
	"null",
	"/* \"\" */ //",
};

void sim_org_adversarial(struct sim_org *org, uint64_t seed, int64_t now_ms)
{
	static const int64_t grains[] = {DAY_MS, 3600000, 1000};
	uint64_t s = seed ^ UINT64_C(0x616476657273);

	s = rng_next(&s) ^ key_hash(org->key);
	for (size_t i = 0; i < org->n; i++) {
		struct sim_contact *c = &org->contacts[i];
		int64_t g = grains[rng_below(&s, N(grains))];
		/* down to the grid now - k * g: monotone, so the order between
		 * a contact's own times survives, and never later than now */
		int64_t *t[3] = {&c->created_ms, &c->updated_ms, &c->last_message_ms};

		for (int k = 0; k < 3; k++)
			*t[k] = now_ms - (now_ms - *t[k] + g - 1) / g * g;
		if (rng_below(&s, 2)) {
			const char *h = hostile_names[rng_below(&s, N(hostile_names))];

			snprintf(c->name, sizeof(c->name), "%s", h);
		}
	}
}

void sim_org_free(struct sim_org *org)
{
	free(org->contacts);
	org->contacts = NULL;
	org->n = 0;
}

/* ---- query parsing, the vendor's way ---- */

enum qparam {
	Q_DAYS, Q_CREATED, Q_UPDATED, Q_LIMIT, Q_OFFSET, Q_STAGE, Q_PIPELINE,
	Q_CFKEY, Q_CFVALUE, Q_ENTITY, Q_N
};
static const char *const qnames[Q_N] = {
	"days", "created_after", "updated_after", "limit", "offset", "stage_id",
	"pipeline_id", "custom_field_key", "custom_field_value", "entity_type",
};
#define QNAME_MAX 32 /* longer decoded names cannot be known ones */

struct params {
	int set[Q_N];
	char val[Q_N][SIM_VALUE_MAX + 1];
	size_t len[Q_N];
};

enum decode_result { DEC_OK, DEC_MALFORMED, DEC_TOO_LONG };

static int hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decodes n bytes of s ('+' is a space) into out (cap bytes, NUL
 * included). Always scans the whole input, so a bad escape is found even
 * when the output overflowed. DEC_MALFORMED wins over DEC_TOO_LONG.
 */
static enum decode_result urldecode(const char *s, size_t n, char *out, size_t cap,
				    size_t *out_len)
{
	size_t o = 0;
	int overflow = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			if (n - i < 3 || hexv(s[i + 1]) < 0 || hexv(s[i + 2]) < 0)
				return DEC_MALFORMED;
			c = hexv(s[i + 1]) * 16 + hexv(s[i + 2]);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c == 0)
			return DEC_MALFORMED;
		if (o + 1 < cap)
			out[o++] = (char)c;
		else
			overflow = 1;
	}
	out[o] = '\0';
	*out_len = o;
	return overflow ? DEC_TOO_LONG : DEC_OK;
}

static int parse_params(const char *raw, struct params *p, char *why, size_t wn)
{
	const char *seg = raw ? raw : "";

	memset(p->set, 0, sizeof(p->set));
	while (*seg) {
		size_t n = strcspn(seg, "&");
		const char *eq = memchr(seg, '=', n);
		size_t nlen = eq ? (size_t)(eq - seg) : n;
		const char *v = eq ? eq + 1 : seg + n;
		size_t vlen = eq ? n - nlen - 1 : 0;
		char name[QNAME_MAX + 1], scratch[16];
		size_t name_len, len;
		enum decode_result r = urldecode(seg, nlen, name, sizeof(name), &name_len);
		int q = Q_N;

		if (r == DEC_MALFORMED) {
			snprintf(why, wn, "malformed percent-encoding in a query parameter name");
			return -1;
		}
		if (r == DEC_OK)
			for (q = 0; q < Q_N && strcmp(qnames[q], name) != 0; q++)
				;
		if (q == Q_N) { /* unknown: ignored, but its value must decode */
			if (urldecode(v, vlen, scratch, sizeof(scratch), &len) ==
			    DEC_MALFORMED) {
				snprintf(why, wn, "malformed percent-encoding in a query parameter value");
				return -1;
			}
		} else {
			if (p->set[q]) {
				snprintf(why, wn, "%s must not be repeated", qnames[q]);
				return -1;
			}
			r = urldecode(v, vlen, p->val[q], sizeof(p->val[q]), &p->len[q]);
			if (r == DEC_MALFORMED) {
				snprintf(why, wn, "%s has malformed percent-encoding", qnames[q]);
				return -1;
			}
			if (r == DEC_TOO_LONG) {
				snprintf(why, wn, "%s must be at most %d bytes", qnames[q],
					 SIM_VALUE_MAX);
				return -1;
			}
			if (p->len[q] == 0) {
				snprintf(why, wn, "%s should not be empty", qnames[q]);
				return -1;
			}
			p->set[q] = 1;
		}
		seg += n;
		if (*seg == '&')
			seg++;
	}
	return 0;
}

/*
 * days: decimal digits with an optional fraction, 1 <= days <= 365. Sets
 * *ms to floor(days * 86400000), exact: the fraction's first 9 digits
 * decide it (later digits add less than 0.0001 ms, never crossing a whole
 * millisecond, since 9-digit multiples of 0.0864 ms sit >= 0.0016 ms away).
 */
static int parse_days(const char *s, int64_t *ms)
{
	int64_t whole = 0, frac = 0, scale = 1;
	int digits = 0, frac_digits = 0, rest_nonzero = 0;

	for (; *s >= '0' && *s <= '9'; s++, digits++)
		if (whole <= DAYS_MAX)
			whole = whole * 10 + (*s - '0');
	if (digits == 0)
		return -1;
	if (*s == '.') {
		s++;
		for (; *s >= '0' && *s <= '9'; s++, frac_digits++) {
			if (frac_digits < 9) {
				frac = frac * 10 + (*s - '0');
				scale *= 10;
			} else if (*s != '0') {
				rest_nonzero = 1;
			}
		}
		if (frac_digits == 0)
			return -1;
	}
	if (*s != '\0' || whole < 1 || whole > DAYS_MAX ||
	    (whole == DAYS_MAX && (frac != 0 || rest_nonzero)))
		return -1;
	*ms = whole * DAY_MS + frac * DAY_MS / scale;
	return 0;
}

/*
 * An integer by value: digits, optionally '.' and zeros ("10.0" is 10,
 * "10.5" is not). Returns 0 with *v <= max, or -1.
 */
static int parse_integer(const char *s, int64_t max, int64_t *v)
{
	int64_t x = 0;
	int digits = 0;

	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (x <= max)
			x = x * 10 + (*s - '0');
	}
	if (digits == 0)
		return -1;
	if (*s == '.') {
		s++;
		if (*s != '0')
			return -1;
		while (*s == '0')
			s++;
	}
	if (*s != '\0' || x > max)
		return -1;
	*v = x;
	return 0;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* n decimal digits at s, or -1. */
static int digits_at(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + s[i] - '0';
	}
	return v;
}

static int is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int sim_parse_time(const char *s, size_t n, int64_t *ms)
{
	static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, mo, d, hh = 0, mi = 0, ss = 0, frac = 0;
	int64_t off = 0;
	size_t i;

	if (n < 10 || s[4] != '-' || s[7] != '-' || (y = digits_at(s, 4)) < 0 ||
	    (mo = digits_at(s + 5, 2)) < 1 || mo > 12 ||
	    (d = digits_at(s + 8, 2)) < 1 || d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !is_leap(y)))
		return -1;
	if (n > 10) {
		if ((s[10] != 'T' && s[10] != 't') || n < 16 || s[13] != ':' ||
		    (hh = digits_at(s + 11, 2)) < 0 || hh > 23 ||
		    (mi = digits_at(s + 14, 2)) < 0 || mi > 59)
			return -1;
		i = 16;
		if (i < n && s[i] == ':') {
			if (n < 19 || (ss = digits_at(s + 17, 2)) < 0 || ss > 59)
				return -1;
			i = 19;
			if (i < n && s[i] == '.') {
				int k = 0;

				for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, k++)
					if (k < 3)
						frac = frac * 10 + s[i] - '0';
				if (k == 0)
					return -1;
				for (; k < 3; k++)
					frac *= 10;
			}
		}
		if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
			i++;
		} else if (i < n && (s[i] == '+' || s[i] == '-')) {
			int sign = s[i] == '-' ? -1 : 1, oh, om;

			i++;
			if (n - i < 4 || (oh = digits_at(s + i, 2)) < 0 || oh > 23)
				return -1;
			i += 2;
			if (s[i] == ':')
				i++;
			if (n - i < 2 || (om = digits_at(s + i, 2)) < 0 || om > 59)
				return -1;
			i += 2;
			off = sign * ((int64_t)oh * 3600 + om * 60);
		} else {
			return -1; /* a time without a zone */
		}
		if (i != n)
			return -1;
	}
	*ms = days_from_civil(y, mo, d) * DAY_MS +
	      ((int64_t)hh * 3600 + mi * 60 + ss - off) * 1000 + frac;
	return 0;
}

/* The contract's UUID pattern, case-insensitive. */
static int is_uuid(const char *s, size_t n)
{
	if (n != SIM_UUID_LEN)
		return 0;
	if (strcmp(s, "00000000-0000-0000-0000-000000000000") == 0 ||
	    strcasecmp(s, "ffffffff-ffff-ffff-ffff-ffffffffffff") == 0)
		return 1;
	for (int i = 0; i < SIM_UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (hexv(s[i]) < 0) {
			return 0;
		}
	}
	return s[14] >= '1' && s[14] <= '8' && strchr("89abAB", s[19]) != NULL;
}

/* ---- filtering, ordering, output ---- */

enum entity { ENT_ANY, ENT_TICKET, ENT_CUSTOMER };
enum order { ORD_LAST_MESSAGE_DESC, ORD_CREATED_ASC, ORD_UPDATED_ASC };

struct filter {
	int has_days, has_created, has_updated, has_limit;
	int64_t since_ms, created_ms, updated_ms; /* since: last_message >= it */
	int64_t limit, offset;
	const char *stage, *pipeline, *cf_key, *cf_value; /* NULL: no filter */
	enum entity entity;
	enum order order;
};

static int field_match(const int *fields, const char *key, const char *value)
{
	for (int f = 0; f < SIM_FIELDS; f++)
		if (fields[f] >= 0 && strcmp(field_keys[f], key) == 0 &&
		    strcmp(field_values[f][fields[f]], value) == 0)
			return 1;
	return 0;
}

static int matches(const struct sim_org *org, const struct sim_contact *c,
		   const struct filter *f)
{
	if (f->has_days && c->last_message_ms < f->since_ms)
		return 0;
	if (f->has_created && c->created_ms <= f->created_ms)
		return 0;
	if (f->has_updated && c->updated_ms <= f->updated_ms)
		return 0;
	if (f->stage && (c->ticket_stage < 0 ||
			 strcasecmp(org->stage_id[c->ticket_stage], f->stage) != 0))
		return 0;
	if (f->pipeline &&
	    (c->ticket_stage < 0 ||
	     strcasecmp(org->pipeline_id[c->ticket_stage / SIM_STAGES_PER_PIPELINE],
			f->pipeline) != 0))
		return 0;
	if (f->cf_key) {
		int t = f->entity != ENT_CUSTOMER &&
			field_match(c->ticket_field, f->cf_key, f->cf_value);
		int u = f->entity != ENT_TICKET &&
			field_match(c->customer_field, f->cf_key, f->cf_value);

		if (!t && !u)
			return 0;
	}
	return 1;
}

static int64_t sort_key(const struct sim_contact *c, enum order o)
{
	switch (o) {
	case ORD_CREATED_ASC:
		return c->created_ms;
	case ORD_UPDATED_ASC:
		return c->updated_ms;
	case ORD_LAST_MESSAGE_DESC:
		break;
	}
	return -c->last_message_ms;
}

static enum order cmp_order; /* qsort has no context argument in C11 */

static int cmp_contacts(const void *a, const void *b)
{
	const struct sim_contact *x = *(const struct sim_contact *const *)a;
	const struct sim_contact *y = *(const struct sim_contact *const *)b;
	int64_t kx = sort_key(x, cmp_order), ky = sort_key(y, cmp_order);

	if (kx != ky)
		return kx < ky ? -1 : 1;
	return strcmp(x->id, y->id);
}

void sim_json_string(struct evbuffer *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0; /* run: bytes [i - run, i) to copy as they are */

	while (i < n) {
		unsigned c = u[i];
		size_t len = 0;

		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			i++, run++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4;
		if (len && n - i >= len) {
			size_t k;
			unsigned c1 = u[i + 1];

			for (k = 1; k < len && (u[i + k] & 0xc0) == 0x80; k++)
				;
			/* no overlong forms, surrogates or code points > U+10FFFF */
			if (k == len && !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 > 0x9f) &&
			    !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 > 0x8f)) {
				i += len, run += len;
				continue;
			}
		}
		evbuffer_add(out, s + i - run, run);
		run = 0;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};

			evbuffer_add(out, e, 2);
		} else if (c < 0x20) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

			evbuffer_add(out, e, 6);
		} else {
			evbuffer_add(out, "\\ufffd", 6);
		}
		i++;
	}
	evbuffer_add(out, s + i - run, run);
}

static void put_name(struct evbuffer *out, const char *name)
{
	evbuffer_add(out, "\"", 1);
	evbuffer_add(out, name, strlen(name));
	evbuffer_add(out, "\":", 2);
}

static void put_string(struct evbuffer *out, const char *name, const char *v)
{
	put_name(out, name);
	if (v == NULL || v[0] == '\0') {
		evbuffer_add(out, "null", 4);
		return;
	}
	evbuffer_add(out, "\"", 1);
	sim_json_string(out, v, strlen(v));
	evbuffer_add(out, "\"", 1);
}

/* `"name":"YYYY-MM-DDTHH:MM:SS.mmmZ"`, proleptic Gregorian, UTC. */
static void put_time(struct evbuffer *out, const char *name, int64_t ms)
{
	int64_t z = (ms >= 0 ? ms : ms - (DAY_MS - 1)) / DAY_MS, tod = ms - z * DAY_MS;
	int64_t era, y;
	unsigned doe, yoe, doy, mp, d, m;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = (int64_t)yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	put_name(out, name);
	evbuffer_add_printf(out, "\"%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ\"",
			    (long long)y, m, d, (long long)(tod / 3600000),
			    (long long)(tod / 60000 % 60), (long long)(tod / 1000 % 60),
			    (long long)(tod % 1000));
}

static void put_bool(struct evbuffer *out, const char *name, int v)
{
	put_name(out, name);
	evbuffer_add(out, v ? "true" : "false", v ? 4 : 5);
}

/* One contact, its fields in the contract's order. */
static void put_contact(struct evbuffer *out, const struct sim_org *org,
			const struct sim_contact *c)
{
	evbuffer_add(out, "{", 1);
	put_string(out, "id", c->id);
	evbuffer_add(out, ",", 1);
	put_string(out, "name", c->name);
	evbuffer_add(out, ",", 1);
	put_string(out, "phone", c->phone);
	evbuffer_add(out, ",", 1);
	put_string(out, "email", c->email);
	evbuffer_add(out, ",", 1);
	put_string(out, "platform", c->platform);
	evbuffer_add(out, ",", 1);
	put_time(out, "last_message_at", c->last_message_ms);
	evbuffer_add(out, ",", 1);
	put_string(out, "chat_status", c->chat_status);
	evbuffer_add(out, ",", 1);
	put_time(out, "created_at", c->created_ms);
	evbuffer_add(out, ",", 1);
	put_time(out, "updated_at", c->updated_ms);
	evbuffer_add(out, ",", 1);
	put_string(out, "client_id", org->client_id);
	evbuffer_add(out, ",", 1);
	put_string(out, "ai_customer_id", c->ai_customer_id);
	evbuffer_add(out, ",", 1);
	put_string(out, "default_stage_id",
		   c->default_stage >= 0 ? org->stage_id[c->default_stage] : NULL);
	evbuffer_add(out, ",", 1);
	put_bool(out, "blocked", c->blocked);
	evbuffer_add(out, ",", 1);
	put_bool(out, "is_chat_read", c->is_chat_read);
	evbuffer_add(out, ",", 1);
	put_name(out, "active_ticket_v2");
	if (!c->has_ticket) {
		evbuffer_add(out, "null}", 5);
		return;
	}
	evbuffer_add(out, "{", 1);
	put_string(out, "id", c->ticket_id);
	evbuffer_add(out, ",", 1);
	put_string(out, "current_stage_id",
		   c->ticket_stage >= 0 ? org->stage_id[c->ticket_stage] : NULL);
	evbuffer_add(out, "}}", 2);
}

/* Validates the parameters into *f. Returns 0, or -1 with `why` written. */
static int make_filter(const struct params *p, int64_t now_ms, struct filter *f,
		       char *why, size_t wn)
{
	int64_t ms;

	memset(f, 0, sizeof(*f));
	if (p->set[Q_DAYS]) {
		if (parse_days(p->val[Q_DAYS], &ms) != 0) {
			snprintf(why, wn, "days must be a number between 1 and %d", DAYS_MAX);
			return -1;
		}
		f->has_days = 1;
		f->since_ms = now_ms - ms;
	}
	if (p->set[Q_CREATED]) {
		if (sim_parse_time(p->val[Q_CREATED], p->len[Q_CREATED], &f->created_ms) != 0) {
			snprintf(why, wn, "created_after must be a valid ISO 8601 date string");
			return -1;
		}
		f->has_created = 1;
	}
	if (p->set[Q_UPDATED]) {
		if (sim_parse_time(p->val[Q_UPDATED], p->len[Q_UPDATED], &f->updated_ms) != 0) {
			snprintf(why, wn, "updated_after must be a valid ISO 8601 date string");
			return -1;
		}
		f->has_updated = 1;
	}
	if (!f->has_days && !f->has_created && !f->has_updated) {
		snprintf(why, wn,
			 "at least one of days, created_after or updated_after is required");
		return -1;
	}
	if (p->set[Q_LIMIT]) {
		if (parse_integer(p->val[Q_LIMIT], LIMIT_MAX, &f->limit) != 0 || f->limit < 1) {
			snprintf(why, wn, "limit must be an integer between 1 and %d", LIMIT_MAX);
			return -1;
		}
		f->has_limit = 1;
	}
	if (p->set[Q_OFFSET] &&
	    parse_integer(p->val[Q_OFFSET], OFFSET_MAX, &f->offset) != 0) {
		snprintf(why, wn, "offset must be an integer between 0 and %lld",
			 (long long)OFFSET_MAX);
		return -1;
	}
	if (p->set[Q_STAGE]) {
		if (!is_uuid(p->val[Q_STAGE], p->len[Q_STAGE])) {
			snprintf(why, wn, "stage_id must be a UUID");
			return -1;
		}
		f->stage = p->val[Q_STAGE];
	}
	if (p->set[Q_PIPELINE]) {
		if (!is_uuid(p->val[Q_PIPELINE], p->len[Q_PIPELINE])) {
			snprintf(why, wn, "pipeline_id must be a UUID");
			return -1;
		}
		f->pipeline = p->val[Q_PIPELINE];
	}
	if (p->set[Q_CFKEY] != p->set[Q_CFVALUE]) {
		snprintf(why, wn,
			 "custom_field_key and custom_field_value must be provided together");
		return -1;
	}
	if (p->set[Q_CFKEY]) {
		f->cf_key = p->val[Q_CFKEY];
		f->cf_value = p->val[Q_CFVALUE];
	}
	if (p->set[Q_ENTITY]) {
		if (strcmp(p->val[Q_ENTITY], "ticket") == 0) {
			f->entity = ENT_TICKET;
		} else if (strcmp(p->val[Q_ENTITY], "customer") == 0) {
			f->entity = ENT_CUSTOMER;
		} else {
			snprintf(why, wn, "entity_type must be one of: ticket, customer");
			return -1;
		}
	}
	f->order = f->has_updated ? ORD_UPDATED_ASC
		 : f->has_created ? ORD_CREATED_ASC : ORD_LAST_MESSAGE_DESC;
	return 0;
}

int sim_query(const struct sim_org *org, const char *raw, int64_t now_ms,
	      struct evbuffer *out, char *why, size_t why_size)
{
	static struct params p; /* single-threaded; 10 KiB off the stack */
	struct filter f;
	const struct sim_contact **list;
	size_t n = 0, first, last;

	if (parse_params(raw, &p, why, why_size) != 0 ||
	    make_filter(&p, now_ms, &f, why, why_size) != 0)
		return 400;
	list = malloc((org->n ? org->n : 1) * sizeof(*list));
	if (list == NULL)
		abort(); /* at most SIM_CONTACTS_MAX pointers */
	for (size_t i = 0; i < org->n; i++)
		if (matches(org, &org->contacts[i], &f))
			list[n++] = &org->contacts[i];
	cmp_order = f.order;
	qsort(list, n, sizeof(*list), cmp_contacts);
	first = (uint64_t)f.offset < n ? (size_t)f.offset : n;
	last = f.has_limit && (size_t)f.limit < n - first ? first + (size_t)f.limit : n;
	evbuffer_add(out, "[", 1);
	for (size_t i = first; i < last; i++) {
		if (i > first)
			evbuffer_add(out, ",", 1);
		put_contact(out, org, list[i]);
	}
	evbuffer_add(out, "]", 1);
	free(list);
	return 200;
}
