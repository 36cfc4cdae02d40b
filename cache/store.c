/*
 * store: see store.h.
 *
 * Records: cache/record.c (layout, checks).
 *
 * Damage. LMDB reads data.mdb through a memory map and trusts it: a page
 * past the end of a truncated file is a SIGBUS, a damaged page an
 * out-of-bounds read. So store_open first reads the file without the map
 * (cache/mdbfile.c: pread, every page checked) and refuses a file that
 * does not cover every page its trees use, or whose pages fail a check,
 * before LMDB follows any of them. The walk holds an LMDB read transaction
 * of the snapshot it checks, so a writer beside it (a gateway, a cache
 * tool) cannot reuse those pages meanwhile.
 *
 * A file truncated while the store is open (by another process: LMDB never
 * shrinks it) is caught three ways: every write and store_sync compare the
 * file's size with the largest seen (a write past a hole would make LMDB
 * read zeros as pages later); and a SIGBUS inside a store call (a read of a
 * page that is gone) jumps back out of LMDB through a handler store_open
 * installs (guard_* below; a SIGBUS elsewhere goes to the handler that was
 * there before, by default the process's death). Either way the store is "broken":
 * every later call fails with STORE_ERROR without touching LMDB, and
 * store_last_error says why. What is left: a truncation landing between
 * store_get's return and the last byte of a zero-copy answer leaving (the
 * caller reads the map then: a write(2) from a missing page fails with
 * EFAULT, but a memcpy by the caller would still fault); and a writer
 * interrupted by the SIGBUS keeps LMDB's write lock until the process
 * exits, so other processes writing that directory wait until then.
 */
#include "cache/store.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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
#include <stdatomic.h>
#include <xxhash.h>

#include "cache/mdbfile.h"
#include "cache/record.h"
#include "policy/check.h"

#define STORE_MAGIC 0x53544f52u
#define BROKEN_SHRANK 1 /* store.broken: the writer saw the file shrink or fault */
#define BROKEN_READER 2 /* a reader's lookup faulted */
#define VIEW_MAGIC 0x56494557u
#define FORMAT_VERSION 1 /* of the records: cache/record.c */
#define PIN_TRIES 8      /* read transactions tried to pin the snapshot checked */
#define HEADROOM_PAGES 64 /* pages kept free for deletes (at most 1/16 of the map) */
#define RECORD_PAGES 8    /* besides its own: the B-tree path, the free list */

struct store {
	unsigned magic;
	MDB_env *env;
	MDB_dbi dbi;  /* "entries": id -> record */
	MDB_dbi meta; /* "meta": format version, eviction counter */
	int lock_fd;
	int data_fd;        /* LMDB's fd of data.mdb: fstat only */
	uint64_t size_seen; /* largest size of data.mdb seen: it never shrinks */
	/* data.mdb was truncated under us: LMDB is not touched again. Set by
	 * the writer's thread or (BROKEN_READER) a front loop's reader; read
	 * by every thread: atomic */
	_Atomic int broken;
	/* inside a guarded call: the transaction and cursor it has open, so
	 * that a SIGBUS that abandons them leaves them for store_close */
	MDB_txn *live_txn;
	MDB_cursor *live_cursor;
	int live_write;
	MDB_txn *abandoned_txn;
	MDB_cursor *abandoned_cursor;
	int abandoned_write;
	uint8_t evict_from[STORE_ID_LEN]; /* where the next eviction scan starts */
	char last_error[STORE_ERROR_MAX];
};

struct candidate {
	uint8_t id[STORE_ID_LEN];
	int64_t used_ms;
	size_t bytes; /* the record's size */
};

struct store_view {
	unsigned magic;
	MDB_txn *txn;
};

static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- words for failures ---- */

static void set_error(struct store *st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Keeps the cause of the last failure, for store_last_error. */
static void set_error(struct store *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->last_error, sizeof(st->last_error), fmt, ap);
	va_end(ap);
}

const char *store_strerror(enum store_status s)
{
	switch (s) {
	case STORE_OK: return "success";
	case STORE_NOT_FOUND: return "no such entry";
	case STORE_CORRUPT: return "the stored record failed its checksum or bounds";
	case STORE_FULL: return "the cache map is full";
	case STORE_INVALID: return "the entry breaks a size bound";
	case STORE_ERROR: return "the cache could not be read or written";
	case STORE_NEWER: return "a newer answer is stored";
	}
	return "unknown store status";
}

const char *store_last_error(const struct store *st)
{
	/* a reader's fault writes no text (last_error is the writer's thread's) */
	if (atomic_load(&st->broken) == BROKEN_READER)
		return "reading data.mdb for a hit faulted (SIGBUS): the file was truncated "
		       "while in use; the cache is disabled until a restart (run "
		       "'contacts-gateway cache check')";
	return st->last_error[0] ? st->last_error : "no error";
}

