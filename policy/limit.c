/*
 * limit: see limit.h for the data model, states and invariants.
 *
 * The bucket table is a chained hash over a fixed pool: `nodes` holds up to
 * max_keys buckets, of which the first `count` are in use (nodes are never
 * freed one by one; a reclaimed node is reused in place); `heads` has a power
 * of two >= max_keys chain heads. Links are node indices, LIMIT_NIL ends a
 * chain. Both arrays are allocated once by limit_table_new with calloc, so a
 * large max_keys costs address space, not resident memory, until used.
 */
#include "policy/limit.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* ------------------------------------------------------------------------ */
/* Token buckets                                                            */

static bool rate_valid(double rate_per_s, double burst)
{
	/* The comparisons are false for NaN, so NaN is refused too. */
	return rate_per_s >= LIMIT_RATE_MIN && rate_per_s <= LIMIT_RATE_MAX &&
	       burst >= 1.0 && burst <= LIMIT_BURST_MAX;
}

static void check_table(const struct limit_table *t)
{
	assert(t != NULL);
	assert(t->magic == LIMIT_TABLE_MAGIC);
	assert(t->count <= t->max_keys);
	(void)t;
}

static void check_now(int64_t now_ms)
{
	assert(now_ms >= 0 && now_ms <= LIMIT_NOW_MAX);
	(void)now_ms;
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
		assert(i < t->count);
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

	assert(want <= t->burst);
	assert(tokens_at(t, b, now_ms) < want);
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

	assert(t->count > 0 && t->hand < t->count);
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
		assert(*link != LIMIT_NIL);
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
	assert(key != NULL);
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
	assert(b->tokens >= 0.0);
	return 0;
}

