/*
 * store: see store.h.
 *
 * Record layout, little-endian, no padding (read with memcpy: LMDB gives no
 * alignment guarantee):
 *
 *   0  u32 magic "CGR1"     4  u16 version (1)    6  u16 flags (0)
 *   8  i64 stored_ms       16  i64 expires_ms    24  u64 etag
 *  32  u8[32] key hash     64  u32 query_len     68  u32 ctype_len
 *  72  u64 body_len        80  query, ctype, body bytes
 *  end-8  u64 XXH3-64 of every byte before it
 *
 * A record verifies when its size is exactly 88 + the three lengths, magic
 * and version match, and the checksum matches. The id is not stored in the
 * record, but the key hash and query are, and store_get checks that they
 * hash to the id asked for, so a record can never answer for another key.
 */
#include "cache/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "policy/check.h"

#define STORE_MAGIC 0x53544f52u
#define VIEW_MAGIC 0x56494557u
#define RECORD_MAGIC 0x31524743u /* "CGR1" little-endian */
#define RECORD_VERSION 1
#define HEAD_LEN 80
#define TAIL_LEN 8
#define HEADROOM_PAGES 64 /* pages kept free for deletes (at most 1/16 of the map) */
#define RECORD_PAGES 8    /* besides its own: the B-tree path, the free list */

struct store {
	unsigned magic;
	MDB_env *env;
	MDB_dbi dbi;  /* "entries": id -> record */
	MDB_dbi meta; /* "meta": format version, eviction counter */
	int lock_fd;
	uint8_t evict_from[STORE_ID_LEN]; /* where the next eviction scan starts */
};

struct candidate {
	uint8_t id[STORE_ID_LEN];
	int64_t used_ms;
};

struct store_view {
	unsigned magic;
	MDB_txn *txn;
};

static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/*
 * SHA-256 through a digest fetched once: OpenSSL 3's one-shot SHA256()
 * looks the algorithm up on every call, which showed in the hit path's
 * profile. One context per thread, so several loops can hash at once.
 */
static EVP_MD *sha256_md;
static pthread_key_t sha256_key; /* frees a thread's context when it exits */

static void sha256_ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (pthread_key_create(&sha256_key, sha256_ctx_free) != 0)
		abort();
}

static void sha256_parts(const void *a, size_t a_len, const void *b, size_t b_len,
			 uint8_t out[32])
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	static _Thread_local EVP_MD_CTX *ctx;
	EVP_MD *md;
	unsigned int len = 0;

	pthread_once(&once, sha256_fetch);
	if ((md = sha256_md) == NULL)
		abort();
	if (ctx == NULL) {
		if ((ctx = EVP_MD_CTX_new()) == NULL || pthread_setspecific(sha256_key, ctx) != 0)
			abort();
	}
	if (EVP_DigestInit_ex(ctx, md, NULL) != 1 || EVP_DigestUpdate(ctx, a, a_len) != 1 ||
	    (b_len && EVP_DigestUpdate(ctx, b, b_len) != 1) ||
	    EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != 32)
		abort();
}

void store_hash_api_key(const char *key, size_t len,
			uint8_t out[STORE_KEYHASH_LEN])
{
	sha256_parts(key, len, NULL, 0, out);
}

void store_entry_id(const uint8_t keyhash[STORE_KEYHASH_LEN], const char *query,
		    size_t query_len, uint8_t out[STORE_ID_LEN])
{
	sha256_parts(keyhash, STORE_KEYHASH_LEN, query, query_len, out);
}

