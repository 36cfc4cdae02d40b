/*
 * front: see front.h.
 *
 * Connection accounting. libevent 2.1's evhttp has no connection limit and
 * no hook at accept time, so the front counts connections when their first
 * request arrives: a table indexed by socket fd remembers which evhttp
 * connection owns each fd; a request on a connection not in the table is a
 * new connection, which is registered (close callback, TCP_NODELAY) or, past
 * max_connections, answered 503 and closed. Connections that never send a
 * request are closed by the client timeout.
 *
 * A request for the contacts endpoint goes: validate and normalise (policy)
 * -> entry id = SHA-256(SHA-256(key) || canonical query) -> serve_hit (a
 * fresh stored entry, zero-copy from the LMDB map) -> else wait_on_flight:
 * join the flight for the id, or open it and start its upstream fetch ->
 * on_fetched stores a complete 200 JSON array -> flight_land wakes every
 * waiter (on_landed answers each). Requests waiting on a flight are counted
 * in n_waiting; each is answered exactly once, by on_landed. If a client
 * goes away meanwhile, evhttp detaches its request and frees it when we
 * answer, so the answer path is the same either way, and the fetch goes on
 * for the others.
 */
#include "gateway/front.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "cache/store.h"
#include "gateway/admit.h"
#include "gateway/flight.h"
#include "gateway/log.h"
#include "gateway/upstream.h"
#include "policy/json.h"
#include "policy/query.h"
#include "policy/ttl.h"

#define FRONT_MAGIC 0x46524e54u
#define WAITER_MAGIC 0x57414954u
#define FETCH_MAGIC 0x46544348u
#define CONTACTS_PATH "/api/public/contacts"
#define HEALTH_PATH "/healthz"
#define API_KEY_MAX 512          /* longest x-api-key accepted */
#define REQUEST_BODY_MAX 1024    /* GET carries no body; refuse big ones */
#define JSON_TYPE "application/json; charset=utf-8"
#define CACHE_STATUS_NAME "contacts-gateway"
#define LRU_SLOTS 65536          /* last-use memory for eviction, a power of 2 */
#define EVICT_SCAN 1024          /* entries one eviction pass looks at */
#define STORE_ATTEMPTS 4         /* put, evict, put ... before giving up */
#define WRITE_CHUNK_MAX (1 << 20) /* bytes written per loop turn and connection */

/* Why a flight landed without asking the upstream (flight_result.refusal):
 * admit's reasons (enum admit_refusal), and these. */
enum {
	REFUSED_OFFLINE = 100, /* --offline, or the breaker open with offline-when-open */
	REFUSED_START,         /* curl would not start the request */
	REFUSED_SHUTDOWN,      /* the gateway is stopping */
};

enum cache_control {
	CC_NO_CACHE = 1,       /* refresh from upstream (still coalesced) */
	CC_ONLY_IF_CACHED = 2, /* answer from the cache or 504 */
};

/* A client request waiting for a flight to land. */
struct waiter {
	unsigned magic;
	struct front *fr;
	struct evhttp_request *req;
	uint8_t id[STORE_ID_LEN];
	int refresh;   /* asked with no-cache */
	int had_stale; /* an expired answer is stored (fwd=stale, not miss) */
};

/*
 * The upstream fetch behind one flight, and what to store its answer as.
 * States: asking (admission queued: ticket queued, uf NULL) -> running (uf
 * set) -> backing off before a retry (retry timer pending, uf NULL) ->
 * running ... -> landed (freed). The API key is kept, in memory only, for
 * the fetch's own requests, and wiped when it is freed.
 */
struct fetch {
	unsigned magic;
	struct front *fr;
	struct flight *flight;
	struct upstream_fetch *uf;
	struct admit_ticket ticket;
	struct event *retry_timer; /* NULL unless backing off */
	unsigned attempts;         /* upstream requests made */
	uint8_t id[STORE_ID_LEN];
	uint8_t keyhash[STORE_KEYHASH_LEN];
	uint8_t caller[STORE_KEYHASH_LEN]; /* with has_caller: its quota's key */
	int has_caller;
	uint32_t ttl_s;
	char api_key[API_KEY_MAX + 1];
	size_t canonical_len;
	LIST_ENTRY(fetch) link;
	char canonical[]; /* NUL-terminated */
};

/* A tracked client connection: who owns the fd, answers it is still writing. */
struct conn_slot {
	struct evhttp_connection *evcon;
	size_t flushing;
};

/* Approximate last use of entries (direct-mapped by id), for eviction. */
struct lru_slot {
	uint64_t tag;
	int64_t used_ms;
};

struct front {
	unsigned magic;
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct upstream *up;
	struct store *store;
	struct flight_table *flights;
	struct ttl_policy ttl;
	const struct cg_config *cfg;
	unsigned port;
	struct timespec started;
	/* connection accounting, see the file comment */
	struct conn_slot *conns;
	size_t conns_size;
	long n_conns;
	/* upstream fetches in progress, one per open flight */
	LIST_HEAD(, fetch) fetches;
	size_t n_waiting;  /* requests waiting on a flight */
	size_t n_flushing; /* answers to waiters not yet fully written */
	struct lru_slot *lru;
	struct admit *admit;
	uint64_t rng; /* retry jitter */
	int offline;  /* --offline, SIGUSR1/SIGUSR2, the admin endpoint */
	int aborting; /* front_abort_pending is answering everything */
	int draining;
	void (*drained)(void *arg);
	void *drained_arg;
};

/*
 * evhttp_send_reply, with the answer written at once. evhttp only queues an
 * answer and enables the socket's write event, so each answer costs two
 * epoll_ctl calls and a loop turn before its writev. Here the queued bytes
 * are written straight away (the socket bufferevent keeps its output frozen
 * at the front against outside draining; the thaw lasts only this call, as
 * bufferevent_writecb itself does) and, if all of it went, evhttp's write
 * callback runs now: the request completes, the write event is disabled in
 * the same turn it was enabled, so the changelist never touches epoll. A
 * partial write (a large answer, a slow reader) or an error leaves the rest
 * to evhttp as usual. The request may be freed when this returns, and so
 * may its connection (Connection: close); callers touch neither afterwards.
 * Relies on libevent 2.1's evhttp creating its bufferevents without
 * deferred callbacks (so the callback runs synchronously, as evhttp's own
 * write path would) - true of every 2.1 release - and on plain socket
 * bufferevents: with TLS (evhttp_set_bevcb and an openssl bufferevent)
 * writing the output to the fd would send plaintext, so send_now must go
 * before such a change.
 */
