/*
 * derive: answers derived from a stored answer; see derive.h for the rules.
 *
 * Two steps:
 *   1. relate: compare the canonical queries segment by segment, leaving
 *      out the parameters a rule lets vary, to find the rule (pages, then
 *      cursors, then days: the first enabled one whose families are equal);
 *      then the checks that need no body (limits, T2 >= T1, Q.days <=
 *      S.days, o >= O for pages and days);
 *   2. scan: one pass over S's body, element by element. Each element is an
 *      object scanned with a strict JSON recogniser (strings with their
 *      escapes, numbers, literals, nested containers to DEPTH_MAX), its
 *      top-level keys compared with the rule's field (decoding escapes), the
 *      field's value parsed as RFC 3339. An element is "in Q" if it belongs
 *      to Q's list (pages: all; cursors: field > T2; days: field >= cut);
 *      the j-th element in Q is Q's element base + j, so the answer is the
 *      elements in Q with o - base <= j < o - base + l. The first's start
 *      and the last's end are kept; nothing else is stored.
 *
 * Invariants:
 *   - nothing outside body[0, body_len) is read; every index is checked
 *     against body_len before it is used;
 *   - an answer's elements are consecutive in S (the rule's order, checked
 *     on every element, makes Q's elements in S a run: all of S, a suffix
 *     or a prefix), so [inner_off, inner_off + inner_len) holds exactly them
 *     with the single commas between them;
 *   - a not_inside that depends on the body is returned only after the
 *     whole body has been scanned: a damaged body is refused as damaged,
 *     also when the answer lies before the damage.
 *
 * Choices where the contract is silent, argued in docs/derived.md:
 *   - timestamps compare at full precision (to the nanosecond); the query's
 *     T2 and the days cut are whole milliseconds;
 *   - the days cut is fetched_ms - floor(days * 86400000) with an inclusive
 *     boundary, as the simulator does; a days value with more than 9
 *     fraction digits or whose cut is not a whole millisecond is refused
 *     (DERIVE_DAYS_INEXACT): there the vendor's rounding decides, and the
 *     simulator's own parse keeps 9 digits;
 *   - an absent offset is offset 0 (skipping none).
 */
#include "policy/derive.h"

#include <string.h>

#include "policy/check.h"

#define DEPTH_MAX 64 /* containers in one field's value; contacts use 1 */
#define DAY_MS INT64_C(86400000)
#define NS_PER_MS 1000000

/* Parameters the rules let vary, as masks of enum query_param bits. */
#define VARY_PAGE (QUERY_P_LIMIT | QUERY_P_OFFSET)

enum field { F_NONE, F_UPDATED, F_CREATED, F_LAST_MESSAGE };

static const char *const field_names[] = {
    [F_NONE] = "",
    [F_UPDATED] = "updated_at",
    [F_CREATED] = "created_at",
    [F_LAST_MESSAGE] = "last_message_at",
};

/* A timestamp at full precision: epoch ms and the nanoseconds past it. */
struct stamp {
	int64_t ms;
	int32_t ns; /* 0 .. 999999 */
};

static int stamp_cmp(struct stamp a, struct stamp b)
{
	if (a.ms != b.ms)
		return a.ms < b.ms ? -1 : 1;
	return a.ns < b.ns ? -1 : a.ns > b.ns;
}

/* ---- the canonical query, segment by segment ---- */

struct pname {
	const char *name;
	unsigned bit;
};

static const struct pname pnames[] = {
    {"created_after", QUERY_P_CREATED_AFTER},
    {"custom_field_key", QUERY_P_CUSTOM_FIELD},
    {"custom_field_value", QUERY_P_CUSTOM_FIELD},
    {"days", QUERY_P_DAYS},
    {"entity_type", QUERY_P_ENTITY_TYPE},
    {"limit", QUERY_P_LIMIT},
    {"offset", QUERY_P_OFFSET},
    {"pipeline_id", QUERY_P_PIPELINE_ID},
    {"stage_id", QUERY_P_STAGE_ID},
    {"updated_after", QUERY_P_UPDATED_AFTER},
};

