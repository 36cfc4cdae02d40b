/*
 * store: the LMDB store of upstream answers, one record per (API key hash,
 * canonical query).
 *
 * Data model. One LMDB environment in a directory; database "meta" holds
 * the record format version (a store of another format is refused) and an
 * eviction counter; database "entries" holds the answers:
 *   key   = entry id, SHA-256(SHA-256(api key) || canonical query), 32 bytes
 *   value = a self-checking record (layout in store.c): times, ETag, the key
 *           hash, the canonical query, the Content-Type and the body, closed
 *           by an XXH3-64 checksum over everything before it.
 * The raw API key is never stored: only its SHA-256. A record is served only
 * if its checksum and lengths verify, so a torn or corrupted record reads as
 * STORE_CORRUPT and is never handed out.
 *
 * Durability: the environment runs with MDB_NOSYNC. A committed record is in
 * the kernel's page cache at once, so it survives the process being killed
 * (kill -9); store_sync (called periodically by the owner) makes it survive
 * a power loss. What a power loss can cost: the records committed since the
 * last sync.
 *
 * Reads are zero-copy: store_get returns a view whose pointers point into
 * the memory map; the view pins them (an LMDB read transaction) until
 * store_view_release. Writes are one short write transaction each.
 *
 * Damage (store.c says how): store_open refuses a data.mdb that is shorter
 * than the pages its trees use, or whose pages fail their checks, before
 * LMDB reads any of them; a file truncated while open turns the store
 * "broken" (every call fails with STORE_ERROR, store_last_error says why)
 * instead of crashing the process. store_salvage reads a damaged file
 * without LMDB's map, for `cache check` and `cache recover`.
 *
 * Failures: every failing call leaves its cause in words (LMDB's
 * mdb_strerror, errno text) for store_last_error; store_strerror words a
 * status.
 */
#ifndef CG_CACHE_STORE_H
#define CG_CACHE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_ENC_N 4 /* enum encoding's ENC_N */
#define STORE_ID_LEN 32
#define STORE_KEYHASH_LEN 32
#define STORE_QUERY_MAX 4096        /* longest canonical query stored */
#define STORE_CTYPE_MAX 256         /* longest Content-Type stored */
#define STORE_ERROR_MAX 256         /* store_last_error's longest text */
#define STORE_DERIVED_MASK 7u       /* store_entry.derived: enum derive_rule bits */

struct store;
struct store_view;

enum store_status {
	STORE_OK = 0,
	STORE_NOT_FOUND,
	STORE_CORRUPT, /* the record failed its checks: not served */
	STORE_FULL,    /* the map is full: evict, then retry */
	STORE_INVALID, /* the entry given to store_put breaks a bound */
	STORE_ERROR,   /* LMDB failed otherwise (see the log) */
	STORE_NEWER,   /* store_put_unless_newer: a later answer is stored */
};

/* An entry. From store_get its pointers are borrowed from the view. */
struct store_entry {
	int64_t stored_ms;  /* when the answer came, ms since the epoch */
	int64_t expires_ms; /* when it stops being fresh */
	uint64_t etag;      /* XXH3-64 of the body; set by store_put */
	unsigned derived;   /* 0: the vendor's answer; else the derive rule
			     * (policy/derive.h) that made it from another */
	uint8_t keyhash[STORE_KEYHASH_LEN];
	const char *query;
	size_t query_len;
	const char *content_type;
	size_t content_type_len;
	const void *body;
	size_t body_len;
	/* the body's other representations (content codings, policy/encoding),
	 * stored beside it: enc[ENC_GZIP], enc[ENC_BR], enc[ENC_ZSTD]; len 0:
	 * absent (enc[ENC_IDENTITY] is unused: that is body) */
	struct store_repr {
		const void *p;
		size_t len;
	} enc[STORE_ENC_N];
};

/* A status in words, e.g. "the cache map is full". Static storage. */
const char *store_strerror(enum store_status s);

/*
 * The cause of the store's last failure, in words: LMDB's text with its
 * code name ("writing a 169271-byte record: MDB_MAP_FULL: Environment
 * mapsize limit reached"), errno's text, or what the store decided ("the
 * cache map is full: 40 of 256 pages free, 57 needed ..."). "no error"
 * before any. Valid until the next call on `st`; a success does not clear
 * it, so read it right after the call that failed.
 */
const char *store_last_error(const struct store *st);

/* SHA-256 of an API key: the only form in which a key is kept. */
void store_hash_api_key(const char *key, size_t len,
			uint8_t out[STORE_KEYHASH_LEN]);

/* The entry id of (key hash, canonical query). */
void store_entry_id(const uint8_t keyhash[STORE_KEYHASH_LEN], const char *query,
		    size_t query_len, uint8_t out[STORE_ID_LEN]);

