/*
 * Unit tests for cache/families (the index) and cache/derived (finding,
 * checking and cutting a derived answer) against a real LMDB store in /tmp,
 * and for the derived flag in a record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache/derived.h"
#include "cache/families.h"
#include "cache/lru.h"
#include "cache/store.h"
#include "policy/query.h"

#define NOW 1767225600000LL /* 2026-01-01 */

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/cg-test-derived-XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static struct store *open_store(void)
{
	char err[256];
	struct store *st = store_open(dir, 8u << 20, 64, STORE_EXCLUSIVE, err, sizeof(err));

	if (st == NULL)
		fail_msg("store_open: %s", err);
	return st;
}

static void id_of(uint8_t id[STORE_ID_LEN], int n)
{
	memset(id, 0, STORE_ID_LEN);
	memcpy(id, &n, sizeof(n));
}

/* ---- families ---- */

static void test_families_widest_first_and_bounded(void **state)
{
	struct families *fs = families_new(2);
	uint8_t key[STORE_KEYHASH_LEN] = {1}, id[STORE_ID_LEN], got[FAMILY_SOURCES][STORE_ID_LEN];
	uint64_t a = families_hash(key, 1, "pages:days=30", 13);
	uint64_t b = families_hash(key, 1, "pages:days=31", 13);
	uint64_t c = families_hash(key, 2, "pages:days=30", 13);
	uint8_t other[STORE_KEYHASH_LEN] = {2};

	(void)state;
	/* the key and the rule are part of a family */
	assert_true(a != b && a != c && a != families_hash(other, 1, "pages:days=30", 13));
	/* the widest are kept, widest first */
	for (int i = 1; i <= 6; i++) {
		id_of(id, i);
		families_add(fs, a, id, (size_t)(i % 2 ? 100 * i : 10 * i));
	}
	/* widths: 1:100 2:20 3:300 4:40 5:500 6:60 -> kept 5, 3, 1, 6 */
	assert_int_equal(families_get(fs, a, got, FAMILY_SOURCES), FAMILY_SOURCES);
	{
		const int want[FAMILY_SOURCES] = {5, 3, 1, 6};

		for (int i = 0; i < FAMILY_SOURCES; i++) {
			id_of(id, want[i]);
			assert_memory_equal(got[i], id, STORE_ID_LEN);
		}
	}
	/* an id stored again takes its new width, not a second place */
	id_of(id, 6);
	families_add(fs, a, id, 1000);
	assert_int_equal(families_get(fs, a, got, FAMILY_SOURCES), FAMILY_SOURCES);
	assert_memory_equal(got[0], id, STORE_ID_LEN);
	id_of(id, 5);
	assert_memory_equal(got[1], id, STORE_ID_LEN);
	/* narrower than every one kept: not kept */
	id_of(id, 7);
	families_add(fs, a, id, 1);
	for (int i = 0; i < FAMILY_SOURCES; i++)
		assert_memory_not_equal(got[i], id, STORE_ID_LEN);
	/* dropping: the family goes with its last id */
	{
		const int kept[FAMILY_SOURCES] = {6, 5, 3, 1};

		for (int i = 0; i < FAMILY_SOURCES; i++) {
			id_of(id, kept[i]);
			families_drop(fs, a, id);
		}
	}
	assert_int_equal(families_get(fs, a, got, FAMILY_SOURCES), 0);
	assert_int_equal(families_count(fs), 0);
	/* bounded: a third family forgets the least recently used */
	id_of(id, 1);
	families_add(fs, a, id, 1);
	families_add(fs, b, id, 1);
	assert_int_equal(families_get(fs, a, got, 1), 1); /* a is now the most recent */
	families_add(fs, c, id, 1);
	assert_int_equal(families_count(fs), 2);
	assert_int_equal(families_get(fs, b, got, 1), 0);
	assert_int_equal(families_get(fs, a, got, 1), 1);
	assert_int_equal(families_get(fs, c, got, 1), 1);
	families_clear(fs);
	assert_int_equal(families_count(fs), 0);
	families_free(fs);
}

/* ---- derived, on a real store ---- */

static const char body100[] = "["
	"{\"id\":\"a\",\"last_message_at\":\"2025-12-31T00:00:00.000Z\"},"
	"{\"id\":\"b\",\"last_message_at\":\"2025-12-30T00:00:00.000Z\"},"
	"{\"id\":\"c\",\"last_message_at\":\"2025-12-20T00:00:00.000Z\"},"
	"{\"id\":\"d\",\"last_message_at\":\"2025-11-01T00:00:00.000Z\"}]";

/* Stores `body` as the answer to `q` for `key`, stored at `at` for ttl_s,
 * indexed in dv. */