/* The query_param bit of a segment "name=value" (0 if unknown). */
static unsigned seg_bit(const char *seg, size_t n)
{
	const char *eq = memchr(seg, '=', n);
	size_t name_len = eq ? (size_t)(eq - seg) : n;

	for (size_t i = 0; i < sizeof(pnames) / sizeof(pnames[0]); i++)
		if (strlen(pnames[i].name) == name_len &&
		    memcmp(pnames[i].name, seg, name_len) == 0)
			return pnames[i].bit;
	return 0;
}

/* The next segment of canon[0, len) at or after *pos whose parameter is not
 * in `skip`: 1 with *seg / *seg_len set and *pos past it, or 0 at the end. */
static int next_seg(const char *canon, size_t len, size_t *pos, unsigned skip,
		    const char **seg, size_t *seg_len)
{
	while (*pos < len) {
		const char *s = canon + *pos;
		const char *amp = memchr(s, '&', len - *pos);
		size_t n = amp ? (size_t)(amp - s) : len - *pos;

		*pos += n + (amp ? 1 : 0);
		if (n > 0 && !(seg_bit(s, n) & skip)) {
			*seg = s;
			*seg_len = n;
			return 1;
		}
	}
	return 0;
}

/* 1 if a and b are equal once the parameters in `skip` are left out. */
static int same_except(const struct query *a, const struct query *b, unsigned skip)
{
	size_t pa = 0, pb = 0, na, nb;
	const char *sa, *sb;

	for (;;) {
		int ha = next_seg(a->canonical, a->canonical_len, &pa, skip, &sa, &na);
		int hb = next_seg(b->canonical, b->canonical_len, &pb, skip, &sb, &nb);

		if (ha != hb)
			return 0;
		if (!ha)
			return 1;
		if (na != nb || memcmp(sa, sb, na) != 0)
			return 0;
	}
}

/* The value of parameter `bit` in q's canonical query, or NULL. */
static const char *param_value(const struct query *q, unsigned bit, size_t *n)
{
	size_t pos = 0, len;
	const char *seg;

	while (next_seg(q->canonical, q->canonical_len, &pos, 0, &seg, &len)) {
		const char *eq = memchr(seg, '=', len);

		if (eq && seg_bit(seg, len) == bit) {
			*n = len - (size_t)(eq + 1 - seg);
			return eq + 1;
		}
	}
	return NULL;
}

/*
 * The days value of q in exact milliseconds, floor(days * 86400000), from
 * the canonical text (query.days_milli keeps only three decimals). Returns
 * 0, or -1 when the value has more than 9 fraction digits or its cut is not
 * a whole millisecond.
 */
static int days_ms(const struct query *q, int64_t *ms)
{
	size_t n = 0, i = 0, k = 0;
	const char *v = param_value(q, QUERY_P_DAYS, &n);
	int64_t whole = 0, frac = 0, scale = 1;

	if (v == NULL)
		return -1;
	for (; i < n && v[i] >= '0' && v[i] <= '9' && whole <= 366; i++)
		whole = whole * 10 + (v[i] - '0');
	if (i < n && v[i] == '.') {
		for (i++; i < n && v[i] >= '0' && v[i] <= '9' && k < 10; i++, k++) {
			frac = frac * 10 + (v[i] - '0');
			scale *= 10;
		}
	}
	if (i != n || whole > 366 || k > 9 || (frac * DAY_MS) % scale != 0)
		return -1;
	*ms = whole * DAY_MS + frac * DAY_MS / scale;
	return 0;
}

/* ---- the rule relating Q to S ---- */

/* The cursor parameter of q's order (0 for a days-only order). */
static unsigned cursor_bit(const struct query *q)
{
	if (q->present & QUERY_P_UPDATED_AFTER)
		return QUERY_P_UPDATED_AFTER;
	if (q->present & QUERY_P_CREATED_AFTER)
		return QUERY_P_CREATED_AFTER;
	return 0;
}

/* 1 if the families of a and b under `rule` are equal (limits aside). */
static int related(const struct query *a, const struct query *b, enum derive_rule rule)
{
	unsigned ca = cursor_bit(a);

	switch (rule) {
	case DERIVE_RULE_PAGES:
		return same_except(a, b, VARY_PAGE);
	case DERIVE_RULE_CURSORS:
		return ca != 0 && ca == cursor_bit(b) &&
		       same_except(a, b, VARY_PAGE | ca);
	case DERIVE_RULE_DAYS:
		return ca == 0 && cursor_bit(b) == 0 && (a->present & QUERY_P_DAYS) &&
		       (b->present & QUERY_P_DAYS) &&
		       same_except(a, b, VARY_PAGE | QUERY_P_DAYS);
	default:
		return 0;
	}
}

