/*
 * contacts-sim: a simulator of the vendor's GET /api/public/contacts for
 * tests and offline development (docs/simulator.md).
 *
 * One libevent loop. Every request to the endpoint is counted (total, per
 * key, a ring of the last STATS_RECENT), then the first queued fault that
 * applies to it is played, else it is answered from sim_data after the
 * configured latency. Answers that wait (latency, hang) hold the request in
 * a struct delayed until a timer fires; a client that left meanwhile has its
 * request detached by evhttp, which we then free instead of answering.
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
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "tests/sim/sim_data.h"

#define STATS_RECENT 256
#define FAULTS_MAX 32
#define QUERY_LOG_MAX 512
#define DELAYED_MAGIC 0x44454c41u
#define JSON_TYPE "application/json; charset=utf-8"

enum fault_kind { F_STATUS, F_RESET, F_HANG, F_429, F_MALFORMED, F_TRUNCATED };

struct fault {
	enum fault_kind kind;
	long count; /* requests left; 0 = until cleared */
	char key[SIM_KEY_MAX]; /* "" = any key */
	int status;
	long retry_after;
	long ms;
};

struct recent {
	int64_t t_ms;
	char key[SIM_KEY_MAX];
	char query[QUERY_LOG_MAX];
};

enum delayed_action { D_ANSWER, D_CLOSE, D_RESET };

struct delayed {
	unsigned magic;
	struct evhttp_request *req;
	enum delayed_action action;
	int status;
	struct evbuffer *body;
	struct event *timer;
	struct delayed *prev, *next; /* sim.delayed: freed at exit if never fired */
};

static struct {
	struct event_base *base;
	struct sim_org orgs[SIM_KEYS_MAX];
	size_t n_orgs;
	int64_t now_ms;
	long latency_ms;
	struct fault faults[FAULTS_MAX];
	size_t n_faults;
	long total, by_key[SIM_KEYS_MAX], in_flight, max_concurrency;
	struct recent recent[STATS_RECENT];
	size_t recent_next, recent_n;
	struct delayed *delayed;
} sim;

static int64_t wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void send_json(struct evhttp_request *req, int code, const char *json)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, json, strlen(json));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", JSON_TYPE);
	evhttp_send_reply(req, code, NULL, b);
	evbuffer_free(b);
}

static void set_nodelay(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	int one = 1;

	if (evcon)
		setsockopt(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)),
			   IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A request answered or dropped: no longer in flight. */
static void done_one(void)
{
	sim.in_flight--;
}

/* Closes the request's connection without an answer (RST if `reset`). */
static void drop_connection(struct evhttp_request *req, int reset)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	if (evcon == NULL) { /* the client left: evhttp detached the request */
		evhttp_request_free(req);
		return;
	}
	if (reset) {
		struct linger lg = {1, 0};

		setsockopt(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)),
			   SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	evhttp_connection_free(evcon); /* frees the request with it */
}

static void delayed_free(struct delayed *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		sim.delayed = d->next;
	if (d->next)
		d->next->prev = d->prev;
	if (d->body)
		evbuffer_free(d->body);
	event_free(d->timer);
	d->magic = 0;
	free(d);
}

static void on_delayed(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg;

	(void)fd;
	(void)what;
	if (d->action == D_ANSWER) {
		evhttp_add_header(evhttp_request_get_output_headers(d->req),
				  "Content-Type", JSON_TYPE);
		evhttp_send_reply(d->req, d->status, NULL, d->body);
	} else {
		drop_connection(d->req, d->action == D_RESET);
	}
	delayed_free(d);
	done_one();
}

static void later(struct evhttp_request *req, long ms, enum delayed_action action,
		  int status, struct evbuffer *body)
{
	struct delayed *d = calloc(1, sizeof(*d));
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (d == NULL)
		abort();
	d->magic = DELAYED_MAGIC;
	d->req = req;
	d->action = action;
	d->status = status;
	d->body = body;
	d->timer = evtimer_new(sim.base, on_delayed, d);
	if (d->timer == NULL)
		abort();
	d->next = sim.delayed;
	if (sim.delayed)
		sim.delayed->prev = d;
	sim.delayed = d;
	evtimer_add(d->timer, &tv);
}

static void on_truncated_written(struct evhttp_connection *evcon, void *arg)
{
	(void)arg;
	evhttp_connection_free(evcon); /* mid-body: the client sees a short answer */
}

static const struct fault *take_fault(const char *key)
{
	for (size_t i = 0; i < sim.n_faults; i++) {
		struct fault *f = &sim.faults[i];

		if (f->key[0] && strcmp(f->key, key) != 0)
			continue;
		if (f->count > 0 && --f->count == 0) {
			static struct fault taken;

			taken = *f;
			memmove(f, f + 1, (sim.n_faults - i - 1) * sizeof(*f));
			sim.n_faults--;
			return &taken;
		}
		return f;
	}
	return NULL;
}