static void put(struct store *st, struct deriver *dv, const char *key, const char *q,
		const char *body, int64_t at, int64_t ttl_s, uint8_t id[STORE_ID_LEN])
{
	struct store_entry e;

	memset(&e, 0, sizeof(e));
	store_hash_api_key(key, strlen(key), e.keyhash);
	e.stored_ms = at;
	e.expires_ms = at + ttl_s * 1000;
	e.query = q;
	e.query_len = strlen(q);
	e.content_type = "application/json; charset=utf-8";
	e.content_type_len = strlen(e.content_type);
	e.body = body;
	e.body_len = strlen(body);
	store_entry_id(e.keyhash, q, e.query_len, id);
	assert_int_equal(store_put(st, id, &e), STORE_OK);
	if (dv)
		deriver_note(dv, e.keyhash, q, e.query_len, id, e.body_len);
}

/* Tries Q (a canonical query) for `key` at `now` with Q's TTL ttl_s. */
static int try_q(struct deriver *dv, struct store *st, unsigned rules, const char *key,
		 const char *q, int64_t ttl_s, int64_t now, struct derived *d, int *why)
{
	uint8_t kh[STORE_KEYHASH_LEN], id[STORE_ID_LEN];

	store_hash_api_key(key, strlen(key), kh);
	store_entry_id(kh, q, strlen(q), id);
	return deriver_try(dv, st, rules, kh, id, q, strlen(q), ttl_s * 1000, INT64_MIN, now, d,
			   why);
}

static void test_pages_and_days_from_a_stored_answer(void **state)
{
	struct store *st = open_store();
	struct deriver *dv = deriver_new(16);
	struct derived d;
	uint8_t id[STORE_ID_LEN];
	int why;

	(void)state;
	put(st, dv, "key-a", "days=365&limit=100", body100, NOW, 60, id);
	/* pages: the 2nd and 3rd elements */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=2&offset=1",
			       60, NOW + 1000, &d, &why), 1);
	assert_int_equal(d.rule, DERIVE_RULE_PAGES);
	assert_int_equal(d.count, 2);
	assert_int_equal(d.s_count, 4);
	assert_memory_equal(d.body, "[{\"id\":\"b\"", 10);
	assert_string_equal(d.content_type, "application/json; charset=utf-8");
	assert_int_equal(d.stored_ms, NOW);
	assert_int_equal(d.expires_ms, NOW + 60000);
	derived_clear(&d);
	/* days: a prefix cut at S's fetch time (NOW): 2 days back keeps a, b */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=2&limit=100", 60,
			       NOW + 1000, &d, &why), 1);
	assert_int_equal(d.rule, DERIVE_RULE_DAYS);
	assert_int_equal(d.count, 2);
	derived_clear(&d);
	/* Q's TTL shorter than S's: expires sooner */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=1", 10,
			       NOW + 1000, &d, &why), 1);
	assert_int_equal(d.expires_ms, NOW + 10000);
	derived_clear(&d);
	/* ... and too old for Q's TTL: not used */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=1", 10,
			       NOW + 11000, &d, &why), 0);
	assert_int_equal(why, DERIVED_STALE_SOURCE);
	/* rules not enabled (days relates equal days too: not that one) */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_CURSORS, "key-a", "days=365&limit=2&offset=1",
			       60, NOW + 1000, &d, &why), 0);
	deriver_free(dv);
	store_close(st);
}

static void test_never_across_keys_never_stale(void **state)
{
	struct store *st = open_store();
	struct deriver *dv = deriver_new(16);
	struct derived d;
	uint8_t id[STORE_ID_LEN];
	int why;

	(void)state;
	put(st, dv, "key-a", "days=365&limit=100", body100, NOW, 60, id);
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-b", "days=365&limit=2", 60,
			       NOW + 1000, &d, &why), 0);
	assert_int_equal(why, DERIVED_NO_SOURCE);
	/* past S's expiry: stale, and forgotten from the index */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=2", 600,
			       NOW + 60000, &d, &why), 0);
	assert_int_equal(why, DERIVED_STALE_SOURCE);
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=2", 600,
			       NOW + 60000, &d, &why), 0);
	assert_int_equal(why, DERIVED_NO_SOURCE);
	/* not inside: the reason from the source is reported */
	put(st, dv, "key-a", "days=364&limit=4", body100, NOW, 60, id);
	assert_int_equal(try_q(dv, st, DERIVE_RULE_PAGES, "key-a", "days=364&limit=4&offset=2",
			       60, NOW + 1000, &d, &why), 0);
	assert_int_equal(why, DERIVE_NOT_INSIDE);
	/* an entry deleted behind the index's back is dropped from it */
	assert_int_equal(store_delete(st, id), STORE_OK);
	assert_int_equal(try_q(dv, st, DERIVE_RULE_PAGES, "key-a", "days=364&limit=2", 60,
			       NOW + 1000, &d, &why), 0);
	assert_int_equal(why, DERIVED_NO_SOURCE);
	deriver_free(dv);
	store_close(st);
}

