/*
 * fuzz_query: policy/query.c's query_normalise on any bytes.
 *
 * Properties: the outputs keep their documented invariants (canonical
 * NUL-terminated, non-empty, within QUERY_CANON_MAX; error strings
 * NUL-terminated UTF-8); and normalising is idempotent: the canonical query
 * normalised again gives the same bytes, the same `present` bits and
 * values, and drops nothing.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/query.h"

/* Strictly valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static int utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		unsigned c = *p, n, cp;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		for (unsigned i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		p += n + 1;
	}
	return 1;
}

static void check_error(const struct query_error *err)
{
	if (memchr(err->parameter, '\0', sizeof(err->parameter)) == NULL ||
	    memchr(err->message, '\0', sizeof(err->message)) == NULL)
		abort();
	if (!utf8_valid(err->parameter) || !utf8_valid(err->message) || err->message[0] == '\0')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct query a, b;
	static struct query_error err;

	memset(&err, 0x5a, sizeof(err));
	if (query_normalise((const char *)data, size, &a, &err) != QUERY_OK) {
		check_error(&err);
		return 0;
	}
	if (a.canonical_len == 0 || a.canonical_len >= QUERY_CANON_MAX ||
	    strlen(a.canonical) != a.canonical_len ||
	    memchr(a.ignored, '\0', sizeof(a.ignored)) == NULL)
		abort();
	/* idempotence: the canonical form is a fixed point */
	memset(&err, 0x5a, sizeof(err));
	if (query_normalise(a.canonical, a.canonical_len, &b, &err) != QUERY_OK)
		abort();
	if (b.canonical_len != a.canonical_len ||
	    memcmp(a.canonical, b.canonical, a.canonical_len + 1) != 0 ||
	    b.present != a.present || b.ignored[0] != '\0')
		abort();
	if (((a.present & QUERY_P_DAYS) && a.days_milli != b.days_milli) ||
	    ((a.present & QUERY_P_CREATED_AFTER) && a.created_after_ms != b.created_after_ms) ||
	    ((a.present & QUERY_P_UPDATED_AFTER) && a.updated_after_ms != b.updated_after_ms) ||
	    ((a.present & QUERY_P_LIMIT) && a.limit != b.limit) ||
	    ((a.present & QUERY_P_OFFSET) && a.offset != b.offset))
		abort();
	return 0;
}
