/*
 * answer: see answer.h.
 *
 * Pins. A stored answer's body goes into the connection's output buffer as
 * a reference into the LMDB map (evbuffer_add_reference), with a pin that
 * holds the reader's snapshot until the bytes are written: the reference's
 * cleanup, run by libevent when the chain is freed (written, or the
 * connection gone), releases it. Most answers are written whole by
 * answer_send, and their pin ends before answer_stored returns. The rest
 * are linked on the answerer's list; answerer_tick moves those whose
 * snapshot a newer commit has overtaken for ANSWER_PIN_MAX_MS to a copy:
 * the remaining bytes (a suffix of the body, the head having gone first)
 * are drained from the output buffer and added back as a reference into
 * the copy, shared by every pin of the same body moved in that pass.
 */
#include "gateway/answer.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "cache/lru.h"
#include "gateway/admit.h"
#include "gateway/clock.h"
#include "gateway/fetch.h"
#include "gateway/log.h"
#include "policy/check.h"
#include "policy/derive.h"
#include "policy/encoding.h"
#include "policy/ttl.h"

#define ANSWERER_MAGIC 0x414e5357u
#define PIN_MAGIC 0x50494e21u
#define COPY_MAGIC 0x434f5059u
#define PASS_COPIES_MAX 64 /* distinct bodies shared within one tick's pass */
#define STALE_LOG_SLOTS 1024 /* entries remembered for "stale served" lines */
#define STALE_LOG_EVERY_MS 60000

struct pin {
	unsigned magic;
	struct answerer *as;
	struct store_snap *snap;
	struct bufferevent *bev;
	const char *body;
	size_t len;
	int linked;
	LIST_ENTRY(pin) link;
};

/* A body moved out of the map for slow readers; refs: their references. */
struct copy {
	unsigned magic;
	struct answerer *as;
	size_t refs;
	const void *src; /* where in the map it came from (this pass only) */
	size_t len;
	char data[];
};

struct answerer {
	unsigned magic;
	struct event_base *base;
	const struct cg_config *cfg;
	struct store_reader *reader;
	struct lru *lru;
	LIST_HEAD(, pin) pins; /* answers still being written from the map */
	size_t n_pins;
	uint64_t pins_ended;   /* pins released so far (see answer_stored) */
	size_t copies;         /* copies alive, and their bytes */
	size_t copy_bytes;
	struct answer_note *note; /* what the answers fill, or NULL */
	answer_count_fn count;    /* counts a note as its answer is written */
	void *count_arg;
	int64_t read_error_ms;    /* the last "cannot read" line */
	struct {
		uint64_t tag;
		int64_t at_ms;
	} stale_logged[STALE_LOG_SLOTS]; /* when each entry's line was last written */
	struct metrics_front *metrics; /* NULL: not counted */
};

/* ---- writing ---- */

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
 * Relies on the connection's bufferevent having no deferred callbacks (so
 * the callback runs synchronously, as evhttp's own write path would): the
 * front makes them so (conn.c), as evhttp 2.1 does; and on plain socket
 * bufferevents: with TLS (an openssl bufferevent) writing the output to the
 * fd would send plaintext, so answer_send must go before such a change.
 */
void answerer_set_metrics(struct answerer *as, struct metrics_front *m)
{
	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	as->metrics = m;
}

void answerer_set_counter(struct answerer *as, answer_count_fn fn, void *arg)
{
	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	as->count = fn;
	as->count_arg = arg;
}

void answerer_note(struct answerer *as, struct answer_note *note)
{
	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	as->note = note;
}

void answer_send(struct answerer *as, struct evhttp_request *req, int code,
		 struct evbuffer *body)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	bufferevent_data_cb write_cb = NULL;
	struct evbuffer *out;
	void *cb_arg = NULL;

	if (as->note) {
		as->note->status = code;
		as->note->bytes = body ? evbuffer_get_length(body) : 0;
		if (as->count && !as->note->counted) {
			as->count(as->count_arg, as->note);
			as->note->counted = 1;
		}
	}
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

