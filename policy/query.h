/*
 * query: validation and normalisation of GET /api/public/contacts queries.
 *
 * A pure function from the raw query string (the part after '?', still
 * percent-encoded) to either one canonical query or one error naming the
 * parameter and the rule it broke. No I/O, no allocation, no clock: the
 * caller owns every buffer and the result depends on the input alone.
 *
 * The canonical query is what goes upstream and what the cache is keyed on,
 * so two requests that mean the same thing must produce the same bytes:
 *   - known parameters only, sorted by name, joined with '&';
 *   - numbers in plain decimal ("030" -> "30", "7.50" -> "7.5", "10.0" -> "10");
 *   - UUIDs lower-cased;
 *   - timestamps as UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" (offsets converted);
 *   - values percent-encoded canonically: RFC 3986 unreserved bytes
 *     (A-Z a-z 0-9 - . _ ~) literal, every other byte as %XX upper-case hex;
 *   - offset=0 dropped: skipping none is the vendor's default (an absent
 *     limit stays distinct from every value: the vendor's default is not
 *     documented);
 *   - unknown parameters dropped and listed in `ignored`; entity_type without
 *     the custom field pair is dropped too (the vendor ignores it).
 *
 * Invariants: on QUERY_OK `canonical` is NUL-terminated, non-empty and at
 * most QUERY_CANON_MAX - 1 bytes; on any other status `err` is filled and
 * `out` is unspecified.
 */
#ifndef CG_POLICY_QUERY_H
#define CG_POLICY_QUERY_H

#include <stddef.h>
#include <stdint.h>

#define QUERY_RAW_MAX 4096       /* longest raw query accepted, bytes */
#define QUERY_CANON_MAX 4096     /* canonical query buffer, with NUL */
#define QUERY_IGNORED_MAX 256    /* ignored-parameter list buffer, with NUL */
#define QUERY_PARAMS_MAX 64      /* most '&'-separated segments accepted */
#define QUERY_STRING_MAX 1024    /* longest decoded custom field key/value */
#define QUERY_OFFSET_MAX 2147483647L

enum query_status {
	QUERY_OK = 0,
	QUERY_INVALID, /* a parameter broke a rule: err says which and why */
};

/* Bits of query.present: which parameters the canonical query carries. */
enum query_param {
	QUERY_P_DAYS = 1u << 0,
	QUERY_P_CREATED_AFTER = 1u << 1,
	QUERY_P_UPDATED_AFTER = 1u << 2,
	QUERY_P_LIMIT = 1u << 3,
	QUERY_P_OFFSET = 1u << 4,
	QUERY_P_STAGE_ID = 1u << 5,
	QUERY_P_PIPELINE_ID = 1u << 6,
	QUERY_P_CUSTOM_FIELD = 1u << 7, /* key and value, always together */
	QUERY_P_ENTITY_TYPE = 1u << 8,
};

/* Both strings are NUL-terminated valid UTF-8, whatever the input. */
struct query_error {
	char parameter[32]; /* the parameter's name, e.g. "days"; "query" for the
			     * whole query or a parameter with an empty name */
	char message[192];  /* one sentence for a human, e.g. "days must be ..." */
};

struct query {
	char canonical[QUERY_CANON_MAX];
	size_t canonical_len;
	/* Names of dropped parameters, canonically percent-encoded, joined with
	 * ','; at most QUERY_IGNORED_MAX - 1 bytes: if the list does not fit it
	 * ends in ",..." (just "..." when not even the first name fits). Empty
	 * string when nothing was dropped; empty names ("=1") are not listed. */
	char ignored[QUERY_IGNORED_MAX];
	unsigned present;          /* enum query_param bits */
	/* Parsed values, meaningful when the matching bit is in `present`;
	 * for TTL classes and rate policy. */
	uint32_t days_milli;       /* days * 1000, e.g. 7.5 days -> 7500 */
	int64_t created_after_ms;  /* milliseconds since the Unix epoch, UTC */
	int64_t updated_after_ms;
	uint32_t limit;
	uint32_t offset;
};

/*
 * Validates and normalises `raw` (raw_len bytes, need not be NUL-terminated;
 * may be NULL when raw_len is 0). Returns QUERY_OK with `out` filled, or
 * QUERY_INVALID with `err` filled. Borrows every argument; keeps nothing.
 */
enum query_status query_normalise(const char *raw, size_t raw_len,
				  struct query *out, struct query_error *err);

/*
 * Appends `src` (len bytes) to dst percent-encoded canonically (unreserved
 * bytes literal, all others %XX upper-case). Writes at most dst_size bytes
 * including the NUL. Returns the encoded length (excluding NUL), or -1 if it
 * did not fit (dst then holds a NUL-terminated prefix).
 */
long query_encode(char *dst, size_t dst_size, const char *src, size_t len);

#endif
