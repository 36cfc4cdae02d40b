/*
 * front: see front.h.
 *
 * A request for the contacts endpoint goes: validate and normalise (policy)
 * -> entry id = SHA-256(SHA-256(key) || canonical query) -> answer_stored
 * (a fresh entry, zero-copy from the map) -> else a waiter, and an ask to
 * the fetch layer; its landing (on_landing) answers the waiter. A waiter's
 * token, echoed by the fetch layer, is its own address: only this front
 * dereferences it, and a waiter lives until its landing. If the client
 * leaves meanwhile, the fetch layer is told (FETCH_GONE) and evhttp frees
 * the detached request when it is answered.
 */
#include "gateway/front.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cache/lru.h"
#include "cache/store.h"
#include "gateway/access.h"
#include "gateway/answer.h"
#include "gateway/clock.h"
#include "gateway/conn.h"
#include "gateway/fetch.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "policy/check.h"
#include "policy/query.h"
#include "policy/ttl.h"

#define FRONT_MAGIC 0x46524e54u
#define WAITER_MAGIC 0x57414954u
#define CONTACTS_PATH "/api/public/contacts"
#define HEALTH_PATH "/healthz"
#define READY_PATH "/readyz"
#define METRICS_PATH "/metrics"
#define REQUEST_BODY_MAX 1024 /* GET carries no body; refuse big ones */
#define TICK_MS 250           /* maintenance: pins, the idle reader */
#define LISTEN_BACKLOG 4096
#define XFF_HEADERS_MAX 16     /* X-Forwarded-For fields read (the last ones count) */
#define DRAIN_ARRIVING_MS 1000 /* a drain waits this long for requests on their way */

enum cache_control {
	CC_NO_CACHE = 1,       /* refresh from upstream (still coalesced) */
	CC_ONLY_IF_CACHED = 2, /* answer from the cache or 504 */
};

/*
 * One request, from its head to its answer: what metrics and the access log
 * need once it is answered (the request itself may be freed by then, so
 * the strings are copies, taken only when the access log is on).
 */
struct req_ctx {
	int64_t start_ns;   /* CLOCK_MONOTONIC when the head was read */
	char request_id[FETCH_REQUEST_ID_MAX + 1];
	char key_id[13];    /* "" without a key */
	char caller[METRICS_CALLER_LEN + 1]; /* sanitised; "" without one */
	/* the access log's (empty while it is off) */
	char method[8];
	char path[256];
	char query[1024];
	char client[48];
};

/* A client request waiting for a landing. */
struct waiter {
	unsigned magic;
	struct front *fr;
	struct evhttp_request *req;
	struct req_ctx ctx;
	uint8_t id[STORE_ID_LEN];
	int refresh;   /* asked with no-cache */
	int had_stale; /* an expired answer is stored (fwd=stale, not miss) */
	int revalidate; /* a refresh under --client-no-cache revalidate */
	int gone;      /* its client left (the fetch layer was told) */
};

struct front {
	unsigned magic;
	unsigned index;
	struct front_shared sh;
	const struct cg_config *cfg; /* the settings in force on this loop */
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound[FRONT_LISTENERS_MAX];
	int bound_fd[FRONT_LISTENERS_MAX]; /* their sockets (for a handover) */
	size_t n_bound;
	unsigned port;
	struct conns *conns;
	struct answerer *as;
	struct chan *inbox; /* landings and control messages */
	struct event *tick;
	struct metrics_front *mf;  /* this loop's counters */
	struct access_log *alog;   /* NULL: no access log */
	uint32_t rid_seed;         /* request ids: seed and counter */
	uint32_t rid_count;
	struct timespec started;
	_Atomic int64_t heartbeat; /* CLOCK_MONOTONIC ms of the last tick */
	pthread_t thread;
	int running;       /* the thread was started */
	size_t n_waiting;  /* waiters whose landing has not come */
	int draining;
	const struct req_ctx *counting; /* the request being answered (on_count) */
	int64_t drain_began_ms;
	int drained_told;  /* FRONT_DRAINED sent for this drain */
	int stopping;
};

struct front_msg *front_msg_new(enum front_what what, unsigned index)
{
	struct front_msg *m = calloc(1, sizeof(*m));

	AN(m);
	m->link.kind = MSG_FRONT;
	m->magic = FRONT_MSG_MAGIC;
	m->what = what;
	m->index = index;
	return m;
}

void front_msg_free(struct front_msg *m)
{
	CHECK_OBJ_NOTNULL(m, FRONT_MSG_MAGIC);
	m->magic = 0;
	free(m);
}

static void tell_main(struct front *fr, enum front_what what)
{
	AZ(chan_send(fr->sh.events, &front_msg_new(what, fr->index)->link));
}

static int64_t mono_ms(struct front *fr)
{
	return loop_mono_ms(fr->base);
}

/* Draining: tells the main loop once nothing is in flight; stopping: ends
 * the loop once every waiter is answered. */