static void test_rebuild_from_the_store(void **state)
{
	struct store *st = open_store();
	struct deriver *dv = deriver_new(16);
	struct derived d;
	uint8_t id[STORE_ID_LEN];
	int why;

	(void)state;
	put(st, NULL, "key-a", "days=365&limit=100", body100, NOW, 60, id);
	put(st, NULL, "key-a", "days=30&limit=100", body100, NOW - 120000, 60, id); /* stale */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=1", 60,
			       NOW, &d, &why), 0);
	assert_int_equal(deriver_rebuild(dv, st, NOW), 1);
	assert_true(deriver_families(dv) >= 2); /* pages and days */
	assert_int_equal(try_q(dv, st, DERIVE_RULE_ALL, "key-a", "days=365&limit=1", 60,
			       NOW, &d, &why), 1);
	derived_clear(&d);
	deriver_clear(dv);
	assert_int_equal(deriver_families(dv), 0);
	deriver_free(dv);
	store_close(st);
}

/* ---- the derived flag in a record ---- */

static void test_record_keeps_the_rule(void **state)
{
	struct store *st = open_store();
	struct store_entry e, out;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN];

	(void)state;
	memset(&e, 0, sizeof(e));
	store_hash_api_key("k", 1, e.keyhash);
	e.stored_ms = NOW;
	e.expires_ms = NOW + 1000;
	e.query = "days=1&limit=1";
	e.query_len = strlen(e.query);
	e.body = "[]";
	e.body_len = 2;
	e.derived = DERIVE_RULE_CURSORS;
	store_entry_id(e.keyhash, e.query, e.query_len, id);
	assert_int_equal(store_put(st, id, &e), STORE_OK);
	assert_int_equal(store_get(st, id, &view, &out), STORE_OK);
	assert_int_equal(out.derived, DERIVE_RULE_CURSORS);
	store_view_release(view);
	e.derived = 8; /* not a rule: refused, nothing written */
	assert_int_equal(store_put(st, id, &e), STORE_INVALID);
	store_close(st);
}

/* ---- eviction by bytes ---- */

static void test_a_large_answer_fits_among_small_ones(void **state)
{
	struct store *st = open_store();
	struct lru *l = lru_new();
	static char big[900 * 1024];
	char q[64], small[200];
	struct store_entry e;
	uint8_t id[STORE_ID_LEN];
	size_t evicted = 0;
	int n = 0;

	(void)state;
	memset(small, 'x', sizeof(small) - 1);
	small[sizeof(small) - 1] = '\0';
	/* fill the 8 MB map with small answers */
	for (int i = 0; i < 200000; i++) {
		memset(&e, 0, sizeof(e));
		store_hash_api_key("k", 1, e.keyhash);
		snprintf(q, sizeof(q), "days=1&offset=%d", i);
		e.stored_ms = NOW;
		e.expires_ms = NOW + 600000;
		e.query = q;
		e.query_len = strlen(q);
		e.body = small;
		e.body_len = sizeof(small) - 1;
		store_entry_id(e.keyhash, q, e.query_len, id);
		if (store_put(st, id, &e) == STORE_FULL)
			break;
		n++;
	}
	assert_true(n > 1000);
	memset(big, 'y', sizeof(big));
	memset(&e, 0, sizeof(e));
	store_hash_api_key("k", 1, e.keyhash);
	e.stored_ms = NOW;
	e.expires_ms = NOW + 600000;
	e.query = "days=365";
	e.query_len = strlen(e.query);
	e.body = big;
	e.body_len = sizeof(big);
	store_entry_id(e.keyhash, e.query, e.query_len, id);
	assert_int_equal(lru_put(l, st, id, &e, NOW, &evicted), STORE_OK);
	print_message("%d small answers, %zu evicted for a %zu-byte one\n", n, evicted,
		      sizeof(big));
	/* LMDB needs the large value's pages in one run: among small entries
	 * freed here and there that takes most of the map (see lru.h) */
	assert_true(evicted > 0 && evicted <= (size_t)n);
	/* a headroom is left free for the next ones */
	{
		uint64_t free_b, map_b;

		assert_int_equal(store_free_bytes(st, &free_b, &map_b), 0);
		assert_true(free_b >= map_b / 16);
	}
	lru_free(l);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_families_widest_first_and_bounded),
		cmocka_unit_test_setup_teardown(test_pages_and_days_from_a_stored_answer, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_never_across_keys_never_stale, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rebuild_from_the_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_keeps_the_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_large_answer_fits_among_small_ones, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
