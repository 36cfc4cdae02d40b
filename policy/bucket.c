/*
 * bucket: see bucket.h for the data model, states and invariants.
 *
 * The bucket table is a chained hash over a fixed pool: `nodes` holds up to
 * max_keys buckets, of which the first `count` are in use (nodes are never
 * freed one by one; a reclaimed node is reused in place); `heads` has a power
 * of two >= max_keys chain heads. Links are node indices, LIMIT_NIL ends a
 * chain. Both arrays are allocated once by limit_table_new with calloc, so a
 * large max_keys costs address space, not resident memory, until used.
 */
#include "policy/bucket.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "policy/check.h"

#define LIMIT_TABLE_MAGIC 0x4c494d54u /* "LIMT" */
#define LIMIT_NIL UINT32_MAX

struct limit_bucket {
	uint8_t key[LIMIT_KEY_LEN];
	double tokens;		  /* as of stamp_ms; >= 0 */
	int64_t stamp_ms;	  /* latest now_ms applied; never decreases */
	int64_t blocked_until_ms; /* 0: never blocked */
	uint32_t next;		  /* next node in the chain, or LIMIT_NIL */
};

struct limit_table {
	uint32_t magic;
	double rate_per_ms; /* tokens per millisecond */
	double burst;
	size_t max_keys;
	size_t count;	  /* nodes[0 .. count) are in use */
	size_t mask;	  /* number of heads - 1 */
	size_t hand;	  /* where the next reclaim scan starts, < count */
	int64_t clock_ms; /* latest now_ms seen by any call */
	uint32_t *heads;
	struct limit_bucket *nodes;
};

static bool rate_valid(double rate_per_s, double burst)
{
	/* The comparisons are false for NaN, so NaN is refused too. */
	return rate_per_s >= LIMIT_RATE_MIN && rate_per_s <= LIMIT_RATE_MAX &&
	       burst >= 1.0 && burst <= LIMIT_BURST_MAX;
}

static void check_table(const struct limit_table *t)
{
	CHECK_OBJ_NOTNULL(t, LIMIT_TABLE_MAGIC);
	CHECK(t->count <= t->max_keys);
}

static void check_now(int64_t now_ms)
{
	CHECK(now_ms >= 0 && now_ms <= LIMIT_NOW_MAX);
}

static size_t key_slot(const struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN])
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return (size_t)(h & t->mask);
}

static uint32_t find(const struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN])
{
	uint32_t i;

	for (i = t->heads[key_slot(t, key)]; i != LIMIT_NIL; i = t->nodes[i].next) {
		CHECK(i < t->count);
		if (memcmp(t->nodes[i].key, key, LIMIT_KEY_LEN) == 0)
			return i;
	}
	return LIMIT_NIL;
}

/* The tokens bucket b offers at now_ms: a now_ms before its stamp adds none. */
static double tokens_at(const struct limit_table *t, const struct limit_bucket *b,
			int64_t now_ms)
{
	double tok = b->tokens;

	if (now_ms > b->stamp_ms)
		tok += (double)(now_ms - b->stamp_ms) * t->rate_per_ms;
	return tok < t->burst ? tok : t->burst;
}

/*
 * The smallest w >= 1 such that tokens_at(now_ms + w) >= want, for a bucket
 * short of `want` (<= burst) at now_ms. tokens_at is monotonic in time, so the
 * floating-point estimate is corrected step by step to the exact answer of
 * the very function limit_take uses: the wait is honest to the millisecond.
 */
static int64_t wait_for(const struct limit_table *t, const struct limit_bucket *b,
			int64_t now_ms, double want)
{
	double base = b->tokens < t->burst ? b->tokens : t->burst;
	int64_t at, w;

	CHECK(want <= t->burst);
	CHECK(tokens_at(t, b, now_ms) < want);
	/* (want - base) <= LIMIT_BURST_MAX and rate >= LIMIT_RATE_MIN: the
	 * estimate stays below 2^57, stamp below 2^62: no overflow. */
	at = b->stamp_ms + (int64_t)ceil((want - base) / t->rate_per_ms);
	w = at > now_ms ? at - now_ms : 1;
	while (tokens_at(t, b, now_ms + w) < want)
		w++;
	while (w > 1 && tokens_at(t, b, now_ms + w - 1) >= want)
		w--;
	return w;
}

