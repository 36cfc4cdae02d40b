/* Unit tests for cache/store against a real LMDB environment in /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "cache/store.h"

#define MAP (8u << 20)

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/cg-test-store-XXXXXX");
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

static struct store *open_store(uint64_t map)
{
	char err[256];
	struct store *st = store_open(dir, map, 64, STORE_EXCLUSIVE, err, sizeof(err));

	if (st == NULL)
		fail_msg("store_open: %s", err);
	return st;
}

static void make_entry(struct store_entry *e, const char *api_key,
		       const char *query, const char *body, uint8_t id[STORE_ID_LEN])
{
	memset(e, 0, sizeof(*e));
	store_hash_api_key(api_key, strlen(api_key), e->keyhash);
	e->stored_ms = 1000;
	e->expires_ms = 61000;
	e->query = query;
	e->query_len = strlen(query);
	e->content_type = "application/json";
	e->content_type_len = strlen(e->content_type);
	e->body = body;
	e->body_len = strlen(body);
	store_entry_id(e->keyhash, query, e->query_len, id);
}

static void test_roundtrip(void **state)
{
	struct store *st = open_store(MAP);
	struct store_entry in, out;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN], other[STORE_ID_LEN];

	(void)state;
	make_entry(&in, "key-a", "days=30", "[{\"id\":1}]", id);
	assert_int_equal(store_get(st, id, &view, &out), STORE_NOT_FOUND);
	assert_null(view);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	assert_int_equal(store_get(st, id, &view, &out), STORE_OK);
	assert_int_equal(out.stored_ms, 1000);
	assert_int_equal(out.expires_ms, 61000);
	assert_int_equal(out.etag, in.etag);
	assert_memory_equal(out.keyhash, in.keyhash, STORE_KEYHASH_LEN);
	assert_int_equal(out.body_len, in.body_len);
	assert_memory_equal(out.body, in.body, in.body_len);
	assert_int_equal(out.query_len, 7);
	assert_memory_equal(out.query, "days=30", 7);
	assert_memory_equal(out.content_type, "application/json", 16);
	store_view_release(view);

	/* the same query under another key is another entry */
	make_entry(&in, "key-b", "days=30", "[]", other);
	assert_memory_not_equal(id, other, STORE_ID_LEN);
	assert_int_equal(store_get(st, other, &view, &out), STORE_NOT_FOUND);

	/* replace, then delete */
	make_entry(&in, "key-a", "days=30", "[2]", id);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	assert_int_equal(store_get(st, id, &view, &out), STORE_OK);
	assert_memory_equal(out.body, "[2]", 3);
	store_view_release(view);
	assert_int_equal(store_count(st), 1);
	assert_int_equal(store_delete(st, id), STORE_OK);
	assert_int_equal(store_delete(st, id), STORE_NOT_FOUND);
	store_close(st);
}

static void test_survives_reopen_and_never_stores_the_key(void **state)
{
	struct store *st = open_store(MAP);
	struct store_entry in, out;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN];
	char path[128], buf[4096];
	FILE *f;
	size_t n;

	(void)state;
	make_entry(&in, "secret-api-key-123", "days=7", "[]", id);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	store_close(st);
	st = open_store(MAP);
	assert_int_equal(store_get(st, id, &view, &out), STORE_OK);
	store_view_release(view);
	store_close(st);

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	f = fopen(path, "rb");
	assert_non_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		assert_null(memmem(buf, n, "secret-api-key", 14));
	fclose(f);
}

