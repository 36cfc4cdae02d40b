/*
 * admit: which upstream fetches may start, and when.
 *
 * Every upstream fetch (a miss that opened a flight, a background refresh, a
 * retry) asks here first. A fetch may start when, at that moment:
 *   - the circuit breaker of the upstream host lets it (closed, or this is
 *     the one probe of a half-open breaker);
 *   - its API key is not blocked by a vendor 429 (Retry-After);
 *   - its API key's token bucket (--upstream-rate, --upstream-burst) and,
 *     with --caller-header, its caller's bucket each hold a token;
 *   - fewer than --upstream-concurrency fetches are in progress;
 *   - no earlier fetch of the same key (and caller) is still queued: FIFO
 *     per key, or per key and caller with caller quotas, so a caller that
 *     has used up its own bucket does not hold up the key's other callers.
 * Otherwise it waits in one FIFO queue (at most --queue-limit per key and
 * caller, each
 * until its deadline, --queue-timeout after it asked) or, when the wait could
 * not end in time, is refused at once: ADMIT_KEY_RATE, ADMIT_CALLER_QUOTA,
 * ADMIT_QUEUE_FULL or ADMIT_QUEUE_TIMEOUT with an honest retry-after (from
 * the bucket and the fetches queued ahead), ADMIT_BLOCKED with what is
 * left of the vendor's Retry-After, ADMIT_BREAKER with what is left of the
 * cool-down. Coalesced waiters and cached answers never come here, so they
 * cost nothing.
 *
 * A ticket (embedded in the caller's fetch) goes: new -> queued -> granted
 * (go callback) or refused (refuse callback), or new -> granted/refused at
 * once (admit_ask's return value, no callback); granted -> done (admit_done,
 * which reports the outcome to the breaker and the buckets and frees the
 * concurrency slot) or cancelled (admit_cancel). Exactly one of go/refuse is
 * called for a queued ticket, unless it is cancelled first. While queued, the
 * ticket's `wanted` callback is asked at least once a second and before it
 * is granted; a ticket nobody wants any more (every client left) is refused
 * with ADMIT_ABANDONED and costs no token. A queued ticket whose deadline
 * passes is refused with ADMIT_QUEUE_TIMEOUT.
 *
 * Callbacks run from the admit timer or from admit_done/admit_cancel; they
 * may call back into admit (a refused fetch's owner may ask again, a granted
 * fetch may fail to start and call admit_done). The queue is walked again
 * until it settles, never recursively.
 *
 * Time: every now_ms is the loop's monotonic clock (event_gettime_monotonic),
 * so wall-clock steps neither refill nor drain buckets.
 *
 * Bounds: per-key queue length (--queue-limit); the whole queue is bounded by
 * the client connections (every queued ticket has a waiting client; tickets
 * that may not queue, background refreshes, are granted or refused at once);
 * buckets: ADMIT_MAX_KEYS per table (see policy/bucket.h for a full table).
 */
#ifndef CG_GATEWAY_ADMIT_H
#define CG_GATEWAY_ADMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "policy/breaker.h"
#include "policy/bucket.h"

#define ADMIT_KEY_LEN 32
#define ADMIT_MAX_KEYS 65536      /* buckets per table (keys, callers) */
#define ADMIT_SWEEP_MS 1000       /* queued tickets are checked this often */
#define ADMIT_DEFAULT_BLOCK_MS 30000 /* a 429 without a usable Retry-After */
#define ADMIT_KNOWN_KEYS 65536    /* keys remembered as answered 2xx */
#define ADMIT_TRYING_MS 10000     /* a new key let through goes on this long */

struct event_base;
struct admit;

struct admit_config {
	double rate;              /* tokens/s per API key */
	long burst;
	double caller_rate;       /* tokens/s per caller (when tickets name one) */
	long caller_burst;
	long concurrency;         /* fetches in progress at once */
	long queue_limit;         /* queued tickets per API key */
	long queue_timeout_ms;
	unsigned breaker_threshold; /* 0: no breaker */
	int64_t breaker_cooldown_ms;
	double new_key_rate;      /* fetches/s of keys never answered 2xx (0: no limit) */
	double client_rate;       /* fetches/s per client address (0: no limit) */
	long client_burst;
};

/* Why a fetch may not go upstream; each names one limit (admit_limit_name)
 * so that a client is told which one it met. */
enum admit_refusal {
	ADMIT_KEY_RATE = 1,  /* the API key's bucket has no token in time: 429 */
	ADMIT_CALLER_QUOTA,  /* the caller's bucket has no token in time: 429 */
	ADMIT_QUEUE_FULL,    /* --queue-limit fetches of this line wait already: 429 */
	ADMIT_QUEUE_TIMEOUT, /* it waited --queue-timeout, or would have to: 429 */
	ADMIT_BLOCKED,       /* the vendor said 429 for this key: 429 */
	ADMIT_BREAKER,       /* the upstream's breaker is open: 503 */
	ADMIT_ABANDONED,     /* every client waiting for it left */
	ADMIT_NEW_KEY,       /* --new-key-rate: too many keys never seen to work: 429 */
	ADMIT_CLIENT_RATE,   /* --client-rate: this client address's bucket: 429 */
};