static int mkdir_p(const char *dir)
{
	char path[4096];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(path))
		return -1;
	memcpy(path, dir, len + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Records the format in a new store; refuses a store of another format. */
static int check_format(MDB_txn *txn, MDB_dbi meta)
{
	MDB_val key = {6, "format"}, val;
	uint32_t version = RECORD_VERSION;
	int rc = mdb_get(txn, meta, &key, &val);

	if (rc == MDB_NOTFOUND) {
		val.mv_size = sizeof(version);
		val.mv_data = &version;
		return mdb_put(txn, meta, &key, &val, 0);
	}
	if (rc != 0)
		return rc;
	if (val.mv_size != sizeof(version) || get_u32(val.mv_data) != RECORD_VERSION)
		return MDB_INCOMPATIBLE;
	return 0;
}

/*
 * LMDB reuses pages freed by a transaction only once a later one has
 * committed; a full map whose puts keep failing (aborted, so no new
 * transaction id) would never get them back. This small committed write
 * moves the clock on right after an eviction.
 */
static void advance(struct store *st)
{
	MDB_val key = {9, "evictions"}, val;
	MDB_txn *txn;
	uint64_t n = 0;

	if (mdb_txn_begin(st->env, NULL, 0, &txn) != 0)
		return;
	if (mdb_get(txn, st->meta, &key, &val) == 0 && val.mv_size == sizeof(n))
		n = get_u64(val.mv_data);
	n++;
	val.mv_size = sizeof(n);
	val.mv_data = &n;
	if (mdb_put(txn, st->meta, &key, &val, 0) != 0) {
		mdb_txn_abort(txn);
		return;
	}
	mdb_txn_commit(txn);
}

/* Does the file start with an LMDB meta page (magic 0xBEEFC0DE after the
 * 16-byte page header)? */
static int is_lmdb_file(const char *path)
{
	unsigned char head[20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, head, sizeof(head));
	close(fd);
	return n == (ssize_t)sizeof(head) && get_u32(head + 16) == 0xBEEFC0DEu;
}

struct store *store_open(const char *dir, uint64_t map_bytes,
			 unsigned max_readers, unsigned flags, char *err,
			 size_t err_size)
{
	struct store *st = calloc(1, sizeof(*st));
	char lock_path[4200];
	MDB_txn *txn = NULL;
	unsigned create = (flags & STORE_EXISTING) ? 0 : MDB_CREATE;
	struct stat sb;
	int rc;

	if (st == NULL)
		abort();
	st->magic = STORE_MAGIC;
	st->lock_fd = -1;
	if (flags & STORE_EXISTING) {
		char data_path[4200];

		snprintf(data_path, sizeof(data_path), "%s/data.mdb", dir);
		if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
			snprintf(err, err_size, "cache directory %s: %s", dir,
				 errno ? strerror(errno) : "not a directory");
			goto fail;
		}
		if (stat(data_path, &sb) != 0) {
			snprintf(err, err_size,
				 "cache directory %s holds no cache (no data.mdb)", dir);
			goto fail;
		}
		if (!is_lmdb_file(data_path)) {
			/* refused before LMDB would initialise it (an empty file) */
			snprintf(err, err_size, "cache directory %s: not a contacts-gateway "
				 "cache (data.mdb is not an LMDB file)", dir);
			goto fail;
		}
	}
	errno = 0;
	if (mkdir_p(dir) != 0 || stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, err_size, "cache directory %s: %s", dir,
			 errno ? strerror(errno) : "not a directory");
		goto fail;
	}
	if (access(dir, R_OK | W_OK | X_OK) != 0) {
		snprintf(err, err_size, "cache directory %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (flags & STORE_EXCLUSIVE) {
		snprintf(lock_path, sizeof(lock_path), "%s/gateway.lock", dir);
		st->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (st->lock_fd < 0) {
			snprintf(err, err_size, "%s: %s", lock_path, strerror(errno));
			goto fail;
		}
		if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
			snprintf(err, err_size,
				 "cache directory %s is in use by another gateway", dir);
			goto fail;
		}
	}
	if ((rc = mdb_env_create(&st->env)) != 0 ||
	    (map_bytes && (rc = mdb_env_set_mapsize(st->env, (size_t)map_bytes)) != 0) ||
	    (rc = mdb_env_set_maxreaders(st->env, max_readers)) != 0 ||
	    (rc = mdb_env_set_maxdbs(st->env, 2)) != 0 ||
	    (rc = mdb_env_open(st->env, dir, MDB_NOSYNC | MDB_NOTLS | MDB_NORDAHEAD,
			       0600)) != 0 ||
	    (rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", create, &st->meta)) != 0 ||
	    (rc = mdb_dbi_open(txn, "entries", create, &st->dbi)) != 0 ||
	    (rc = check_format(txn, st->meta)) != 0 ||
	    (rc = mdb_txn_commit(txn)) != 0) {
		if (txn && rc != 0)
			mdb_txn_abort(txn);
		snprintf(err, err_size, "cache directory %s: %s", dir,
			 rc == MDB_INCOMPATIBLE || rc == MDB_NOTFOUND
				 ? "not a contacts-gateway cache (format)"
				 : mdb_strerror(rc));
		txn = NULL;
		goto fail;
	}
	return st;
fail:
	store_close(st);
	return NULL;
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	assert(st->magic == STORE_MAGIC);
	if (st->env) {
		mdb_env_sync(st->env, 1);
		mdb_env_close(st->env);
	}
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* releases the flock */
	st->magic = 0;
	free(st);
}

