/*
 * Unit tests for gateway/conn: a connection set on a real evhttp, on a real
 * event_base, listening on 127.0.0.1 (an ephemeral port), with plain
 * sockets as clients. Nothing in conn.c is pure - it is the bookkeeping
 * around evhttp's connections - so these run the loop in short steps and
 * look at what the set counts and what the clients receive: the connection
 * limit (accepting pauses at `max` and resumes below it, also when the limit
 * is raised), the header and keep-alive timeouts, a NUL byte in a head, and
 * the sweep that notices clients gone while their request waits.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/conn.h"

#define HELD_MAX 8
#define STEP_MS 5
#define WAIT_MS 3000 /* the longest a condition is waited for */

/* A front loop in miniature: evhttp, the set, what its events said. */
struct rig {
	struct event_base *base;
	struct evhttp *http;
	struct conns *cs;
	int port;
	int hold;    /* keep requests unanswered (busy), with a user */
	int changed; /* events.changed calls */
	int gone;    /* events.gone calls */
	void *gone_user;
	int requests;
	enum conn_verdict last;
	struct evhttp_request *held[HELD_MAX];
	int users[HELD_MAX]; /* the `user` given for each held request */
	size_t n_held;
};

static void on_changed(void *arg)
{
	struct rig *r = arg;

	r->changed++;
}

static void on_gone(void *user, void *arg)
{
	struct rig *r = arg;

	r->gone++;
	r->gone_user = user;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct rig *r = arg;

	r->requests++;
	r->last = conns_request(r->cs, req);
	if (r->last == CONN_BAD_HEAD) {
		evhttp_send_reply(req, 400, "Bad Request", NULL);
		return;
	}
	if (r->hold && r->n_held < HELD_MAX) {
		r->held[r->n_held] = req;
		conns_set_user(r->cs, req, &r->users[r->n_held]);
		r->n_held++;
		return;
	}
	evhttp_send_reply(req, 200, "OK", NULL);
}

static void rig_up(struct rig *r, long max, long header_ms, long keepalive_ms)
{
	struct conn_limits lim = {max, NULL, header_ms, keepalive_ms};
	struct conn_events ev = {on_changed, on_gone, r};
	struct evhttp_bound_socket *bound;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(r, 0, sizeof(*r));
	r->base = event_base_new();
	assert_non_null(r->base);
	r->http = evhttp_new(r->base);
	assert_non_null(r->http);
	evhttp_set_timeout(r->http, 60);
	r->cs = conns_new(r->base, r->http, &lim, &ev);
	assert_non_null(r->cs);
	conns_own_thread(r->cs);
	evhttp_set_gencb(r->http, on_request, r);
	bound = evhttp_bind_socket_with_handle(r->http, "127.0.0.1", 0);
	assert_non_null(bound);
	conns_add_listener(r->cs, evhttp_bound_socket_get_listener(bound));
	assert_int_equal(
	    getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len),
	    0);
	r->port = ntohs(sin.sin_port);
}

/* Runs the loop for about ms milliseconds. */
static void spin(struct rig *r, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(r->base, &tv);
	event_base_dispatch(r->base);
}

static void rig_down(struct rig *r)
{
	spin(r, STEP_MS);	       /* what was accepted is registered */
	conns_forget_listeners(r->cs); /* evhttp_free frees them (a drain's order) */
	evhttp_free(r->http);	       /* closes every connection */
	event_base_loop(r->base, EVLOOP_NONBLOCK);
	assert_int_equal(conns_count(r->cs), 0);
	conns_own_thread(NULL);
	conns_free(r->cs);
	event_base_free(r->base);
}

/* A connected, non-blocking client socket (the kernel completes a loopback
 * connect into the listen backlog whether or not the set accepts it). */
static int client(const struct rig *r)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)r->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
	return fd;
}

static void say(int fd, const char *text, size_t n)
{
	assert_int_equal(send(fd, text, n, MSG_NOSIGNAL), (ssize_t)n);
}

#define REQUEST "GET /x HTTP/1.1\r\nHost: t\r\n\r\n"

/*
 * What the client has received, appended to buf (NUL-terminated, at most
 * size - 1 bytes). Returns 1 once the server has closed the connection, 0
 * while it is open.
 */
