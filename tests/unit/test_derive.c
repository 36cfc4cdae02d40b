/* Unit tests for policy/derive: each rule, each boundary, each refusal, the
 * families, and a randomised soundness check against a model of the vendor
 * (derive says ok => the bytes are the model's answer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/derive.h"

#define NOW INT64_C(1767225600000) /* 2026-01-01T00:00:00.000Z */
#define DAY INT64_C(86400000)
#define BODY_CAP (1 << 20)

/* ---- helpers ---- */

static struct query *mkq(const char *raw)
{
	static struct query pool[16];
	static unsigned next;
	struct query *q = &pool[next++ % 16];
	struct query_error err;

	if (query_normalise(raw, strlen(raw), q, &err) != QUERY_OK)
		fail_msg("query %s: %s", raw, err.message);
	return q;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of epoch ms (non-negative). */
static void fmt_time(int64_t ms, char out[64])
{
	int64_t z = ms / DAY, tod = ms % DAY, era, y;
	unsigned doe, yoe, doy, mp, d, m;

	z += 719468;
	era = z / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = (int64_t)yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	snprintf(out, 64, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ", (long long)y,
		 m, d, (long long)(tod / 3600000), (long long)(tod / 60000 % 60),
		 (long long)(tod / 1000 % 60), (long long)(tod % 1000));
}

/* One contact-like element: id n, the three times, a name (already JSON). */
static int elem(char *out, size_t cap, int n, int64_t lm, int64_t cr, int64_t up,
		const char *name_json)
{
	char a[64], b[64], c[64];

	fmt_time(lm, a);
	fmt_time(cr, b);
	fmt_time(up, c);
	return snprintf(
	    out, cap,
	    "{\"id\":\"e%d\",\"name\":\"%s\",\"last_message_at\":\"%s\","
	    "\"created_at\":\"%s\",\"updated_at\":\"%s\",\"active_ticket_v2\":null}",
	    n, name_json ? name_json : "x", a, b, c);
}

/* A compact array of the given element texts. */
static size_t join(char *out, size_t cap, char *const *els, size_t n)
{
	size_t o = 0;

	out[o++] = '[';
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(els[i]);

		if (i)
			out[o++] = ',';
		assert_true(o + len + 2 < cap);
		memcpy(out + o, els[i], len);
		o += len;
	}
	out[o++] = ']';
	out[o] = '\0';
	return o;
}

/* Elements e<from>..e<to-1> of a list built with elem(): what the vendor sends. */
struct list {
	char *el[64];
	char buf[64][512];
	size_t n;
};

static void list_init(struct list *l)
{
	l->n = 0;
}

static void list_add(struct list *l, int64_t lm, int64_t cr, int64_t up, const char *name)
{
	assert_true(l->n < 64);
	elem(l->buf[l->n], sizeof(l->buf[0]), (int)l->n, lm, cr, up, name);
	l->el[l->n] = l->buf[l->n];
	l->n++;
}

static char body_s[BODY_CAP], body_want[BODY_CAP], body_got[BODY_CAP];

/* Body of l's elements [from, to). */
static size_t slice(const struct list *l, size_t from, size_t to, char *out)
{
	if (to > l->n)
		to = l->n;
	if (from > to)
		from = to;
	return join(out, BODY_CAP, (char *const *)l->el + from, to - from);
}

static enum derive_status run(const char *sq, const char *body, int64_t fetched,
			      const char *q, unsigned rules, struct derive_answer *a)
{
	struct derive_source src = {mkq(sq), body, strlen(body), fetched};

	return derive_answer(&src, mkq(q), rules, a);
}

/* Expects Q derived from S (body) to be exactly `want`. */
static void expect_ok(const char *sq, const char *body, int64_t fetched, const char *q,
		      const char *want, enum derive_rule rule)
{
	struct derive_answer a;
	enum derive_status st = run(sq, body, fetched, q, DERIVE_RULE_ALL, &a);
	long n;

	if (st != DERIVE_OK)
		fail_msg("S %s -> Q %s: %s, expected ok", sq, q, derive_status_name(st));
	assert_int_equal(a.rule, rule);
	n = derive_write(&a, body, body_got, sizeof(body_got));
	assert_true(n >= 2);
	body_got[n] = '\0';
	if (strcmp(body_got, want) != 0)
		fail_msg("S %s -> Q %s:\n got  %s\n want %s", sq, q, body_got, want);
	assert_int_equal((size_t)n, derive_body_len(&a));
}

static void expect_no(const char *sq, const char *body, int64_t fetched, const char *q,
		      unsigned rules, enum derive_status want)
{
	struct derive_answer a;
	enum derive_status st = run(sq, body, fetched, q, rules, &a);

	if (st != want)
		fail_msg("S %s -> Q %s: %s, expected %s", sq, q, derive_status_name(st),
			 derive_status_name(want));
}

/* ---- pages ---- */

static void ten(struct list *l, size_t n)
{
	list_init(l);
	for (size_t i = 0; i < n; i++)
		list_add(l, NOW - (int64_t)i * 1000, NOW - DAY, NOW - DAY, NULL);
}