/*
 * Pages the map can still give: those past the last one used plus those on
 * LMDB's free list (database 0; each value is a page list whose first word
 * is its length, as mdb_stat -f counts them), with the map's size and page
 * size in pages and bytes. 0 (total 0) if it cannot tell.
 */
static size_t free_pages(struct store *st, size_t *total, size_t *psize)
{
	MDB_envinfo info;
	MDB_stat ms;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t n;

	*total = 0;
	*psize = 4096;
	if (mdb_env_info(st->env, &info) != 0 || mdb_env_stat(st->env, &ms) != 0 ||
	    ms.ms_psize == 0)
		return 0;
	*psize = ms.ms_psize;
	*total = info.me_mapsize / ms.ms_psize;
	n = *total > info.me_last_pgno + 1 ? *total - (info.me_last_pgno + 1) : 0;
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
		return n;
	if (mdb_cursor_open(txn, 0, &cur) == 0) {
		while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0)
			if (v.mv_size >= sizeof(size_t)) {
				size_t count;

				memcpy(&count, v.mv_data, sizeof(count));
				n += count;
			}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	return n;
}

static enum store_status put_record(struct store *st, const uint8_t id[STORE_ID_LEN],
				    struct store_entry *e, int unless_newer)
{
	MDB_val key = {STORE_ID_LEN, (void *)id};
	MDB_val val;
	MDB_txn *txn = NULL;
	uint8_t *p;
	size_t size;
	int rc;

	assert(st->magic == STORE_MAGIC);
	if (e->query_len > STORE_QUERY_MAX || e->content_type_len > STORE_CTYPE_MAX ||
	    e->body_len > SIZE_MAX - HEAD_LEN - TAIL_LEN - STORE_QUERY_MAX - STORE_CTYPE_MAX)
		return STORE_INVALID;
	size = HEAD_LEN + e->query_len + e->content_type_len + e->body_len + TAIL_LEN;
	{
		/* keep headroom: on a map with none left, LMDB cannot even delete
		 * (deletes copy pages too), and eviction would be stuck */
		size_t total, psize, avail = free_pages(st, &total, &psize);
		size_t headroom = total / 16 < HEADROOM_PAGES ? total / 16 : HEADROOM_PAGES;

		if (total && avail < size / psize + RECORD_PAGES + headroom)
			return STORE_FULL;
	}
	e->etag = XXH3_64bits(e->body, e->body_len);
	if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
		goto out;
	if (unless_newer && mdb_get(txn, st->dbi, &key, &val) == 0 &&
	    val.mv_size >= HEAD_LEN && get_u32(val.mv_data) == RECORD_MAGIC &&
	    (int64_t)get_u64((const uint8_t *)val.mv_data + 8) > e->stored_ms) {
		mdb_txn_abort(txn);
		return STORE_NEWER;
	}
	val.mv_size = size;
	val.mv_data = NULL;
	/* MDB_RESERVE: LMDB hands us the space; we write the record in place. */
	if ((rc = mdb_put(txn, st->dbi, &key, &val, MDB_RESERVE)) != 0)
		goto out;
	p = val.mv_data;
	put_u32(p, RECORD_MAGIC);
	put_u16(p + 4, RECORD_VERSION);
	put_u16(p + 6, 0);
	put_u64(p + 8, (uint64_t)e->stored_ms);
	put_u64(p + 16, (uint64_t)e->expires_ms);
	put_u64(p + 24, e->etag);
	memcpy(p + 32, e->keyhash, STORE_KEYHASH_LEN);
	put_u32(p + 64, (uint32_t)e->query_len);
	put_u32(p + 68, (uint32_t)e->content_type_len);
	put_u64(p + 72, (uint64_t)e->body_len);
	p += HEAD_LEN;
	memcpy(p, e->query, e->query_len);
	p += e->query_len;
	memcpy(p, e->content_type, e->content_type_len);
	p += e->content_type_len;
	if (e->body_len)
		memcpy(p, e->body, e->body_len);
	p += e->body_len;
	put_u64(p, XXH3_64bits(val.mv_data, size - TAIL_LEN));
	rc = mdb_txn_commit(txn);
	txn = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
		return STORE_FULL;
	return rc == 0 ? STORE_OK : STORE_ERROR;
}