/* ---- the body: a strict JSON recogniser over one element ---- */

static int is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int hexv(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

struct scan {
	const unsigned char *p;
	size_t n;
	size_t i;
};

static void skip_ws(struct scan *s)
{
	while (s->i < s->n && is_ws(s->p[s->i]))
		s->i++;
}

/* A string whose quote is at s->i: 1 with s->i past its closing quote and
 * *escaped set if it holds a backslash, 0 if malformed. */
static int skip_string(struct scan *s, int *escaped)
{
	size_t k = s->i + 1;

	*escaped = 0;
	while (k < s->n) {
		unsigned char c = s->p[k];

		if (c == '"') {
			s->i = k + 1;
			return 1;
		}
		if (c < 0x20)
			return 0;
		if (c != '\\') {
			k++;
			continue;
		}
		*escaped = 1;
		if (++k >= s->n)
			return 0;
		if (s->p[k] == 'u') {
			if (s->n - k < 5)
				return 0;
			for (int h = 1; h <= 4; h++)
				if (hexv(s->p[k + h]) < 0)
					return 0;
			k += 5;
		} else if (strchr("\"\\/bfnrt", s->p[k]) != NULL && s->p[k] != '\0') {
			k++;
		} else {
			return 0;
		}
	}
	return 0;
}

static int skip_number(struct scan *s)
{
	size_t k = s->i;
	const unsigned char *p = s->p;

	if (k < s->n && p[k] == '-')
		k++;
	if (k >= s->n)
		return 0;
	if (p[k] == '0') {
		k++;
	} else if (p[k] >= '1' && p[k] <= '9') {
		while (k < s->n && is_digit(p[k]))
			k++;
	} else {
		return 0;
	}
	if (k < s->n && p[k] == '.') {
		if (++k >= s->n || !is_digit(p[k]))
			return 0;
		while (k < s->n && is_digit(p[k]))
			k++;
	}
	if (k < s->n && (p[k] == 'e' || p[k] == 'E')) {
		if (++k < s->n && (p[k] == '+' || p[k] == '-'))
			k++;
		if (k >= s->n || !is_digit(p[k]))
			return 0;
		while (k < s->n && is_digit(p[k]))
			k++;
	}
	s->i = k;
	return 1;
}

static int skip_word(struct scan *s, const char *w)
{
	size_t n = strlen(w);

	if (s->n - s->i < n || memcmp(s->p + s->i, w, n) != 0)
		return 0;
	s->i += n;
	return 1;
}

/* A scalar at s->i (not a container): 1 past it, 0 if malformed. */
static int skip_scalar(struct scan *s)
{
	unsigned char c = s->p[s->i];
	int escaped;

	if (c == '"')
		return skip_string(s, &escaped);
	if (c == '-' || is_digit(c))
		return skip_number(s);
	return skip_word(s, c == 't' ? "true" : c == 'f' ? "false" : "null");
}

/*
 * Any value at s->i (after whitespace): 1 with s->i past it, 0 if malformed
 * or nested deeper than DEPTH_MAX. Iterative: one bit a level (object 1).
 */
static int skip_value(struct scan *s)
{
	uint64_t kind = 0; /* bit d: level d is an object */
	unsigned depth = 0;
	int want_key = 0, escaped;

	skip_ws(s);
	if (s->i >= s->n)
		return 0;
	for (;;) {
		unsigned char c;

		/* a value (or, inside an object, a key then ':' then a value) */
		skip_ws(s);
		if (s->i >= s->n)
			return 0;
		c = s->p[s->i];
		if (want_key) {
			if (c != '"' || !skip_string(s, &escaped))
				return 0;
			skip_ws(s);
			if (s->i >= s->n || s->p[s->i] != ':')
				return 0;
			s->i++;
			skip_ws(s);
			if (s->i >= s->n)
				return 0;
			c = s->p[s->i];
		}
		if (c == '[' || c == '{') {
			if (depth == DEPTH_MAX)
				return 0;
			kind = (kind & ~(UINT64_C(1) << depth)) |
			       ((uint64_t)(c == '{') << depth);
			depth++;
			s->i++;
			skip_ws(s);
			if (s->i >= s->n)
				return 0;
			if (s->p[s->i] != (c == '{' ? '}' : ']')) {
				want_key = c == '{';
				continue; /* the container's first member */
			}
			s->i++; /* empty container: closed at once */
			depth--;
		} else if (!skip_scalar(s)) {
			return 0;
		}
		/* after a value: ',' continues its container, a closer ends it */
		for (;;) {
			int object;

			if (depth == 0)
				return 1;
			object = (int)((kind >> (depth - 1)) & 1);
			skip_ws(s);
			if (s->i >= s->n)
				return 0;
			c = s->p[s->i++];
			if (c == ',') {
				want_key = object;
				break;
			}
			if (c != (object ? '}' : ']'))
				return 0;
			depth--;
		}
	}
}

/* 1 if the JSON string text t[0, n) (between the quotes, escapes and all)
 * decodes to the ASCII `name`. */
static int key_is(const unsigned char *t, size_t n, int escaped, const char *name)
{
	size_t k = 0, m = strlen(name), o = 0;

	if (!escaped)
		return n == m && memcmp(t, name, m) == 0;
	while (k < n) {
		unsigned c = t[k++];

		if (c == '\\') {
			unsigned char e = t[k++]; /* the recogniser checked the escape */

			if (e == 'u') {
				c = (unsigned)(hexv(t[k]) << 12 | hexv(t[k + 1]) << 8 |
					       hexv(t[k + 2]) << 4 | hexv(t[k + 3]));
				k += 4;
			} else {
				c = e == 'b'   ? '\b'
				    : e == 'f' ? '\f'
				    : e == 'n' ? '\n'
				    : e == 'r' ? '\r'
				    : e == 't' ? '\t'
					       : e;
			}
		}
		if (o >= m || c != (unsigned char)name[o])
			return 0; /* also every non-ASCII character: name is ASCII */
		o++;
	}
	return o == m;
}

/* n decimal digits at t, or -1. */
static int digits(const unsigned char *t, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!is_digit(t[i]))
			return -1;
		v = v * 10 + (t[i] - '0');
	}
	return v;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/*
 * RFC 3339 date-time, exactly t[0, n): YYYY-MM-DDTHH:MM:SS, an optional
 * fraction of 1 to 9 digits, then Z or +HH:MM / -HH:MM ('t', 'z' allowed).
 * Calendar checked; no leap second. Returns 0 with *out, or -1.
 */