static void count_request(const char *key, const char *raw)
{
	struct recent *r = &sim.recent[sim.recent_next];

	sim.total++;
	for (size_t i = 0; i < sim.n_orgs; i++)
		if (strcmp(sim.orgs[i].key, key) == 0)
			sim.by_key[i]++;
	r->t_ms = wall_ms();
	snprintf(r->key, sizeof(r->key), "%s", key);
	snprintf(r->query, sizeof(r->query), "%s", raw ? raw : "");
	sim.recent_next = (sim.recent_next + 1) % STATS_RECENT;
	if (sim.recent_n < STATS_RECENT)
		sim.recent_n++;
	if (++sim.in_flight > sim.max_concurrency)
		sim.max_concurrency = sim.in_flight;
}

/* Answers now, or after the configured latency. */
static void answer(struct evhttp_request *req, int code, const char *json)
{
	struct evbuffer *b;

	if (sim.latency_ms <= 0) {
		send_json(req, code, json);
		done_one();
		return;
	}
	b = evbuffer_new();
	evbuffer_add(b, json, strlen(json));
	later(req, sim.latency_ms, D_ANSWER, code, b);
}

static void play_fault(struct evhttp_request *req, const struct fault *f,
		       const struct sim_org *org, const char *raw)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	char body[128], why[256];
	struct evbuffer *b;

	switch (f->kind) {
	case F_STATUS:
	case F_429:
		if (f->kind == F_429) {
			snprintf(body, sizeof(body), "%ld", f->retry_after);
			evhttp_add_header(out, "Retry-After", body);
		}
		snprintf(body, sizeof(body), "{\"statusCode\":%d,\"message\":\"%s\"}",
			 f->kind == F_429 ? 429 : f->status,
			 f->kind == F_429 ? "Too Many Requests" : "injected fault");
		answer(req, f->kind == F_429 ? 429 : f->status, body);
		return;
	case F_RESET:
		later(req, 0, D_RESET, 0, NULL);
		return;
	case F_HANG:
		later(req, f->ms, D_CLOSE, 0, NULL);
		return;
	case F_MALFORMED:
		answer(req, 200, "[{\"id\":\"broken\"");
		return;
	case F_TRUNCATED:
		b = evbuffer_new();
		if (org == NULL || sim_query(org, raw, sim.now_ms, b, why, sizeof(why)) != 200)
			evbuffer_add(b, "[{\"id\":\"truncated answer\"}]", 27);
		snprintf(body, sizeof(body), "%zu", evbuffer_get_length(b));
		evhttp_add_header(out, "Content-Type", JSON_TYPE);
		evhttp_add_header(out, "Content-Length", body);
		evbuffer_drain(b, evbuffer_get_length(b) / 2);
		evhttp_send_reply_start(req, 200, "OK");
		evhttp_send_reply_chunk_with_cb(req, b, on_truncated_written, NULL);
		evbuffer_free(b);
		done_one();
		return;
	}
}

static void handle_contacts(struct evhttp_request *req)
{
	const char *key = evhttp_find_header(evhttp_request_get_input_headers(req),
					     "x-api-key");
	const char *raw = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	const struct sim_org *org = NULL;
	const struct fault *f;
	struct evbuffer *b;
	char why[256], body[400];
	int code;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		send_json(req, 405, "{\"statusCode\":405,\"message\":\"Method Not Allowed\"}");
		return;
	}
	count_request(key ? key : "", raw);
	f = take_fault(key ? key : "");
	for (size_t i = 0; key && i < sim.n_orgs; i++)
		if (strcmp(sim.orgs[i].key, key) == 0)
			org = &sim.orgs[i];
	if (f) {
		play_fault(req, f, org, raw);
		return;
	}
	if (org == NULL) {
		send_json(req, 401, "{\"statusCode\":401,\"message\":\"Invalid or missing API key\"}");
		done_one();
		return;
	}
	b = evbuffer_new();
	code = sim_query(org, raw, sim.now_ms, b, why, sizeof(why));
	if (code != 200) {
		evbuffer_drain(b, evbuffer_get_length(b));
		snprintf(body, sizeof(body),
			 "{\"statusCode\":%d,\"message\":\"%s\",\"error\":\"Bad Request\"}",
			 code, why);
		evbuffer_add(b, body, strlen(body));
	}
	if (sim.latency_ms > 0) {
		later(req, sim.latency_ms, D_ANSWER, code, b);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", JSON_TYPE);
	evhttp_send_reply(req, code, NULL, b);
	evbuffer_free(b);
	done_one();
}

