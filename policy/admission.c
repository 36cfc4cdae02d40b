/*
 * admission: see admission.h.
 *
 * One FIFO queue for every key: a ticket is granted when it is the first of
 * its key in the queue and its buckets and a concurrency slot allow. The
 * pump walks the queue in order whenever something changed (a slot freed, a
 * token due, a deadline, a sweep), then asks its owner for one wake at the
 * soonest of: a queued ticket's deadline, its next token, the next sweep.
 *
 * Invariants: a ticket is on the queue exactly when its state is T_QUEUED;
 * n_queued counts them, n_running the T_GRANTED ones; `pumping` is set only
 * while a walk is on the stack (a nested pump sets `again` instead).
 */
#include "policy/admission.h"

#include <stdlib.h>
#include <string.h>

#include "policy/breaker.h"
#include "policy/bucket.h"
#include "policy/check.h"
#include "policy/keyset.h"

#define ADMISSION_MAGIC 0x41444d53u
#define TICKET_MAGIC 0x5449434bu

enum ticket_state {
	T_IDLE = 0, /* never asked, done, refused or cancelled */
	T_QUEUED,
	T_GRANTED,
};

TAILQ_HEAD(ticket_queue, admit_ticket);

struct admission {
	unsigned magic;
	struct admit_config cfg;
	struct limit_table *keys;
	struct limit_table *callers; /* NULL without caller quotas */
	struct limit_table *newkeys; /* one bucket; NULL without --new-key-rate */
	struct limit_table *clients; /* NULL without --client-rate */
	struct keyset *known;        /* keys answered 2xx */
	struct keyset *trying;       /* new keys let through, for a while */
	struct limit_breaker breaker;
	struct ticket_queue queue;
	size_t n_queued;
	size_t n_running;
	admission_wake_fn wake; /* the owner's alarm clock */
	void *wake_arg;
	int64_t next_sweep_ms; /* when queued tickets are next asked `wanted` */
	int pumping; /* the pump is on the stack */
	int again;   /* something changed while it was */
};

static void pump(struct admission *a, int64_t now_ms);

struct admission *admission_new(const struct admit_config *cfg, admission_wake_fn wake,
				void *arg)
{
	struct admission *a = calloc(1, sizeof(*a));

	AN(cfg);
	AN(wake);
	if (a == NULL)
		abort();
	a->magic = ADMISSION_MAGIC;
	a->wake = wake;
	a->wake_arg = arg;
	a->cfg = *cfg;
	TAILQ_INIT(&a->queue);
	a->keys = limit_table_new(cfg->rate, (double)cfg->burst, ADMIT_MAX_KEYS);
	if (cfg->caller_rate > 0)
		a->callers = limit_table_new(cfg->caller_rate, (double)cfg->caller_burst,
					     ADMIT_MAX_KEYS);
	if (cfg->new_key_rate > 0)
		a->newkeys = limit_table_new(cfg->new_key_rate,
					     cfg->new_key_rate < 1 ? 1 : cfg->new_key_rate, 1);
	if (cfg->client_rate > 0)
		a->clients = limit_table_new(cfg->client_rate, (double)cfg->client_burst,
					     ADMIT_MAX_KEYS);
	a->known = keyset_new(ADMIT_KNOWN_KEYS);
	a->trying = keyset_new(ADMIT_KNOWN_KEYS);
	if (a->keys == NULL || (cfg->caller_rate > 0 && a->callers == NULL) ||
	    (cfg->new_key_rate > 0 && a->newkeys == NULL) ||
	    (cfg->client_rate > 0 && a->clients == NULL)) {
		admission_free(a);
		return NULL;
	}
	limit_breaker_init(&a->breaker, cfg->breaker_threshold, cfg->breaker_cooldown_ms);
	return a;
}

void admission_free(struct admission *a)
{
	if (a == NULL)
		return;
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	CHECK(TAILQ_EMPTY(&a->queue));
	limit_table_free(a->keys);
	limit_table_free(a->callers);
	limit_table_free(a->newkeys);
	limit_table_free(a->clients);
	keyset_free(a->known);
	keyset_free(a->trying);
	a->magic = 0;
	free(a);
}

/* Makes *table match (rate, burst): created, re-rated or freed (rate 0).
 * Returns 0, or -1 if the table cannot be made or re-rated. */
