/*
 * conn: see conn.h.
 *
 * Relies on two things libevent 2.1's evhttp does and its API shows:
 * evhttp_set_bevcb's callback runs inside the accept, before the request
 * is read; and the bufferevent's callback argument is then the new
 * evhttp_connection (bufferevent_getcb). The bufferevent is held by one
 * extra reference from the accept to the registration, so a connection
 * evhttp drops in between (a failed setup) is seen as such (its callbacks
 * cleared) instead of being freed under us.
 */
#include "gateway/conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "gateway/clock.h"
#include "gateway/log.h"
#include "policy/check.h"

#define CONNS_MAGIC 0x434e4e53u
#define CONN_MAGIC 0x434f4e4eu
#define LISTENERS_MAX 4
#define WRITE_CHUNK_MAX (1 << 20) /* bytes written per loop turn and connection */

enum conn_state {
	C_IDLE = 0, /* waiting for a request */
	C_HEAD,     /* a request's head is arriving */
	C_BUSY,     /* the front has the request */
};

struct conn {
	unsigned magic;
	struct conns *cs;
	struct evhttp_connection *evcon;
	struct bufferevent *bev;
	evutil_socket_t fd;
	struct event *timer;
	struct evbuffer_cb_entry *input_cb;
	enum conn_state state;
	int first; /* no request read yet: its head is timed from the accept */
	int bad;   /* a NUL byte arrived in a request head */
	void *user; /* the owner's, while busy (conns_set_user) */
};

struct conns {
	unsigned magic;
	struct event_base *base;
	struct evhttp *http;
	struct conn_limits lim;
	struct conn **by_fd; /* the registered connections, by socket */
	size_t by_fd_size;
	size_t n;       /* accepted and not closed (registered or about to be) */
	size_t n_busy;
	struct bufferevent **fresh; /* accepted, to register this turn */
	size_t n_fresh, fresh_cap;
	struct event *settle;
	struct evconnlistener *listeners[LISTENERS_MAX];
	size_t n_listeners;
	int paused_full;   /* at the limit */
	int paused_emfile; /* out of file descriptors */
	struct event *resume;
	struct event *recheck; /* at the limit: look at the total again */
	int64_t logged_ms; /* the last accept-failure line */
	unsigned suppressed;
	struct conn_events ev;
};

/* evconnlistener's error callback gets evhttp's argument, not ours: a
 * front loop has one set, so its thread finds it here. */
static _Thread_local struct conns *thread_conns;

static int64_t mono_ms(struct conns *cs)
{
	return loop_mono_ms(cs->base);
}

static void listen_all(struct conns *cs, int on)
{
	for (size_t i = 0; i < cs->n_listeners; i++) {
		if (on)
			evconnlistener_enable(cs->listeners[i]);
		else
			evconnlistener_disable(cs->listeners[i]);
	}
}

/* Connections open on every loop (the limit is for them all: a split per
 * loop would strand connections the kernel hashed to a full loop's socket
 * while others have room). */
static long total_open(const struct conns *cs)
{
	return cs->lim.total ? atomic_load_explicit(cs->lim.total, memory_order_relaxed)
			     : (long)cs->n;
}

static void count_open(struct conns *cs, long delta)
{
	cs->n = (size_t)((long)cs->n + delta);
	if (cs->lim.total)
		atomic_fetch_add_explicit(cs->lim.total, delta, memory_order_relaxed);
}

/* Accepting resumes once below the limit and not paused for fds; while
 * paused at the limit, a timer looks again every CONN_FULL_RECHECK_MS (a
 * connection another loop closes frees room here too). */
static void maybe_resume(struct conns *cs)
{
	if (!cs->paused_full)
		return;
	if (total_open(cs) < cs->lim.max) {
		cs->paused_full = 0;
		evtimer_del(cs->recheck);
		if (!cs->paused_emfile)
			listen_all(cs, 1);
	} else if (!evtimer_pending(cs->recheck, NULL)) {
		struct timeval tv = {0, CONN_FULL_RECHECK_MS * 1000};

		evtimer_add(cs->recheck, &tv);
	}
}

static void on_recheck(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	maybe_resume(cs);
}

