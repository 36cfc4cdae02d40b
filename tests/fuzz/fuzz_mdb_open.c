/*
 * fuzz_mdb_open: the store's open path on a damaged data.mdb.
 *
 * The input is written as data.mdb into a scratch directory (in /dev/shm
 * when there is one) with no lock file, and then: store_open as the cache
 * tools do (STORE_EXISTING); if it opens, a scan (every record it hands
 * out must verify), a count, a put, get and delete of a new entry, an
 * eviction and a sync; then store_salvage (`cache check` / `recover`),
 * whatever store_open said. Property: no input crashes any of it (a SIGBUS
 * from the map, an out-of-bounds read in LMDB), which is what the checks
 * before LMDB maps the file are for; and records handed out verify.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/store.h"

static char dir[64];
static char data_path[96], lock_path[96];

static void cleanup(void)
{
	unlink(data_path);
	unlink(lock_path);
	rmdir(dir);
}

static int scan_check(const uint8_t id[STORE_ID_LEN], enum store_status status,
		      const struct store_entry *e, void *arg)
{
	uint8_t again[STORE_ID_LEN];

	(void)arg;
	if (status == STORE_OK) {
		if (e == NULL || e->query_len > STORE_QUERY_MAX)
			abort();
		store_entry_id(e->keyhash, e->query, e->query_len, again);
		if (memcmp(again, id, STORE_ID_LEN) != 0)
			abort();
	} else if (e != NULL) {
		abort();
	}
	return 0;
}

static void use(struct store *st)
{
	struct store_entry e, got;
	struct store_view *view;
	uint8_t id[STORE_ID_LEN];

	store_scan(st, scan_check, NULL);
	store_count(st);
	memset(&e, 0, sizeof(e));
	store_hash_api_key("fuzz", 4, e.keyhash);
	e.query = "days=1";
	e.query_len = 6;
	e.content_type = "application/json";
	e.content_type_len = 16;
	e.body = "[1,2,3]";
	e.body_len = 7;
	e.stored_ms = 1;
	e.expires_ms = 2;
	store_entry_id(e.keyhash, e.query, e.query_len, id);
	if (store_put(st, id, &e) == STORE_OK) {
		if (store_get(st, id, &view, &got) == STORE_OK) {
			if (got.body_len != 7 || memcmp(got.body, "[1,2,3]", 7) != 0)
				abort();
			store_view_release(view);
		}
		store_delete(st, id);
	}
	store_evict(st, 3, 16, NULL, NULL);
	store_sync(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store *st;
	struct store_salvage r;
	char err[512];
	int fd;

	if (dir[0] == '\0') {
		struct stat sb;

		snprintf(dir, sizeof(dir), "%s/cg-fuzz-mdb-XXXXXX",
			 stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp");
		if (mkdtemp(dir) == NULL)
			abort();
		snprintf(data_path, sizeof(data_path), "%s/data.mdb", dir);
		snprintf(lock_path, sizeof(lock_path), "%s/lock.mdb", dir);
		atexit(cleanup);
	}
	unlink(lock_path);
	if ((fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
	if ((st = store_open(dir, 1u << 20, 8, STORE_EXISTING, err, sizeof(err))) != NULL) {
		use(st);
		store_close(st);
	}
	if (store_salvage(dir, scan_check, NULL, &r, err, sizeof(err)) == STORE_OK &&
	    r.pages_missing == 0 && r.damaged == 0 && r.needed_bytes > r.file_bytes + 4095)
		abort(); /* a whole snapshot lies within the file */
	return 0;
}
