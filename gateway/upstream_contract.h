/*
 * upstream_contract: the check of the vendor's answer against the contract
 * (upstream.h's file comment), line by line as curl hands over the head.
 *
 * Internal to gateway/upstream.c, which embeds one struct upstream_head in
 * each fetch, feeds it every header line (CURLOPT_HEADERFUNCTION) and,
 * when the answer is relayed, fills the response's headers from it. Exposed
 * here, rather than static, so that tests/unit/test_upstream.c can check the
 * rules without curl or a network; nothing else includes it.
 *
 * States of a head: before (a status line is next) -> in (a header block,
 * after its status line) -> before again after an interim 1xx's blank line,
 * or done after the final block's (what follows - the body, then chunked
 * trailers - is not part of the head). Invalid at the first line that breaks
 * the contract; every later line is then refused too. Per block it
 * remembers the first value of each tracked header and whether a later one
 * differed; an interim block's are forgotten at the next status line.
 *
 * No allocation, no clock (the relay takes the wall clock for Retry-After
 * dates), one owner.
 */
#ifndef CG_GATEWAY_UPSTREAM_CONTRACT_H
#define CG_GATEWAY_UPSTREAM_CONTRACT_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/upstream.h"

#define UPSTREAM_TRACKED 10 /* headers the contract reads (upstream.c's table) */

/* What the current header block said in one tracked header. */
struct upstream_seen {
	unsigned count; /* lines with this name */
	int conflict;	/* a later line differed from the first */
	size_t len;	/* of the first value, trimmed */
	uint64_t hash;	/* FNV-1a of the first value: compares over-long ones */
	char value[UPSTREAM_HEADER_VALUE_MAX]; /* the first value if len < max */
};

enum upstream_head_state {
	UPSTREAM_HEAD_BEFORE = 0, /* a status line is next */
	UPSTREAM_HEAD_IN,	  /* in a header block, after its status line */
	UPSTREAM_HEAD_DONE,	  /* the final block ended: body, then trailers */
};

struct upstream_head {
	enum upstream_head_state state;
	long interim;	/* the last interim 1xx status seen, 0 if none */
	int in_interim; /* the current block is an interim 1xx */
	int invalid;	/* outside the contract; *error says why */
	char *error;	/* borrowed: where the reason goes (the response's) */
	size_t error_size;
	struct upstream_seen seen[UPSTREAM_TRACKED]; /* of the current block */
};

/* A head before its first line; a refusal's reason (words, never the
 * vendor's bytes) will be written to error[0 .. error_size), borrowed for
 * the head's life. */
void upstream_head_init(struct upstream_head *h, char *error, size_t error_size);

/*
 * One line of the head, data[0 .. n) with n >= 1, as curl passes it (status
 * lines and the blank line included, CRLF kept). Returns n to go on, 0 when
 * the answer is outside the contract (h->invalid set, the reason in
 * h->error; curl then stops the transfer) or was already.
 */
size_t upstream_head_line(struct upstream_head *h, const char *data, size_t n);

/*
 * Fills r->headers from the final header block of a relayed answer of
 * status r->status: a 200 gets exactly one JSON Content-Type (the vendor's
 * when it is a valid application/json type, else "application/json;
 * charset=utf-8"); another status the vendor's Content-Type when it is a
 * valid media type, else none; the advice headers (Retry-After, the rate
 * limits) when single or repeated identically, printable and short, and
 * Retry-After only when it parses (wall_ms: the wall clock for its
 * HTTP-date form). Content-Length is never relayed.
 */
void upstream_head_relay(const struct upstream_head *h, struct upstream_response *r,
			 int64_t wall_ms);

/* Writes why a final `status` is outside the contract into why[0 .. n).
 * Returns 1 if it is, 0 if it is relayed (200, 400, 401, 403, 404, 429,
 * 500-599). */
int upstream_status_refused(long status, char *why, size_t n);

/* The status code on a status line ("HTTP/1.1 200 OK", "HTTP/2 200"): the
 * three digits after the protocol, or -1 when there are none. */
long upstream_status_of_line(const char *data, size_t n);

/*
 * Is p[0 .. n) an RFC 9110 media type, type "/" subtype *( OWS ";" OWS
 * [ name "=" ( token / quoted-string ) ] ), printable ASCII, shorter than
 * UPSTREAM_HEADER_VALUE_MAX? With json_only, type and subtype must be
 * application/json (any case).
 */
int upstream_media_type_ok(const char *p, size_t n, int json_only);

#endif