static void check_idle(struct front *fr)
{
	int idle = fr->n_waiting == 0 && conns_busy(fr->conns) == 0;

	/* a client that connected just before the drain began is about to ask:
	 * its request is answered, not cut off, for DRAIN_ARRIVING_MS */
	if (idle && fr->draining && !fr->drained_told &&
	    mono_ms(fr) - fr->drain_began_ms < DRAIN_ARRIVING_MS &&
	    conns_arriving(fr->conns) > 0)
		idle = 0;

	if (fr->draining && !fr->drained_told && idle) {
		fr->drained_told = 1;
		tell_main(fr, FRONT_DRAINED);
	}
	if (fr->stopping && fr->n_waiting == 0)
		event_base_loopbreak(fr->base);
}

static void on_conns_changed(void *arg)
{
	struct front *fr = arg;

	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	if (fr->draining || fr->stopping)
		check_idle(fr);
}

/* The client of a waiting request left: the fetch layer may drop a fetch
 * nobody waits for any more. */
static void on_client_gone(void *user, void *arg)
{
	struct waiter *w = user;
	struct front *fr = arg;
	struct fetch_ask *a;

	CHECK_OBJ_NOTNULL(w, WAITER_MAGIC);
	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	if (w->gone)
		return;
	w->gone = 1;
	a = fetch_ask_new(FETCH_GONE, "", 0, NULL);
	memcpy(a->id, w->id, STORE_ID_LEN);
	a->reply = fr->inbox;
	a->token = (uint64_t)(uintptr_t)w;
	if (chan_send(fetcher_inbox(fr->sh.fetcher), &a->link) != 0)
		fetch_ask_free(a); /* the fetcher is swamped: it finds out later */
}

/* Adds Connection: close while draining (the answer ends the connection). */
static void closing(struct front *fr, struct evhttp_request *req)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);

	if ((fr->draining || fr->stopping) && evhttp_find_header(out, "Connection") == NULL)
		evhttp_add_header(out, "Connection", "close");
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "OTHER";
}

/* The client's X-Request-Id when it is one we can pass on (1 to
 * FETCH_REQUEST_ID_MAX of [A-Za-z0-9._:-]), else a new one: 16 hex digits,
 * this loop's random seed and its count. */
static void request_id_of(struct front *fr, struct evhttp_request *req,
			  char out[FETCH_REQUEST_ID_MAX + 1])
{
	const char *given = evhttp_find_header(evhttp_request_get_input_headers(req),
					       "X-Request-Id");
	size_t n = 0;

	for (; given && given[n] && n < FETCH_REQUEST_ID_MAX; n++) {
		unsigned char c = (unsigned char)given[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-'))
			break;
	}
	if (given && n > 0 && given[n] == '\0') {
		memcpy(out, given, n + 1);
		return;
	}
	snprintf(out, FETCH_REQUEST_ID_MAX + 1, "%08x%08x", fr->rid_seed, ++fr->rid_count);
}

/*
 * The client's address: the TCP peer, or with --trusted-proxies and a
 * trusted peer, the rightmost untrusted X-Forwarded-For hop (policy/proxy).
 * 0, or -1 when the connection is gone (out "").
 */
static int client_address(struct front *fr, struct evhttp_request *req, char *out,
			  size_t out_size)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const char *xff[XFF_HEADERS_MAX];
	char *addr = NULL;
	ev_uint16_t port = 0;
	size_t n = 0;

	out[0] = '\0';
	if (evcon)
		evhttp_connection_get_peer(evcon, &addr, &port);
	if (addr == NULL)
		return -1;
	if (fr->cfg->trusted_proxies.n == 0) {
		snprintf(out, out_size, "%s", addr);
		return 0;
	}
	for (struct evkeyval *kv = evhttp_request_get_input_headers(req)->tqh_first; kv;
	     kv = kv->next.tqe_next) {
		if (evutil_ascii_strcasecmp(kv->key, "X-Forwarded-For") != 0)
			continue;
		if (n == XFF_HEADERS_MAX) { /* keep the last ones: they are the proxies' */
			memmove(xff, xff + 1, (XFF_HEADERS_MAX - 1) * sizeof(xff[0]));
			n--;
		}
		xff[n++] = kv->value;
	}
	proxy_client(&fr->cfg->trusted_proxies, addr, xff, n, out, out_size);
	return 0;
}

/* A request's head was read: its clock, its id (sent back on every answer),
 * and with the access log what it will show. */
static void begin_request(struct front *fr, struct evhttp_request *req, struct req_ctx *ctx)
{
	ctx->start_ns = mono_ns();
	request_id_of(fr, req, ctx->request_id);
	evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id",
			  ctx->request_id);
	if (fr->cfg->instance_name[0])
		evhttp_add_header(evhttp_request_get_output_headers(req), "X-Served-By",
				  fr->cfg->instance_name);
	ctx->key_id[0] = ctx->caller[0] = ctx->query[0] = '\0';
	if (fr->alog) {
		const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
		const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

		snprintf(ctx->method, sizeof(ctx->method), "%s",
			 method_name(evhttp_request_get_command(req)));
		snprintf(ctx->path, sizeof(ctx->path), "%s", path ? path : "");
		client_address(fr, req, ctx->client, sizeof(ctx->client));
	} else {
		ctx->method[0] = ctx->path[0] = ctx->client[0] = '\0';
	}
}

