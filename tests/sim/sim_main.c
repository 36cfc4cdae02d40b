/*
 * contacts-sim: a simulator of the vendor's GET /api/public/contacts for
 * tests and offline development (docs/simulator.md).
 *
 * One libevent loop, one global `sim` state. A request to the endpoint goes:
 *   method check (405) -> count it (total, per key, in_flight, the ring of
 *   the last STATS_RECENT) -> the first queued fault that applies to its key,
 *   if any, is played -> else 401 / 400 / 200 from sim_data -> answered now,
 *   or after the configured latency.
 *
 * Requests that are not answered inside their callback (latency, and the
 * faults reset, hang, truncated) are held in a struct pending, on the list
 * sim.pending, with a timer. Its life:
 *   WAITING --timer--> answered, dropped or reset: freed;
 *   WAITING --timer--> (truncated) HALF_SENT --written--> connection closed: freed;
 *   WAITING or HALF_SENT --the connection dies first (client left, read
 *   timeout, exit)--> freed by the connection's close callback, which also
 *   frees the request if evhttp detached it from the connection.
 * Invariants: a pending's connection has the close callback set to it and
 * to nothing else; in_flight counts requests counted and not yet answered,
 * dropped or abandoned, each decremented exactly once (pending.done).
 * Connections are freed only from timer or write callbacks, never inside the
 * request callback that evhttp is still running.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tests/sim/sim_data.h"

#define SIM_PATH "/api/public/contacts"
#define JSON_TYPE "application/json; charset=utf-8"
#define STATS_RECENT 256         /* requests remembered by /__sim/stats */
#define RECENT_QUERY_MAX 2048    /* bytes of a remembered raw query, NUL included */
#define FAULTS_MAX 32            /* queued faults */
#define HEADERS_MAX 16384        /* bytes of a request's headers */
#define BODY_MAX 65536           /* bytes of a request's body */
#define HOST_MAX 256
#define KEYS_ARG_MAX (SIM_KEYS_MAX * SIM_KEY_MAX)
#define LATENCY_MAX_MS 600000L
#define HANG_MAX_MS 600000L
#define HANG_DEFAULT_MS 60000L
#define COUNT_MAX 1000000L
#define RETRY_AFTER_MAX 86400L
#define NOW_MAX_S 253402300799UL /* 9999-12-31T23:59:59Z */
#define PENDING_MAGIC 0x50454e44u

/* Aborts when a struct that came through void * is not what it claims. */
#define CHECK_OBJ(p, m) do { if ((p) == NULL || (p)->magic != (m)) abort(); } while (0)
/* Aborts when a small allocation or an event setup fails. */
#define AN(x) do { if ((x) == NULL) abort(); } while (0)

/*
 * Fault kinds. From F_TWO_TYPES on they are hostile answers outside the
 * contract (docs/simulator.md): the request's real answer with its headers
 * damaged, or a status the contract does not have. F_NONE is an answer as
 * the contract says.
 */
enum fault_kind {
	F_STATUS, F_RESET, F_HANG, F_429, F_MALFORMED, F_TRUNCATED,
	F_TWO_TYPES, F_SAME_TYPES, F_TWO_LENGTHS, F_LONG_TYPE, F_HTML_TYPE,
	F_302, F_302_BARE, F_304, F_204, F_999,
	F_N,
	F_NONE = F_N
};
static const char *const fault_names[F_N] = {
	"status", "reset", "hang", "429", "malformed", "truncated",
	"two-types", "same-types", "two-lengths", "long-type", "html-type",
	"302", "302-bare", "304", "204", "999",
};
#define LONG_TYPE_BYTES 300 /* the long-type fault's Content-Type */

struct fault {
	enum fault_kind kind;
	long count;            /* requests left; 0 = until cleared */
	char key[SIM_KEY_MAX]; /* "" = any key */
	int status;            /* F_STATUS */
	long retry_after;      /* F_429, seconds */
	long ms;               /* F_HANG */
};

struct recent {
	int64_t t_ms;          /* wall clock */
	char key[SIM_KEY_MAX];
	char query[RECENT_QUERY_MAX];
	char request_id[72];   /* its X-Request-Id header, or "" */
};

enum pending_action { P_ANSWER, P_CLOSE, P_RESET, P_TRUNCATE };