static void set_content_length(struct evkeyvalq *out, size_t len)
{
	char text[24];

	snprintf(text, sizeof(text), "%zu", len);
	evhttp_add_header(out, "Content-Length", text);
}

void answer_head_length(struct evhttp_request *req, size_t len)
{
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
		set_content_length(evhttp_request_get_output_headers(req), len);
}

void answer_error(struct answerer *as, struct evhttp_request *req, int code,
		  const char *error, const char *field_name, const char *field_value,
		  const char *message)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *body = evbuffer_new();
	cJSON *obj = cJSON_CreateObject();
	char *text;

	AN(body);
	AN(obj);
	cJSON_AddStringToObject(obj, "error", error);
	if (field_name && field_value)
		cJSON_AddStringToObject(obj, field_name, field_value);
	cJSON_AddStringToObject(obj, "message", message);
	text = cJSON_PrintUnformatted(obj);
	AN(text);
	evbuffer_add(body, text, strlen(text));
	evhttp_remove_header(out, "Content-Type");
	evhttp_add_header(out, "Content-Type", ANSWER_JSON_TYPE);
	answer_head_length(req, evbuffer_get_length(body));
	answer_send(as, req, code, body);
	cJSON_free(text);
	cJSON_Delete(obj);
	evbuffer_free(body);
}

/* ---- the answerer ---- */

struct answerer *answerer_new(struct event_base *base, const struct cg_config *cfg,
			      struct store_reader *reader, struct lru *lru)
{
	struct answerer *as = calloc(1, sizeof(*as));

	AN(as);
	as->magic = ANSWERER_MAGIC;
	as->base = base;
	as->cfg = cfg;
	as->reader = reader;
	as->lru = lru;
	LIST_INIT(&as->pins);
	return as;
}

void answerer_free(struct answerer *as)
{
	if (as == NULL)
		return;
	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	CHECK(LIST_EMPTY(&as->pins) && as->copies == 0);
	store_reader_free(as->reader);
	as->magic = 0;
	free(as);
}

void answerer_set_config(struct answerer *as, const struct cg_config *cfg)
{
	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	as->cfg = cfg;
}

size_t answerer_pins(const struct answerer *as)
{
	return as->n_pins + as->copies;
}

static int64_t wall_ms(struct answerer *as)
{
	return loop_wall_ms(as->base);
}

static int64_t mono_ms(struct answerer *as)
{
	return loop_mono_ms(as->base);
}

/* evbuffer cleanup of a body referenced from the map: the bytes are
 * written (or the connection is gone); the snapshot may go. */
static void pin_done(const void *data, size_t len, void *arg)
{
	struct pin *p = arg;
	struct answerer *as;

	(void)data;
	(void)len;
	CHECK_OBJ_NOTNULL(p, PIN_MAGIC);
	as = p->as;
	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	if (p->linked) {
		LIST_REMOVE(p, link);
		as->n_pins--;
	}
	as->pins_ended++;
	store_snap_release(p->snap);
	p->magic = 0;
	free(p);
}

static void copy_done(const void *data, size_t len, void *arg)
{
	struct copy *c = arg;

	(void)data;
	(void)len;
	CHECK_OBJ_NOTNULL(c, COPY_MAGIC);
	if (--c->refs > 0)
		return;
	c->as->copies--;
	c->as->copy_bytes -= c->len;
	c->magic = 0;
	free(c);
}

/* A copy of len bytes, of `data` (NULL: left for the caller to fill). */
static struct copy *copy_new(struct answerer *as, const void *data, size_t len)
{
	struct copy *c = malloc(sizeof(*c) + len);

	AN(c);
	c->magic = COPY_MAGIC;
	c->as = as;
	c->refs = 0;
	c->src = NULL;
	c->len = len;
	if (data)
		memcpy(c->data, data, len);
	as->copies++;
	as->copy_bytes += len;
	return c;
}

/* Moves what is left of p's answer out of the map (see the file comment).
 * `made` holds the copies of this pass, to share. */