static int retable(struct limit_table **table, double rate, double burst, size_t keys)
{
	if (rate <= 0) {
		limit_table_free(*table);
		*table = NULL;
		return 0;
	}
	if (*table == NULL)
		return (*table = limit_table_new(rate, burst, keys)) ? 0 : -1;
	return limit_table_set_rate(*table, rate, burst);
}

int admission_set_config(struct admission *a, const struct admit_config *cfg,
			 int64_t now_ms)
{
	struct limit_table *check;

	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	/* refuse before changing anything: every table's rate and burst are
	 * tried on a table of one key first (cheap), so a refusal leaves the
	 * running settings whole */
	{
		const double rates[4][2] = {
			{cfg->rate, (double)cfg->burst},
			{cfg->caller_rate, (double)cfg->caller_burst},
			{cfg->new_key_rate, cfg->new_key_rate < 1 ? 1 : cfg->new_key_rate},
			{cfg->client_rate, (double)cfg->client_burst},
		};

		for (int i = 0; i < 4; i++) {
			if (i > 0 && rates[i][0] <= 0)
				continue; /* off */
			if ((check = limit_table_new(rates[i][0], rates[i][1], 1)) == NULL)
				return -1;
			limit_table_free(check);
		}
	}
	if (limit_table_set_rate(a->keys, cfg->rate, (double)cfg->burst) != 0 ||
	    retable(&a->callers, cfg->caller_rate, (double)cfg->caller_burst,
		    ADMIT_MAX_KEYS) != 0 ||
	    retable(&a->newkeys, cfg->new_key_rate,
		    cfg->new_key_rate < 1 ? 1 : cfg->new_key_rate, 1) != 0 ||
	    retable(&a->clients, cfg->client_rate, (double)cfg->client_burst,
		    ADMIT_MAX_KEYS) != 0)
		return -1;
	a->cfg = *cfg;
	a->breaker.threshold = cfg->breaker_threshold;
	a->breaker.cooldown_ms = cfg->breaker_cooldown_ms < 0 ? 0
				 : cfg->breaker_cooldown_ms > LIMIT_DELAY_MAX_MS
					 ? LIMIT_DELAY_MAX_MS
					 : cfg->breaker_cooldown_ms;
	if (cfg->breaker_threshold == 0 && a->breaker.state != LIMIT_BREAKER_CLOSED)
		limit_breaker_success(&a->breaker); /* disabled: closed */
	pump(a, now_ms);
	return 0;
}

/* The wait for this ticket's tokens (key and caller), 0 if both are there. */
static int64_t token_wait(struct admission *a, const struct admit_ticket *t, int64_t now)
{
	int64_t w = limit_wait_ms(a->keys, t->key, now);

	if (t->has_caller && a->callers) {
		int64_t wc = limit_wait_ms(a->callers, t->caller, now);

		if (wc > w)
			w = wc;
	}
	return w;
}

/* Takes both tokens; only after token_wait said 0. */
static void take_tokens(struct admission *a, const struct admit_ticket *t, int64_t now)
{
	int64_t w = limit_take(a->keys, t->key, now);

	CHECK(w == 0);
	if (t->has_caller && a->callers && limit_take(a->callers, t->caller, now) != 0) {
		limit_refund(a->keys, t->key); /* cannot happen after token_wait */
		abort();
	}
}

/*
 * Do two tickets wait in the same line? The FIFO order (and the queue
 * limit) is per API key and, with caller quotas, per caller too: a caller
 * that has used up its own bucket must not hold up the key's other callers.
 */
static int same_line(const struct admit_ticket *u, const struct admit_ticket *t)
{
	return memcmp(u->key, t->key, ADMIT_KEY_LEN) == 0 &&
	       u->has_caller == t->has_caller &&
	       (!t->has_caller || memcmp(u->caller, t->caller, ADMIT_KEY_LEN) == 0);
}

/* Tickets queued in t's line before `end` (NULL: the whole queue). */
static size_t ahead_of(const struct admission *a, const struct admit_ticket *t,
		       const struct admit_ticket *end)
{
	const struct admit_ticket *u;
	size_t n = 0;

	for (u = TAILQ_FIRST(&a->queue); u != end; u = TAILQ_NEXT(u, link))
		if (same_line(u, t))
			n++;
	return n;
}