/* A request was answered (note): counted, and logged. */
/* Counts a contacts request in the metrics (answer_count_fn: as its answer
 * is about to be written, or at the latest in finish_request). */
static void count_request(struct front *fr, const struct req_ctx *ctx,
			  const struct answer_note *note)
{
	int64_t us = (mono_ns() - ctx->start_ns) / 1000;

	if (!note->contacts) /* the metrics count contacts requests only */
		return;
	metrics_request(fr->mf, note->status, note->cache, us > 0 ? (uint64_t)us : 0);
	if (ctx->caller[0])
		metrics_caller(fr->sh.metrics, ctx->caller, note->cache);
}

static void on_count(void *arg, struct answer_note *note)
{
	struct front *fr = arg;

	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	AN(fr->counting);
	count_request(fr, fr->counting, note);
}

static void finish_request(struct front *fr, const struct req_ctx *ctx,
			   const struct answer_note *note)
{
	int64_t us = (mono_ns() - ctx->start_ns) / 1000;
	struct access_rec r;
	struct timespec now;

	if (!note->counted)
		count_request(fr, ctx, note);
	if (fr->alog == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	r.time_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	r.request_id = ctx->request_id;
	r.method = ctx->method;
	r.path = ctx->path;
	r.query = ctx->query[0] ? ctx->query : NULL;
	r.code = note->status;
	r.cache = metrics_cache_name(note->cache);
	r.bytes = note->bytes;
	r.duration_ms = (double)us / 1000.0;
	r.upstream_ms = note->upstream_ms;
	r.upstream_code = note->upstream_status;
	r.key_id = ctx->key_id[0] ? ctx->key_id : NULL;
	r.caller = ctx->caller[0] ? ctx->caller : NULL;
	r.client = ctx->client[0] ? ctx->client : NULL;
	access_log_add(fr->alog, &r);
}

/* A landing: answers its waiter. */
static void on_landing(struct front *fr, struct fetch_landing *l)
{
	struct waiter *w = (struct waiter *)(uintptr_t)l->token;
	struct waited how;

	CHECK_OBJ_NOTNULL(w, WAITER_MAGIC);
	CHECK(w->fr == fr);
	how.id = w->id;
	how.key_id = w->ctx.key_id;
	how.refresh = w->refresh;
	how.revalidate = w->revalidate;
	how.had_stale = w->had_stale;
	how.collapsed = l->collapsed;
	conns_set_user(fr->conns, w->req, NULL);
	closing(fr, w->req);
	{
		struct answer_note note = {.contacts = 1, .cache = MC_NONE, .upstream_ms = -1};

		answerer_note(fr->as, &note);
		fr->counting = &w->ctx;
		answer_landed(fr->as, w->req, &how, l->f);
		fr->counting = NULL;
		answerer_note(fr->as, NULL);
		finish_request(fr, &w->ctx, &note);
	}
	w->magic = 0;
	free(w);
	fetch_landing_free(l);
	fr->n_waiting--;
	check_idle(fr);
}

static void conn_limits_of(const struct front *fr, const struct cg_config *cfg,
			   struct conn_limits *lim);

/* Closes this loop's listening sockets (draining, stopping). A socket
 * handed over to a new gateway stays open in it: connections keep queuing
 * in its backlog. */
static void stop_listening(struct front *fr)
{
	if (fr->n_bound == 0)
		return;
	conns_forget_listeners(fr->conns);
	for (size_t i = 0; i < fr->n_bound; i++)
		evhttp_del_accept_socket(fr->http, fr->bound[i]);
	fr->n_bound = 0;
}

static void on_control(struct front *fr, struct front_msg *m)
{
	switch (m->what) {
	case FRONT_DRAIN:
		if (!fr->draining) {
			stop_listening(fr);
			fr->drain_began_ms = mono_ms(fr);
		}
		fr->draining = 1;
		check_idle(fr);
		break;
	case FRONT_STOP:
		stop_listening(fr);
		fr->stopping = 1;
		check_idle(fr);
		break;
	case FRONT_CONFIG: {
		struct conn_limits lim;
		struct front_msg *done = front_msg_new(FRONT_CONFIGURED, fr->index);
		struct timeval tv = {m->cfg->client_timeout_ms / 1000,
				     (m->cfg->client_timeout_ms % 1000) * 1000};

		fr->cfg = m->cfg;
		answerer_set_config(fr->as, m->cfg);
		conn_limits_of(fr, m->cfg, &lim);
		conns_set_limits(fr->conns, &lim);
		if (fr->http) { /* NULL once stopped */
			evhttp_set_max_headers_size(fr->http,
						    (ev_ssize_t)m->cfg->max_header_bytes);
			evhttp_set_timeout_tv(fr->http, &tv); /* new connections */
		}
		done->cfg = m->cfg;
		AZ(chan_send(fr->sh.events, &done->link));
		break;
	}
	default:
		CHECK(!"a front message of an unknown kind");
	}
	front_msg_free(m);
}

static void on_inbox(struct chan_msg *m, void *arg)
{
	struct front *fr = arg;

	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	if (m->kind == MSG_LANDING)
		on_landing(fr, (struct fetch_landing *)m);
	else if (m->kind == MSG_FRONT)
		on_control(fr, (struct front_msg *)m);
	else
		CHECK(!"a message of an unknown kind in a front's inbox");
}

static void beat(struct front *fr)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	atomic_store_explicit(&fr->heartbeat, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
			      memory_order_relaxed);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct front *fr = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	answerer_tick(fr->as);
	if (fr->n_waiting > 0)
		conns_sweep(fr->conns);
	if (fr->alog)
		access_log_flush(fr->alog);
	atomic_store_explicit(&fr->mf->connections, (int64_t)conns_count(fr->conns),
			      memory_order_relaxed);
	if (fr->draining)
		check_idle(fr); /* the wait for arriving requests ends */
	beat(fr);
}

