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

static enum store_status put(struct lru *l, struct store *st, const uint8_t id[STORE_ID_LEN],
			     struct store_entry *e, int64_t now_ms, int unless_newer,
			     size_t *evicted)
{
	enum store_status s = STORE_FULL;
	size_t n = 0;

	for (int attempt = 0; attempt < LRU_PUT_ATTEMPTS; attempt++) {
		s = unless_newer ? store_put_unless_newer(st, id, e) : store_put(st, id, e);
		if (s != STORE_FULL)
			break;
		n += store_evict(st, now_ms, LRU_EVICT_SCAN, l ? lru_last_used : NULL, l);
	}
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
