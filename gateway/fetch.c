/*
 * fetch: see fetch.h.
 *
 * An ask for an entry id either joins the open flight for that id (its
 * waiter is collapsed into the fetch under way) or opens one: a struct
 * fetch, asked of admission, then sent upstream. When the fetch ends,
 * on_fetched tells admission how it went, retries if worth it, stores a
 * complete 200 JSON array, and lands the flight: one struct fetched for
 * all waiters, each sent back to its front as a landing. A refusal
 * (offline, breaker, a limit) lands the same way without an answer; the
 * fronts let a stored answer stand in where it may.
 */
#include "gateway/fetch.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "cache/derived.h"
#include "cache/families.h"
#include "cache/lru.h"
#include "cache/repr.h"
#include "gateway/access.h"
#include "gateway/admit.h"
#include "gateway/clock.h"
#include "gateway/flight.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "policy/backoff.h"
#include "policy/check.h"
#include "policy/derive.h"
#include "policy/json.h"
#include "policy/keyset.h"
#include "policy/query.h"
#include "policy/retry_after.h"
#include "policy/ttl.h"

#define FETCHER_MAGIC 0x46545352u
#define FETCH_MAGIC 0x46544348u
#define FWAITER_MAGIC 0x46574954u
#define UNAUTHORIZED_KEYS 4096 /* keys remembered as refused 401 */

/* A waiter on a flight: a front's client, named by its token. */
struct fwaiter {
	unsigned magic;
	struct fetch *fc;
	struct chan *reply;
	uint64_t token;
	int gone; /* the client left (FETCH_GONE) */
};

/*
 * The upstream fetch behind one flight, and what to store its answer as.
 * States: asking (admission queued: ticket queued, uf NULL) -> running (uf
 * set) -> backing off before a retry (retry timer pending, uf NULL) ->
 * running ... -> landed (freed). It keeps the ask it was opened with (the
 * API key, in memory only, wiped when freed).
 */
struct fetch {
	unsigned magic;
	struct fetcher *fx;
	struct flight *flight;
	struct fetch_ask *ask; /* owned: id, key hash, caller, key, query */
	struct upstream_fetch *uf;
	struct admit_ticket ticket;
	struct event *retry_timer; /* NULL unless backing off */
	unsigned attempts;         /* upstream requests made */
	size_t alive;              /* waiters whose client is still there */
	char *wide;                /* --widen-pages: the wider page asked instead (owned) */
	size_t wide_len;
	uint8_t wide_id[STORE_ID_LEN];
	LIST_ENTRY(fetch) link;
};

struct fetcher {
	unsigned magic;
	struct event_base *base;
	const struct cg_config *cfg;
	struct upstream *up;
	struct store *store;
	struct lru *lru;
	struct chan *inbox;
	struct flight_table *flights;
	struct admit *admit;
	struct keyset *unauthorized; /* keys the vendor answered 401, until when */
	struct deriver *deriver;     /* with --derive: stored answers by family */
	unsigned derive;             /* the rules the index was built for (0: none) */
	LIST_HEAD(, to_store) stores; /* answers waiting to be stored again */
	size_t stores_waiting;
	LIST_HEAD(, fetch) fetches;
	uint64_t rng;      /* retry jitter */
	int aborting;      /* fetcher_abort is landing everything */
	int64_t store_logged_ms; /* the last "could not store" line */
	unsigned long store_unlogged;
	atomic_int offline;
	atomic_int offline_when_open;  /* the setting, for the fronts (cfg is ours) */
	_Atomic int64_t breaker_until; /* admit_breaker_until, published */
	struct metrics *metrics;       /* NULL: not counted */
	struct event *stats_timer;     /* once a second: gauges that need a scan */
	const char *breaker_state;     /* as last logged */
};

static void on_fetched(struct upstream_response *resp, void *arg);
struct to_store;
static void to_store_free(struct to_store *ts);
static void land(struct fetch *fc, struct fetched *f);

/* ---- asks, answers, landings ---- */

struct fetch_ask *fetch_ask_new(enum fetch_ask_kind kind, const char *canonical,
				size_t canonical_len, const char *api_key)
{
	struct fetch_ask *a = calloc(1, sizeof(*a) + canonical_len + 1);

	AN(a);
	a->link.kind = MSG_ASK;
	a->magic = FETCH_ASK_MAGIC;
	a->kind = kind;
	a->canonical_len = canonical_len;
	memcpy(a->canonical, canonical, canonical_len);
	a->canonical[canonical_len] = '\0';
	if (api_key) {
		size_t len = strlen(api_key);

		CHECK(len <= FETCH_API_KEY_MAX);
		memcpy(a->api_key, api_key, len + 1);
	}
	return a;
}

void fetch_ask_free(struct fetch_ask *a)
{
	if (a == NULL)
		return;
	CHECK_OBJ(a, FETCH_ASK_MAGIC);
	explicit_bzero(a->api_key, sizeof(a->api_key));
	a->magic = 0;
	free(a);
}

