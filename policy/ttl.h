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

#endif
