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
 * A keyset is a fixed array of sets of 4 slots: a key's set is chosen by
 * its first bytes (a key hash is a SHA-256, so they are uniform), and a key
 * new to a full set replaces the one whose deadline comes first (expired
 * before live, live before KEYSET_FOREVER). So it holds at most `slots`
 * keys, costs 16 bytes a slot, and never allocates after creation; and a
 * few keys are not forgotten for sharing a slot (direct-mapped, 24 keys
 * in 4096 slots collided in 6.5 % of cases: a 401 remembered for one was
 * lost to another, found by test_abuse). Keys are compared by their 8
 * bytes after the first 8 (a false match needs a 64-bit collision between
 * hashes).
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

/* A keyset of `slots` slots (rounded up to a power of two, at least 4, at
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
