/*
 * bucket: per-key token buckets in a bounded table (struct limit_table,
 * opaque), and vendor blocks. Pure: the clock is a parameter (policy/limit.h).
 *
 * One bucket per 32-byte key (SHA-256 of an API key or caller id). A bucket
 * holds `tokens` (a double) as of its time stamp and refills at `rate`
 * tokens per second up to `burst`; a request takes one whole token. A key
 * seen for the first time starts full (burst tokens). Over any window of W
 * seconds at most burst + rate * W tokens are taken for one key (net of
 * refunds), unless a full table forgot its vendor block (see below; it then
 * starts full again). A bucket may also be blocked until a deadline (the
 * vendor answered 429 with Retry-After): no token is handed out before it.
 *
 * States of a bucket: absent -> present (draining, refilling, perhaps
 * blocked) -> reclaimable (full and not blocked at the current time, so
 * indistinguishable from an absent key) -> reused for another key.
 *
 * Invariants:
 *   - at most max_keys buckets exist; nothing else grows;
 *   - 0 <= tokens; the tokens a bucket offers are never above burst;
 *   - a bucket's time stamp never goes backwards: a `now_ms` smaller than
 *     one already seen for that bucket adds no tokens (it is treated as "no
 *     time has passed") and breaks nothing;
 *   - only a successful take, a refund, a block or a reclaim changes the
 *     table; limit_wait_ms and refused takes change nothing, so a wait of w
 *     returned at t is honest: absent other takes, blocks or rate changes
 *     for that key, a take at t + w succeeds and one at t + w - 1 would not
 *     have.
 *
 * When the table is full: a new key takes a bucket that can be forgotten
 * safely, found among the next LIMIT_RECLAIM_SCAN buckets after a rotating
 * hand: a reclaimable one, else the least recently used of the blocked ones
 * (its key forgets the vendor's block: at worst one more 429 for it, where
 * refusing would let a flood of keys the vendor blocks lock every other key
 * out). If the scanned buckets are all drained and unblocked, the new key is
 * REFUSED: limit_take returns a wait (the time until the soonest of them
 * becomes reclaimable, at least 1 ms) instead of giving it a bucket;
 * forgetting a drained bucket would let its key exceed its limit. The
 * refusal wait is an estimate, not a promise: the hand moves on after a
 * failed scan. Size max_keys, and bound how fast new keys may come (the
 * gateway's --new-key-rate), so refusal only happens under abuse.
 *
 * Keys must already be uniformly distributed (the first 8 bytes are the
 * hash). If callers can choose the raw caller id, hash it with a secret salt
 * first, or they can lengthen hash chains on purpose.
 *
 * Ownership: a limit_table is created by limit_table_new and freed by
 * limit_table_free; every other pointer argument is borrowed for the call
 * only. Not thread-safe: one table per event loop.
 */
#ifndef CG_POLICY_BUCKET_H
#define CG_POLICY_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#include "policy/limit.h"

#define LIMIT_KEY_LEN 32
#define LIMIT_MAX_KEYS (1u << 24)	/* largest max_keys accepted */
#define LIMIT_RECLAIM_SCAN 32		/* buckets looked at per reclaim */
#define LIMIT_RATE_MIN (1.0 / 86400.0)	/* tokens/s: one a day at the least */
#define LIMIT_RATE_MAX 1e9		/* tokens/s */
#define LIMIT_BURST_MAX 1e9		/* tokens */

struct limit_table;

/*
 * A table of at most max_keys buckets, each refilling at rate_per_s tokens a
 * second up to burst tokens. Returns NULL on bad arguments (rate_per_s not in
 * [LIMIT_RATE_MIN, LIMIT_RATE_MAX], burst not in [1, LIMIT_BURST_MAX], either
 * not finite, max_keys 0 or above LIMIT_MAX_KEYS) or if the table's arrays
 * (68 to 72 bytes a key, mapped lazily by calloc) cannot be allocated. The
 * caller owns the table and frees it with limit_table_free.
 */
struct limit_table *limit_table_new(double rate_per_s, double burst, size_t max_keys);

/* Frees the table and every bucket. NULL is a no-op. */
void limit_table_free(struct limit_table *t);

/*
 * Takes one token for `key` at now_ms. Returns 0 when the token was taken
 * (the request may go upstream), or the milliseconds (>= 1) until a token
 * will be available - an honest Retry-After - having taken nothing: the
 * bucket is empty, or blocked (the remaining block, or the token wait if that
 * is longer), or the key is new and the table is full (see the file comment).
 * A new key gets a full bucket first. `key` is borrowed (LIMIT_KEY_LEN bytes).
 */
int64_t limit_take(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		   int64_t now_ms);

/*
 * The answer limit_take would give at now_ms, without taking anything or
 * creating a bucket: 0 if a take would succeed, otherwise the wait in ms.
 */
int64_t limit_wait_ms(const struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		      int64_t now_ms);

/*
 * Gives back one token taken by a request that did not go upstream after all
 * (it was answered from the cache, coalesced, or cancelled before sending).
 * Never raises the bucket above burst. A key without a bucket is a no-op (its
 * bucket was full when reclaimed, so there is nothing to give back).
 */
void limit_refund(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN]);

/*
 * The vendor answered 429 with Retry-After for `key`: no token is handed out
 * for it before until_ms (in [0, LIMIT_NOW_MAX]). A later block extends the
 * deadline; an earlier one leaves it. Creates the bucket (full) if the key
 * has none; reclaim decisions use the latest now_ms the table has seen.
 * Returns 0 when the block is recorded, -1 if the key is new, the table is
 * full and no bucket could be reclaimed (the block is then not recorded;
 * takes for that key are refused anyway while the table stays full).
 */
int limit_block(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		int64_t until_ms);

/*
 * The block deadline recorded for `key` (possibly already past), or 0 if the
 * key has no bucket or was never blocked.
 */
int64_t limit_blocked_until(const struct limit_table *t,
			    const uint8_t key[LIMIT_KEY_LEN]);

/*
 * Changes rate and burst for every bucket (a config reload). Returns 0, or -1
 * on arguments limit_table_new would refuse (the table is then unaltered).
 * Existing buckets keep their tokens, capped at the new burst; the time since
 * a bucket was last touched refills at the new rate.
 */
int limit_table_set_rate(struct limit_table *t, double rate_per_s, double burst);

/* The number of buckets in the table (<= max_keys). */
size_t limit_table_size(const struct limit_table *t);

/* The number of keys blocked at now_ms (a scan of every bucket). */
size_t limit_table_blocked(const struct limit_table *t, int64_t now_ms);

#endif