static void arm(struct conn *c, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(c->timer, &tv);
}

static const char timeout_body[] =
	"{\"error\":\"request_timeout\",\"message\":\"the request head did not "
	"arrive in time\"}";

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(c, CONN_MAGIC);
	if (c->state == C_BUSY)
		return;
	if (c->state == C_HEAD) {
		/* evhttp has no answer for a request it has not finished
		 * reading: a fixed one, best effort, then the connection goes */
		char text[256];
		int n = snprintf(text, sizeof(text),
				 "HTTP/1.1 408 Request Timeout\r\n"
				 "Content-Type: application/json; charset=utf-8\r\n"
				 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
				 sizeof(timeout_body) - 1, timeout_body);

		cglog(CGLOG_DEBUG, "client: no whole request head within %ld ms: 408",
		      c->cs->lim.header_timeout_ms);
		if (n > 0 && (size_t)n < sizeof(text))
			(void)send(c->fd, text, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	evhttp_connection_free(c->evcon); /* on_close frees c */
}

/* The input buffer grew or shrank: the first byte of a request starts its
 * head's clock. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;

	CHECK_OBJ_NOTNULL(c, CONN_MAGIC);
	if (info->n_added == 0 || c->state == C_BUSY)
		return;
	if (!c->bad) {
		/* a NUL can hide in a head: evhttp keeps header values as C
		 * strings, so "x-api-key: a\0b" would read as "a" */
		struct evbuffer_ptr at;
		struct evbuffer_iovec vec[4];
		int n;

		if (evbuffer_ptr_set(buf, &at, info->orig_size, EVBUFFER_PTR_SET) == 0) {
			size_t left = info->n_added;

			n = evbuffer_peek(buf, (ev_ssize_t)left, &at, vec, 4);
			for (int i = 0; i < n && i < 4 && left > 0; i++) {
				size_t len = vec[i].iov_len < left ? vec[i].iov_len : left;

				if (memchr(vec[i].iov_base, '\0', len))
					c->bad = 1;
				left -= len;
			}
		}
	}
	if (c->state != C_IDLE)
		return;
	c->state = C_HEAD;
	if (!c->first) /* the first head is timed from the accept */
		arm(c, c->cs->lim.header_timeout_ms);
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;
	struct conns *cs;

	(void)evcon;
	CHECK_OBJ_NOTNULL(c, CONN_MAGIC);
	cs = c->cs;
	evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
	event_free(c->timer);
	if (c->state == C_BUSY)
		cs->n_busy--;
	if (c->user && cs->ev.gone)
		cs->ev.gone(c->user, cs->ev.arg);
	CHECK((size_t)c->fd < cs->by_fd_size && cs->by_fd[c->fd] == c);
	cs->by_fd[c->fd] = NULL;
	count_open(cs, -1);
	c->magic = 0;
	free(c);
	maybe_resume(cs);
	if (cs->ev.changed)
		cs->ev.changed(cs->ev.arg);
}

static void on_complete(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct conns *cs;

	CHECK_OBJ_NOTNULL(c, CONN_MAGIC);
	cs = c->cs;
	if (c->state == C_BUSY)
		cs->n_busy--;
	c->state = C_IDLE;
	c->user = NULL;
	if (evcon && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		c->state = C_HEAD; /* a pipelined request is arriving */
		arm(c, cs->lim.header_timeout_ms);
	} else {
		arm(c, cs->lim.keepalive_timeout_ms);
	}
	if (cs->ev.changed)
		cs->ev.changed(cs->ev.arg);
}

