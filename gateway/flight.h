/*
 * flight: coalescing of identical upstream fetches.
 *
 * A flight is one upstream fetch for one entry id (API key hash + canonical
 * query) and the waiters that want its answer. The first request for an id
 * opens the flight (the leader) and starts the fetch; requests for the same
 * id that arrive before it lands join as waiters (collapsed). When the fetch
 * ends, flight_land calls every waiter once, in arrival order, with the same
 * response, and the flight leaves the table. No polling anywhere: a waiter
 * is woken by the landing itself.
 *
 * States: open (in the table, accepting waiters) -> landing (calling the
 * waiters; joins are refused) -> freed. A waiter whose client disconnected
 * is still called; answering a detached request is how evhttp frees it, and
 * the fetch goes on for the others.
 *
 * Bounds: max_waiters per flight (flight_join fails past it); the number of
 * flights is bounded by the caller (one per upstream fetch in progress).
 */
#ifndef CG_GATEWAY_FLIGHT_H
#define CG_GATEWAY_FLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/upstream.h"

#define FLIGHT_ID_LEN 32

struct flight_table;
struct flight;

/*
 * What a flight brings back: the upstream's answer and what was done with
 * it, or (resp NULL) why the owner did not ask the upstream at all.
 */
struct flight_result {
	const struct upstream_response *resp; /* borrowed; NULL: not asked */
	int stored;         /* the answer was written to the cache */
	uint64_t etag;      /* its ETag when stored */
	uint32_t ttl_s;     /* its freshness lifetime when stored */
	int failed;         /* the upstream failed (a stored answer may stand in) */
	int malformed;      /* a 200 whose body is not a JSON array */
	int refusal;        /* resp NULL: the owner's reason, its own codes */
	int64_t retry_after_ms; /* with a refusal: when asking again makes sense */
};

/* Called once per waiter when the flight lands. `r` is borrowed; `collapsed`
 * is 0 for the first waiter (the leader) and 1 for the others. */
typedef void (*flight_waiter_fn)(const struct flight_result *r, void *arg,
				 int collapsed);

/* A table for up to max_waiters waiters per flight. */
struct flight_table *flight_table_new(size_t max_waiters);

/* Frees the table; flights still open are dropped without calling waiters
 * (the owner answers their requests itself at shutdown). */
void flight_table_free(struct flight_table *t);

/* The open flight for `id`, or NULL. */
struct flight *flight_find(struct flight_table *t, const uint8_t id[FLIGHT_ID_LEN]);

/* Opens a flight for `id` (none may be open). The caller starts the fetch
 * and calls flight_land from its done callback. */
struct flight *flight_open(struct flight_table *t, const uint8_t id[FLIGHT_ID_LEN]);

/* Adds a waiter. Returns 0, or -1 if the flight has max_waiters already. */
int flight_join(struct flight *f, flight_waiter_fn fn, void *arg);

/* Calls every waiter with `r`, then removes and frees the flight. */
void flight_land(struct flight *f, const struct flight_result *r);

/* Does pred(arg) hold for any waiter's arg? (Stops at the first.) */
int flight_any(const struct flight *f, int (*pred)(void *arg));

/* Waiters on a flight. */
size_t flight_waiters(const struct flight *f);

/* Flights open. */
size_t flight_count(const struct flight_table *t);

#endif
