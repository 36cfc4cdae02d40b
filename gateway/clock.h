/*
 * clock: a loop's two clocks in milliseconds, read from libevent's cached
 * time (no system call on the hot path).
 *
 * loop_mono_ms: monotonic, for timeouts, rates and deadlines (a wall-clock
 * step never drains a bucket nor stretches a deadline). loop_wall_ms: the
 * wall clock, for what is stored and shown (stored/expiry times, Age).
 */
#ifndef CG_GATEWAY_CLOCK_H
#define CG_GATEWAY_CLOCK_H

#include <event2/event.h>
#include <stdint.h>
#include <sys/time.h>

static inline int64_t loop_mono_ms(struct event_base *base)
{
	struct timeval tv;

	event_gettime_monotonic(base, &tv);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static inline int64_t loop_wall_ms(struct event_base *base)
{
	struct timeval tv;

	event_base_gettimeofday_cached(base, &tv);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

#endif