void fetched_hold(struct fetched *f)
{
	CHECK_OBJ_NOTNULL(f, FETCHED_MAGIC);
	atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void fetched_release(struct fetched *f)
{
	CHECK_OBJ_NOTNULL(f, FETCHED_MAGIC);
	/* acq_rel: every holder's reads of the body happen before the free */
	if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(f->body);
	for (int k = 0; k < STORE_ENC_N; k++)
		free(f->enc[k]);
	f->magic = 0;
	free(f);
}

void fetch_landing_free(struct fetch_landing *l)
{
	CHECK_OBJ_NOTNULL(l, FETCH_LANDING_MAGIC);
	fetched_release(l->f);
	l->magic = 0;
	free(l);
}

static struct fetched *fetched_new(void)
{
	struct fetched *f = calloc(1, sizeof(*f));

	AN(f);
	f->magic = FETCHED_MAGIC;
	atomic_init(&f->refs, 1);
	return f;
}

/* Sends one landing of `f` to a waiter's front. */
static void send_landing(struct chan *reply, uint64_t token, int collapsed,
			 struct fetched *f)
{
	struct fetch_landing *l = calloc(1, sizeof(*l));

	AN(l);
	l->link.kind = MSG_LANDING;
	l->magic = FETCH_LANDING_MAGIC;
	l->token = token;
	l->collapsed = collapsed;
	fetched_hold(f);
	l->f = f;
	/* a front's inbox takes every landing: each is for a waiting client,
	 * and those are bounded by the connections */
	AZ(chan_send(reply, &l->link));
}

/* flight_waiter_fn: the flight landed; tell the waiter's front. */
static void on_landed(void *result, void *arg, int collapsed)
{
	struct fwaiter *w = arg;

	CHECK_OBJ_NOTNULL(w, FWAITER_MAGIC);
	send_landing(w->reply, w->token, collapsed, result);
	w->magic = 0;
	free(w);
}

/* ---- clocks and state ---- */

static int64_t now_ms(struct fetcher *fx)
{
	return loop_wall_ms(fx->base);
}

/* Admission's clock: monotonic, so a wall-clock step never drains or
 * refills a bucket, nor stretches a queue deadline. */
static int64_t mono_ms(struct fetcher *fx)
{
	return loop_mono_ms(fx->base);
}

/* Publishes admission's state (after it ran): the breaker's for the
 * fronts, the gauges for metrics, and a log line when the breaker moved. */
static void publish_breaker(struct fetcher *fx)
{
	const char *state = admit_breaker_state(fx->admit);
	int64_t until = admit_breaker_until(fx->admit);

	atomic_store_explicit(&fx->breaker_until, until, memory_order_relaxed);
	if (fx->metrics) {
		struct metrics_fetch *m = &fx->metrics->fetch;

		metrics_set(&m->queue_waiting, (int64_t)admit_queued(fx->admit));
		metrics_set(&m->in_flight, (int64_t)upstream_in_flight(fx->up));
		metrics_set(&m->breaker_open, until != 0);
	}
	if (fx->breaker_state == NULL)
		fx->breaker_state = state;
	if (state != fx->breaker_state) {
		if (until != 0)
			cglog(CGLOG_WARN, "breaker: open after %ld consecutive upstream failures; "
			      "refusing upstream requests for %ld ms", fx->cfg->breaker_threshold,
			      fx->cfg->breaker_cooldown_ms);
		else if (strcmp(state, "half-open") == 0)
			cglog(CGLOG_WARN, "breaker: half-open: one probe request goes upstream");
		else
			cglog(CGLOG_WARN, "breaker: %s: asking the upstream again", state);
		fx->breaker_state = state;
	}
}

/* The metrics' reason for a refusal (fetched.refusal). */
static enum metrics_refusal refusal_reason(int refusal)
{
	switch (refusal) {
	case ADMIT_KEY_RATE: return MR_RATE;
	case ADMIT_CALLER_QUOTA: return MR_CALLER_QUOTA;
	case ADMIT_QUEUE_FULL: return MR_QUEUE_FULL;
	case ADMIT_QUEUE_TIMEOUT: return MR_QUEUE_TIMEOUT;
	case ADMIT_BLOCKED: return MR_VENDOR_429;
	case ADMIT_BREAKER: return MR_BREAKER;
	case ADMIT_NEW_KEY: return MR_NEW_KEY_RATE;
	case ADMIT_CLIENT_RATE: return MR_CLIENT_RATE;
	case REFUSED_OFFLINE: return MR_OFFLINE;
	case REFUSED_UNAUTHORIZED: return MR_UNAUTHORIZED;
	default: return MR_N; /* not a limit: not counted */
	}
}

static void count_refusal(struct fetcher *fx, int refusal)
{
	enum metrics_refusal r = refusal_reason(refusal);

	if (fx->metrics && r != MR_N)
		metrics_add(&fx->metrics->fetch.refusals[r], 1);
}

/* An upstream exchange ended: counted by the vendor's status or the cause. */
static void count_upstream(struct fetcher *fx, const struct upstream_response *resp,
			   int malformed)
{
	struct metrics_fetch *m;
	enum metrics_upfail f = MU_FAILED;
	static const char *const causes[MU_N] = {"timeout", "refused", "reset", "tls", "dns",
						  "truncated", "too_big", "malformed",
						  "invalid", "failed"};

	if (fx->metrics == NULL || resp->result == UPSTREAM_SHUTDOWN)
		return;
	m = &fx->metrics->fetch;
	metrics_observe(&m->upstream_duration,
			resp->total_ms > 0 ? (uint64_t)(resp->total_ms * 1000) : 0);
	if (resp->result == UPSTREAM_OK && !malformed) {
		long st = resp->status;

		if (st < METRICS_STATUS_MIN || st > METRICS_STATUS_MAX)
			st = METRICS_STATUS_MAX;
		metrics_add(&m->upstream[st - METRICS_STATUS_MIN], 1);
		return;
	}
	if (malformed) {
		f = MU_MALFORMED;
	} else {
		for (int i = 0; i < MU_N; i++)
			if (resp->cause && strcmp(resp->cause, causes[i]) == 0)
				f = (enum metrics_upfail)i;
	}
	metrics_add(&m->upstream_failed[f], 1);
}

int fetcher_breaker_open(const struct fetcher *fx, int64_t mono)
{
	return mono < atomic_load_explicit(&fx->breaker_until, memory_order_relaxed);
}

int fetcher_offline(const struct fetcher *fx, int64_t mono)
{
	return atomic_load_explicit(&fx->offline, memory_order_relaxed) ||
	       (atomic_load_explicit(&fx->offline_when_open, memory_order_relaxed) &&
		fetcher_breaker_open(fx, mono));
}

void fetcher_set_offline(struct fetcher *fx, int offline, const char *by)
{
	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	if (atomic_exchange(&fx->offline, !!offline) != !!offline)
		cglog(CGLOG_WARN, "%s (by %s)", offline ? "offline: answering from the cache only"
						      : "online: asking the upstream again", by);
	if (fx->metrics)
		metrics_set(&fx->metrics->fetch.offline, !!offline);
}

/* Once a second: the gauges that need a scan or the store. */
static void on_stats(evutil_socket_t fd, short what, void *arg)
{
	struct fetcher *fx = arg;
	struct metrics_fetch *m;
	uint64_t map = 0, used = 0;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	if (fx->metrics == NULL)
		return;
	m = &fx->metrics->fetch;
	metrics_set(&m->keys_blocked, (int64_t)admit_keys_blocked(fx->admit, mono_ms(fx)));
	metrics_set(&m->cache_entries, (int64_t)store_count(fx->store));
	store_usage(fx->store, &map, &used);
	metrics_set(&m->cache_bytes, (int64_t)used);
	metrics_set(&m->cache_map_bytes, (int64_t)map);
	metrics_set(&m->offline, fetcher_offline(fx, mono_ms(fx)));
	publish_breaker(fx); /* a breaker's cool-down ends with no event */
}

void fetcher_set_metrics(struct fetcher *fx, struct metrics *m)
{
	struct timeval sec = {1, 0};

	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	fx->metrics = m;
	if (fx->stats_timer == NULL) {
		fx->stats_timer = event_new(fx->base, -1, EV_PERSIST, on_stats, fx);
		AN(fx->stats_timer);
		event_add(fx->stats_timer, &sec);
	}
	on_stats(-1, 0, fx);
}

/* ---- the fetch ---- */

/* A failed store, in words, at most once a second (a full disk fails every
 * answer): what failed, LMDB's or the system's cause, what was done. */
static void log_store_failure(struct fetcher *fx, const char *request_id, size_t len,
			      enum store_status st, size_t evicted)
{
	int64_t now = mono_ms(fx);

	if (now - fx->store_logged_ms < 1000 && fx->store_logged_ms != 0) {
		fx->store_unlogged++;
		return;
	}
	cglog(CGLOG_ERROR, "cache: could not store a %zu-byte answer (request_id=%s): %s (%s); "
	      "evicted %zu entries; answered without storing%s", len, request_id,
	      store_strerror(st), store_last_error(fx->store), evicted,
	      fx->store_unlogged ? "; more failures since the last line" : "");
	fx->store_logged_ms = now;
	fx->store_unlogged = 0;
}

/*
 * An answer to store: its entry's fields; the body and its representations
 * are the fetched's (held). A put that finds the map full although room
 * was just made (a reader's older snapshot still holds the pages freed:
 * LMDB reuses a page only once no reader can see it) is tried again a
 * little later, STORE_RETRIES times, so the answer is not lost for a
 * moment's reader (a cache tool, a slow client's pin).
 */
struct to_store {
	unsigned magic;
	struct fetcher *fx;
	struct fetched *f;
	uint8_t id[STORE_ID_LEN];
	uint8_t keyhash[STORE_KEYHASH_LEN];
	char *query; /* owned */
	size_t query_len;
	char ctype[STORE_CTYPE_MAX + 1];
	int64_t stored_ms, expires_ms;
	unsigned derived;
	unsigned tries;
	struct event *timer;
	char request_id[FETCH_REQUEST_ID_MAX + 1];
	LIST_ENTRY(to_store) link;
};

#define TO_STORE_MAGIC 0x544f5354u
#define STORE_RETRIES 3
#define STORE_RETRY_MS 100     /* then 200, 400 */
#define STORES_WAITING_MAX 64  /* answers waiting for a retry at once */

static void to_store_free(struct to_store *ts)
{
	CHECK_OBJ_NOTNULL(ts, TO_STORE_MAGIC);
	if (ts->timer) {
		LIST_REMOVE(ts, link);
		ts->fx->stores_waiting--;
		event_free(ts->timer);
	}
	fetched_release(ts->f);
	free(ts->query);
	ts->magic = 0;
	free(ts);
}

/* Writes ts's entry (never over a newer one); STORE_OK sets f's etag. */
static enum store_status put_entry(struct to_store *ts, size_t *evicted)
{
	struct fetcher *fx = ts->fx;
	struct fetched *f = ts->f;
	struct store_entry e;
	enum store_status st;

	memset(&e, 0, sizeof(e));
	e.stored_ms = ts->stored_ms;
	e.expires_ms = ts->expires_ms;
	e.derived = ts->derived;
	memcpy(e.keyhash, ts->keyhash, STORE_KEYHASH_LEN);
	e.query = ts->query;
	e.query_len = ts->query_len;
	e.content_type = ts->ctype;
	e.content_type_len = strlen(ts->ctype);
	e.body = f->body;
	e.body_len = f->body_len;
	for (int k = 0; k < STORE_ENC_N; k++) {
		e.enc[k].p = f->enc[k];
		e.enc[k].len = f->enc[k] ? f->enc_len[k] : 0;
	}
	st = lru_put_unless_newer(fx->lru, fx->store, ts->id, &e, now_ms(fx), evicted);
	if (*evicted && fx->metrics)
		metrics_add(&fx->metrics->fetch.evictions, *evicted);
	if (*evicted)
		cglog(CGLOG_INFO, "cache: full, evicted %zu entries", *evicted);
	if (st == STORE_OK) {
		f->etag = e.etag;
		/* sources are the vendor's answers (a derived one is narrower than
		 * its own source, which lives as long) */
		if (fx->derive && ts->derived == 0)
			deriver_note(fx->deriver, ts->keyhash, ts->query, ts->query_len, ts->id,
				     f->body_len);
	}
	return st;
}

static void on_store_retry(evutil_socket_t fd, short what, void *arg)
{
	struct to_store *ts = arg;
	struct fetcher *fx = ts->fx;
	size_t evicted = 0;
	enum store_status st;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(ts, TO_STORE_MAGIC);
	ts->tries++;
	st = put_entry(ts, &evicted);
	if (st == STORE_OK || st == STORE_NEWER) {
		cglog(CGLOG_INFO, "cache: a %zu-byte answer stored on try %u (request_id=%s)",
		      ts->f->body_len, ts->tries + 1, ts->request_id);
	} else if (st == STORE_FULL && ts->tries < STORE_RETRIES) {
		struct timeval tv = {0, (STORE_RETRY_MS << ts->tries) * 1000};

		evtimer_add(ts->timer, &tv);
		return;
	} else {
		log_store_failure(fx, ts->request_id, ts->f->body_len, st, evicted);
	}
	to_store_free(ts);
}

/*
 * Stores f (a complete 200 answer, or a derived one) as the entry `id` of
 * `a`'s question, with its compressed representations (made here, kept in
 * f for the waiters). Returns 1 if stored now; a put the map refused for a
 * moment is retried behind (see struct to_store).
 */
static int store_fetched_as(struct fetcher *fx, const struct fetch_ask *a,
			    const uint8_t id[STORE_ID_LEN], const char *query, size_t query_len,
			    struct fetched *f, const char *ctype, int64_t stored_ms,
			    int64_t expires_ms, unsigned derived);

static int store_fetched(struct fetcher *fx, const struct fetch_ask *a, struct fetched *f,
			 const char *ctype, int64_t stored_ms, int64_t expires_ms,
			 unsigned derived)
{
	return store_fetched_as(fx, a, a->id, a->canonical, a->canonical_len, f, ctype,
				stored_ms, expires_ms, derived);
}

/* store_fetched under another entry than the ask's own: `id` for `query`
 * (query_len bytes), the ask's key (a widened page's wide answer). */
static int store_fetched_as(struct fetcher *fx, const struct fetch_ask *a,
			    const uint8_t id[STORE_ID_LEN], const char *query, size_t query_len,
			    struct fetched *f, const char *ctype, int64_t stored_ms,
			    int64_t expires_ms, unsigned derived)
{
	struct to_store *ts = calloc(1, sizeof(*ts));
	struct repr_set reps;
	size_t evicted = 0;
	enum store_status st;

	AN(ts);
	ts->magic = TO_STORE_MAGIC;
	ts->fx = fx;
	fetched_hold(f);
	ts->f = f;
	memcpy(ts->id, id, STORE_ID_LEN);
	memcpy(ts->keyhash, a->keyhash, STORE_KEYHASH_LEN);
	ts->query = malloc(query_len + 1);
	AN(ts->query);
	memcpy(ts->query, query, query_len);
	ts->query[query_len] = '\0';
	ts->query_len = query_len;
	snprintf(ts->ctype, sizeof(ts->ctype), "%.*s", (int)sizeof(ts->ctype) - 1, ctype);
	ts->stored_ms = stored_ms;
	ts->expires_ms = expires_ms;
	ts->derived = derived;
	memcpy(ts->request_id, a->request_id, sizeof(ts->request_id));
	repr_make(f->body, f->body_len, fx->cfg->compress, fx->cfg->compress_min_bytes, &reps);
	for (int k = 0; k < STORE_ENC_N; k++) { /* f owns them, stored or not */
		f->enc[k] = reps.buf[k];
		f->enc_len[k] = reps.len[k];
	}
	st = put_entry(ts, &evicted);
	if (st == STORE_FULL && evicted > 0 && fx->stores_waiting < STORES_WAITING_MAX) {
		struct timeval tv = {0, STORE_RETRY_MS * 1000};

		ts->timer = evtimer_new(fx->base, on_store_retry, ts);
		AN(ts->timer);
		LIST_INSERT_HEAD(&fx->stores, ts, link);
		fx->stores_waiting++;
		evtimer_add(ts->timer, &tv);
		cglog(CGLOG_INFO, "cache: no room yet for a %zu-byte answer although %zu entries "
		      "were evicted (a reader's snapshot holds the pages); trying again in %d ms "
		      "(request_id=%s)", f->body_len, evicted, STORE_RETRY_MS, a->request_id);
		return 0;
	}
	if (st != STORE_OK && st != STORE_NEWER)
		log_store_failure(fx, a->request_id, f->body_len, st, evicted);
	to_store_free(ts);
	return st == STORE_OK;
}

/* Stores a complete 200 JSON-array answer. */
static int store_answer(struct fetch *fc, const struct upstream_response *resp,
			struct fetched *f)
{
	const struct fetch_ask *a = fc->ask;
	const char *ctype = "";
	int64_t now = now_ms(fc->fx);

	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcmp(resp->headers[i].name, "Content-Type") == 0)
			ctype = resp->headers[i].value;
	return store_fetched(fc->fx, a, f, ctype, now, now + (int64_t)a->ttl_s * 1000, 0);
}