int64_t front_heartbeat(const struct front *fr)
{
	return atomic_load_explicit(&fr->heartbeat, memory_order_relaxed);
}

/* Reads Cache-Control request directives we act on (enum cache_control);
 * without a Cache-Control field, Pragma: no-cache is no-cache (RFC 9111,
 * 5.4: Fetch sends both with a conditional request). */
static int request_cache_control(struct evhttp_request *req)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	int cc = 0, seen = 0, pragma = 0;

	for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
		const char *v = kv->value;

		if (evutil_ascii_strcasecmp(kv->key, "Pragma") == 0) {
			for (; *v && !pragma; v++)
				pragma = evutil_ascii_strncasecmp(v, "no-cache", 8) == 0 &&
					 (v == kv->value || v[-1] == ' ' || v[-1] == ',' ||
					  v[-1] == '\t');
			continue;
		}
		if (evutil_ascii_strcasecmp(kv->key, "Cache-Control") != 0)
			continue;
		seen = 1;
		while (*v) {
			size_t len;

			while (*v == ' ' || *v == '\t' || *v == ',')
				v++;
			len = strcspn(v, ", \t");
			if (len == 8 && evutil_ascii_strncasecmp(v, "no-cache", 8) == 0)
				cc |= CC_NO_CACHE;
			else if (len == 14 &&
				 evutil_ascii_strncasecmp(v, "only-if-cached", 14) == 0)
				cc |= CC_ONLY_IF_CACHED;
			v += len;
		}
	}
	if (!seen && pragma)
		cc |= CC_NO_CACHE;
	return cc;
}

/* Finds the x-api-key header. Returns 0 with *key set, or -1 with a reason. */
static int find_api_key(struct evhttp_request *req, const char **key,
			const char **why)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *found = NULL;

	for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
		if (evutil_ascii_strcasecmp(kv->key, "x-api-key") != 0)
			continue;
		if (found) {
			*why = "x-api-key header appears more than once";
			return -1;
		}
		found = kv->value;
	}
	if (found == NULL || found[0] == '\0') {
		*why = "missing x-api-key header";
		return -1;
	}
	if (strlen(found) > FETCH_API_KEY_MAX) {
		*why = "x-api-key header is too long";
		return -1;
	}
	for (const char *c = found; *c; c++) {
		if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e) {
			*why = "x-api-key header has characters an API key cannot have";
			return -1;
		}
	}
	*key = found;
	return 0;
}

/* With --caller-header: the hash of the caller's id (its own bucket), or
 * NULL when the header is absent (such requests share the key's bucket
 * only). */
static const uint8_t *caller_hash(struct front *fr, struct evhttp_request *req,
				  uint8_t out[STORE_KEYHASH_LEN])
{
	const char *id;

	if (fr->cfg->caller_header[0] == '\0')
		return NULL;
	id = evhttp_find_header(evhttp_request_get_input_headers(req),
				fr->cfg->caller_header);
	if (id == NULL || id[0] == '\0')
		return NULL;
	store_hash_api_key(id, strlen(id), out);
	return out;
}

/* With --client-rate: the hash of the client's address (its own bucket).
 * Returns 0 when the connection is gone. */
static int client_hash(struct front *fr, struct evhttp_request *req,
		       uint8_t out[STORE_KEYHASH_LEN])
{
	char addr[PROXY_ADDR_MAX];

	if (client_address(fr, req, addr, sizeof(addr)) != 0)
		return 0;
	store_hash_api_key(addr, strlen(addr), out);
	return 1;
}

