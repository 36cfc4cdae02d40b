/*
 * families: see families.h.
 *
 * A chained hash table (a power-of-two number of buckets, at least as many
 * as `max`, so chains stay about one long) and a least-recently-used list
 * over the families, both intrusive: one allocation per family.
 */
#include "cache/families.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <xxhash.h>

#include "policy/check.h"

#define FAMILIES_MAGIC 0x46414d53u

struct family {
	uint64_t h;
	struct family *next; /* in its bucket */
	TAILQ_ENTRY(family) lru;
	unsigned n;
	uint8_t ids[FAMILY_SOURCES][STORE_ID_LEN]; /* widest first */
	size_t width[FAMILY_SOURCES];
};

TAILQ_HEAD(family_list, family);

struct families {
	unsigned magic;
	size_t max, n, mask;
	struct family **buckets;
	struct family_list lru; /* most recently used first */
};

struct families *families_new(size_t max)
{
	struct families *fs = calloc(1, sizeof(*fs));
	size_t nb = 1;

	AN(fs);
	CHECK(max >= 1);
	while (nb < max)
		nb <<= 1;
	fs->magic = FAMILIES_MAGIC;
	fs->max = max;
	fs->mask = nb - 1;
	fs->buckets = calloc(nb, sizeof(*fs->buckets));
	AN(fs->buckets);
	TAILQ_INIT(&fs->lru);
	return fs;
}

void families_clear(struct families *fs)
{
	struct family *f;

	CHECK_OBJ_NOTNULL(fs, FAMILIES_MAGIC);
	while ((f = TAILQ_FIRST(&fs->lru)) != NULL) {
		TAILQ_REMOVE(&fs->lru, f, lru);
		free(f);
	}
	memset(fs->buckets, 0, (fs->mask + 1) * sizeof(*fs->buckets));
	fs->n = 0;
}

void families_free(struct families *fs)
{
	if (fs == NULL)
		return;
	families_clear(fs);
	free(fs->buckets);
	fs->magic = 0;
	free(fs);
}

uint64_t families_hash(const uint8_t keyhash[STORE_KEYHASH_LEN], unsigned rule,
		       const char *family, size_t len)
{
	uint8_t head[STORE_KEYHASH_LEN + 1];

	/* the key and rule seed the family's hash */
	memcpy(head, keyhash, STORE_KEYHASH_LEN);
	head[STORE_KEYHASH_LEN] = (uint8_t)rule;
	return XXH3_64bits_withSeed(family, len, XXH3_64bits(head, sizeof(head)));
}

/* The family h, or NULL; *link is where it hangs (for removal). */
static struct family *find(struct families *fs, uint64_t h, struct family ***link)
{
	struct family **at = &fs->buckets[h & fs->mask];

	for (; *at != NULL; at = &(*at)->next) {
		if ((*at)->h == h) {
			if (link)
				*link = at;
			return *at;
		}
	}
	return NULL;
}

static void forget(struct families *fs, struct family *f)
{
	struct family **link = NULL;

	CHECK(find(fs, f->h, &link) == f);
	*link = f->next;
	TAILQ_REMOVE(&fs->lru, f, lru);
	fs->n--;
	free(f);
}

void families_add(struct families *fs, uint64_t h, const uint8_t id[STORE_ID_LEN],
		  size_t width)
{
	struct family *f;
	unsigned i, at;

	CHECK_OBJ_NOTNULL(fs, FAMILIES_MAGIC);
	f = find(fs, h, NULL);
	if (f == NULL) {
		if (fs->n >= fs->max)
			forget(fs, TAILQ_LAST(&fs->lru, family_list));
		f = calloc(1, sizeof(*f));
		AN(f);
		f->h = h;
		f->next = fs->buckets[h & fs->mask];
		fs->buckets[h & fs->mask] = f;
		fs->n++;
	} else {
		TAILQ_REMOVE(&fs->lru, f, lru);
	}
	TAILQ_INSERT_HEAD(&fs->lru, f, lru);
	/* out with the id if it is there (it comes back with its new width) */
	for (i = 0; i < f->n; i++) {
		if (memcmp(f->ids[i], id, STORE_ID_LEN) == 0) {
			memmove(f->ids[i], f->ids[i + 1], (size_t)(f->n - i - 1) * STORE_ID_LEN);
			memmove(&f->width[i], &f->width[i + 1],
				(size_t)(f->n - i - 1) * sizeof(f->width[0]));
			f->n--;
			break;
		}
	}
	/* in at its place by width; the narrowest falls off a full family */
	for (at = 0; at < f->n && f->width[at] >= width; at++)
		;
	if (at == FAMILY_SOURCES)
		return; /* narrower than every one kept */
	if (f->n == FAMILY_SOURCES)
		f->n--;
	memmove(f->ids[at + 1], f->ids[at], (size_t)(f->n - at) * STORE_ID_LEN);
	memmove(&f->width[at + 1], &f->width[at], (size_t)(f->n - at) * sizeof(f->width[0]));
	memcpy(f->ids[at], id, STORE_ID_LEN);
	f->width[at] = width;
	f->n++;
}

size_t families_get(struct families *fs, uint64_t h, uint8_t ids[][STORE_ID_LEN],
		    size_t max)
{
	struct family *f;
	size_t n;

	CHECK_OBJ_NOTNULL(fs, FAMILIES_MAGIC);
	f = find(fs, h, NULL);
	if (f == NULL)
		return 0;
	TAILQ_REMOVE(&fs->lru, f, lru);
	TAILQ_INSERT_HEAD(&fs->lru, f, lru);
	n = f->n < max ? f->n : max;
	memcpy(ids, f->ids, n * STORE_ID_LEN);
	return n;
}

void families_drop(struct families *fs, uint64_t h, const uint8_t id[STORE_ID_LEN])
{
	struct family *f;

	CHECK_OBJ_NOTNULL(fs, FAMILIES_MAGIC);
	f = find(fs, h, NULL);
	if (f == NULL)
		return;
	for (unsigned i = 0; i < f->n; i++) {
		if (memcmp(f->ids[i], id, STORE_ID_LEN) != 0)
			continue;
		memmove(f->ids[i], f->ids[i + 1], (size_t)(f->n - i - 1) * STORE_ID_LEN);
		memmove(&f->width[i], &f->width[i + 1],
			(size_t)(f->n - i - 1) * sizeof(f->width[0]));
		f->n--;
		break;
	}
	if (f->n == 0)
		forget(fs, f);
}

size_t families_count(const struct families *fs)
{
	CHECK_OBJ_NOTNULL(fs, FAMILIES_MAGIC);
	return fs->n;
}