struct pending {
	unsigned magic;
	struct evhttp_request *req;  /* not owned while attached to a connection */
	enum pending_action action;
	enum fault_kind shape;       /* P_ANSWER: how its headers look */
	int status;                  /* P_ANSWER, P_TRUNCATE */
	struct evbuffer *body;       /* owned; P_ANSWER, P_TRUNCATE */
	struct event *timer;         /* owned */
	int done;                    /* in_flight already decremented */
	struct pending *prev, *next; /* sim.pending */
};

static struct {
	struct event_base *base;
	struct evhttp *http;
	struct sim_org orgs[SIM_KEYS_MAX];
	size_t n_orgs;
	int64_t now_ms;        /* the data set's clock, fixed at start */
	long latency_ms;
	struct fault faults[FAULTS_MAX]; /* FIFO: the first that applies plays */
	size_t n_faults;
	long total, by_key[SIM_KEYS_MAX], in_flight, max_concurrency;
	struct recent recent[STATS_RECENT]; /* ring */
	size_t recent_next, recent_n;
	struct pending *pending;
} sim;

static int64_t wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- answering ---- */

/*
 * Sends `code` with `body` (borrowed, drained) and the headers of `shape`:
 * F_NONE the contract's (one JSON Content-Type); a hostile kind damages
 * them or replaces the status (302, 304, 204: no body; 999).
 */
static void send_shaped(struct evhttp_request *req, int code, struct evbuffer *body,
			enum fault_kind shape)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	const char *uri = evhttp_request_get_uri(req);
	size_t len = evbuffer_get_length(body);
	char text[LONG_TYPE_BYTES + 1];
	const char *type = JSON_TYPE;

	switch (shape) {
	case F_TWO_TYPES:
		evhttp_add_header(out, "Content-Type", JSON_TYPE);
		type = "text/html; charset=utf-8";
		break;
	case F_SAME_TYPES:
		evhttp_add_header(out, "Content-Type", JSON_TYPE);
		break;
	case F_TWO_LENGTHS: /* the true length first, then one more */
		snprintf(text, sizeof(text), "%zu", len);
		evhttp_add_header(out, "Content-Length", text);
		snprintf(text, sizeof(text), "%zu", len + 1);
		evhttp_add_header(out, "Content-Length", text);
		break;
	case F_LONG_TYPE: /* application/json; charset=utf-8; x=aaa...: 300 bytes */
		memset(text, 'a', LONG_TYPE_BYTES);
		memcpy(text, JSON_TYPE "; x=", sizeof(JSON_TYPE "; x=") - 1);
		text[LONG_TYPE_BYTES] = '\0';
		type = text;
		break;
	case F_HTML_TYPE:
		type = "text/html; charset=utf-8";
		break;
	case F_302:
		evhttp_add_header(out, "Location", uri ? uri : SIM_PATH);
		/* fall through */
	case F_302_BARE:
		code = 302;
		evbuffer_drain(body, len);
		evbuffer_add_printf(body, "{\"statusCode\":302,\"message\":\"Found\"}");
		break;
	case F_304:
	case F_204:
		code = shape == F_304 ? 304 : 204;
		evbuffer_drain(body, len); /* neither has a body */
		type = NULL;
		break;
	case F_999:
		code = 999;
		break;
	default:
		break;
	}
	if (type)
		evhttp_add_header(out, "Content-Type", type);
	evhttp_send_reply(req, code, NULL, body);
}

/* Sends `code` with `body` (borrowed, drained) as JSON. */
static void send_buffer(struct evhttp_request *req, int code, struct evbuffer *body)
{
	send_shaped(req, code, body, F_NONE);
}

static void send_json(struct evhttp_request *req, int code, const char *json)
{
	struct evbuffer *b = evbuffer_new();

	AN(b);
	evbuffer_add(b, json, strlen(json));
	send_buffer(req, code, b);
	evbuffer_free(b);
}

/* A 400 of the control API or the contract, `why` plain ASCII without quotes. */
static void send_bad_request(struct evhttp_request *req, const char *why)
{
	struct evbuffer *b = evbuffer_new();

	AN(b);
	evbuffer_add_printf(b, "{\"statusCode\":400,\"message\":\"%s\",\"error\":\"Bad Request\"}",
			    why);
	send_buffer(req, 400, b);
	evbuffer_free(b);
}

static void set_nodelay(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	int one = 1;

	if (evcon != NULL)
		(void)setsockopt(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)),
				 IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A counted request was answered, dropped or abandoned. */
static void done_one(void)
{
	sim.in_flight--;
}

