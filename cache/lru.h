/*
 * lru: when entries were last used, and a put that evicts to make room.
 *
 * The store knows when an answer was stored; only the hit path knows when
 * it was last served. This table remembers that, approximately: a fixed,
 * direct-mapped array of slots indexed by the entry id's first bytes (an id
 * is a SHA-256, so they are uniform). A slot holds one id's tag and time; a
 * colliding id overwrites it, and an id without its slot falls back to its
 * stored time. Eviction asks lru_last_used for the entries it scans and
 * deletes the least recently used quarter (store_evict).
 *
 * Threads: lru_touch from any thread (every front loop, on every hit) with
 * relaxed atomic stores, no lock; lru_last_used from the writer. A slot's
 * tag and time are two atomics, so a racing pair of touches can leave one
 * id's tag beside another's time: a wrong hint for one entry's eviction
 * order, never a wrong answer.
 *
 * Bounds: LRU_SLOTS slots (16 bytes each), allocated once.
 */
#ifndef CG_CACHE_LRU_H
#define CG_CACHE_LRU_H

#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"

#define LRU_SLOTS 65536     /* a power of two */
#define LRU_EVICT_SCAN 1024 /* entries one eviction pass looks at */
#define LRU_PUT_ATTEMPTS 4  /* put, evict, put ... at least this often */
#define LRU_PUT_PASSES 32   /* ... and at most, while bytes freed fall short of */
#define LRU_PUT_FREE_FACTOR 8 /*  this many records of the size being put */
#define LRU_HEADROOM_MAX ((uint64_t)64 << 20) /* free kept: map/16, at most this */

struct lru;

/* A table with every slot empty. Never NULL (aborts on no memory). */
struct lru *lru_new(void);
void lru_free(struct lru *l);

/* Entry `id` was served at now_ms. Any thread. */
void lru_touch(struct lru *l, const uint8_t id[STORE_ID_LEN], int64_t now_ms);

/* When `id` was last served, or stored_ms when the table does not know.
 * A store_last_used_fn (arg: the struct lru). */
int64_t lru_last_used(const uint8_t id[STORE_ID_LEN], int64_t stored_ms, void *arg);

/*
 * store_put, evicting to make room: on STORE_FULL evicts (expired entries
 * first, else the least recently used by `l`, which may be NULL: then by
 * stored time; at least twice the record's bytes) and tries again, at
 * least LRU_PUT_ATTEMPTS times, on while less than LRU_PUT_FREE_FACTOR
 * times the record's bytes were freed, LRU_PUT_PASSES times at most.
 * After a put, with `l`, keeps a headroom free (evicting ahead of need,
 * see lru.c). Returns the last store_put status; *evicted (may be NULL)
 * counts the entries deleted. Borrows everything; e->etag is set on
 * STORE_OK.
 *
 * Cost, and a limit of LMDB: a value larger than a page lies in one run of
 * contiguous pages, and a map full of small entries frees its pages here
 * and there, so making room for a large answer there can take most of the
 * small ones (a 900 KB answer in an 8 MB map of 200-byte ones: all 14 592,
 * tests/unit/test_derived.c); bounded by LRU_PUT_PASSES x LRU_EVICT_SCAN
 * entries per put. Storing large bodies in chunks would lift it.
 */
enum store_status lru_put(struct lru *l, struct store *st, const uint8_t id[STORE_ID_LEN],
			  struct store_entry *e, int64_t now_ms, size_t *evicted);

/* lru_put with store_put_unless_newer: an entry stored later under `id`
 * stays (STORE_NEWER). For the cache tools' import. */
enum store_status lru_put_unless_newer(struct lru *l, struct store *st,
				       const uint8_t id[STORE_ID_LEN], struct store_entry *e,
				       int64_t now_ms, size_t *evicted);

#endif