static void unpin(struct answerer *as, struct pin *p, struct copy **made, size_t *n_made)
{
	struct evbuffer *out = bufferevent_get_output(p->bev);
	size_t left = evbuffer_get_length(out);
	struct copy *c = NULL;
	size_t off = 0;

	if (left == 0)
		return; /* written; its cleanup is on its way */
	if (left <= p->len) { /* a suffix of the body: share one copy of it */
		off = p->len - left;
		/* the same map address in two live snapshots holds the same
		 * bytes: LMDB reuses no page a live reader can still see */
		for (size_t i = 0; i < *n_made && c == NULL; i++)
			if (made[i]->src == p->body && made[i]->len == p->len)
				c = made[i];
		if (c == NULL) {
			c = copy_new(as, p->body, p->len);
			c->src = p->body;
			if (*n_made < PASS_COPIES_MAX)
				made[(*n_made)++] = c;
		}
	} else { /* part of the head too: a copy of its own */
		c = copy_new(as, NULL, left);
		CHECK(evbuffer_copyout(out, c->data, left) == (ev_ssize_t)left);
	}
	c->refs++;
	evbuffer_unfreeze(out, 1);
	evbuffer_drain(out, left); /* runs pin_done: p is gone */
	CHECK(evbuffer_add_reference(out, c->data + off, left, copy_done, c) == 0);
	evbuffer_freeze(out, 1);
}

void answerer_tick(struct answerer *as)
{
	struct copy *made[PASS_COPIES_MAX];
	size_t n_made = 0;
	int64_t now = mono_ms(as);
	struct pin *p, *next;

	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	for (p = LIST_FIRST(&as->pins); p != NULL; p = next) {
		next = LIST_NEXT(p, link);
		if (store_snap_overdue(p->snap, now, ANSWER_PIN_MAX_MS))
			unpin(as, p, made, &n_made);
	}
	if (n_made > 0)
		cglog(CGLOG_DEBUG, "answers to slow readers moved out of the cache map: "
		      "%zu copies, %zu bytes held", as->copies, as->copy_bytes);
}

/* ---- from the store ---- */

#define ETAG_MAX 32

/* A strong ETag per representation: the identity body's XXH3, and for a
 * coded one its coding after a dash ("...-gzip"). */
static void format_etag(char out[ETAG_MAX], uint64_t etag, enum encoding enc)
{
	if (enc == ENC_IDENTITY)
		snprintf(out, ETAG_MAX, "\"%016" PRIx64 "\"", etag);
	else
		snprintf(out, ETAG_MAX, "\"%016" PRIx64 "-%s\"", etag, encoding_name(enc));
}

/* The representation of a body to send for req among `mask`, and the
 * headers that say so: Vary always (the choice depends on
 * Accept-Encoding), Content-Encoding for a coded one. */
static enum encoding negotiate(struct evhttp_request *req, unsigned mask)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	enum encoding enc = ENC_IDENTITY;

	if (mask)
		enc = encoding_choose(evhttp_find_header(evhttp_request_get_input_headers(req),
							 "Accept-Encoding"),
				      mask);
	evhttp_add_header(out, "Vary", "Accept-Encoding");
	if (enc != ENC_IDENTITY)
		evhttp_add_header(out, "Content-Encoding", encoding_name(enc));
	return enc;
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

/* Sends `body` (len bytes in the reader's current snapshot) with a pin
 * that keeps the snapshot until libevent has written it. */
static void send_pinned(struct answerer *as, struct evhttp_request *req, const void *body,
			size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct evbuffer *buf = evbuffer_new();
	struct pin *p = calloc(1, sizeof(*p));
	uint64_t ended = as->pins_ended;

	AN(buf);
	AN(p);
	p->magic = PIN_MAGIC;
	p->as = as;
	p->snap = store_reader_pin(as->reader);
	p->bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	p->body = body;
	p->len = len;
	CHECK(evbuffer_add_reference(buf, body, len, pin_done, p) == 0);
	answer_send(as, req, 200, buf);
	evbuffer_free(buf); /* the reference moved into the connection's output */
	/* pin_done ran already (written whole, or the client left) unless the
	 * count did not move: then the rest is still to write from the map */
	if (as->pins_ended == ended) {
		CHECK(p->bev != NULL);
		p->linked = 1;
		LIST_INSERT_HEAD(&as->pins, p, link);
		as->n_pins++;
	}
}

