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

#define FLIGHT_ID_LEN 32

struct flight_table;
struct flight;

/* Called once per waiter when the flight lands, with the flight's result
 * (the owner's, passed through as is); `collapsed` is 0 for the first waiter
 * (the leader) and 1 for the others. */
typedef void (*flight_waiter_fn)(void *result, void *arg, int collapsed);

/* A table for up to max_waiters waiters per flight. */
struct flight_table *flight_table_new(size_t max_waiters);

/* A new bound on waiters per flight (a reload); flights already over it
 * keep theirs but take no more. */
void flight_table_set_max(struct flight_table *t, size_t max_waiters);

/* Frees the table; flights still open are dropped without calling waiters
 * (the owner answers their requests itself at shutdown). */
void flight_table_free(struct flight_table *t);

/* The open flight for `id`, or NULL. */
struct flight *flight_find(struct flight_table *t, const uint8_t id[FLIGHT_ID_LEN]);

/* Opens a flight for `id` (none may be open). The caller starts the fetch
 * and calls flight_land from its done callback. */
struct flight *flight_open(struct flight_table *t, const uint8_t id[FLIGHT_ID_LEN]);

/* The owner's data for the flight (its fetch), NULL until set. */
void flight_set_data(struct flight *f, void *data);
void *flight_data(const struct flight *f);

/* Adds a waiter. Returns 0, or -1 if the flight has max_waiters already. */
int flight_join(struct flight *f, flight_waiter_fn fn, void *arg);

/* Calls every waiter with `result`, then removes and frees the flight. */
void flight_land(struct flight *f, void *result);

/* The arg of the first waiter for which match(arg, key) holds, or NULL. */
void *flight_find_waiter(const struct flight *f, int (*match)(void *arg, const void *key),
			 const void *key);

/* Waiters on a flight. */
size_t flight_waiters(const struct flight *f);

/* Flights open. */
size_t flight_count(const struct flight_table *t);

#endif