static void test_pages_inside(void **state)
{
	static struct list l;

	(void)state;
	ten(&l, 10);
	slice(&l, 0, 10, body_s);
	slice(&l, 2, 5, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=30&limit=3&offset=2", body_want,
		  DERIVE_RULE_PAGES);
	/* the same question, respelled: the whole of S */
	expect_ok("days=30&limit=10", body_s, NOW, "limit=10.0&offset=0&days=030", body_s,
		  DERIVE_RULE_PAGES);
	slice(&l, 9, 10, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=30&limit=1&offset=9", body_want,
		  DERIVE_RULE_PAGES);
	/* S exactly full (|S| == L) is not the end of the list */
	expect_no("days=30&limit=10", body_s, NOW, "days=30&limit=2&offset=9",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
	expect_no("days=30&limit=10", body_s, NOW, "days=30&limit=1&offset=10",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
	expect_no("days=30&limit=10", body_s, NOW, "days=30&limit=11", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
}

static void test_pages_end_of_list(void **state)
{
	static struct list l;

	(void)state;
	ten(&l, 7); /* 7 < limit 10: S is the end of the list */
	slice(&l, 0, 7, body_s);
	slice(&l, 5, 7, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=30&limit=5&offset=5", body_want,
		  DERIVE_RULE_PAGES);
	expect_ok("days=30&limit=10", body_s, NOW, "days=30&limit=1000", body_s,
		  DERIVE_RULE_PAGES);
	expect_ok("days=30&limit=10", body_s, NOW, "days=30&limit=5&offset=7", "[]",
		  DERIVE_RULE_PAGES);
	expect_ok("days=30&limit=10", body_s, NOW, "days=30&limit=5&offset=2000000000",
		  "[]", DERIVE_RULE_PAGES);
	/* an empty S at offset 0: the list is empty */
	expect_ok("days=30&limit=10", "[]", NOW, "days=30&limit=3&offset=4", "[]",
		  DERIVE_RULE_PAGES);
}

static void test_pages_offset_window(void **state)
{
	static struct list l;

	(void)state;
	ten(&l, 10); /* S = the list's elements [20, 30) */
	slice(&l, 0, 10, body_s);
	slice(&l, 5, 8, body_want);
	expect_ok("days=30&limit=10&offset=20", body_s, NOW, "days=30&limit=3&offset=25",
		  body_want, DERIVE_RULE_PAGES);
	expect_no("days=30&limit=10&offset=20", body_s, NOW, "days=30&limit=3&offset=19",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
	expect_no("days=30&limit=10&offset=20", body_s, NOW, "days=30&limit=3",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
	/* an empty S past the end: so is everything after it, not before it */
	expect_ok("days=30&limit=10&offset=20", "[]", NOW, "days=30&limit=3&offset=25",
		  "[]", DERIVE_RULE_PAGES);
	expect_no("days=30&limit=10&offset=20", "[]", NOW, "days=30&limit=3&offset=10",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
}

static void test_pages_any_objects(void **state)
{
	(void)state;
	/* pages need no field: any objects, any inner layout, copied as they are */
	expect_ok("created_after=2024-01-01&limit=3",
		  "[{},{ \"a\" : [1, 2] },{\"b\":{}}]", NOW,
		  "created_after=2024-01-01&limit=2&offset=1",
		  "[{ \"a\" : [1, 2] },{\"b\":{}}]", DERIVE_RULE_PAGES);
}

static void test_refusals_by_query(void **state)
{
	(void)state;
	expect_no("days=30&limit=10", "[]", NOW,
		  "days=30&limit=10&stage_id=123e4567-e89b-12d3-a456-426614174000",
		  DERIVE_RULE_ALL, DERIVE_DIFFERENT_FILTERS);
	expect_no("days=30&limit=10&custom_field_key=a&custom_field_value=b", "[]", NOW,
		  "days=30&limit=10&custom_field_key=a&custom_field_value=c",
		  DERIVE_RULE_ALL, DERIVE_DIFFERENT_FILTERS);
	expect_no(
	    "days=30&limit=10&custom_field_key=a&custom_field_value=b", "[]", NOW,
	    "days=30&limit=10&custom_field_key=a&custom_field_value=b&entity_type=ticket",
	    DERIVE_RULE_ALL, DERIVE_DIFFERENT_FILTERS);
	expect_no("days=30", "[]", NOW, "days=30&limit=10", DERIVE_RULE_ALL,
		  DERIVE_NO_LIMIT);
	expect_no("days=30&limit=10", "[]", NOW, "days=30", DERIVE_RULE_ALL,
		  DERIVE_NO_LIMIT);
	expect_no("days=30&limit=10", "[]", NOW, "days=7&limit=10", DERIVE_RULE_PAGES,
		  DERIVE_RULE_OFF);
	{
		/* pages off: equal days are the days rule's (all of S at the same cut) */
		struct derive_answer a;

		assert_int_equal(run("days=30&limit=10", "[]", NOW, "days=30&limit=5",
				     DERIVE_RULE_DAYS | DERIVE_RULE_CURSORS, &a),
				 DERIVE_OK);
		assert_int_equal(a.rule, DERIVE_RULE_DAYS);
	}
	expect_no("updated_after=2025-01-01&limit=10", "[]", NOW,
		  "updated_after=2025-02-01&limit=10",
		  DERIVE_RULE_PAGES | DERIVE_RULE_DAYS, DERIVE_RULE_OFF);
	/* a cursor of another order is another list */
	expect_no("updated_after=2025-01-01&limit=10", "[]", NOW,
		  "created_after=2025-01-01&limit=10", DERIVE_RULE_ALL,
		  DERIVE_DIFFERENT_FILTERS);
	expect_no("days=30&limit=10", "[]", NOW,
		  "days=30&updated_after=2025-01-01&limit=10", DERIVE_RULE_ALL,
		  DERIVE_DIFFERENT_FILTERS);
	/* days with a cursor orders by the cursor: not the days rule */
	expect_no("days=30&updated_after=2025-01-01&limit=10", "[]", NOW,
		  "days=7&updated_after=2025-01-01&limit=10", DERIVE_RULE_ALL,
		  DERIVE_DIFFERENT_FILTERS);
}

/* ---- cursors ---- */

/* 10 elements with updated_at T0 + step * i (ties where step is 0). */
static void cursor_list(struct list *l, const int64_t *ups, size_t n)
{
	list_init(l);
	for (size_t i = 0; i < n; i++)
		list_add(l, NOW, ups[i] - 5000, ups[i], NULL);
}

#define T0 INT64_C(1735689600000) /* 2025-01-01T00:00:00.000Z */

static void test_cursors(void **state)
{
	static struct list l;
	int64_t ups[10];
	char q[128];

	(void)state;
	for (int i = 0; i < 10; i++)
		ups[i] = T0 + 1000 * (i + 1);
	cursor_list(&l, ups, 10);
	slice(&l, 0, 10, body_s);
	/* T2 = element 3's updated_at: strictly after it, from element 4 */
	slice(&l, 4, 7, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:04.000Z&limit=3", body_want,
		  DERIVE_RULE_CURSORS);
	slice(&l, 3, 6, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:03.999Z&limit=3", body_want,
		  DERIVE_RULE_CURSORS);
	/* with Q's offset */
	slice(&l, 6, 8, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:04.000Z&limit=2&offset=2", body_want,
		  DERIVE_RULE_CURSORS);
	/* six past T2, S full: 6 is enough, 7 is not */
	slice(&l, 4, 10, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:04.000Z&limit=6", body_want,
		  DERIVE_RULE_CURSORS);
	expect_no("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:04.000Z&limit=7", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
	/* complete S (limit 11): clipped, and an empty tail */
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=11", body_s, NOW,
		  "updated_after=2025-01-01T00:00:04.000Z&limit=7", body_want,
		  DERIVE_RULE_CURSORS);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=11", body_s, NOW,
		  "updated_after=2025-01-01T00:00:10.000Z&limit=7", "[]",
		  DERIVE_RULE_CURSORS);
	expect_no("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:10.000Z&limit=7", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
	/* backwards: Q asks for what S left out */
	expect_no("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2024-12-31T23:59:59.999Z&limit=1", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
	/* the cursor written another way is the same instant */
	snprintf(q, sizeof(q), "updated_after=2025-01-01T01:00:04%%2B01:00&limit=3");
	slice(&l, 4, 7, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW, q,
		  body_want, DERIVE_RULE_CURSORS);
}

static void test_cursors_ties_at_cut(void **state)
{
	static struct list l;
	int64_t ups[10] = {T0 + 1, T0 + 2, T0 + 3, T0 + 5, T0 + 5,
			   T0 + 5, T0 + 5, T0 + 6, T0 + 6, T0 + 7};

	(void)state;
	cursor_list(&l, ups, 10);
	slice(&l, 0, 10, body_s);
	/* every element at T2 is left out, not just the first */
	slice(&l, 7, 10, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:00.005Z&limit=3", body_want,
		  DERIVE_RULE_CURSORS);
	slice(&l, 3, 10, body_want);
	expect_ok("updated_after=2025-01-01T00:00:00.000Z&limit=10", body_s, NOW,
		  "updated_after=2025-01-01T00:00:00.004Z&limit=7", body_want,
		  DERIVE_RULE_CURSORS);
}

static void test_cursors_created(void **state)
{
	static const char *s = "[{\"created_at\":\"2025-01-01T00:00:01.000Z\",\"updated_"
			       "at\":\"2025-06-01T00:00:00.000Z\"},"
			       "{\"created_at\":\"2025-01-01T00:00:02.000Z\",\"updated_"
			       "at\":\"2025-02-01T00:00:00.000Z\"},"
			       "{\"created_at\":\"2025-01-01T00:00:03.000Z\",\"updated_"
			       "at\":\"2025-01-01T00:00:00.000Z\"}]";

	(void)state;
	/* created_after orders by created_at; updated_at out of order is fine */
	expect_ok("created_after=2025-01-01&limit=5", s, NOW,
		  "created_after=2025-01-01T00:00:01.500Z&limit=5",
		  "[{\"created_at\":\"2025-01-01T00:00:02.000Z\",\"updated_at\":\"2025-"
		  "02-01T00:00:00.000Z\"},"
		  "{\"created_at\":\"2025-01-01T00:00:03.000Z\",\"updated_at\":\"2025-01-"
		  "01T00:00:00.000Z\"}]",
		  DERIVE_RULE_CURSORS);
	/* with updated_after too, the cursor is updated_after: s is unsorted for it */
	expect_no("created_after=2025-01-01&updated_after=2024-01-01&limit=5", s, NOW,
		  "created_after=2025-01-01&updated_after=2024-06-01&limit=5",
		  DERIVE_RULE_ALL, DERIVE_UNSORTED);
	expect_no("created_after=2025-01-01&updated_after=2024-01-01&limit=5", s, NOW,
		  "created_after=2025-01-02&updated_after=2024-06-01&limit=5",
		  DERIVE_RULE_ALL, DERIVE_DIFFERENT_FILTERS);
}

static void test_cursors_offset_window(void **state)
{
	static struct list l;
	int64_t ups[6] = {T0 + 10, T0 + 20, T0 + 30, T0 + 40, T0 + 50, T0 + 60};

	(void)state;
	cursor_list(&l, ups, 6);
	slice(&l, 0, 6, body_s);
	/* S at offset 100 starts at or before the cut: nothing of Q's before it */
	slice(&l, 2, 4, body_want);
	expect_ok("updated_after=2025-01-01&limit=6&offset=100", body_s, NOW,
		  "updated_after=2025-01-01T00:00:00.020Z&limit=2", body_want,
		  DERIVE_RULE_CURSORS);
	slice(&l, 4, 6, body_want);
	expect_ok("updated_after=2025-01-01&limit=6&offset=100", body_s, NOW,
		  "updated_after=2025-01-01T00:00:00.010Z&limit=2&offset=3", body_want,
		  DERIVE_RULE_CURSORS);
	/* S's first is past the cut: what precedes S might be in Q's list */
	expect_no("updated_after=2025-01-01&limit=6&offset=100", body_s, NOW,
		  "updated_after=2025-01-01T00:00:00.009Z&limit=2", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
	/* an empty S past the end says nothing about where T2 cuts */
	expect_no("updated_after=2025-01-01&limit=6&offset=100", "[]", NOW,
		  "updated_after=2025-01-01T00:00:00.009Z&limit=2&offset=100",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
	/* the pages rule takes a same-cursor question from the same S */
	slice(&l, 1, 3, body_want);
	expect_ok("updated_after=2025-01-01&limit=6&offset=100", body_s, NOW,
		  "updated_after=2025-01-01&limit=2&offset=101", body_want,
		  DERIVE_RULE_PAGES);
}

static void test_cursors_precision(void **state)
{
	static const char *s = "[{\"updated_at\":\"2025-01-01T00:00:00.005Z\"},"
			       "{\"updated_at\":\"2025-01-01T00:00:00.005000Z\"},"
			       "{\"updated_at\":\"2025-01-01T00:00:00.005000001Z\"},"
			       "{\"updated_at\":\"2025-01-01T01:00:00.006+01:00\"},"
			       "{\"updated_at\":\"2025-01-01t00:00:00.007z\"}]";

	(void)state;
	/* .005000001 is after .005; +01:00 is converted; lower-case t and z */
	expect_ok("updated_after=2025-01-01&limit=5", s, NOW,
		  "updated_after=2025-01-01T00:00:00.005Z&limit=2",
		  "[{\"updated_at\":\"2025-01-01T00:00:00.005000001Z\"},"
		  "{\"updated_at\":\"2025-01-01T01:00:00.006+01:00\"}]",
		  DERIVE_RULE_CURSORS);
}

/* ---- days ---- */

static void test_days(void **state)
{
	static struct list l;
	int64_t lm[10] = {
	    NOW - 1,	       NOW - DAY,     NOW - 3 * DAY,
	    NOW - 7 * DAY + 1, NOW - 7 * DAY, /* exactly at the 7-day cut: in */
	    NOW - 7 * DAY - 1, NOW - 8 * DAY, NOW - 20 * DAY,
	    NOW - 25 * DAY,    NOW - 29 * DAY};

	(void)state;
	list_init(&l);
	for (int i = 0; i < 10; i++)
		list_add(&l, lm[i], NOW - 300 * DAY, NOW - 300 * DAY, NULL);
	slice(&l, 0, 10, body_s);
	/* the prefix ends inside a full S: derivable */
	slice(&l, 0, 5, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=7&limit=100", body_want,
		  DERIVE_RULE_DAYS);
	slice(&l, 2, 4, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=7&limit=2&offset=2", body_want,
		  DERIVE_RULE_DAYS);
	expect_ok("days=30&limit=10", body_s, NOW, "days=7&limit=2&offset=5", "[]",
		  DERIVE_RULE_DAYS);
	/* a later fetch moves the cut: the boundary element falls out */
	slice(&l, 0, 4, body_want);
	expect_ok("days=30&limit=10", body_s, NOW + 1, "days=7&limit=100", body_want,
		  DERIVE_RULE_DAYS);
	/* 7.5 days, exact */
	slice(&l, 0, 6, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=7.5&limit=100", body_want,
		  DERIVE_RULE_DAYS);
	/* the prefix reaches the end of a full S: not known where it ends */
	expect_no("days=30&limit=10", body_s, NOW, "days=29.5&limit=100", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
	slice(&l, 0, 10, body_want);
	expect_ok("days=30&limit=11", body_s, NOW, "days=29.5&limit=100", body_want,
		  DERIVE_RULE_DAYS);
	/* more days than S: no */
	expect_no("days=30&limit=11", body_s, NOW, "days=31&limit=100", DERIVE_RULE_ALL,
		  DERIVE_NOT_INSIDE);
	/* equal days with pages off: the days rule takes it, the whole of S */
	expect_ok("days=30&limit=11", body_s, NOW, "days=30.0&limit=10", body_s,
		  DERIVE_RULE_PAGES);
	{
		struct derive_answer a;

		assert_int_equal(run("days=30&limit=11", body_s, NOW, "days=30&limit=10",
				     DERIVE_RULE_DAYS, &a),
				 DERIVE_OK);
		assert_int_equal(a.rule, DERIVE_RULE_DAYS);
		assert_int_equal(a.count, 10);
	}
	/* inexact days: more than 9 decimals, or a cut inside a millisecond */
	expect_no("days=30&limit=10", body_s, NOW, "days=7.0000000001&limit=100",
		  DERIVE_RULE_ALL, DERIVE_DAYS_INEXACT);
	expect_no("days=30&limit=10", body_s, NOW, "days=7.00000001&limit=100",
		  DERIVE_RULE_ALL, DERIVE_DAYS_INEXACT);
	expect_no("days=30.00000001&limit=10", body_s, NOW, "days=7&limit=100",
		  DERIVE_RULE_ALL, DERIVE_DAYS_INEXACT);
	/* 7.00001 days is 7 days and 864 ms: exact */
	slice(&l, 0, 1, body_want);
	expect_ok("days=30&limit=10", body_s, NOW, "days=7.00001&limit=1", body_want,
		  DERIVE_RULE_DAYS);
	slice(&l, 0, 6, body_want);
	expect_ok("days=30&limit=10", body_s, NOW - 864, "days=7.00001&limit=10",
		  body_want, DERIVE_RULE_DAYS);
}

static void test_days_offset_window(void **state)
{
	static struct list l;
	int64_t lm[4] = {NOW - 5 * DAY, NOW - 6 * DAY, NOW - 8 * DAY, NOW - 9 * DAY};

	(void)state;
	list_init(&l);
	for (int i = 0; i < 4; i++)
		list_add(&l, lm[i], NOW - 300 * DAY, NOW - 300 * DAY, NULL);
	slice(&l, 0, 4, body_s);
	/* S = list [50, 54): its first is inside 7 days, so all 50 before are */
	slice(&l, 1, 2, body_want);
	expect_ok("days=30&limit=4&offset=50", body_s, NOW, "days=7&limit=10&offset=51",
		  body_want, DERIVE_RULE_DAYS);
	expect_no("days=30&limit=4&offset=50", body_s, NOW, "days=7&limit=10&offset=49",
		  DERIVE_RULE_ALL, DERIVE_NOT_INSIDE);
	/* S's first is past a 2-day cut: Q's list ended before S, so its
	 * elements from 50 on are none */
	expect_ok("days=30&limit=4&offset=50", body_s, NOW, "days=2&limit=10&offset=50",
		  "[]", DERIVE_RULE_DAYS);
}

/* ---- bodies ---- */

static void test_body_refusals(void **state)
{
	static const char *const malformed[] = {
	    "",
	    "[",
	    "]",
	    "[]\n",
	    " []",
	    "[ ]",
	    "[ {}]",
	    "[{} ]",
	    "[{},]",
	    "[,{}]",
	    "[1]",
	    "[{}]x",
	    "[{}{}]",
	    "[{},{}",
	    "[[]]",
	    "[\"a\"]",
	    "[null]",
	    "[{} , {}]",
	    "[{\"a\":}]",
	    "[{\"a\"}]",
	    "[{\"a\":1,}]",
	    "[{\"a\":\"\\x\"}]",
	    "[{\"a\":\"\\u12g4\"}]",
	    "[{\"a\":\"unterminated}]",
	    "[{\"a\":\"x\ty\"}]",
	    "[{\"a\":01}]",
	    "[{\"a\":tru}]",
	    "[{\"a\":[1,]}]",
	    "[{\"a\":{\"b\":1]}]",
	    "[{\"a\":\"x\"}",
	    "{}",
	    "[{1:2}]",
	    "[{\"a\":1}]]",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		struct derive_answer a;
		struct derive_source src = {mkq("days=30&limit=10"), malformed[i],
					    strlen(malformed[i]), NOW};

		if (derive_answer(&src, mkq("days=30&limit=1"), DERIVE_RULE_ALL, &a) !=
		    DERIVE_MALFORMED)
			fail_msg("accepted as an array of objects: %s", malformed[i]);
	}
}

static void test_depth(void **state)
{
	char deep[400], *p = deep;
	struct derive_answer a;

	(void)state;
	/* a value 64 containers deep inside an element: fine; 65: refused */
	for (int depth = 64; depth <= 65; depth++) {
		p = deep;
		memcpy(p, "[{\"a\":", 6);
		p += 6;
		for (int i = 0; i < depth; i++)
			*p++ = '[';
		for (int i = 0; i < depth; i++)
			*p++ = ']';
		memcpy(p, "}]", 3);
		assert_int_equal(run("days=30&limit=10", deep, NOW, "days=30&limit=1",
				     DERIVE_RULE_ALL, &a),
				 depth == 64 ? DERIVE_OK : DERIVE_MALFORMED);
	}
}

static void test_field_refusals(void **state)
{
	static const struct {
		const char *body;
		enum derive_status st;
	} cases[] = {
	    {"[{\"id\":1}]", DERIVE_MISSING_FIELD},
	    {"[{}]", DERIVE_MISSING_FIELD},
	    {"[{\"updated_at\":null}]", DERIVE_MISSING_FIELD},
	    {"[{\"updated_at\":1735689600000}]", DERIVE_MISSING_FIELD},
	    {"[{\"updated_at\":\"2025-01-02T00:00:00.000Z\",\"updated_at\":\"2025-01-"
	     "02T00:00:00.000Z\"}]",
	     DERIVE_MISSING_FIELD},
	    /* only a nested updated_at: not the contact's */
	    {"[{\"t\":{\"updated_at\":\"2025-01-02T00:00:00.000Z\"}}]",
	     DERIVE_MISSING_FIELD},
	    {"[{\"updated_at\":\"2025-01-02\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T00:00:00.000\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-02-29T00:00:00.000Z\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T24:00:00.000Z\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T00:00:60.000Z\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T00:00:00.Z\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T00:00:00.0000000001Z\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T00:00:00+0100\"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"2025-01-02T00:00:00.000Z \"}]", DERIVE_BAD_TIME},
	    {"[{\"updated_at\":\"\\u0032025-01-02T00:00:00.000Z\"}]", DERIVE_BAD_TIME},
	    /* order and S's own filter */
	    {"[{\"updated_at\":\"2025-01-03T00:00:00.000Z\"},{\"updated_at\":\"2025-01-"
	     "02T00:00:00.000Z\"}]",
	     DERIVE_UNSORTED},
	    {"[{\"updated_at\":\"2025-01-01T00:00:00.000Z\"}]", DERIVE_UNSORTED},
	    {"[{\"updated_at\":\"2024-12-31T00:00:00.000Z\"}]", DERIVE_UNSORTED},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct derive_answer a;
		enum derive_status st = run(
		    "updated_after=2025-01-01&limit=10", cases[i].body, NOW,
		    "updated_after=2025-01-01T12:00:00Z&limit=1", DERIVE_RULE_ALL, &a);

		if (st != cases[i].st)
			fail_msg("%s: %s, expected %s", cases[i].body,
				 derive_status_name(st), derive_status_name(cases[i].st));
	}
	/* days: ascending last_message_at is the wrong order */
	expect_no("days=30&limit=10",
		  "[{\"last_message_at\":\"2025-12-30T00:00:00.000Z\"},"
		  "{\"last_message_at\":\"2025-12-31T00:00:00.000Z\"}]",
		  NOW, "days=7&limit=1", DERIVE_RULE_ALL, DERIVE_UNSORTED);
	/* a nested updated_at next to the top-level one does not count */
	expect_ok("updated_after=2025-01-01&limit=10",
		  "[{\"t\":{\"updated_at\":\"2099-01-01T00:00:00.000Z\"},"
		  "\"updated_at\":\"2025-01-02T00:00:00.000Z\"}]",
		  NOW, "updated_after=2025-01-01T12:00:00Z&limit=1",
		  "[{\"t\":{\"updated_at\":\"2099-01-01T00:00:00.000Z\"},"
		  "\"updated_at\":\"2025-01-02T00:00:00.000Z\"}]",
		  DERIVE_RULE_CURSORS);
	/* an escaped key is the same key */
	expect_no("updated_after=2025-01-01&limit=10",
		  "[{\"updated\\u005fat\":\"2025-01-02T00:00:00.000Z\","
		  "\"updated_at\":\"2025-01-02T00:00:00.000Z\"}]",
		  NOW, "updated_after=2025-01-01T12:00:00Z&limit=1", DERIVE_RULE_ALL,
		  DERIVE_MISSING_FIELD);
	expect_ok("updated_after=2025-01-01&limit=10",
		  "[{\"updated\\u005fat\":\"2025-01-02T00:00:00.000Z\"}]", NOW,
		  "updated_after=2025-01-01T12:00:00Z&limit=1",
		  "[{\"updated\\u005fat\":\"2025-01-02T00:00:00.000Z\"}]",
		  DERIVE_RULE_CURSORS);
}

static void test_strings_that_look_like_structure(void **state)
{
	static struct list l;
	static const char *const names[] = {
	    "a\\\"],[{\\\"updated_at\\\":\\\"2099-01-01T00:00:00.000Z\\\"}",
	    "back\\\\",
	    "\\\\\\\"",
	    "}{,][",
	    "Jos\xc3\xa9 \xf0\x9f\x98\x80 \\u00e9\\ud83d\\ude00",
	    "\\\"updated_at\\\":\\\"2000-01-01T00:00:00.000Z\\\",",
	    "tab\\tnl\\n\\u0000\\/",
	};
	int64_t ups[7];

	(void)state;
	list_init(&l);
	for (int i = 0; i < 7; i++) {
		ups[i] = T0 + 100 * (i + 1);
		list_add(&l, NOW, T0, ups[i], names[i]);
	}
	slice(&l, 0, 7, body_s);
	for (size_t cut = 0; cut <= 7; cut++) {
		char q[128], t[64];

		fmt_time(cut ? ups[cut - 1] : T0, t);
		snprintf(q, sizeof(q), "updated_after=%s&limit=3", t);
		slice(&l, cut, cut + 3, body_want);
		expect_ok("updated_after=2025-01-01&limit=8", body_s, NOW, q, body_want,
			  cut ? DERIVE_RULE_CURSORS : DERIVE_RULE_PAGES);
	}
	slice(&l, 3, 6, body_want);
	expect_ok("updated_after=2025-01-01&limit=8", body_s, NOW,
		  "updated_after=2025-01-01&limit=3&offset=3", body_want,
		  DERIVE_RULE_PAGES);
}

/* ---- families, writing, names ---- */

static void family(const char *raw, enum derive_rule rule, const char *want)
{
	char buf[DERIVE_FAMILY_MAX];
	long n = derive_family(mkq(raw), rule, buf, sizeof(buf));

	if (want == NULL) {
		assert_int_equal(n, 0);
		return;
	}
	assert_true(n > 0);
	assert_string_equal(buf, want);
	assert_int_equal((size_t)n, strlen(want));
}

static void test_family(void **state)
{
	char small[8];

	(void)state;
	family("days=30&limit=100&offset=200&pipeline_id=123E4567-E89B-12D3-A456-"
	       "426614174000",
	       DERIVE_RULE_PAGES,
	       "pages:days=30&pipeline_id=123e4567-e89b-12d3-a456-426614174000");
	family("days=30&limit=100", DERIVE_RULE_DAYS, "days:");
	family("days=30&limit=100&stage_id=123e4567-e89b-12d3-a456-426614174000",
	       DERIVE_RULE_DAYS, "days:stage_id=123e4567-e89b-12d3-a456-426614174000");
	family("days=30&limit=100", DERIVE_RULE_CURSORS, NULL);
	family("days=30", DERIVE_RULE_PAGES, NULL);
	family("updated_after=2025-01-01&limit=1000&created_after=2024-01-01",
	       DERIVE_RULE_CURSORS,
	       "cursors:updated_at:created_after=2024-01-01T00%3A00%3A00.000Z");
	family("created_after=2024-01-01&limit=1000&days=3", DERIVE_RULE_CURSORS,
	       "cursors:created_at:days=3");
	family("created_after=2024-01-01&limit=1000&days=3", DERIVE_RULE_DAYS, NULL);
	family("created_after=2024-01-01&limit=1000&days=3", DERIVE_RULE_PAGES,
	       "pages:created_after=2024-01-01T00%3A00%3A00.000Z&days=3");
	family("days=3&limit=1", DERIVE_RULE_ALL, NULL);
	assert_int_equal(derive_family(mkq("days=30&limit=100"), DERIVE_RULE_PAGES, small,
				       sizeof(small)),
			 -1);
	assert_int_equal(
	    derive_family(mkq("days=30&limit=100"), DERIVE_RULE_PAGES, small, 6), -1);
	assert_int_equal(derive_family(mkq("days=3&limit=100"), DERIVE_RULE_PAGES, small,
				       sizeof(small)),
			 -1); /* "pages:days=3" is 12 bytes */
}

/* Families equal under a rule <=> derive relates the two by it. */
static void test_family_agrees(void **state)
{
	static const char *const qs[] = {
	    "days=30&limit=10",
	    "days=30&limit=20&offset=5",
	    "days=7&limit=10",
	    "days=7.5&limit=10&offset=1",
	    "days=30",
	    "updated_after=2025-01-01&limit=10",
	    "updated_after=2025-02-01&limit=10&offset=3",
	    "updated_after=2025-02-01&limit=10&days=3",
	    "created_after=2025-01-01&limit=10",
	    "created_after=2025-03-01&limit=1",
	    "created_after=2025-03-01&updated_after=2025-01-01&limit=1",
	    "days=30&limit=10&stage_id=123e4567-e89b-12d3-a456-426614174000",
	    "days=7&limit=10&stage_id=123e4567-e89b-12d3-a456-426614174000",
	};
	static const enum derive_rule rules[] = {DERIVE_RULE_PAGES, DERIVE_RULE_CURSORS,
						 DERIVE_RULE_DAYS};
	size_t n = sizeof(qs) / sizeof(qs[0]);

	(void)state;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			for (size_t r = 0; r < 3; r++) {
				char fa[DERIVE_FAMILY_MAX], fb[DERIVE_FAMILY_MAX];
				long na =
				    derive_family(mkq(qs[i]), rules[r], fa, sizeof(fa));
				long nb =
				    derive_family(mkq(qs[j]), rules[r], fb, sizeof(fb));
				int same = na > 0 && nb > 0 && strcmp(fa, fb) == 0;
				struct derive_answer a;
				enum derive_status st =
				    run(qs[i], "[]", NOW, qs[j], rules[r], &a);
				int by_rule = st != DERIVE_DIFFERENT_FILTERS &&
					      st != DERIVE_NO_LIMIT &&
					      st != DERIVE_RULE_OFF;

				if (same != by_rule)
					fail_msg("%s / %s under %s: family %s, derive %s",
						 qs[i], qs[j], derive_rule_name(rules[r]),
						 same ? "equal" : "differs",
						 derive_status_name(st));
			}
}

static void test_write_and_names(void **state)
{
	struct derive_answer a;
	char dst[4];

	(void)state;
	assert_int_equal(run("days=30&limit=10", "[{\"a\":1}]", NOW, "days=30&limit=1",
			     DERIVE_RULE_ALL, &a),
			 DERIVE_OK);
	assert_int_equal(a.s_count, 1);
	assert_int_equal(a.first, 0);
	assert_int_equal(a.count, 1);
	assert_int_equal(derive_body_len(&a), 9);
	assert_int_equal(derive_write(&a, "[{\"a\":1}]", dst, sizeof(dst)), -1);
	assert_int_equal(run("days=30&limit=10", "[{\"a\":1}]", NOW,
			     "days=30&limit=1&offset=1", DERIVE_RULE_ALL, &a),
			 DERIVE_OK);
	assert_int_equal(a.count, 0);
	assert_int_equal(derive_write(&a, "[{\"a\":1}]", dst, 2), 2);
	assert_memory_equal(dst, "[]", 2);
	for (int st = 0; st < DERIVE_STATUS_COUNT; st++)
		assert_string_not_equal(derive_status_name((enum derive_status)st), "?");
	assert_string_equal(derive_status_name(DERIVE_STATUS_COUNT), "?");
	assert_string_equal(derive_rule_name(DERIVE_RULE_ALL), "none");
}

/* ---- randomised soundness against a model ---- */

static uint64_t rng(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

struct item {
	int64_t t; /* the ordering field */
	int id;
};

static int cmp_asc(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->id - y->id;
}

static int cmp_desc(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->t != y->t)
		return x->t > y->t ? -1 : 1;
	return x->id - y->id;
}

static const char *const nasty[] = {
    "x",
    "\\\"",
    "]",
    "[{",
    "\\\\",
    "},{",
    "\\u005d",
    "\xe2\x80\xa8",
    "\xf0\x9f\x98\x80",
    "\\\"updated_at\\\":\\\"2000-01-01T00:00:00.000Z\\\"",
    ",",
};

/* Body of items [from, to) (clipped) in model order. */
static size_t model_body(const struct item *it, size_t n, size_t from, size_t to,
			 int rule, char *out)
{
	size_t o = 0;

	out[o++] = '[';
	for (size_t i = from; i < to && i < n; i++) {
		char t[64];
		int64_t v = it[i].t;

		if (i > from)
			out[o++] = ',';
		fmt_time(v, t);
		o += (size_t)snprintf(
		    out + o, BODY_CAP - o,
		    "{\"id\":%d,\"name\":\"%s\",\"%s\":\"%s\",\"n\":[{}]}", it[i].id,
		    nasty[(size_t)it[i].id % (sizeof(nasty) / sizeof(nasty[0]))],
		    rule == DERIVE_RULE_DAYS ? "last_message_at" : "updated_at", t);
	}
	out[o++] = ']';
	out[o] = '\0';
	return o;
}

static void test_random_soundness(void **state)
{
	static struct item all[300], list[300];
	uint64_t seed = 20260101;
	unsigned ok[3] = {0, 0, 0}, runs = 0;

	(void)state;
	for (int round = 0; round < 3000; round++) {
		int rule = 1 << (int)(rng(&seed) % 3);
		size_t n = (size_t)(rng(&seed) % 60), m = 0;
		int64_t grain = (int64_t[]){1, 1000, DAY}[rng(&seed) % 3];
		int64_t d1 = 30 * DAY, d2 = (int64_t)(1 + rng(&seed) % 31) * DAY;
		int64_t t2 = T0 + (int64_t)(rng(&seed) % 20) * grain;
		uint64_t O = rng(&seed) % 3 ? 0 : rng(&seed) % 10,
			 L = 1 + rng(&seed) % 40;
		uint64_t o = rng(&seed) % 50, l = 1 + rng(&seed) % 40;
		size_t from, to, qn = 0;
		char sq[128], qq[160], ts[64];
		struct derive_answer a;
		enum derive_status st;

		for (size_t i = 0; i < n; i++) {
			all[i].id = (int)i;
			all[i].t = rule == DERIVE_RULE_DAYS
				       ? NOW - (int64_t)(rng(&seed) % 31) * grain
				       : T0 + 1 + (int64_t)(rng(&seed) % 20) * grain;
		}
		qsort(all, n, sizeof(all[0]),
		      rule == DERIVE_RULE_DAYS ? cmp_desc : cmp_asc);
		/* S's list (A) and Q's list, by the vendor's definitions */
		for (size_t i = 0; i < n; i++)
			if (rule != DERIVE_RULE_DAYS || all[i].t >= NOW - d1)
				list[m++] = all[i];
		from = O < m ? (size_t)O : m;
		to = from + L < m ? from + (size_t)L : m;
		model_body(list, m, from, to, rule, body_s);
		if (rule == DERIVE_RULE_PAGES) {
			snprintf(sq, sizeof(sq),
				 "updated_after=2025-01-01&limit=%llu&offset=%llu",
				 (unsigned long long)L, (unsigned long long)O);
			snprintf(qq, sizeof(qq),
				 "updated_after=2025-01-01&limit=%llu&offset=%llu",
				 (unsigned long long)l, (unsigned long long)o);
			qn = m;
			memcpy(all, list, m * sizeof(list[0]));
		} else if (rule == DERIVE_RULE_CURSORS) {
			fmt_time(t2, ts);
			snprintf(sq, sizeof(sq),
				 "updated_after=2025-01-01&limit=%llu&offset=%llu",
				 (unsigned long long)L, (unsigned long long)O);
			snprintf(qq, sizeof(qq),
				 "updated_after=%s&limit=%llu&offset=%llu", ts,
				 (unsigned long long)l, (unsigned long long)o);
			for (size_t i = 0; i < m; i++)
				if (list[i].t > t2)
					all[qn++] = list[i];
		} else {
			snprintf(sq, sizeof(sq), "days=30&limit=%llu&offset=%llu",
				 (unsigned long long)L, (unsigned long long)O);
			snprintf(qq, sizeof(qq), "days=%lld&limit=%llu&offset=%llu",
				 (long long)(d2 / DAY), (unsigned long long)l,
				 (unsigned long long)o);
			for (size_t i = 0; i < m; i++)
				if (list[i].t >= NOW - d2)
					all[qn++] = list[i];
		}
		model_body(all, qn, (size_t)o, (size_t)(o + l), rule, body_want);
		st = run(sq, body_s, NOW, qq, DERIVE_RULE_ALL, &a);
		runs++;
		if (st == DERIVE_OK) {
			long k = derive_write(&a, body_s, body_got, sizeof(body_got));

			assert_true(k >= 2);
			body_got[k] = '\0';
			if (strcmp(body_got, body_want) != 0)
				fail_msg(
				    "round %d: S %s Q %s\n S    %s\n got  %s\n want %s",
				    round, sq, qq, body_s, body_got, body_want);
			ok[rule == DERIVE_RULE_PAGES	 ? 0
			   : rule == DERIVE_RULE_CURSORS ? 1
							 : 2]++;
		} else if (st != DERIVE_NOT_INSIDE &&
			   !(rule == DERIVE_RULE_DAYS && d2 > d1)) {
			fail_msg("round %d: S %s Q %s: %s", round, sq, qq,
				 derive_status_name(st));
		}
	}
	print_message("random: %u rounds, derived pages %u, cursors %u, days %u\n", runs,
		      ok[0], ok[1], ok[2]);
	assert_true(ok[0] > 200 && ok[1] > 200 && ok[2] > 200);
}

/* Damaged bodies: never a crash or a read outside the body (run under
 * ASan), and an ok answer always lies inside the body and starts and ends
 * with an element's braces. */
static void test_random_damage(void **state)
{
	static struct item it[12];
	static char buf[BODY_CAP];
	static const char *const sqs[] = {"updated_after=2025-01-01&limit=12",
					  "days=30&limit=12",
					  "days=30&limit=20&offset=1"};
	static const char *const qqs[] = {
	    "updated_after=2025-01-01T00:00:00.005Z&limit=3", "days=7&limit=4&offset=1",
	    "days=30&limit=3&offset=2"};
	static const char bytes[] = "[]{}\",:\\u0 1a-.eE\x01\xc3\xff";
	uint64_t seed = 77;
	unsigned ok = 0;

	(void)state;
	for (int round = 0; round < 20000; round++) {
		size_t n, len, k = (size_t)(rng(&seed) % 3);
		struct derive_answer a;
		struct derive_source src;
		char *body;

		for (size_t i = 0; i < 12; i++) {
			it[i].id = (int)i;
			it[i].t =
			    k == 0 ? T0 + 1 + (int64_t)i * 3 : NOW - (int64_t)i * DAY;
		}
		len = model_body(it, 12, 0, 12,
				 k == 0 ? DERIVE_RULE_CURSORS : DERIVE_RULE_DAYS, buf);
		for (int m = 0; m < 1 + (int)(rng(&seed) % 3); m++) {
			size_t at = (size_t)(rng(&seed) % len);
			unsigned op = (unsigned)(rng(&seed) % 3);
			char b = bytes[rng(&seed) % (sizeof(bytes) - 1)];

			if (op == 0) {
				buf[at] = b;
			} else if (op == 1 && len + 1 < BODY_CAP) {
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = b;
				len++;
			} else if (len > 1) {
				memmove(buf + at, buf + at + 1, len - at - 1);
				len--;
			}
		}
		if (rng(&seed) % 4 == 0)
			len = (size_t)(rng(&seed) % len); /* cut short */
		body = malloc(len ? len : 1); /* exactly len bytes: ASan sees overreads */
		assert_non_null(body);
		memcpy(body, buf, len);
		src = (struct derive_source){mkq(sqs[k]), body, len, NOW};
		if (derive_answer(&src, mkq(qqs[k]), DERIVE_RULE_ALL, &a) == DERIVE_OK) {
			ok++;
			assert_true(a.inner_off >= 1 && a.inner_off + a.inner_len < len);
			n = a.inner_len;
			if (n) {
				assert_int_equal(body[a.inner_off], '{');
				assert_int_equal(body[a.inner_off + n - 1], '}');
			}
		}
		free(body);
	}
	print_message("damage: 20000 bodies, %u still derived\n", ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pages_inside),
	    cmocka_unit_test(test_pages_end_of_list),
	    cmocka_unit_test(test_pages_offset_window),
	    cmocka_unit_test(test_pages_any_objects),
	    cmocka_unit_test(test_refusals_by_query),
	    cmocka_unit_test(test_cursors),
	    cmocka_unit_test(test_cursors_ties_at_cut),
	    cmocka_unit_test(test_cursors_created),
	    cmocka_unit_test(test_cursors_offset_window),
	    cmocka_unit_test(test_cursors_precision),
	    cmocka_unit_test(test_days),
	    cmocka_unit_test(test_days_offset_window),
	    cmocka_unit_test(test_body_refusals),
	    cmocka_unit_test(test_depth),
	    cmocka_unit_test(test_field_refusals),
	    cmocka_unit_test(test_strings_that_look_like_structure),
	    cmocka_unit_test(test_family),
	    cmocka_unit_test(test_family_agrees),
	    cmocka_unit_test(test_write_and_names),
	    cmocka_unit_test(test_random_soundness),
	    cmocka_unit_test(test_random_damage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