/* Flips one body byte behind the store's back: the record must not be served. */
static void test_corrupt_record_refused(void **state)
{
	struct store *st = open_store(MAP);
	struct store_entry in, out;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = {STORE_ID_LEN, id}, val, copy;
	char *bytes;

	(void)state;
	make_entry(&in, "key-a", "days=30", "[{\"id\":\"abcdef\"}]", id);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	store_close(st);

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
	assert_int_equal(mdb_get(txn, dbi, &key, &val), 0);
	bytes = malloc(val.mv_size);
	memcpy(bytes, val.mv_data, val.mv_size);
	bytes[val.mv_size - 12] ^= 0x20; /* a body byte */
	copy.mv_size = val.mv_size;
	copy.mv_data = bytes;
	assert_int_equal(mdb_put(txn, dbi, &key, &copy, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	/* a truncated record under a second id */
	mdb_env_close(env);
	free(bytes);

	st = open_store(MAP);
	assert_int_equal(store_get(st, id, &view, &out), STORE_CORRUPT);
	assert_null(view);
	assert_int_equal(store_delete(st, id), STORE_OK);
	store_close(st);
}

static void test_full_map_keeps_working(void **state)
{
	struct store *st = open_store(1u << 20);
	struct store_entry in, out;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN], first[STORE_ID_LEN], second[STORE_ID_LEN];
	char query[32];
	char *body = malloc(64 * 1024);
	int full = 0;

	(void)state;
	memset(body, 'x', 64 * 1024 - 1);
	body[64 * 1024 - 1] = '\0';
	for (int i = 0; i < 64 && !full; i++) {
		snprintf(query, sizeof(query), "days=%d", i + 1);
		make_entry(&in, "key-a", query, body, id);
		if (i == 0)
			memcpy(first, id, STORE_ID_LEN);
		if (i == 1)
			memcpy(second, id, STORE_ID_LEN);
		full = store_put(st, id, &in) == STORE_FULL;
	}
	assert_true(full);
	assert_int_equal(store_get(st, first, &view, &out), STORE_OK);
	store_view_release(view);
	/* one eviction pass makes room at once, even though LMDB reuses freed
	 * pages only after a later commit */
	(void)second;
	assert_true(store_evict(st, 0, 1000, NULL, NULL) >= 1);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	/* and a map emptied by eviction takes new records again and again */
	for (int i = 0; i < 50; i++) {
		snprintf(query, sizeof(query), "days=%d", 100 + i);
		make_entry(&in, "key-a", query, body, id);
		if (store_put(st, id, &in) == STORE_FULL) {
			assert_true(store_evict(st, 0, 1000, NULL, NULL) >= 1);
			assert_int_equal(store_put(st, id, &in), STORE_OK);
		}
	}
	store_close(st);
	free(body);
}

/* Last use: entry i was used at 1000 * (its days value), so days=1 is LRU. */
static int64_t last_used_by_query(const uint8_t id[STORE_ID_LEN], int64_t stored_ms,
				  void *arg)
{
	uint8_t(*ids)[STORE_ID_LEN] = arg;

	(void)stored_ms;
	for (int i = 0; i < 8; i++)
		if (memcmp(ids[i], id, STORE_ID_LEN) == 0)
			return 1000 * (i + 1);
	fail_msg("unknown id");
	return 0;
}

static void test_evict_expired_then_lru(void **state)
{
	struct store *st = open_store(MAP);
	struct store_entry in, out;
	struct store_view *view;
	uint8_t ids[8][STORE_ID_LEN];
	char query[32];

	(void)state;
	for (int i = 0; i < 8; i++) {
		snprintf(query, sizeof(query), "days=%d", i + 1);
		make_entry(&in, "key-a", query, "[]", ids[i]);
		in.expires_ms = i < 2 ? 5000 : 100000; /* days=1,2 expire at 5 s */
		assert_int_equal(store_put(st, ids[i], &in), STORE_OK);
	}
	/* at 10 s: only the two expired go, whatever the last use says */
	assert_int_equal(store_evict(st, 10000, 100, last_used_by_query, ids), 2);
	assert_int_equal(store_count(st), 6);
	assert_int_equal(store_get(st, ids[0], &view, &out), STORE_NOT_FOUND);
	assert_int_equal(store_get(st, ids[1], &view, &out), STORE_NOT_FOUND);
	/* nothing expired: a quarter of the 6 scanned (1), least recently used */
	assert_int_equal(store_evict(st, 10000, 100, last_used_by_query, ids), 1);
	assert_int_equal(store_get(st, ids[2], &view, &out), STORE_NOT_FOUND);
	assert_int_equal(store_get(st, ids[3], &view, &out), STORE_OK);
	store_view_release(view);
	/* a bounded scan: 2 at a time still makes progress round the ring */
	for (int round = 0; round < 10 && store_count(st) > 0; round++)
		assert_true(store_evict(st, 10000, 2, NULL, NULL) >= 1);
	assert_int_equal(store_count(st), 0);
	assert_int_equal(store_evict(st, 10000, 100, NULL, NULL), 0);
	store_close(st);
}

static void test_exclusive_and_bad_dirs(void **state)
{
	struct store *st = open_store(MAP);
	char err[256];

	(void)state;
	assert_null(store_open(dir, MAP, 64, STORE_EXCLUSIVE, err, sizeof(err)));
	assert_non_null(strstr(err, "in use by another gateway"));
	store_close(st);
	st = open_store(MAP); /* the lock went with the close */
	store_close(st);
	assert_null(store_open("/proc/version/x", MAP, 64, STORE_EXCLUSIVE, err, sizeof(err)));
	assert_non_null(strstr(err, "/proc/version/x"));
}

/* Many small entries: the case where deleting a quarter of an eviction
 * window in one transaction needs more pages than a full map has. */
static void test_full_map_of_small_entries_evicts(void **state)
{
	struct store *st = open_store(1u << 20);
	struct store_entry in;
	uint8_t id[STORE_ID_LEN];
	char query[32];
	int stored = 0, full_rounds = 0;

	(void)state;
	for (int i = 0; i < 20000; i++) {
		snprintf(query, sizeof(query), "days=%d&offset=%d", i % 365 + 1, i);
		make_entry(&in, "key-a", query, "[{\"id\":\"a small answer of some bytes\"}]",
			   id);
		if (store_put(st, id, &in) == STORE_FULL) {
			full_rounds++;
			/* every time the map fills, one pass makes room */
			assert_true(store_evict(st, 0, 1024, NULL, NULL) >= 1);
			assert_int_equal(store_put(st, id, &in), STORE_OK);
		}
		stored++;
	}
	assert_true(full_rounds > 0); /* the map did fill */
	assert_true(store_count(st) > 1000);
	assert_int_equal(stored, 20000);
	store_close(st);
}

static void test_put_unless_newer(void **state)
{
	struct store *st = open_store(MAP);
	struct store_entry in, out;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN];

	(void)state;
	make_entry(&in, "key-a", "days=30", "[\"new\"]", id);
	in.stored_ms = 2000;
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	make_entry(&in, "key-a", "days=30", "[\"old\"]", id);
	in.stored_ms = 1000;
	assert_int_equal(store_put_unless_newer(st, id, &in), STORE_NEWER);
	assert_int_equal(store_get(st, id, &view, &out), STORE_OK);
	assert_memory_equal(out.body, "[\"new\"]", 7);
	store_view_release(view);
	in.stored_ms = 3000; /* later: replaces */
	assert_int_equal(store_put_unless_newer(st, id, &in), STORE_OK);
	assert_int_equal(store_get(st, id, &view, &out), STORE_OK);
	assert_memory_equal(out.body, "[\"old\"]", 7);
	store_view_release(view);
	store_close(st);
}