static enum served serve_entry(struct answerer *as, struct evhttp_request *req,
			       const uint8_t id[STORE_ID_LEN], const struct store_entry *ep,
			       struct serve_how *how);

enum served answer_stored(struct answerer *as, struct evhttp_request *req,
			  const uint8_t id[STORE_ID_LEN], struct serve_how *how)
{
	struct store_entry e;
	enum store_status st;

	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	st = store_reader_get(as->reader, id, &e);
	if (st == STORE_OK) {
		enum served served = serve_entry(as, req, id, &e, how);

		store_reader_done(as->reader);
		return served;
	}
	store_reader_done(as->reader);
	if (st == STORE_CORRUPT) {
		/* the refetched answer replaces it when it is stored */
		if (as->metrics)
			metrics_add(&as->metrics->corrupt, 1);
		cglog(CGLOG_ERROR, "cache: a stored record failed its checksum "
		      "(damaged on disk); not served, fetching it again");
		return NOT_STORED;
	}
	if (st == STORE_ERROR) {
		int64_t now = mono_ms(as);

		/* each lookup would say it again: once every 10 s */
		if (as->read_error_ms == 0 || now - as->read_error_ms >= 10000) {
			cglog(CGLOG_ERROR, "cache: cannot read the cache (%s); answering as if "
			      "nothing were stored", store_reader_error(as->reader));
			as->read_error_ms = now;
		}
	}
	return NOT_STORED;
}

/* answer_stored's answer from the entry found, while the lookup is open. */
static enum served serve_entry(struct answerer *as, struct evhttp_request *req,
			       const uint8_t id[STORE_ID_LEN], const struct store_entry *ep,
			       struct serve_how *how)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	const struct store_entry e = *ep;
	char etag[ETAG_MAX], ctype[STORE_CTYPE_MAX + 1], status[192], age[24];
	int64_t now = wall_ms(as), ttl;
	const void *body;
	size_t body_len;
	enum encoding enc;
	unsigned mask = 0;
	int n, stale;

	stale = ttl_is_stale(e.expires_ms, now);
	if (stale && (how->max_stale_ms < 0 || now - e.expires_ms >= how->max_stale_ms))
		return TOO_STALE;
	if (how->young_ms > 0 && now - e.stored_ms >= how->young_ms)
		return TOO_OLD;
	lru_touch(as->lru, id, now);
	how->served_stale = stale;
	if (as->note)
		as->note->cache = stale ? MC_STALE : as->note->serve_as ? as->note->serve_as : MC_HIT;
	for (int k = ENC_GZIP; k < ENC_N; k++)
		if (e.enc[k].len)
			mask |= ENC_BIT(k);
	enc = negotiate(req, mask);
	body = enc == ENC_IDENTITY ? e.body : e.enc[enc].p;
	body_len = enc == ENC_IDENTITY ? e.body_len : e.enc[enc].len;
	format_etag(etag, e.etag, enc);
	memcpy(ctype, e.content_type, e.content_type_len);
	ctype[e.content_type_len] = '\0';
	/* RFC 9211: ttl is negative once stale; fwd says the upstream was asked */
	ttl = ttl_left_s(e.expires_ms, now);
	if (how->fwd_status)
		n = snprintf(status, sizeof(status),
			     ANSWER_STATUS_NAME "; fwd=stale; fwd-status=%d; ttl=%" PRId64,
			     how->fwd_status, ttl);
	else
		n = snprintf(status, sizeof(status), ANSWER_STATUS_NAME "; hit; ttl=%" PRId64,
			     ttl);
	if ((stale || how->show_detail) && how->detail)
		n += snprintf(status + n, sizeof(status) - (size_t)n, "; detail=%s",
			      how->detail);
	else if (e.derived)
		n += snprintf(status + n, sizeof(status) - (size_t)n, "; detail=derived");
	if (e.derived) /* the rule that cut it from another stored answer */
		n += snprintf(status + n, sizeof(status) - (size_t)n, "; rule=%s",
			      derive_rule_name((enum derive_rule)e.derived));
	if (how->collapsed)
		snprintf(status + n, sizeof(status) - (size_t)n, "; collapsed");
	snprintf(age, sizeof(age), "%" PRId64,
		 now > e.stored_ms ? (now - e.stored_ms) / 1000 : 0);
	evhttp_add_header(out, "Cache-Status", status);
	evhttp_add_header(out, "Age", age);
	evhttp_add_header(out, "ETag", etag);
	if (etag_matches(req, etag)) {
		answer_send(as, req, 304, NULL);
		return SERVED;
	}
	if (ctype[0])
		evhttp_add_header(out, "Content-Type", ctype);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD || body_len == 0) {
		set_content_length(out, body_len);
		answer_send(as, req, 200, NULL);
		return SERVED;
	}
	send_pinned(as, req, body, body_len);
	return SERVED;
}

