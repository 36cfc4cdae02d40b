/*
 * derive: answer a question Q from a stored answer S, when Q's answer is
 * provably a slice of S's (issue 13), byte for byte as the vendor would send.
 *
 * The vendor's lists are totally ordered (README of the upstream contract,
 * docs/derived.md): `updated_after` orders by updated_at ascending, else
 * `created_after` by created_at ascending, else `days` by last_message_at
 * descending. Call A the whole ordered list of S's filters; S is the window
 * A[O, O + |S|) (O = S's offset, absent = 0) and S is *complete* (reaches
 * the end of A) when |S| < L, S's limit. Three rules relate Q to S:
 *
 *   pages    Q differs from S only in limit/offset. Q's list is A.
 *   cursors  Q differs only in the cursor (updated_after, or created_after
 *            when that orders) and limit/offset, with T2 >= T1. Q's list
 *            is A's suffix of elements whose cursor field is > T2.
 *   days     both order by days alone; Q differs only in days (Q.days <
 *            S.days) and limit/offset. Q's list is A's prefix of elements
 *            with last_message_at >= fetched_ms - Q.days (the simulator's
 *            inclusive boundary), i.e. Q as asked at S's fetch time.
 *
 * Q's answer is Q's list [o, o + l). It is derivable when every element of
 * it is known to lie in S and its two ends are known: the start because no
 * element of Q's list precedes S's window except the o skipped ones (pages,
 * days: o >= O; cursors: O == 0, or S's first element is at or before the
 * cut), the end because o + l elements of Q's list reach into S, or Q's
 * list provably ends inside S (S complete; days: an element of S is past
 * the cut). Then the answer is a run of consecutive elements of S, and the
 * derived body is '[' + S's bytes from the run's first element to its last
 * (their commas included) + ']', or "[]": the vendor's own compact join.
 *
 * S's body must be exactly '[' obj (',' obj)* ']' or "[]": no whitespace
 * between the top-level tokens (inside an element anything JSON allows is
 * copied as it is, up to 64 containers deep in one value); every element
 * an object; for cursors and days every
 * element carries its ordering field once, at its top level, as an RFC 3339
 * timestamp string (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]` then `Z` or +-HH:MM),
 * in the rule's order, and for cursors after T1. Otherwise: refused, with
 * the reason, and the gateway asks the vendor as for any miss.
 *
 * Pure: no I/O, no clock (S's fetch time is an argument), no allocation,
 * nothing kept between calls, thread-safe. Cost: one pass over S's body
 * (the whole of it: validity, order and |S| are checked every time), about
 * 0.5 ms for a 1000-element S of 0.56 MB (bench/derive), and a fixed few
 * hundred bytes of stack.
 */
#ifndef CG_POLICY_DERIVE_H
#define CG_POLICY_DERIVE_H

#include <stddef.h>
#include <stdint.h>

#include "policy/query.h"

enum derive_rule {
	DERIVE_RULE_NONE = 0,
	DERIVE_RULE_PAGES = 1u << 0,
	DERIVE_RULE_CURSORS = 1u << 1,
	DERIVE_RULE_DAYS = 1u << 2,
	DERIVE_RULE_ALL = DERIVE_RULE_PAGES | DERIVE_RULE_CURSORS | DERIVE_RULE_DAYS,
};

/* Why a question was not derived; each has a metric-friendly name. */
enum derive_status {
	DERIVE_OK = 0,
	DERIVE_DIFFERENT_FILTERS, /* "different_filters": no rule relates Q to S */
	DERIVE_NO_LIMIT,	  /* "no_limit": S or Q has no limit */
	DERIVE_RULE_OFF,	  /* "rule_off": related by a rule not enabled */
	DERIVE_NOT_INSIDE,	  /* "not_inside": Q's answer is not wholly in S
				   * (includes T2 < T1 and Q.days > S.days) */
	DERIVE_DAYS_INEXACT,	  /* "days_inexact": a days value whose cut is not
				   * a whole millisecond (see derive.c) */
	DERIVE_MALFORMED,	  /* "malformed": S's body is not a compact JSON
				   * array of objects */
	DERIVE_MISSING_FIELD,	  /* "missing_field": an element lacks the
				   * ordering field, has it twice, or not as a
				   * string */
	DERIVE_BAD_TIME,	  /* "bad_time": the ordering field is not an
				   * RFC 3339 timestamp */
	DERIVE_UNSORTED,	  /* "unsorted": S breaks the rule's order, or an
				   * element is not after S's own cursor */
	DERIVE_STATUS_COUNT,
};