static long arg_long(struct evkeyvalq *args, const char *name, long def, int *bad)
{
	const char *v = evhttp_find_header(args, name);
	char *end;
	long n;

	if (v == NULL)
		return def;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || end == v || n < 0)
		*bad = 1;
	return n;
}

static void handle_fault(struct evhttp_request *req, struct evkeyvalq *args)
{
	static const char *const kinds[] = {"status", "reset", "hang", "429",
					    "malformed", "truncated"};
	const char *kind = evhttp_find_header(args, "kind");
	const char *key = evhttp_find_header(args, "key");
	struct fault f;
	int bad = 0, k;

	memset(&f, 0, sizeof(f));
	for (k = 0; kind && k < 6 && strcmp(kinds[k], kind) != 0; k++)
		;
	if (kind == NULL || k == 6 || sim.n_faults == FAULTS_MAX) {
		send_json(req, 400, "{\"error\":\"unknown fault kind or too many faults\"}");
		return;
	}
	f.kind = (enum fault_kind)k;
	f.count = arg_long(args, "count", 1, &bad);
	f.status = (int)arg_long(args, "status", 500, &bad);
	f.retry_after = arg_long(args, "retry_after", 1, &bad);
	f.ms = arg_long(args, "ms", 60000, &bad);
	if (bad || f.status < 100 || f.status > 599) {
		send_json(req, 400, "{\"error\":\"bad fault parameter\"}");
		return;
	}
	snprintf(f.key, sizeof(f.key), "%s", key ? key : "");
	sim.faults[sim.n_faults++] = f;
	send_json(req, 200, "{\"ok\":true}");
}

/* Appends s as a JSON string body (without quotes). */
static void json_escape(struct evbuffer *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			evbuffer_add_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			evbuffer_add_printf(b, "\\u%04x", c);
		else
			evbuffer_add(b, s, 1);
	}
}

static void handle_stats(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "{\"total\":%ld,\"by_key\":{", sim.total);
	for (size_t i = 0; i < sim.n_orgs; i++)
		evbuffer_add_printf(b, "%s\"%s\":%ld", i ? "," : "", sim.orgs[i].key,
				    sim.by_key[i]);
	evbuffer_add_printf(b, "},\"in_flight\":%ld,\"max_concurrency\":%ld,\"recent\":[",
			    sim.in_flight, sim.max_concurrency);
	for (size_t i = 0; i < sim.recent_n; i++) {
		size_t at = (sim.recent_next + STATS_RECENT - sim.recent_n + i) % STATS_RECENT;

		evbuffer_add_printf(b, "%s{\"t_ms\":%lld,\"key\":\"", i ? "," : "",
				    (long long)sim.recent[at].t_ms);
		json_escape(b, sim.recent[at].key);
		evbuffer_add(b, "\",\"query\":\"", 11);
		json_escape(b, sim.recent[at].query);
		evbuffer_add(b, "\"}", 2);
	}
	evbuffer_add(b, "]}", 2);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", JSON_TYPE);
	evhttp_send_reply(req, 200, NULL, b);
	evbuffer_free(b);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = evhttp_uri_get_path(uri);
	struct evkeyvalq args;
	int post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;

	(void)arg;
	set_nodelay(req);
	if (path == NULL)
		path = "";
	if (strcmp(path, "/api/public/contacts") == 0) {
		handle_contacts(req);
		return;
	}
	args.tqh_first = NULL;
	args.tqh_last = &args.tqh_first;
	evhttp_parse_query_str(evhttp_uri_get_query(uri) ? evhttp_uri_get_query(uri) : "",
			       &args);
	if (strcmp(path, "/__sim/stats") == 0) {
		handle_stats(req);
	} else if (post && strcmp(path, "/__sim/reset") == 0) {
		sim.total = 0;
		memset(sim.by_key, 0, sizeof(sim.by_key));
		sim.max_concurrency = sim.in_flight;
		sim.recent_n = sim.recent_next = 0;
		sim.n_faults = 0;
		sim.latency_ms = 0;
		send_json(req, 200, "{\"ok\":true}");
	} else if (post && strcmp(path, "/__sim/latency") == 0) {
		int bad = 0;
		long ms = arg_long(&args, "ms", 0, &bad);

		if (bad || ms > 600000) {
			send_json(req, 400, "{\"error\":\"ms must be 0..600000\"}");
		} else {
			sim.latency_ms = ms;
			send_json(req, 200, "{\"ok\":true}");
		}
	} else if (post && strcmp(path, "/__sim/fault") == 0) {
		handle_fault(req, &args);
	} else if (post && strcmp(path, "/__sim/faults/clear") == 0) {
		sim.n_faults = 0;
		send_json(req, 200, "{\"ok\":true}");
	} else {
		send_json(req, 404, "{\"statusCode\":404,\"message\":\"Not Found\"}");
	}
	evhttp_clear_headers(&args);
}

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
		"A deterministic simulator of GET /api/public/contacts (docs/simulator.md).\n"
		"  --listen HOST:PORT  default 127.0.0.1:8090 (port 0: any free port)\n"
		"  --seed N            data set seed, default 42\n"
		"  --contacts N        contacts per key, default 2000 (max %d)\n"
		"  --now TIME          the simulator's clock: ISO 8601 or epoch seconds;\n"
		"                      default: the wall clock at start\n"
		"  --keys LIST         API keys, default sim-key-alpha,sim-key-bravo,sim-key-charlie\n"
		"  --latency-ms N      delay every answer, default 0\n",
		SIM_CONTACTS_MAX);
}

