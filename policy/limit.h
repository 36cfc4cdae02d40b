/*
 * limit: upstream protection - per-key token buckets, a circuit breaker per
 * upstream host, Retry-After parsing and jittered backoff.
 *
 * Pure logic: no I/O, no clock, no libevent/libcurl/LMDB. Every function that
 * needs the time takes `now_ms` from the caller (the event loop reads the
 * clock once per callback and passes it down). The limiter tables and the
 * breaker accept any millisecond clock in [0, LIMIT_NOW_MAX], monotonic is
 * best; limit_parse_retry_after needs wall-clock Unix-epoch milliseconds for
 * its HTTP-date form and returns a delay, which the caller adds to whatever
 * clock it gives limit_block.
 *
 * 1. Token buckets (struct limit_table, opaque).
 *    One bucket per 32-byte key (SHA-256 of an API key or caller id). A
 *    bucket holds `tokens` (a double) as of its time stamp and refills at
 *    `rate` tokens per second up to `burst`; a request takes one whole token.
 *    A key seen for the first time starts full (burst tokens). Over any
 *    window of W seconds at most burst + rate * W tokens are taken for one
 *    key (net of refunds), unless a full table forgot its vendor block (see
 *    below; it then starts full again). A bucket may also be blocked until a deadline
 *    (the vendor answered 429 with Retry-After): no token is handed out
 *    before it.
 *    States of a bucket: absent -> present (draining, refilling, perhaps
 *    blocked) -> reclaimable (full and not blocked at the current time, so
 *    indistinguishable from an absent key) -> reused for another key.
 *    Invariants:
 *      - at most max_keys buckets exist; nothing else grows;
 *      - 0 <= tokens; the tokens a bucket offers are never above burst;
 *      - a bucket's time stamp never goes backwards: a `now_ms` smaller
 *        than one already seen for that bucket adds no tokens (it is treated
 *        as "no time has passed") and breaks nothing;
 *      - only a successful take, a refund, a block or a reclaim changes the
 *        table; limit_wait_ms and refused takes change nothing, so a wait
 *        of w returned at t is honest: absent other takes, blocks or rate
 *        changes for that key, a take at t + w succeeds and one at
 *        t + w - 1 would not have.
 *    When the table is full: a new key takes a bucket that can be forgotten
 *    safely, found among the next LIMIT_RECLAIM_SCAN buckets after a
 *    rotating hand: a reclaimable one, else the least recently used of the
 *    blocked ones (its key forgets the vendor's block: at worst one more
 *    429 for it, where refusing would let a flood of keys the vendor blocks
 *    lock every other key out). If the scanned buckets are all drained and
 *    unblocked, the new key is REFUSED: limit_take returns a wait (the time
 *    until the soonest of them becomes reclaimable, at least 1 ms) instead
 *    of giving it a bucket; forgetting a drained bucket would let its key
 *    exceed its limit. The refusal wait is an estimate, not a promise: the
 *    hand moves on after a failed scan. Size max_keys, and bound how fast
 *    new keys may come (the gateway's --new-key-rate), so refusal only
 *    happens under abuse.
 *    Keys must already be uniformly distributed (the first 8 bytes are the
 *    hash). If callers can choose the raw caller id, hash it with a secret
 *    salt first, or they can lengthen hash chains on purpose.
 *
 * 2. Circuit breaker (struct limit_breaker, a plain value, one per host).
 *    States: closed (requests flow; consecutive failures are counted) ->
 *    open (at failure_threshold consecutive failures; everything denied for
 *    cooldown_ms) -> half-open (the cool-down is over and exactly one request,
 *    the probe, is outstanding; the rest are denied) -> closed on the probe's
 *    success, or open for another cool-down on its failure, or back to open
 *    with the cool-down already over (next caller probes) when the probe is
 *    abandoned. A threshold of 0 disables the breaker: always LIMIT_ALLOW.
 *    Invariant: at most one probe is outstanding at a time.
 *
 * 3. limit_parse_retry_after: RFC 9110 section 10.2.3 Retry-After, to a delay.
 * 4. limit_backoff_ms: "full jitter" exponential backoff with a splitmix64
 *    generator whose 64-bit state the caller owns.
 *
 * Ownership: a limit_table is created by limit_table_new and freed by
 * limit_table_free; every other pointer argument is borrowed for the call
 * only. Not thread-safe: one table per event loop.
 */
#ifndef CG_POLICY_LIMIT_H
#define CG_POLICY_LIMIT_H

#include <stddef.h>
#include <stdint.h>

#define LIMIT_KEY_LEN 32
#define LIMIT_MAX_KEYS (1u << 24)	 /* largest max_keys accepted */
#define LIMIT_RECLAIM_SCAN 32		 /* buckets looked at per reclaim */
#define LIMIT_RATE_MIN (1.0 / 86400.0)	 /* tokens/s: one a day at the least */
#define LIMIT_RATE_MAX 1e9		 /* tokens/s */
#define LIMIT_BURST_MAX 1e9		 /* tokens */
#define LIMIT_NOW_MAX (INT64_C(1) << 62) /* largest now_ms / deadline, ms */
/* The longest Retry-After, cool-down or backoff ceiling: 24 h, in ms. */
#define LIMIT_DELAY_MAX_MS (INT64_C(86400) * 1000)
#define LIMIT_PROBE_WAIT_MS 1000 /* retry-after while a probe is out */

/* ------------------------------------------------------------------------ */
/* Token buckets                                                            */

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