/*
 * --derive: answers the fetch's question from a stored answer that holds
 * it, if one does (cache/derived.h), and lands its flight with it: no
 * upstream request. The derived answer is stored as an entry of its own
 * (S's times, the rule in its record), so the same question is a plain
 * hit from then on, with its compressed representations. Returns 1 if it
 * landed.
 */
static int try_derive(struct fetch *fc)
{
	struct fetcher *fx = fc->fx;
	struct fetch_ask *a = fc->ask;
	struct derived d;
	struct fetched *f;
	int why;

	if (fx->derive == 0 || (a->refresh && a->young_ms <= 0) || a->ttl_s == 0)
		return 0;
	/* a no-cache revalidation takes a source as young as a stored answer
	 * it would be served (--no-cache-min-age) */
	if (!deriver_try(fx->deriver, fx->store, fx->derive, a->keyhash, a->id, a->canonical,
			 a->canonical_len, (int64_t)a->ttl_s * 1000,
			 a->refresh ? now_ms(fx) - a->young_ms : INT64_MIN, now_ms(fx), &d,
			 &why)) {
		if (fx->metrics)
			metrics_add(&fx->metrics->fetch.derive_missed[why], 1);
		cglog(CGLOG_DEBUG, "derive: not derived (%s) request_id=%s",
		      deriver_reason_name(why), a->request_id);
		return 0;
	}
	f = fetched_new();
	f->from_store = 1;
	f->derived = d.rule;
	f->result = UPSTREAM_OK;
	f->status = 200;
	f->stored_ms = d.stored_ms;
	f->expires_ms = d.expires_ms;
	f->headers[0].name = "Content-Type";
	snprintf(f->headers[0].value, sizeof(f->headers[0].value), "%.*s",
		 (int)sizeof(f->headers[0].value) - 1, d.content_type);
	f->n_headers = d.content_type[0] ? 1 : 0;
	f->body = d.body; /* the fetched owns it now */
	f->body_len = d.body_len;
	d.body = NULL;
	f->stored = store_fetched(fx, a, f, d.content_type, d.stored_ms, d.expires_ms, d.rule);
	if (fx->metrics)
		metrics_add(&fx->metrics->fetch.derived[derive_rule_index(d.rule)], 1);
	cglog(CGLOG_DEBUG, "derive: answered by rule %s from a stored answer (%zu of its %zu "
	      "elements) request_id=%s", derive_rule_name(d.rule), d.count, d.s_count,
	      a->request_id);
	land(fc, f);
	return 1;
}

