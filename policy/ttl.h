/*
 * ttl: how long a stored answer stays fresh, by query class.
 *
 * Classes (checked in this order; the first that applies wins):
 *   cursor  the query has updated_after or created_after: incremental-sync
 *           polling, where freshness matters most (ttl_cursor_s);
 *   wide    days >= wide_days: large, slow answers that change little
 *           between polls (ttl_wide_s);
 *   default everything else (ttl_s).
 * A class TTL of TTL_INHERIT takes ttl_s. A TTL of 0 means answers of that
 * class are not stored. Pure: no clock; callers pass `now`.
 */
#ifndef CG_POLICY_TTL_H
#define CG_POLICY_TTL_H

#include <stdint.h>

#include "policy/query.h"

#define TTL_INHERIT UINT32_MAX
#define TTL_MAX_S (365u * 86400u)

enum ttl_class {
	TTL_CLASS_DEFAULT = 0,
	TTL_CLASS_CURSOR,
	TTL_CLASS_WIDE,
};

struct ttl_policy {
	uint32_t ttl_s;        /* default class */
	uint32_t ttl_cursor_s; /* or TTL_INHERIT */
	uint32_t ttl_wide_s;   /* or TTL_INHERIT */
	uint32_t wide_days;    /* days at or above which a query is wide */
};

/* The class of a normalised query. */
enum ttl_class ttl_classify(const struct ttl_policy *p, const struct query *q);

/* The class's name for headers and logs: "default", "cursor", "wide". */
const char *ttl_class_name(enum ttl_class c);

/* Freshness lifetime in seconds for a normalised query (0: do not store). */
uint32_t ttl_seconds(const struct ttl_policy *p, const struct query *q);

/* When an answer stored at now_ms stops being fresh, in ms. */
int64_t ttl_expires_ms(const struct ttl_policy *p, const struct query *q,
		       int64_t now_ms);

/*
 * The one freshness boundary, used by every reader of a stored answer: an
 * answer is fresh while now_ms < expires_ms and stale from expires_ms on
 * (its expiry millisecond included).
 */
int ttl_is_stale(int64_t expires_ms, int64_t now_ms);

/*
 * The answer's remaining freshness in whole seconds, as Cache-Status's ttl
 * (RFC 9211) and the cache tools show it: fresh answers count down to 0
 * (rounded down); stale ones are negative from the first stale millisecond
 * on: -1 during the first second past expiry, -2 during the next, ... So
 * ttl <= -1 exactly when ttl_is_stale().
 */
int64_t ttl_left_s(int64_t expires_ms, int64_t now_ms);

#endif
