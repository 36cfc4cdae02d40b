/*
 * admin: the operator's HTTP endpoint, off unless --admin-listen is set.
 *
 * It listens on its own loopback address (admin_check refuses any other)
 * and every request must carry `Authorization: Bearer <--admin-token>`
 * (compared in constant time); otherwise 401. Routes, JSON answers:
 *
 *   GET  /admin/status                    offline, breaker, upstream queue,
 *                                         cache entries
 *   POST /admin/offline?on=true|false     switch offline mode
 *   POST /admin/purge?all=true            delete every entry
 *   POST /admin/purge?key_hash=HEX&query_prefix=Q&expired=true
 *                                         delete what matches (AND)
 *
 * The purge is the one `contacts-gateway cache purge` runs (cache/tool.h),
 * on the gateway's own open store, inside the loop: it works in batches but
 * runs to the end, so a purge of a huge cache pauses serving while it runs.
 */
#ifndef CG_GATEWAY_ADMIN_H
#define CG_GATEWAY_ADMIN_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cg_config;
struct store;
struct fetcher;
struct admin;

/* Checks the admin settings: 0, or -1 with `err` (admin-listen not a
 * loopback address, or set without an admin-token). */
int admin_check(const struct cg_config *cfg, char *err, size_t err_size);

/* Starts the endpoint on cfg->admin_listen (borrowed, as store and
 * fetcher, for its life), on the fetcher's loop. NULL with `err` if it
 * cannot listen. */
struct admin *admin_new(struct event_base *base, const struct cg_config *cfg,
			struct store *store, struct fetcher *fetcher, char *err,
			size_t err_size);

/* New settings (a reload; borrowed until the next): the token. The
 * address stays (it cannot change without a restart). */
void admin_set_config(struct admin *ad, const struct cg_config *cfg);

/* The port it listens on (for --admin-listen HOST:0). */
unsigned admin_port(const struct admin *ad);

/* Does `presented` (len bytes) hash to `want`, the SHA-256 of the token?
 * Compares fixed-length digests in constant time (CRYPTO_memcmp), so the
 * time taken tells neither the token's length nor a matching prefix. */
int admin_token_matches(const uint8_t want[32], const char *presented, size_t len);

/* Stops listening and frees it. NULL is a no-op. */
void admin_free(struct admin *ad);

#endif