static int parse_stamp(const unsigned char *t, size_t n, struct stamp *out)
{
	static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, mo, d, hh, mi, ss, ns = 0, off = 0;
	size_t i = 19;

	if (n < 20 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') ||
	    t[13] != ':' || t[16] != ':' || (y = digits(t, 4)) < 0 ||
	    (mo = digits(t + 5, 2)) < 1 || mo > 12 || (d = digits(t + 8, 2)) < 1 ||
	    d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) ||
	    (hh = digits(t + 11, 2)) < 0 || hh > 23 || (mi = digits(t + 14, 2)) < 0 ||
	    mi > 59 || (ss = digits(t + 17, 2)) < 0 || ss > 59)
		return -1;
	if (t[i] == '.') {
		int k = 0;

		for (i++; i < n && is_digit(t[i]); i++, k++) {
			if (k == 9)
				return -1;
			ns = ns * 10 + (t[i] - '0');
		}
		if (k == 0)
			return -1;
		for (; k < 9; k++)
			ns *= 10;
	}
	if (i < n && (t[i] == 'Z' || t[i] == 'z')) {
		i++;
	} else if (i < n && (t[i] == '+' || t[i] == '-')) {
		int oh, om;

		if (n - i != 6 || t[i + 3] != ':' || (oh = digits(t + i + 1, 2)) < 0 ||
		    oh > 23 || (om = digits(t + i + 4, 2)) < 0 || om > 59)
			return -1;
		off = (t[i] == '-' ? -1 : 1) * (oh * 60 + om);
		i += 6;
	} else {
		return -1;
	}
	if (i != n)
		return -1;
	out->ms = days_from_civil(y, mo, d) * DAY_MS +
		  ((int64_t)hh * 3600 + mi * 60 + ss - (int64_t)off * 60) * 1000 +
		  ns / NS_PER_MS;
	out->ns = ns % NS_PER_MS;
	return 0;
}

