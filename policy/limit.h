/*
 * limit: upstream protection, and the time bounds its modules share.
 *
 * Upstream protection is four pure modules, each with its own header; they
 * keep the limit_ prefix of the one module they were split from:
 *   policy/bucket       per-key token buckets in a bounded table
 *                       (struct limit_table), vendor blocks (429)
 *   policy/breaker      the circuit breaker of one upstream host
 *                       (struct limit_breaker)
 *   policy/retry_after  a Retry-After value (delay-seconds or an HTTP-date)
 *                       to a delay
 *   policy/backoff      a splitmix64 generator and "full jitter" backoff
 * policy/admission puts buckets and breaker together into the decisions of
 * which fetches start now, wait or are refused.
 *
 * Time: no I/O, no clock, no libevent/libcurl/LMDB. Every function that
 * needs the time takes `now_ms` from the caller (the event loop reads the
 * clock once per callback and passes it down). The bucket tables and the
 * breaker accept any millisecond clock in [0, LIMIT_NOW_MAX], monotonic is
 * best; limit_parse_retry_after needs wall-clock Unix-epoch milliseconds for
 * its HTTP-date form and returns a delay, which the caller adds to whatever
 * clock it gives limit_block.
 *
 * Not thread-safe: one table, one breaker per event loop.
 */
#ifndef CG_POLICY_LIMIT_H
#define CG_POLICY_LIMIT_H

#include <stdint.h>

#define LIMIT_NOW_MAX (INT64_C(1) << 62) /* largest now_ms / deadline, ms */
/* The longest Retry-After, cool-down or backoff ceiling: 24 h, in ms. */
#define LIMIT_DELAY_MAX_MS (INT64_C(86400) * 1000)

#endif
