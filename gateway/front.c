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
 * Pending requests. A request waiting on the upstream is a struct pending on
 * the front's list; it leaves the list exactly once, when it is answered.
 * If the client goes away meanwhile, evhttp detaches the request and frees
 * it when we answer, so the answer path is the same either way.
 */
#include "gateway/front.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "gateway/log.h"
#include "gateway/upstream.h"
#include "policy/query.h"

#define FRONT_MAGIC 0x46524e54u
#define PENDING_MAGIC 0x50454e44u
#define CONTACTS_PATH "/api/public/contacts"
#define HEALTH_PATH "/healthz"
#define API_KEY_MAX 512          /* longest x-api-key accepted */
#define REQUEST_BODY_MAX 1024    /* GET carries no body; refuse big ones */
#define JSON_TYPE "application/json; charset=utf-8"

struct pending {
	unsigned magic;
	struct front *fr;
	struct evhttp_request *req;
	struct upstream_fetch *fetch;
	struct pending *prev, *next;
};

struct front {
	unsigned magic;
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct upstream *up;
	const struct cg_config *cfg;
	unsigned port;
	struct timespec started;
	/* connection accounting, see the file comment */
	struct evhttp_connection **conns;
	size_t conns_size;
	long n_conns;
	/* requests waiting on the upstream */
	struct pending *pending;
	size_t n_pending;
	size_t n_flushing; /* answered upstream replies not yet fully written */
	int draining;
	void (*drained)(void *arg);
	void *drained_arg;
};

/* Answers `req` with `code` and a JSON error body. Always answers. */
static void reply_error(struct evhttp_request *req, int code, const char *error,
			const char *parameter, const char *message)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *body = evbuffer_new();
	cJSON *obj = cJSON_CreateObject();
	char *text;

	if (body == NULL || obj == NULL)
		abort();
	cJSON_AddStringToObject(obj, "error", error);
	if (parameter)
		cJSON_AddStringToObject(obj, "parameter", parameter);
	cJSON_AddStringToObject(obj, "message", message);
	text = cJSON_PrintUnformatted(obj);
	if (text == NULL)
		abort();
	evbuffer_add(body, text, strlen(text));
	evhttp_remove_header(out, "Content-Type");
	evhttp_add_header(out, "Content-Type", JSON_TYPE);
	evhttp_send_reply(req, code, NULL, body);
	cJSON_free(text);
	cJSON_Delete(obj);
	evbuffer_free(body);
}

static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct front *fr = arg;
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;

	assert(fr->magic == FRONT_MAGIC);
	if (fd >= 0 && (size_t)fd < fr->conns_size && fr->conns[fd] == evcon) {
		fr->conns[fd] = NULL;
	} else { /* fd already gone: find the entry */
		size_t i;

		for (i = 0; i < fr->conns_size && fr->conns[i] != evcon; i++)
			;
		if (i == fr->conns_size)
			return;
		fr->conns[i] = NULL;
	}
	fr->n_conns--;
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
	if (fd < 0 || (size_t)fd >= fr->conns_size || fr->conns[fd] == evcon)
		return 0;
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
	fr->conns[fd] = evcon;
	fr->n_conns++;
	evhttp_connection_set_closecb(evcon, conn_closed, fr);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

/* Runs the drained callback once nothing is in flight or being written. */
static void maybe_drained(struct front *fr)
{
	if (fr->draining && fr->n_pending == 0 && fr->n_flushing == 0 &&
	    fr->drained) {
		void (*drained)(void *) = fr->drained;

		fr->drained = NULL;
		drained(fr->drained_arg);
	}
}

static void pending_remove(struct pending *p)
{
	struct front *fr = p->fr;

	if (p->prev)
		p->prev->next = p->next;
	else
		fr->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	fr->n_pending--;
	p->magic = 0;
	free(p);
	maybe_drained(fr);
}

static void on_flushed(struct evhttp_request *req, void *arg)
{
	struct front *fr = arg;

	(void)req;
	assert(fr->magic == FRONT_MAGIC);
	fr->n_flushing--;
	maybe_drained(fr);
}

/*
 * Prepares the answer to a request that waited on the upstream: while
 * draining its connection closes after it, and the drain waits until it is
 * written (evhttp tells us through the complete callback; a request whose
 * client already left is freed unsent and not waited for).
 */