/* A stored answer. Everything borrowed for the duration of one call. */
struct derive_source {
	const struct query *query; /* S's canonical query, from query_normalise */
	const char *body;	   /* S's body, the vendor's bytes */
	size_t body_len;
	int64_t fetched_ms; /* when S was fetched, epoch ms (days rule) */
};

/* A derived answer: which elements of S, and where their bytes are. */
struct derive_answer {
	enum derive_rule rule; /* the rule that related Q to S */
	size_t s_count;	       /* elements in S */
	size_t first, count;   /* the answer is S's elements [first, first+count)
				* (first is 0 when count is 0) */
	size_t inner_off;      /* the answer's elements and the commas between */
	size_t inner_len;      /*   them are body[inner_off, inner_off+inner_len) */
};

/* Longest family string derive_family() writes, NUL included. */
#define DERIVE_FAMILY_MAX (QUERY_CANON_MAX + 32)

/*
 * Decides whether `q`'s answer lies in `s` under one of the rules in
 * `rules` (enum derive_rule bits) and, if so, where. Returns DERIVE_OK with
 * *out filled, or the reason it is not derivable (*out then unspecified).
 * Borrows everything; keeps nothing. The key (organisation) and the
 * freshness of S are the caller's business: this sees neither.
 */
enum derive_status derive_answer(const struct derive_source *s, const struct query *q,
				 unsigned rules, struct derive_answer *out);

/* Bytes of the derived body: inner_len + 2. */
size_t derive_body_len(const struct derive_answer *a);

/*
 * Writes the derived body ('[' + body[inner_off, +inner_len) + ']') to dst,
 * which holds dst_size bytes; `body` is S's body as given to
 * derive_answer(). No NUL is written. Returns the length written, or -1 if
 * dst_size < derive_body_len(a) (then nothing is written). Borrows all.
 */
long derive_write(const struct derive_answer *a, const char *body, char *dst,
		  size_t dst_size);

/*
 * The family of `q` under one rule (a single DERIVE_RULE_* bit): the
 * canonical query without the parameters that rule lets vary, tagged with
 * the rule (and for cursors the ordering field), e.g.
 *   "pages:days=30&pipeline_id=..."        (no limit, no offset)
 *   "cursors:updated_at:stage_id=..."      (no updated_after, limit, offset)
 *   "days:pipeline_id=..."                 (no days, limit, offset)
 * Two queries can be related by a rule only if their families under it are
 * equal, and derive_answer() relates them by the first enabled rule (pages,
 * cursors, days) under which they are: with the same family, only the
 * windows, the cursors or days and S's body decide. The gateway indexes
 * stored answers by (key, family) for each rule and looks Q's families up.
 * Writes a NUL-terminated string of at most DERIVE_FAMILY_MAX - 1 bytes.
 * Returns its length; 0 if `q` takes no part in the rule (no limit; for
 * cursors no cursor; for days not days-only); -1 if dst_size is too small.
 */
long derive_family(const struct query *q, enum derive_rule rule, char *dst,
		   size_t dst_size);

/* 0, 1, 2 for the pages, cursors and days rule bits (tables by rule). */
#define DERIVE_RULES_N 3
static inline unsigned derive_rule_index(enum derive_rule rule)
{
	return rule == DERIVE_RULE_PAGES ? 0 : rule == DERIVE_RULE_CURSORS ? 1 : 2;
}

/* "ok", "different_filters", ... for enum derive_status; "?" otherwise. */
const char *derive_status_name(enum derive_status st);

/* "pages", "cursors", "days" for one rule bit; "none" otherwise. */
const char *derive_rule_name(enum derive_rule rule);

#endif