const char *admit_limit_name(enum admit_refusal why)
{
	switch (why) {
	case ADMIT_KEY_RATE: return "key_rate";
	case ADMIT_CALLER_QUOTA: return "caller_quota";
	case ADMIT_QUEUE_FULL: return "queue_full";
	case ADMIT_QUEUE_TIMEOUT: return "queue_timeout";
	case ADMIT_BLOCKED: return "vendor_429";
	case ADMIT_BREAKER: return "breaker";
	case ADMIT_NEW_KEY: return "new_key_rate";
	case ADMIT_CLIENT_RATE: return "client_rate";
	case ADMIT_ABANDONED: break;
	}
	return "abandoned";
}

/* Which bucket keeps t waiting: its caller's when that one's wait is the
 * longer, else its key's; a ticket with both tokens there waits for a
 * concurrency slot, which only a queue place could have given it. */
static enum admit_refusal bucket_limit(struct admission *a, const struct admit_ticket *t,
				       int64_t now)
{
	int64_t wk = limit_wait_ms(a->keys, t->key, now);

	if (t->has_caller && a->callers && limit_wait_ms(a->callers, t->caller, now) > wk)
		return ADMIT_CALLER_QUOTA;
	return wk > 0 ? ADMIT_KEY_RATE : ADMIT_QUEUE_FULL;
}

/* A retry-after (ms) for a refused rate-limited ticket: its tokens plus one more
 * per ticket already queued in its line, at the slower of its two rates. */
static int64_t rate_retry_ms(struct admission *a, const struct admit_ticket *t,
			     size_t ahead, int64_t now)
{
	double rate = a->cfg.rate;
	int64_t w;

	/* a ticket queued with a caller may outlive caller quotas (a reload
	 * turned them off): only a rate in force counts */
	if (t->has_caller && a->callers && a->cfg.caller_rate > 0 && a->cfg.caller_rate < rate)
		rate = a->cfg.caller_rate;
	w = token_wait(a, t, now) + (int64_t)(1000.0 / rate * (double)ahead);
	return w < 1 ? 1 : w;
}

/*
 * Decides for one ticket. Returns 1 granted, 0 keep waiting, -1 refused
 * (*why, *retry set). `ahead`: tickets queued before it in its line.
 */
static int decide(struct admission *a, struct admit_ticket *t, size_t ahead,
		  int64_t now, enum admit_refusal *why, int64_t *retry)
{
	int64_t blocked = limit_blocked_until(a->keys, t->key);
	int64_t wait;

	if (blocked > now) {
		*why = ADMIT_BLOCKED;
		*retry = blocked - now;
		return -1;
	}
	if (ahead > 0 || (long)a->n_running >= a->cfg.concurrency)
		return 0;
	wait = token_wait(a, t, now);
	if (wait > 0)
		return 0;
	switch (limit_breaker_allow(&a->breaker, now, retry)) {
	case LIMIT_DENY:
		*why = ADMIT_BREAKER;
		return -1;
	case LIMIT_PROBE:
		t->probe = 1;
		break;
	case LIMIT_ALLOW:
		t->probe = 0;
		break;
	}
	take_tokens(a, t, now);
	a->n_running++;
	t->state = T_GRANTED;
	return 1;
}

void admission_mark_known(struct admission *a, const uint8_t *key)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	keyset_put(a->known, key, KEYSET_FOREVER);
}

void admission_forget_known(struct admission *a, const uint8_t *key)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	keyset_forget(a->known, key);
	keyset_forget(a->trying, key);
}

/* The gates before the queue (see admission.h): 0, or the wait with *why. */
static int64_t gates(struct admission *a, const uint8_t *key, const uint8_t *client,
		     int64_t now, enum admit_refusal *why)
{
	static const uint8_t one[ADMIT_KEY_LEN]; /* the new-key bucket's key */
	int newkey = a->newkeys && keyset_get(a->known, key, 0) == 0 &&
		     keyset_get(a->trying, key, now) == 0;
	int64_t w;

	/* a new key takes one token, then may go on (its own bucket limits
	 * it) for ADMIT_TRYING_MS while its answer is awaited */
	if (newkey && (w = limit_take(a->newkeys, one, now)) > 0) {
		*why = ADMIT_NEW_KEY;
		return w;
	}
	if (newkey)
		keyset_put(a->trying, key, now + ADMIT_TRYING_MS);
	if (client && a->clients && (w = limit_take(a->clients, client, now)) > 0) {
		if (newkey) {
			limit_refund(a->newkeys, one);
			keyset_forget(a->trying, key);
		}
		*why = ADMIT_CLIENT_RATE;
		return w;
	}
	return 0;
}

