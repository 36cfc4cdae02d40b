/*
 * front: one front-end loop, on a thread of its own. There are --threads of
 * them; each accepts client connections on its own SO_REUSEPORT socket
 * (the kernel spreads new connections over them) and follows each request
 * from accept to answer by itself:
 *
 *   evhttp request -> route -> policy (validate, normalise, key) -> the
 *   store, through the loop's own reader -> hit: answer from the map
 *   (answer.c) | miss: a waiter, and an ask to the fetch layer (fetch.c)
 *   -> its landing -> answer
 *
 * The hit path takes no lock and touches no other thread's data but the
 * LRU hints (relaxed atomics) and the read-only settings.
 *
 * States: serving -> draining (no new connections, answers carry
 * `Connection: close`; the front tells the main loop once nothing is in
 * flight) -> stopping (every waiter answered, then connections closed,
 * the thread ends) -> freed by front_free after the join.
 *
 * Threads: front_new, front_start, front_free on the main thread;
 * front_post from any thread; everything else on the front's own thread.
 * Invariants: every request handed to a front is answered exactly once;
 * at most its share of --max-connections are open at once; a waiter lives
 * until its landing comes (the fetch layer lands every ask it took).
 */
#ifndef CG_GATEWAY_FRONT_H
#define CG_GATEWAY_FRONT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/chan.h"
#include "gateway/config.h"

#define FRONT_THREADS_MAX 64
#define FRONT_LISTENERS_MAX 64 /* listening sockets one loop accepts on */

struct store;
struct lru;
struct fetcher;
struct metrics;
struct front;

/* What every front borrows (all must outlive the fronts). */
struct front_shared {
	const struct cg_config *cfg;
	struct store *store;
	struct lru *lru;
	struct fetcher *fetcher;
	struct chan *events; /* the main loop's: FRONT_DRAINED, FRONT_STOPPED */
	const int *listen_fds; /* inherited listening sockets (systemd's, a handover's) */
	size_t n_listen_fds;   /* 0: bind cfg->listen */
	struct metrics *metrics; /* every loop's counters (fronts[index] is this one's) */
	int access_fd;       /* the access log's descriptor, or -1: none */
	atomic_long *conns_total; /* client connections open on every loop */
};

/* Messages, chan_msg.kind MSG_FRONT: to a front (DRAIN, STOP, CONFIG) and
 * from one to the main loop (DRAINED, STOPPED, CONFIGURED). */
enum front_what {
	FRONT_DRAIN = 1, /* stop accepting; report DRAINED when idle */
	FRONT_STOP,      /* answer what waits, close everything, end */
	FRONT_CONFIG,    /* use msg.cfg from now on */
	FRONT_DRAINED,   /* nothing in flight any more (once per DRAIN) */
	FRONT_STOPPED,   /* the thread is about to end: join it */
	FRONT_CONFIGURED, /* the front uses msg.cfg now (the old one may go) */
};

struct front_msg {
	struct chan_msg link; /* kind MSG_FRONT */
	unsigned magic;
	enum front_what what;
	unsigned index;               /* the front it is from */
	const struct cg_config *cfg;  /* FRONT_CONFIG */
};

#define FRONT_MSG_MAGIC 0x46524d53u

/* A message (free it with front_msg_free when received). */
struct front_msg *front_msg_new(enum front_what what, unsigned index);
void front_msg_free(struct front_msg *m);

/*
 * Front number `index`: its loop, evhttp and listening socket on
 * sh->cfg->listen (port: 0 picks one for the first front; the others pass
 * the port it got), or dups of inherited sockets (sh->listen_fds): each loop
 * takes every threads-th one, or shares one when there are fewer than
 * loops. Does not run it yet. NULL with err set if it cannot listen (one
 * line).
 */
struct front *front_new(const struct front_shared *sh, unsigned index, unsigned port,
			char *err, size_t err_size);

/* When the front's loop last ticked (CLOCK_MONOTONIC ms; any thread): a
 * loop that stops ticking is stuck. */
int64_t front_heartbeat(const struct front *fr);

/* The front's listening sockets (to hand over to a new gateway); at most
 * max, returns how many. */
size_t front_listen_fds(const struct front *fr, int *fds, size_t max);

/* The port the front listens on. */
unsigned front_port(const struct front *fr);

/* Starts the front's thread. 0, or -1 (err set). */
int front_start(struct front *fr, char *err, size_t err_size);

/* Sends a message to the front (any thread); takes it. */
void front_post(struct front *fr, struct front_msg *m);

/* Joins the thread (after FRONT_STOPPED) and frees the front. A front
 * never started is just freed. */
void front_free(struct front *fr);

#endif