/* Takes a fetch off the list, out of admission, and frees it. */
static void fetch_free(struct fetch *fc)
{
	struct fetcher *fx = fc->fx;

	admit_cancel(&fc->ticket, mono_ms(fx));
	publish_breaker(fx);
	LIST_REMOVE(fc, link);
	if (fc->retry_timer)
		event_free(fc->retry_timer);
	free(fc->wide);
	fetch_ask_free(fc->ask);
	fc->magic = 0;
	free(fc);
}

/* Frees the fetch, then lands its flight with `f` for every waiter. */
static void land(struct fetch *fc, struct fetched *f)
{
	struct flight *flight = fc->flight;

	fetch_free(fc);
	if (flight)
		flight_land(flight, f);
	fetched_release(f);
}

/* Lands a flight that never asked the upstream. */
static void land_refused(struct fetch *fc, int refusal, int64_t retry_after_ms)
{
	struct fetched *f = fetched_new();

	count_refusal(fc->fx, refusal);
	f->refusal = refusal;
	f->retry_after_ms = retry_after_ms;
	land(fc, f);
}

static int is_offline(struct fetcher *fx)
{
	return fetcher_offline(fx, mono_ms(fx));
}

/* Sends the fetch's upstream request (admission granted it). */
static void start_fetch(void *arg)
{
	struct fetch *fc = arg;
	struct fetcher *fx;

	CHECK_OBJ_NOTNULL(fc, FETCH_MAGIC);
	fx = fc->fx;
	if (fx->aborting || is_offline(fx)) {
		/* granted (or its backoff ended) while tearing down or after
		 * going offline: never sent */
		admit_done(&fc->ticket, ADMIT_NOTHING, 0, mono_ms(fx));
		land_refused(fc, fx->aborting ? REFUSED_SHUTDOWN : REFUSED_OFFLINE, 0);
		return;
	}
	fc->attempts++;
	fc->uf = upstream_fetch(fx->up, fc->wide ? fc->wide : fc->ask->canonical,
				fc->ask->api_key, fc->ask->request_id, on_fetched, fc);
	if (fc->uf == NULL) {
		admit_done(&fc->ticket, ADMIT_NOTHING, 0, mono_ms(fx));
		land_refused(fc, REFUSED_START, 0);
	}
}