/* ---- the truncation guard ---- */

/* Set while this thread runs LMDB code inside a store call: where a SIGBUS
 * (a page of the map the file no longer has) jumps back to. */
static _Thread_local sigjmp_buf *guard_at;
static struct sigaction guard_prev;

static void guard_on_sigbus(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *at = guard_at;

	if (at != NULL) {
		guard_at = NULL;
		siglongjmp(*at, 1);
	}
	/* not a store read: whatever handled it before (by default, the
	 * faulting access repeats and the process dies of it) */
	if (guard_prev.sa_flags & SA_SIGINFO) {
		guard_prev.sa_sigaction(sig, si, uc);
	} else if (guard_prev.sa_handler != SIG_DFL && guard_prev.sa_handler != SIG_IGN) {
		guard_prev.sa_handler(sig);
	} else {
		sigaction(SIGBUS, &guard_prev, NULL);
	}
}

/* Installs the handler unless it is in place, keeping the one before it
 * (a test harness may have replaced ours since: cmocka does, per test). */
static void guard_install(void)
{
	struct sigaction sa, now;

	if (sigaction(SIGBUS, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO) &&
	    now.sa_sigaction == guard_on_sigbus)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_on_sigbus;
	/* NODEFER: the jump leaves the handler, SIGBUS must stay unblocked */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &guard_prev);
}

/* A SIGBUS came back to a guarded call: the map lost pages. */
static void guard_tripped(struct store *st, const char *what)
{
	st->abandoned_txn = st->live_txn;
	st->abandoned_cursor = st->live_cursor;
	st->abandoned_write = st->live_write;
	set_error(st, "reading data.mdb while %s faulted (SIGBUS): the file was truncated "
		  "while in use; the cache is disabled until a restart (run 'contacts-gateway "
		  "cache check')", what);
	/* after the text: a reader that sees the flag sees why (seq_cst) */
	atomic_store(&st->broken, BROKEN_SHRANK);
}

/*
 * Runs `call` with a SIGBUS guard: a fault inside marks the store broken
 * and yields STORE_ERROR. The jump abandons what LMDB was doing (a read
 * transaction stays registered, a write lock stays held): nothing of that
 * environment is used again.
 */
#define GUARDED(st, what, result, call)                                            \
	do {                                                                       \
		sigjmp_buf guard_jb_;                                              \
		sigjmp_buf *volatile guard_outer_ = guard_at;                      \
		if (sigsetjmp(guard_jb_, 0) != 0) {                                \
			guard_at = guard_outer_;                                   \
			guard_tripped((st), (what));                               \
			(result) = STORE_ERROR;                                    \
		} else {                                                           \
			guard_at = &guard_jb_;                                     \
			(result) = (call);                                         \
			guard_at = guard_outer_;                                   \
		}                                                                  \
		(st)->live_txn = NULL;                                             \
		(st)->live_cursor = NULL;                                          \
	} while (0)

/* mdb_txn_begin and mdb_cursor_open, noting what a guarded call holds. */
static int begin(struct store *st, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(st->env, NULL, flags, txn);

	st->live_txn = rc == 0 ? *txn : NULL;
	st->live_cursor = NULL;
	st->live_write = !(flags & MDB_RDONLY);
	return rc;
}

static int cursor(struct store *st, MDB_txn *txn, MDB_dbi dbi, MDB_cursor **cur)
{
	int rc = mdb_cursor_open(txn, dbi, cur);

	st->live_cursor = rc == 0 ? *cur : NULL;
	return rc;
}

static int refuses(const struct store *st)
{
	return atomic_load_explicit(&st->broken, memory_order_relaxed) != 0;
}

/* Refuses every call once the file shrank. 0 or -1 (store broken). */
static int check_size(struct store *st)
{
	struct stat sb;

	if (refuses(st))
		return -1;
	if (st->data_fd < 0 || fstat(st->data_fd, &sb) != 0)
		return 0;
	if ((uint64_t)sb.st_size < st->size_seen) {
		set_error(st, "data.mdb shrank from %llu to %llu bytes (truncated by another "
			  "process?); the cache is disabled until a restart (run "
			  "'contacts-gateway cache check')",
			  (unsigned long long)st->size_seen, (unsigned long long)sb.st_size);
		atomic_store(&st->broken, BROKEN_SHRANK); /* after the text, as above */
		return -1;
	}
	st->size_seen = (uint64_t)sb.st_size;
	return 0;
}


/* ---- keys ---- */

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

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (pthread_key_create(&sha256_key, sha256_ctx_free) != 0)
		abort();
}

