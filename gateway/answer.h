/*
 * answer: how a front loop answers a request: from the store (a hit, or a
 * stored answer standing in), from a landed fetch (the upstream's answer,
 * shared by every waiter), or with a JSON error; each with its
 * Cache-Status, Age, ETag, and for refusals the limit it met.
 *
 * Answers are written at once (answer_send, see answer.c) and stored bodies
 * straight from the LMDB map (zero-copy). A body the socket did not take at
 * once keeps its map pages pinned (a store snapshot); answerer_tick bounds
 * how long: once a newer commit has overtaken the snapshot for
 * ANSWER_PIN_MAX_MS, what is left to write is moved to a copy in memory
 * (one per body, shared by every slow reader of it) and the pages go, so
 * slow readers can no longer keep the map from reusing them.
 *
 * Threads: an answerer belongs to one front loop; everything here runs on
 * that loop's thread.
 *
 * Bounds: pins, one per answer being written from the map (so at most one
 * per client connection); copies, at most one per distinct stored body a
 * stalled client is still reading (so at most the map's size in all).
 */
#ifndef CG_GATEWAY_ANSWER_H
#define CG_GATEWAY_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"
#include "gateway/config.h"
#include "gateway/metrics.h"

#define ANSWER_JSON_TYPE "application/json; charset=utf-8"
#define ANSWER_STATUS_NAME "contacts-gateway" /* the Cache-Status cache name */
#define ANSWER_PIN_MAX_MS 1000 /* how long a retired snapshot may stay pinned */

struct event_base;
struct evbuffer;
struct evhttp_request;
struct lru;
struct fetched;
struct answerer;

/* An answerer for one loop: reads through `reader` (owned: freed with it),
 * marks use in `lru` (borrowed), cfg borrowed. */
struct answerer *answerer_new(struct event_base *base, const struct cg_config *cfg,
			      struct store_reader *reader, struct lru *lru);

/* Frees it and its reader; every answer it wrote must be gone (the
 * connections freed and the loop run once, so their buffers released). */
void answerer_free(struct answerer *as);

/* Switches to new settings (borrowed), e.g. after a reload. */
void answerer_set_config(struct answerer *as, const struct cg_config *cfg);

/* Maintenance, a few times a second: moves long-pinned answers to copies
 * and lets an idle reader's snapshot go. */
void answerer_tick(struct answerer *as);

/* Answers being written from the map (pins), and copies held. */
size_t answerer_pins(const struct answerer *as);

/*
 * What an answer was, for metrics and the access log: every answer_*
 * function fills the note the front set with answerer_note before
 * answering (status and body bytes by answer_send; cache outcome and the
 * upstream's part by the functions that know them).
 */
struct answer_note {
	int contacts;          /* a contacts request (the front sets it): counted */
	int status;            /* the HTTP status sent; 0: not answered yet */
	enum metrics_cache cache;
	uint64_t bytes;        /* body bytes sent (0 for HEAD and 304) */
	int upstream_status;   /* the vendor's status for this answer; 0: not asked */
	double upstream_ms;    /* the exchange's time; < 0: not asked */
	int counted;           /* the counter (answerer_set_counter) saw it */
	enum metrics_cache serve_as; /* non-zero: the cache label a stored answer
				      * served now gets (MC_HIT is 0: not settable,
				      * it is the default) */
};

/* Called with the note as an answer is about to be written: counting it
 * then, not after, means a client that has its answer finds it counted
 * (a scrape right after sees it). */
typedef void (*answer_count_fn)(void *arg, struct answer_note *note);
void answerer_set_counter(struct answerer *as, answer_count_fn fn, void *arg);

/* Counts corrupt records into `m` (borrowed; NULL: not counted). */
void answerer_set_metrics(struct answerer *as, struct metrics_front *m);

/* The note the next answers fill (NULL: none). Borrowed until cleared. */
void answerer_note(struct answerer *as, struct answer_note *note);

/* evhttp_send_reply, written at once. `body` (may be NULL) is drained. The
 * request may be freed when this returns, its connection too. */
void answer_send(struct answerer *as, struct evhttp_request *req, int code,
		 struct evbuffer *body);

/* Content-Length on a HEAD answer (evhttp sends none for HEAD). */
void answer_head_length(struct evhttp_request *req, size_t len);

/* A JSON error {"error", [field_name: field_value,] "message"}. */
void answer_error(struct answerer *as, struct evhttp_request *req, int code,
		  const char *error, const char *field_name, const char *field_value,
		  const char *message);

/* How a stored answer is being served, for its Cache-Status. */
struct serve_how {
	int64_t max_stale_ms; /* how far past its expiry it may be (-1: fresh only) */
	int fwd_status;       /* the upstream was asked and said this (0: not asked) */
	const char *detail;   /* why a stale answer, or NULL */
	int collapsed;        /* a coalesced follower */
	int64_t young_ms;     /* > 0: only an answer stored less than this ago */
	int show_detail;      /* say `detail` even on a fresh answer */
	int served_stale;     /* out: the answer served was past its expiry */
};

enum served {
	SERVED = 1,  /* answered */
	NOT_STORED,  /* nothing usable stored (absent, or failed its check) */
	TOO_STALE,   /* stored, but further past its expiry than allowed */
	TOO_OLD,     /* stored and fresh, but older than how->young_ms */
};

/* Answers from the entry under `id` if it is fresh, or stale within
 * how->max_stale_ms; otherwise leaves the request unanswered. */
enum served answer_stored(struct answerer *as, struct evhttp_request *req,
			  const uint8_t id[STORE_ID_LEN], struct serve_how *how);

/* What a waiter was waiting for, to answer it from a landing. */
struct waited {
	const uint8_t *id; /* the entry id (a stored answer may stand in) */
	const char *key_id; /* for the log line when one does */
	int refresh;       /* asked with no-cache: never a stored answer */
	int revalidate;    /* ... but under revalidate a fresh one stands in for a
			    * refresh the gateway's own limits refused */
	int had_stale;     /* an expired answer was stored (fwd=stale) */
	int collapsed;     /* a follower of the flight */
};

/* Answers a waiter from its flight's landing `f` (borrowed): the upstream's
 * answer, a stored one standing in for a failure or refusal, or the
 * refusal's error with its limit. */
void answer_landed(struct answerer *as, struct evhttp_request *req,
		   const struct waited *w, const struct fetched *f);

#endif