/* An ask for the fetch layer about query q of key `key`. */
static struct fetch_ask *make_ask(struct front *fr, struct evhttp_request *req,
				  enum fetch_ask_kind kind,
				  const struct query *q, const char *key,
				  const uint8_t id[STORE_ID_LEN],
				  const uint8_t keyhash[STORE_KEYHASH_LEN],
				  const uint8_t *caller)
{
	struct fetch_ask *a = fetch_ask_new(kind, q->canonical, q->canonical_len, key);
	struct ttl_policy ttl = {
		.ttl_s = fr->cfg->ttl_s,
		.ttl_cursor_s = fr->cfg->ttl_cursor_s,
		.ttl_wide_s = fr->cfg->ttl_wide_s,
		.wide_days = (uint32_t)fr->cfg->ttl_wide_days,
	};

	memcpy(a->id, id, STORE_ID_LEN);
	memcpy(a->keyhash, keyhash, STORE_KEYHASH_LEN);
	if (caller) {
		memcpy(a->caller, caller, STORE_KEYHASH_LEN);
		a->has_caller = 1;
	}
	a->ttl_s = ttl_seconds(&ttl, q);
	a->reply = fr->inbox;
	if (fr->cfg->client_rate > 0 && client_hash(fr, req, a->client))
		a->has_client = 1;
	return a;
}

/* The miss path: a waiter for `id`, and an ask for its landing. */
static void wait_for_fetch(struct front *fr, struct evhttp_request *req,
			   const struct req_ctx *ctx, struct fetch_ask *a, int cc, int had_stale)
{
	struct waiter *w = calloc(1, sizeof(*w));

	AN(w);
	w->magic = WAITER_MAGIC;
	w->fr = fr;
	w->req = req;
	w->ctx = *ctx;
	memcpy(a->request_id, ctx->request_id, sizeof(a->request_id));
	memcpy(w->id, a->id, STORE_ID_LEN);
	w->refresh = (cc & CC_NO_CACHE) != 0;
	w->revalidate = w->refresh && fr->cfg->client_no_cache == CNC_REVALIDATE;
	a->refresh = w->refresh;
	if (w->revalidate)
		a->young_ms = (int64_t)fr->cfg->no_cache_min_age_s * 1000;
	w->had_stale = had_stale;
	a->token = (uint64_t)(uintptr_t)w;
	if (chan_send(fetcher_inbox(fr->sh.fetcher), &a->link) != 0) {
		fetch_ask_free(a);
		w->magic = 0;
		free(w);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		answer_error(fr->as, req, 503, "overloaded", NULL, NULL,
			     "the gateway has too many upstream requests queued");
		return;
	}
	conns_set_user(fr->conns, req, w);
	fr->n_waiting++;
}

static void handle_contacts(struct front *fr, struct evhttp_request *req,
			    struct req_ctx *ctx)
{
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *raw = evhttp_uri_get_query(uri);
	const char *key, *why;
	struct query q;
	struct query_error qerr;
	uint8_t keyhash[STORE_KEYHASH_LEN], id[STORE_ID_LEN], callerbuf[STORE_KEYHASH_LEN];
	const uint8_t *caller;
	struct serve_how how = {.max_stale_ms = -1};
	enum served served = NOT_STORED;
	int cc, offline;

	if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
				  "GET, HEAD");
		answer_error(fr->as, req, 405, "method_not_allowed", NULL, NULL,
			     "only GET and HEAD are allowed on " CONTACTS_PATH);
		return;
	}
	if (fr->cfg->caller_header[0]) {
		const char *who = evhttp_find_header(evhttp_request_get_input_headers(req),
						     fr->cfg->caller_header);

		metrics_sanitise(ctx->caller, sizeof(ctx->caller), who);
	}
	if (fr->alog && raw) /* the raw query; the canonical one replaces it */
		snprintf(ctx->query, sizeof(ctx->query), "%.*s", (int)sizeof(ctx->query) - 1,
			 raw);
	if (find_api_key(req, &key, &why) != 0) {
		answer_error(fr->as, req, 401, "unauthorized", NULL, NULL, why);
		return;
	}
	if (query_normalise(raw, raw ? strlen(raw) : 0, &q, &qerr) != QUERY_OK) {
		answer_error(fr->as, req, 400, "invalid_parameter", "parameter", qerr.parameter,
			     qerr.message);
		return;
	}
	if (q.ignored[0] != '\0')
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "X-Gateway-Ignored-Parameters", q.ignored);
	store_hash_api_key(key, strlen(key), keyhash);
	store_entry_id(keyhash, q.canonical, q.canonical_len, id);
	access_key_id(keyhash, ctx->key_id);
	if (fr->alog) /* cut short past the log's room for it */
		snprintf(ctx->query, sizeof(ctx->query), "%.*s", (int)sizeof(ctx->query) - 1,
			 q.canonical);
	cc = request_cache_control(req);
	if ((cc & CC_NO_CACHE) && fr->cfg->client_no_cache == CNC_IGNORE)
		cc &= ~CC_NO_CACHE;
	offline = fetcher_offline(fr->sh.fetcher, mono_ms(fr));
	if (offline) {
		how.max_stale_ms = INT64_MAX;
		how.detail = "offline";
	} else if (fr->cfg->stale_while_revalidate_s > 0 && !(cc & CC_NO_CACHE)) {
		how.max_stale_ms = (int64_t)fr->cfg->stale_while_revalidate_s * 1000;
		how.detail = "stale-while-revalidate";
	}
	if (!(cc & CC_NO_CACHE) || offline) {
		struct fetch_ask *refresh = NULL;

		/* answering may free the request, its key and caller header with
		 * it: a refresh behind (stale-while-revalidate) is made first */
		if (how.detail != NULL && !offline) {
			refresh = make_ask(fr, req, FETCH_REFRESH, &q, key, id, keyhash,
					   caller_hash(fr, req, callerbuf));
			memcpy(refresh->request_id, ctx->request_id, sizeof(refresh->request_id));
		}
		served = answer_stored(fr->as, req, id, &how);
		if (served == SERVED && how.served_stale && refresh) {
			if (chan_send(fetcher_inbox(fr->sh.fetcher), &refresh->link) != 0)
				fetch_ask_free(refresh); /* swamped: the next one asks */
			return;
		}
		fetch_ask_free(refresh);
		if (served == SERVED)
			return;
	} else if (fr->cfg->client_no_cache == CNC_REVALIDATE && fr->cfg->no_cache_min_age_s) {
		/* no-cache under revalidate: an answer this young is the one a
		 * refresh would bring (a Fetch conditional request then gets its
		 * 304 from here); an older one is refreshed */
		struct serve_how young = {
			.max_stale_ms = -1,
			.young_ms = (int64_t)fr->cfg->no_cache_min_age_s * 1000,
		};

		if ((served = answer_stored(fr->as, req, id, &young)) == SERVED)
			return;
	}
	if (cc & CC_ONLY_IF_CACHED) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Status",
				  ANSWER_STATUS_NAME "; fwd=miss; detail=only-if-cached");
		answer_error(fr->as, req, 504, "not_cached", NULL, NULL,
			     "only-if-cached was asked and no fresh answer is stored");
		return;
	}
	caller = caller_hash(fr, req, callerbuf);
	wait_for_fetch(fr, req, ctx, make_ask(fr, req, FETCH_MISS, &q, key, id, keyhash, caller),
		       cc, served == TOO_STALE);
}

