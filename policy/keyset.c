/* keyset: see keyset.h. */
#include "policy/keyset.h"

#include <stdlib.h>
#include <string.h>

#include "policy/check.h"

#define KEYSET_MAGIC 0x4b535354u
#define KEYSET_SLOTS_MAX (1u << 24)
#define KEYSET_WAYS 4u /* slots per set; a power of two */

struct slot {
	uint64_t tag;     /* 0: empty */
	int64_t until_ms;
};

struct keyset {
	unsigned magic;
	size_t set_mask;  /* sets - 1 */
	size_t n_slots;   /* sets x KEYSET_WAYS */
	struct slot *slots;
};

struct keyset *keyset_new(size_t slots)
{
	struct keyset *s = calloc(1, sizeof(*s));
	size_t n = KEYSET_WAYS;

	AN(s);
	while (n < slots && n < KEYSET_SLOTS_MAX)
		n <<= 1;
	s->magic = KEYSET_MAGIC;
	s->n_slots = n;
	s->set_mask = n / KEYSET_WAYS - 1;
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

/* The key's set: its first slot. */
static struct slot *set_of(const struct keyset *s, const uint8_t key[KEYSET_KEY_LEN])
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return &s->slots[((size_t)h & s->set_mask) * KEYSET_WAYS];
}

/* The tag: the next 8 bytes, never 0 (0 marks an empty slot). */
static uint64_t tag_of(const uint8_t key[KEYSET_KEY_LEN])
{
	uint64_t t;

	memcpy(&t, key + 8, sizeof(t));
	return t ? t : 1;
}

static struct slot *find(const struct keyset *s, const uint8_t key[KEYSET_KEY_LEN])
{
	struct slot *set = set_of(s, key);
	uint64_t tag = tag_of(key);

	for (unsigned w = 0; w < KEYSET_WAYS; w++)
		if (set[w].tag == tag)
			return &set[w];
	return NULL;
}

void keyset_put(struct keyset *s, const uint8_t key[KEYSET_KEY_LEN], int64_t until_ms)
{
	struct slot *set, *sl;
	uint64_t tag;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	if ((sl = find(s, key)) == NULL) {
		/* an empty slot, else the one whose deadline comes first (an
		 * expired key before a live one, a live one before FOREVER);
		 * ties go to the first found from a way the new key's tag picks,
		 * so that a full set of FOREVER keys does not always give up the
		 * same one */
		set = set_of(s, key);
		tag = tag_of(key);
		for (unsigned i = 0; i < KEYSET_WAYS; i++) {
			struct slot *c = &set[(tag + i) & (KEYSET_WAYS - 1)];

			if (c->tag == 0) {
				sl = c;
				break;
			}
			if (sl == NULL || c->until_ms < sl->until_ms)
				sl = c;
		}
		sl->tag = tag;
	}
	sl->until_ms = until_ms;
}

int64_t keyset_get(const struct keyset *s, const uint8_t key[KEYSET_KEY_LEN], int64_t now_ms)
{
	const struct slot *sl;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	sl = find(s, key);
	if (sl == NULL || sl->until_ms <= now_ms)
		return 0;
	return sl->until_ms;
}

void keyset_forget(struct keyset *s, const uint8_t key[KEYSET_KEY_LEN])
{
	struct slot *sl;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	if ((sl = find(s, key)) != NULL)
		sl->tag = 0;
}

size_t keyset_count(const struct keyset *s, int64_t now_ms)
{
	size_t n = 0;

	CHECK_OBJ_NOTNULL(s, KEYSET_MAGIC);
	for (size_t i = 0; i < s->n_slots; i++)
		n += s->slots[i].tag != 0 && s->slots[i].until_ms > now_ms;
	return n;
}