static void track(struct conns *cs, struct bufferevent *bev, struct evhttp_connection *evcon)
{
	evutil_socket_t fd = bufferevent_getfd(bev);
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	AN(c);
	if ((size_t)fd >= cs->by_fd_size) {
		size_t size = cs->by_fd_size ? cs->by_fd_size : 64;

		while (size <= (size_t)fd)
			size *= 2;
		cs->by_fd = realloc(cs->by_fd, size * sizeof(*cs->by_fd));
		AN(cs->by_fd);
		memset(cs->by_fd + cs->by_fd_size, 0,
		       (size - cs->by_fd_size) * sizeof(*cs->by_fd));
		cs->by_fd_size = size;
	}
	CHECK(cs->by_fd[fd] == NULL);
	c->magic = CONN_MAGIC;
	c->cs = cs;
	c->evcon = evcon;
	c->bev = bev;
	c->fd = fd;
	c->first = 1;
	c->state = C_IDLE;
	c->timer = evtimer_new(cs->base, on_timer, c);
	c->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
	AN(c->timer);
	AN(c->input_cb);
	cs->by_fd[fd] = c;
	evhttp_connection_set_closecb(evcon, on_close, c);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* libevent writes 16 KiB per loop turn by default: a 450 KB answer
	 * would take ~28 turns; let the kernel take what it can at once */
	bufferevent_set_max_single_write(bev, WRITE_CHUNK_MAX);
	arm(c, cs->lim.header_timeout_ms);
}

/* Registers what was accepted this turn (see the file comment). */
static void on_settle(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	for (size_t i = 0; i < cs->n_fresh; i++) {
		struct bufferevent *bev = cs->fresh[i];
		void *evcon = NULL;

		bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
		if (evcon != NULL && bufferevent_getfd(bev) >= 0)
			track(cs, bev, evcon);
		else
			count_open(cs, -1); /* evhttp dropped it already */
		bufferevent_decref(bev);
	}
	cs->n_fresh = 0;
	maybe_resume(cs);
}

/* evhttp_set_bevcb: a connection was just accepted. */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
	struct conns *cs = arg;
	struct bufferevent *bev;

	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	/* no deferred callbacks and no close-on-free: as evhttp's own (the
	 * front writes answers synchronously, see answer_send) */
	bev = bufferevent_socket_new(base, -1, 0);
	AN(bev);
	bufferevent_incref(bev);
	if (cs->n_fresh == cs->fresh_cap) {
		cs->fresh_cap = cs->fresh_cap ? cs->fresh_cap * 2 : 16;
		cs->fresh = realloc(cs->fresh, cs->fresh_cap * sizeof(*cs->fresh));
		AN(cs->fresh);
	}
	cs->fresh[cs->n_fresh++] = bev;
	if (cs->n_fresh == 1)
		event_active(cs->settle, EV_TIMEOUT, 1);
	count_open(cs, 1);
	if (total_open(cs) >= cs->lim.max && !cs->paused_full) {
		/* (loops accepting at the same instant may each take one more:
		 * at most --threads - 1 over the limit, for a moment) */
		cs->paused_full = 1;
		listen_all(cs, 0); /* the kernel's backlog holds the next ones */
		maybe_resume(cs);  /* arms the recheck */
		cglog(CGLOG_DEBUG, "connection limit %ld reached: not accepting",
		      cs->lim.max);
	}
	return bev;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	cs->paused_emfile = 0;
	if (!cs->paused_full)
		listen_all(cs, 1);
}

static void on_accept_error(struct evconnlistener *l, void *ctx)
{
	struct conns *cs = thread_conns;
	int err = EVUTIL_SOCKET_ERROR();
	int64_t now;
	struct timeval tv = {CONN_ACCEPT_PAUSE_MS / 1000, (CONN_ACCEPT_PAUSE_MS % 1000) * 1000};

	(void)l;
	(void)ctx;
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	now = mono_ms(cs);
	if (now - cs->logged_ms >= CONN_LOG_EVERY_MS || cs->logged_ms == 0) {
		cglog(CGLOG_ERROR, "accept: %s; not accepting for %d ms (%zu connections "
		      "open on this loop)%s", strerror(err), CONN_ACCEPT_PAUSE_MS, cs->n,
		      cs->suppressed ? "; the same happened again since the last line" : "");
		cs->logged_ms = now;
		cs->suppressed = 0;
	} else {
		cs->suppressed++;
	}
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		cs->paused_emfile = 1;
		listen_all(cs, 0);
		evtimer_add(cs->resume, &tv);
	}
}