static int heard(int fd, char *buf, size_t size)
{
	size_t have = strlen(buf);

	for (;;) {
		ssize_t n = recv(fd, buf + have, size - 1 - have, 0);

		if (n > 0) {
			have += (size_t)n;
			buf[have] = '\0';
			if (have == size - 1)
				return 0;
			continue;
		}
		if (n == 0)
			return 1;
		if (errno == ECONNRESET)
			return 1;
		assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
		return 0;
	}
}

/* Runs the loop until the set counts `count` connections (<= WAIT_MS). */
static void wait_count(struct rig *r, size_t count)
{
	for (int t = 0; t < WAIT_MS && conns_count(r->cs) != count; t += STEP_MS)
		spin(r, STEP_MS);
	assert_int_equal(conns_count(r->cs), count);
}

/* Runs the loop until the front has been handed n requests (<= WAIT_MS). */
static void wait_requests(struct rig *r, int n)
{
	for (int t = 0; t < WAIT_MS && r->requests < n; t += STEP_MS)
		spin(r, STEP_MS);
	assert_int_equal(r->requests, n);
}

/* Runs the loop until the server closes fd; returns the ms it took. */
static int wait_closed(struct rig *r, int fd, char *buf, size_t size)
{
	int t;

	for (t = 0; t < WAIT_MS; t += STEP_MS) {
		if (heard(fd, buf, size))
			return t;
		spin(r, STEP_MS);
	}
	fail_msg("the server kept the connection open for %d ms", WAIT_MS);
	return t;
}

/* ------------------------------------------------------------------------ */

/* Counting from accept to close; busy from the request to its answer. */
static void test_count_and_busy(void **state)
{
	struct rig r;
	char buf[512] = "";
	int a, b;

	(void)state;
	rig_up(&r, 100, 5000, 5000);
	r.hold = 1;
	a = client(&r);
	b = client(&r);
	wait_count(&r, 2);
	assert_int_equal(conns_busy(r.cs), 0);
	assert_int_equal(conns_arriving(r.cs), 2); /* accepted, nothing asked */
	say(a, REQUEST, strlen(REQUEST));
	wait_requests(&r, 1);
	assert_int_equal(r.last, CONN_OK);
	assert_int_equal(conns_busy(r.cs), 1);
	assert_int_equal(conns_arriving(r.cs), 1); /* b only */
	/* the answer is written: idle again, and the owner is told */
	r.changed = 0;
	evhttp_send_reply(r.held[0], 200, "OK", NULL);
	spin(&r, STEP_MS);
	assert_int_equal(conns_busy(r.cs), 0);
	assert_true(r.changed >= 1);
	heard(a, buf, sizeof(buf));
	assert_memory_equal(buf, "HTTP/1.1 200 OK", 15);
	assert_int_equal(conns_arriving(r.cs), 1); /* a is idle, no longer first */
	/* a client that closes is counted out */
	r.changed = 0;
	close(b);
	wait_count(&r, 1);
	assert_true(r.changed >= 1);
	close(a);
	wait_count(&r, 0);
	rig_down(&r);
}

/* At `max` the set stops accepting; the next waits in the kernel's backlog
 * and is taken when one closes, or when the limit is raised. */
static void test_connection_limit(void **state)
{
	struct rig r;
	char buf[512] = "";
	int fd[4];

	(void)state;
	rig_up(&r, 2, 5000, 5000);
	for (int i = 0; i < 3; i++)
		fd[i] = client(&r);
	wait_count(&r, 2);
	spin(&r, 50);
	assert_int_equal(conns_count(r.cs), 2); /* the third waits */
	close(fd[0]);
	wait_count(&r, 2); /* closed one, took the third */
	/* the third is served */
	say(fd[2], REQUEST, strlen(REQUEST));
	for (int t = 0; t < WAIT_MS && buf[0] == '\0'; t += STEP_MS) {
		spin(&r, STEP_MS);
		heard(fd[2], buf, sizeof(buf));
	}
	assert_memory_equal(buf, "HTTP/1.1 200 OK", 15);
	/* a higher limit (a reload) takes the waiting one at once */
	fd[3] = client(&r);
	spin(&r, 50);
	assert_int_equal(conns_count(r.cs), 2);
	{
		struct conn_limits lim = {3, NULL, 5000, 5000};

		conns_set_limits(r.cs, &lim);
	}
	wait_count(&r, 3);
	for (int i = 1; i < 4; i++)
		close(fd[i]);
	wait_count(&r, 0);
	rig_down(&r);
}

/* A head that does not arrive whole in time: 408, then closed. A
 * connection that never sends anything: closed, silently. */