static void send_now(struct evhttp_request *req, int code, struct evbuffer *body)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	bufferevent_data_cb write_cb = NULL;
	struct evbuffer *out;
	void *cb_arg = NULL;

	evhttp_send_reply(req, code, NULL, body);
	if (fd < 0)
		return; /* the client left: evhttp freed the request unsent */
	out = bufferevent_get_output(bev);
	evbuffer_unfreeze(out, 1);
	evbuffer_write(out, fd);
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) != 0)
		return;
	bufferevent_getcb(bev, NULL, &write_cb, NULL, &cb_arg);
	if (write_cb)
		write_cb(bev, cb_arg);
}

/* evhttp sends no length for HEAD; say what GET would have sent. */
static void head_length(struct evhttp_request *req, size_t len)
{
	char text[24];

	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		return;
	snprintf(text, sizeof(text), "%zu", len);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", text);
}

/* Answers `req` with `code` and a JSON error body {"error", [field_name:
 * field_value,] "message"}. Always answers. */
static void reply_json_error(struct evhttp_request *req, int code, const char *error,
			     const char *field_name, const char *field_value,
			     const char *message)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *body = evbuffer_new();
	cJSON *obj = cJSON_CreateObject();
	char *text;

	if (body == NULL || obj == NULL)
		abort();
	cJSON_AddStringToObject(obj, "error", error);
	if (field_name && field_value)
		cJSON_AddStringToObject(obj, field_name, field_value);
	cJSON_AddStringToObject(obj, "message", message);
	text = cJSON_PrintUnformatted(obj);
	if (text == NULL)
		abort();
	evbuffer_add(body, text, strlen(text));
	evhttp_remove_header(out, "Content-Type");
	evhttp_add_header(out, "Content-Type", JSON_TYPE);
	head_length(req, evbuffer_get_length(body));
	send_now(req, code, body);
	cJSON_free(text);
	cJSON_Delete(obj);
	evbuffer_free(body);
}

/* An error naming the query parameter at fault (NULL: none). */
static void reply_error(struct evhttp_request *req, int code, const char *error,
			const char *parameter, const char *message)
{
	reply_json_error(req, code, error, "parameter", parameter, message);
}

/* The slot of the connection a request arrived on, or NULL if untracked. */
static struct conn_slot *slot_of(struct front *fr, struct evhttp_connection *evcon)
{
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;

	if (fd >= 0 && (size_t)fd < fr->conns_size && fr->conns[fd].evcon == evcon)
		return &fr->conns[fd];
	for (size_t i = 0; evcon && i < fr->conns_size; i++) /* fd already gone */
		if (fr->conns[i].evcon == evcon)
			return &fr->conns[i];
	return NULL;
}

static void maybe_drained(struct front *fr);

/* A client connection closed: answers still being written to it never will. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct front *fr = arg;
	struct conn_slot *slot;

	assert(fr->magic == FRONT_MAGIC);
	slot = slot_of(fr, evcon);
	if (slot == NULL)
		return;
	fr->n_flushing -= slot->flushing;
	slot->flushing = 0;
	slot->evcon = NULL;
	fr->n_conns--;
	maybe_drained(fr);
}

/*
 * Registers the request's connection if it is new. Returns 0 if the request
 * may be served, -1 if it was answered 503 (too many connections).
 */
static int track_connection(struct front *fr, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev;
	evutil_socket_t fd;
	int one = 1;

	if (evcon == NULL)
		return 0;
	bev = evhttp_connection_get_bufferevent(evcon);
	fd = bev ? bufferevent_getfd(bev) : -1;
	if (fd < 0 || (size_t)fd >= fr->conns_size || fr->conns[fd].evcon == evcon)
		return 0;
	if (fr->conns[fd].evcon != NULL) {
		/* the fd was reused, so its old connection is gone even though no
		 * close callback said so: settle it rather than leak the count */
		fr->n_flushing -= fr->conns[fd].flushing;
		fr->conns[fd].evcon = NULL;
		fr->n_conns--;
	}
	if (fr->n_conns >= fr->cfg->max_connections) {
		cglog(CGLOG_WARN, "connection limit %ld reached: answering 503",
		      fr->cfg->max_connections);
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Connection", "close");
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Retry-After", "1");
		reply_error(req, 503, "overloaded", NULL,
			    "the gateway is serving its maximum number of connections");
		return -1;
	}
	fr->conns[fd].evcon = evcon;
	fr->conns[fd].flushing = 0;
	fr->n_conns++;
	evhttp_connection_set_closecb(evcon, conn_closed, fr);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* libevent writes 16 KiB per loop turn by default: a 450 KB answer
	 * would take ~28 turns; let the kernel take what it can at once */
	bufferevent_set_max_single_write(bev, WRITE_CHUNK_MAX);
	return 0;
}

/* Runs the drained callback once nothing is waiting or being written. */
static void maybe_drained(struct front *fr)
{
	if (fr->draining && fr->n_waiting == 0 && fr->n_flushing == 0 &&
	    fr->drained) {
		void (*drained)(void *) = fr->drained;

		fr->drained = NULL;
		drained(fr->drained_arg);
	}
}

static void on_flushed(struct evhttp_request *req, void *arg)
{
	struct front *fr = arg;
	struct conn_slot *slot = slot_of(fr, evhttp_request_get_connection(req));

	assert(fr->magic == FRONT_MAGIC);
	if (slot && slot->flushing > 0) {
		slot->flushing--;
		fr->n_flushing--;
	}
	maybe_drained(fr);
}

/*
 * Prepares the answer to a request that waited on the upstream: while
 * draining its connection closes after it, and the drain waits until it is
 * written. evhttp says so through the complete callback, or the connection
 * closes first (the client left) and conn_closed settles its count; a
 * request already detached from its connection is freed unsent.
 */