struct scan_seen {
	int ok, corrupt;
	size_t body_bytes;
};

static int count_entry(const uint8_t id[STORE_ID_LEN], enum store_status status,
		       const struct store_entry *e, void *arg)
{
	struct scan_seen *seen = arg;
	uint8_t check[STORE_ID_LEN];

	if (status == STORE_OK) {
		store_entry_id(e->keyhash, e->query, e->query_len, check);
		assert_memory_equal(check, id, STORE_ID_LEN);
		seen->ok++;
		seen->body_bytes += e->body_len;
	} else {
		assert_int_equal(status, STORE_CORRUPT);
		assert_null(e);
		seen->corrupt++;
	}
	return 0;
}

static void test_scan_and_open_existing(void **state)
{
	char err[256], sub[128];
	struct store *st;
	struct store_entry in;
	struct scan_seen seen = {0};
	uint8_t id[STORE_ID_LEN];
	uint64_t map, used;

	(void)state;
	/* STORE_EXISTING refuses a missing directory and one with no store */
	snprintf(sub, sizeof(sub), "%s/missing", dir);
	assert_null(store_open(sub, 0, 8, STORE_EXISTING, err, sizeof(err)));
	assert_non_null(strstr(err, "missing"));
	assert_null(store_open(dir, 0, 8, STORE_EXISTING, err, sizeof(err)));
	assert_non_null(strstr(err, "no data.mdb"));

	st = open_store(MAP);
	make_entry(&in, "key-a", "days=30", "[1]", id);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	make_entry(&in, "key-b", "days=30", "[22]", id);
	assert_int_equal(store_put(st, id, &in), STORE_OK);
	store_close(st);

	/* an existing store opens with its own map size, beside nothing else */
	st = store_open(dir, 0, 8, STORE_EXISTING, err, sizeof(err));
	if (st == NULL)
		fail_msg("store_open: %s", err);
	store_usage(st, &map, &used);
	assert_int_equal(map, MAP);
	assert_true(used > 0 && used <= map);
	assert_int_equal(store_scan(st, count_entry, &seen), STORE_OK);
	assert_int_equal(seen.ok, 2);
	assert_int_equal(seen.corrupt, 0);
	assert_int_equal(seen.body_bytes, 7);
	store_close(st);
}

