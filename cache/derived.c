/* derived: see derived.h. */
#include "cache/derived.h"

#include <stdlib.h>
#include <string.h>

#include "cache/families.h"
#include "policy/check.h"
#include "policy/query.h"
#include "policy/ttl.h"

#define DERIVER_MAGIC 0x44525652u

static const unsigned rules_in_order[] = {DERIVE_RULE_PAGES, DERIVE_RULE_CURSORS,
					  DERIVE_RULE_DAYS};

struct deriver {
	unsigned magic;
	struct families *fs;
	struct query q, s; /* scratch: the question, a stored answer's query */
	char family[DERIVE_FAMILY_MAX];
};

struct deriver *deriver_new(size_t max_families)
{
	struct deriver *dv = calloc(1, sizeof(*dv));

	AN(dv);
	dv->magic = DERIVER_MAGIC;
	dv->fs = families_new(max_families);
	return dv;
}

void deriver_free(struct deriver *dv)
{
	if (dv == NULL)
		return;
	CHECK_OBJ_NOTNULL(dv, DERIVER_MAGIC);
	families_free(dv->fs);
	dv->magic = 0;
	free(dv);
}

void deriver_clear(struct deriver *dv)
{
	CHECK_OBJ_NOTNULL(dv, DERIVER_MAGIC);
	families_clear(dv->fs);
}

size_t deriver_families(const struct deriver *dv)
{
	CHECK_OBJ_NOTNULL(dv, DERIVER_MAGIC);
	return families_count(dv->fs);
}

/* Parses a canonical query (stored, or a question's) into *out. */
static int parse(const char *q, size_t len, struct query *out)
{
	struct query_error err;

	return query_normalise(q, len, out, &err) == QUERY_OK ? 0 : -1;
}

/* The hash of q's family under `rule`, or 0 when q takes no part in it. */
static uint64_t family_of(struct deriver *dv, const uint8_t keyhash[STORE_KEYHASH_LEN],
			  const struct query *q, unsigned rule)
{
	long n = derive_family(q, (enum derive_rule)rule, dv->family, sizeof(dv->family));
	uint64_t h;

	if (n <= 0)
		return 0;
	h = families_hash(keyhash, rule, dv->family, (size_t)n);
	return h ? h : 1; /* 0 says "no family" */
}

void deriver_note(struct deriver *dv, const uint8_t keyhash[STORE_KEYHASH_LEN],
		  const char *q, size_t len, const uint8_t id[STORE_ID_LEN], size_t width)
{
	CHECK_OBJ_NOTNULL(dv, DERIVER_MAGIC);
	if (parse(q, len, &dv->s) != 0)
		return; /* not a question this gateway asks: never a source */
	for (size_t i = 0; i < sizeof(rules_in_order) / sizeof(rules_in_order[0]); i++) {
		uint64_t h = family_of(dv, keyhash, &dv->s, rules_in_order[i]);

		if (h != 0)
			families_add(dv->fs, h, id, width);
	}
}

struct rebuild {
	struct deriver *dv;
	int64_t now;
	size_t n;
};

static int index_one(const uint8_t id[STORE_ID_LEN], enum store_status status,
		     const struct store_entry *e, void *arg)
{
	struct rebuild *rb = arg;

	if (status != STORE_OK || e->derived || ttl_is_stale(e->expires_ms, rb->now))
		return 0; /* sources are the vendor's answers, fresh */
	deriver_note(rb->dv, e->keyhash, e->query, e->query_len, id, e->body_len);
	rb->n++;
	return 0;
}

size_t deriver_rebuild(struct deriver *dv, struct store *st, int64_t now_ms)
{
	struct rebuild rb = {dv, now_ms, 0};

	CHECK_OBJ_NOTNULL(dv, DERIVER_MAGIC);
	families_clear(dv->fs);
	(void)store_scan(st, index_one, &rb);
	return rb.n;
}

/* Is `why` a better reason to report than `best`? A reason found by
 * looking into a source says more than "no source". */
static int more_telling(int why, int best)
{
	return best == DERIVED_NO_SOURCE || (best == DERIVED_STALE_SOURCE &&
					     why != DERIVED_NO_SOURCE);
}