/*
 * One element: an object at s->i. On DERIVE_OK s->i is past its '}' and,
 * when field != F_NONE, *ts holds the field's value. Otherwise the reason.
 */
static enum derive_status scan_element(struct scan *s, enum field field, struct stamp *ts)
{
	int found = 0, bad_time = 0, escaped;

	if (s->p[s->i] != '{')
		return DERIVE_MALFORMED;
	s->i++;
	skip_ws(s);
	if (s->i < s->n && s->p[s->i] == '}') {
		s->i++;
		return field == F_NONE ? DERIVE_OK : DERIVE_MISSING_FIELD;
	}
	for (;;) {
		size_t key_at, key_end, val_at;
		int match;

		skip_ws(s);
		if (s->i >= s->n || s->p[s->i] != '"')
			return DERIVE_MALFORMED;
		key_at = s->i + 1;
		if (!skip_string(s, &escaped))
			return DERIVE_MALFORMED;
		key_end = s->i - 1;
		match = field != F_NONE && key_is(s->p + key_at, key_end - key_at,
						  escaped, field_names[field]);
		skip_ws(s);
		if (s->i >= s->n || s->p[s->i] != ':')
			return DERIVE_MALFORMED;
		s->i++;
		skip_ws(s);
		val_at = s->i;
		if (!match || s->i >= s->n || s->p[s->i] != '"') {
			if (!skip_value(s))
				return DERIVE_MALFORMED;
			if (match)
				found = 2; /* not a string: no time to compare */
		} else {
			if (!skip_string(s, &escaped))
				return DERIVE_MALFORMED;
			/* twice: which one the vendor meant is anybody's guess */
			found = found ? 2 : 1;
			if (escaped ||
			    parse_stamp(s->p + val_at + 1, s->i - val_at - 2, ts) != 0)
				bad_time = 1;
		}
		skip_ws(s);
		if (s->i >= s->n)
			return DERIVE_MALFORMED;
		if (s->p[s->i] == ',') {
			s->i++;
			continue;
		}
		if (s->p[s->i] != '}')
			return DERIVE_MALFORMED;
		s->i++;
		break;
	}
	if (field == F_NONE)
		return DERIVE_OK;
	if (found != 1)
		return DERIVE_MISSING_FIELD;
	return bad_time ? DERIVE_BAD_TIME : DERIVE_OK;
}

/* ---- derive ---- */

/* What the scan needs to know about the rule. */
struct plan {
	enum derive_rule rule;
	enum field field;
	struct stamp t1;   /* cursors: S's cursor; elements must be after it */
	struct stamp cut;  /* cursors: in Q if > cut; days: in Q if >= cut */
	uint64_t o_s, l_s; /* S's offset and limit */
	uint64_t want;	   /* index in S's Q-elements of the answer's first */
	uint64_t l;	   /* Q's limit */
};

/* 1 if the element with stamp ts belongs to Q's list. */
static int in_q(const struct plan *pl, struct stamp ts)
{
	switch (pl->rule) {
	case DERIVE_RULE_CURSORS:
		return stamp_cmp(ts, pl->cut) > 0;
	case DERIVE_RULE_DAYS:
		return stamp_cmp(ts, pl->cut) >= 0;
	default:
		return 1;
	}
}