static void test_foreign_lmdb_refused(void **state)
{
	char err[256];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	(void)state;
	/* an LMDB environment of somebody else's: no "meta" database */
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "other", MDB_CREATE, &dbi), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	assert_null(store_open(dir, 0, 8, STORE_EXISTING, err, sizeof(err)));
	assert_non_null(strstr(err, "not a contacts-gateway cache"));
}

/* ---- damage: truncation, damaged pages, words for failures ---- */

/* Stores n entries, every third with a body of several pages (LMDB overflow
 * pages), and closes the store. Returns data.mdb's size. */
static off_t fill(int n)
{
	struct store *st = open_store(MAP);
	static char body[3 * 4096 + 123];
	struct stat sb;
	char path[128];

	for (int i = 0; i < n; i++) {
		struct store_entry e;
		uint8_t id[STORE_ID_LEN];
		char query[32];

		snprintf(query, sizeof(query), "days=%d", i);
		memset(body, 'a' + i % 26, sizeof(body) - 1);
		make_entry(&e, "key-a", query, body, id);
		e.body_len = i % 3 == 0 ? sizeof(body) - 1 : (size_t)(10 + i);
		assert_int_equal(store_put(st, id, &e), STORE_OK);
	}
	store_close(st);
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_size;
}

static void truncate_to(off_t len)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	assert_int_equal(truncate(path, len), 0);
}

static int count_scan(const uint8_t id[STORE_ID_LEN], enum store_status status,
		      const struct store_entry *e, void *arg)
{
	(void)id;
	(void)e;
	if (status == STORE_OK)
		(*(int *)arg)++;
	return 0;
}