static void before_answer(struct front *fr, struct evhttp_request *req)
{
	struct conn_slot *slot = slot_of(fr, evhttp_request_get_connection(req));

	if (fr->draining &&
	    evhttp_find_header(evhttp_request_get_output_headers(req), "Connection") == NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Connection", "close");
	if (slot != NULL) {
		slot->flushing++;
		fr->n_flushing++;
		evhttp_request_set_on_complete_cb(req, on_flushed, fr);
	}
}

static int64_t now_ms(struct front *fr)
{
	struct timeval tv;

	event_base_gettimeofday_cached(fr->base, &tv);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Admission's clock: monotonic, so a wall-clock step never drains or
 * refills a bucket, nor stretches a queue deadline. */
static int64_t mono_ms(struct front *fr)
{
	struct timeval tv;

	event_gettime_monotonic(fr->base, &tv);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static uint64_t lru_tag(const uint8_t id[STORE_ID_LEN])
{
	uint64_t tag;

	memcpy(&tag, id, sizeof(tag));
	return tag;
}

static void lru_touch(struct front *fr, const uint8_t id[STORE_ID_LEN], int64_t now)
{
	uint64_t tag = lru_tag(id);
	struct lru_slot *slot = &fr->lru[tag & (LRU_SLOTS - 1)];

	slot->tag = tag;
	slot->used_ms = now;
}

static int64_t lru_last_used(const uint8_t id[STORE_ID_LEN], int64_t stored_ms,
			     void *arg)
{
	struct front *fr = arg;
	uint64_t tag = lru_tag(id);
	const struct lru_slot *slot = &fr->lru[tag & (LRU_SLOTS - 1)];

	if (slot->tag == tag && slot->used_ms > stored_ms)
		return slot->used_ms;
	return stored_ms;
}

static void format_etag(char out[20], uint64_t etag)
{
	snprintf(out, 20, "\"%016" PRIx64 "\"", etag);
}

/* Reads Cache-Control request directives we act on (enum cache_control). */
static int request_cache_control(struct evhttp_request *req)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	int cc = 0;

	for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
		const char *v = kv->value;

		if (evutil_ascii_strcasecmp(kv->key, "Cache-Control") != 0)
			continue;
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
	return cc;
}

/* Does If-None-Match name this ETag (or "*")? Weak comparison, RFC 9110. */
static int etag_matches(struct evhttp_request *req, const char *etag)
{
	const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req),
					     "If-None-Match");

	if (inm == NULL)
		return 0;
	while (*inm == ' ')
		inm++;
	return strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL;
}

static void set_content_length(struct evkeyvalq *out, size_t len)
{
	char text[24];

	snprintf(text, sizeof(text), "%zu", len);
	evhttp_add_header(out, "Content-Length", text);
}

static void release_view(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	store_view_release(arg);
}

/* Offline now: --offline, SIGUSR1, or the breaker open with
 * --offline-when-open. */
static int is_offline(struct front *fr)
{
	return fr->offline ||
	       (fr->cfg->offline_when_open && admit_breaker_open(fr->admit, mono_ms(fr)));
}

/* How a stored answer is being served, for its Cache-Status. */
struct serve_how {
	int64_t max_stale_ms; /* how far past its expiry it may be (-1: fresh only) */
	int fwd_status;       /* the upstream was asked and said this (0: not asked) */
	const char *detail;   /* why a stale answer, or NULL */
	int collapsed;        /* a coalesced follower */
	int served_stale;     /* out: the answer served was past its expiry */
};

enum served {
	SERVED = 1,  /* answered */
	NOT_STORED,  /* nothing usable stored (absent, or failed its check) */
	TOO_STALE,   /* stored, but further past its expiry than allowed */
};

/*
 * Answers from the entry under `id` if it is fresh, or stale within
 * how->max_stale_ms, straight out of the LMDB map (the body is referenced,
 * not copied; the view is released once evhttp has written it). A record
 * that fails its check is deleted here and counts as not stored.
 */
static enum served serve_stored(struct front *fr, struct evhttp_request *req,
				const uint8_t id[STORE_ID_LEN], struct serve_how *how)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct store_view *view;
	struct store_entry e;
	char etag[20], ctype[STORE_CTYPE_MAX + 1], status[192], age[24];
	enum store_status st = store_get(fr->store, id, &view, &e);
	int64_t now = now_ms(fr), ttl;
	struct evbuffer *body;
	int n, stale;

	if (st == STORE_CORRUPT) {
		cglog(CGLOG_ERROR, "cache: a stored record failed its checksum "
		      "(damaged on disk); deleted, fetching it again");
		store_delete(fr->store, id);
		return NOT_STORED;
	}
	if (st != STORE_OK)
		return NOT_STORED;
	stale = ttl_is_stale(e.expires_ms, now);
	if (stale && (how->max_stale_ms < 0 || now - e.expires_ms >= how->max_stale_ms)) {
		store_view_release(view);
		return TOO_STALE;
	}
	lru_touch(fr, id, now);
	before_answer(fr, req);
	how->served_stale = stale;
	format_etag(etag, e.etag);
	memcpy(ctype, e.content_type, e.content_type_len);
	ctype[e.content_type_len] = '\0';
	/* RFC 9211: ttl is negative once stale; fwd says the upstream was asked */
	ttl = ttl_left_s(e.expires_ms, now);
	if (how->fwd_status)
		n = snprintf(status, sizeof(status),
			     CACHE_STATUS_NAME "; fwd=stale; fwd-status=%d; ttl=%" PRId64,
			     how->fwd_status, ttl);
	else
		n = snprintf(status, sizeof(status), CACHE_STATUS_NAME "; hit; ttl=%" PRId64,
			     ttl);
	if (stale && how->detail)
		n += snprintf(status + n, sizeof(status) - (size_t)n, "; detail=%s",
			      how->detail);
	if (how->collapsed)
		snprintf(status + n, sizeof(status) - (size_t)n, "; collapsed");
	snprintf(age, sizeof(age), "%" PRId64,
		 now > e.stored_ms ? (now - e.stored_ms) / 1000 : 0);
	evhttp_add_header(out, "Cache-Status", status);
	evhttp_add_header(out, "Age", age);
	evhttp_add_header(out, "ETag", etag);
	if (etag_matches(req, etag)) {
		store_view_release(view);
		send_now(req, 304, NULL);
		return SERVED;
	}
	if (ctype[0])
		evhttp_add_header(out, "Content-Type", ctype);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD || e.body_len == 0) {
		set_content_length(out, e.body_len);
		store_view_release(view);
		send_now(req, 200, NULL);
		return SERVED;
	}
	body = evbuffer_new();
	if (body == NULL)
		abort();
	evbuffer_add_reference(body, e.body, e.body_len, release_view, view);
	send_now(req, 200, body);
	evbuffer_free(body);
	return SERVED;
}

