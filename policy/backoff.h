/*
 * backoff: "full jitter" exponential backoff for retries, drawn from a
 * splitmix64 generator whose 64-bit state the caller owns (one per loop: no
 * global state, no clock, reproducible from a seed).
 */
#ifndef CG_POLICY_BACKOFF_H
#define CG_POLICY_BACKOFF_H

#include <stdint.h>

#include "policy/limit.h"

/*
 * The next value of a splitmix64 generator (Steele, Lea, Flood 2014) whose
 * state the caller owns: any 64-bit seed works, 0 included; advances *state
 * (not NULL).
 */
uint64_t limit_rng_next(uint64_t *state);

/*
 * Delay before retry number `attempt` (0 for the first retry), "full jitter":
 * uniform over the integers 1 .. min(cap_ms, base_ms * 2^attempt), so never
 * 0. base_ms and cap_ms below 1 are taken as 1, cap_ms above
 * LIMIT_DELAY_MAX_MS as that; any attempt number is safe (no overflow).
 * Draws from *rng (caller-owned splitmix64 state, see limit_rng_next).
 */
int64_t limit_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms,
			 uint64_t *rng);

#endif