static void test_header_timeout(void **state)
{
	static const char partial[] = "GET /x HTTP/1.1\r\nHost: t\r\n";
	struct rig r;
	char buf[512] = "", quiet[64] = "";
	int a, b, ms;

	(void)state;
	rig_up(&r, 100, 100, 5000);
	a = client(&r);
	b = client(&r);
	wait_count(&r, 2);
	say(a, partial, sizeof(partial) - 1);
	ms = wait_closed(&r, a, buf, sizeof(buf));
	assert_true(ms < 2000);
	assert_memory_equal(buf, "HTTP/1.1 408 Request Timeout", 28);
	assert_non_null(strstr(buf, "\"error\":\"request_timeout\""));
	wait_closed(&r, b, quiet, sizeof(quiet));
	assert_string_equal(quiet, "");
	assert_int_equal(r.requests, 0);
	wait_count(&r, 0);
	close(a);
	close(b);
	rig_down(&r);
}

/* After an answer, an idle connection is closed after the keep-alive
 * timeout (the header timeout being far longer). */
static void test_keepalive_timeout(void **state)
{
	struct rig r;
	char buf[512] = "";
	int a;

	(void)state;
	rig_up(&r, 100, 60000, 100);
	a = client(&r);
	say(a, REQUEST, strlen(REQUEST));
	assert_true(wait_closed(&r, a, buf, sizeof(buf)) < 2000);
	assert_int_equal(r.requests, 1);
	assert_memory_equal(buf, "HTTP/1.1 200 OK", 15);
	wait_count(&r, 0);
	close(a);
	rig_down(&r);
}

/* A NUL byte in a head: the request is flagged (evhttp would read the
 * header value cut short), once; the next request on the connection is
 * clean. */
static void test_nul_in_head(void **state)
{
	static const char bad[] = "GET /x HTTP/1.1\r\nHost: t\r\nX-Api-Key: a\0b\r\n\r\n";
	struct rig r;
	char buf[1024] = "";
	int a;

	(void)state;
	rig_up(&r, 100, 5000, 5000);
	a = client(&r);
	say(a, bad, sizeof(bad) - 1);
	wait_requests(&r, 1);
	assert_int_equal(r.last, CONN_BAD_HEAD);
	spin(&r, STEP_MS);
	heard(a, buf, sizeof(buf));
	assert_memory_equal(buf, "HTTP/1.1 400", 12);
	say(a, REQUEST, strlen(REQUEST));
	wait_requests(&r, 2);
	assert_int_equal(r.last, CONN_OK);
	close(a);
	wait_count(&r, 0);
	rig_down(&r);
}

/* While its request waits, evhttp reads nothing from a connection: the
 * sweep peeks, and tells the owner of a client that left - once. */
static void test_sweep_finds_clients_gone(void **state)
{
	struct rig r;
	int a, b;

	(void)state;
	rig_up(&r, 100, 5000, 5000);
	r.hold = 1;
	a = client(&r);
	b = client(&r);
	say(a, REQUEST, strlen(REQUEST));
	say(b, REQUEST, strlen(REQUEST));
	wait_requests(&r, 2);
	assert_int_equal(conns_busy(r.cs), 2);
	conns_sweep(r.cs);
	assert_int_equal(r.gone, 0); /* both still there */
	close(a);
	spin(&r, 20);
	assert_int_equal(r.gone, 0); /* evhttp is not reading a busy one */
	conns_sweep(r.cs);
	assert_int_equal(r.gone, 1);
	assert_ptr_equal(r.gone_user, &r.users[0]);
	conns_sweep(r.cs);
	assert_int_equal(r.gone, 1); /* told once */
	/* the owner answered b: its user is forgotten, the sweep skips it */
	conns_set_user(r.cs, r.held[1], NULL);
	shutdown(b, SHUT_WR);
	conns_sweep(r.cs);
	assert_int_equal(r.gone, 1);
	evhttp_send_reply(r.held[1], 200, "OK", NULL);
	evhttp_send_reply(r.held[0], 200, "OK", NULL);
	close(b);
	wait_count(&r, 0);
	rig_down(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_count_and_busy),
	    cmocka_unit_test(test_connection_limit),
	    cmocka_unit_test(test_header_timeout),
	    cmocka_unit_test(test_keepalive_timeout),
	    cmocka_unit_test(test_nul_in_head),
	    cmocka_unit_test(test_sweep_finds_clients_gone),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