/*
 * Closes `evcon` with a TCP RST and no answer. SO_LINGER 0 alone is not
 * enough: evhttp shuts the write side down (a FIN) before it closes. So the
 * socket is closed here, by dup2()ing an unconnected placeholder over its
 * descriptor, which evhttp then shuts down and closes harmlessly.
 */
static void reset_connection(struct evhttp_connection *evcon)
{
	evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	struct linger lg = {1, 0};
	int placeholder;

	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0) {
		placeholder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (placeholder >= 0) {
			(void)dup2(placeholder, fd);
			close(placeholder);
		}
	}
	evhttp_connection_free(evcon); /* frees the request with it */
}

static void pending_free(struct pending *p)
{
	CHECK_OBJ(p, PENDING_MAGIC);
	if (p->prev)
		p->prev->next = p->next;
	else
		sim.pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	if (p->body)
		evbuffer_free(p->body);
	event_free(p->timer);
	p->magic = 0;
	free(p);
}

/* The connection of a pending request is going away before we finished. */
static void on_pending_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct pending *p = arg;

	(void)evcon;
	CHECK_OBJ(p, PENDING_MAGIC);
	if (evhttp_request_get_connection(p->req) == NULL)
		evhttp_request_free(p->req); /* detached by evhttp: ours now */
	if (!p->done)
		done_one();
	pending_free(p);
}

/* The first half of a truncated answer is in the kernel: hang up. */
static void on_truncated_written(struct evhttp_connection *evcon, void *arg)
{
	struct pending *p = arg;

	CHECK_OBJ(p, PENDING_MAGIC);
	evhttp_connection_set_closecb(evcon, NULL, NULL);
	pending_free(p);
	evhttp_connection_free(evcon); /* a FIN mid-body: the client sees a short answer */
}

/* Sends the headers of the whole body of p and half of its bytes. */
static void send_truncated(struct pending *p)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(p->req);
	size_t len = evbuffer_get_length(p->body);
	struct evbuffer *half;
	char clen[32];

	snprintf(clen, sizeof(clen), "%zu", len);
	evhttp_add_header(out, "Content-Type", JSON_TYPE);
	evhttp_add_header(out, "Content-Length", clen);  /* no chunking then */
	half = evbuffer_new();
	AN(half);
	evbuffer_remove_buffer(p->body, half, len / 2); /* the first half */
	evhttp_send_reply_start(p->req, p->status, NULL);
	evhttp_send_reply_chunk_with_cb(p->req, half, on_truncated_written, p);
	evbuffer_free(half);
}

static void on_pending_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pending *p = arg;
	struct evhttp_connection *evcon;

	(void)fd;
	(void)what;
	CHECK_OBJ(p, PENDING_MAGIC);
	evcon = evhttp_request_get_connection(p->req);
	if (evcon == NULL) { /* the client left unnoticed by the close callback */
		evhttp_request_free(p->req);
		done_one();
		pending_free(p);
		return;
	}
	done_one();
	p->done = 1;
	if (p->action == P_TRUNCATE) {
		send_truncated(p); /* p lives on until written or closed */
		return;
	}
	evhttp_connection_set_closecb(evcon, NULL, NULL);
	switch (p->action) {
	case P_ANSWER:
		send_shaped(p->req, p->status, p->body, p->shape);
		break;
	case P_CLOSE:
		evhttp_connection_free(evcon);
		break;
	case P_RESET:
		reset_connection(evcon);
		break;
	case P_TRUNCATE:
		break;
	}
	pending_free(p);
}

/*
 * Holds `req` for `ms`, then plays `action`. Takes ownership of `body`
 * (may be NULL for P_CLOSE and P_RESET). Returns the pending, owned by
 * sim.pending (answers have F_NONE's headers unless its shape is changed).
 */
static struct pending *pending_start(struct evhttp_request *req, long ms,
				     enum pending_action action, int status,
				     struct evbuffer *body)
{
	struct pending *p = calloc(1, sizeof(*p));
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	AN(p);
	AN(evcon);
	p->magic = PENDING_MAGIC;
	p->req = req;
	p->action = action;
	p->shape = F_NONE;
	p->status = status;
	p->body = body;
	p->timer = evtimer_new(sim.base, on_pending_timer, p);
	AN(p->timer);
	p->next = sim.pending;
	if (sim.pending)
		sim.pending->prev = p;
	sim.pending = p;
	evhttp_connection_set_closecb(evcon, on_pending_conn_close, p);
	evtimer_add(p->timer, &tv);
	return p;
}

/* Answers a counted request now, or after the latency, with the headers of
 * `shape` (send_shaped). Takes `body`. */
