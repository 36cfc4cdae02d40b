/*
 * sim_data: see sim_data.h. Written independently of policy/query.c on
 * purpose: the simulator plays the vendor, so a normalisation bug in the
 * gateway shows up as a difference between the two.
 */
#include "tests/sim/sim_data.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const platforms[] = {
	"whatsapp", "web-whatsapp", "instagram", "webchat", "sms",
	"messenger", "tiktok", "voice", "playground",
};
static const char *const statuses[] = {"UNATTENDED", "ATTENDED", "CLOSED"};
static const char *const first_names[] = {
	"Ana", "Bruno", "Carla", "Diego", "Elena", "Felipe", "Gabriela", "Hugo",
	"Isabel", "Javier", "Karina", "Lucas", "Mariana", "Nicolas", "Olivia", "Pablo",
};
static const char *const last_names[] = {
	"Rojas", "Silva", "Munoz", "Perez", "Gonzalez", "Soto", "Diaz", "Lopez",
};
static const char *const field_keys[SIM_FIELDS] = {"status", "tier", "region"};
static const char *const field_values[SIM_FIELDS][4] = {
	{"Active", "Churned", "Trial", NULL},
	{"gold", "silver", "bronze", NULL},
	{"north", "south", "S\xc3\xa3o Paulo", "New York"},
};
static const int field_value_count[SIM_FIELDS] = {3, 3, 4};

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define DAY_MS INT64_C(86400000)

/* splitmix64: small, fast, the same everywhere */
static uint64_t next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return next(s) % n;
}

static void make_uuid(uint64_t *s, char out[37])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = next(s), b = next(s);
	char digits[32];

	for (int i = 0; i < 16; i++) {
		digits[i] = hex[(a >> (i * 4)) & 15];
		digits[16 + i] = hex[(b >> (i * 4)) & 15];
	}
	digits[12] = '4';                          /* version 4 */
	digits[16] = "89ab"[(b >> 62) & 3];        /* RFC 4122 variant */
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", digits, digits + 8,
		 digits + 12, digits + 16, digits + 20);
}

int sim_org_build(struct sim_org *org, const char *key, unsigned key_index,
		  uint64_t seed, size_t n_contacts, int64_t now_ms)
{
	uint64_t s = seed * 1000003u + key_index * 7919u + 1;

	memset(org, 0, sizeof(*org));
	snprintf(org->key, sizeof(org->key), "%s", key);
	make_uuid(&s, org->client_id);
	for (int p = 0; p < SIM_PIPELINES; p++)
		make_uuid(&s, org->pipeline_id[p]);
	for (int i = 0; i < SIM_PIPELINES * SIM_STAGES_PER_PIPELINE; i++)
		make_uuid(&s, org->stage_id[i]);
	org->contacts = calloc(n_contacts ? n_contacts : 1, sizeof(*org->contacts));
	if (org->contacts == NULL)
		return -1;
	org->n = n_contacts;
	for (size_t i = 0; i < n_contacts; i++) {
		struct sim_contact *c = &org->contacts[i];
		int64_t age = (int64_t)below(&s, (uint64_t)(400 * DAY_MS));

		make_uuid(&s, c->id);
		snprintf(c->name, sizeof(c->name), "%s %s",
			 first_names[below(&s, N(first_names))],
			 last_names[below(&s, N(last_names))]);
		if (below(&s, 5))
			snprintf(c->phone, sizeof(c->phone), "+569%08llu",
				 (unsigned long long)below(&s, 100000000));
		if (below(&s, 3))
			snprintf(c->email, sizeof(c->email), "contact%zu.%u@example.com",
				 i, key_index);
		c->platform = platforms[below(&s, N(platforms))];
		c->chat_status = statuses[below(&s, N(statuses))];
		/* ms offsets keep timestamps distinct within an org */
		c->created_ms = now_ms - age + (int64_t)(i % 1000);
		c->updated_ms = c->created_ms + (int64_t)below(&s, (uint64_t)(age + 1)) / 2;
		c->last_message_ms = c->created_ms + (int64_t)below(&s, (uint64_t)(age + 1));
		if (c->last_message_ms > now_ms)
			c->last_message_ms = now_ms - (int64_t)(i % 997);
		if (c->updated_ms > now_ms)
			c->updated_ms = now_ms - (int64_t)(i % 991);
		if (below(&s, 4))
			make_uuid(&s, c->ai_customer_id);
		c->default_stage = below(&s, 3) ? (int)below(&s, 12) : -1;
		c->blocked = below(&s, 20) == 0;
		c->is_chat_read = (int)below(&s, 2);
		c->has_ticket = below(&s, 3) != 0;
		if (c->has_ticket) {
			make_uuid(&s, c->ticket_id);
			c->ticket_stage = below(&s, 8) ? (int)below(&s, 12) : -1;
		} else {
			c->ticket_stage = -1;
		}
		for (int f = 0; f < SIM_FIELDS; f++) {
			c->customer_field[f] =
				below(&s, 2) ? (int)below(&s, (uint64_t)field_value_count[f]) : -1;
			c->ticket_field[f] = c->has_ticket && below(&s, 2)
				? (int)below(&s, (uint64_t)field_value_count[f]) : -1;
		}
	}
	return 0;
}