/* ---- from a landing ---- */

/* How far past expiry a stored answer may stand in when `refusal` (or an
 * upstream failure, refusal 0) kept a fresh one from coming. */
static int64_t stale_allowance(const struct answerer *as, int refusal)
{
	if (refusal == REFUSED_OFFLINE)
		return INT64_MAX; /* offline: whatever is stored, however old */
	return (int64_t)as->cfg->stale_if_error_s * 1000;
}

/* What a refusal (fetched.refusal) means to a client: its Cache-Status
 * detail and, with nothing stored to stand in, its answer. */
struct refusal {
	int refusal;
	const char *detail;
	int status;
	const char *error;
	const char *message;
	int limited; /* a limit refused it: named, with Retry-After and RateLimit */
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
	{REFUSED_OVERLOADED, "stale-if-error", 503, "overloaded",
	 "too many requests are waiting for this same answer", 0},
	{ADMIT_NEW_KEY, "rate-limited", 429, "rate_limited",
	 "too many API keys the vendor has not yet accepted are being tried; retry "
	 "after Retry-After seconds", 1},
	{ADMIT_CLIENT_RATE, "rate-limited", 429, "rate_limited",
	 "this client address's upstream request rate is used up; retry after "
	 "Retry-After seconds", 1},
	{REFUSED_UNAUTHORIZED, "unauthorized", 401, "unauthorized",
	 "the vendor refused this API key a moment ago (401); the gateway answers for "
	 "it until --unauthorized-ttl has passed", 0},
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
 * time it takes to refill it; a queue drains at its key's rate; a vendor
 * block or an open breaker allow nothing, q=0, for their time), and
 * RateLimit says none is left (r=0) until t seconds from now.
 */
