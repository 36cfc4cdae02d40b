/* ttl: see ttl.h. */
#include "policy/ttl.h"

enum ttl_class ttl_classify(const struct ttl_policy *p, const struct query *q)
{
	if (q->present & (QUERY_P_UPDATED_AFTER | QUERY_P_CREATED_AFTER))
		return TTL_CLASS_CURSOR;
	if ((q->present & QUERY_P_DAYS) &&
	    (uint64_t)q->days_milli >= (uint64_t)p->wide_days * 1000u)
		return TTL_CLASS_WIDE;
	return TTL_CLASS_DEFAULT;
}

const char *ttl_class_name(enum ttl_class c)
{
	switch (c) {
	case TTL_CLASS_CURSOR: return "cursor";
	case TTL_CLASS_WIDE: return "wide";
	case TTL_CLASS_DEFAULT: break;
	}
	return "default";
}

uint32_t ttl_seconds(const struct ttl_policy *p, const struct query *q)
{
	uint32_t s;

	switch (ttl_classify(p, q)) {
	case TTL_CLASS_CURSOR: s = p->ttl_cursor_s; break;
	case TTL_CLASS_WIDE: s = p->ttl_wide_s; break;
	default: s = p->ttl_s; break;
	}
	return s == TTL_INHERIT ? p->ttl_s : s;
}

int64_t ttl_expires_ms(const struct ttl_policy *p, const struct query *q,
		       int64_t now_ms)
{
	return now_ms + (int64_t)ttl_seconds(p, q) * 1000;
}

int ttl_is_stale(int64_t expires_ms, int64_t now_ms)
{
	return now_ms >= expires_ms;
}

int64_t ttl_left_s(int64_t expires_ms, int64_t now_ms)
{
	int64_t d;

	if (!ttl_is_stale(expires_ms, now_ms)) {
		if (__builtin_sub_overflow(expires_ms, now_ms, &d))
			return INT64_MAX / 1000; /* absurd times: saturate */
		return d / 1000;
	}
	if (__builtin_sub_overflow(now_ms, expires_ms, &d))
		return INT64_MIN / 1000;
	return -(d / 1000) - 1;
}