static void respond_shaped(struct evhttp_request *req, int code, struct evbuffer *body,
			   enum fault_kind shape)
{
	if (sim.latency_ms > 0) {
		pending_start(req, sim.latency_ms, P_ANSWER, code, body)->shape = shape;
		return;
	}
	send_shaped(req, code, body, shape);
	evbuffer_free(body);
	done_one();
}

/* Answers a counted request now, or after the latency. Takes `body`. */
static void respond(struct evhttp_request *req, int code, struct evbuffer *body)
{
	respond_shaped(req, code, body, F_NONE);
}

static void respond_json(struct evhttp_request *req, int code, const char *json)
{
	struct evbuffer *b = evbuffer_new();

	AN(b);
	evbuffer_add(b, json, strlen(json));
	respond(req, code, b);
}

/* ---- the endpoint ---- */

/* The organisation of `key`, or NULL. */
static const struct sim_org *find_org(const char *key, size_t *index)
{
	for (size_t i = 0; key && i < sim.n_orgs; i++) {
		if (strcmp(sim.orgs[i].key, key) == 0) {
			*index = i;
			return &sim.orgs[i];
		}
	}
	return NULL;
}

/* The answer a request gets when no fault plays: 401, 400 or 200 with its
 * JSON body appended to `b`. Returns the status. */
static int real_answer(const struct sim_org *org, const char *raw, struct evbuffer *b)
{
	char why[256];
	int code;

	if (org == NULL) {
		evbuffer_add_printf(b, "{\"statusCode\":401,"
				       "\"message\":\"Invalid or missing API key\"}");
		return 401;
	}
	code = sim_query(org, raw, sim.now_ms, b, why, sizeof(why));
	if (code != 200)
		evbuffer_add_printf(b, "{\"statusCode\":%d,\"message\":\"%s\","
				       "\"error\":\"Bad Request\"}", code, why);
	return code;
}

/*
 * The fault to play on a request with `key`, consuming one of its count.
 * Returns a copy in *out, or 0 when none applies.
 */
static int fault_take(const char *key, struct fault *out)
{
	for (size_t i = 0; i < sim.n_faults; i++) {
		struct fault *f = &sim.faults[i];

		if (f->key[0] && strcmp(f->key, key) != 0)
			continue;
		*out = *f;
		if (f->count > 0 && --f->count == 0) {
			memmove(f, f + 1, (sim.n_faults - i - 1) * sizeof(*f));
			sim.n_faults--;
		}
		return 1;
	}
	return 0;
}

static void count_request(const char *key, const char *raw, const char *request_id)
{
	struct recent *r = &sim.recent[sim.recent_next];
	size_t index;

	sim.total++;
	if (find_org(key, &index))
		sim.by_key[index]++;
	r->t_ms = wall_ms();
	snprintf(r->key, sizeof(r->key), "%s", key);
	snprintf(r->query, sizeof(r->query), "%s", raw);
	snprintf(r->request_id, sizeof(r->request_id), "%s", request_id ? request_id : "");
	sim.recent_next = (sim.recent_next + 1) % STATS_RECENT;
	if (sim.recent_n < STATS_RECENT)
		sim.recent_n++;
	if (++sim.in_flight > sim.max_concurrency)
		sim.max_concurrency = sim.in_flight;
}

static void play_fault(struct evhttp_request *req, const struct fault *f,
		       const struct sim_org *org, const char *raw)
{
	struct evbuffer *b;
	char text[128], why[256];

	switch (f->kind) {
	case F_STATUS:
		snprintf(text, sizeof(text), "{\"statusCode\":%d,\"message\":\"injected fault\"}",
			 f->status);
		respond_json(req, f->status, text);
		return;
	case F_429:
		snprintf(text, sizeof(text), "%ld", f->retry_after);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", text);
		respond_json(req, 429,
			     "{\"statusCode\":429,\"message\":\"ThrottlerException: Too Many Requests\"}");
		return;
	case F_MALFORMED:
		respond_json(req, 200, "[{\"id\":\"broken\"");
		return;
	case F_RESET:
		/* never free the connection inside its request callback */
		pending_start(req, sim.latency_ms, P_RESET, 0, NULL);
		return;
	case F_HANG:
		pending_start(req, f->ms, P_CLOSE, 0, NULL);
		return;
	case F_TRUNCATED:
		b = evbuffer_new();
		AN(b);
		if (org == NULL || sim_query(org, raw, sim.now_ms, b, why, sizeof(why)) != 200) {
			evbuffer_drain(b, evbuffer_get_length(b));
			evbuffer_add(b, "[{\"id\":\"truncated answer\"}]", 27);
		}
		pending_start(req, sim.latency_ms, P_TRUNCATE, 200, b);
		return;
	case F_TWO_TYPES:
	case F_SAME_TYPES:
	case F_TWO_LENGTHS:
	case F_LONG_TYPE:
	case F_HTML_TYPE:
	case F_302:
	case F_302_BARE:
	case F_304:
	case F_204:
	case F_999:
		b = evbuffer_new();
		AN(b);
		respond_shaped(req, real_answer(org, raw, b), b, f->kind);
		return;
	case F_N:
		break;
	}
	abort();
}