static void handle_health(struct front *fr, struct evhttp_request *req)
{
	struct timespec now;
	struct evbuffer *body = evbuffer_new();

	AN(body);
	clock_gettime(CLOCK_MONOTONIC, &now);
	evbuffer_add_printf(body,
			    "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_seconds\":%lld}",
			    CG_VERSION, (long long)(now.tv_sec - fr->started.tv_sec));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  ANSWER_JSON_TYPE);
	answer_head_length(req, evbuffer_get_length(body));
	answer_send(fr->as, req, 200, body);
	evbuffer_free(body);
}

/* Readiness: 200 while serving, 503 while draining or stopping; the body
 * says what a load balancer or an operator wants to know. */
static void handle_ready(struct front *fr, struct evhttp_request *req)
{
	struct metrics_fetch *mx = &fr->sh.metrics->fetch;
	struct evbuffer *body = evbuffer_new();
	int64_t mono = mono_ms(fr);
	int ready = !fr->draining && !fr->stopping;

	AN(body);
	evbuffer_add_printf(body,
			    "{\"status\":\"%s\",\"offline\":%s,\"breaker\":\"%s\","
			    "\"keys_blocked\":%lld,\"queue_waiting\":%lld}",
			    ready ? "ready" : "draining",
			    fetcher_offline(fr->sh.fetcher, mono) ? "true" : "false",
			    fetcher_breaker_open(fr->sh.fetcher, mono) ? "open" : "closed",
			    (long long)metrics_gauge_get(&mx->keys_blocked),
			    (long long)metrics_gauge_get(&mx->queue_waiting));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  ANSWER_JSON_TYPE);
	answer_head_length(req, evbuffer_get_length(body));
	answer_send(fr->as, req, ready ? 200 : 503, body);
	evbuffer_free(body);
}

/* Prometheus' text exposition of every loop's and the fetch layer's counters. */
static void handle_metrics(struct front *fr, struct evhttp_request *req)
{
	struct evbuffer *body = evbuffer_new();

	AN(body);
	metrics_write(fr->sh.metrics, body);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	answer_head_length(req, evbuffer_get_length(body));
	answer_send(fr->as, req, 200, body);
	evbuffer_free(body);
}

/* A control byte (below 0x20, or DEL) anywhere in the request target. */
static int has_control_byte(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return 1;
	return 0;
}