/* How far past expiry a stored answer may stand in when `refusal` (or an
 * upstream failure, refusal 0) kept a fresh one from coming. */
static int64_t stale_allowance(const struct front *fr, int refusal)
{
	if (refusal == REFUSED_OFFLINE)
		return INT64_MAX; /* offline: whatever is stored, however old */
	return (int64_t)fr->cfg->stale_if_error_s * 1000;
}

/* What a refusal (flight_result.refusal) means to a client: its
 * Cache-Status detail and, with nothing stored to stand in, its answer. */
struct refusal {
	int refusal;
	const char *detail;
	int status;          /* 0: not an answer of its own (stale-if-error) */
	const char *error;
	const char *message;
	int limited;         /* a limit refused it: name it, Retry-After and
			      * the RateLimit headers describe it */
};

static const struct refusal refusals[] = {
	{ADMIT_KEY_RATE, "rate-limited", 429, "rate_limited",
	 "the upstream request rate for this API key is used up; retry after "
	 "Retry-After seconds", 1},
	{ADMIT_CALLER_QUOTA, "rate-limited", 429, "rate_limited",
	 "this caller's own upstream request quota is used up (other callers of the "
	 "key are not affected); retry after Retry-After seconds", 1},
	{ADMIT_QUEUE_FULL, "rate-limited", 429, "rate_limited",
	 "too many requests for this API key are already waiting for an upstream "
	 "slot; retry after Retry-After seconds", 1},
	{ADMIT_QUEUE_TIMEOUT, "rate-limited", 429, "rate_limited",
	 "no upstream slot for this API key within the queue timeout; retry after "
	 "Retry-After seconds", 1},
	{ADMIT_BLOCKED, "upstream-rate-limited", 429, "rate_limited",
	 "the vendor rate-limited this API key; retry after Retry-After seconds", 1},
	{ADMIT_BREAKER, "breaker-open", 503, "upstream_unavailable",
	 "the upstream is failing and the gateway has stopped asking it for a while "
	 "(circuit breaker open)", 1},
	{REFUSED_OFFLINE, "offline", 504, "offline",
	 "the gateway is offline and holds no stored answer for this query", 0},
	{REFUSED_SHUTDOWN, "stale-if-error", 503, "shutting_down",
	 "the gateway is shutting down", 0},
	{ADMIT_ABANDONED, "stale-if-error", 503, "abandoned", "the client left", 0},
	/* REFUSED_START, and an upstream failure (refusal 0) */
	{0, "stale-if-error", 502, "bad_gateway", "could not start the upstream request", 0},
};

static const struct refusal *refusal_of(int refusal)
{
	size_t i;

	for (i = 0; i + 1 < sizeof(refusals) / sizeof(refusals[0]); i++)
		if (refusals[i].refusal == refusal)
			break;
	return &refusals[i]; /* the last row stands for the rest */
}

/* Whole seconds to wait, rounded up, at least 1. */
static int64_t wait_seconds(int64_t ms)
{
	return ms <= 0 ? 1 : (ms + 999) / 1000;
}

static void add_retry_after(struct evhttp_request *req, int64_t ms)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRId64, wait_seconds(ms));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", text);
}

/*
 * Retry-After and the RateLimit-Policy / RateLimit fields (IETF httpapi
 * rate-limit headers, draft 10) for a refusal by `why`: the policy is named
 * after the limit, q/w say its quota per window (the bucket's burst and the
 * time it takes to refill it; the queue drains at its key's rate; a vendor
 * block or an open breaker allow nothing, q=0, for their time), and
 * RateLimit says none is left (r=0) until t seconds from now.
 */
static void add_limit_headers(struct front *fr, struct evhttp_request *req,
			      enum admit_refusal why, int64_t retry_ms)
{
	const struct cg_config *cfg = fr->cfg;
	const char *name = admit_limit_name(why);
	int64_t t = wait_seconds(retry_ms), q = 0, w;
	char text[96];

	switch (why) {
	case ADMIT_CALLER_QUOTA:
		q = cfg->caller_burst;
		w = (int64_t)ceil((double)cfg->caller_burst / cfg->caller_rate);
		break;
	case ADMIT_KEY_RATE:
	case ADMIT_QUEUE_FULL:
	case ADMIT_QUEUE_TIMEOUT:
		q = cfg->upstream_burst;
		w = (int64_t)ceil((double)cfg->upstream_burst / cfg->upstream_rate);
		break;
	case ADMIT_BREAKER:
		w = wait_seconds(cfg->breaker_cooldown_ms);
		break;
	default: /* a vendor block: what is left of it */
		w = t;
		break;
	}
	add_retry_after(req, retry_ms);
	snprintf(text, sizeof(text), "\"%s\";q=%" PRId64 ";w=%" PRId64, name, q, w < 1 ? 1 : w);
	evhttp_add_header(evhttp_request_get_output_headers(req), "RateLimit-Policy", text);
	snprintf(text, sizeof(text), "\"%s\";r=0;t=%" PRId64, name, t);
	evhttp_add_header(evhttp_request_get_output_headers(req), "RateLimit", text);
}