static void on_refused(void *arg, enum admit_refusal why, int64_t retry_after_ms)
{
	struct fetch *fc = arg;

	CHECK_OBJ_NOTNULL(fc, FETCH_MAGIC);
	land_refused(fc, (int)why, retry_after_ms);
}

/* admit_wanted_fn: is any waiter's client still there? Fronts report the
 * clients that left (FETCH_GONE); a refresh has no waiter and never
 * queues, so it is never asked. */
static int fetch_wanted(void *arg)
{
	struct fetch *fc = arg;

	CHECK_OBJ_NOTNULL(fc, FETCH_MAGIC);
	return fc->alive > 0;
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct fetch *fc = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(fc, FETCH_MAGIC);
	event_free(fc->retry_timer);
	fc->retry_timer = NULL;
	start_fetch(fc);
}

/* A connect failure, a timeout, a truncated answer or 502/503/504: worth
 * another try (GET is idempotent). */
static int retryable(const struct upstream_response *resp)
{
	if (resp->result == UPSTREAM_OK)
		return resp->status == 502 || resp->status == 503 || resp->status == 504;
	return resp->result == UPSTREAM_CONNECT || resp->result == UPSTREAM_TIMEOUT ||
	       resp->result == UPSTREAM_TRUNCATED;
}

/*
 * After a retryable failure: if retries are left and admission grants one
 * now (a token; never a queue), backs off (jittered) and tries again.
 * Returns 1 if a retry is scheduled.
 */
static int schedule_retry(struct fetch *fc, int64_t now)
{
	struct fetcher *fx = fc->fx;
	enum admit_refusal why;
	int64_t wait, backoff;
	struct timeval tv;

	if (fc->attempts > (unsigned)fx->cfg->upstream_retries || fx->aborting ||
	    is_offline(fx))
		return 0;
	if (admit_ask(fx->admit, &fc->ticket, fc->ask->keyhash,
		      fc->ask->has_caller ? fc->ask->caller : NULL,
		      fc->ask->has_client ? fc->ask->client : NULL, 0, start_fetch, on_refused,
		      fetch_wanted, fc, now, &why, &wait) != 1)
		return 0;
	backoff = limit_backoff_ms(fc->attempts - 1, fx->cfg->retry_backoff_ms,
				   fx->cfg->retry_backoff_ms * 16, &fx->rng);
	fc->retry_timer = evtimer_new(fx->base, on_retry_timer, fc);
	AN(fc->retry_timer);
	tv.tv_sec = backoff / 1000;
	tv.tv_usec = (backoff % 1000) * 1000;
	evtimer_add(fc->retry_timer, &tv);
	cglog(CGLOG_INFO, "upstream: attempt %u failed (request_id=%s); retrying in %" PRId64
	      " ms", fc->attempts, fc->ask->request_id, backoff);
	return 1;
}

/* The vendor's Retry-After, in ms, or 0 when absent or unreadable. */
static int64_t vendor_retry_after(const struct upstream_response *resp, int64_t now)
{
	int64_t delay;

	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcmp(resp->headers[i].name, "Retry-After") == 0 &&
		    limit_parse_retry_after(resp->headers[i].value, now, &delay) == 0)
			return delay > 0 ? delay : 1;
	return 0;
}

/* The answer as every waiter will see it; takes the body out of resp. */
static struct fetched *fetched_from(struct upstream_response *resp)
{
	struct fetched *f = fetched_new();

	f->asked = 1;
	f->result = resp->result;
	f->status = resp->status;
	f->total_ms = resp->total_ms;
	memcpy(f->error, resp->error, sizeof(f->error));
	f->n_headers = resp->n_headers;
	memcpy(f->headers, resp->headers, resp->n_headers * sizeof(resp->headers[0]));
	f->body = upstream_take_body(resp, &f->body_len);
	return f;
}

/*
 * --widen-pages: the vendor answered the wider page W asked instead of the
 * question Q. W is stored as the vendor's answer (a source for the next
 * pages), and Q's answer is cut out of it by the pages rule (the same
 * bytes the vendor would have sent for Q) and stored as derived. Returns
 * the fetched for Q's waiters (W's is released); if Q cannot be cut out
 * (W is not a compact array of objects: never from a conforming vendor),
 * W's bytes are not Q's answer: 502, as a malformed answer.
 */
static struct fetched *land_widened(struct fetch *fc, const struct upstream_response *resp,
				    struct fetched *w)
{
	struct fetcher *fx = fc->fx;
	const struct fetch_ask *a = fc->ask;
	struct query qw, qq;
	struct query_error qerr;
	struct derive_source src;
	struct derive_answer ans;
	struct fetched *f;
	const char *ctype = "";
	int64_t now = now_ms(fx), expires = now + (int64_t)a->ttl_s * 1000;

	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcmp(resp->headers[i].name, "Content-Type") == 0)
			ctype = resp->headers[i].value;
	if (a->ttl_s > 0)
		w->stored = store_fetched_as(fx, a, fc->wide_id, fc->wide, fc->wide_len, w, ctype,
					     now, expires, 0);
	src.query = &qw;
	src.body = w->body;
	src.body_len = w->body_len;
	src.fetched_ms = now;
	if (query_normalise(fc->wide, fc->wide_len, &qw, &qerr) != QUERY_OK ||
	    query_normalise(a->canonical, a->canonical_len, &qq, &qerr) != QUERY_OK ||
	    derive_answer(&src, &qq, DERIVE_RULE_PAGES, &ans) != DERIVE_OK) {
		cglog(CGLOG_WARN, "widen: the wider page's answer does not hold the question's "
		      "(request_id=%s); answered 502", a->request_id);
		w->failed = w->malformed = 1;
		return w;
	}
	f = fetched_new();
	f->asked = 1;
	f->result = UPSTREAM_OK;
	f->status = 200;
	f->total_ms = w->total_ms;
	f->widened = 1;
	memcpy(f->headers, w->headers, w->n_headers * sizeof(w->headers[0]));
	f->n_headers = w->n_headers;
	f->body_len = derive_body_len(&ans);
	f->body = malloc(f->body_len);
	AN(f->body);
	CHECK(derive_write(&ans, w->body, f->body, f->body_len) == (long)f->body_len);
	if (a->ttl_s > 0)
		f->stored = store_fetched(fx, a, f, ctype, now, expires, DERIVE_RULE_PAGES);
	fetched_release(w);
	if (fx->metrics)
		metrics_add(&fx->metrics->fetch.widened, 1);
	return f;
}