/* Routes a request to its handler (which answers it or makes a waiter). */
static void route(struct front *fr, struct evhttp_request *req, enum conn_verdict v,
		  struct req_ctx *ctx, struct answer_note *note)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	int get = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;

	if (v == CONN_BAD_HEAD || has_control_byte(evhttp_request_get_uri(req))) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		answer_error(fr->as, req, 400, "bad_request", NULL, NULL,
			     "the request line or a header holds a control byte");
		return;
	}
	if (fr->stopping) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		answer_error(fr->as, req, 503, "shutting_down", NULL, NULL,
			     "the gateway is shutting down");
		return;
	}
	if (path == NULL)
		path = "";
	if (strcmp(path, CONTACTS_PATH) == 0) {
		note->contacts = 1;
		handle_contacts(fr, req, ctx);
	}
	else if (strcmp(path, HEALTH_PATH) == 0 && get)
		handle_health(fr, req);
	else if (strcmp(path, READY_PATH) == 0 && get)
		handle_ready(fr, req);
	else if (strcmp(path, METRICS_PATH) == 0 && get)
		handle_metrics(fr, req);
	else
		answer_error(fr->as, req, 404, "not_found", NULL, NULL,
			     "no such resource; the gateway serves GET " CONTACTS_PATH);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct front *fr = arg;
	struct answer_note note = {.cache = MC_NONE, .upstream_ms = -1};
	struct req_ctx ctx;
	enum conn_verdict v;

	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	v = conns_request(fr->conns, req);
	begin_request(fr, req, &ctx);
	closing(fr, req);
	answerer_note(fr->as, &note);
	fr->counting = &ctx;
	route(fr, req, v, &ctx, &note);
	fr->counting = NULL;
	answerer_note(fr->as, NULL);
	if (note.status != 0) /* answered now, not waiting for a landing */
		finish_request(fr, &ctx, &note);
}

/* --max-connections is for every loop together: the count is shared. */
static void conn_limits_of(const struct front *fr, const struct cg_config *cfg,
			   struct conn_limits *lim)
{
	lim->max = cfg->max_connections;
	lim->total = fr->sh.conns_total;
	lim->header_timeout_ms = cfg->client_header_timeout_ms;
	lim->keepalive_timeout_ms = cfg->keepalive_timeout_ms;
}

/*
 * Listens on host:port with SO_REUSEPORT (each front its own socket, the
 * kernel spreading connections over them). The first front also checks
 * the port is free: with SO_REUSEPORT another process's socket could
 * otherwise share it silently.
 */
static struct evconnlistener *listen_on(struct front *fr, const char *host, unsigned port,
					char *err, size_t err_size)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	struct evconnlistener *l = NULL;
	char service[8];
	int rc;

	snprintf(service, sizeof(service), "%u", port);
	rc = getaddrinfo(host, service, &hints, &ai);
	if (rc != 0) {
		snprintf(err, err_size, "cannot listen on %s:%u: %s", host, port,
			 gai_strerror(rc));
		return NULL;
	}
	if (fr->index == 0 && port != 0) {
		int probe = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int one = 1;

		if (probe >= 0) {
			setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(probe, ai->ai_addr, ai->ai_addrlen) != 0) {
				snprintf(err, err_size, "cannot listen on %s:%u: %s", host,
					 port, strerror(errno));
				close(probe);
				freeaddrinfo(ai);
				return NULL;
			}
			close(probe);
		}
	}
	l = evconnlistener_new_bind(fr->base, NULL, NULL,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
					    LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT,
				    LISTEN_BACKLOG, ai->ai_addr, (int)ai->ai_addrlen);
	if (l == NULL)
		snprintf(err, err_size, "cannot listen on %s:%u: %s", host, port,
			 strerror(errno));
	freeaddrinfo(ai);
	return l;
}

/* An evconnlistener on a dup of an inherited listening socket. */
static struct evconnlistener *inherit(struct front *fr, int fd0, char *err, size_t err_size)
{
	struct evconnlistener *l = NULL;
	int fd = dup(fd0);