static void handle_contacts(struct evhttp_request *req)
{
	const char *key = evhttp_find_header(evhttp_request_get_input_headers(req),
					     "x-api-key");
	const char *raw = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	const struct sim_org *org;
	struct evbuffer *b;
	struct fault f;
	size_t index;

	if (key == NULL)
		key = "";
	if (raw == NULL)
		raw = "";
	count_request(key, raw,
		      evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id"));
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
		send_json(req, 405, "{\"statusCode\":405,\"message\":\"Method Not Allowed\"}");
		done_one();
		return;
	}
	org = find_org(key, &index);
	if (fault_take(key, &f)) {
		play_fault(req, &f, org, raw);
		return;
	}
	b = evbuffer_new();
	AN(b);
	respond(req, real_answer(org, raw, b), b);
}

/* ---- the control API ---- */

/*
 * A control argument: absent gives `def`; else decimal digits only, in
 * [min, max]. Returns 0, or -1 with `why` written.
 */
static int arg_long(struct evkeyvalq *args, const char *name, long def, long min,
		    long max, long *out, char *why, size_t wn)
{
	const char *v = evhttp_find_header(args, name);
	char *end;
	long n;

	if (v == NULL) {
		*out = def;
		return 0;
	}
	errno = 0;
	n = strtol(v, &end, 10);
	if (v[0] < '0' || v[0] > '9' || errno || *end || n < min || n > max) {
		snprintf(why, wn, "%s must be an integer between %ld and %ld", name, min, max);
		return -1;
	}
	*out = n;
	return 0;
}

static void handle_fault(struct evhttp_request *req, struct evkeyvalq *args)
{
	const char *kind = evhttp_find_header(args, "kind");
	const char *key = evhttp_find_header(args, "key");
	struct fault f;
	char why[128];
	long status;
	int k;

	memset(&f, 0, sizeof(f));
	for (k = 0; kind && k < F_N && strcmp(fault_names[k], kind) != 0; k++)
		;
	if (kind == NULL || k == F_N) {
		send_bad_request(req, "kind must be one of: status, reset, hang, 429, "
				      "malformed, truncated, two-types, same-types, "
				      "two-lengths, long-type, html-type, 302, 302-bare, "
				      "304, 204, 999");
		return;
	}
	f.kind = (enum fault_kind)k;
	if (arg_long(args, "count", 1, 0, COUNT_MAX, &f.count, why, sizeof(why)) ||
	    arg_long(args, "status", 500, 400, 599, &status, why, sizeof(why)) ||
	    arg_long(args, "retry_after", 1, 0, RETRY_AFTER_MAX, &f.retry_after, why,
		     sizeof(why)) ||
	    arg_long(args, "ms", HANG_DEFAULT_MS, 0, HANG_MAX_MS, &f.ms, why, sizeof(why))) {
		send_bad_request(req, why);
		return;
	}
	f.status = (int)status;
	if (key != NULL && (key[0] == '\0' || strlen(key) >= sizeof(f.key))) {
		send_bad_request(req, "key must be 1 to 127 bytes");
		return;
	}
	if (sim.n_faults == FAULTS_MAX) {
		send_bad_request(req, "too many queued faults (at most 32)");
		return;
	}
	snprintf(f.key, sizeof(f.key), "%s", key ? key : "");
	sim.faults[sim.n_faults++] = f;
	send_json(req, 200, "{\"ok\":true}");
}

static void handle_latency(struct evhttp_request *req, struct evkeyvalq *args)
{
	char why[128];
	long ms;

	if (evhttp_find_header(args, "ms") == NULL) {
		send_bad_request(req, "ms is required");
		return;
	}
	if (arg_long(args, "ms", 0, 0, LATENCY_MAX_MS, &ms, why, sizeof(why))) {
		send_bad_request(req, why);
		return;
	}
	sim.latency_ms = ms;
	send_json(req, 200, "{\"ok\":true}");
}