static enum derive_status scan_body(const struct derive_source *src,
				    const struct plan *pl, struct derive_answer *out)
{
	struct scan s = {(const unsigned char *)src->body, src->body_len, 0};
	struct stamp ts = {0, 0}, prev = {0, 0};
	uint64_t count = 0, nq = 0;
	size_t inner_end = 0;
	int ended = 0;	   /* days: an element of S is past the cut */
	int head_in_q = 0; /* S's first element is in Q's list */

	out->rule = pl->rule;
	out->count = 0;
	out->first = 0;
	out->inner_off = 1;
	out->inner_len = 0;
	if (s.n < 2 || s.p[0] != '[')
		return DERIVE_MALFORMED;
	s.i = 1;
	if (s.p[1] == ']') {
		if (s.n != 2)
			return DERIVE_MALFORMED;
	} else {
		for (;;) {
			size_t start = s.i;
			enum derive_status st = scan_element(&s, pl->field, &ts);
			int q;

			if (st != DERIVE_OK)
				return st;
			if (pl->field != F_NONE) {
				int c = count ? stamp_cmp(prev, ts) : 0;

				if ((pl->rule == DERIVE_RULE_CURSORS && c > 0) ||
				    (pl->rule == DERIVE_RULE_DAYS && c < 0) ||
				    (pl->rule == DERIVE_RULE_CURSORS &&
				     stamp_cmp(ts, pl->t1) <= 0))
					return DERIVE_UNSORTED;
				prev = ts;
			}
			q = in_q(pl, ts);
			if (count == 0)
				head_in_q = q;
			if (!q && pl->rule == DERIVE_RULE_DAYS)
				ended = 1;
			if (q) {
				if (nq >= pl->want && nq - pl->want < pl->l) {
					if (nq == pl->want) {
						out->first = (size_t)count;
						out->inner_off = start;
					}
					inner_end = s.i;
					out->count++;
				}
				nq++;
			}
			count++;
			if (s.i < s.n && s.p[s.i] == ',') {
				s.i++;
				if (s.i >= s.n)
					return DERIVE_MALFORMED;
				continue;
			}
			if (s.i + 1 == s.n && s.p[s.i] == ']')
				break;
			return DERIVE_MALFORMED;
		}
	}
	out->s_count = (size_t)count;
	/* cursors from a window that does not start at the list's head: only
	 * if S starts at or before the cut, so that no element of Q's list
	 * precedes it (an empty S there says nothing about where T2 cuts) */
	if (pl->rule == DERIVE_RULE_CURSORS && pl->o_s > 0 && (count == 0 || head_in_q))
		return DERIVE_NOT_INSIDE;
	if (out->count > 0)
		out->inner_len = inner_end - out->inner_off;
	/* the answer's end is known if it is full, or if Q's list ends in S */
	if (pl->want + pl->l <= nq || count < pl->l_s || ended)
		return DERIVE_OK;
	return DERIVE_NOT_INSIDE;
}

enum derive_status derive_answer(const struct derive_source *s, const struct query *q,
				 unsigned rules, struct derive_answer *out)
{
	static const enum derive_rule order[] = {DERIVE_RULE_PAGES, DERIVE_RULE_CURSORS,
						 DERIVE_RULE_DAYS};
	const struct query *sq;
	enum derive_rule rule = DERIVE_RULE_NONE, off = DERIVE_RULE_NONE;
	struct plan pl;
	uint64_t o;

	AN(s);
	AN(q);
	AN(out);
	sq = s->query;
	AN(sq);
	CHECK(s->body != NULL || s->body_len == 0);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		if (!related(sq, q, order[i]))
			continue;
		if (rules & order[i]) {
			rule = order[i];
			break;
		}
		if (off == DERIVE_RULE_NONE)
			off = order[i];
	}
	if (rule == DERIVE_RULE_NONE && off == DERIVE_RULE_NONE)
		return DERIVE_DIFFERENT_FILTERS;
	if (!(sq->present & QUERY_P_LIMIT) || !(q->present & QUERY_P_LIMIT))
		return DERIVE_NO_LIMIT;
	if (rule == DERIVE_RULE_NONE)
		return DERIVE_RULE_OFF;

	memset(&pl, 0, sizeof(pl));
	pl.rule = rule;
	pl.l_s = sq->limit;
	pl.o_s = (sq->present & QUERY_P_OFFSET) ? sq->offset : 0;
	pl.l = q->limit;
	o = (q->present & QUERY_P_OFFSET) ? q->offset : 0;
	switch (rule) {
	case DERIVE_RULE_CURSORS:
		if (cursor_bit(q) == QUERY_P_UPDATED_AFTER) {
			pl.field = F_UPDATED;
			pl.t1.ms = sq->updated_after_ms;
			pl.cut.ms = q->updated_after_ms;
		} else {
			pl.field = F_CREATED;
			pl.t1.ms = sq->created_after_ms;
			pl.cut.ms = q->created_after_ms;
		}
		if (pl.cut.ms < pl.t1.ms)
			return DERIVE_NOT_INSIDE; /* Q asks for what S left out */
		pl.want = o; /* no element of Q's list before S's window */
		break;
	case DERIVE_RULE_DAYS: {
		int64_t ds, dq;

		if (days_ms(sq, &ds) != 0 || days_ms(q, &dq) != 0)
			return DERIVE_DAYS_INEXACT;
		if (dq > ds)
			return DERIVE_NOT_INSIDE;
		pl.field = F_LAST_MESSAGE;
		pl.cut.ms = s->fetched_ms - dq;
		break;
	}
	case DERIVE_RULE_PAGES:
		break;
	default:
		CHECK(!"a rule");
	}
	if (rule != DERIVE_RULE_CURSORS) {
		/* pages, days: Q's list starts with the O elements before S's window */
		if (o < pl.o_s)
			return DERIVE_NOT_INSIDE;
		pl.want = o - pl.o_s;
	}
	return scan_body(s, &pl, out);
}