	/* evconnlistener_new takes the socket as it is: a blocking one would
	 * block the loop in its accept(2) loop */
	if (fd >= 0 && evutil_make_socket_nonblocking(fd) != 0) {
		close(fd);
		fd = -1;
	}
	if (fd >= 0)
		l = evconnlistener_new(fr->base, NULL, NULL,
				       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (l == NULL) {
		snprintf(err, err_size, "cannot accept on an inherited socket: %s",
			 strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	return l;
}

/* evhttp serves what `l` accepts; the connection set counts it. */
static void bind_listener(struct front *fr, struct evconnlistener *l)
{
	CHECK(fr->n_bound < FRONT_LISTENERS_MAX);
	fr->bound[fr->n_bound] = evhttp_bind_listener(fr->http, l);
	AN(fr->bound[fr->n_bound]);
	fr->bound_fd[fr->n_bound++] = evconnlistener_get_fd(l);
	conns_add_listener(fr->conns, l);
}

size_t front_listen_fds(const struct front *fr, int *fds, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < fr->n_bound && n < max; i++)
		fds[n++] = fr->bound_fd[i];
	return n;
}

struct front *front_new(const struct front_shared *sh, unsigned index, unsigned port,
			char *err, size_t err_size)
{
	struct front *fr = calloc(1, sizeof(*fr));
	const struct cg_config *cfg = sh->cfg;
	struct event_config *ecfg;
	struct evconnlistener *l = NULL;
	struct store_reader *reader;
	struct conn_limits lim;
	struct conn_events ev = {on_conns_changed, on_client_gone, fr};
	struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	AN(fr);
	fr->magic = FRONT_MAGIC;
	fr->index = index;
	fr->sh = *sh;
	fr->cfg = cfg;
	clock_gettime(CLOCK_MONOTONIC, &fr->started);
	beat(fr);
	/* the changelist folds an add and a delete of the same event in one
	 * loop turn into nothing: fewer epoll_ctl calls per answer */
	ecfg = event_config_new();
	AN(ecfg);
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	fr->base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	AN(fr->base);
	fr->http = evhttp_new(fr->base);
	AN(fr->http);
	conn_limits_of(fr, cfg, &lim);
	fr->inbox = chan_new(fr->base, SIZE_MAX, on_inbox, fr);
	fr->tick = event_new(fr->base, -1, EV_PERSIST, on_tick, fr);
	reader = store_reader_new(sh->store);
	if (fr->inbox == NULL || fr->tick == NULL || reader == NULL) {
		snprintf(err, err_size, "cannot set up front loop %u", index);
		store_reader_free(reader);
		front_free(fr);
		return NULL;
	}
	fr->as = answerer_new(fr->base, cfg, reader, sh->lru);
	fr->mf = sh->metrics->fronts[index];
	answerer_set_metrics(fr->as, fr->mf);
	answerer_set_counter(fr->as, on_count, fr);
	if (sh->access_fd >= 0)
		fr->alog = access_log_new(sh->access_fd);
	if (getrandom(&fr->rid_seed, sizeof(fr->rid_seed), 0) != sizeof(fr->rid_seed))
		fr->rid_seed = (uint32_t)time(NULL) ^ (index * 2654435761u);
	fr->conns = conns_new(fr->base, fr->http, &lim, &ev);
	event_add(fr->tick, &tv);
	evhttp_set_gencb(fr->http, on_request, fr);
	evhttp_set_allowed_methods(fr->http,
				   EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
				   EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
				   EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(fr->http, NULL);
	evhttp_set_max_headers_size(fr->http, (ev_ssize_t)cfg->max_header_bytes);
	evhttp_set_max_body_size(fr->http, REQUEST_BODY_MAX);
	tv.tv_sec = cfg->client_timeout_ms / 1000;
	tv.tv_usec = (cfg->client_timeout_ms % 1000) * 1000;
	evhttp_set_timeout_tv(fr->http, &tv);

	if (sh->n_listen_fds > 0) {
		/* inherited sockets (systemd's, or a handover's): this loop takes
		 * every n-th, or shares one when there are fewer than loops */
		size_t n = sh->n_listen_fds, loops = (size_t)cfg->threads;

		if (n >= loops) {
			for (size_t j = index; j < n; j += loops) {
				if ((l = inherit(fr, sh->listen_fds[j], err, err_size)) == NULL)
					break;
				bind_listener(fr, l);
			}
		} else if ((l = inherit(fr, sh->listen_fds[index % n], err, err_size)) != NULL) {
			bind_listener(fr, l);
		}
	} else if ((l = listen_on(fr, cfg->listen.host, port, err, err_size)) != NULL) {
		bind_listener(fr, l);
	}
	if (l == NULL) {
		front_free(fr);
		return NULL;
	}
	l = fr->n_bound > 0 ? evhttp_bound_socket_get_listener(fr->bound[0]) : NULL;
	AN(l);
	fr->port = port;
	if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sslen) == 0) {
		if (ss.ss_family == AF_INET)
			fr->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			fr->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return fr;
}

unsigned front_port(const struct front *fr)
{
	return fr->port;
}

static void *front_main(void *arg)
{
	struct front *fr = arg;

	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	conns_own_thread(fr->conns);
	event_base_dispatch(fr->base);
	/* every waiter is answered: close the connections, and run the loop
	 * once more so that libevent finalises their buffers (which ends the
	 * pins of answers still being written) */
	evhttp_free(fr->http);
	fr->http = NULL;
	fr->n_bound = 0;
	event_base_loop(fr->base, EVLOOP_NONBLOCK);
	conns_own_thread(NULL);
	tell_main(fr, FRONT_STOPPED);
	return NULL;
}

int front_start(struct front *fr, char *err, size_t err_size)
{
	int rc = pthread_create(&fr->thread, NULL, front_main, fr);

	if (rc != 0) {
		snprintf(err, err_size, "cannot start front thread %u: %s", fr->index,
			 strerror(rc));
		return -1;
	}
	fr->running = 1;
	return 0;
}

void front_post(struct front *fr, struct front_msg *m)
{
	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	AZ(chan_send(fr->inbox, &m->link));
}

void front_free(struct front *fr)
{
	if (fr == NULL)
		return;
	CHECK_OBJ_NOTNULL(fr, FRONT_MAGIC);
	if (fr->running)
		AZ(pthread_join(fr->thread, NULL));
	CHECK(fr->n_waiting == 0);
	if (fr->http)
		evhttp_free(fr->http); /* never started: no request came */
	if (fr->tick)
		event_free(fr->tick);
	if (fr->inbox)
		chan_free(fr->inbox);
	conns_free(fr->conns);
	answerer_free(fr->as);
	access_log_free(fr->alog); /* flushes */
	if (fr->base)
		event_base_free(fr->base);
	fr->magic = 0;
	free(fr);
}