static void add_limit_headers(const struct cg_config *cfg, struct evhttp_request *req,
			      enum admit_refusal why, int64_t retry_ms)
{
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
	case ADMIT_NEW_KEY: /* one bucket for all new keys, burst = rate */
		q = cfg->new_key_rate < 1 ? 1 : (int64_t)cfg->new_key_rate;
		w = (int64_t)ceil((double)q / cfg->new_key_rate);
		break;
	case ADMIT_CLIENT_RATE:
		q = cfg->client_burst;
		w = (int64_t)ceil((double)cfg->client_burst / cfg->client_rate);
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

static void release_fetched(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	fetched_release(arg);
}

/* A stored answer stood in for the vendor's: one line per entry a minute
 * at most (every such answer is counted in the metrics: cache="stale"). */
static void log_stale(struct answerer *as, const struct waited *w, const char *why)
{
	uint64_t tag;
	int64_t now = mono_ms(as);
	size_t slot;

	memcpy(&tag, w->id, sizeof(tag));
	slot = (size_t)(tag % STALE_LOG_SLOTS);
	if (as->stale_logged[slot].tag == tag &&
	    now - as->stale_logged[slot].at_ms < STALE_LOG_EVERY_MS)
		return;
	as->stale_logged[slot].tag = tag;
	as->stale_logged[slot].at_ms = now;
	cglog(CGLOG_WARN, "a stored answer stood in for the vendor's (%s) for key_id=%s",
	      why ? why : "stale-if-error", w->key_id ? w->key_id : "?");
}

/*
 * A flight the fetch layer answered from the store: derived from another
 * stored answer (--derive), or stored meanwhile by a flight that landed
 * between this request's lookup and its ask. From the entry, as any hit
 * (negotiated, its ETag, 304, Age and TTL, Cache-Status detail=derived for
 * a derived one); if it is gone already, from the landing's copy as it is.
 */
static void answer_from_store(struct answerer *as, struct evhttp_request *req,
			      const struct waited *w, const struct fetched *f)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct serve_how how = {.max_stale_ms = -1, .collapsed = w->collapsed};
	enum metrics_cache cache = f->derived ? MC_DERIVED : MC_COLLAPSED;
	char status[192], age[24];
	struct evbuffer *body;
	int64_t now = wall_ms(as);
	int n;

	if (as->note)
		as->note->serve_as = cache;
	if (f->stored && answer_stored(as, req, w->id, &how) == SERVED)
		return;
	if (as->note)
		as->note->cache = cache;
	n = snprintf(status, sizeof(status), ANSWER_STATUS_NAME "; hit; ttl=%" PRId64,
		     ttl_left_s(f->expires_ms, now));
	if (f->derived)
		n += snprintf(status + n, sizeof(status) - (size_t)n, "; detail=derived; rule=%s",
			      derive_rule_name((enum derive_rule)f->derived));
	if (w->collapsed)
		snprintf(status + n, sizeof(status) - (size_t)n, "; collapsed");
	snprintf(age, sizeof(age), "%" PRId64,
		 now > f->stored_ms ? (now - f->stored_ms) / 1000 : 0);
	for (size_t i = 0; i < f->n_headers; i++)
		evhttp_add_header(out, f->headers[i].name, f->headers[i].value);
	evhttp_add_header(out, "Cache-Status", status);
	evhttp_add_header(out, "Age", age);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		set_content_length(out, f->body_len);
		answer_send(as, req, 200, NULL);
		return;
	}
	body = evbuffer_new();
	AN(body);
	fetched_hold((struct fetched *)f);
	CHECK(evbuffer_add_reference(body, f->body, f->body_len, release_fetched,
				     (void *)f) == 0);
	answer_send(as, req, 200, body);
	evbuffer_free(body);
}