/* ------------------------------------------------------------------------ */
/* Circuit breaker                                                          */

enum limit_breaker_state {
	LIMIT_BREAKER_CLOSED = 0,
	LIMIT_BREAKER_OPEN,
	LIMIT_BREAKER_HALF_OPEN, /* a probe is outstanding */
};

enum limit_verdict {
	LIMIT_ALLOW = 0, /* closed: send */
	LIMIT_PROBE,	 /* send: this request is the probe; report its end with
			  * success, failure or abandon */
	LIMIT_DENY,	 /* do not send; *retry_after_ms says when to ask again */
};

/* A plain value: embed one per upstream host; read `state` for metrics. */
struct limit_breaker {
	enum limit_breaker_state state;
	unsigned threshold;  /* consecutive failures that open it; 0: disabled */
	unsigned failures;   /* consecutive failures counted (saturating) */
	int64_t cooldown_ms; /* in [0, LIMIT_DELAY_MAX_MS] */
	int64_t reopen_ms;   /* open: when the next probe may go */
};

/*
 * Initialises `b` closed with no failures. cooldown_ms is clamped into
 * [0, LIMIT_DELAY_MAX_MS]. failure_threshold 0 disables the breaker.
 */
void limit_breaker_init(struct limit_breaker *b, unsigned failure_threshold,
			int64_t cooldown_ms);

/*
 * May a request go to this host at now_ms? LIMIT_ALLOW when closed (or
 * disabled); LIMIT_PROBE when open, the cool-down is over and no probe is
 * outstanding (the breaker goes half-open; the caller must later call
 * success, failure or abandon for this request); LIMIT_DENY otherwise, with
 * *retry_after_ms (may be NULL) set to the remaining cool-down, or to
 * LIMIT_PROBE_WAIT_MS while the probe is outstanding - always >= 1. On ALLOW
 * and PROBE *retry_after_ms is set to 0.
 */
enum limit_verdict limit_breaker_allow(struct limit_breaker *b, int64_t now_ms,
				       int64_t *retry_after_ms);

/*
 * The verdict limit_breaker_allow would give at now_ms, with the same
 * *retry_after_ms (may be NULL), without changing the breaker: LIMIT_PROBE
 * here means "a probe may go", not "this is the probe". For deciding whether
 * to queue or refuse before asking for real.
 */
enum limit_verdict limit_breaker_peek(const struct limit_breaker *b, int64_t now_ms,
				      int64_t *retry_after_ms);

/*
 * The host answered (any answer that shows it works, e.g. 2xx or 4xx other
 * than 429): closes the breaker and resets the failure count.
 */
void limit_breaker_success(struct limit_breaker *b);

/*
 * The host failed (connect error, timeout, 5xx) at now_ms. Closed: counts the
 * consecutive failure and opens at the threshold for cooldown_ms. Half-open
 * (the probe failed): opens again for another cool-down from now_ms. Open: a
 * late failure of a request admitted earlier; the deadline is kept.
 * The breaker cannot tell a probe's answer from a late one of a request sent
 * before it opened; either is taken as the probe's.
 */
void limit_breaker_failure(struct limit_breaker *b, int64_t now_ms);

/*
 * The probe ended without an answer either way (the client left and the
 * request was cancelled): half-open goes back to open with the cool-down
 * over, so the next limit_breaker_allow hands out a new probe. Any other
 * state: no-op.
 */
void limit_breaker_abandon(struct limit_breaker *b);

/* "closed", "open" or "half-open", for logs and metrics; static storage. */
const char *limit_breaker_state_name(enum limit_breaker_state s);

/* ------------------------------------------------------------------------ */
/* Retry-After and backoff                                                  */

/*
 * Parses a Retry-After field value (NUL-terminated, borrowed): optional
 * whitespace (SP / HTAB) around either delta-seconds (1*DIGIT; values above
 * LIMIT_DELAY_MAX_MS / 1000 are clamped, never overflow) or an HTTP-date in
 * IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), obsolete RFC 850
 * ("Sunday, 06-Nov-94 08:49:37 GMT"; a two-digit year more than 50 years
 * ahead of now_ms is taken as the previous century's) or asctime
 * ("Sun Nov  6 08:49:37 1994") form. Names are case-sensitive as in RFC 9110;
 * the weekday must be a valid name but is not checked against the date;
 * second 60 (a leap second) is accepted. For a date, now_ms is the wall clock
 * in Unix-epoch ms: a date in the past gives 0, the delay is clamped to
 * LIMIT_DELAY_MAX_MS. Returns 0 with *delay_ms set, or -1 on anything
 * malformed (NULL, empty, junk, out-of-range field), *delay_ms untouched.
 */
int limit_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms);

/*
 * The next value of a splitmix64 generator (Steele, Lea, Flood 2014) whose
 * state the caller owns: any 64-bit seed works, 0 included; advances *state.
 */
uint64_t limit_rng_next(uint64_t *state);

/*
 * Delay before retry number `attempt` (0 for the first retry), "full jitter":
 * uniform over the integers 1 .. min(cap_ms, base_ms * 2^attempt), so never
 * 0. base_ms and cap_ms below 1 are taken as 1, cap_ms above
 * LIMIT_DELAY_MAX_MS as that; any attempt number is safe (no overflow).
 * Draws from *rng (caller-owned splitmix64 state, see limit_rng_next).
 */
int64_t limit_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms,
			 uint64_t *rng);

#endif