/* limit_take's answer for an existing bucket: 0, or the wait in ms. */
static int64_t bucket_wait(const struct limit_table *t, const struct limit_bucket *b,
			   int64_t now_ms)
{
	int64_t block = b->blocked_until_ms > now_ms ? b->blocked_until_ms - now_ms : 0;
	int64_t tok = tokens_at(t, b, now_ms) >= 1.0 ? 0 : wait_for(t, b, now_ms, 1.0);

	return block > tok ? block : tok;
}

/* Full and not blocked at now_ms: indistinguishable from an absent key. */
static bool reclaimable(const struct limit_table *t, const struct limit_bucket *b,
			int64_t now_ms)
{
	return b->blocked_until_ms <= now_ms && tokens_at(t, b, now_ms) >= t->burst;
}

/* Time until b becomes reclaimable (it is not yet), clamped to 1 .. 24 h. */
static int64_t reclaim_wait(const struct limit_table *t, const struct limit_bucket *b,
			    int64_t now_ms)
{
	int64_t block = b->blocked_until_ms > now_ms ? b->blocked_until_ms - now_ms : 0;
	int64_t fill =
	    tokens_at(t, b, now_ms) >= t->burst ? 0 : wait_for(t, b, now_ms, t->burst);
	int64_t w = block > fill ? block : fill;

	if (w < 1)
		w = 1;
	return w < LIMIT_DELAY_MAX_MS ? w : LIMIT_DELAY_MAX_MS;
}

/*
 * Looks at up to LIMIT_RECLAIM_SCAN nodes from the hand for one that can be
 * forgotten at now_ms: a reclaimable one (full and not blocked), else the
 * least recently used of the blocked ones (a vendor block forgotten costs
 * at most another 429 for that key; a drained bucket forgotten would let
 * its key exceed its rate, so those are never taken). Returns its index,
 * or LIMIT_NIL with *est set to the soonest any scanned node becomes
 * reclaimable. *scanned: how many were looked at.
 */
static uint32_t scan(const struct limit_table *t, int64_t now_ms, int64_t *est,
		     size_t *scanned)
{
	size_t n = t->count < LIMIT_RECLAIM_SCAN ? t->count : LIMIT_RECLAIM_SCAN;
	size_t i, idx;
	uint32_t blocked = LIMIT_NIL;
	int64_t w, best = LIMIT_DELAY_MAX_MS;

	CHECK(t->count > 0 && t->hand < t->count);
	for (i = 0; i < n; i++) {
		const struct limit_bucket *b;

		idx = (t->hand + i) % t->count;
		b = &t->nodes[idx];
		if (reclaimable(t, b, now_ms)) {
			*scanned = i + 1;
			return (uint32_t)idx;
		}
		if (b->blocked_until_ms > now_ms &&
		    (blocked == LIMIT_NIL || b->stamp_ms < t->nodes[blocked].stamp_ms))
			blocked = (uint32_t)idx;
		w = reclaim_wait(t, b, now_ms);
		if (w < best)
			best = w;
	}
	*scanned = n;
	*est = best;
	return blocked;
}

static void unlink_node(struct limit_table *t, uint32_t idx)
{
	uint32_t *link = &t->heads[key_slot(t, t->nodes[idx].key)];

	while (*link != idx) {
		CHECK(*link != LIMIT_NIL);
		link = &t->nodes[*link].next;
	}
	*link = t->nodes[idx].next;
}

/*
 * The bucket for a new key, full and linked in: a fresh node if the pool has
 * room, else one reclaimable at now_ms. Returns LIMIT_NIL (and *est, the
 * refusal wait) when the table is full and nothing could be reclaimed. The
 * new bucket is full as of the table's clock (the latest now_ms seen), never
 * earlier: a key that was reclaimed and comes back with a clock gone
 * backwards cannot get tokens its old bucket would not have had.
 */
static uint32_t insert(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		       int64_t now_ms, int64_t *est)
{
	uint32_t idx;
	size_t slot, scanned;
	struct limit_bucket *b;

	if (t->count < t->max_keys) {
		idx = (uint32_t)t->count++;
	} else {
		idx = scan(t, now_ms, est, &scanned);
		t->hand = (t->hand + scanned) % t->count;
		if (idx == LIMIT_NIL)
			return LIMIT_NIL;
		unlink_node(t, idx);
	}
	b = &t->nodes[idx];
	memcpy(b->key, key, LIMIT_KEY_LEN);
	b->tokens = t->burst;
	b->stamp_ms = t->clock_ms;
	b->blocked_until_ms = 0;
	slot = key_slot(t, key);
	b->next = t->heads[slot];
	t->heads[slot] = idx;
	return idx;
}