int admission_ask(struct admission *a, struct admit_ticket *t, const uint8_t *key,
		  const uint8_t *caller, const uint8_t *client, int may_queue,
		  admit_go_fn go, admit_refuse_fn refuse, admit_wanted_fn wanted,
		  void *arg, int64_t now_ms, enum admit_refusal *why,
		  int64_t *retry_after_ms)
{
	size_t ahead;
	int rc;

	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	AN(t);
	AN(key);
	CHECK(t->magic != TICKET_MAGIC || t->state == T_IDLE);
	t->magic = TICKET_MAGIC;
	t->adm = a;
	memcpy(t->key, key, ADMIT_KEY_LEN);
	t->has_caller = caller != NULL && a->callers != NULL;
	if (t->has_caller)
		memcpy(t->caller, caller, ADMIT_KEY_LEN);
	t->state = T_IDLE;
	t->probe = 0;
	t->go = go;
	t->refuse = refuse;
	t->wanted = wanted;
	t->arg = arg;
	*retry_after_ms = 0;
	/* an open breaker answers at once, queue or not (peeked, not asked:
	 * asking after the cool-down would make this the probe before we know
	 * it can go) */
	if (a->breaker.state == LIMIT_BREAKER_OPEN &&
	    limit_breaker_peek(&a->breaker, now_ms, retry_after_ms) == LIMIT_DENY) {
		*why = ADMIT_BREAKER;
		return -1;
	}
	if (a->breaker.state == LIMIT_BREAKER_HALF_OPEN && !may_queue) {
		*why = ADMIT_BREAKER;
		*retry_after_ms = LIMIT_PROBE_WAIT_MS;
		return -1;
	}
	if ((*retry_after_ms = gates(a, key, client, now_ms, why)) > 0)
		return -1;
	ahead = ahead_of(a, t, NULL);
	rc = decide(a, t, ahead, now_ms, why, retry_after_ms);
	if (rc != 0)
		return rc;
	*retry_after_ms = rate_retry_ms(a, t, ahead, now_ms);
	if (!may_queue || ahead >= (size_t)a->cfg.queue_limit ||
	    *retry_after_ms > a->cfg.queue_timeout_ms) {
		/* first in its line: the bucket is the limit it met; behind
		 * others: the queue, full or too slow to wait in */
		if (!may_queue || ahead == 0)
			*why = bucket_limit(a, t, now_ms);
		else if (ahead >= (size_t)a->cfg.queue_limit)
			*why = ADMIT_QUEUE_FULL;
		else
			*why = ADMIT_QUEUE_TIMEOUT;
		return -1;
	}
	*retry_after_ms = 0;
	t->deadline_ms = now_ms + a->cfg.queue_timeout_ms;
	t->state = T_QUEUED;
	TAILQ_INSERT_TAIL(&a->queue, t, link);
	a->n_queued++;
	pump(a, now_ms); /* asks for its wake */
	return 0;
}

/* Takes a ticket out of the queue; its state is the caller's to set. */
static void unqueue(struct admission *a, struct admit_ticket *t)
{
	TAILQ_REMOVE(&a->queue, t, link);
	a->n_queued--;
}

/*
 * Walks the queue once. Returns 1 if a callback ran (the queue may have
 * changed under us: walk again), and the soonest time worth waking at.
 * `wanted` (a syscall or more on the owner's side) is asked of a ticket
 * about to be granted, and of every ticket on a sweep. Cost: the queue's
 * length squared at worst (the tickets of a key ahead of each), the queue
 * being bounded by the client connections.
 */
static int pump_once(struct admission *a, int64_t now, int sweep, int64_t *wake)
{
	struct admit_ticket *t;

	TAILQ_FOREACH(t, &a->queue, link) {
		enum admit_refusal why = ADMIT_QUEUE_TIMEOUT;
		int64_t retry = 0, w = -1;
		size_t ahead;
		int rc;

		ahead = ahead_of(a, t, t);
		if (ahead == 0 && (long)a->n_running < a->cfg.concurrency)
			w = token_wait(a, t, now);
		if ((sweep || w == 0) && t->wanted && !t->wanted(t->arg)) {
			unqueue(a, t);
			t->state = T_IDLE;
			t->refuse(t->arg, ADMIT_ABANDONED, 0);
			return 1;
		}
		rc = decide(a, t, ahead, now, &why, &retry);
		if (rc == 0 && now >= t->deadline_ms) {
			why = ADMIT_QUEUE_TIMEOUT;
			retry = rate_retry_ms(a, t, ahead, now);
			rc = -1;
		}
		if (rc != 0) {
			unqueue(a, t); /* decide made a granted ticket T_GRANTED */
			if (rc > 0) {
				t->go(t->arg);
			} else {
				t->state = T_IDLE;
				t->refuse(t->arg, why, retry);
			}
			return 1;
		}
		if (t->deadline_ms < *wake)
			*wake = t->deadline_ms;
		if (w > 0 && now + w < *wake)
			*wake = now + w;
	}
	return 0;
}

