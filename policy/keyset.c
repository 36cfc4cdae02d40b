/* keyset: see keyset.h. */
#include "policy/keyset.h"

#include <stdlib.h>
#include <string.h>

#include "policy/check.h"

#define KEYSET_MAGIC 0x4b535354u
#define KEYSET_SLOTS_MAX (1u << 24)

struct slot {
	uint64_t tag;     /* 0: empty */
	int64_t until_ms;
};

struct keyset {
	unsigned magic;
	size_t mask;
	struct slot *slots;
};

struct keyset *keyset_new(size_t slots)
{
	struct keyset *s = calloc(1, sizeof(*s));
	size_t n = 1;

	AN(s);
	while (n < slots && n < KEYSET_SLOTS_MAX)
		n <<= 1;
	s->magic = KEYSET_MAGIC;
	s->mask = n - 1;
	s->slots = calloc(n, sizeof(*s->slots));
	AN(s->slots);
	return s;
}

void keyset_free(struct keyset *s)
{
	if (s == NULL)
		return;
	CHECK_OBJ(s, KEYSET_MAGIC);
	free(s->slots);
	s->magic = 0;
	free(s);
}

static size_t index_of(const struct keyset *s, const uint8_t key[KEYSET_KEY_LEN])
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return (size_t)h & s->mask;
}

/* The tag: the next 8 bytes, never 0 (0 marks an empty slot). */
static uint64_t tag_of(const uint8_t key[KEYSET_KEY_LEN])
{
	uint64_t t;

	memcpy(&t, key + 8, sizeof(t));
	return t ? t : 1;
}

void keyset_put(struct keyset *s, const uint8_t key[KEYSET_KEY_LEN], int64_t until_ms)
{
	struct slot *sl;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	sl = &s->slots[index_of(s, key)];
	sl->tag = tag_of(key);
	sl->until_ms = until_ms;
}

int64_t keyset_get(const struct keyset *s, const uint8_t key[KEYSET_KEY_LEN], int64_t now_ms)
{
	const struct slot *sl;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	sl = &s->slots[index_of(s, key)];
	if (sl->tag != tag_of(key) || sl->until_ms <= now_ms)
		return 0;
	return sl->until_ms;
}

void keyset_forget(struct keyset *s, const uint8_t key[KEYSET_KEY_LEN])
{
	struct slot *sl;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	sl = &s->slots[index_of(s, key)];
	if (sl->tag == tag_of(key))
		sl->tag = 0;
}

size_t keyset_count(const struct keyset *s, int64_t now_ms)
{
	size_t n = 0;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	for (size_t i = 0; i <= s->mask; i++)
		n += s->slots[i].tag != 0 && s->slots[i].until_ms > now_ms;
	return n;
}