/* "key_rate", "caller_quota", "queue_full", "queue_timeout", "vendor_429",
 * "breaker", "abandoned", "new_key_rate", "client_rate": the names clients
 * and metrics see. */
const char *admit_limit_name(enum admit_refusal why);

/* How a granted fetch ended, for the breaker and the buckets. */
enum admit_outcome {
	ADMIT_OK = 1,   /* the host answered (2xx-4xx other than 429) */
	ADMIT_FAILED,   /* connect error, timeout, 5xx */
	ADMIT_LIMITED,  /* 429: the key is blocked for retry_after_ms */
	ADMIT_NOTHING,  /* ended without an answer either way (cancelled) */
};

typedef void (*admit_go_fn)(void *arg);
typedef void (*admit_refuse_fn)(void *arg, enum admit_refusal why,
				int64_t retry_after_ms);
typedef int (*admit_wanted_fn)(void *arg);

/* Embedded in the caller's fetch; filled by admit_ask. */
struct admit_ticket {
	unsigned magic;
	struct admit *a;
	uint8_t key[ADMIT_KEY_LEN];
	uint8_t caller[ADMIT_KEY_LEN];
	int has_caller;
	int state;        /* see admit.c */
	int probe;        /* granted as the breaker's probe */
	int64_t deadline_ms;
	admit_go_fn go;
	admit_refuse_fn refuse;
	admit_wanted_fn wanted;
	void *arg;
	TAILQ_ENTRY(admit_ticket) link;
};

/* Creates the admission control on `base` (for its timer). NULL on bad
 * settings (a rate or burst policy/bucket refuses). */
struct admit *admit_new(struct event_base *base, const struct admit_config *cfg);

/* Frees it. Every ticket must be done or cancelled first. */
void admit_free(struct admit *a);

/* New settings (a reload): rates and bursts apply to every bucket (their
 * tokens kept, capped at the new burst), the breaker keeps its state with
 * the new threshold and cool-down, queued tickets keep their deadlines.
 * Returns 0, or -1 on settings admit_new would refuse (nothing changed). */
int admit_set_config(struct admit *a, const struct admit_config *cfg);

/*
 * Asks for a fetch under API key hash `key`, optional caller hash `caller`
 * and optional client address hash `client` (NULL: none), all borrowed.
 * Returns 1: granted now (the fetch may start; no callback will come); 0:
 * queued (go, refuse and wanted will be called, with arg); -1: refused now,
 * *why and *retry_after_ms (>= 1) say why. With may_queue 0 the answer is 1
 * or -1. Two gates come first and never queue: a key never answered 2xx
 * (admit_mark_known) takes a token of --new-key-rate (one per key: it may
 * then go on for ADMIT_TRYING_MS, its own bucket limiting it, while its
 * answer is awaited; so --new-key-rate counts keys, not requests), and a
 * client address one of --client-rate; either refuses at once when empty
 * (their tokens are spent at the ask, whatever happens to the ticket).
 */
int admit_ask(struct admit *a, struct admit_ticket *t, const uint8_t *key,
	      const uint8_t *caller, const uint8_t *client, int may_queue, admit_go_fn go,
	      admit_refuse_fn refuse, admit_wanted_fn wanted, void *arg,
	      int64_t now_ms, enum admit_refusal *why, int64_t *retry_after_ms);

/* The vendor answered `key` 2xx: it is known from now on (a bounded memory
 * of ADMIT_KNOWN_KEYS: a key forgotten counts as new again). */
void admit_mark_known(struct admit *a, const uint8_t *key);

/* The vendor refused `key` (401): it is new again. */
void admit_forget_known(struct admit *a, const uint8_t *key);

/*
 * A granted fetch ended: `outcome` goes to the breaker; ADMIT_LIMITED blocks
 * the key for retry_after_ms (ADMIT_DEFAULT_BLOCK_MS when <= 0). Frees the
 * concurrency slot and lets queued tickets go. The ticket may be asked again
 * afterwards (a retry).
 */
void admit_done(struct admit_ticket *t, enum admit_outcome outcome,
		int64_t retry_after_ms, int64_t now_ms);

/* Withdraws a queued ticket (no callback), or ends a granted one with
 * ADMIT_NOTHING. A ticket never asked, or already done, is left alone. */
void admit_cancel(struct admit_ticket *t, int64_t now_ms);

/* Remaining block of a key after a vendor 429, in ms (0: none). */
int64_t admit_blocked_ms(const struct admit *a, const uint8_t *key, int64_t now_ms);

/* While the breaker is open: the monotonic time its cool-down ends (it
 * refuses until then); 0 when it is not open. For publishing to other
 * threads. */
int64_t admit_breaker_until(const struct admit *a);

/* Is the breaker refusing requests now (open, cool-down not over)? */
int admit_breaker_open(const struct admit *a, int64_t now_ms);

/* For logs and metrics. */
size_t admit_keys_blocked(const struct admit *a, int64_t now_ms);
size_t admit_queued(const struct admit *a);
size_t admit_running(const struct admit *a);
const char *admit_breaker_state(const struct admit *a);

#endif