static void pump(struct admission *a, int64_t now_ms)
{
	int64_t wake;

	if (a->pumping) {
		a->again = 1;
		return;
	}
	a->pumping = 1;
	do {
		int sweep = now_ms >= a->next_sweep_ms;

		a->again = 0;
		wake = now_ms + ADMIT_SWEEP_MS;
		while (pump_once(a, now_ms, sweep, &wake))
			wake = now_ms + ADMIT_SWEEP_MS;
		if (sweep)
			a->next_sweep_ms = now_ms + ADMIT_SWEEP_MS;
	} while (a->again);
	a->pumping = 0;
	if (TAILQ_EMPTY(&a->queue))
		a->wake(a->wake_arg, 0); /* nothing to wake for */
	else
		a->wake(a->wake_arg, wake > now_ms ? wake - now_ms : 1);
}

void admission_pump(struct admission *a, int64_t now_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	pump(a, now_ms);
}

void admission_done(struct admit_ticket *t, enum admit_outcome outcome,
		    int64_t retry_after_ms, int64_t now_ms)
{
	struct admission *a;

	CHECK_OBJ_NOTNULL(t, TICKET_MAGIC);
	a = t->adm;
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	if (t->state != T_GRANTED)
		return;
	t->state = T_IDLE;
	a->n_running--;
	switch (outcome) {
	case ADMIT_OK:
		limit_breaker_success(&a->breaker);
		break;
	case ADMIT_FAILED:
		limit_breaker_failure(&a->breaker, now_ms);
		break;
	case ADMIT_LIMITED:
		/* the host works; the key is over its vendor limit */
		limit_breaker_success(&a->breaker);
		limit_block(a->keys, t->key,
			    now_ms + (retry_after_ms > 0 ? retry_after_ms
							 : ADMIT_DEFAULT_BLOCK_MS));
		break;
	case ADMIT_NOTHING:
		if (t->probe)
			limit_breaker_abandon(&a->breaker);
		break;
	}
	t->probe = 0;
	pump(a, now_ms);
}

void admission_cancel(struct admit_ticket *t, int64_t now_ms)
{
	AN(t);
	if (t->magic != TICKET_MAGIC)
		return;
	CHECK_OBJ_NOTNULL(t->adm, ADMISSION_MAGIC);
	if (t->state == T_QUEUED) {
		unqueue(t->adm, t);
		t->state = T_IDLE;
		pump(t->adm, now_ms);
	} else if (t->state == T_GRANTED) {
		admission_done(t, ADMIT_NOTHING, 0, now_ms);
	}
}

int64_t admission_blocked_ms(const struct admission *a, const uint8_t *key,
			     int64_t now_ms)
{
	int64_t until;

	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	until = limit_blocked_until(a->keys, key);
	return until > now_ms ? until - now_ms : 0;
}

int64_t admission_breaker_until(const struct admission *a)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	return a->breaker.state == LIMIT_BREAKER_OPEN ? a->breaker.reopen_ms : 0;
}

int admission_breaker_open(const struct admission *a, int64_t now_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	return a->breaker.state == LIMIT_BREAKER_OPEN &&
	       limit_breaker_peek(&a->breaker, now_ms, NULL) == LIMIT_DENY;
}

size_t admission_keys_blocked(const struct admission *a, int64_t now_ms)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	return limit_table_blocked(a->keys, now_ms);
}

size_t admission_queued(const struct admission *a)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	return a->n_queued;
}

size_t admission_running(const struct admission *a)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	return a->n_running;
}

const char *admission_breaker_state(const struct admission *a)
{
	CHECK_OBJ_NOTNULL(a, ADMISSION_MAGIC);
	return limit_breaker_state_name(a->breaker.state);
}
