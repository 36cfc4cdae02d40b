/* lru: see lru.h. */
#include "cache/lru.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "policy/check.h"

#define LRU_MAGIC 0x4c525553u

struct lru_slot {
	_Atomic uint64_t tag;
	_Atomic int64_t used_ms;
};

struct lru {
	unsigned magic;
	struct lru_slot *slots;
};

static uint64_t tag_of(const uint8_t id[STORE_ID_LEN])
{
	uint64_t tag;

	memcpy(&tag, id, sizeof(tag));
	return tag;
}

struct lru *lru_new(void)
{
	struct lru *l = calloc(1, sizeof(*l));

	AN(l);
	l->magic = LRU_MAGIC;
	l->slots = calloc(LRU_SLOTS, sizeof(*l->slots)); /* zero: valid atomics */
	AN(l->slots);
	return l;
}

void lru_free(struct lru *l)
{
	if (l == NULL)
		return;
	CHECK_OBJ(l, LRU_MAGIC);
	free(l->slots);
	l->magic = 0;
	free(l);
}

void lru_touch(struct lru *l, const uint8_t id[STORE_ID_LEN], int64_t now_ms)
{
	uint64_t tag = tag_of(id);
	struct lru_slot *s = &l->slots[tag & (LRU_SLOTS - 1)];

	atomic_store_explicit(&s->tag, tag, memory_order_relaxed);
	atomic_store_explicit(&s->used_ms, now_ms, memory_order_relaxed);
}

int64_t lru_last_used(const uint8_t id[STORE_ID_LEN], int64_t stored_ms, void *arg)
{
	struct lru *l = arg;
	uint64_t tag = tag_of(id);
	struct lru_slot *s;
	int64_t used;

	CHECK_OBJ_NOTNULL(l, LRU_MAGIC);
	s = &l->slots[tag & (LRU_SLOTS - 1)];
	if (atomic_load_explicit(&s->tag, memory_order_relaxed) != tag)
		return stored_ms;
	used = atomic_load_explicit(&s->used_ms, memory_order_relaxed);
	return used > stored_ms ? used : stored_ms;
}

/* About the bytes e's record takes in the map. */
static size_t record_bytes(const struct store_entry *e)
{
	size_t n = e->body_len + e->query_len + e->content_type_len + 4096;

	for (int k = 0; k < STORE_ENC_N; k++)
		n += e->enc[k].len;
	return n;
}

/*
 * Evict ahead of need: after each put keep free a sixteenth of the map, or
 * room for two more records of the size just put if more (a quarter of the
 * map and LRU_HEADROOM_MAX at most; reading the free list costs a few
 * microseconds, and puts are upstream answers). Pages freed now are
 * reusable by the next puts even while a reader (a cache tool, a slow
 * client's pin) holds a snapshot taken after this eviction; pages freed
 * only when a put finds the map full may still be in such a snapshot, and
 * the put fails although room was made (LMDB reuses a freed page only
 * once no reader can see it).
 */
static size_t keep_headroom(struct lru *l, struct store *st, int64_t now_ms, size_t record)
{
	uint64_t free_b, map_b, want;

	if (l == NULL)
		return 0;
	if (store_free_bytes(st, &free_b, &map_b) != 0)
		return 0;
	/* a sixteenth of the map, and room for two more of the record just put */
	want = map_b / 16 > 2 * (uint64_t)record ? map_b / 16 : 2 * (uint64_t)record;
	if (want > LRU_HEADROOM_MAX)
		want = LRU_HEADROOM_MAX;
	if (want > map_b / 4)
		want = map_b / 4;
	if (free_b >= want)
		return 0;
	return store_evict_bytes(st, now_ms, LRU_EVICT_SCAN, (size_t)(want - free_b),
				 lru_last_used, l, NULL);
}

static enum store_status put(struct lru *l, struct store *st, const uint8_t id[STORE_ID_LEN],
			     struct store_entry *e, int64_t now_ms, int unless_newer,
			     size_t *evicted)
{
	enum store_status s = STORE_FULL;
	size_t n = 0, freed = 0, want = record_bytes(e);

	/* put, evict, put ...: at least LRU_PUT_ATTEMPTS times, and on while
	 * the bytes freed fall short of LRU_PUT_FREE_FACTOR records of this
	 * size (a large record needs a run of contiguous pages, which the
	 * first bytes freed among small entries seldom make), LRU_PUT_PASSES
	 * passes at most */
	for (int pass = 0;; pass++) {
		size_t k, got = 0;

		s = unless_newer ? store_put_unless_newer(st, id, e) : store_put(st, id, e);
		if (s != STORE_FULL || pass >= LRU_PUT_PASSES ||
		    (pass >= LRU_PUT_ATTEMPTS && freed >= LRU_PUT_FREE_FACTOR * want))
			break;
		k = store_evict_bytes(st, now_ms, LRU_EVICT_SCAN, 2 * want,
				      l ? lru_last_used : NULL, l, &got);
		if (k == 0)
			break; /* nothing left to evict, or the store failed */
		n += k;
		freed += got;
	}
	if (s == STORE_OK)
		n += keep_headroom(l, st, now_ms, want);
	if (evicted)
		*evicted = n;
	return s;
}

enum store_status lru_put(struct lru *l, struct store *st, const uint8_t id[STORE_ID_LEN],
			  struct store_entry *e, int64_t now_ms, size_t *evicted)
{
	return put(l, st, id, e, now_ms, 0, evicted);
}

enum store_status lru_put_unless_newer(struct lru *l, struct store *st,
				       const uint8_t id[STORE_ID_LEN], struct store_entry *e,
				       int64_t now_ms, size_t *evicted)
{
	return put(l, st, id, e, now_ms, 1, evicted);
}
