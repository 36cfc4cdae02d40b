/*
 * fetch: the fetch layer, one per gateway, on the upstream loop's thread.
 *
 * Every front loop hands its misses here (a struct fetch_ask through the
 * fetcher's chan); the fetcher does, for all of them together:
 *
 *   ask -> flight (coalesce by entry id) -> admission (breaker, vendor-429
 *   blocks, token buckets, FIFO queue) -> upstream (curl multi, retries)
 *   -> store a good answer -> land: one struct fetched, shared by every
 *   waiter, sent back to each waiter's front as a struct fetch_landing
 *
 * so coalescing and per-key limits are exact however many front loops
 * there are. A front's waiter is named by an opaque token the fetcher only
 * echoes; the front answers its client when the landing arrives.
 *
 * States of a fetch: asking (queued in admission) -> running (curl) ->
 * backing off before a retry -> running ... -> landed (freed). A waiter's
 * client may leave meanwhile (FETCH_GONE): a queued fetch nobody waits for
 * any more is dropped before it costs a token.
 *
 * Threads: fetcher_* functions on the fetcher's thread, except
 * fetcher_inbox (the chan is for any thread), fetcher_offline and
 * fetcher_breaker_open (atomics, any thread). struct fetched is immutable
 * once landed and reference-counted across threads.
 *
 * Bounds: asks queued in the inbox (FETCH_INBOX_MAX; a front answers 503
 * past it), waiters per flight (--max-waiters; past it 503), fetches in
 * progress (one per flight; flights are bounded by the waiting clients and
 * one refresh per entry), body bytes (--max-body-bytes).
 */
#ifndef CG_GATEWAY_FETCH_H
#define CG_GATEWAY_FETCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"
#include "gateway/chan.h"
#include "gateway/config.h"
#include "gateway/upstream.h"

#define FETCH_API_KEY_MAX 512  /* longest x-api-key accepted */
#define FETCH_INBOX_MAX 65536  /* asks queued for the fetcher */
#define FETCH_REQUEST_ID_MAX 64 /* longest request id kept */

struct event_base;
struct admit;
struct lru;
struct metrics;
struct fetcher;

/* Message kinds in chans (chan_msg.kind). */
enum {
	MSG_ASK = 1,  /* struct fetch_ask, front -> fetcher */
	MSG_LANDING,  /* struct fetch_landing, fetcher -> front */
	MSG_FRONT,    /* the front's own control messages (front.c) */
};

/* Why a flight landed without asking the upstream (fetched.refusal):
 * admit's reasons (enum admit_refusal), and these. */
enum {
	REFUSED_OFFLINE = 100, /* --offline, or the breaker open with offline-when-open */
	REFUSED_START,         /* curl would not start the request */
	REFUSED_SHUTDOWN,      /* the gateway is stopping */
	REFUSED_OVERLOADED,    /* --max-waiters clients wait for this answer already */
	REFUSED_UNAUTHORIZED,  /* the vendor answered this key 401 moments ago */
};

enum fetch_ask_kind {
	FETCH_MISS = 1, /* a client waits: answer it when the flight lands */
	FETCH_REFRESH,  /* stale-while-revalidate: refresh behind, no waiter */
	FETCH_GONE,     /* the client of waiter `token` left */
};

/* A front's request to the fetcher. Allocated by fetch_ask_new, owned by
 * the fetcher once sent. The API key is kept in memory only and wiped
 * when the ask is freed. */
struct fetch_ask {
	struct chan_msg link; /* kind MSG_ASK */
	unsigned magic;
	enum fetch_ask_kind kind;
	struct chan *reply;   /* the front's inbox, for the landing */
	uint64_t token;       /* the front's waiter, echoed in the landing */
	uint8_t id[STORE_ID_LEN];
	uint8_t keyhash[STORE_KEYHASH_LEN];
	uint8_t caller[STORE_KEYHASH_LEN]; /* with has_caller: its quota's key */
	int has_caller;
	uint8_t client[STORE_KEYHASH_LEN]; /* with has_client: its address's hash */
	int has_client;
	uint32_t ttl_s;       /* freshness of the answer when stored (0: never) */
	int refresh;          /* the client asked no-cache: from the vendor, not derived */
	int64_t young_ms;     /* refresh under --client-no-cache revalidate: derived
			       * only from an answer stored less than this ago */
	char request_id[FETCH_REQUEST_ID_MAX + 1]; /* the asking request's, sent upstream */
	char api_key[FETCH_API_KEY_MAX + 1];
	size_t canonical_len;
	char canonical[];     /* NUL-terminated canonical query */
};

/* What a flight brought back: the upstream's answer and what was done
 * with it, or (asked 0) why the upstream was not asked. Shared by every
 * waiter of the flight on every front; immutable once landed. */