enum store_status store_put(struct store *st, const uint8_t id[STORE_ID_LEN],
			    struct store_entry *e)
{
	return put_record(st, id, e, 0);
}

enum store_status store_put_unless_newer(struct store *st, const uint8_t id[STORE_ID_LEN],
					 struct store_entry *e)
{
	return put_record(st, id, e, 1);
}

/* Checks a record and fills `e` with pointers into it. */
static enum store_status decode(const MDB_val *val, const uint8_t id[STORE_ID_LEN],
				struct store_entry *e)
{
	const uint8_t *p = val->mv_data;
	uint8_t check_id[STORE_ID_LEN];
	uint64_t body_len;
	uint32_t query_len, ctype_len;

	if (val->mv_size < HEAD_LEN + TAIL_LEN || get_u32(p) != RECORD_MAGIC ||
	    get_u16(p + 4) != RECORD_VERSION)
		return STORE_CORRUPT;
	query_len = get_u32(p + 64);
	ctype_len = get_u32(p + 68);
	body_len = get_u64(p + 72);
	if (query_len > STORE_QUERY_MAX || ctype_len > STORE_CTYPE_MAX ||
	    body_len != val->mv_size - HEAD_LEN - TAIL_LEN - query_len - ctype_len ||
	    body_len > val->mv_size)
		return STORE_CORRUPT;
	if (XXH3_64bits(p, val->mv_size - TAIL_LEN) !=
	    get_u64(p + val->mv_size - TAIL_LEN))
		return STORE_CORRUPT;
	e->stored_ms = (int64_t)get_u64(p + 8);
	e->expires_ms = (int64_t)get_u64(p + 16);
	e->etag = get_u64(p + 24);
	memcpy(e->keyhash, p + 32, STORE_KEYHASH_LEN);
	e->query = (const char *)p + HEAD_LEN;
	e->query_len = query_len;
	e->content_type = e->query + query_len;
	e->content_type_len = ctype_len;
	e->body = e->content_type + ctype_len;
	e->body_len = (size_t)body_len;
	store_entry_id(e->keyhash, e->query, e->query_len, check_id);
	if (memcmp(check_id, id, STORE_ID_LEN) != 0)
		return STORE_CORRUPT;
	return STORE_OK;
}

enum store_status store_get(struct store *st, const uint8_t id[STORE_ID_LEN],
			    struct store_view **view, struct store_entry *e)
{
	MDB_val key = {STORE_ID_LEN, (void *)id};
	MDB_val val;
	MDB_txn *txn;
	enum store_status s;
	struct store_view *v;
	int rc;