/* Tries one candidate: 1 derived, 0 not (*why set), -1 gone (drop it). */
static int try_one(struct deriver *dv, struct store *st, const uint8_t keyhash[STORE_KEYHASH_LEN],
		   const uint8_t cand[STORE_ID_LEN], unsigned rules, int64_t ttl_ms,
		   int64_t min_stored_ms, int64_t now_ms, struct derived *out, int *why)
{
	struct store_view *view;
	struct store_entry e;
	struct derive_source src;
	struct derive_answer ans;
	enum derive_status ds;
	int64_t expires;
	long n;

	if (store_get(st, cand, &view, &e) != STORE_OK)
		return -1; /* evicted, purged, or damaged */
	/* never across keys (a hash collision in the index could offer one) */
	if (memcmp(e.keyhash, keyhash, STORE_KEYHASH_LEN) != 0) {
		store_view_release(view);
		*why = DERIVED_NO_SOURCE;
		return 0;
	}
	expires = e.expires_ms;
	if (e.stored_ms + ttl_ms < expires)
		expires = e.stored_ms + ttl_ms; /* Q's TTL is shorter than S's */
	if (ttl_is_stale(expires, now_ms) || e.stored_ms < min_stored_ms) {
		int gone = ttl_is_stale(e.expires_ms, now_ms);

		store_view_release(view);
		*why = DERIVED_STALE_SOURCE;
		return gone ? -1 : 0;
	}
	if (parse(e.query, e.query_len, &dv->s) != 0) {
		store_view_release(view);
		return -1;
	}
	src.query = &dv->s;
	src.body = e.body;
	src.body_len = e.body_len;
	src.fetched_ms = e.stored_ms;
	ds = derive_answer(&src, &dv->q, rules, &ans);
	if (ds != DERIVE_OK) {
		store_view_release(view);
		*why = (int)ds;
		return 0;
	}
	memset(out, 0, sizeof(*out));
	out->rule = ans.rule;
	out->body_len = derive_body_len(&ans);
	out->body = malloc(out->body_len);
	AN(out->body);
	n = derive_write(&ans, e.body, out->body, out->body_len);
	CHECK(n == (long)out->body_len);
	out->s_count = ans.s_count;
	out->count = ans.count;
	memcpy(out->content_type, e.content_type, e.content_type_len);
	out->content_type[e.content_type_len] = '\0';
	out->stored_ms = e.stored_ms;
	out->expires_ms = expires;
	store_view_release(view);
	return 1;
}

int deriver_try(struct deriver *dv, struct store *st, unsigned rules,
		const uint8_t keyhash[STORE_KEYHASH_LEN], const uint8_t id[STORE_ID_LEN],
		const char *q, size_t len, int64_t ttl_ms, int64_t min_stored_ms,
		int64_t now_ms, struct derived *out, int *why)
{
	uint8_t cands[FAMILY_SOURCES][STORE_ID_LEN];
	int best = DERIVED_NO_SOURCE;

	CHECK_OBJ_NOTNULL(dv, DERIVER_MAGIC);
	*why = best;
	if (rules == 0 || parse(q, len, &dv->q) != 0)
		return 0;
	for (size_t r = 0; r < sizeof(rules_in_order) / sizeof(rules_in_order[0]); r++) {
		uint64_t h;
		size_t n;

		if (!(rules & rules_in_order[r]))
			continue;
		h = family_of(dv, keyhash, &dv->q, rules_in_order[r]);
		if (h == 0)
			continue;
		n = families_get(dv->fs, h, cands, FAMILY_SOURCES);
		for (size_t i = 0; i < n; i++) {
			int one = DERIVED_NO_SOURCE, rc;

			if (memcmp(cands[i], id, STORE_ID_LEN) == 0)
				continue; /* Q's own entry: stale, or it would have been a hit */
			rc = try_one(dv, st, keyhash, cands[i], rules, ttl_ms, min_stored_ms, now_ms,
				     out, &one);
			if (rc == 1)
				return 1;
			if (rc < 0)
				families_drop(dv->fs, h, cands[i]);
			if (more_telling(one, best))
				best = one;
		}
	}
	*why = best;
	return 0;
}

void derived_clear(struct derived *d)
{
	free(d->body);
	d->body = NULL;
	d->body_len = 0;
}

const char *deriver_reason_name(int why)
{
	if (why == DERIVED_NO_SOURCE)
		return "no_source";
	if (why == DERIVED_STALE_SOURCE)
		return "stale_source";
	return derive_status_name((enum derive_status)why);
}