static void before_answer(struct front *fr, struct evhttp_request *req)
{
	if (fr->draining)
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Connection", "close");
	if (evhttp_request_get_connection(req) != NULL) {
		fr->n_flushing++;
		evhttp_request_set_on_complete_cb(req, on_flushed, fr);
	}
}

static void on_upstream_done(const struct upstream_response *resp, void *arg)
{
	struct pending *p = arg;
	struct evhttp_request *req = p->req;
	struct evkeyvalq *out;

	assert(p->magic == PENDING_MAGIC);
	p->fetch = NULL;
	before_answer(p->fr, req);
	if (resp->result != UPSTREAM_OK) {
		int code = upstream_result_status(resp->result);

		cglog(CGLOG_WARN, "upstream failed (%d): %s", code, resp->error);
		reply_error(req, code,
			    code == 504 ? "gateway_timeout" : "bad_gateway", NULL,
			    resp->error);
	} else {
		out = evhttp_request_get_output_headers(req);
		for (size_t i = 0; i < resp->n_headers; i++)
			evhttp_add_header(out, resp->headers[i].name,
					  resp->headers[i].value);
		if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
			/* evhttp sends no length for HEAD; say what GET would */
			char len[32];

			snprintf(len, sizeof(len), "%zu", evbuffer_get_length(resp->body));
			evhttp_add_header(out, "Content-Length", len);
		}
		evhttp_send_reply(req, (int)resp->status, NULL, resp->body);
	}
	pending_remove(p);
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

static void handle_contacts(struct front *fr, struct evhttp_request *req)
{
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *raw = evhttp_uri_get_query(uri);
	const char *key, *why;
	struct query q;
	struct query_error qerr;
	struct pending *p;

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

	p = calloc(1, sizeof(*p));
	if (p == NULL)
		abort();
	p->magic = PENDING_MAGIC;
	p->fr = fr;
	p->req = req;
	p->next = fr->pending;
	if (fr->pending)
		fr->pending->prev = p;
	fr->pending = p;
	fr->n_pending++;
	p->fetch = upstream_fetch(fr->up, q.canonical, key, on_upstream_done, p);
	if (p->fetch == NULL) {
		reply_error(req, 502, "bad_gateway", NULL,
			    "could not start the upstream request");
		pending_remove(p);
	}
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
	evhttp_send_reply(req, 200, NULL, body);
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
			struct upstream *up, char *err, size_t err_size)
{
	struct front *fr = calloc(1, sizeof(*fr));
	struct timeval tv;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (fr == NULL)
		abort();
	fr->magic = FRONT_MAGIC;
	fr->base = base;
	fr->up = up;
	fr->cfg = cfg;
	clock_gettime(CLOCK_MONOTONIC, &fr->started);
	fr->conns_size = conns_table_size();
	fr->conns = calloc(fr->conns_size, sizeof(*fr->conns));
	fr->http = evhttp_new(base);
	if (fr->conns == NULL || fr->http == NULL)
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

	fr->bound = evhttp_bind_socket_with_handle(fr->http, cfg->listen_host,
						   (ev_uint16_t)cfg->listen_port);
	if (fr->bound == NULL) {
		snprintf(err, err_size, "cannot listen on %s:%u: %s", cfg->listen_host,
			 cfg->listen_port,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		front_free(fr);
		return NULL;
	}
	fr->port = cfg->listen_port;
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
	return fr->n_pending;
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
	while (fr->pending) {
		struct pending *p = fr->pending;

		if (p->fetch)
			upstream_cancel(p->fetch);
		p->fetch = NULL;
		before_answer(fr, p->req);
		reply_error(p->req, 503, "shutting_down", NULL,
			    "the gateway is shutting down");
		pending_remove(p);
	}
}

void front_free(struct front *fr)
{
	if (fr == NULL)
		return;
	assert(fr->magic == FRONT_MAGIC);
	fr->drained = NULL;
	front_abort_pending(fr);
	fr->n_flushing = 0;
	if (fr->http)
		evhttp_free(fr->http); /* runs conn_closed for open connections */
	free(fr->conns);
	fr->magic = 0;
	free(fr);
}
