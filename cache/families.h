/*
 * families: which stored answers might hold the answer to a question, for
 * derived answers (policy/derive.h, issue 13).
 *
 * A family is (API key hash, derive rule, derive_family() string): two
 * questions of one family differ only in what that rule lets vary (the
 * page, the cursor, days). The index maps a family, by a 64-bit hash of
 * it, to the ids of its widest stored answers (FAMILY_SOURCES of them, by
 * body bytes: a wider answer holds more questions; an answer stored again
 * takes its new width). Finding the candidates for a question is then one
 * lookup per rule, however big the cache.
 *
 * The index is a hint, never an authority: a hash collision can put an id
 * in the wrong family, and an id can outlive its entry (evicted, purged,
 * expired). The caller reads each candidate from the store and checks it
 * (its key hash, its freshness, derive_answer() on its query and body) and
 * drops the ids that fail (families_drop).
 *
 * Bounds: at most `max` families (the least recently used one is forgotten
 * to make room), FAMILY_SOURCES ids each: about 200 bytes a family.
 * Threads: one (the fetch layer's); no locking.
 */
#ifndef CG_CACHE_FAMILIES_H
#define CG_CACHE_FAMILIES_H

#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"

#define FAMILY_SOURCES 4         /* candidate answers kept per family */
#define FAMILIES_MAX_DEFAULT 65536

struct families;

/* An empty index of at most max (>= 1) families. Never NULL. */
struct families *families_new(size_t max);
void families_free(struct families *fs);

/* Forgets everything. */
void families_clear(struct families *fs);

/* The hash of a family: key hash, rule bit, family string. */
uint64_t families_hash(const uint8_t keyhash[STORE_KEYHASH_LEN], unsigned rule,
		       const char *family, size_t len);

/* Notes that answer `id`, `width` bytes wide, belongs to family `h` (an
 * id already there takes the new width; past FAMILY_SOURCES the narrowest
 * is forgotten, or the new one if it is the narrowest). */
void families_add(struct families *fs, uint64_t h, const uint8_t id[STORE_ID_LEN],
		  size_t width);

/* Copies family h's ids, widest first, into ids; returns how many (0 if
 * the family is unknown). */
size_t families_get(struct families *fs, uint64_t h, uint8_t ids[][STORE_ID_LEN],
		    size_t max);

/* Removes `id` from family h (a family left empty is forgotten). */
void families_drop(struct families *fs, uint64_t h, const uint8_t id[STORE_ID_LEN]);

/* Families held. */
size_t families_count(const struct families *fs);

#endif
