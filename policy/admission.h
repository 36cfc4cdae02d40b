/*
 * admission: which upstream fetches may start, and when - the decisions,
 * with the clock a parameter.
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
 * caller, each until its deadline, --queue-timeout after it asked) or, when
 * the wait could not end in time, is refused at once: ADMIT_KEY_RATE,
 * ADMIT_CALLER_QUOTA, ADMIT_QUEUE_FULL or ADMIT_QUEUE_TIMEOUT with an honest
 * retry-after (from the bucket and the fetches queued ahead), ADMIT_BLOCKED
 * with what is left of the vendor's Retry-After, ADMIT_BREAKER with what is
 * left of the cool-down. Coalesced waiters and cached answers never come
 * here, so they cost nothing.
 *
 * A ticket (embedded in the caller's fetch) goes: new -> queued -> granted
 * (go callback) or refused (refuse callback), or new -> granted/refused at
 * once (admission_ask's return value, no callback); granted -> done
 * (admission_done, which reports the outcome to the breaker and the buckets
 * and frees the concurrency slot) or cancelled (admission_cancel). Exactly
 * one of go/refuse is called for a queued ticket, unless it is cancelled
 * first. While queued, the ticket's `wanted` callback is asked at least once
 * every ADMIT_SWEEP_MS and before it is granted; a ticket nobody wants any
 * more (every client left) is refused with ADMIT_ABANDONED and costs no
 * token. A queued ticket whose deadline passes is refused with
 * ADMIT_QUEUE_TIMEOUT.
 *
 * The pump: whenever something changed (a ticket queued, a slot freed, a
 * config, the owner's timer) the queue is walked in order until it settles;
 * callbacks run from that walk, so from admission_pump, admission_ask (a
 * ticket it queued, or one ahead of it, may be decided at once),
 * admission_done, admission_cancel and admission_set_config. They may call
 * back into the module (a refused fetch's owner may ask again, a granted
 * fetch may fail to start and call admission_done): the walk starts again,
 * never recursively. At the end of each walk the module tells its owner when
 * it next needs to be woken (the wake callback: the soonest of a queued
 * ticket's deadline, its next token, the next sweep; or nothing when the
 * queue is empty), and the owner calls admission_pump then. No polling.
 *
 * Time: every now_ms is the owner's monotonic clock in ms, in
 * [0, LIMIT_NOW_MAX] (policy/limit.h), so wall-clock steps neither refill
 * nor drain buckets. The module reads no clock and arms no timer.
 *
 * Names: the handle and its functions are admission_*; the vocabulary it
 * shares with its owner gateway/admit (the settings, refusals, outcomes,
 * tickets and callbacks, ADMIT_* bounds) keeps the admit_ names the fetch
 * layer, the answers and the metrics speak.
 *
 * Bounds: per-key queue length (--queue-limit); the whole queue is bounded by
 * the client connections (every queued ticket has a waiting client; tickets
 * that may not queue, background refreshes, are granted or refused at once);
 * buckets: ADMIT_MAX_KEYS per table (see policy/bucket.h for a full table);
 * known and trying keys: ADMIT_KNOWN_KEYS each (policy/keyset).
 *
 * Ownership: the caller owns the struct admission (admission_new,
 * admission_free) and every ticket (embedded in its fetch; the module links
 * it while queued). Key, caller and client hashes are copied or borrowed for
 * the call. Not thread-safe: one per event loop, the fetch layer's.
 */
#ifndef CG_POLICY_ADMISSION_H
#define CG_POLICY_ADMISSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#define ADMIT_KEY_LEN 32
#define ADMIT_MAX_KEYS 65536         /* buckets per table (keys, callers) */
#define ADMIT_SWEEP_MS 1000          /* queued tickets are checked this often */
#define ADMIT_DEFAULT_BLOCK_MS 30000 /* a 429 without a usable Retry-After */
#define ADMIT_KNOWN_KEYS 65536       /* keys remembered as answered 2xx */
#define ADMIT_TRYING_MS 10000        /* a new key let through goes on this long */

struct admission;

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
 * and metrics see (static storage). */
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

/* Embedded in the caller's fetch (zeroed before its first ask); filled by
 * admission_ask. The fields are the module's. */
struct admit_ticket {
	unsigned magic;
	struct admission *adm;
	uint8_t key[ADMIT_KEY_LEN];
	uint8_t caller[ADMIT_KEY_LEN];
	int has_caller;
	int state;        /* see admission.c */
	int probe;        /* granted as the breaker's probe */
	int64_t deadline_ms;
	admit_go_fn go;
	admit_refuse_fn refuse;
	admit_wanted_fn wanted;
	void *arg;
	TAILQ_ENTRY(admit_ticket) link;
};