/* Answers one waiter from a landed flight. */
static void on_landed(const struct flight_result *r, void *arg, int collapsed)
{
	struct waiter *w = arg;
	struct front *fr = w->fr;
	struct evhttp_request *req = w->req;
	const struct upstream_response *resp = r->resp;
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	const char *fwd = w->refresh ? "request" : w->had_stale ? "stale" : "miss";
	char status[160], etag[20];

	assert(w->magic == WAITER_MAGIC);
	/* a failure or a refusal: a stored answer stands in, if allowed */
	if ((r->failed || resp == NULL) && !w->refresh &&
	    r->refusal != ADMIT_ABANDONED) {
		struct serve_how how = {
			.max_stale_ms = stale_allowance(fr, r->refusal),
			.fwd_status = resp == NULL ? 0
				      : resp->result == UPSTREAM_OK
					      ? (int)resp->status
					      : upstream_result_status(resp->result),
			.detail = refusal_of(r->refusal)->detail,
			.collapsed = collapsed,
		};

		if (serve_stored(fr, req, w->id, &how) == SERVED)
			goto done;
	}
	before_answer(fr, req);
	if (resp == NULL) {
		const struct refusal *why = refusal_of(r->refusal);

		snprintf(status, sizeof(status), CACHE_STATUS_NAME "; detail=%s%s",
			 why->detail, collapsed ? "; collapsed" : "");
		evhttp_add_header(out, "Cache-Status", status);
		if (why->limited) {
			add_limit_headers(fr, req, (enum admit_refusal)r->refusal,
					  r->retry_after_ms);
			reply_json_error(req, why->status, why->error, "limit",
					 admit_limit_name((enum admit_refusal)r->refusal),
					 why->message);
		} else {
			reply_error(req, why->status, why->error, NULL, why->message);
		}
	} else if (resp->result != UPSTREAM_OK) {
		int code = upstream_result_status(resp->result);

		snprintf(status, sizeof(status), CACHE_STATUS_NAME "; fwd=%s%s", fwd,
			 collapsed ? "; collapsed" : "");
		evhttp_add_header(out, "Cache-Status", status);
		reply_error(req, code,
			    code == 504 ? "gateway_timeout"
			    : code == 503 ? "shutting_down" : "bad_gateway",
			    NULL, resp->error);
	} else if (r->malformed) {
		snprintf(status, sizeof(status), CACHE_STATUS_NAME "; fwd=%s; fwd-status=%ld%s",
			 fwd, resp->status, collapsed ? "; collapsed" : "");
		evhttp_add_header(out, "Cache-Status", status);
		reply_error(req, 502, "bad_gateway", NULL,
			    "the upstream answered 200 with a body that is not a JSON array");
	} else {
		struct evbuffer *body = NULL;

		for (size_t i = 0; i < resp->n_headers; i++)
			evhttp_add_header(out, resp->headers[i].name,
					  resp->headers[i].value);
		snprintf(status, sizeof(status),
			 CACHE_STATUS_NAME "; fwd=%s; fwd-status=%ld%s", fwd, resp->status,
			 collapsed ? "; collapsed" : r->stored ? "; stored" : "");
		evhttp_add_header(out, "Cache-Status", status);
		if (r->stored) {
			format_etag(etag, r->etag);
			evhttp_add_header(out, "ETag", etag);
		}
		if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
			set_content_length(out, evbuffer_get_length(resp->body));
		} else {
			body = evbuffer_new();
			if (body == NULL)
				abort();
			/* the body was made contiguous when it landed */
			evbuffer_add(body, evbuffer_pullup(resp->body, -1),
				     evbuffer_get_length(resp->body));
		}
		send_now(req, (int)resp->status, body);
		if (body)
			evbuffer_free(body);
	}
done:
	w->magic = 0;
	free(w);
	fr->n_waiting--;
	maybe_drained(fr);
}

/* Stores a complete 200 JSON-array answer, evicting to make room. */
static int store_answer(struct front *fr, struct fetch *fc,
			const struct upstream_response *resp, uint64_t *etag)
{
	const char *ctype = "";
	struct store_entry e;
	int64_t now = now_ms(fr);
	enum store_status st = STORE_FULL;

	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcmp(resp->headers[i].name, "Content-Type") == 0)
			ctype = resp->headers[i].value;
	memset(&e, 0, sizeof(e));
	e.stored_ms = now;
	e.expires_ms = now + (int64_t)fc->ttl_s * 1000;
	memcpy(e.keyhash, fc->keyhash, STORE_KEYHASH_LEN);
	e.query = fc->canonical;
	e.query_len = fc->canonical_len;
	e.content_type = ctype;
	e.content_type_len = strlen(ctype);
	e.body = evbuffer_pullup(resp->body, -1);
	e.body_len = evbuffer_get_length(resp->body);
	for (int attempt = 0; attempt < STORE_ATTEMPTS; attempt++) {
		st = store_put(fr->store, fc->id, &e);
		if (st != STORE_FULL)
			break;
		cglog(CGLOG_INFO, "cache: full, evicted %zu entries",
		      store_evict(fr->store, now, EVICT_SCAN, lru_last_used, fr));
	}
	if (st != STORE_OK) {
		cglog(CGLOG_ERROR, "cache: could not store a %zu-byte answer (%d)",
		      e.body_len, (int)st);
		return 0;
	}
	*etag = e.etag;
	return 1;
}

/* Takes a fetch off the front's list, out of admission, and frees it. */
static void fetch_free(struct fetch *fc)
{
	admit_cancel(&fc->ticket, mono_ms(fc->fr));
	LIST_REMOVE(fc, link);
	if (fc->retry_timer)
		event_free(fc->retry_timer);
	explicit_bzero(fc->api_key, sizeof(fc->api_key));
	fc->magic = 0;
	free(fc);
}

/* Frees the fetch, then lands its flight with `r` for every waiter. */
static void land(struct fetch *fc, const struct flight_result *r)
{
	struct flight *flight = fc->flight;

	fetch_free(fc);
	flight_land(flight, r);
}

/* Lands a flight that never asked the upstream. */
static void land_refused(struct fetch *fc, int refusal, int64_t retry_after_ms)
{
	struct flight_result r = {.refusal = refusal, .retry_after_ms = retry_after_ms};

	land(fc, &r);
}

static void on_fetched(const struct upstream_response *resp, void *arg);