struct conns *conns_new(struct event_base *base, struct evhttp *http,
			const struct conn_limits *lim, const struct conn_events *ev)
{
	struct conns *cs = calloc(1, sizeof(*cs));

	AN(cs);
	cs->magic = CONNS_MAGIC;
	cs->base = base;
	cs->http = http;
	cs->lim = *lim;
	cs->ev = *ev;
	cs->settle = event_new(base, -1, 0, on_settle, cs);
	cs->resume = evtimer_new(base, on_resume, cs);
	cs->recheck = evtimer_new(base, on_recheck, cs);
	AN(cs->settle);
	AN(cs->resume);
	AN(cs->recheck);
	evhttp_set_bevcb(http, on_accept, cs);
	return cs;
}

void conns_free(struct conns *cs)
{
	if (cs == NULL)
		return;
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	CHECK(cs->n_fresh == 0);
	/* evhttp_free closed every connection (on_close ran for each) */
	for (size_t i = 0; i < cs->by_fd_size; i++)
		CHECK(cs->by_fd[i] == NULL);
	event_free(cs->settle);
	event_free(cs->resume);
	event_free(cs->recheck);
	free(cs->by_fd);
	free(cs->fresh);
	cs->magic = 0;
	free(cs);
}

void conns_own_thread(struct conns *cs)
{
	CHECK(cs == NULL || cs->magic == CONNS_MAGIC);
	CHECK(cs == NULL || thread_conns == NULL);
	thread_conns = cs;
}

void conns_set_limits(struct conns *cs, const struct conn_limits *lim)
{
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	cs->lim = *lim;
	maybe_resume(cs);
}

void conns_add_listener(struct conns *cs, struct evconnlistener *l)
{
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	CHECK(cs->n_listeners < LISTENERS_MAX);
	cs->listeners[cs->n_listeners++] = l;
	evconnlistener_set_error_cb(l, on_accept_error);
	if (cs->paused_full || cs->paused_emfile)
		evconnlistener_disable(l);
}

void conns_forget_listeners(struct conns *cs)
{
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	cs->n_listeners = 0;
	evtimer_del(cs->resume);
	evtimer_del(cs->recheck);
}

/* The registered connection a request arrived on, or NULL. */
static struct conn *conn_of(struct conns *cs, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;

	if (fd < 0 || (size_t)fd >= cs->by_fd_size || cs->by_fd[fd] == NULL ||
	    cs->by_fd[fd]->evcon != evcon)
		return NULL;
	return cs->by_fd[fd];
}

enum conn_verdict conns_request(struct conns *cs, struct evhttp_request *req)
{
	struct conn *c;

	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	if ((c = conn_of(cs, req)) == NULL)
		return CONN_GONE;
	if (c->state != C_BUSY)
		cs->n_busy++;
	c->state = C_BUSY;
	c->first = 0;
	c->user = NULL;
	evtimer_del(c->timer);
	evhttp_request_set_on_complete_cb(req, on_complete, c);
	if (c->bad) {
		c->bad = 0;
		return CONN_BAD_HEAD;
	}
	return CONN_OK;
}

void conns_set_user(struct conns *cs, struct evhttp_request *req, void *user)
{
	struct conn *c;

	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	if ((c = conn_of(cs, req)) != NULL)
		c->user = user;
}

void conns_sweep(struct conns *cs)
{
	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	for (size_t fd = 0; fd < cs->by_fd_size; fd++) {
		struct conn *c = cs->by_fd[fd];
		char byte;
		ssize_t n;

		if (c == NULL || c->state != C_BUSY || c->user == NULL)
			continue;
		n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			void *user = c->user;

			c->user = NULL;
			if (cs->ev.gone)
				cs->ev.gone(user, cs->ev.arg);
		}
	}
}

size_t conns_count(const struct conns *cs)
{
	return cs->n;
}

size_t conns_arriving(const struct conns *cs)
{
	size_t n = 0;

	CHECK_OBJ_NOTNULL(cs, CONNS_MAGIC);
	for (size_t fd = 0; fd < cs->by_fd_size; fd++) {
		const struct conn *c = cs->by_fd[fd];

		if (c != NULL && c->state != C_BUSY && (c->state == C_HEAD || c->first))
			n++;
	}
	return n + cs->n_fresh;
}

size_t conns_busy(const struct conns *cs)
{
	return cs->n_busy;
}