	assert(st->magic == STORE_MAGIC);
	*view = NULL;
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
		return STORE_ERROR;
	rc = mdb_get(txn, st->dbi, &key, &val);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc == MDB_NOTFOUND ? STORE_NOT_FOUND : STORE_ERROR;
	}
	s = decode(&val, id, e);
	if (s != STORE_OK) {
		mdb_txn_abort(txn);
		return s;
	}
	v = malloc(sizeof(*v));
	if (v == NULL)
		abort();
	v->magic = VIEW_MAGIC;
	v->txn = txn;
	*view = v;
	return STORE_OK;
}

void store_view_release(struct store_view *view)
{
	if (view == NULL)
		return;
	assert(view->magic == VIEW_MAGIC);
	mdb_txn_abort(view->txn);
	view->magic = 0;
	free(view);
}

enum store_status store_delete(struct store *st, const uint8_t id[STORE_ID_LEN])
{
	MDB_val key = {STORE_ID_LEN, (void *)id};
	MDB_txn *txn;
	int rc;

	assert(st->magic == STORE_MAGIC);
	if (mdb_txn_begin(st->env, NULL, 0, &txn) != 0)
		return STORE_ERROR;
	rc = mdb_del(txn, st->dbi, &key, NULL);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc == MDB_NOTFOUND ? STORE_NOT_FOUND : STORE_ERROR;
	}
	return mdb_txn_commit(txn) == 0 ? STORE_OK : STORE_ERROR;
}

static int by_used(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;

	return (x->used_ms > y->used_ms) - (x->used_ms < y->used_ms);
}

/*
 * Deletes the entries c[0..n) in as few write transactions as the map
 * allows. Deleting copies pages too (LMDB writes copy-on-write), so on a
 * full map a transaction deleting many entries can itself run out of room:
 * it is then retried with half as many, down to one. Returns the number
 * deleted.
 */
static size_t delete_ids(struct store *st, const struct candidate *c, size_t n)
{
	size_t done = 0, total = 0, chunk = n;

	while (done < n && chunk > 0) {
		size_t k = chunk < n - done ? chunk : n - done, deleted = 0;
		MDB_txn *txn;
		int rc = mdb_txn_begin(st->env, NULL, 0, &txn);

		if (rc != 0)
			break;
		for (size_t i = 0; i < k && rc == 0; i++) {
			MDB_val key = {STORE_ID_LEN, (void *)c[done + i].id};

			rc = mdb_del(txn, st->dbi, &key, NULL);
			if (rc == 0)
				deleted++;
			else if (rc == MDB_NOTFOUND)
				rc = 0; /* gone meanwhile (a cache tool) */
		}
		if (rc == 0) {
			rc = mdb_txn_commit(txn);
		} else {
			mdb_txn_abort(txn);
		}
		if (rc == 0) {
			done += k;
			total += deleted;
		} else if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
			chunk = k / 2;
		} else {
			break;
		}
	}
	return total;
}