/* Sends the fetch's upstream request (admission granted it). */
static void start_fetch(void *arg)
{
	struct fetch *fc = arg;

	assert(fc->magic == FETCH_MAGIC);
	if (fc->fr->aborting || is_offline(fc->fr)) {
		/* granted (or its backoff ended) while the front tears down or
		 * after it went offline: never sent */
		admit_done(&fc->ticket, ADMIT_NOTHING, 0, mono_ms(fc->fr));
		land_refused(fc, fc->fr->aborting ? REFUSED_SHUTDOWN : REFUSED_OFFLINE, 0);
		return;
	}
	fc->attempts++;
	fc->uf = upstream_fetch(fc->fr->up, fc->canonical, fc->api_key, on_fetched, fc);
	if (fc->uf == NULL) {
		admit_done(&fc->ticket, ADMIT_NOTHING, 0, mono_ms(fc->fr));
		land_refused(fc, REFUSED_START, 0);
	}
}

static void on_refused(void *arg, enum admit_refusal why, int64_t retry_after_ms)
{
	struct fetch *fc = arg;

	assert(fc->magic == FETCH_MAGIC);
	land_refused(fc, (int)why, retry_after_ms);
}

/*
 * Is this waiter's client still there? A peek: EOF or an error says no. A
 * client that half-closes after its request (shutdown(SHUT_WR)) cannot be
 * told from one that left, and is taken as gone while queued, as nginx
 * takes it (its "client prematurely closed connection", 499).
 */
