/*
 * fuzz_retry_after: policy/retry_after.c's limit_parse_retry_after.
 *
 * Input: 8 bytes of clock (now_ms, folded into [0, LIMIT_NOW_MAX]), then
 * the field value. Properties: a success gives a delay in
 * [0, LIMIT_DELAY_MAX_MS]; a failure leaves *delay_ms untouched. And on
 * values made to be valid from the same bytes: delta-seconds gives
 * min(n s, the bound), and an IMF-fixdate, RFC 850 or asctime rendering of
 * a time t gives max(0, t - now) clamped, exactly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/retry_after.h"

#define SENTINEL INT64_C(-777)

static int64_t expect_for(int64_t t_ms, int64_t now_ms)
{
	int64_t d = t_ms - now_ms;

	if (d < 0)
		return 0;
	return d > LIMIT_DELAY_MAX_MS ? LIMIT_DELAY_MAX_MS : d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t raw = 0;
	int64_t now, delay = SENTINEL;
	char value[512];
	size_t n;

	if (size < 8)
		return 0;
	memcpy(&raw, data, 8);
	/* a wall clock between 1970 and about 2250 */
	now = (int64_t)(raw % (UINT64_C(8000000000) * 1000));
	n = size - 8 < sizeof(value) - 1 ? size - 8 : sizeof(value) - 1;
	memcpy(value, data + 8, n);
	value[n] = '\0';
	if (limit_parse_retry_after(value, now, &delay) == 0) {
		if (delay < 0 || delay > LIMIT_DELAY_MAX_MS)
			abort();
	} else if (delay != SENTINEL) {
		abort();
	}

	/* made-valid forms from the same bytes */
	{
		uint32_t secs;
		time_t t;
		struct tm tm;
		char buf[64];

		memcpy(&secs, data, 4);
		snprintf(buf, sizeof(buf), " %u\t", secs);
		delay = SENTINEL;
		if (limit_parse_retry_after(buf, now, &delay) != 0 ||
		    delay != ((int64_t)secs * 1000 > LIMIT_DELAY_MAX_MS ? LIMIT_DELAY_MAX_MS
									 : (int64_t)secs * 1000))
			abort();
		/* a time within a year of now, whole seconds, year 1970..9999 */
		t = (time_t)(now / 1000 + (int64_t)(secs % (2 * 31536000)) - 31536000);
		if (t < 0 || gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999)
			return 0;
		strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		delay = SENTINEL;
		if (limit_parse_retry_after(buf, now, &delay) != 0 ||
		    delay != expect_for((int64_t)t * 1000, now))
			abort();
		/* asctime: "Sun Nov  6 08:49:37 1994" */
		strftime(buf, sizeof(buf), "%a %b %e %H:%M:%S %Y", &tm);
		delay = SENTINEL;
		if (limit_parse_retry_after(buf, now, &delay) != 0 ||
		    delay != expect_for((int64_t)t * 1000, now))
			abort();
		/* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; within a year of
		 * now, the two-digit year always means this century's reading */
		{
			char day[16], mon[8];

			strftime(day, sizeof(day), "%A", &tm);
			strftime(mon, sizeof(mon), "%b", &tm);
			snprintf(buf, sizeof(buf), "%s, %02d-%s-%02d %02d:%02d:%02d GMT", day,
				 tm.tm_mday, mon, (tm.tm_year + 1900) % 100, tm.tm_hour, tm.tm_min,
				 tm.tm_sec);
		}
		delay = SENTINEL;
		if (limit_parse_retry_after(buf, now, &delay) != 0 ||
		    delay != expect_for((int64_t)t * 1000, now))
			abort();
	}
	return 0;
}
