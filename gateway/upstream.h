/*
 * upstream: requests to the vendor through libcurl's multi interface, driven
 * by the gateway's libevent loop (curl_multi_socket_action with event-based
 * socket and timer callbacks: no blocking call, no polling).
 *
 * One struct upstream per loop owns one curl multi handle and so one pool of
 * upstream connections (keep-alive; HTTP/2 multiplexing when the vendor
 * offers it over TLS). A fetch is one GET of the contacts endpoint; it ends
 * exactly once, either by its done callback or by upstream_cancel, never both.
 *
 * Bounds: body bytes per fetch (max_body, past it the fetch fails with
 * UPSTREAM_TOO_BIG), upstream connections (max_connections; further fetches
 * wait inside curl for a free connection), the whole-exchange and connect
 * timeouts.
 *
 * The contract on the vendor's answer (docs/configuration.md, "Upstream
 * answers"). An answer that breaks it ends as UPSTREAM_INVALID, like any
 * other failure, with resp->error saying what was wrong:
 *   - final status: 200, 400, 401, 403, 404, 429 and 500-599 are relayed;
 *     anything else (a final 1xx, 2xx other than 200, every 3xx with or
 *     without Location, 304, other 4xx, outside 100-599) is invalid;
 *   - Content-Type or Content-Length given twice with different values is
 *     invalid (identical repeats are collapsed); a Content-Length that is
 *     not plain digits, a folded (obs-fold) header line, and what curl
 *     itself rejects as not HTTP (a NUL in a header, HTTP/0.9) too.
 * A relayed answer's headers[] hold only clean values, so the front can
 * relay and store them as they are:
 *   - a 200 has exactly one Content-Type: the vendor's when it is one valid
 *     application/json media type (parameters allowed, < 256 bytes), else
 *     "application/json; charset=utf-8" (whether the body is a JSON array is
 *     the front's check);
 *   - another status has the vendor's Content-Type when it is one valid
 *     media type (< 256 bytes), else none;
 *   - Retry-After (delay-seconds or an HTTP-date) and the rate-limit headers
 *     only when single (or repeated identically), printable ASCII and
 *     < 256 bytes; otherwise they are dropped, the answer stands.
 */
#ifndef CG_GATEWAY_UPSTREAM_H
#define CG_GATEWAY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct upstream;
struct upstream_fetch;

struct upstream_config {
	const char *base_url;     /* borrowed for the upstream's life */
	long timeout_ms;
	long connect_timeout_ms;
	long max_connections;
	uint64_t max_body;
	const char *ca_file;      /* PEM CAs for https (copied), or NULL/"": the system's */
};

enum upstream_result {
	UPSTREAM_OK = 0,     /* an HTTP answer came, whatever its status */
	UPSTREAM_CONNECT,    /* refused, reset, DNS, TLS: 502 */
	UPSTREAM_TIMEOUT,    /* timeout_ms or connect_timeout_ms passed: 504 */
	UPSTREAM_TRUNCATED,  /* the answer ended before its body did: 502 */
	UPSTREAM_TOO_BIG,    /* body over max_body: 502 */
	UPSTREAM_FAILED,     /* anything else curl reports: 502 */
	UPSTREAM_SHUTDOWN,   /* never sent or cut short: the gateway stops: 503 */
	UPSTREAM_INVALID,    /* the vendor's answer is outside the contract
			      * (see above): 502 */
};

/* Response headers relayed to the client (see the contract above). */
#define UPSTREAM_HEADERS_MAX 8
#define UPSTREAM_HEADER_VALUE_MAX 256

struct upstream_header {
	const char *name; /* canonical spelling, static */
	char value[UPSTREAM_HEADER_VALUE_MAX];
};

struct upstream_response {
	enum upstream_result result;
	long status;                /* HTTP status when result is UPSTREAM_OK */
	char *body;                 /* body_len bytes (malloc'd, owned by the
				     * fetch; the done callback may take it:
				     * upstream_take_body); NULL when empty */
	size_t body_len;
	size_t body_cap;            /* bytes allocated at body (private) */
	struct upstream_header headers[UPSTREAM_HEADERS_MAX];
	size_t n_headers;           /* Content-Type, Retry-After, rate limits;
				     * 0 unless result is UPSTREAM_OK */
	char error[256];            /* for UPSTREAM_* failures: what happened,
				     * in words */
	const char *cause;          /* failures: one word for metrics (static):
				     * refused, reset, dns, tls, timeout, truncated,
				     * too_big, invalid, failed, shutdown */
	double total_ms;            /* time the exchange took */
};

/* Called once when the fetch ends. `resp` is valid only during the call. */
typedef void (*upstream_done_fn)(struct upstream_response *resp, void *arg);

/* Takes the body out of resp (the caller frees it; NULL when empty) and
 * sets *len to its length; the allocation is cut to that length. */
char *upstream_take_body(struct upstream_response *resp, size_t *len);

/* Creates the client on `base`. Returns NULL if curl cannot be set up. */
struct upstream *upstream_new(struct event_base *base,
			      const struct upstream_config *cfg);

/* New settings (a reload; cfg copied): fetches started from now on use
 * them; fetches in flight finish on the old ones. */
void upstream_set_config(struct upstream *up, const struct upstream_config *cfg);

/* Cancels every fetch still running (their callbacks are not called) and
 * frees the client. */
void upstream_free(struct upstream *up);

/*
 * Starts GET <base_url>/api/public/contacts?<canonical_query> with header
 * x-api-key: <api_key> and, when request_id is not NULL or "", X-Request-Id
 * (already sanitised by the caller). The strings are copied. Returns the fetch, owned by
 * the upstream until `done` runs or upstream_cancel is called; NULL if curl
 * refused to start it (no callback then).
 */
struct upstream_fetch *upstream_fetch(struct upstream *up,
				      const char *canonical_query,
				      const char *api_key, const char *request_id,
				      upstream_done_fn done, void *arg);

/* Stops a fetch whose callback has not run yet; its callback never runs. */
void upstream_cancel(struct upstream_fetch *f);

/* Fetches started and not yet ended. */
size_t upstream_in_flight(const struct upstream *up);

/* The HTTP status a failed result maps to (502, 503 or 504; INVALID: 502). */
int upstream_result_status(enum upstream_result r);

#endif