static void handle_reset(struct evhttp_request *req)
{
	sim.total = 0;
	memset(sim.by_key, 0, sizeof(sim.by_key));
	sim.max_concurrency = sim.in_flight; /* what is in flight stays so */
	sim.recent_n = sim.recent_next = 0;
	sim.n_faults = 0;
	sim.latency_ms = 0;
	send_json(req, 200, "{\"ok\":true}");
}

static void handle_stats(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();

	AN(b);
	evbuffer_add_printf(b, "{\"total\":%ld,\"by_key\":{", sim.total);
	for (size_t i = 0; i < sim.n_orgs; i++) {
		evbuffer_add(b, i ? ",\"" : "\"", i ? 2 : 1);
		sim_json_string(b, sim.orgs[i].key, strlen(sim.orgs[i].key));
		evbuffer_add_printf(b, "\":%ld", sim.by_key[i]);
	}
	evbuffer_add_printf(b, "},\"in_flight\":%ld,\"max_concurrency\":%ld,\"recent\":[",
			    sim.in_flight, sim.max_concurrency);
	for (size_t i = 0; i < sim.recent_n; i++) {
		const struct recent *r =
			&sim.recent[(sim.recent_next + STATS_RECENT - sim.recent_n + i) %
				    STATS_RECENT];

		evbuffer_add_printf(b, "%s{\"t_ms\":%lld,\"key\":\"", i ? "," : "",
				    (long long)r->t_ms);
		sim_json_string(b, r->key, strlen(r->key));
		evbuffer_add(b, "\",\"query\":\"", 11);
		sim_json_string(b, r->query, strlen(r->query));
		evbuffer_add(b, "\",\"request_id\":\"", 16);
		sim_json_string(b, r->request_id, strlen(r->request_id));
		evbuffer_add(b, "\"}", 2);
	}
	evbuffer_add(b, "]}", 2);
	send_buffer(req, 200, b);
	evbuffer_free(b);
}

/* The organisations: what a developer needs to build filters (pipeline ids). */
static void handle_orgs(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();

	AN(b);
	evbuffer_add(b, "{", 1);
	for (size_t i = 0; i < sim.n_orgs; i++) {
		const struct sim_org *o = &sim.orgs[i];

		evbuffer_add(b, i ? ",\"" : "\"", i ? 2 : 1);
		sim_json_string(b, o->key, strlen(o->key));
		evbuffer_add_printf(b, "\":{\"client_id\":\"%s\",\"contacts\":%zu,\"pipelines\":[",
				    o->client_id, o->n);
		for (int p = 0; p < SIM_PIPELINES; p++) {
			evbuffer_add_printf(b, "%s{\"id\":\"%s\",\"stages\":[", p ? "," : "",
					    o->pipeline_id[p]);
			for (int st = 0; st < SIM_STAGES_PER_PIPELINE; st++)
				evbuffer_add_printf(b, "%s\"%s\"", st ? "," : "",
						    o->stage_id[p * SIM_STAGES_PER_PIPELINE + st]);
			evbuffer_add(b, "]}", 2);
		}
		evbuffer_add(b, "]}", 2);
	}
	evbuffer_add(b, "}", 1);
	send_buffer(req, 200, b);
	evbuffer_free(b);
}

static void handle_control(struct evhttp_request *req, const char *path)
{
	static const char *const post_paths[] = {
		"/__sim/reset", "/__sim/latency", "/__sim/fault", "/__sim/faults/clear",
	};
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq args;
	size_t i;

	if (strcmp(path, "/__sim/stats") == 0 || strcmp(path, "/__sim/orgs") == 0) {
		if (cmd != EVHTTP_REQ_GET)
			send_json(req, 405, "{\"statusCode\":405,\"message\":\"Method Not Allowed\"}");
		else if (path[7] == 's')
			handle_stats(req);
		else
			handle_orgs(req);
		return;
	}
	for (i = 0; i < sizeof(post_paths) / sizeof(post_paths[0]); i++)
		if (strcmp(path, post_paths[i]) == 0)
			break;
	if (i == sizeof(post_paths) / sizeof(post_paths[0])) {
		send_json(req, 404, "{\"statusCode\":404,\"message\":\"Not Found\"}");
		return;
	}
	if (cmd != EVHTTP_REQ_POST) {
		send_json(req, 405, "{\"statusCode\":405,\"message\":\"Method Not Allowed\"}");
		return;
	}
	TAILQ_INIT(&args);
	if (evhttp_parse_query_str(query ? query : "", &args) != 0) {
		send_bad_request(req, "malformed query string");
	} else if (i == 0) {
		handle_reset(req);
	} else if (i == 1) {
		handle_latency(req, &args);
	} else if (i == 2) {
		handle_fault(req, &args);
	} else {
		sim.n_faults = 0;
		send_json(req, 200, "{\"ok\":true}");
	}
	evhttp_clear_headers(&args);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

	(void)arg;
	set_nodelay(req);
	if (path == NULL)
		path = "";
	if (strcmp(path, SIM_PATH) == 0)
		handle_contacts(req);
	else if (strncmp(path, "/__sim/", 7) == 0)
		handle_control(req, path);
	else
		send_json(req, 404, "{\"statusCode\":404,\"message\":\"Not Found\"}");
}