void answer_landed(struct answerer *as, struct evhttp_request *req,
		   const struct waited *w, const struct fetched *f)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	const char *fwd = w->refresh ? "request" : w->had_stale ? "stale" : "miss";
	const char *collapsed = w->collapsed ? "; collapsed" : "";
	char status[160], etag[ETAG_MAX];

	CHECK_OBJ_NOTNULL(as, ANSWERER_MAGIC);
	CHECK_OBJ_NOTNULL(f, FETCHED_MAGIC);
	if (f->from_store) {
		answer_from_store(as, req, w, f);
		return;
	}
	if (as->note && f->asked) { /* a stored answer standing in says hit/stale */
		as->note->cache = w->refresh ? MC_BYPASS : w->collapsed ? MC_COLLAPSED : MC_MISS;
		as->note->upstream_ms = f->total_ms;
		if (f->result == UPSTREAM_OK)
			as->note->upstream_status = (int)f->status;
	}
	/* a failure or a refusal: a stored answer stands in, if allowed (for a
	 * no-cache refresh, only a fresh one in place of our own refusal) */
	if ((f->failed || !f->asked) && (!w->refresh || (w->revalidate && !f->asked)) &&
	    f->refusal != ADMIT_ABANDONED && f->refusal != REFUSED_UNAUTHORIZED) {
		struct serve_how how = {
			.max_stale_ms = w->refresh ? -1 : stale_allowance(as, f->refusal),
			.show_detail = w->refresh,
			.fwd_status = !f->asked ? 0
				      : f->result == UPSTREAM_OK ? (int)f->status
				      : upstream_result_status(f->result),
			.detail = refusal_of(f->refusal)->detail,
			.collapsed = w->collapsed,
		};

		if (answer_stored(as, req, w->id, &how) == SERVED) {
			log_stale(as, w, how.detail);
			return;
		}
	}
	if (!f->asked) {
		const struct refusal *why = refusal_of(f->refusal);

		snprintf(status, sizeof(status), ANSWER_STATUS_NAME "; detail=%s%s",
			 why->detail, collapsed);
		evhttp_add_header(out, "Cache-Status", status);
		if (f->refusal == REFUSED_OVERLOADED)
			add_retry_after(req, f->retry_after_ms);
		if (why->limited) {
			add_limit_headers(as->cfg, req, (enum admit_refusal)f->refusal,
					  f->retry_after_ms);
			answer_error(as, req, why->status, why->error, "limit",
				     admit_limit_name((enum admit_refusal)f->refusal),
				     why->message);
		} else {
			answer_error(as, req, why->status, why->error, NULL, NULL, why->message);
		}
	} else if (f->result != UPSTREAM_OK) {
		int code = upstream_result_status(f->result);

		snprintf(status, sizeof(status), ANSWER_STATUS_NAME "; fwd=%s%s", fwd,
			 collapsed);
		evhttp_add_header(out, "Cache-Status", status);
		answer_error(as, req, code,
			     code == 504 ? "gateway_timeout"
			     : code == 503 ? "shutting_down" : "bad_gateway",
			     NULL, NULL, f->error);
	} else if (f->malformed) {
		snprintf(status, sizeof(status), ANSWER_STATUS_NAME "; fwd=%s; fwd-status=%ld%s",
			 fwd, f->status, collapsed);
		evhttp_add_header(out, "Cache-Status", status);
		answer_error(as, req, 502, "bad_gateway", NULL, NULL,
			     "the upstream answered 200 with a body that is not a JSON array");
	} else {
		struct evbuffer *body = NULL;
		enum encoding enc = ENC_IDENTITY;
		const char *data = f->body;
		size_t len = f->body_len;

		for (size_t i = 0; i < f->n_headers; i++)
			evhttp_add_header(out, f->headers[i].name, f->headers[i].value);
		if (f->stored && f->status == 200) { /* a cacheable answer: negotiated */
			unsigned mask = 0;

			for (int k = ENC_GZIP; k < ENC_N; k++)
				if (f->enc[k])
					mask |= ENC_BIT(k);
			enc = negotiate(req, mask);
			if (enc != ENC_IDENTITY) {
				data = (const char *)f->enc[enc];
				len = f->enc_len[enc];
			}
		}
		snprintf(status, sizeof(status),
			 ANSWER_STATUS_NAME "; fwd=%s; fwd-status=%ld%s%s", fwd, f->status,
			 w->collapsed ? "; collapsed" : f->stored ? "; stored" : "",
			 f->widened ? "; detail=widened" : "");
		evhttp_add_header(out, "Cache-Status", status);
		if (f->stored) {
			format_etag(etag, f->etag, enc);
			evhttp_add_header(out, "ETag", etag);
			if (etag_matches(req, etag)) { /* a refresh the client has */
				answer_send(as, req, 304, NULL);
				return;
			}
		}
		if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
			set_content_length(out, len);
		} else if (len > 0) {
			/* every waiter on every loop references the one body */
			body = evbuffer_new();
			AN(body);
			fetched_hold((struct fetched *)f);
			CHECK(evbuffer_add_reference(body, data, len, release_fetched,
						     (void *)f) == 0);
		}
		answer_send(as, req, (int)f->status, body);
		if (body)
			evbuffer_free(body);
	}
}