/* store_open flags */
#define STORE_EXCLUSIVE 1u /* take dir/gateway.lock: one gateway per directory */
#define STORE_EXISTING 2u  /* refuse a directory that holds no store yet */

/*
 * Opens the store in `dir` with a map of map_bytes (0: the size the store
 * already has) and room for max_readers views open at once. Without
 * STORE_EXISTING, a missing directory and store are created (mode 0700).
 * With STORE_EXCLUSIVE, also takes an advisory lock on dir/gateway.lock so
 * that a second gateway on the same directory is refused; the cache tools
 * open without it, beside a running gateway (LMDB serialises writers across
 * processes). An existing data.mdb is checked first (see above): a
 * truncated or damaged one is refused with a one-line `err` that says so
 * and names `contacts-gateway cache recover`. Returns NULL with `err` set
 * on failure.
 */
struct store *store_open(const char *dir, uint64_t map_bytes,
			 unsigned max_readers, unsigned flags, char *err,
			 size_t err_size);

/* Syncs and closes. Every view must have been released. */
void store_close(struct store *st);

/* Writes (or replaces) the entry under `id`; computes its ETag and checksum.
 * Borrows everything. On STORE_FULL nothing was written: store_evict, then
 * try again. STORE_FULL comes before the map is quite full: a headroom (64
 * pages, at most 1/16 of the map) is kept, because on a map with no free
 * page LMDB cannot even delete (deletes copy pages too) and eviction would
 * be stuck. (LMDB reuses freed pages only after a later commit; eviction
 * ends with one.) */
enum store_status store_put(struct store *st, const uint8_t id[STORE_ID_LEN],
			    struct store_entry *e);

/* store_put, unless the entry stored under `id` was stored later than
 * e->stored_ms (STORE_NEWER, nothing written): decided inside the write
 * transaction, so a newer answer stored meanwhile by a gateway is never
 * replaced by an older one (cache import). */
enum store_status store_put_unless_newer(struct store *st, const uint8_t id[STORE_ID_LEN],
					 struct store_entry *e);

/*
 * Looks `id` up. On STORE_OK, *view holds the read transaction and `e`
 * points into it until store_view_release(*view). On any other status there
 * is no view to release.
 */
enum store_status store_get(struct store *st, const uint8_t id[STORE_ID_LEN],
			    struct store_view **view, struct store_entry *e);

/* Ends a view; its entry's pointers are invalid afterwards. */
void store_view_release(struct store_view *view);

/* Removes the entry under `id`: STORE_OK or STORE_NOT_FOUND. */
enum store_status store_delete(struct store *st, const uint8_t id[STORE_ID_LEN]);

/* Last use of an entry for eviction: the owner's record of hits, or
 * `stored_ms` when it has none. */
typedef int64_t (*store_last_used_fn)(const uint8_t id[STORE_ID_LEN],
				      int64_t stored_ms, void *arg);

/*
 * Makes room: scans at most max_scan entries, continuing where the last call
 * stopped, and deletes those expired at now_ms; if none were, the least
 * recently used quarter of those scanned (at least one). The deletes go in
 * as few write transactions as the map allows (halved on MDB_MAP_FULL). Bounded work per call, so the loop never stalls on a big map.
 * Returns the number deleted (0 on an empty store or an error).
 */
size_t store_evict(struct store *st, int64_t now_ms, size_t max_scan,
		   store_last_used_fn last_used, void *arg);

/* store_evict, and when no entry scanned has expired, more of the least
 * recently used than a quarter while their records' bytes fall short of
 * want_bytes (all those scanned at most). *freed_bytes (may be NULL): the
 * bytes of the records deleted. */
size_t store_evict_bytes(struct store *st, int64_t now_ms, size_t max_scan,
			 size_t want_bytes, store_last_used_fn last_used, void *arg,
			 size_t *freed_bytes);

/* Bytes the map can still give (pages past the last used and on LMDB's
 * free list, some of which a reader's older snapshot may still hold) and
 * the map's size. 0, or -1 when it cannot tell (both 0). */
int store_free_bytes(struct store *st, uint64_t *free_b, uint64_t *map_b);

/*
 * Calls fn for every entry, in id order, inside one read transaction: `e`
 * (NULL when the record is corrupt, status STORE_CORRUPT) points into the
 * map only for the duration of the call. fn returns 0 to go on, non-zero to
 * stop. Returns STORE_OK or STORE_ERROR. fn must not write to the store;
 * collect ids and act after (store_delete).
 */
typedef int (*store_scan_fn)(const uint8_t id[STORE_ID_LEN], enum store_status status,
			     const struct store_entry *e, void *arg);
