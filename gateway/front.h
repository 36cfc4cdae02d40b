/*
 * front: the HTTP front end. Accepts client connections with evhttp on the
 * gateway's loop and follows each request from accept to answer:
 *
 *   evhttp request -> route -> policy (validate, normalise, key) -> cache
 *   lookup -> hit: answer from the map | miss: flight (coalesce) -> upstream
 *   fetch -> store -> wake every waiter
 *
 * States: serving, then draining after front_drain (no new connections,
 * answers carry `Connection: close`, the drained callback runs once when the
 * last in-flight request is answered), then freed.
 *
 * Invariants: every request handed to a callback is answered exactly once;
 * at most cfg->max_connections client connections are served at once.
 */
#ifndef CG_GATEWAY_FRONT_H
#define CG_GATEWAY_FRONT_H

#include <stddef.h>

#include "gateway/config.h"

struct event_base;
struct front;
struct store;
struct upstream;

/*
 * Binds cfg's listen address and starts serving on `base`, answering from
 * `store` and sending misses to `up` (both borrowed; they must outlive the
 * front). Returns NULL with `err` set if the address cannot be bound.
 */
struct front *front_new(struct event_base *base, const struct cg_config *cfg,
			struct upstream *up, struct store *store, char *err,
			size_t err_size);

/* The port actually bound (useful when cfg asked for port 0). */
unsigned front_port(const struct front *fr);

/* Stops accepting; calls drained(arg) once no request is in flight. */
void front_drain(struct front *fr, void (*drained)(void *arg), void *arg);

/* Cancels every upstream fetch and answers their waiters 503 at once
 * (shutdown deadline). */
void front_abort_pending(struct front *fr);

/* Requests received and not yet answered. */
size_t front_in_flight(const struct front *fr);

/* Closes every connection and frees the front. */
/* Offline: answer from the cache only, whatever the age of what is stored
 * (stale answers are marked so), and never contact the upstream. */
void front_set_offline(struct front *fr, int offline);
int front_offline(const struct front *fr);

/* The upstream admission control, for status reports (borrowed). */
const struct admit *front_admit(const struct front *fr);

void front_free(struct front *fr);

#endif