/* ---- the command line ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	event_base_loopexit(sim.base, NULL);
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: contacts-sim [--listen HOST:PORT] [--seed N] [--contacts N]\n"
		"                    [--now TIME] [--keys K1,K2,...] [--latency-ms N]\n"
		"                    [--data normal|adversarial] [--help]\n"
		"A deterministic simulator of GET /api/public/contacts (docs/simulator.md).\n"
		"  --listen HOST:PORT  default 127.0.0.1:8090; port 0: any free port\n"
		"  --seed N            data set seed, default 42\n"
		"  --contacts N        contacts per key, default 2000, at most %d\n"
		"  --now TIME          the data set's clock: ISO 8601 (2026-01-01T00:00:00Z)\n"
		"                      or epoch seconds; default: the wall clock at start\n"
		"  --keys K1,K2,...    API keys, each its own organisation (at most %d),\n"
		"                      default sim-key-alpha,sim-key-bravo,sim-key-charlie\n"
		"  --latency-ms N      delay every answer by N ms (at most %ld), default 0\n"
		"  --data MODE         normal (default) or adversarial: equal timestamps\n"
		"                      on day/hour/second grids, hostile names\n"
		"Control API: GET /__sim/stats, GET /__sim/orgs, POST /__sim/reset, /__sim/latency?ms=N,\n"
		"/__sim/fault?kind=K[&count=N][&key=K][&status=S][&retry_after=S][&ms=MS],\n"
		"/__sim/faults/clear.\n",
		SIM_CONTACTS_MAX, SIM_KEYS_MAX, LATENCY_MAX_MS);
}

static int bad_arg(const char *what, const char *v)
{
	fprintf(stderr, "contacts-sim: bad %s '%s' (see --help)\n", what, v);
	return 2;
}

/* Decimal digits only, at most max. Returns 0, or -1. */
static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long n;

	if (v[0] < '0' || v[0] > '9')
		return -1;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || *end || n > max)
		return -1;
	*out = n;
	return 0;
}

/* HOST:PORT or [V6HOST]:PORT into host (brackets removed) and port. */
static int parse_listen(const char *v, char host[HOST_MAX], uint64_t *port)
{
	const char *colon = strrchr(v, ':');
	const char *h = v;
	size_t hlen;

	if (colon == NULL || parse_u64(colon + 1, 65535, port) != 0)
		return -1;
	hlen = (size_t)(colon - v);
	if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']')
		h++, hlen -= 2;
	if (hlen == 0 || hlen >= HOST_MAX)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	return 0;
}

/* Splits and checks --keys: visible ASCII, no duplicates, none empty. */
static int parse_keys(const char *v, char keys[SIM_KEYS_MAX][SIM_KEY_MAX], size_t *n)
{
	*n = 0;
	for (;;) {
		size_t len = strcspn(v, ",");

		if (len == 0 || len >= SIM_KEY_MAX || *n == SIM_KEYS_MAX)
			return -1;
		for (size_t i = 0; i < len; i++)
			if (v[i] < 0x21 || v[i] > 0x7e)
				return -1;
		memcpy(keys[*n], v, len);
		keys[*n][len] = '\0';
		for (size_t i = 0; i < *n; i++)
			if (strcmp(keys[i], keys[*n]) == 0)
				return -1;
		(*n)++;
		if (v[len] == '\0')
			return 0;
		v += len + 1;
	}
}