/*
 * --widen-pages N: a miss for a page of l < N elements asks the vendor for
 * N at the same offset instead (the same filters), when the pages rule is
 * on: one vendor request for up to N / l pages, the rest derived. The
 * flight stays the question's own (identical questions coalesce as ever;
 * two different pages of one wide page asked at the same moment each ask
 * for it).
 */
static void widen(struct fetch *fc)
{
	struct fetcher *fx = fc->fx;
	const struct fetch_ask *a = fc->ask;
	struct query q;
	struct query_error qerr;
	char raw[QUERY_CANON_MAX];
	const char *at;
	size_t len;
	int n;

	if (fx->cfg->widen_pages == 0 || !(fx->derive & DERIVE_RULE_PAGES) || a->refresh ||
	    query_normalise(a->canonical, a->canonical_len, &q, &qerr) != QUERY_OK ||
	    !(q.present & QUERY_P_LIMIT) || q.limit >= (uint32_t)fx->cfg->widen_pages)
		return;
	/* the canonical query with its limit's value replaced: params are
	 * sorted and each appears once, so "limit=" starts one of them */
	at = a->canonical;
	while ((at = strstr(at, "limit=")) != NULL && at != a->canonical && at[-1] != '&')
		at++;
	if (at == NULL)
		return;
	len = strspn(at + 6, "0123456789");
	n = snprintf(raw, sizeof(raw), "%.*slimit=%ld%s", (int)(at - a->canonical), a->canonical,
		     fx->cfg->widen_pages, at + 6 + len);
	if (n < 0 || (size_t)n >= sizeof(raw) ||
	    query_normalise(raw, (size_t)n, &q, &qerr) != QUERY_OK)
		return;
	fc->wide = malloc(q.canonical_len + 1);
	AN(fc->wide);
	memcpy(fc->wide, q.canonical, q.canonical_len + 1);
	fc->wide_len = q.canonical_len;
	store_entry_id(a->keyhash, fc->wide, fc->wide_len, fc->wide_id);
}

/*
 * The upstream answered (or failed): tell admission how it went, retry if
 * worth it, store a good answer, then wake everyone. A failure (no answer,
 * 5xx, 429, or a 200 that is not a JSON array) never touches what is
 * stored, and lets a stored answer stand in for the waiters.
 */
static void on_fetched(struct upstream_response *resp, void *arg)
{
	struct fetch *fc = arg;
	struct fetcher *fx;
	struct fetched *f;
	int64_t mono;
	enum admit_outcome outcome = ADMIT_OK;
	int64_t retry_after = 0;
	int malformed;

	CHECK_OBJ_NOTNULL(fc, FETCH_MAGIC);
	fx = fc->fx;
	mono = mono_ms(fx);
	fc->uf = NULL;
	if (resp->result == UPSTREAM_SHUTDOWN) {
		outcome = ADMIT_NOTHING;
	} else if (resp->result != UPSTREAM_OK || resp->status >= 500) {
		outcome = ADMIT_FAILED;
	} else if (resp->status == 429) {
		char key_id[13];

		outcome = ADMIT_LIMITED;
		retry_after = vendor_retry_after(resp, now_ms(fx)); /* a delay */
		access_key_id(fc->ask->keyhash, key_id);
		cglog(CGLOG_WARN, "upstream: 429 for key_id=%s (request_id=%s); no requests "
		      "for it for %" PRId64 " ms (Retry-After)", key_id, fc->ask->request_id,
		      retry_after > 0 ? retry_after : (int64_t)ADMIT_DEFAULT_BLOCK_MS);
	}
	admit_done(&fc->ticket, outcome, retry_after, mono);
	malformed = resp->result == UPSTREAM_OK && resp->status == 200 &&
		    !json_is_array(resp->body, resp->body_len);
	count_upstream(fx, resp, malformed);
	publish_breaker(fx);
	if (resp->result == UPSTREAM_OK && resp->status >= 200 && resp->status < 300)
		admit_mark_known(fx->admit, fc->ask->keyhash);
	if (resp->result == UPSTREAM_OK && resp->status == 401 &&
	    fx->cfg->unauthorized_ttl_s > 0) {
		keyset_put(fx->unauthorized, fc->ask->keyhash,
			   mono + (int64_t)fx->cfg->unauthorized_ttl_s * 1000);
		admit_forget_known(fx->admit, fc->ask->keyhash);
	}
	if (outcome == ADMIT_FAILED && retryable(resp) && schedule_retry(fc, mono))
		return;
	f = fetched_from(resp);
	f->failed = outcome != ADMIT_OK;
	if (resp->result == UPSTREAM_OK && resp->status == 200) {
		if (malformed) {
			f->failed = f->malformed = 1; /* a stored answer stands in, or 502 */
		} else if (fc->wide) {
			f = land_widened(fc, resp, f);
		} else if (fc->ask->ttl_s > 0 && store_answer(fc, resp, f)) {
			f->stored = 1;
		}
	}
	land(fc, f);
}

/* Opens the flight for the ask's id and its fetch (not yet asked for);
 * takes the ask. */
static struct fetch *fetch_open(struct fetcher *fx, struct fetch_ask *a)
{
	struct fetch *fc = calloc(1, sizeof(*fc));

	AN(fc);
	fc->magic = FETCH_MAGIC;
	fc->fx = fx;
	fc->ask = a;
	fc->flight = flight_open(fx->flights, a->id);
	flight_set_data(fc->flight, fc);
	LIST_INSERT_HEAD(&fx->fetches, fc, link);
	return fc;
}

/*
 * Asks admission for an opened fetch: granted, the request goes now;
 * queued, it goes (or is refused) later; refused, the flight lands at once.
 * A background refresh (may_queue 0, no waiter) is only granted or dropped.
 * The caller joins its waiter, if any, before; the fetch may be gone after.
 */