size_t derive_body_len(const struct derive_answer *a)
{
	AN(a);
	return a->inner_len + 2;
}

long derive_write(const struct derive_answer *a, const char *body, char *dst,
		  size_t dst_size)
{
	size_t n;

	AN(a);
	n = derive_body_len(a);
	if (dst_size < n)
		return -1;
	dst[0] = '[';
	if (a->inner_len)
		memcpy(dst + 1, body + a->inner_off, a->inner_len);
	dst[n - 1] = ']';
	return (long)n;
}

long derive_family(const struct query *q, enum derive_rule rule, char *dst,
		   size_t dst_size)
{
	const char *tag;
	unsigned skip = VARY_PAGE, cur = cursor_bit(q);
	size_t o, tag_len, pos = 0, n;
	const char *seg;

	AN(q);
	if (!(q->present & QUERY_P_LIMIT))
		return 0;
	switch (rule) {
	case DERIVE_RULE_PAGES:
		tag = "pages:";
		break;
	case DERIVE_RULE_CURSORS:
		if (cur == 0)
			return 0;
		tag = cur == QUERY_P_UPDATED_AFTER ? "cursors:updated_at:"
						   : "cursors:created_at:";
		skip |= cur;
		break;
	case DERIVE_RULE_DAYS:
		if (cur != 0 || !(q->present & QUERY_P_DAYS))
			return 0;
		tag = "days:";
		skip |= QUERY_P_DAYS;
		break;
	default:
		return 0;
	}
	o = strlen(tag);
	if (dst_size <= o)
		return -1;
	memcpy(dst, tag, o);
	tag_len = o;
	while (next_seg(q->canonical, q->canonical_len, &pos, skip, &seg, &n)) {
		size_t sep = o > tag_len ? 1 : 0; /* '&' between segments */

		if (dst_size - o <= sep + n)
			return -1;
		if (sep)
			dst[o++] = '&';
		memcpy(dst + o, seg, n);
		o += n;
	}
	dst[o] = '\0';
	return (long)o;
}

const char *derive_status_name(enum derive_status st)
{
	static const char *const names[DERIVE_STATUS_COUNT] = {
	    [DERIVE_OK] = "ok",
	    [DERIVE_DIFFERENT_FILTERS] = "different_filters",
	    [DERIVE_NO_LIMIT] = "no_limit",
	    [DERIVE_RULE_OFF] = "rule_off",
	    [DERIVE_NOT_INSIDE] = "not_inside",
	    [DERIVE_DAYS_INEXACT] = "days_inexact",
	    [DERIVE_MALFORMED] = "malformed",
	    [DERIVE_MISSING_FIELD] = "missing_field",
	    [DERIVE_BAD_TIME] = "bad_time",
	    [DERIVE_UNSORTED] = "unsorted",
	};

	return (unsigned)st < DERIVE_STATUS_COUNT ? names[st] : "?";
}

const char *derive_rule_name(enum derive_rule rule)
{
	switch (rule) {
	case DERIVE_RULE_PAGES:
		return "pages";
	case DERIVE_RULE_CURSORS:
		return "cursors";
	case DERIVE_RULE_DAYS:
		return "days";
	default:
		return "none";
	}
}
