/*
 * keyset: a bounded memory of key hashes, each with a deadline.
 *
 * The fetch layer remembers a few things about API keys it has seen: which
 * keys the vendor has answered successfully (so that keys it never has can
 * be held to --new-key-rate), and which it refused with 401 a moment ago
 * (answered locally for --unauthorized-ttl). Both must stay bounded under a
 * flood of made-up keys, and forgetting is always safe: a forgotten key is
 * treated as never seen.
 *
 * A keyset is a fixed direct-mapped array: a key's slot is chosen by its
 * first bytes (a key hash is a SHA-256, so they are uniform), and a key
 * written to a slot replaces whatever was there. So it holds at most
 * `slots` keys, costs 16 bytes a slot, and never allocates after creation.
 * Keys are compared by their first 8 bytes past the slot index bits (a
 * false match needs a 64-bit collision between hashes).
 *
 * Pure: no clock (deadlines and `now` are the caller's), no I/O, not
 * thread-safe (one owner).
 */
#ifndef CG_POLICY_KEYSET_H
#define CG_POLICY_KEYSET_H

#include <stddef.h>
#include <stdint.h>

#define KEYSET_KEY_LEN 32
#define KEYSET_FOREVER INT64_MAX

struct keyset;

/* A keyset of `slots` slots (rounded up to a power of two, at least 1, at
 * most 2^24). Never NULL: aborts when out of memory. */
struct keyset *keyset_new(size_t slots);
void keyset_free(struct keyset *s);

/* Remembers `key` until until_ms (KEYSET_FOREVER: until displaced). */
void keyset_put(struct keyset *s, const uint8_t key[KEYSET_KEY_LEN], int64_t until_ms);

/* The deadline remembered for `key` if it is after now_ms, else 0. */
int64_t keyset_get(const struct keyset *s, const uint8_t key[KEYSET_KEY_LEN], int64_t now_ms);

/* Forgets `key` (if it holds its slot). */
void keyset_forget(struct keyset *s, const uint8_t key[KEYSET_KEY_LEN]);

/* Keys remembered with a deadline after now_ms (a scan: for metrics). */
size_t keyset_count(const struct keyset *s, int64_t now_ms);

#endif