static void fetch_begin(struct fetcher *fx, struct fetch *fc, int may_queue)
{
	enum admit_refusal why = ADMIT_KEY_RATE;
	int64_t retry = 0;
	int rc;

	if (is_offline(fx)) {
		land_refused(fc, REFUSED_OFFLINE, 0);
		return;
	}
	rc = admit_ask(fx->admit, &fc->ticket, fc->ask->keyhash,
		       fc->ask->has_caller ? fc->ask->caller : NULL,
		       fc->ask->has_client ? fc->ask->client : NULL, may_queue, start_fetch,
		       on_refused, fetch_wanted, fc, mono_ms(fx), &why, &retry);
	publish_breaker(fx);
	if (rc > 0)
		start_fetch(fc);
	else if (rc < 0)
		land_refused(fc, (int)why, retry);
}

/* A refusal for one waiter that never joined a flight. */
static void refuse_one(struct fetcher *fx, struct fetch_ask *a, int refusal,
		       int64_t retry_after_ms)
{
	struct fetched *f = fetched_new();

	count_refusal(fx, refusal);
	f->refusal = refusal;
	f->retry_after_ms = retry_after_ms;
	send_landing(a->reply, a->token, 0, f);
	fetched_release(f);
}

/* Is a fresh answer stored under id? */
static int fresh_in_store(struct fetcher *fx, const uint8_t id[STORE_ID_LEN])
{
	struct store_view *view;
	struct store_entry e;
	int fresh;

	if (store_get(fx->store, id, &view, &e) != STORE_OK)
		return 0;
	fresh = !ttl_is_stale(e.expires_ms, now_ms(fx));
	store_view_release(view);
	return fresh;
}

/*
 * A miss whose flight landed between the front's lookup and this ask (the
 * front found nothing fresh, then the answer was stored): the entry is
 * fresh in the store now, so it is the answer, not a second upstream
 * request. One read per new flight; the entry is copied into the landing
 * only when found (the race), so the front can answer even if it is
 * evicted before it looks. Returns 1 if answered.
 */
static int answer_if_stored(struct fetcher *fx, struct fetch_ask *a)
{
	struct store_view *view;
	struct store_entry e;
	struct fetched *f;

	if (store_get(fx->store, a->id, &view, &e) != STORE_OK)
		return 0;
	if (ttl_is_stale(e.expires_ms, now_ms(fx))) {
		store_view_release(view);
		return 0;
	}
	f = fetched_new();
	f->from_store = 1;
	f->stored = 1;
	f->derived = e.derived;
	f->result = UPSTREAM_OK;
	f->status = 200;
	f->stored_ms = e.stored_ms;
	f->expires_ms = e.expires_ms;
	f->etag = e.etag;
	if (e.content_type_len > 0) {
		f->headers[0].name = "Content-Type";
		snprintf(f->headers[0].value, sizeof(f->headers[0].value), "%.*s",
			 (int)(e.content_type_len < sizeof(f->headers[0].value)
				       ? e.content_type_len
				       : sizeof(f->headers[0].value) - 1),
			 e.content_type);
		f->n_headers = 1;
	}
	f->body = malloc(e.body_len ? e.body_len : 1);
	AN(f->body);
	memcpy(f->body, e.body, e.body_len);
	f->body_len = e.body_len;
	store_view_release(view);
	send_landing(a->reply, a->token, 1, f);
	fetched_release(f);
	return 1;
}

/* FETCH_MISS: joins the flight for the id, opening it (and asking for its
 * upstream fetch) if this waiter is the first. Takes the ask. */
static void ask_miss(struct fetcher *fx, struct fetch_ask *a)
{
	struct flight *flight = flight_find(fx->flights, a->id);
	struct fetch *fc = NULL;
	struct fwaiter *w;

	int64_t until;

	if (fx->aborting) {
		refuse_one(fx, a, REFUSED_SHUTDOWN, 0);
		fetch_ask_free(a);
		return;
	}
	if ((until = keyset_get(fx->unauthorized, a->keyhash, mono_ms(fx))) > 0) {
		/* answered locally: a mistyped key must not spend the vendor's
		 * patience (the key itself is never stored, only its hash) */
		refuse_one(fx, a, REFUSED_UNAUTHORIZED, until - mono_ms(fx));
		fetch_ask_free(a);
		return;
	}
	if (flight && flight_waiters(flight) >= (size_t)fx->cfg->max_waiters) {
		refuse_one(fx, a, REFUSED_OVERLOADED, 1000);
		fetch_ask_free(a);
		return;
	}
	if (flight == NULL && !a->refresh && answer_if_stored(fx, a)) {
		fetch_ask_free(a);
		return;
	}
	w = calloc(1, sizeof(*w));
	AN(w);
	w->magic = FWAITER_MAGIC;
	w->reply = a->reply;
	w->token = a->token;
	if (flight == NULL) {
		fc = fetch_open(fx, a); /* takes the ask */
		flight = fc->flight;
	} else {
		fetch_ask_free(a); /* the flight's own ask stands for it */
	}
	w->fc = flight_data(flight);
	AZ(flight_join(flight, on_landed, w)); /* checked above; a new flight has room */
	w->fc->alive++;
	if (fc != NULL && !try_derive(fc)) {
		widen(fc);
		fetch_begin(fx, fc, 1);
	}
}

/* FETCH_REFRESH: refreshes the id in the background, unless a fetch for
 * it is under way; dropped if admission will not grant it now. */
static void ask_refresh(struct fetcher *fx, struct fetch_ask *a)
{
	if (fx->aborting || flight_find(fx->flights, a->id) != NULL ||
	    keyset_get(fx->unauthorized, a->keyhash, mono_ms(fx)) > 0 ||
	    fresh_in_store(fx, a->id)) {
		/* under way, refused, or refreshed already (a refresh that
		 * landed between the front's stale hit and this ask) */
		fetch_ask_free(a);
		return;
	}
	fetch_begin(fx, fetch_open(fx, a), 0);
}

static int same_waiter(void *arg, const void *key)
{
	const struct fwaiter *w = arg;
	const struct fetch_ask *a = key;

	return w->token == a->token && w->reply == a->reply;
}

/* FETCH_GONE: a waiter's client left; once none is left, a fetch still
 * waiting in admission's queue is dropped instead of sent. */
static void ask_gone(struct fetcher *fx, struct fetch_ask *a)
{
	struct flight *flight = flight_find(fx->flights, a->id);
	struct fwaiter *w = flight ? flight_find_waiter(flight, same_waiter, a) : NULL;

	if (w != NULL && !w->gone) {
		w->gone = 1;
		w->fc->alive--;
	}
	fetch_ask_free(a);
}

