/*
 * cg-fuzz-seeds: writes the binary seeds of two corpora (run by
 * make_corpus.sh; the results are checked in):
 *   OUT/import_line/ entry lines as export writes them;
 *   OUT/record/   records as record_write makes them, with fuzz_record's
 *                 mode byte in front;
 *   OUT/mdb_open/ small data.mdb files of several shapes (empty, one entry,
 *                 an overflow body, a two-level tree, a free list after
 *                 deletes), each a few pages.
 * Usage: cg-fuzz-seeds OUT
 */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/record.h"
#include "cache/store.h"
#include "cache/tool.h"

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "cg-fuzz-seeds: cannot write %s\n", path);
		exit(1);
	}
}

static void entry(struct store_entry *e, const char *key, const char *query,
		  const char *body, size_t body_len, uint8_t id[STORE_ID_LEN])
{
	memset(e, 0, sizeof(*e));
	store_hash_api_key(key, strlen(key), e->keyhash);
	e->stored_ms = 1767225600000;
	e->expires_ms = 1767225660000;
	e->query = query;
	e->query_len = strlen(query);
	e->content_type = "application/json; charset=utf-8";
	e->content_type_len = strlen(e->content_type);
	e->body = body;
	e->body_len = body_len;
	e->etag = XXH3_64bits(body, body_len);
	store_entry_id(e->keyhash, query, e->query_len, id);
}

static void records(const char *out)
{
	static const char *const bodies[] = {"[]", "[{\"id\":1}]", "", "[1,2,3,4,5,6,7]"};
	char path[4096];
	int k = 0;

	for (int b = 0; b < 4; b++)
		for (int mode = 0; mode < 8; mode += 3) {
			struct store_entry e;
			uint8_t id[STORE_ID_LEN], buf[1 + 512];
			size_t n;

			entry(&e, "sim-key-alpha", b % 2 ? "days=30" : "days=7&limit=10", bodies[b],
			      strlen(bodies[b]), id);
			n = record_size(&e);
			buf[0] = (uint8_t)(mode | (b & 1 ? 2 : 0));
			record_write(buf + 1, &e);
			snprintf(path, sizeof(path), "%s/record/seed-%02d", out, k++);
			write_file(path, buf, n + 1);
		}
}

/* Entry lines as export writes them (without the newline). */
static void import_lines(const char *out)
{
	static const char *const queries[] = {"days=30", "days=1&limit=2", "q=%C3%A9\x01\xff"};
	static const char *const bodies[] = {"[{\"id\":1}]", "", "[\"\\u00e9\"]"};
	char path[4096];

	for (int i = 0; i < 3; i++) {
		struct store_entry e;
		uint8_t id[STORE_ID_LEN];
		char *line = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&line, &len);

		entry(&e, "sim-key-alpha", queries[i], bodies[i], strlen(bodies[i]), id);
		if (f == NULL)
			exit(1);
		cache_export_line(f, &e);
		fclose(f);
		snprintf(path, sizeof(path), "%s/import_line/entry-%d", out, i);
		write_file(path, line, len - 1);
		free(line);
	}
}

static void copy_store(const char *dir, const char *out, const char *name)
{
	char path[4096], dst[4096];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0)
		exit(1);
	rewind(f);
	if ((buf = malloc((size_t)n)) == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
		exit(1);
	fclose(f);
	snprintf(dst, sizeof(dst), "%s/mdb_open/%s", out, name);
	write_file(dst, buf, (size_t)n);
	free(buf);
}

/* A store of `n` entries with bodies of body_len bytes, `deleted` of them
 * deleted again; its data.mdb becomes OUT/mdb_open/NAME. */
static void store_seed(const char *out, const char *name, int n, size_t body_len, int deleted)
{
	char dir[] = "/tmp/cg-fuzz-seeds-XXXXXX", err[512], cmd[160], packed[64];
	static char body[6000];
	struct store *st;

	if (mkdtemp(dir) == NULL)
		exit(1);
	if ((st = store_open(dir, 1u << 20, 8, 0, err, sizeof(err))) == NULL) {
		fprintf(stderr, "cg-fuzz-seeds: %s\n", err);
		exit(1);
	}
	memset(body, '7', sizeof(body));
	body[0] = '[';
	for (int i = 0; i < n; i++) {
		struct store_entry e;
		uint8_t id[STORE_ID_LEN];
		char query[32];

		snprintf(query, sizeof(query), "days=%d", i + 1);
		entry(&e, i % 2 ? "sim-key-alpha" : "sim-key-bravo", query, body,
		      body_len < sizeof(body) ? body_len : sizeof(body), id);
		if (store_put(st, id, &e) != STORE_OK)
			exit(1);
		if (i < deleted)
			store_delete(st, id);
	}
	store_close(st);
	if (deleted) {
		copy_store(dir, out, name); /* as written: with its free list */
	} else {
		/* compacted by LMDB (no free pages): a smaller seed */
		MDB_env *env;

		snprintf(packed, sizeof(packed), "%s/packed", dir);
		mkdir(packed, 0700);
		if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 2) != 0 ||
		    mdb_env_open(env, dir, MDB_RDONLY, 0600) != 0 ||
		    mdb_env_copy2(env, packed, MDB_CP_COMPACT) != 0)
			exit(1);
		mdb_env_close(env);
		copy_store(packed, out, name);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		exit(1);
}

int main(int argc, char **argv)
{
	char path[4096];

	if (argc != 2) {
		fprintf(stderr, "usage: cg-fuzz-seeds OUT\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/record", argv[1]);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/mdb_open", argv[1]);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/import_line", argv[1]);
	mkdir(path, 0755);
	records(argv[1]);
	import_lines(argv[1]);
	store_seed(argv[1], "empty", 0, 0, 0);
	store_seed(argv[1], "one", 1, 40, 0);
	store_seed(argv[1], "three", 3, 200, 0);
	store_seed(argv[1], "overflow", 2, 5000, 0);
	store_seed(argv[1], "two-levels", 40, 60, 0);
	store_seed(argv[1], "free-list", 12, 100, 8);
	store_seed(argv[1], "mixed", 8, 2500, 3);
	return 0;
}