static void sha256_parts(const void *a, size_t a_len, const void *b, size_t b_len,
			 uint8_t out[32])
{
	static _Thread_local EVP_MD_CTX *ctx;
	pthread_once_t *once = &sha256_once;
	EVP_MD *md;
	unsigned int len = 0;

	pthread_once(once, sha256_fetch);
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
	uint32_t version = FORMAT_VERSION;
	int rc = mdb_get(txn, meta, &key, &val);

	if (rc == MDB_NOTFOUND) {
		val.mv_size = sizeof(version);
		val.mv_data = &version;
		return mdb_put(txn, meta, &key, &val, 0);
	}
	if (rc != 0)
		return rc;
	if (val.mv_size != sizeof(version) || get_u32(val.mv_data) != FORMAT_VERSION)
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

	if (begin(st, 0, &txn) != 0)
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

/* ---- the checks of data.mdb ---- */

/*
 * Before LMDB maps an existing data.mdb: is it long enough to hold its two
 * meta pages, are they LMDB's and both sound (LMDB refuses the file
 * otherwise, or divides by a page size of 0)? 0, or -1 with err set.
 */
static int precheck(const char *dir, const char *data_path, char *err, size_t err_size)
{
	struct mdbfile f;
	int fd = open(data_path, O_RDONLY | O_CLOEXEC), pick, rc = -1;
	unsigned char head[20] = {0};

	if (fd < 0) {
		snprintf(err, err_size, "cache directory %s: cannot read data.mdb: %s", dir,
			 strerror(errno));
		return -1;
	}
	pick = mdbfile_open(&f, fd);
	if (pread(fd, head, sizeof(head), 0) < 0)
		memset(head, 0, sizeof(head));
	if (f.size < 2 * (uint64_t)f.psize && (f.size == 0 || get_u32(head + 16) == 0xBEEFC0DEu)) {
		snprintf(err, err_size, "cache directory %s: data.mdb is truncated (%llu bytes, "
			 "%llu needed); run 'contacts-gateway cache recover'", dir,
			 (unsigned long long)f.size, 2ull * f.psize);
	} else if (get_u32(head + 16) != 0xBEEFC0DEu) {
		/* refused before LMDB would take it for a new file */
		snprintf(err, err_size, "cache directory %s: not a contacts-gateway cache "
			 "(data.mdb is not an LMDB file)", dir);
	} else if (pick < 0 || !f.meta[0].valid || !f.meta[1].valid) {
		snprintf(err, err_size, "cache directory %s: data.mdb is damaged (%s); run "
			 "'contacts-gateway cache recover'", dir,
			 f.meta[0].valid ? f.meta[1].why : f.meta[0].why);
	} else {
		rc = 0;
	}
	close(fd);
	return rc;
}

/*
 * Begins a read transaction and finds the meta page of its snapshot, so
 * that a pread walk of that snapshot sees pages no writer will reuse
 * while the transaction lasts. Returns the meta's index in f, or -1 (no
 * transaction then). The meta page of txn N is page N % 2; a writer may
 * overwrite it two commits later, hence the retries.
 */
static int pin(MDB_env *env, struct mdbfile *f, int fd, MDB_txn **txn)
{
	for (int i = 0; i < PIN_TRIES; i++) {
		size_t id;
		int m;

		if (mdb_txn_begin(env, NULL, MDB_RDONLY, txn) != 0)
			return -1;
		id = mdb_txn_id(*txn);
		mdbfile_open(f, fd);
		m = (int)(id % 2);
		if (f->meta[m].valid && f->meta[m].txnid == id)
			return m;
		mdb_txn_abort(*txn);
	}
	*txn = NULL;
	return -1;
}

/* Walks the store's snapshot; 0 when whole, else -1 with err set. */
static int verify(struct store *st, const char *dir, char *err, size_t err_size)
{
	struct mdbfile f;
	struct mdbfile_report r;
	MDB_txn *txn;
	int m, rc;

	if ((m = pin(st->env, &f, st->data_fd, &txn)) < 0) {
		/* LMDB reads the meta page of its transaction id's parity: one
		 * that does not hold that id is damaged (or was rewritten eight
		 * times over while we looked, by writers beside us) */
		snprintf(err, err_size, "cache directory %s: data.mdb is damaged (its meta "
			 "pages do not hold the transaction LMDB reads); run 'contacts-gateway "
			 "cache recover'", dir);
		return -1;
	}
	rc = mdbfile_walk(&f, m, NULL, NULL, &r);
	mdb_txn_abort(txn);
	if (rc == 0) {
		st->size_seen = f.size;
		return 0;
	}
	if (r.missing)
		snprintf(err, err_size, "cache directory %s: data.mdb is truncated (%llu bytes, "
			 "%llu needed); run 'contacts-gateway cache recover'", dir,
			 (unsigned long long)f.size,
			 (unsigned long long)(r.needed_pages * f.psize));
	else
		snprintf(err, err_size, "cache directory %s: data.mdb is damaged (%s); run "
			 "'contacts-gateway cache recover'", dir, r.first);
	return -1;
}

struct store *store_open(const char *dir, uint64_t map_bytes,
			 unsigned max_readers, unsigned flags, char *err,
			 size_t err_size)
{
	struct store *st = calloc(1, sizeof(*st));
	char lock_path[4200], data_path[4200];
	MDB_txn *txn = NULL;
	unsigned create = (flags & STORE_EXISTING) ? 0 : MDB_CREATE;
	struct stat sb;
	int rc, existed;

	/* the hash's algorithm fetched now, on the opening thread, before any
	 * loop thread starts (pthread_once would do it on first use anyway;
	 * this way the threads see it made before they were created) */
	pthread_once(&sha256_once, sha256_fetch);
	if (st == NULL)
		abort();
	guard_install();
	st->magic = STORE_MAGIC;
	st->lock_fd = -1;
	st->data_fd = -1;
	snprintf(data_path, sizeof(data_path), "%s/data.mdb", dir);
	if (flags & STORE_EXISTING) {
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
	/* an existing file is checked before LMDB maps it */
	existed = stat(data_path, &sb) == 0;
	if (existed && precheck(dir, data_path, err, err_size) != 0)
		goto fail;
	if ((rc = mdb_env_create(&st->env)) != 0 ||
	    (map_bytes && (rc = mdb_env_set_mapsize(st->env, (size_t)map_bytes)) != 0) ||
	    (rc = mdb_env_set_maxreaders(st->env, max_readers)) != 0 ||
	    (rc = mdb_env_set_maxdbs(st->env, 2)) != 0 ||
	    (rc = mdb_env_open(st->env, dir, MDB_NOSYNC | MDB_NOTLS | MDB_NORDAHEAD,
			       0600)) != 0) {
		snprintf(err, err_size, "cache directory %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	if (mdb_env_get_fd(st->env, &st->data_fd) != 0)
		st->data_fd = -1;
	if (verify(st, dir, err, err_size) != 0)
		goto fail;
	if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0 ||
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
	check_size(st);
	return st;
fail:
	store_close(st);
	return NULL;
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	CHECK(st->magic == STORE_MAGIC);
	if (st->env) {
		if (!st->broken)
			mdb_env_sync(st->env, 1);
		/* what a SIGBUS abandoned: a read transaction and its cursor are
		 * plain memory and a reader slot; a write transaction cut short
		 * is left alone (its state is unknown; the process exits soon) */
		if (st->abandoned_cursor && !st->abandoned_write)
			mdb_cursor_close(st->abandoned_cursor);
		if (st->abandoned_txn && !st->abandoned_write)
			mdb_txn_abort(st->abandoned_txn);
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
	if (begin(st, MDB_RDONLY, &txn) != 0)
		return n;
	if (cursor(st, txn, 0, &cur) == 0) {
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
	size_t size = record_size(e);
	int64_t stored;
	int rc;

	if (size == 0) {
		set_error(st, "an entry of %zu query, %zu type and %zu body bytes breaks the "
			  "store's bounds", e->query_len, e->content_type_len, e->body_len);
		return STORE_INVALID;
	}
	{
		/* keep headroom: on a map with none left, LMDB cannot even delete
		 * (deletes copy pages too), and eviction would be stuck */
		size_t total, psize, avail = free_pages(st, &total, &psize);
		size_t headroom = total / 16 < HEADROOM_PAGES ? total / 16 : HEADROOM_PAGES;
		size_t want = size / psize + RECORD_PAGES + headroom;

		if (total && avail < want) {
			set_error(st, "the cache map is full: %zu of %zu pages free, %zu "
				  "needed (the record and a headroom of %zu kept for deletes)",
				  avail, total, want, headroom);
			return STORE_FULL;
		}
	}
	e->etag = XXH3_64bits(e->body, e->body_len);
	if ((rc = begin(st, 0, &txn)) != 0)
		goto out;
	if (unless_newer && mdb_get(txn, st->dbi, &key, &val) == 0 &&
	    record_peek_stored(val.mv_data, val.mv_size, &stored) && stored > e->stored_ms) {
		mdb_txn_abort(txn);
		return STORE_NEWER;
	}
	val.mv_size = size;
	val.mv_data = NULL;
	/* MDB_RESERVE: LMDB hands us the space; we write the record in place. */
	if ((rc = mdb_put(txn, st->dbi, &key, &val, MDB_RESERVE)) != 0)
		goto out;
	record_write(val.mv_data, e);
	rc = mdb_txn_commit(txn);
	txn = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	if (rc != 0)
		set_error(st, "writing a %zu-byte record: %s", size, mdb_strerror(rc));
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
		return STORE_FULL;
	return rc == 0 ? STORE_OK : STORE_ERROR;
}

enum store_status store_put(struct store *st, const uint8_t id[STORE_ID_LEN],
			    struct store_entry *e)
{
	enum store_status s;

	CHECK(st->magic == STORE_MAGIC);
	if (check_size(st) != 0)
		return STORE_ERROR;
	GUARDED(st, "storing an entry", s, put_record(st, id, e, 0));
	return s;
}

enum store_status store_put_unless_newer(struct store *st, const uint8_t id[STORE_ID_LEN],
					 struct store_entry *e)
{
	enum store_status s;

	CHECK(st->magic == STORE_MAGIC);
	if (check_size(st) != 0)
		return STORE_ERROR;
	GUARDED(st, "storing an entry", s, put_record(st, id, e, 1));
	return s;
}

static enum store_status get_entry(struct store *st, const uint8_t id[STORE_ID_LEN],
				   struct store_view **view, struct store_entry *e)
{
	MDB_val key = {STORE_ID_LEN, (void *)id};
	MDB_val val;
	MDB_txn *txn;
	enum store_status s;
	struct store_view *v;
	int rc;

	if ((rc = begin(st, MDB_RDONLY, &txn)) != 0) {
		set_error(st, "beginning a read: %s", mdb_strerror(rc));
		return STORE_ERROR;
	}
	rc = mdb_get(txn, st->dbi, &key, &val);
	if (rc != 0) {
		mdb_txn_abort(txn);
		if (rc == MDB_NOTFOUND)
			return STORE_NOT_FOUND;
		set_error(st, "reading an entry: %s", mdb_strerror(rc));
		return STORE_ERROR;
	}
	s = record_decode(val.mv_data, val.mv_size, id, e);
	if (s != STORE_OK) {
		mdb_txn_abort(txn);
		set_error(st, "a %zu-byte record failed its checksum or bounds", val.mv_size);
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

enum store_status store_get(struct store *st, const uint8_t id[STORE_ID_LEN],
			    struct store_view **view, struct store_entry *e)
{
	enum store_status s;

	CHECK(st->magic == STORE_MAGIC);
	*view = NULL;
	if (refuses(st))
		return STORE_ERROR;
	GUARDED(st, "looking an entry up", s, get_entry(st, id, view, e));
	return s;
}

void store_view_release(struct store_view *view)
{
	if (view == NULL)
		return;
	CHECK(view->magic == VIEW_MAGIC);
	mdb_txn_abort(view->txn);
	view->magic = 0;
	free(view);
}

static enum store_status delete_entry(struct store *st, const uint8_t id[STORE_ID_LEN])
{
	MDB_val key = {STORE_ID_LEN, (void *)id};
	MDB_txn *txn;
	int rc;

	if ((rc = begin(st, 0, &txn)) != 0) {
		set_error(st, "beginning a delete: %s", mdb_strerror(rc));
		return STORE_ERROR;
	}
	rc = mdb_del(txn, st->dbi, &key, NULL);
	if (rc != 0) {
		mdb_txn_abort(txn);
		if (rc == MDB_NOTFOUND)
			return STORE_NOT_FOUND;
		set_error(st, "deleting an entry: %s", mdb_strerror(rc));
		return STORE_ERROR;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		set_error(st, "committing a delete: %s", mdb_strerror(rc));
		return STORE_ERROR;
	}
	return STORE_OK;
}

enum store_status store_delete(struct store *st, const uint8_t id[STORE_ID_LEN])
{
	enum store_status s;

	CHECK(st->magic == STORE_MAGIC);
	if (check_size(st) != 0)
		return STORE_ERROR;
	GUARDED(st, "deleting an entry", s, delete_entry(st, id));
	return s;
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
		int rc = begin(st, 0, &txn);

		if (rc != 0) {
			set_error(st, "beginning an eviction: %s", mdb_strerror(rc));
			break;
		}
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
			set_error(st, "evicting %zu entries at once: %s", k, mdb_strerror(rc));
			chunk = k / 2;
		} else {
			set_error(st, "evicting: %s", mdb_strerror(rc));
			break;
		}
	}
	return total;
}

static size_t evict(struct store *st, int64_t now_ms, size_t max_scan, size_t want_bytes,
		    store_last_used_fn last_used, void *arg, volatile size_t *freed)
{
	struct candidate *c = NULL;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val key = {STORE_ID_LEN, st->evict_from}, val;
	size_t n = 0, expired = 0, victims, deleted = 0;
	int rc, wrapped = 0;

	if (max_scan == 0 || (c = calloc(max_scan, sizeof(*c))) == NULL)
		return 0;
	if ((rc = begin(st, MDB_RDONLY, &txn)) != 0 ||
	    (rc = cursor(st, txn, st->dbi, &cur)) != 0) {
		set_error(st, "reading for an eviction: %s", mdb_strerror(rc));
		goto out;
	}
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
			int64_t stored = val.mv_size >= RECORD_HEAD_LEN ? (int64_t)get_u64(p + 8) : 0;
			int64_t expires =
				val.mv_size >= RECORD_HEAD_LEN ? (int64_t)get_u64(p + 16) : 0;

			memcpy(c[n].id, key.mv_data, STORE_ID_LEN);
			c[n].bytes = val.mv_size;
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
	if (rc != 0 && rc != MDB_NOTFOUND)
		set_error(st, "scanning for an eviction: %s", mdb_strerror(rc));
	if (rc == 0 && key.mv_size == STORE_ID_LEN)
		memcpy(st->evict_from, key.mv_data, STORE_ID_LEN);
	else
		memset(st->evict_from, 0, STORE_ID_LEN);
	mdb_cursor_close(cur);
	cur = NULL;
	/* 2: the expired go; if none, the least recently used quarter, and
	 * more of the least used while their bytes fall short of want_bytes
	 * (a large answer needs room that small entries' quarter does not
	 * free) */
	qsort(c, n, sizeof(*c), by_used);
	victims = expired ? expired : (n / 4 ? n / 4 : n);
	{
		size_t bytes = 0;

		for (size_t i = 0; i < victims; i++)
			bytes += c[i].bytes;
		while (victims < n && bytes < want_bytes)
			bytes += c[victims++].bytes;
		*freed = bytes;
	}
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

size_t store_evict_bytes(struct store *st, int64_t now_ms, size_t max_scan,
			 size_t want_bytes, store_last_used_fn last_used, void *arg,
			 size_t *freed_bytes)
{
	volatile size_t n = 0, freed = 0;
	enum store_status s;

	CHECK(st->magic == STORE_MAGIC);
	if (freed_bytes)
		*freed_bytes = 0;
	if (check_size(st) != 0)
		return 0;
	GUARDED(st, "evicting", s,
		(n = evict(st, now_ms, max_scan, want_bytes, last_used, arg, &freed), STORE_OK));
	(void)s;
	if (freed_bytes)
		*freed_bytes = n ? freed : 0;
	return n;
}

size_t store_evict(struct store *st, int64_t now_ms, size_t max_scan,
		   store_last_used_fn last_used, void *arg)
{
	return store_evict_bytes(st, now_ms, max_scan, 0, last_used, arg, NULL);
}

static enum store_status free_bytes(struct store *st, volatile uint64_t *free_b,
				    volatile uint64_t *map_b)
{
	size_t total, psize, n = free_pages(st, &total, &psize);

	*free_b = (uint64_t)n * psize;
	*map_b = (uint64_t)total * psize;
	return total ? STORE_OK : STORE_ERROR;
}

int store_free_bytes(struct store *st, uint64_t *free_b, uint64_t *map_b)
{
	volatile uint64_t f = 0, m = 0;
	enum store_status s = STORE_ERROR;

	CHECK(st->magic == STORE_MAGIC);
	if (!refuses(st))
		GUARDED(st, "reading the free pages", s, free_bytes(st, &f, &m));
	*free_b = f;
	*map_b = m;
	return s == STORE_OK ? 0 : -1;
}

static enum store_status scan(struct store *st, store_scan_fn fn, void *arg)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	int rc;

	if ((rc = begin(st, MDB_RDONLY, &txn)) != 0) {
		set_error(st, "beginning a scan: %s", mdb_strerror(rc));
		return STORE_ERROR;
	}
	if ((rc = cursor(st, txn, st->dbi, &cur)) != 0) {
		set_error(st, "beginning a scan: %s", mdb_strerror(rc));
		mdb_txn_abort(txn);
		return STORE_ERROR;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		struct store_entry e;
		enum store_status s;

		if (key.mv_size != STORE_ID_LEN)
			continue;
		s = record_decode(val.mv_data, val.mv_size, key.mv_data, &e);
		if (fn(key.mv_data, s, s == STORE_OK ? &e : NULL, arg) != 0)
			break;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (rc == 0 || rc == MDB_NOTFOUND)
		return STORE_OK;
	set_error(st, "scanning: %s", mdb_strerror(rc));
	return STORE_ERROR;
}

enum store_status store_scan(struct store *st, store_scan_fn fn, void *arg)
{
	enum store_status s;

	CHECK(st->magic == STORE_MAGIC);
	if (check_size(st) != 0)
		return STORE_ERROR;
	GUARDED(st, "scanning", s, scan(st, fn, arg));
	return s;
}

static enum store_status usage(struct store *st, volatile uint64_t *map_bytes,
				volatile uint64_t *used_bytes)
{
	MDB_envinfo info;
	MDB_stat ms;

	if (mdb_env_info(st->env, &info) != 0 || mdb_env_stat(st->env, &ms) != 0)
		return STORE_ERROR;
	*map_bytes = info.me_mapsize;
	*used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	return STORE_OK;
}

void store_usage(struct store *st, uint64_t *map_bytes, uint64_t *used_bytes)
{
	volatile uint64_t map = 0, used = 0;
	enum store_status s = STORE_OK;

	if (!refuses(st))
		GUARDED(st, "reading the map's size", s, usage(st, &map, &used));
	(void)s;
	*map_bytes = map;
	*used_bytes = used;
}

int store_sync(struct store *st)
{
	int rc;

	if (check_size(st) != 0)
		return -1;
	if ((rc = mdb_env_sync(st->env, 1)) != 0) {
		set_error(st, "syncing data.mdb to disk: %s", mdb_strerror(rc));
		return -1;
	}
	return 0;
}

static enum store_status count(struct store *st, volatile size_t *n)
{
	MDB_txn *txn;
	MDB_stat ms;

	if (begin(st, MDB_RDONLY, &txn) != 0)
		return STORE_ERROR;
	if (mdb_stat(txn, st->dbi, &ms) == 0)
		*n = ms.ms_entries;
	mdb_txn_abort(txn);
	return STORE_OK;
}

size_t store_count(struct store *st)
{
	volatile size_t n = 0;
	enum store_status s;

	if (refuses(st))
		return 0;
	GUARDED(st, "counting", s, count(st, &n));
	(void)s;
	return n;
}

/* ---- cache check and recover ---- */

struct salvage_ctx {
	store_scan_fn fn;
	void *arg;
	struct store_salvage *report;
};

static int salvage_value(const uint8_t *key, size_t key_len, const uint8_t *val,
			 size_t val_len, void *arg)
{
	struct salvage_ctx *c = arg;
	struct store_entry e;
	enum store_status s;

	if (key_len != STORE_ID_LEN) {
		c->report->corrupt++;
		return 0;
	}
	s = record_decode(val, val_len, key, &e);
	if (s == STORE_OK)
		c->report->intact++;
	else
		c->report->corrupt++;
	return c->fn ? c->fn(key, s, s == STORE_OK ? &e : NULL, c->arg) : 0;
}

enum store_status store_salvage(const char *dir, store_scan_fn fn, void *arg,
				struct store_salvage *report, char *err, size_t err_size)
{
	char data_path[4200];
	struct mdbfile f;
	struct mdbfile_report r;
	struct salvage_ctx c = {fn, arg, report};
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	int fd, m = -1;

	memset(report, 0, sizeof(*report));
	if ((size_t)snprintf(data_path, sizeof(data_path), "%s/data.mdb", dir) >=
	    sizeof(data_path)) {
		snprintf(err, err_size, "cache directory %s: path too long", dir);
		return STORE_ERROR;
	}
	if ((fd = open(data_path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, err_size, "cache directory %s: %s", dir,
			 errno == ENOENT ? "holds no cache (no data.mdb)" : strerror(errno));
		return STORE_ERROR;
	}
	m = mdbfile_open(&f, fd);
	report->file_bytes = f.size;
	report->page_size = f.psize;
	if (m < 0 && f.size < f.psize) {
		snprintf(err, err_size, "cache directory %s: data.mdb is truncated (%llu bytes): "
			 "not even its first meta page is left, nothing can be read", dir,
			 (unsigned long long)f.size);
		close(fd);
		return STORE_ERROR;
	}
	if (m < 0) {
		snprintf(err, err_size, "cache directory %s: data.mdb is not a readable LMDB "
			 "file (%s)", dir, f.meta[0].valid ? f.meta[1].why : f.meta[0].why);
		close(fd);
		return STORE_ERROR;
	}
	/*
	 * With both meta pages sound LMDB can open the file (it reads only
	 * them: the map is not touched before a lookup), and a read
	 * transaction pins the snapshot walked against a writer beside us.
	 * Otherwise the file is walked as it is: no gateway runs on it then
	 * (it refuses such a file).
	 */
	if (f.meta[0].valid && f.meta[1].valid && mdb_env_create(&env) == 0) {
		if (mdb_env_set_maxreaders(env, 1024 + 64) != 0 ||
		    mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD, 0600) != 0 ||
		    (m = pin(env, &f, fd, &txn)) < 0) {
			mdb_env_close(env);
			env = NULL;
			m = mdbfile_open(&f, fd);
		}
	}
	if (m < 0) { /* the meta pages changed under us: a writer, or worse */
		snprintf(err, err_size, "cache directory %s: data.mdb's meta pages changed while "
			 "being read; try again", dir);
		close(fd);
		return STORE_ERROR;
	}
	report->pinned = txn != NULL;
	report->txnid = f.meta[m].txnid;
	report->last_page = f.meta[m].last_pg;
	mdbfile_walk(&f, m, salvage_value, &c, &r);
	if (txn)
		mdb_txn_abort(txn);
	if (env)
		mdb_env_close(env);
	close(fd);
	report->pages_read = r.pages_read;
	report->pages_missing = r.missing;
	report->damaged = r.damaged;
	report->needed_bytes = r.needed_pages * f.psize;
	report->has_entries = r.has_entries;
	snprintf(report->first_problem, sizeof(report->first_problem), "%s", r.first);
	return STORE_OK;
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

/*
 * Records a reader has verified (checksum and id), by where they lie in the
 * map: LMDB never changes the bytes of a committed record in place (a
 * write goes to new pages; freed pages are reused only once no snapshot can
 * see them), so the same id at the same address with the same size and
 * checksum word is the same record, and its checksum need not be computed
 * again (at 55 KB it was 15 % of a hit's CPU). A record damaged on disk is
 * still refused the first time each loop reads it after a start, and a new
 * record at that place is verified anew (its checksum word differs, or its
 * bytes are the verified ones). What this does not catch: bytes changed in
 * data.mdb, by something other than LMDB, under a running gateway, after a
 * loop verified that record. Direct-mapped, READER_VERIFIED slots.
 */
#define READER_VERIFIED 1024
struct verified {
	const void *p;
	size_t size;
	uint64_t sum;
	uint8_t id[STORE_ID_LEN];
};

struct store_reader {
	unsigned magic;
	struct store *st;
	struct verified verified[READER_VERIFIED];
	struct store_snap *cur;    /* the lookup in progress, or NULL */
	struct store_snap *pinned; /* done with, still pinned */
	struct store_snap *spare;  /* reset, ready to renew */
	size_t n_spare;
	struct store_snap *abandoned; /* left by a fault: only aborted at the end */
	char ctype[STORE_CTYPE_MAX + 1]; /* the last lookup's content type */
};

struct store_reader *store_reader_new(struct store *st)
{
	struct store_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
		abort();
	CHECK_OBJ_NOTNULL(st, STORE_MAGIC);
	guard_install();
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
	while (r->abandoned) { /* aborting a read transaction reads no page */
		struct store_snap *s = r->abandoned;

		r->abandoned = s->next;
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

/* The lookup itself, inside reader_get's guard. */
static enum store_status reader_lookup(struct store_reader *r, const uint8_t id[STORE_ID_LEN],
				       struct store_entry *e)
{
	MDB_val key = {STORE_ID_LEN, (void *)id}, val;
	enum store_status s;
	int rc;

	if ((r->cur = snap_fresh(r)) == NULL)
		return STORE_ERROR;
	rc = mdb_get(r->cur->txn, r->st->dbi, &key, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? STORE_NOT_FOUND : STORE_ERROR;
	{
		struct verified *v =
			&r->verified[((uintptr_t)val.mv_data >> 4) % READER_VERIFIED];
		uint64_t sum = 0;
		int known;

		if (val.mv_size >= RECORD_HEAD_LEN + RECORD_TAIL_LEN)
			sum = get_u64((const uint8_t *)val.mv_data + val.mv_size - RECORD_TAIL_LEN);
		known = v->p == val.mv_data && v->size == val.mv_size && v->sum == sum &&
			memcmp(v->id, id, STORE_ID_LEN) == 0;
		if ((s = record_decode_how(val.mv_data, val.mv_size, id, e, !known)) != STORE_OK)
			return s;
		if (!known) {
			v->p = val.mv_data;
			v->size = val.mv_size;
			v->sum = sum;
			memcpy(v->id, id, STORE_ID_LEN);
		}
	}
	/* the caller reads the content type outside the guard: a copy */
	memcpy(r->ctype, e->content_type, e->content_type_len);
	r->ctype[e->content_type_len] = '\0';
	e->content_type = r->ctype;
	return STORE_OK;
}

enum store_status store_reader_get(struct store_reader *r, const uint8_t id[STORE_ID_LEN],
				   struct store_entry *e)
{
	sigjmp_buf jb;
	sigjmp_buf *volatile outer;
	enum store_status s;

	CHECK_OBJ_NOTNULL(r, READER_MAGIC);
	store_reader_done(r); /* a lookup the owner did not close */
	if (refuses(r->st))
		return STORE_ERROR;
	/* the same SIGBUS guard as the writer's calls (guard_at is per
	 * thread), but a fault only flags the store: the reader's own
	 * transaction is dropped, never touched again */
	outer = guard_at;
	if (sigsetjmp(jb, 0) != 0) {
		guard_at = outer;
		atomic_store(&r->st->broken, BROKEN_READER);
		if (r->cur) { /* abandoned inside LMDB: never used again */
			r->cur->next = r->abandoned;
			r->abandoned = r->cur;
			r->cur = NULL;
		}
		return STORE_ERROR;
	}
	guard_at = &jb;
	s = reader_lookup(r, id, e);
	guard_at = outer;
	return s;
}

const char *store_reader_error(const struct store_reader *r)
{
	if (refuses(r->st))
		return store_last_error(r->st);
	return "LMDB refused a read transaction (its reader table may be full)";
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