size_t store_evict(struct store *st, int64_t now_ms, size_t max_scan,
		   store_last_used_fn last_used, void *arg)
{
	struct candidate *c = NULL;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val key = {STORE_ID_LEN, st->evict_from}, val;
	size_t n = 0, expired = 0, victims, deleted = 0;
	int rc, wrapped = 0;

	assert(st->magic == STORE_MAGIC);
	if (max_scan == 0 || (c = calloc(max_scan, sizeof(*c))) == NULL)
		return 0;
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0 ||
	    mdb_cursor_open(txn, st->dbi, &cur) != 0)
		goto out;
	/* 1: scan a bounded window, starting where the last scan stopped */
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	while (n < max_scan) {
		if (rc == MDB_NOTFOUND && !wrapped) {
			wrapped = 1; /* past the last key: go on from the first */
			rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
			continue;
		}
		if (rc != 0 ||
		    (wrapped && memcmp(key.mv_data, st->evict_from, STORE_ID_LEN) >= 0))
			break; /* the end, or a full circle */
		if (key.mv_size == STORE_ID_LEN) {
			const uint8_t *p = val.mv_data;
			int64_t stored = val.mv_size >= HEAD_LEN ? (int64_t)get_u64(p + 8) : 0;
			int64_t expires = val.mv_size >= HEAD_LEN ? (int64_t)get_u64(p + 16) : 0;

			memcpy(c[n].id, key.mv_data, STORE_ID_LEN);
			if (expires <= now_ms) {
				c[n].used_ms = INT64_MIN; /* expired or unreadable */
				expired++;
			} else {
				c[n].used_ms = last_used ? last_used(c[n].id, stored, arg)
							 : stored;
			}
			n++;
		}
		rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
	}
	if (rc == 0 && key.mv_size == STORE_ID_LEN)
		memcpy(st->evict_from, key.mv_data, STORE_ID_LEN);
	else
		memset(st->evict_from, 0, STORE_ID_LEN);
	mdb_cursor_close(cur);
	cur = NULL;
	/* 2: the expired go; if none, the least recently used quarter */
	qsort(c, n, sizeof(*c), by_used);
	victims = expired ? expired : (n / 4 ? n / 4 : n);
	mdb_txn_abort(txn); /* the scan's snapshot: deletes go in their own */
	txn = NULL;
	deleted = delete_ids(st, c, victims);
	if (deleted > 0)
		advance(st);
out:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	free(c);
	return deleted;
}

enum store_status store_scan(struct store *st, store_scan_fn fn, void *arg)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	int rc;

	assert(st->magic == STORE_MAGIC);
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
		return STORE_ERROR;
	if (mdb_cursor_open(txn, st->dbi, &cur) != 0) {
		mdb_txn_abort(txn);
		return STORE_ERROR;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		struct store_entry e;
		enum store_status s;

		if (key.mv_size != STORE_ID_LEN)
			continue;
		s = decode(&val, key.mv_data, &e);
		if (fn(key.mv_data, s, s == STORE_OK ? &e : NULL, arg) != 0)
			break;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : STORE_ERROR;
}

void store_usage(struct store *st, uint64_t *map_bytes, uint64_t *used_bytes)
{
	MDB_envinfo info;
	MDB_stat ms;

	*map_bytes = *used_bytes = 0;
	if (mdb_env_info(st->env, &info) != 0 || mdb_env_stat(st->env, &ms) != 0)
		return;
	*map_bytes = info.me_mapsize;
	*used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
}

int store_sync(struct store *st)
{
	return mdb_env_sync(st->env, 1) == 0 ? 0 : -1;
}

size_t store_count(struct store *st)
{
	MDB_txn *txn;
	MDB_stat ms;
	size_t n = 0;

	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_stat(txn, st->dbi, &ms) == 0)
		n = ms.ms_entries;
	mdb_txn_abort(txn);
	return n;
}

/* ---- readers ---- */

#define READER_MAGIC 0x52445252u
#define SNAP_MAGIC 0x534e4150u

struct store_snap {
	unsigned magic;
	struct store_reader *r;
	MDB_txn *txn;       /* active while in use or pinned; reset while spare */
	size_t txnid;
	unsigned refs;      /* pins */
	int64_t retired_ms; /* when first seen overtaken (0: not yet) */
	struct store_snap *next; /* on r->pinned or r->spare */
};

struct store_reader {
	unsigned magic;
	struct store *st;
	struct store_snap *cur;    /* the lookup in progress, or NULL */
	struct store_snap *pinned; /* done with, still pinned */
	struct store_snap *spare;  /* reset, ready to renew */
	size_t n_spare;
};

struct store_reader *store_reader_new(struct store *st)
{
	struct store_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
		abort();
	CHECK_OBJ_NOTNULL(st, STORE_MAGIC);
	r->magic = READER_MAGIC;
	r->st = st;
	return r;
}

static void snap_destroy(struct store_snap *s)
{
	mdb_txn_abort(s->txn);
	s->magic = 0;
	free(s);
}

