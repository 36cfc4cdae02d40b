/*
 * conn: a front loop's client connections, counted from accept to close,
 * and the timers that bound how long a client may take.
 *
 * Accept. libevent 2.1's evhttp has no hook at accept time, but it does
 * ask for each new connection's bufferevent (evhttp_set_bevcb) right after
 * accept(2). The set makes that bufferevent itself, counts the connection
 * there, and registers it a moment later in the same loop turn (an active
 * event, run before the loop polls again), when evhttp has made its
 * evhttp_connection (the bufferevent's callback argument): close callback,
 * TCP_NODELAY, write size, timers. At the limit the set stops accepting
 * (evconnlistener_disable: the kernel's backlog holds further connections,
 * as HAProxy's maxconn does) and starts again when one closes. When accept
 * fails for want of file descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) it
 * pauses accepting for CONN_ACCEPT_PAUSE_MS instead of spinning, and says
 * so at most once per CONN_LOG_EVERY_MS.
 *
 * States of a connection: idle (waiting for a request; closed silently
 * after the keep-alive timeout, or after the header timeout if it never
 * sent one) -> head (the first byte of a request arrived: the whole head
 * must follow within the header timeout, or the client gets 408 and the
 * connection closes) -> busy (the request is the front's; evhttp's own
 * read/write timeout, --client-timeout, bounds stalls) -> idle when the
 * answer is written, or closed.
 *
 * Threads: one set per front loop; everything on that loop's thread.
 * Bounds: `max` connections (the loop's share of --max-connections).
 */
#ifndef CG_GATEWAY_CONN_H
#define CG_GATEWAY_CONN_H

#include <stdatomic.h>
#include <stddef.h>

#define CONN_ACCEPT_PAUSE_MS 500
#define CONN_FULL_RECHECK_MS 50  /* at the limit: how often a loop looks again */
#define CONN_LOG_EVERY_MS 10000

struct event_base;
struct evconnlistener;
struct evhttp;
struct evhttp_request;
struct conns;

struct conn_limits {
	long max;                  /* connections at once, all loops together */
	atomic_long *total;        /* every loop's open connections (shared); NULL:
				    * this set's own count is the total */
	long header_timeout_ms;    /* a whole request head */
	long keepalive_timeout_ms; /* between requests */
};

/* What the set tells its owner. */
struct conn_events {
	/* a connection closed or went idle (for draining) */
	void (*changed)(void *arg);
	/* the client of a busy connection left; `user` as given to
	 * conns_request (not called when it was NULL or forgotten) */
	void (*gone)(void *user, void *arg);
	void *arg;
};

/* The connections of `http` on `base` (both borrowed); `ev` copied. */
struct conns *conns_new(struct event_base *base, struct evhttp *http,
			const struct conn_limits *lim, const struct conn_events *ev);

/* The set accepts on this thread (its loop's): call at the thread's start,
 * and with NULL at its end. One set per thread. */
void conns_own_thread(struct conns *cs);

/* Frees the set (after evhttp_free closed its connections). */
void conns_free(struct conns *cs);

/* New limits (a reload); applied to connections as their timers restart. */
void conns_set_limits(struct conns *cs, const struct conn_limits *lim);

/* Accepts on `l` too (a listener evhttp was bound to): paused at the
 * limit and after EMFILE. */
void conns_add_listener(struct conns *cs, struct evconnlistener *l);

/* Forgets the listeners (they are being freed: draining). */
void conns_forget_listeners(struct conns *cs);

/* What conns_request says of a request's connection. */
enum conn_verdict {
	CONN_OK = 0,   /* serve it */
	CONN_GONE,     /* its connection is not one of the set's (it left) */
	CONN_BAD_HEAD, /* its head held a NUL byte (evhttp reads header values
			* as C strings, so a NUL would cut one short): 400 */
};

/* A request was read and handed to the front: its connection is busy
 * until the answer is written. */
enum conn_verdict conns_request(struct conns *cs, struct evhttp_request *req);

/* Remembers `user` for the request's connection until its answer is
 * written: if the client leaves first, events.gone(user) runs. NULL
 * forgets it (the owner answered). No-op for a connection that left. */
void conns_set_user(struct conns *cs, struct evhttp_request *req, void *user);

/*
 * Looks for clients that left while their request waits (evhttp reads
 * nothing from a connection while its request is being answered, so it
 * does not notice): a peek at each such socket; EOF or an error calls
 * events.gone. A client that half-closes after its request
 * (shutdown(SHUT_WR)) cannot be told from one that left and is taken as
 * gone too, as nginx takes it (its 499). Cost: one recv per waiting
 * request.
 */
void conns_sweep(struct conns *cs);

/* Connections whose request is on its way: accepted and not yet asked
 * anything, or with a head arriving (a drain waits a moment for them).
 * Cost: a pass over the set's table (drains only). */
size_t conns_arriving(const struct conns *cs);

/* Connections open, and those busy with a request. */
size_t conns_count(const struct conns *cs);
size_t conns_busy(const struct conns *cs);

#endif