enum store_status store_scan(struct store *st, store_scan_fn fn, void *arg);

/* Flushes committed records to disk (fsync) and checks that data.mdb has
 * not shrunk (truncated by another process: the store turns broken).
 * Returns 0, or -1 with store_last_error set. */
int store_sync(struct store *st);

/* Number of entries. */
size_t store_count(struct store *st);

/* Map size in bytes and bytes in use (pages of the last committed state). */
void store_usage(struct store *st, uint64_t *map_bytes, uint64_t *used_bytes);

/*
 * Readers: the hit path's view of the store, one per event loop.
 *
 * store_get begins and aborts a read transaction per lookup, which takes
 * LMDB's reader-table lock each time. A reader instead keeps its read
 * transactions and their reader slots (MDB_NOTLS ties a slot to the
 * handle, not the thread), and renews one per lookup (mdb_txn_renew, no
 * lock) and resets it after (mdb_txn_reset): between lookups it holds no
 * snapshot, so it never keeps the map from reusing freed pages.
 *
 * Zero-copy answers need the map's pages to stay put until the socket has
 * taken them: store_reader_pin adds a reference to the lookup's snapshot,
 * which then outlives the lookup until its last pin goes. A pinned
 * snapshot keeps every page freed after it from being reused; its owner
 * bounds that by asking store_snap_overdue and copying out what it still
 * needs (gateway/answer.c).
 *
 * Threads: a reader and its snapshots belong to the thread that made them.
 * Bounds: snapshots are limited by the owner's pins; reset ones are kept
 * up to STORE_READER_SPARES.
 */
#define STORE_READER_SPARES 4

struct store_reader;
struct store_snap;

/* A reader on `st` (borrowed; must outlive it). */
struct store_reader *store_reader_new(struct store *st);

/* Frees the reader; no snapshot may still be pinned. */
void store_reader_free(struct store_reader *r);

/*
 * Looks `id` up in the newest committed state. On STORE_OK `e` points into
 * the map until store_reader_done (or longer with a pin); its content type
 * into the reader (a copy, NUL-terminated), until the next lookup. The
 * lookup and the record's checks run under the store's SIGBUS guard: a
 * file truncated under the gateway disables the store (STORE_ERROR from
 * then on) instead of killing the process; the body is then read by the
 * kernel (writev: EFAULT, not a signal) or copied by the caller. STORE_CORRUPT:
 * the record failed its checks; STORE_ERROR: LMDB failed (the reader table
 * is full, ...). Ends a lookup still open.
 */
enum store_status store_reader_get(struct store_reader *r, const uint8_t id[STORE_ID_LEN],
				   struct store_entry *e);

/* Why the last lookup failed with STORE_ERROR, in words (static text, or
 * the store's own when it is broken). */
const char *store_reader_error(const struct store_reader *r);

/* Ends the lookup: its snapshot is reset unless pinned. */
void store_reader_done(struct store_reader *r);

/* Pins the snapshot of the lookup in progress: its pages stay valid
 * until store_snap_release, after store_reader_done too. */
struct store_snap *store_reader_pin(struct store_reader *r);

/* Drops a pin (the reader's thread). */
void store_snap_release(struct store_snap *s);

/* Has a newer commit overtaken `s` at least limit_ms ago (by now_ms)? The
 * first call that sees it overtaken starts the count. */
int store_snap_overdue(struct store_snap *s, int64_t now_ms, int64_t limit_ms);
/* What store_salvage found. */
struct store_salvage {
	uint64_t file_bytes, needed_bytes; /* needed: the pages the trees refer to */
	uint32_t page_size;
	uint64_t last_page, txnid;         /* of the snapshot read */
	uint64_t pages_read, pages_missing, damaged; /* damaged: pages or nodes */
	uint64_t intact, corrupt;          /* records */
	int has_entries;                   /* the "entries" database was found */
	int pinned;                        /* read inside an LMDB read transaction */
	char first_problem[200];           /* "" when none */
};

/*
 * Reads every record of the store in `dir` without trusting data.mdb: with
 * pread, each page checked before use (cache/mdbfile.c), so no length or
 * content of the file can crash it; what cannot be read is counted and
 * skipped. Calls fn (which may be NULL) for each record as store_scan
 * does: `e` is NULL when the record fails its checks, else valid for the
 * call. When the file's meta pages are sound the walk holds an LMDB read
 * transaction, so a writer beside it does not change what it reads.
 * Returns STORE_OK with `report` filled, or STORE_ERROR with `err` set when
 * the file cannot be read at all (missing, not LMDB, no sound meta page).
 */
enum store_status store_salvage(const char *dir, store_scan_fn fn, void *arg,
				struct store_salvage *report, char *err, size_t err_size);

#endif