int64_t limit_wait_ms(const struct limit_table *t, const uint8_t key[LIMIT_KEY_LEN],
		      int64_t now_ms)
{
	uint32_t idx;
	int64_t est;
	size_t scanned;

	check_table(t);
	assert(key != NULL);
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
	assert(key != NULL);
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
	assert(key != NULL);
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
	assert(key != NULL);
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

/* ------------------------------------------------------------------------ */
/* Circuit breaker                                                          */

void limit_breaker_init(struct limit_breaker *b, unsigned failure_threshold,
			int64_t cooldown_ms)
{
	assert(b != NULL);
	memset(b, 0, sizeof(*b));
	b->state = LIMIT_BREAKER_CLOSED;
	b->threshold = failure_threshold;
	if (cooldown_ms < 0)
		cooldown_ms = 0;
	b->cooldown_ms =
	    cooldown_ms < LIMIT_DELAY_MAX_MS ? cooldown_ms : LIMIT_DELAY_MAX_MS;
}

static void breaker_open(struct limit_breaker *b, int64_t now_ms)
{
	b->state = LIMIT_BREAKER_OPEN;
	b->reopen_ms = now_ms + b->cooldown_ms;
}

enum limit_verdict limit_breaker_peek(const struct limit_breaker *b, int64_t now_ms,
				      int64_t *retry_after_ms)
{
	int64_t wait = 0;
	enum limit_verdict v = LIMIT_ALLOW;

	assert(b != NULL);
	check_now(now_ms);
	if (b->threshold == 0)
		goto out;
	switch (b->state) {
	case LIMIT_BREAKER_CLOSED:
		break;
	case LIMIT_BREAKER_OPEN:
		if (now_ms >= b->reopen_ms) {
			v = LIMIT_PROBE;
			break;
		}
		v = LIMIT_DENY;
		wait = b->reopen_ms - now_ms;
		/* A clock gone backwards cannot make the wait longer than a
		 * whole cool-down. */
		if (wait > b->cooldown_ms)
			wait = b->cooldown_ms;
		if (wait < 1)
			wait = 1;
		break;
	case LIMIT_BREAKER_HALF_OPEN:
		v = LIMIT_DENY;
		wait = LIMIT_PROBE_WAIT_MS;
		break;
	}
out:
	if (retry_after_ms != NULL)
		*retry_after_ms = wait;
	return v;
}

enum limit_verdict limit_breaker_allow(struct limit_breaker *b, int64_t now_ms,
				       int64_t *retry_after_ms)
{
	enum limit_verdict v = limit_breaker_peek(b, now_ms, retry_after_ms);

	/* The one state change: handing out the probe. */
	if (v == LIMIT_PROBE)
		b->state = LIMIT_BREAKER_HALF_OPEN;
	return v;
}

void limit_breaker_success(struct limit_breaker *b)
{
	assert(b != NULL);
	b->state = LIMIT_BREAKER_CLOSED;
	b->failures = 0;
}

void limit_breaker_failure(struct limit_breaker *b, int64_t now_ms)
{
	assert(b != NULL);
	check_now(now_ms);
	if (b->failures < UINT_MAX)
		b->failures++;
	if (b->threshold == 0)
		return;
	switch (b->state) {
	case LIMIT_BREAKER_CLOSED:
		if (b->failures >= b->threshold)
			breaker_open(b, now_ms);
		break;
	case LIMIT_BREAKER_HALF_OPEN:
		breaker_open(b, now_ms);
		break;
	case LIMIT_BREAKER_OPEN:
		break;
	}
}

void limit_breaker_abandon(struct limit_breaker *b)
{
	assert(b != NULL);
	/* reopen_ms was already reached when the probe went out, so the next
	 * allow hands out a new probe. */
	if (b->state == LIMIT_BREAKER_HALF_OPEN)
		b->state = LIMIT_BREAKER_OPEN;
}

const char *limit_breaker_state_name(enum limit_breaker_state s)
{
	switch (s) {
	case LIMIT_BREAKER_OPEN:
		return "open";
	case LIMIT_BREAKER_HALF_OPEN:
		return "half-open";
	case LIMIT_BREAKER_CLOSED:
		break;
	}
	return "closed";
}

/* ------------------------------------------------------------------------ */
/* Retry-After                                                              */

static const char *const wkday_short[7] = {"Mon", "Tue", "Wed", "Thu",
					   "Fri", "Sat", "Sun"};
static const char *const wkday_long[7] = {"Monday", "Tuesday",	"Wednesday", "Thursday",
					  "Friday", "Saturday", "Sunday"};
static const char *const month_name[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* A cursor over [p, end); every matcher advances it only on success. */
struct cur {
	const char *p;
	const char *end;
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static bool lit(struct cur *c, const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
		return false;
	c->p += n;
	return true;
}

/* Exactly n digits. */
static bool digits(struct cur *c, int n, int *v)
{
	int i, x = 0;

	if (c->end - c->p < n)
		return false;
	for (i = 0; i < n; i++) {
		if (!is_digit(c->p[i]))
			return false;
		x = x * 10 + (c->p[i] - '0');
	}
	c->p += n;
	*v = x;
	return true;
}

/* One of the n names; returns its index or -1. */
static int name(struct cur *c, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (lit(c, names[i]))
			return i;
	return -1;
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/*
 * Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard
 * Hinnant's days_from_civil). m in 1..12, d in 1..31.
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The Gregorian year of day z since 1970-01-01 (Hinnant's civil_from_days). */
static int64_t year_from_days(int64_t z)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	return yoe + era * 400 + (mp >= 10); /* months Jan, Feb end the era year */
}

struct date {
	int64_t year;
	int mon; /* 1..12 */
	int day, hour, min, sec;
};

/* hour ":" minute ":" second, each 2DIGIT */
static bool time_of_day(struct cur *c, struct date *d)
{
	return digits(c, 2, &d->hour) && lit(c, ":") && digits(c, 2, &d->min) &&
	       lit(c, ":") && digits(c, 2, &d->sec);
}

static bool month(struct cur *c, struct date *d)
{
	int m = name(c, month_name, 12);

	d->mon = m + 1;
	return m >= 0;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool imf_fixdate(struct cur c, struct date *d)
{
	int y;

	if (name(&c, wkday_short, 7) < 0 || !lit(&c, ", ") || !digits(&c, 2, &d->day) ||
	    !lit(&c, " ") || !month(&c, d) || !lit(&c, " ") || !digits(&c, 4, &y) ||
	    !lit(&c, " ") || !time_of_day(&c, d) || !lit(&c, " GMT"))
		return false;
	d->year = y;
	return c.p == c.end;
}

/* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"; the century comes later. */
static bool rfc850_date(struct cur c, struct date *d)
{
	int y;

	if (name(&c, wkday_long, 7) < 0 || !lit(&c, ", ") || !digits(&c, 2, &d->day) ||
	    !lit(&c, "-") || !month(&c, d) || !lit(&c, "-") || !digits(&c, 2, &y) ||
	    !lit(&c, " ") || !time_of_day(&c, d) || !lit(&c, " GMT"))
		return false;
	d->year = y;
	return c.p == c.end;
}

/* asctime-date: "Sun Nov  6 08:49:37 1994" (day: 2DIGIT or SP DIGIT) */
static bool asctime_date(struct cur c, struct date *d)
{
	int y;

	if (name(&c, wkday_short, 7) < 0 || !lit(&c, " ") || !month(&c, d) ||
	    !lit(&c, " "))
		return false;
	if (!(lit(&c, " ") ? digits(&c, 1, &d->day) : digits(&c, 2, &d->day)) ||
	    !lit(&c, " ") || !time_of_day(&c, d) || !lit(&c, " ") || !digits(&c, 4, &y))
		return false;
	d->year = y;
	return c.p == c.end;
}

static bool date_valid(const struct date *d)
{
	return d->year >= 0 && d->year <= 9999 && d->mon >= 1 && d->mon <= 12 &&
	       d->day >= 1 && d->day <= days_in_month(d->year, d->mon) && d->hour <= 23 &&
	       d->min <= 59 && d->sec <= 60;
}

/* Floor division for the day of a (possibly negative) epoch time. */
static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/*
 * RFC 9110: a two-digit year more than 50 years in the future is the most
 * recent past year with the same last two digits.
 */
static int64_t full_year(int yy, int64_t now_ms)
{
	int64_t now_year = year_from_days(floor_div(now_ms, INT64_C(86400000)));
	int64_t y = now_year - ((now_year % 100) + 100) % 100 + yy;

	if (y > now_year + 50)
		y -= 100;
	else if (y + 100 <= now_year + 50)
		y += 100;
	return y;
}

int limit_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms)
{
	struct cur c;
	struct date d;
	int64_t secs, at_ms;

	assert(delay_ms != NULL);
	if (value == NULL)
		return -1;
	c.p = value;
	c.end = value + strlen(value);
	while (c.p < c.end && is_ows(*c.p))
		c.p++;
	while (c.end > c.p && is_ows(c.end[-1]))
		c.end--;
	if (c.p == c.end)
		return -1;

	if (is_digit(*c.p)) {
		/* delta-seconds; stop growing at the clamp so nothing overflows */
		secs = 0;
		for (; c.p < c.end; c.p++) {
			if (!is_digit(*c.p))
				return -1;
			if (secs <= LIMIT_DELAY_MAX_MS / 1000)
				secs = secs * 10 + (*c.p - '0');
		}
		if (secs > LIMIT_DELAY_MAX_MS / 1000)
			secs = LIMIT_DELAY_MAX_MS / 1000;
		*delay_ms = secs * 1000;
		return 0;
	}

	memset(&d, 0, sizeof(d));
	if (rfc850_date(c, &d))
		d.year = full_year((int)d.year, now_ms);
	else if (!imf_fixdate(c, &d) && !asctime_date(c, &d))
		return -1;
	if (!date_valid(&d))
		return -1;
	/* |at_ms| < 2^49 for years 0..9999: no overflow below. */
	at_ms = ((days_from_civil(d.year, d.mon, d.day) * 24 + d.hour) * 60 + d.min) *
		    INT64_C(60000) +
		d.sec * INT64_C(1000);
	if (now_ms >= at_ms)
		*delay_ms = 0;
	else if (now_ms < at_ms - LIMIT_DELAY_MAX_MS)
		*delay_ms = LIMIT_DELAY_MAX_MS;
	else
		*delay_ms = at_ms - now_ms;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Backoff                                                                  */

uint64_t limit_rng_next(uint64_t *state)
{
	uint64_t z;

	assert(state != NULL);
	z = (*state += UINT64_C(0x9E3779B97F4A7C15));
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

int64_t limit_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms, uint64_t *rng)
{
	uint64_t ceiling, n, limit, r;

	assert(rng != NULL);
	if (base_ms < 1)
		base_ms = 1;
	if (cap_ms < 1)
		cap_ms = 1;
	if (cap_ms > LIMIT_DELAY_MAX_MS)
		cap_ms = LIMIT_DELAY_MAX_MS;
	/* min(cap, base * 2^attempt) without forming base * 2^attempt when it
	 * would pass cap: cap < 2^27, so a shift past 27 always does. */
	if (attempt >= 32 || (uint64_t)base_ms > ((uint64_t)cap_ms >> attempt))
		ceiling = (uint64_t)cap_ms;
	else
		ceiling = (uint64_t)base_ms << attempt;
	if (ceiling > (uint64_t)cap_ms)
		ceiling = (uint64_t)cap_ms;
	/* Uniform over 1 .. ceiling by rejection: no modulo bias. */
	n = ceiling;
	limit = UINT64_MAX - UINT64_MAX % n;
	do
		r = limit_rng_next(rng);
	while (r >= limit);
	return (int64_t)(r % n) + 1;
}