static int waiter_connected(void *arg)
{
	struct waiter *w = arg;
	struct evhttp_connection *evcon = evhttp_request_get_connection(w->req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	char c;
	ssize_t n;

	if (fd < 0)
		return 0;
	n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

static int fetch_wanted(void *arg)
{
	struct fetch *fc = arg;

	return flight_any(fc->flight, waiter_connected);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct fetch *fc = arg;

	(void)fd;
	(void)what;
	assert(fc->magic == FETCH_MAGIC);
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
	struct front *fr = fc->fr;
	enum admit_refusal why;
	int64_t wait, backoff;
	struct timeval tv;

	if (fc->attempts > (unsigned)fr->cfg->upstream_retries || fr->draining ||
	    is_offline(fr))
		return 0;
	if (admit_ask(fr->admit, &fc->ticket, fc->keyhash,
		      fc->has_caller ? fc->caller : NULL, 0, start_fetch, on_refused,
		      fetch_wanted, fc, now, &why, &wait) != 1)
		return 0;
	backoff = limit_backoff_ms(fc->attempts - 1, fr->cfg->retry_backoff_ms,
				   fr->cfg->retry_backoff_ms * 16, &fr->rng);
	fc->retry_timer = evtimer_new(fr->base, on_retry_timer, fc);
	if (fc->retry_timer == NULL)
		abort();
	tv.tv_sec = backoff / 1000;
	tv.tv_usec = (backoff % 1000) * 1000;
	evtimer_add(fc->retry_timer, &tv);
	cglog(CGLOG_INFO, "upstream: attempt %u failed; retrying in %" PRId64 " ms",
	      fc->attempts, backoff);
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

/*
 * The upstream answered (or failed): tell admission how it went, retry if
 * worth it, store a good answer, then wake everyone. A failure (no answer,
 * 5xx, 429, or a 200 that is not a JSON array) never touches what is
 * stored, and lets a stored answer stand in for the waiters.
 */
static void on_fetched(const struct upstream_response *resp, void *arg)
{
	struct fetch *fc = arg;
	struct flight_result r = {.resp = resp};
	int64_t mono = mono_ms(fc->fr);
	enum admit_outcome outcome = ADMIT_OK;
	int64_t retry_after = 0;

	assert(fc->magic == FETCH_MAGIC);
	fc->uf = NULL;
	if (resp->result == UPSTREAM_SHUTDOWN) {
		outcome = ADMIT_NOTHING;
	} else if (resp->result != UPSTREAM_OK || resp->status >= 500) {
		outcome = ADMIT_FAILED;
	} else if (resp->status == 429) {
		outcome = ADMIT_LIMITED;
		retry_after = vendor_retry_after(resp, now_ms(fc->fr)); /* a delay */
		cglog(CGLOG_WARN, "upstream: 429 for a key; no requests for it for %" PRId64
		      " ms", retry_after > 0 ? retry_after : (int64_t)ADMIT_DEFAULT_BLOCK_MS);
	}
	admit_done(&fc->ticket, outcome, retry_after, mono);
	if (outcome == ADMIT_FAILED && retryable(resp) && schedule_retry(fc, mono))
		return;
	r.failed = outcome != ADMIT_OK;
	if (resp->result == UPSTREAM_OK && resp->status == 200) {
		const char *data = (const char *)evbuffer_pullup(resp->body, -1);
		size_t len = evbuffer_get_length(resp->body);

		if (!json_is_array(data, len)) {
			r.failed = r.malformed = 1; /* a stored answer stands in, or 502 */
		} else if (fc->ttl_s > 0 && store_answer(fc->fr, fc, resp, &r.etag)) {
			r.stored = 1;
			r.ttl_s = fc->ttl_s;
		}
	}
	land(fc, &r);
}

/* Opens the flight for `id` and its fetch (not yet asked for). */
static struct fetch *fetch_open(struct front *fr, const uint8_t id[STORE_ID_LEN],
				const uint8_t keyhash[STORE_KEYHASH_LEN],
				const struct query *q, const char *api_key)
{
	struct fetch *fc = calloc(1, sizeof(*fc) + q->canonical_len + 1);

	if (fc == NULL)
		abort();
	fc->magic = FETCH_MAGIC;
	fc->fr = fr;
	memcpy(fc->id, id, STORE_ID_LEN);
	memcpy(fc->keyhash, keyhash, STORE_KEYHASH_LEN);
	fc->ttl_s = ttl_seconds(&fr->ttl, q);
	snprintf(fc->api_key, sizeof(fc->api_key), "%s", api_key);
	fc->canonical_len = q->canonical_len;
	memcpy(fc->canonical, q->canonical, q->canonical_len + 1);
	fc->flight = flight_open(fr->flights, id);
	LIST_INSERT_HEAD(&fr->fetches, fc, link);
	return fc;
}

/*
 * Asks admission for an opened fetch: granted, the request goes now;
 * queued, it goes (or is refused) later; refused, the flight lands at once.
 * A background refresh (may_queue 0, no waiter) is only granted or dropped.
 * The caller joins its waiter, if any, before; the fetch may be gone after.
 */
static void fetch_begin(struct front *fr, struct fetch *fc, const uint8_t *caller,
			int may_queue)
{
	enum admit_refusal why = ADMIT_KEY_RATE;
	int64_t retry = 0;
	int rc;

	if (is_offline(fr)) {
		land_refused(fc, REFUSED_OFFLINE, 0);
		return;
	}
	if (caller) {
		memcpy(fc->caller, caller, sizeof(fc->caller));
		fc->has_caller = 1; /* its retries cost the caller's tokens too */
	}
	rc = admit_ask(fr->admit, &fc->ticket, fc->keyhash, caller, may_queue,
		       start_fetch, on_refused, fetch_wanted, fc, mono_ms(fr), &why,
		       &retry);
	if (rc > 0)
		start_fetch(fc);
	else if (rc < 0)
		land_refused(fc, (int)why, retry);
}

/*
 * The miss path: joins the flight for `id`, opening it (and asking for its
 * upstream fetch) if this request is the first to ask.
 */
static void wait_on_flight(struct front *fr, struct evhttp_request *req,
			   const uint8_t id[STORE_ID_LEN],
			   const uint8_t keyhash[STORE_KEYHASH_LEN],
			   const struct query *q, const char *api_key,
			   const uint8_t *caller, int cc, int had_stale)
{
	struct flight *flight = flight_find(fr->flights, id);
	struct waiter *w;
	struct fetch *fc = NULL;

	if (flight && flight_waiters(flight) >= (size_t)fr->cfg->max_waiters) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Retry-After", "1");
		reply_error(req, 503, "overloaded", NULL,
			    "too many requests are waiting for this same answer");
		return;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->magic = WAITER_MAGIC;
	w->fr = fr;
	w->req = req;
	memcpy(w->id, id, STORE_ID_LEN);
	w->refresh = (cc & CC_NO_CACHE) != 0;
	w->had_stale = had_stale;
	if (flight == NULL) {
		fc = fetch_open(fr, id, keyhash, q, api_key);
		flight = fc->flight;
	}
	if (flight_join(flight, on_landed, w) != 0)
		abort(); /* checked above; a new flight has room */
	fr->n_waiting++;
	if (fc != NULL)
		fetch_begin(fr, fc, caller, 1);
}

/* Stale-while-revalidate: refreshes `id` in the background, unless a fetch
 * for it is under way; dropped if admission will not grant it now. */
static void refresh_behind(struct front *fr, const uint8_t id[STORE_ID_LEN],
			   const uint8_t keyhash[STORE_KEYHASH_LEN],
			   const struct query *q, const char *api_key,
			   const uint8_t *caller)
{
	if (fr->draining || flight_find(fr->flights, id) != NULL)
		return;
	fetch_begin(fr, fetch_open(fr, id, keyhash, q, api_key), caller, 0);
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
	if (strlen(found) > API_KEY_MAX) {
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

static void handle_contacts(struct front *fr, struct evhttp_request *req)
{
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *raw = evhttp_uri_get_query(uri);
	const char *key, *why;
	struct query q;
	struct query_error qerr;
	uint8_t keyhash[STORE_KEYHASH_LEN], id[STORE_ID_LEN], callerbuf[STORE_KEYHASH_LEN];
	const uint8_t *caller = NULL;
	struct serve_how how = {.max_stale_ms = -1};
	enum served served = NOT_STORED;
	int cc, offline;

	if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
				  "GET, HEAD");
		reply_error(req, 405, "method_not_allowed", NULL,
			    "only GET and HEAD are allowed on " CONTACTS_PATH);
		return;
	}
	if (find_api_key(req, &key, &why) != 0) {
		reply_error(req, 401, "unauthorized", NULL, why);
		return;
	}
	if (query_normalise(raw, raw ? strlen(raw) : 0, &q, &qerr) != QUERY_OK) {
		reply_error(req, 400, "invalid_parameter", qerr.parameter, qerr.message);
		return;
	}
	if (q.ignored[0] != '\0')
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "X-Gateway-Ignored-Parameters", q.ignored);
	store_hash_api_key(key, strlen(key), keyhash);
	store_entry_id(keyhash, q.canonical, q.canonical_len, id);
	cc = request_cache_control(req);
	offline = is_offline(fr);
	if (offline) {
		how.max_stale_ms = INT64_MAX;
		how.detail = "offline";
	} else if (fr->cfg->stale_while_revalidate_s > 0 && !(cc & CC_NO_CACHE)) {
		how.max_stale_ms = (int64_t)fr->cfg->stale_while_revalidate_s * 1000;
		how.detail = "stale-while-revalidate";
	}
	if (!(cc & CC_NO_CACHE) || offline) {
		int may_refresh = how.detail != NULL && !offline; /* SWR is on */
		char key_copy[API_KEY_MAX + 1];

		/* answering may free the request, its key and caller header with
		 * it: what a refresh behind would need is taken first */
		if (may_refresh) {
			snprintf(key_copy, sizeof(key_copy), "%s", key);
			caller = caller_hash(fr, req, callerbuf);
		}
		served = serve_stored(fr, req, id, &how);
		if (served == SERVED) {
			/* a stale answer within the window: refresh it behind */
			if (how.served_stale && may_refresh)
				refresh_behind(fr, id, keyhash, &q, key_copy, caller);
			return;
		}
	}
	if (caller == NULL)
		caller = caller_hash(fr, req, callerbuf);
	if (cc & CC_ONLY_IF_CACHED) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Status",
				  CACHE_STATUS_NAME "; fwd=miss; detail=only-if-cached");
		reply_error(req, 504, "not_cached", NULL,
			    "only-if-cached was asked and no fresh answer is stored");
		return;
	}
	wait_on_flight(fr, req, id, keyhash, &q, key, caller, cc, served == TOO_STALE);
}