static void test_truncated_file_refused_at_open(void **state)
{
	off_t size = fill(60);
	off_t lengths[] = {0, 100, 4096, 8192, size / 2, size - 4096, size - 1};
	char err[512], copy[160];

	(void)state;
	snprintf(copy, sizeof(copy), "cp %s/data.mdb %s/whole", dir, dir);
	assert_int_equal(system(copy), 0);
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		struct store_salvage r;
		int intact = 0;
		enum store_status s;

		snprintf(copy, sizeof(copy), "cp %s/whole %s/data.mdb", dir, dir);
		assert_int_equal(system(copy), 0);
		truncate_to(lengths[i]);
		/* the gateway's open and the tools' open alike */
		assert_null(store_open(dir, MAP, 64, STORE_EXCLUSIVE, err, sizeof(err)));
		assert_non_null(strstr(err, "data.mdb is truncated ("));
		assert_non_null(strstr(err, "run 'contacts-gateway cache recover'"));
		assert_null(store_open(dir, 0, 64, STORE_EXISTING, err, sizeof(err)));
		assert_non_null(strstr(err, "truncated"));
		/* the salvage reads what is left, never more than was stored */
		s = store_salvage(dir, count_scan, &intact, &r, err, sizeof(err));
		if (lengths[i] < 4096) {
			assert_int_equal(s, STORE_ERROR);
			assert_non_null(strstr(err, "truncated"));
			continue;
		}
		assert_int_equal(s, STORE_OK);
		assert_true(r.pages_missing > 0 || r.damaged > 0);
		assert_int_equal((uint64_t)intact, r.intact);
		assert_true(intact < 60);
		assert_int_equal(r.corrupt, 0);
	}
	/* whole again: clean, every entry intact */
	snprintf(copy, sizeof(copy), "cp %s/whole %s/data.mdb", dir, dir);
	assert_int_equal(system(copy), 0);
	{
		struct store_salvage r;
		int intact = 0;

		assert_int_equal(store_salvage(dir, count_scan, &intact, &r, err, sizeof(err)),
				 STORE_OK);
		assert_int_equal(intact, 60);
		assert_int_equal(r.pages_missing + r.damaged + r.corrupt, 0);
		assert_true(r.pinned);
		store_close(open_store(MAP));
	}
}

static void test_damaged_page_refused(void **state)
{
	char path[128], err[512];
	struct store_salvage r;
	struct store *st;
	int fd, intact = 0;
	uint8_t head[16];
	uint16_t lower = 3; /* odd, below the header: a broken node table */
	long pg;

	(void)state;
	fill(200);
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	assert_true((fd = open(path, O_RDWR)) >= 0);
	/* damage leaf pages one by one until one in use is hit (a free one
	 * is no damage: nothing reads it) */
	for (pg = 2; pread(fd, head, sizeof(head), pg * 4096) == sizeof(head); pg++) {
		uint16_t flags, saved;

		memcpy(&flags, head + 10, 2);
		if (flags != 0x02)
			continue;
		memcpy(&saved, head + 12, 2);
		assert_int_equal(pwrite(fd, &lower, 2, pg * 4096 + 12), 2);
		if ((st = store_open(dir, MAP, 64, STORE_EXCLUSIVE, err, sizeof(err))) == NULL)
			break;
		store_close(st);
		assert_int_equal(pwrite(fd, &saved, 2, pg * 4096 + 12), 2);
	}
	close(fd);
	assert_non_null(strstr(err, "data.mdb is damaged ("));
	assert_int_equal(store_salvage(dir, count_scan, &intact, &r, err, sizeof(err)),
			 STORE_OK);
	assert_true(r.damaged > 0);
	assert_true(intact <= 200); /* the page may be in the free list's tree */
}

static void test_truncated_while_open(void **state)
{
	struct store *st;
	struct store_view *view;
	struct store_entry e;
	uint8_t id[STORE_ID_LEN];

	(void)state;
	fill(60);
	st = open_store(MAP);
	make_entry(&e, "key-a", "days=59", "x", id);
	assert_int_equal(store_get(st, id, &view, &e), STORE_OK);
	store_view_release(view);
	/* another process cuts the file: the next read faults inside LMDB (a
	 * SIGBUS the store catches), and the store is off from then on */
	truncate_to(8192);
	assert_int_equal(store_get(st, id, &view, &e), STORE_ERROR);
	assert_null(view);
	assert_non_null(strstr(store_last_error(st), "truncated"));
	assert_int_equal(store_put(st, id, &e), STORE_ERROR);
	assert_int_equal(store_sync(st), -1);
	assert_int_equal(store_count(st), 0);
	store_close(st);
}