int main(int argc, char **argv)
{
	static char keys[SIM_KEYS_MAX][SIM_KEY_MAX];
	char host[HOST_MAX] = "127.0.0.1";
	uint64_t port = 8090, seed = 42, contacts = 2000, n;
	size_t n_keys;
	int adversarial = 0;
	struct evhttp_bound_socket *bound;
	struct event *sigterm, *sigint;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (parse_keys("sim-key-alpha,sim-key-bravo,sim-key-charlie", keys, &n_keys) != 0)
		abort();
	sim.now_ms = wall_ms();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strncmp(a, "--", 2) != 0 || strchr(a, '=') != NULL ||
		    !(strcmp(a, "--listen") == 0 || strcmp(a, "--seed") == 0 ||
		      strcmp(a, "--contacts") == 0 || strcmp(a, "--latency-ms") == 0 ||
		      strcmp(a, "--now") == 0 || strcmp(a, "--keys") == 0 ||
		      strcmp(a, "--data") == 0))
			return bad_arg("option", a);
		if (v == NULL)
			return bad_arg("option (missing value)", a);
		i++;
		if (strcmp(a, "--listen") == 0) {
			if (parse_listen(v, host, &port) != 0)
				return bad_arg("--listen", v);
		} else if (strcmp(a, "--seed") == 0) {
			if (parse_u64(v, UINT64_MAX, &seed) != 0)
				return bad_arg("--seed", v);
		} else if (strcmp(a, "--contacts") == 0) {
			if (parse_u64(v, SIM_CONTACTS_MAX, &contacts) != 0)
				return bad_arg("--contacts", v);
		} else if (strcmp(a, "--latency-ms") == 0) {
			if (parse_u64(v, LATENCY_MAX_MS, &n) != 0)
				return bad_arg("--latency-ms", v);
			sim.latency_ms = (long)n;
		} else if (strcmp(a, "--now") == 0) {
			if (parse_u64(v, NOW_MAX_S, &n) == 0)
				sim.now_ms = (int64_t)n * 1000;
			else if (sim_parse_time(v, strlen(v), &sim.now_ms) != 0)
				return bad_arg("--now", v);
		} else if (strcmp(a, "--data") == 0) {
			if (strcmp(v, "normal") != 0 && strcmp(v, "adversarial") != 0)
				return bad_arg("--data", v);
			adversarial = strcmp(v, "adversarial") == 0;
		} else if (parse_keys(v, keys, &n_keys) != 0) {
			return bad_arg("--keys", v);
		}
	}
	for (size_t i = 0; i < n_keys; i++) {
		if (sim_org_build(&sim.orgs[i], keys[i], seed, (size_t)contacts,
				  sim.now_ms) != 0) {
			fprintf(stderr, "contacts-sim: out of memory\n");
			return 1;
		}
		if (adversarial)
			sim_org_adversarial(&sim.orgs[i], seed, sim.now_ms);
		sim.n_orgs++;
	}
	signal(SIGPIPE, SIG_IGN);
	sim.base = event_base_new();
	AN(sim.base);
	sim.http = evhttp_new(sim.base);
	AN(sim.http);
	evhttp_set_gencb(sim.http, on_request, NULL);
	evhttp_set_max_headers_size(sim.http, HEADERS_MAX);
	evhttp_set_max_body_size(sim.http, BODY_MAX);
	evhttp_set_allowed_methods(sim.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
				   EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
				   EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	bound = evhttp_bind_socket_with_handle(sim.http, host, (ev_uint16_t)port);
	if (bound == NULL) {
		fprintf(stderr, "contacts-sim: cannot listen on %s:%llu\n", host,
			(unsigned long long)port);
		return 1;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0)
		port = ntohs(ss.ss_family == AF_INET6
				     ? ((struct sockaddr_in6 *)&ss)->sin6_port
				     : ((struct sockaddr_in *)&ss)->sin_port);
	sigterm = evsignal_new(sim.base, SIGTERM, on_signal, NULL);
	sigint = evsignal_new(sim.base, SIGINT, on_signal, NULL);
	AN(sigterm);
	AN(sigint);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	fprintf(stderr, "contacts-sim listening on %s%s%s:%llu\n",
		strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
		(unsigned long long)port);
	fflush(stderr);
	event_base_dispatch(sim.base);

	/* frees every connection; their close callbacks free what they held */
	evhttp_free(sim.http);
	while (sim.pending) /* none expected: each had a connection */
		pending_free(sim.pending);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(sim.base);
	for (size_t i = 0; i < sim.n_orgs; i++)
		sim_org_free(&sim.orgs[i]);
	return 0;
}