struct limit_table *limit_table_new(double rate_per_s, double burst, size_t max_keys)
{
	struct limit_table *t;
	size_t nheads = 1, i;

	if (!rate_valid(rate_per_s, burst) || max_keys == 0 || max_keys > LIMIT_MAX_KEYS)
		return NULL;
	while (nheads < max_keys)
		nheads <<= 1;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		abort();
	t->heads = malloc(nheads * sizeof(*t->heads));
	t->nodes = calloc(max_keys, sizeof(*t->nodes));
	if (t->heads == NULL || t->nodes == NULL) {
		free(t->heads);
		free(t->nodes);
		free(t);
		return NULL;
	}
	for (i = 0; i < nheads; i++)
		t->heads[i] = LIMIT_NIL;
	t->magic = LIMIT_TABLE_MAGIC;
	t->rate_per_ms = rate_per_s / 1000.0;
	t->burst = burst;
	t->max_keys = max_keys;
	t->mask = nheads - 1;
	return t;
}

void limit_table_free(struct limit_table *t)
{
	if (t == NULL)
		return;
	check_table(t);
	t->magic = 0;
	free(t->heads);
	free(t->nodes);
	free(t);
}

static void see_time(struct limit_table *t, int64_t now_ms)
{
	check_now(now_ms);
	if (now_ms > t->clock_ms)
		t->clock_ms = now_ms;
}

int64_t limit_take(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		   int64_t now_ms)
{
	struct limit_bucket *b;
	uint32_t idx;
	int64_t w;

	check_table(t);
	AN(key);
	see_time(t, now_ms);
	idx = find(t, key);
	if (idx == LIMIT_NIL) {
		idx = insert(t, key, now_ms, &w);
		if (idx == LIMIT_NIL)
			return w;
	}
	b = &t->nodes[idx];
	w = bucket_wait(t, b, now_ms);
	if (w > 0)
		return w;
	b->tokens = tokens_at(t, b, now_ms) - 1.0;
	if (now_ms > b->stamp_ms)
		b->stamp_ms = now_ms;
	CHECK(b->tokens >= 0.0);
	return 0;
}

int64_t limit_wait_ms(const struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		      int64_t now_ms)
{
	uint32_t idx;
	int64_t est;
	size_t scanned;

	check_table(t);
	AN(key);
	check_now(now_ms);
	idx = find(t, key);
	if (idx != LIMIT_NIL)
		return bucket_wait(t, &t->nodes[idx], now_ms);
	if (t->count < t->max_keys)
		return 0;
	return scan(t, now_ms, &est, &scanned) != LIMIT_NIL ? 0 : est;
}

void limit_refund(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN])
{
	uint32_t idx;
	struct limit_bucket *b;

	check_table(t);
	AN(key);
	idx = find(t, key);
	if (idx == LIMIT_NIL)
		return;
	b = &t->nodes[idx];
	b->tokens += 1.0;
	if (b->tokens > t->burst)
		b->tokens = t->burst;
}

int limit_block(struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN], int64_t until_ms)
{
	uint32_t idx;
	int64_t est;

	check_table(t);
	AN(key);
	check_now(until_ms);
	idx = find(t, key);
	if (idx == LIMIT_NIL)
		idx = insert(t, key, t->clock_ms, &est);
	if (idx == LIMIT_NIL)
		return -1;
	if (until_ms > t->nodes[idx].blocked_until_ms)
		t->nodes[idx].blocked_until_ms = until_ms;
	return 0;
}

int64_t limit_blocked_until(const struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN])
{
	uint32_t idx;

	check_table(t);
	AN(key);
	idx = find(t, key);
	return idx == LIMIT_NIL ? 0 : t->nodes[idx].blocked_until_ms;
}

int limit_table_set_rate(struct limit_table *t, double rate_per_s, double burst)
{
	check_table(t);
	if (!rate_valid(rate_per_s, burst))
		return -1;
	t->rate_per_ms = rate_per_s / 1000.0;
	t->burst = burst;
	return 0;
}

size_t limit_table_blocked(const struct limit_table *t, int64_t now_ms)
{
	size_t n = 0;

	check_table(t);
	for (size_t i = 0; i < t->count; i++)
		n += t->nodes[i].blocked_until_ms > now_ms;
	return n;
}

size_t limit_table_size(const struct limit_table *t)
{
	check_table(t);
	return t->count;
}