static void test_shrink_seen_by_sync(void **state)
{
	struct store *st;
	struct store_view *view;
	struct store_entry e;
	uint8_t id[STORE_ID_LEN];
	char path[128];
	struct stat sb;

	(void)state;
	fill(30);
	st = open_store(MAP);
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	assert_int_equal(stat(path, &sb), 0);
	truncate_to(sb.st_size - 1); /* a byte: no page read faults yet */
	assert_int_equal(store_sync(st), -1);
	assert_non_null(strstr(store_last_error(st), "shrank"));
	make_entry(&e, "key-a", "days=1", "x", id);
	assert_int_equal(store_get(st, id, &view, &e), STORE_ERROR);
	store_close(st);
}

static void test_errors_in_words(void **state)
{
	struct store *st = open_store(1u << 20);
	struct store_entry e;
	uint8_t id[STORE_ID_LEN];
	static char big[2u << 20];
	enum store_status s;

	(void)state;
	assert_string_equal(store_last_error(st), "no error");
	for (int i = STORE_OK; i <= STORE_NEWER; i++)
		assert_true(strlen(store_strerror((enum store_status)i)) > 5);
	make_entry(&e, "key-a", "days=1", "x", id);
	e.body = big;
	e.body_len = sizeof(big);
	s = store_put(st, id, &e);
	assert_int_equal(s, STORE_FULL);
	assert_non_null(strstr(store_last_error(st), "full"));
	e.query_len = STORE_QUERY_MAX + 1;
	assert_int_equal(store_put(st, id, &e), STORE_INVALID);
	assert_non_null(strstr(store_last_error(st), "bounds"));
	store_close(st);
}

/* Many writers' worth of churn (puts, replacements, deletes, evictions on a
 * full map) leaves a file the checks at open accept: they must never refuse
 * what LMDB wrote. */
static void test_churned_file_passes_the_checks(void **state)
{
	char err[512];
	struct store_salvage r;
	int intact = 0;

	(void)state;
	for (int round = 0; round < 3; round++) {
		struct store *st = open_store(1u << 20);

		for (int i = 0; i < 3000; i++) {
			struct store_entry e;
			uint8_t id[STORE_ID_LEN];
			char query[32];
			static char body[9000];

			snprintf(query, sizeof(query), "days=%d", (i * 7 + round) % 500);
			memset(body, 'k', sizeof(body) - 1);
			make_entry(&e, "key-b", query, body, id);
			e.body_len = (size_t)(i * 131) % (sizeof(body) - 1);
			e.expires_ms = i % 5 ? 1 : INT64_C(1) << 50;
			if (store_put(st, id, &e) == STORE_FULL)
				store_evict(st, 2, 64, NULL, NULL);
			if (i % 11 == 0)
				store_delete(st, id);
		}
		store_close(st);
	}
	store_close(open_store(0));
	assert_int_equal(store_salvage(dir, count_scan, &intact, &r, err, sizeof(err)),
			 STORE_OK);
	assert_int_equal(r.pages_missing + r.damaged + r.corrupt, 0);
	assert_true(intact > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_survives_reopen_and_never_stores_the_key,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_record_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_map_keeps_working, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_expired_then_lru, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exclusive_and_bad_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_and_open_existing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_put_unless_newer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_map_of_small_entries_evicts, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_foreign_lmdb_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_file_refused_at_open, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_damaged_page_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_while_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shrink_seen_by_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_in_words, setup, teardown),
		cmocka_unit_test_setup_teardown(test_churned_file_passes_the_checks, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