/*
 * The owner's alarm clock: at the end of each walk of the queue, in_ms >= 1
 * asks to be woken (admission_pump) that many ms after the now_ms of the
 * call that walked it; in_ms 0 says nothing is queued (no wake needed, a
 * pending one may be dropped). A later call replaces an earlier one.
 */
typedef void (*admission_wake_fn)(void *arg, int64_t in_ms);

/* Creates the admission control; `wake` (not NULL) and `arg` are its
 * owner's, kept for its life. NULL on bad settings (a rate or burst
 * policy/bucket refuses). The caller frees it with admission_free. */
struct admission *admission_new(const struct admit_config *cfg, admission_wake_fn wake,
				void *arg);

/* Frees it. Every ticket must be done or cancelled first (nothing queued).
 * NULL is a no-op. Calls no callback. */
void admission_free(struct admission *a);

/* New settings at now_ms (a reload): rates and bursts apply to every bucket
 * (their tokens kept, capped at the new burst), the breaker keeps its state
 * with the new threshold and cool-down, queued tickets keep their deadlines
 * and are walked again under the new settings. Returns 0, or -1 on settings
 * admission_new would refuse: then nothing is changed (every rate and burst
 * is tried on a one-key table before any table takes it). */
int admission_set_config(struct admission *a, const struct admit_config *cfg,
			 int64_t now_ms);

/*
 * Asks at now_ms for a fetch under API key hash `key`, optional caller hash
 * `caller` and optional client address hash `client` (NULL: none), all
 * borrowed (ADMIT_KEY_LEN bytes each). Returns 1: granted now (the fetch may
 * start; no callback will come); 0: queued (go or refuse, and wanted, will
 * be called with arg - possibly before this returns, see the pump above);
 * -1: refused now, *why and *retry_after_ms (>= 1) say why. With may_queue 0
 * the answer is 1 or -1. Two gates come first and never queue: a key never
 * answered 2xx (admission_mark_known) takes a token of --new-key-rate (one
 * per key: it may then go on for ADMIT_TRYING_MS, its own bucket limiting
 * it, while its answer is awaited; so --new-key-rate counts keys, not
 * requests), and a client address one of --client-rate; either refuses at
 * once when empty (their tokens are spent at the ask, whatever happens to
 * the ticket). The ticket must be new, done, refused or cancelled.
 */
int admission_ask(struct admission *a, struct admit_ticket *t, const uint8_t *key,
		  const uint8_t *caller, const uint8_t *client, int may_queue,
		  admit_go_fn go, admit_refuse_fn refuse, admit_wanted_fn wanted,
		  void *arg, int64_t now_ms, enum admit_refusal *why,
		  int64_t *retry_after_ms);

/* The wake the module asked for came (or anything else worth a look):
 * walks the queue at now_ms; callbacks may run. */
void admission_pump(struct admission *a, int64_t now_ms);

/*
 * A granted fetch ended at now_ms: `outcome` goes to the breaker;
 * ADMIT_LIMITED blocks the key for retry_after_ms (ADMIT_DEFAULT_BLOCK_MS
 * when <= 0). Frees the concurrency slot and lets queued tickets go. The
 * ticket may be asked again afterwards (a retry). A ticket not granted is
 * left alone.
 */
void admission_done(struct admit_ticket *t, enum admit_outcome outcome,
		    int64_t retry_after_ms, int64_t now_ms);

/* Withdraws a queued ticket (no callback), or ends a granted one with
 * ADMIT_NOTHING. A ticket never asked (zeroed), or already done, is left
 * alone. */
void admission_cancel(struct admit_ticket *t, int64_t now_ms);

/* The vendor answered `key` 2xx: it is known from now on (a bounded memory
 * of ADMIT_KNOWN_KEYS: a key forgotten counts as new again). */
void admission_mark_known(struct admission *a, const uint8_t *key);

/* The vendor refused `key` (401): it is new again. */
void admission_forget_known(struct admission *a, const uint8_t *key);

/* Remaining block of a key after a vendor 429, in ms (0: none). */
int64_t admission_blocked_ms(const struct admission *a, const uint8_t *key,
			     int64_t now_ms);

/* While the breaker is open: the monotonic time its cool-down ends (it
 * refuses until then); 0 when it is not open. */
int64_t admission_breaker_until(const struct admission *a);

/* Is the breaker refusing requests at now_ms (open, cool-down not over)? */
int admission_breaker_open(const struct admission *a, int64_t now_ms);

/* For logs and metrics. */
size_t admission_keys_blocked(const struct admission *a, int64_t now_ms);
size_t admission_queued(const struct admission *a);
size_t admission_running(const struct admission *a);
const char *admission_breaker_state(const struct admission *a);

#endif
