/*
 * backoff: see backoff.h.
 */
#include "policy/backoff.h"

#include "policy/check.h"

uint64_t limit_rng_next(uint64_t *state)
{
	uint64_t z;

	AN(state);
	z = (*state += UINT64_C(0x9E3779B97F4A7C15));
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

int64_t limit_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms, uint64_t *rng)
{
	uint64_t ceiling, n, limit, r;

	AN(rng);
	if (base_ms < 1)
		base_ms = 1;
	if (cap_ms < 1)
		cap_ms = 1;
	if (cap_ms > LIMIT_DELAY_MAX_MS)
		cap_ms = LIMIT_DELAY_MAX_MS;
	/* min(cap, base * 2^attempt) without forming base * 2^attempt when it
	 * would pass cap: cap < 2^27, so a shift past 27 always does. */
	if (attempt >= 32 || (uint64_t)base_ms > ((uint64_t)cap_ms >> attempt))
		ceiling = (uint64_t)cap_ms;
	else
		ceiling = (uint64_t)base_ms << attempt;
	if (ceiling > (uint64_t)cap_ms)
		ceiling = (uint64_t)cap_ms;
	/* Uniform over 1 .. ceiling by rejection: no modulo bias. */
	n = ceiling;
	limit = UINT64_MAX - UINT64_MAX % n;
	do
		r = limit_rng_next(rng);
	while (r >= limit);
	return (int64_t)(r % n) + 1;
}