struct fetched {
	unsigned magic;
	atomic_uint refs;
	int asked;              /* 0: refusal/retry_after_ms say why not */
	int refusal;
	int64_t retry_after_ms;
	enum upstream_result result; /* asked: the exchange's outcome */
	long status;            /* with UPSTREAM_OK: the vendor's status */
	char error[256];        /* for failures: what happened */
	struct upstream_header headers[UPSTREAM_HEADERS_MAX];
	size_t n_headers;
	char *body;             /* owned */
	size_t body_len;
	/* when stored: its compressed representations (owned; NULL: none),
	 * indexed by enum encoding (policy/encoding.h) */
	unsigned char *enc[STORE_ENC_N];
	size_t enc_len[STORE_ENC_N];
	double total_ms;        /* asked: the (last) exchange's time */
	int failed;    /* the upstream failed (a stored answer may stand in) */
	int malformed; /* a 200 whose body is not a JSON array */
	int stored;    /* the answer was written to the cache */
	uint64_t etag; /* its ETag when stored */
	int widened;        /* asked as a wider page (--widen-pages) and cut out of it */
	int from_store;     /* not asked: answered from the store (status 200,
			     * body and headers a copy; stored: the entry is there) */
	unsigned derived;   /* from_store: derived from another stored answer by
			     * this rule (enum derive_rule); 0: the entry itself,
			     * stored between the front's lookup and its ask */
	int64_t stored_ms;  /* from_store: the answer's times (Age, TTL) */
	int64_t expires_ms;
};

/* A landing, fetcher -> a waiter's front. Owns one reference to `f`. */
struct fetch_landing {
	struct chan_msg link; /* kind MSG_LANDING */
	unsigned magic;
	uint64_t token;
	int collapsed;        /* a follower of the flight, not its leader */
	struct fetched *f;
};

#define FETCH_ASK_MAGIC 0x41534b21u
#define FETCHED_MAGIC 0x46544344u
#define FETCH_LANDING_MAGIC 0x4c4e4447u

/* A new ask for `canonical` (canonical_len bytes) with `api_key` (copied). */
struct fetch_ask *fetch_ask_new(enum fetch_ask_kind kind, const char *canonical,
				size_t canonical_len, const char *api_key);

/* Frees an ask that was not sent (wipes the key). */
void fetch_ask_free(struct fetch_ask *a);

/* One more reference to f (any thread). */
void fetched_hold(struct fetched *f);

/* Drops a reference; the last one frees f (any thread). */
void fetched_release(struct fetched *f);

/* Frees a landing the front is done with (and its reference). */
void fetch_landing_free(struct fetch_landing *l);

/*
 * The fetcher on `base`, asking upstream through `up` and storing into
 * `store` with eviction by `lru` (all borrowed; they must outlive it), with
 * cfg's settings (borrowed). NULL with err set on bad settings.
 */
struct fetcher *fetcher_new(struct event_base *base, const struct cg_config *cfg,
			    struct upstream *up, struct store *store, struct lru *lru,
			    char *err, size_t err_size);

/* New settings (a reload; borrowed until the next): admission's limits,
 * waiters per flight, TTLs of the asks that come from now on. Fetches in
 * flight finish on the old ones. 0, or -1 with err (nothing changed). */
int fetcher_set_config(struct fetcher *fx, const struct cg_config *cfg, char *err,
		       size_t err_size);

/* Where fronts send their asks (any thread). */
struct chan *fetcher_inbox(struct fetcher *fx);

/* Offline (--offline, the admin endpoint): answer from the cache only,
 * never contact the upstream. Set on the fetcher's thread, read anywhere. */
void fetcher_set_offline(struct fetcher *fx, int offline, const char *by);

/* Counts into `m` (borrowed, for the fetcher's life) from now on, and
 * keeps its gauges (queue, in flight, keys blocked, the cache's figures)
 * current, those that need a scan once a second. */
void fetcher_set_metrics(struct fetcher *fx, struct metrics *m);
int fetcher_offline(const struct fetcher *fx, int64_t mono_ms);

/* Is the breaker refusing requests (any thread; mono_ms: the caller's
 * monotonic clock)? With --offline-when-open, fetcher_offline says so too. */
int fetcher_breaker_open(const struct fetcher *fx, int64_t mono_ms);

/* Shutdown deadline: cancels every fetch and lands each flight as
 * REFUSED_SHUTDOWN (the fronts answer 503). */
void fetcher_abort(struct fetcher *fx);

/* Flights open (for drain and status). */
size_t fetcher_flights(const struct fetcher *fx);

/* The admission control, for status reports (borrowed). */
const struct admit *fetcher_admit(const struct fetcher *fx);

/* Cancels everything (as fetcher_abort) and frees the fetcher. */
void fetcher_free(struct fetcher *fx);

#endif