static int bad_arg(const char *what, const char *v)
{
	fprintf(stderr, "contacts-sim: bad %s '%s' (see --help)\n", what, v);
	return 2;
}

static int parse_ulong(const char *v, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(v, &end, 10);
	return (errno || *end || end == v || v[0] == '-' || *out > max) ? -1 : 0;
}

int main(int argc, char **argv)
{
	char host[256] = "127.0.0.1", keys[1024] = "sim-key-alpha,sim-key-bravo,sim-key-charlie";
	unsigned long port = 8090, seed = 42, contacts = 2000, n;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct event *sigterm, *sigint;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char *tok, *save;

	sim.now_ms = wall_ms();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (v == NULL)
			return bad_arg("option (missing value)", a);
		i++;
		if (strcmp(a, "--listen") == 0) {
			const char *colon = strrchr(v, ':');

			if (!colon || colon == v || (size_t)(colon - v) >= sizeof(host) ||
			    parse_ulong(colon + 1, 65535, &port) != 0)
				return bad_arg("--listen", v);
			memcpy(host, v, (size_t)(colon - v));
			host[colon - v] = '\0';
		} else if (strcmp(a, "--seed") == 0) {
			if (parse_ulong(v, 0xffffffffUL, &seed) != 0)
				return bad_arg("--seed", v);
		} else if (strcmp(a, "--contacts") == 0) {
			if (parse_ulong(v, SIM_CONTACTS_MAX, &contacts) != 0)
				return bad_arg("--contacts", v);
		} else if (strcmp(a, "--latency-ms") == 0) {
			if (parse_ulong(v, 600000, &n) != 0)
				return bad_arg("--latency-ms", v);
			sim.latency_ms = (long)n;
		} else if (strcmp(a, "--now") == 0) {
			if (parse_ulong(v, 253402300799UL, &n) == 0)
				sim.now_ms = (int64_t)n * 1000;
			else if (sim_parse_time(v, strlen(v), &sim.now_ms) != 0)
				return bad_arg("--now", v);
		} else if (strcmp(a, "--keys") == 0) {
			if (strlen(v) >= sizeof(keys) || v[0] == '\0')
				return bad_arg("--keys", v);
			memcpy(keys, v, strlen(v) + 1);
		} else {
			return bad_arg("option", a);
		}
	}
	for (tok = strtok_r(keys, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (sim.n_orgs == SIM_KEYS_MAX || strlen(tok) >= SIM_KEY_MAX)
			return bad_arg("--keys", tok);
		if (sim_org_build(&sim.orgs[sim.n_orgs], tok, (unsigned)sim.n_orgs, seed,
				  contacts, sim.now_ms) != 0) {
			fprintf(stderr, "contacts-sim: out of memory\n");
			return 1;
		}
		sim.n_orgs++;
	}
	signal(SIGPIPE, SIG_IGN);
	sim.base = event_base_new();
	http = evhttp_new(sim.base);
	evhttp_set_gencb(http, on_request, NULL);
	evhttp_set_max_headers_size(http, 16384);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	bound = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
	if (bound == NULL) {
		fprintf(stderr, "contacts-sim: cannot listen on %s:%lu\n", host, port);
		return 1;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0)
		port = ntohs(ss.ss_family == AF_INET6
				     ? ((struct sockaddr_in6 *)&ss)->sin6_port
				     : ((struct sockaddr_in *)&ss)->sin_port);
	sigterm = evsignal_new(sim.base, SIGTERM, on_signal, NULL);
	sigint = evsignal_new(sim.base, SIGINT, on_signal, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	fprintf(stderr, "contacts-sim listening on %s:%lu\n", host, port);
	fflush(stderr);
	event_base_dispatch(sim.base);

	evhttp_free(http); /* frees the requests still held */
	while (sim.delayed)
		delayed_free(sim.delayed);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(sim.base);
	for (size_t i = 0; i < sim.n_orgs; i++)
		sim_org_free(&sim.orgs[i]);
	return 0;
}