void sim_org_free(struct sim_org *org)
{
	free(org->contacts);
	org->contacts = NULL;
}

/* ---- query parsing, the vendor's way ---- */

enum { Q_DAYS, Q_CREATED, Q_UPDATED, Q_LIMIT, Q_OFFSET, Q_STAGE, Q_PIPELINE,
       Q_CFKEY, Q_CFVALUE, Q_ENTITY, Q_N };
static const char *const qnames[Q_N] = {
	"days", "created_after", "updated_after", "limit", "offset", "stage_id",
	"pipeline_id", "custom_field_key", "custom_field_value", "entity_type",
};

#define VAL_MAX 1100

struct params {
	int set[Q_N];
	char val[Q_N][VAL_MAX];
	size_t len[Q_N];
};

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

/* Decodes %XX and '+'; refuses bad escapes, NUL and overlong values. */
static int urldecode(const char *s, size_t n, char *out, size_t *out_len)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			if (n - i < 3 || hexv(s[i + 1]) < 0 || hexv(s[i + 2]) < 0)
				return -1;
			c = hexv(s[i + 1]) * 16 + hexv(s[i + 2]);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c == 0 || o + 1 >= VAL_MAX)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	*out_len = o;
	return 0;
}

static int parse_params(const char *raw, struct params *p, char *why, size_t wn)
{
	const char *seg = raw ? raw : "";

	memset(p->set, 0, sizeof(p->set));
	while (*seg) {
		size_t n = strcspn(seg, "&");
		const char *eq = memchr(seg, '=', n);
		size_t nlen = eq ? (size_t)(eq - seg) : n;
		char name[VAL_MAX];
		size_t name_len;
		int q;

		if (n == 0) {
			seg++;
			continue;
		}
		if (urldecode(seg, nlen, name, &name_len) != 0) {
			snprintf(why, wn, "malformed query parameter name");
			return -1;
		}
		for (q = 0; q < Q_N && strcmp(qnames[q], name) != 0; q++)
			;
		if (q < Q_N) {
			if (p->set[q]) {
				snprintf(why, wn, "%s must not be repeated", qnames[q]);
				return -1;
			}
			if (urldecode(eq ? eq + 1 : seg + n, eq ? n - nlen - 1 : 0,
				      p->val[q], &p->len[q]) != 0) {
				snprintf(why, wn, "%s is malformed", qnames[q]);
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

/* A plain decimal number; *milli = value * 1000 (truncated), capped. */
static int parse_number(const char *s, int64_t *milli, int integral)
{
	int64_t v = 0, frac = 0;
	int fd = 0, digits = 0;

	while (*s >= '0' && *s <= '9') {
		if (v < INT64_C(1000000000000))
			v = v * 10 + (*s - '0');
		s++, digits++;
	}
	if (digits == 0)
		return -1;
	if (*s == '.') {
		s++;
		if (!(*s >= '0' && *s <= '9'))
			return -1;
		while (*s >= '0' && *s <= '9') {
			if (*s != '0' && integral)
				return -1;
			if (fd < 3)
				frac = frac * 10 + (*s - '0'), fd++;
			s++;
		}
	}
	if (*s)
		return -1;
	while (fd < 3)
		frac *= 10, fd++;
	*milli = v * 1000 + frac;
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

static int num(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + s[i] - '0';
	}
	return v;
}

int sim_parse_time(const char *s, size_t n, int64_t *ms)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, mo, d, hh = 0, mi = 0, ss = 0, frac = 0;
	int64_t off = 0;
	size_t i = 10;

	if (n < 10 || s[4] != '-' || s[7] != '-' || (y = num(s, 4)) < 0 ||
	    (mo = num(s + 5, 2)) < 1 || mo > 12 || (d = num(s + 8, 2)) < 1 ||
	    d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100) || y % 400 == 0)))
		return -1;
	if (n > 10) {
		if ((s[10] != 'T' && s[10] != 't') || n < 16 || s[13] != ':' ||
		    (hh = num(s + 11, 2)) < 0 || hh > 23 || (mi = num(s + 14, 2)) < 0 ||
		    mi > 59)
			return -1;
		i = 16;
		if (i < n && s[i] == ':') {
			if (n < 19 || (ss = num(s + 17, 2)) < 0 || ss > 59)
				return -1;
			i = 19;
			if (i < n && s[i] == '.') {
				int k = 0;

				for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, k++)
					if (k < 3)
						frac = frac * 10 + s[i] - '0';
				if (k == 0 || k > 9)
					return -1;
				for (; k < 3; k++)
					frac *= 10;
			}
		}
		if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
			i++;
		} else if (i < n && (s[i] == '+' || s[i] == '-')) {
			int sign = s[i] == '-' ? -1 : 1, oh, om;

			if (n - i < 5 || (oh = num(s + i + 1, 2)) < 0 || oh > 23)
				return -1;
			i += 3;
			if (s[i] == ':')
				i++;
			if (n - i < 2 || (om = num(s + i, 2)) < 0 || om > 59)
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

static int is_uuid(const char *s, size_t n)
{
	if (n != 36)
		return 0;
	if (strcmp(s, "00000000-0000-0000-0000-000000000000") == 0 ||
	    strcasecmp(s, "ffffffff-ffff-ffff-ffff-ffffffffffff") == 0)
		return 1;
	for (int i = 0; i < 36; i++) {
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

struct filter {
	int64_t since_ms, created_ms, updated_ms;
	int has_days, has_created, has_updated;
	int64_t limit, offset;
	int has_limit;
	const char *stage, *pipeline, *cf_key, *cf_value;
	int entity; /* 0 any, 1 ticket, 2 customer */
	int order;  /* 0 last_message desc, 1 created asc, 2 updated asc */
};

static int field_match(const int *fields, const char *key, const char *value)
{
	for (int f = 0; f < SIM_FIELDS; f++)
		if (strcmp(field_keys[f], key) == 0 && fields[f] >= 0 &&
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
		int t = f->entity != 2 && field_match(c->ticket_field, f->cf_key, f->cf_value);
		int u = f->entity != 1 && field_match(c->customer_field, f->cf_key, f->cf_value);

		if (!t && !u)
			return 0;
	}
	return 1;
}

static int order_mode;

static int cmp_contacts(const void *a, const void *b)
{
	const struct sim_contact *x = *(const struct sim_contact *const *)a;
	const struct sim_contact *y = *(const struct sim_contact *const *)b;
	int64_t kx, ky;

	switch (order_mode) {
	case 1: kx = x->created_ms, ky = y->created_ms; break;
	case 2: kx = x->updated_ms, ky = y->updated_ms; break;
	default: kx = -x->last_message_ms, ky = -y->last_message_ms; break;
	}
	if (kx != ky)
		return kx < ky ? -1 : 1;
	return strcmp(x->id, y->id);
}

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
	evbuffer_add_printf(out, "\"%s\":\"%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ\"",
			    name, (long long)y, m, d, (long long)(tod / 3600000),
			    (long long)(tod / 60000 % 60), (long long)(tod / 1000 % 60),
			    (long long)(tod % 1000));
}

static void put_str_or_null(struct evbuffer *out, const char *name, const char *v)
{
	if (v[0])
		evbuffer_add_printf(out, "\"%s\":\"%s\"", name, v);
	else
		evbuffer_add_printf(out, "\"%s\":null", name);
}

static void put_contact(struct evbuffer *out, const struct sim_org *org,
			const struct sim_contact *c)
{
	evbuffer_add_printf(out, "{\"id\":\"%s\",\"name\":\"%s\",", c->id, c->name);
	put_str_or_null(out, "phone", c->phone);
	evbuffer_add(out, ",", 1);
	put_str_or_null(out, "email", c->email);
	evbuffer_add_printf(out, ",\"platform\":\"%s\",", c->platform);
	put_time(out, "last_message_at", c->last_message_ms);
	evbuffer_add_printf(out, ",\"chat_status\":\"%s\",", c->chat_status);
	put_time(out, "created_at", c->created_ms);
	evbuffer_add(out, ",", 1);
	put_time(out, "updated_at", c->updated_ms);
	evbuffer_add_printf(out, ",\"client_id\":\"%s\",", org->client_id);
	put_str_or_null(out, "ai_customer_id", c->ai_customer_id);
	evbuffer_add(out, ",", 1);
	put_str_or_null(out, "default_stage_id",
			c->default_stage >= 0 ? org->stage_id[c->default_stage] : "");
	evbuffer_add_printf(out, ",\"blocked\":%s,\"is_chat_read\":%s,\"active_ticket_v2\":",
			    c->blocked ? "true" : "false",
			    c->is_chat_read ? "true" : "false");
	if (!c->has_ticket) {
		evbuffer_add(out, "null}", 5);
		return;
	}
	evbuffer_add_printf(out, "{\"id\":\"%s\",", c->ticket_id);
	put_str_or_null(out, "current_stage_id",
			c->ticket_stage >= 0 ? org->stage_id[c->ticket_stage] : "");
	evbuffer_add(out, "}}", 2);
}

int sim_query(const struct sim_org *org, const char *raw, int64_t now_ms,
	      struct evbuffer *out, char *why, size_t why_size)
{
	static struct params p; /* single-threaded; big buffers off the stack */
	struct filter f;
	const struct sim_contact **list;
	int64_t milli;
	size_t n = 0, first, last;

	if (parse_params(raw, &p, why, why_size) != 0)
		return 400;
	memset(&f, 0, sizeof(f));
	if (p.set[Q_DAYS]) {
		if (parse_number(p.val[Q_DAYS], &milli, 0) != 0 || milli < 1000 ||
		    milli > 365000) {
			snprintf(why, why_size, "days must be a number between 1 and 365");
			return 400;
		}
		f.has_days = 1;
		f.since_ms = now_ms - milli * (DAY_MS / 1000);
	}
	if (p.set[Q_CREATED]) {
		if (sim_parse_time(p.val[Q_CREATED], p.len[Q_CREATED], &f.created_ms) != 0) {
			snprintf(why, why_size, "created_after must be a valid ISO 8601 date string");
			return 400;
		}
		f.has_created = 1;
	}
	if (p.set[Q_UPDATED]) {
		if (sim_parse_time(p.val[Q_UPDATED], p.len[Q_UPDATED], &f.updated_ms) != 0) {
			snprintf(why, why_size, "updated_after must be a valid ISO 8601 date string");
			return 400;
		}
		f.has_updated = 1;
	}
	if (!f.has_days && !f.has_created && !f.has_updated) {
		snprintf(why, why_size,
			 "At least one of days, created_after or updated_after is required");
		return 400;
	}
	if (p.set[Q_LIMIT]) {
		if (parse_number(p.val[Q_LIMIT], &milli, 1) != 0 || milli < 1000 ||
		    milli > 1000000) {
			snprintf(why, why_size, "limit must be an integer between 1 and 1000");
			return 400;
		}
		f.has_limit = 1;
		f.limit = milli / 1000;
	}
	if (p.set[Q_OFFSET]) {
		if (parse_number(p.val[Q_OFFSET], &milli, 1) != 0 ||
		    milli > INT64_C(2147483647000)) {
			snprintf(why, why_size, "offset must be an integer not less than 0");
			return 400;
		}
		f.offset = milli / 1000;
	}
	if (p.set[Q_STAGE]) {
		if (!is_uuid(p.val[Q_STAGE], p.len[Q_STAGE])) {
			snprintf(why, why_size, "stage_id must be a UUID");
			return 400;
		}
		f.stage = p.val[Q_STAGE];
	}
	if (p.set[Q_PIPELINE]) {
		if (!is_uuid(p.val[Q_PIPELINE], p.len[Q_PIPELINE])) {
			snprintf(why, why_size, "pipeline_id must be a UUID");
			return 400;
		}
		f.pipeline = p.val[Q_PIPELINE];
	}
	if (p.set[Q_CFKEY] != p.set[Q_CFVALUE]) {
		snprintf(why, why_size,
			 "custom_field_key and custom_field_value must be provided together");
		return 400;
	}
	if (p.set[Q_CFKEY]) {
		f.cf_key = p.val[Q_CFKEY];
		f.cf_value = p.val[Q_CFVALUE];
	}
	if (p.set[Q_ENTITY]) {
		if (strcmp(p.val[Q_ENTITY], "ticket") == 0)
			f.entity = 1;
		else if (strcmp(p.val[Q_ENTITY], "customer") == 0)
			f.entity = 2;
		else {
			snprintf(why, why_size, "entity_type must be one of: ticket, customer");
			return 400;
		}
	}
	f.order = f.has_updated ? 2 : f.has_created ? 1 : 0;

	list = malloc((org->n ? org->n : 1) * sizeof(*list));
	if (list == NULL) {
		snprintf(why, why_size, "out of memory");
		return 500;
	}
	for (size_t i = 0; i < org->n; i++)
		if (matches(org, &org->contacts[i], &f))
			list[n++] = &org->contacts[i];
	order_mode = f.order;
	qsort(list, n, sizeof(*list), cmp_contacts);
	first = (size_t)f.offset < n ? (size_t)f.offset : n;
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