/* chan_fn for the inbox. */
static void on_ask(struct chan_msg *m, void *arg)
{
	struct fetcher *fx = arg;
	struct fetch_ask *a = (struct fetch_ask *)m;

	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	CHECK(m->kind == MSG_ASK);
	CHECK_OBJ_NOTNULL(a, FETCH_ASK_MAGIC);
	switch (a->kind) {
	case FETCH_MISS:
		ask_miss(fx, a);
		break;
	case FETCH_REFRESH:
		ask_refresh(fx, a);
		break;
	case FETCH_GONE:
		ask_gone(fx, a);
		break;
	default:
		CHECK(!"an ask of an unknown kind");
	}
}

/* ---- the fetcher ---- */

/* Admission's settings from the gateway's. */
static void admit_config_of(const struct cg_config *cfg, struct admit_config *ac)
{
	memset(ac, 0, sizeof(*ac));
	ac->rate = cfg->upstream_rate;
	ac->burst = cfg->upstream_burst;
	ac->caller_rate = cfg->caller_header[0] ? cfg->caller_rate : 0;
	ac->caller_burst = cfg->caller_burst;
	ac->concurrency = cfg->upstream_concurrency;
	ac->queue_limit = cfg->queue_limit;
	ac->queue_timeout_ms = cfg->queue_timeout_ms;
	ac->breaker_threshold = (unsigned)cfg->breaker_threshold;
	ac->breaker_cooldown_ms = cfg->breaker_cooldown_ms;
	ac->new_key_rate = cfg->new_key_rate;
	ac->client_rate = cfg->client_rate;
	ac->client_burst = cfg->client_burst;
}

/* The rules derived answers use from now on: the index is built when they
 * are turned on (a pass over the store) and forgotten when turned off. */
static void set_derive(struct fetcher *fx, unsigned rules)
{
	if (rules != 0 && fx->derive == 0) {
		struct timespec t0, t1;
		size_t n;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		n = deriver_rebuild(fx->deriver, fx->store, now_ms(fx));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		cglog(CGLOG_INFO, "derive: %zu stored answers indexed in %ld ms (%zu families)",
		      n, (long)((t1.tv_sec - t0.tv_sec) * 1000 +
				(t1.tv_nsec - t0.tv_nsec) / 1000000),
		      deriver_families(fx->deriver));
	} else if (rules == 0 && fx->derive != 0) {
		deriver_clear(fx->deriver);
	}
	fx->derive = rules;
}

int fetcher_set_config(struct fetcher *fx, const struct cg_config *cfg, char *err,
		       size_t err_size)
{
	struct admit_config ac;

	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	admit_config_of(cfg, &ac);
	if (admit_set_config(fx->admit, &ac) != 0) {
		snprintf(err, err_size, "upstream-rate/upstream-burst: not usable");
		return -1;
	}
	flight_table_set_max(fx->flights, (size_t)cfg->max_waiters);
	fx->cfg = cfg;
	set_derive(fx, cfg->derive);
	atomic_store(&fx->offline_when_open, cfg->offline_when_open);
	publish_breaker(fx);
	return 0;
}

struct fetcher *fetcher_new(struct event_base *base, const struct cg_config *cfg,
			    struct upstream *up, struct store *store, struct lru *lru,
			    char *err, size_t err_size)
{
	struct fetcher *fx = calloc(1, sizeof(*fx));
	struct admit_config ac;

	AN(fx);
	admit_config_of(cfg, &ac);
	fx->magic = FETCHER_MAGIC;
	fx->base = base;
	fx->cfg = cfg;
	fx->up = up;
	fx->store = store;
	fx->lru = lru;
	LIST_INIT(&fx->fetches);
	LIST_INIT(&fx->stores);
	atomic_init(&fx->offline, cfg->offline);
	atomic_init(&fx->offline_when_open, cfg->offline_when_open);
	atomic_init(&fx->breaker_until, 0);
	fx->rng = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)fx << 16);
	fx->flights = flight_table_new((size_t)cfg->max_waiters);
	fx->unauthorized = keyset_new(UNAUTHORIZED_KEYS);
	fx->deriver = deriver_new(FAMILIES_MAX_DEFAULT);
	set_derive(fx, cfg->derive);
	fx->admit = admit_new(base, &ac);
	if (fx->admit == NULL) {
		snprintf(err, err_size, "upstream-rate/upstream-burst: not usable");
		fetcher_free(fx);
		return NULL;
	}
	fx->inbox = chan_new(base, FETCH_INBOX_MAX, on_ask, fx);
	if (fx->inbox == NULL) {
		snprintf(err, err_size, "cannot make the fetcher's queue (eventfd)");
		fetcher_free(fx);
		return NULL;
	}
	return fx;
}

struct chan *fetcher_inbox(struct fetcher *fx)
{
	return fx->inbox;
}

void fetcher_abort(struct fetcher *fx)
{
	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	fx->aborting = 1;
	while (!LIST_EMPTY(&fx->fetches)) {
		struct fetch *fc = LIST_FIRST(&fx->fetches);

		if (fc->uf) {
			upstream_cancel(fc->uf);
			fc->uf = NULL;
		}
		land_refused(fc, REFUSED_SHUTDOWN, 0); /* out of admission too */
	}
}

size_t fetcher_flights(const struct fetcher *fx)
{
	return flight_count(fx->flights);
}

const struct admit *fetcher_admit(const struct fetcher *fx)
{
	return fx->admit;
}

void fetcher_free(struct fetcher *fx)
{
	if (fx == NULL)
		return;
	CHECK_OBJ_NOTNULL(fx, FETCHER_MAGIC);
	if (fx->inbox) {
		fx->aborting = 1;
		chan_free(fx->inbox); /* asks still queued are refused */
	}
	fetcher_abort(fx);
	while (!LIST_EMPTY(&fx->stores)) { /* the gateway stops: one last try each */
		struct to_store *ts = LIST_FIRST(&fx->stores);
		size_t evicted = 0;
		enum store_status st = put_entry(ts, &evicted);

		if (st != STORE_OK && st != STORE_NEWER)
			log_store_failure(fx, ts->request_id, ts->f->body_len, st, evicted);
		to_store_free(ts);
	}
	if (fx->stats_timer)
		event_free(fx->stats_timer);
	flight_table_free(fx->flights);
	admit_free(fx->admit);
	keyset_free(fx->unauthorized);
	deriver_free(fx->deriver);
	fx->magic = 0;
	free(fx);
}
