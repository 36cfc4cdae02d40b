/*
 * derived: answers derived from stored ones (issue 13), the part built on
 * the store: which stored answer S may hold a question Q's answer (the
 * families index, cache/families.h), reading S, checking it may be used,
 * and cutting Q's answer out of it (policy/derive.h).
 *
 * S may be used for Q when it is of the same API key (its stored key hash
 * is Q's: never across keys), fresh (not past its expiry), and no older
 * than Q's own TTL allows (an answer's freshness is S's, never longer than
 * Q's TTL class would give Q). The derived answer is then exactly what the
 * vendor would have answered to Q at S's fetch time: the same bytes, so the
 * same ETag; its Age and TTL are S's.
 *
 * Threads: one (the fetch layer's). Memory: the index (families.h) and
 * two parsed queries of scratch; a derived body is malloc'd for the caller.
 */
#ifndef CG_CACHE_DERIVED_H
#define CG_CACHE_DERIVED_H

#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"
#include "policy/derive.h"

/* Why a question was not derived: an enum derive_status (>= 1), or these. */
enum {
	DERIVED_NO_SOURCE = DERIVE_STATUS_COUNT, /* no stored answer of its families */
	DERIVED_STALE_SOURCE,                    /* only ones too old to use */
	DERIVED_REASONS,
};

struct deriver;

/* A derived answer; body owned (derived_clear frees it). */
struct derived {
	enum derive_rule rule;
	char *body;
	size_t body_len;
	size_t s_count, count; /* elements in S, in the answer */
	char content_type[STORE_CTYPE_MAX + 1];
	int64_t stored_ms;  /* S's: the answer is as of then */
	int64_t expires_ms; /* S's, or sooner by Q's TTL */
};

/* With an index of at most max_families families. Never NULL. */
struct deriver *deriver_new(size_t max_families);
void deriver_free(struct deriver *dv);

/* Forgets the index (derive turned off). */
void deriver_clear(struct deriver *dv);

/* Indexes every fresh stored answer (at start, or when derive is turned
 * on): one pass over the store. Returns the answers indexed. */
size_t deriver_rebuild(struct deriver *dv, struct store *st, int64_t now_ms);

/* Indexes an answer just stored under `id`: canonical query `q` (len
 * bytes) of key `keyhash`, its body `width` bytes (the widest are kept). */
void deriver_note(struct deriver *dv, const uint8_t keyhash[STORE_KEYHASH_LEN],
		  const char *q, size_t len, const uint8_t id[STORE_ID_LEN], size_t width);

/*
 * Tries to answer the question `q` (canonical, len bytes) of `keyhash`,
 * whose own entry is `id`, from a stored answer under `rules` (enum
 * derive_rule bits); ttl_ms is Q's TTL; only sources stored at or after
 * min_stored_ms (INT64_MIN: any; a no-cache revalidation asks for a young
 * one). Returns 1 with *out filled (free with derived_clear), or 0 with
 * *why (enum derive_status or DERIVED_*): the most telling reason among
 * the candidates tried.
 */
int deriver_try(struct deriver *dv, struct store *st, unsigned rules,
		const uint8_t keyhash[STORE_KEYHASH_LEN], const uint8_t id[STORE_ID_LEN],
		const char *q, size_t len, int64_t ttl_ms, int64_t min_stored_ms,
		int64_t now_ms, struct derived *out, int *why);

void derived_clear(struct derived *d);

/* "no_source", "stale_source", or derive_status_name's. */
const char *deriver_reason_name(int why);

/* Families indexed. */
size_t deriver_families(const struct deriver *dv);

#endif