/* An unpinned snapshot leaves service: reset and kept as a spare (its
 * reader slot with it), or freed past STORE_READER_SPARES. */
static void snap_park(struct store_reader *r, struct store_snap *s)
{
	if (r->n_spare >= STORE_READER_SPARES) {
		snap_destroy(s);
		return;
	}
	mdb_txn_reset(s->txn);
	s->next = r->spare;
	r->spare = s;
	r->n_spare++;
}

void store_reader_free(struct store_reader *r)
{
	if (r == NULL)
		return;
	CHECK_OBJ_NOTNULL(r, READER_MAGIC);
	CHECK(r->pinned == NULL);
	if (r->cur)
		snap_destroy(r->cur);
	while (r->spare) {
		struct store_snap *s = r->spare;

		r->spare = s->next;
		snap_destroy(s);
	}
	r->magic = 0;
	free(r);
}

/* A snapshot of the newest state: a spare renewed, or a new transaction. */
static struct store_snap *snap_fresh(struct store_reader *r)
{
	struct store_snap *s = r->spare;

	if (s != NULL) {
		r->spare = s->next;
		r->n_spare--;
		if (mdb_txn_renew(s->txn) != 0) {
			snap_destroy(s);
			return NULL;
		}
	} else {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			abort();
		s->magic = SNAP_MAGIC;
		s->r = r;
		if (mdb_txn_begin(r->st->env, NULL, MDB_RDONLY, &s->txn) != 0) {
			free(s);
			return NULL;
		}
	}
	s->txnid = mdb_txn_id(s->txn);
	s->refs = 0;
	s->retired_ms = 0;
	s->next = NULL;
	return s;
}

enum store_status store_reader_get(struct store_reader *r, const uint8_t id[STORE_ID_LEN],
				   struct store_entry *e)
{
	MDB_val key = {STORE_ID_LEN, (void *)id}, val;
	int rc;

	CHECK_OBJ_NOTNULL(r, READER_MAGIC);
	store_reader_done(r); /* a lookup the owner did not close */
	if ((r->cur = snap_fresh(r)) == NULL)
		return STORE_ERROR;
	rc = mdb_get(r->cur->txn, r->st->dbi, &key, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? STORE_NOT_FOUND : STORE_ERROR;
	return decode(&val, id, e);
}

void store_reader_done(struct store_reader *r)
{
	struct store_snap *s;

	CHECK_OBJ_NOTNULL(r, READER_MAGIC);
	if ((s = r->cur) == NULL)
		return;
	r->cur = NULL;
	if (s->refs == 0) {
		snap_park(r, s);
	} else {
		s->next = r->pinned;
		r->pinned = s;
	}
}

struct store_snap *store_reader_pin(struct store_reader *r)
{
	CHECK_OBJ_NOTNULL(r, READER_MAGIC);
	CHECK_OBJ_NOTNULL(r->cur, SNAP_MAGIC);
	r->cur->refs++;
	return r->cur;
}

void store_snap_release(struct store_snap *s)
{
	struct store_reader *r;

	CHECK_OBJ_NOTNULL(s, SNAP_MAGIC);
	CHECK(s->refs > 0);
	r = s->r;
	if (--s->refs > 0 || s == r->cur)
		return; /* still pinned, or the lookup in progress ends it */
	for (struct store_snap **p = &r->pinned; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			snap_park(r, s);
			return;
		}
	}
	CHECK(!"a pinned snapshot is current or on the pinned list");
}

int store_snap_overdue(struct store_snap *s, int64_t now_ms, int64_t limit_ms)
{
	MDB_envinfo info;

	CHECK_OBJ_NOTNULL(s, SNAP_MAGIC);
	if (s->retired_ms == 0) {
		if (mdb_env_info(s->r->st->env, &info) != 0 || info.me_last_txnid == s->txnid)
			return 0;
		s->retired_ms = now_ms; /* seen overtaken now: count from here */
		return limit_ms <= 0;
	}
	return now_ms - s->retired_ms >= limit_ms;
}
