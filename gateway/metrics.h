/*
 * metrics: the gateway's counters, and their Prometheus text exposition
 * (format 0.0.4) for GET /metrics.
 *
 * Counting costs the hit path no lock and no shared cache line: each front
 * loop has its own block (struct metrics_front) that only it writes, with
 * relaxed atomic loads and stores (on x86 plain moves); the fetch layer
 * has its own (struct metrics_fetch, the main thread's). A scrape, on any
 * thread, reads every block with relaxed loads and sums them: a scrape
 * racing a request may see it counted in one series and not yet in
 * another, never a torn or lost count. Caller labels (--caller-header) are
 * the exception: one table for all loops, bounded by --max-callers, its
 * counts atomic adds, names inserted under a mutex (a new caller only).
 *
 * Names and labels are those issue 9 fixes (docs/operations.md lists
 * them); no raw API key is ever a label value (caller values are
 * sanitised and bounded).
 *
 * Bounds: statuses 100..599 (others counted as 599), METRICS_BUCKETS
 * histogram buckets, METRICS_FRONTS_MAX blocks, --max-callers callers
 * (then "other").
 */
#ifndef CG_GATEWAY_METRICS_H
#define CG_GATEWAY_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_FRONTS_MAX 64
#define METRICS_BUCKETS 17       /* upper bounds below, then +Inf */
#define METRICS_STATUS_MIN 100
#define METRICS_STATUS_MAX 599
#define METRICS_STATUSES (METRICS_STATUS_MAX - METRICS_STATUS_MIN + 1)
#define METRICS_CALLER_LEN 64    /* longest caller label value kept */
#define METRICS_CALLERS_MAX 4096 /* largest --max-callers */
#define METRICS_DERIVE_REASONS 16 /* cache/derived.h's DERIVED_REASONS, at most */

struct evbuffer;

/* The `cache` label of a request. */
enum metrics_cache {
	MC_HIT = 0,  /* a fresh stored answer */
	MC_STALE,    /* a stored answer past its expiry (SWR, stale-if-error, offline) */
	MC_MISS,     /* the upstream's answer, this request led the fetch */
	MC_COLLAPSED, /* the upstream's answer, joined to another's fetch */
	MC_BYPASS,   /* a refresh the client asked for (no-cache) */
	MC_DERIVED,  /* derived from another stored answer (--derive) */
	MC_NONE,     /* refused locally, or no stored answer involved */
	MC_N,
};

/* The `reason` label of an upstream refusal. */
enum metrics_refusal {
	MR_RATE = 0, MR_QUEUE_FULL, MR_QUEUE_TIMEOUT, MR_VENDOR_429, MR_BREAKER, MR_OFFLINE,
	MR_CALLER_QUOTA, MR_NEW_KEY_RATE, MR_CLIENT_RATE, MR_UNAUTHORIZED, MR_N,
};

/* The `code` label of an upstream request that got no HTTP answer. */
enum metrics_upfail {
	MU_TIMEOUT = 0, MU_REFUSED, MU_RESET, MU_TLS, MU_DNS, MU_TRUNCATED, MU_TOO_BIG,
	MU_MALFORMED, MU_INVALID, MU_FAILED, MU_N,
};

struct metrics_hist {
	_Atomic uint64_t buckets[METRICS_BUCKETS]; /* cumulative at exposition */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_us;
};

/* Written by one front loop only. */
struct metrics_front {
	_Atomic uint64_t requests[METRICS_STATUSES][MC_N];
	struct metrics_hist duration[MC_N];
	_Atomic int64_t connections;
	_Atomic uint64_t corrupt; /* records that failed their checks on a read */
};

/* Written by the fetch layer's (main) thread only. */
struct metrics_fetch {
	_Atomic uint64_t upstream[METRICS_STATUSES];
	_Atomic uint64_t upstream_failed[MU_N];
	struct metrics_hist upstream_duration;
	_Atomic uint64_t refusals[MR_N];
	_Atomic uint64_t evictions;
	_Atomic uint64_t reload_failures;
	_Atomic uint64_t derived[3];  /* answers derived, by rule (derive_rule_index) */
	_Atomic uint64_t widened;     /* misses asked as a wider page (--widen-pages) */
	_Atomic uint64_t derive_missed[METRICS_DERIVE_REASONS]; /* not, by reason */
	_Atomic int64_t queue_waiting;
	_Atomic int64_t in_flight;
	_Atomic int64_t keys_blocked;
	_Atomic int64_t breaker_open;
	_Atomic int64_t offline;
	/* the store's figures, read by the fetch layer once a second */
	_Atomic int64_t cache_entries;
	_Atomic int64_t cache_bytes;
	_Atomic int64_t cache_map_bytes;
};

struct metrics_caller {
	_Atomic int ready; /* name written (release) */
	char name[METRICS_CALLER_LEN + 1];
	_Atomic uint64_t requests[MC_N];
};

struct metrics {
	struct metrics_front *fronts[METRICS_FRONTS_MAX]; /* one allocation each */
	unsigned n_fronts;
	struct metrics_fetch fetch;
	pthread_mutex_t callers_lock; /* inserting a caller */
	struct metrics_caller *callers;
	size_t max_callers;
	_Atomic size_t n_callers;
	struct metrics_caller other; /* past max_callers */
	double start_time; /* Unix seconds */
	char instance[64];  /* --instance-name, "" if none (build_info's label) */
};

/* Counters for n_fronts loops and max_callers callers, all zero; instance
 * (copied) is build_info's `instance` label. Never NULL. */
struct metrics *metrics_new(unsigned n_fronts, size_t max_callers, const char *instance);
void metrics_free(struct metrics *m);

/* A single writer's increment (no lock, no atomic read-modify-write) and
 * store. Out of line (metrics.c), so that tests/helgrind.supp can name the two
 * functions every counter and gauge is written through: helgrind does not
 * model C11 atomics, and inlined they would make every caller a racer. */
void metrics_add(_Atomic uint64_t *c, uint64_t n);
void metrics_set(_Atomic int64_t *g, int64_t v);
/* A gauge's value, from any thread (out of line for the same reason). */
int64_t metrics_gauge_get(_Atomic int64_t *g);

/* "hit", "stale", "miss", "collapsed", "bypass", "none". */
const char *metrics_cache_name(enum metrics_cache c);

/* One observation of `us` microseconds in h (its single writer). */
void metrics_observe(struct metrics_hist *h, uint64_t us);

/* A request answered by front `fr` with `status`, `cache`, taking `us`. */
void metrics_request(struct metrics_front *fr, int status, enum metrics_cache cache,
		     uint64_t us);

/* A request of caller `name` (raw header value: sanitised here); any
 * thread. */
void metrics_caller(struct metrics *m, const char *name, enum metrics_cache cache);

/* Writes a caller id as a label value may hold it: at most
 * METRICS_CALLER_LEN bytes of [A-Za-z0-9._:/-], others as '_'. Returns
 * its length. Pure. */
size_t metrics_sanitise(char *out, size_t size, const char *in);

/* The exposition, appended to `out` (any thread). */
void metrics_write(struct metrics *m, struct evbuffer *out);

#endif