static void handle_health(struct front *fr, struct evhttp_request *req)
{
	struct timespec now;
	struct evbuffer *body = evbuffer_new();

	if (body == NULL)
		abort();
	clock_gettime(CLOCK_MONOTONIC, &now);
	evbuffer_add_printf(body,
			    "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_seconds\":%lld}",
			    CG_VERSION, (long long)(now.tv_sec - fr->started.tv_sec));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  JSON_TYPE);
	head_length(req, evbuffer_get_length(body));
	send_now(req, 200, body);
	evbuffer_free(body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct front *fr = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);

	assert(fr->magic == FRONT_MAGIC);
	if (track_connection(fr, req) != 0)
		return;
	if (fr->draining)
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Connection", "close");
	if (path == NULL)
		path = "";
	if (strcmp(path, CONTACTS_PATH) == 0) {
		handle_contacts(fr, req);
	} else if (strcmp(path, HEALTH_PATH) == 0 &&
		   (method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD)) {
		handle_health(fr, req);
	} else {
		reply_error(req, 404, "not_found", NULL,
			    "no such resource; the gateway serves GET " CONTACTS_PATH);
	}
}

/* Size of the fd-indexed connection table: the open-file limit. */
static size_t conns_table_size(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (1u << 20))
		return 1u << 20;
	return (size_t)rl.rlim_cur;
}

struct front *front_new(struct event_base *base, const struct cg_config *cfg,
			struct upstream *up, struct store *store, char *err,
			size_t err_size)
{
	struct front *fr = calloc(1, sizeof(*fr));
	struct timeval tv;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (fr == NULL)
		abort();
	fr->magic = FRONT_MAGIC;
	LIST_INIT(&fr->fetches);
	fr->base = base;
	fr->up = up;
	fr->store = store;
	fr->cfg = cfg;
	fr->ttl.ttl_s = cfg->ttl_s;
	fr->ttl.ttl_cursor_s = cfg->ttl_cursor_s;
	fr->ttl.ttl_wide_s = cfg->ttl_wide_s;
	fr->ttl.wide_days = (uint32_t)cfg->ttl_wide_days;
	fr->flights = flight_table_new((size_t)cfg->max_waiters);
	fr->offline = cfg->offline;
	fr->rng = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)fr << 16);
	{
		struct admit_config ac = {
			.rate = cfg->upstream_rate,
			.burst = cfg->upstream_burst,
			.caller_rate = cfg->caller_header[0] ? cfg->caller_rate : 0,
			.caller_burst = cfg->caller_burst,
			.concurrency = cfg->upstream_concurrency,
			.queue_limit = cfg->queue_limit,
			.queue_timeout_ms = cfg->queue_timeout_ms,
			.breaker_threshold = (unsigned)cfg->breaker_threshold,
			.breaker_cooldown_ms = cfg->breaker_cooldown_ms,
		};

		fr->admit = admit_new(base, &ac);
		if (fr->admit == NULL) {
			snprintf(err, err_size, "upstream-rate/upstream-burst: not usable");
			front_free(fr);
			return NULL;
		}
	}
	fr->lru = calloc(LRU_SLOTS, sizeof(*fr->lru));
	clock_gettime(CLOCK_MONOTONIC, &fr->started);
	fr->conns_size = conns_table_size();
	fr->conns = calloc(fr->conns_size, sizeof(*fr->conns));
	fr->http = evhttp_new(base);
	if (fr->conns == NULL || fr->http == NULL || fr->lru == NULL)
		abort();
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

	fr->bound = evhttp_bind_socket_with_handle(fr->http, cfg->listen.host,
						   (ev_uint16_t)cfg->listen.port);
	if (fr->bound == NULL) {
		snprintf(err, err_size, "cannot listen on %s:%u: %s", cfg->listen.host,
			 cfg->listen.port,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		front_free(fr);
		return NULL;
	}
	fr->port = cfg->listen.port;
	if (getsockname(evhttp_bound_socket_get_fd(fr->bound),
			(struct sockaddr *)&ss, &sslen) == 0) {
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

size_t front_in_flight(const struct front *fr)
{
	return fr->n_waiting;
}

void front_drain(struct front *fr, void (*drained)(void *arg), void *arg)
{
	assert(fr->magic == FRONT_MAGIC);
	if (!fr->draining && fr->bound) {
		evhttp_del_accept_socket(fr->http, fr->bound);
		fr->bound = NULL;
	}
	fr->draining = 1;
	fr->drained = drained;
	fr->drained_arg = arg;
	maybe_drained(fr);
}

void front_abort_pending(struct front *fr)
{
	fr->aborting = 1;
	while (!LIST_EMPTY(&fr->fetches)) {
		struct fetch *fc = LIST_FIRST(&fr->fetches);
		struct upstream_response resp;
		struct flight_result r = {.resp = &resp};

		if (fc->uf)
			upstream_cancel(fc->uf);
		memset(&resp, 0, sizeof(resp));
		resp.result = UPSTREAM_SHUTDOWN;
		snprintf(resp.error, sizeof(resp.error), "the gateway is shutting down");
		land(fc, &r); /* the fetch leaves the admission queue too */
	}
}

void front_set_offline(struct front *fr, int offline)
{
	assert(fr->magic == FRONT_MAGIC);
	if (fr->offline != !!offline)
		cglog(CGLOG_WARN, "%s", offline ? "offline: answering from the cache only"
						: "online: asking the upstream again");
	fr->offline = !!offline;
}

int front_offline(const struct front *fr)
{
	return fr->offline;
}

const struct admit *front_admit(const struct front *fr)
{
	return fr->admit;
}

void front_free(struct front *fr)
{
	if (fr == NULL)
		return;
	assert(fr->magic == FRONT_MAGIC);
	fr->drained = NULL;
	front_abort_pending(fr);
	if (fr->http)
		evhttp_free(fr->http); /* runs conn_closed for open connections */
	flight_table_free(fr->flights);
	admit_free(fr->admit);
	free(fr->conns);
	free(fr->lru);
	fr->magic = 0;
	free(fr);
}
