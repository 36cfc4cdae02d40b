/*
 * upstream: see upstream.h.
 *
 * The glue follows libcurl's event-driven model: curl tells us, through
 * sock_cb, which sockets to watch for what, and through timer_cb when to call
 * it back; libevent tells us when a socket is ready or the timer fires, and
 * we hand that to curl_multi_socket_action. After every such call finished
 * transfers are collected in check_done, outside any curl callback, so a done
 * callback may start new fetches.
 *
 * Objects: struct upstream (one per loop) owns the multi handle, the timer,
 * the list of live fetches and the list of watched sockets. A fetch lives on
 * that list from upstream_fetch until its callback returns or it is
 * cancelled. Every struct passed through a void * carries a magic number.
 *
 * The vendor's answer is checked against the contract while it arrives
 * (header_cb feeds each line to the fetch's struct upstream_head, see
 * upstream_contract.h) and when it ends (finish); the rules are in
 * upstream.h. An answer outside the contract is stopped at the first line
 * that shows it (curl then closes that connection: nothing of it is read as
 * the start of the next answer) and ends as UPSTREAM_INVALID. Per response
 * header block (a status line, its header lines, the blank line) a fetch
 * remembers the first value of each tracked header and whether a later one
 * differed; an interim 1xx block is forgotten at the next status line, and
 * header lines after the final block (chunked trailers) are ignored.
 */
#include "gateway/upstream.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/time.h>

#include "gateway/log.h"
#include "gateway/upstream_contract.h"
#include "policy/check.h"
#include "policy/retry_after.h"

#define UPSTREAM_MAGIC 0x55505354u
#define FETCH_MAGIC 0x46455443u
#define SOCK_MAGIC 0x534f434bu
#define CONTACTS_PATH "/api/public/contacts"
#define API_KEY_HEADER "x-api-key: "
#define JSON_TYPE "application/json; charset=utf-8"
#define JSON_MEDIA "application/json"


/*
 * The vendor's response headers the gateway reads, in their canonical
 * spelling. Content-Type and Content-Length frame the answer: two different
 * values make it invalid, and so does a Content-Length beside a
 * Transfer-Encoding (RFC 9112 section 6.3: "ought to be handled as an
 * error"). The advice headers are relayed when single (or repeated
 * identically) and well formed, else dropped.
 */
enum tracked_kind { T_TYPE, T_LENGTH, T_CODING, T_ADVICE };

enum {
	H_TYPE,
	H_LENGTH,
	H_CODING,
	H_RETRY_AFTER,
	H_X_LIMIT,
	H_X_REMAINING,
	H_X_RESET,
	H_LIMIT,
	H_REMAINING,
	H_RESET,
	N_TRACKED
};

static const struct tracked {
	const char *name;
	enum tracked_kind kind;
} tracked[N_TRACKED] = {
	[H_TYPE] = {"Content-Type", T_TYPE},
	[H_LENGTH] = {"Content-Length", T_LENGTH},
	[H_CODING] = {"Transfer-Encoding", T_CODING},
	[H_RETRY_AFTER] = {"Retry-After", T_ADVICE},
	[H_X_LIMIT] = {"X-RateLimit-Limit", T_ADVICE},
	[H_X_REMAINING] = {"X-RateLimit-Remaining", T_ADVICE},
	[H_X_RESET] = {"X-RateLimit-Reset", T_ADVICE},
	[H_LIMIT] = {"RateLimit-Limit", T_ADVICE},
	[H_REMAINING] = {"RateLimit-Remaining", T_ADVICE},
	[H_RESET] = {"RateLimit-Reset", T_ADVICE},
};

_Static_assert(N_TRACKED == UPSTREAM_TRACKED, "upstream_contract.h counts them");

struct sock_watch {
	unsigned magic;
	struct event *ev;
	LIST_ENTRY(sock_watch) link;
};

struct upstream_fetch {
	unsigned magic;
	struct upstream *up;
	CURL *easy;
	struct curl_slist *headers;
	upstream_done_fn done;
	void *arg;
	int too_big;
	struct upstream_head hd; /* the contract, checked on the answer's head */
	struct upstream_response resp;
	LIST_ENTRY(upstream_fetch) link;
	char curl_error[CURL_ERROR_SIZE];
};

struct upstream {
	unsigned magic;
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct upstream_config cfg;
	char *base_url;
	char *ca_file; /* NULL: the system's CAs */
	size_t in_flight;
	time_t warned_at;	/* second of the last "refused" warning */
	unsigned long unwarned; /* refusals not logged since */
	LIST_HEAD(, upstream_fetch) fetches;
	LIST_HEAD(, sock_watch) socks;
};

static void check_done(struct upstream *up);

int upstream_result_status(enum upstream_result r)
{
	switch (r) {
	case UPSTREAM_TIMEOUT:
		return 504;
	case UPSTREAM_SHUTDOWN:
		return 503;
	default:
		return 502;
	}
}

static void fetch_unlink(struct upstream_fetch *f)
{
	struct upstream *up = f->up;

	LIST_REMOVE(f, link);
	up->in_flight--;
}

/* Frees a fetch that is no longer in the multi handle nor on the list. */
static void fetch_destroy(struct upstream_fetch *f)
{
	curl_easy_cleanup(f->easy); /* NULL is a no-op */
	curl_slist_free_all(f->headers);
	free(f->resp.body);
	f->magic = 0;
	free(f);
}

/*
 * The body is gathered in one allocation, not in an evbuffer's chains: the
 * waiters and the store want it contiguous, and gathering it in chains meant
 * copying it twice at the landing (a pullup for the JSON check, then out of
 * the evbuffer) with three bodies alive at the peak of a large miss. Sized
 * from the Content-Length when there is one (the coded length when the
 * vendor compresses: the decoded body then grows from there), else from
 * BODY_FIRST_CAP, doubling up to --max-body-bytes. Large blocks are mapped
 * (main.c fixes malloc's mmap threshold), so growing one is an mremap, not
 * a copy.
 */
#define BODY_FIRST_CAP (16 * 1024)

static int body_reserve(struct upstream_fetch *f, size_t need)
{
	struct upstream_response *r = &f->resp;
	size_t max = f->up->cfg.max_body, cap = r->body_cap;
	char *p;

	CHECK(need <= max);
	if (need <= cap)
		return 0;
	if (cap == 0) {
		curl_off_t hint = -1;

		cap = BODY_FIRST_CAP;
		if (curl_easy_getinfo(f->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &hint) ==
			    CURLE_OK && hint > 0 && (uint64_t)hint <= max)
			cap = (size_t)hint;
	}
	while (cap < need)
		cap = cap > max / 2 ? max : cap * 2;
	p = realloc(r->body, cap);
	if (p == NULL)
		return -1;
	r->body = p;
	r->body_cap = cap;
	return 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct upstream_fetch *f = arg;
	size_t n = size * nmemb;

	CHECK_OBJ_NOTNULL(f, FETCH_MAGIC);
	if (n > f->up->cfg.max_body - f->resp.body_len) {
		f->too_big = 1;
		return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
	}
	if (n == 0)
		return 0;
	if (body_reserve(f, f->resp.body_len + n) != 0)
		return 0; /* out of memory: CURLE_WRITE_ERROR, a failed fetch */
	memcpy(f->resp.body + f->resp.body_len, data, n);
	f->resp.body_len += n;
	return n;
}

char *upstream_take_body(struct upstream_response *resp, size_t *len)
{
	char *b = resp->body, *cut;

	*len = resp->body_len;
	resp->body = NULL;
	resp->body_len = resp->body_cap = 0;
	if (b != NULL && *len == 0) {
		free(b);
		return NULL;
	}
	/* give back what doubling left over (in place, or an mremap) */
	if (b != NULL && (cut = realloc(b, *len)) != NULL)
		b = cut;
	return b;
}

/* ---- the contract, checked on the answer's head ---- */

/*
 * Marks the answer as outside the contract, with the reason (words, never
 * the vendor's bytes) in *h->error. Returns 0: what header_cb returns to
 * make curl stop the transfer.
 */
static size_t refuse(struct upstream_head *h, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static size_t refuse(struct upstream_head *h, const char *fmt, ...)
{
	va_list ap;

	h->invalid = 1;
	va_start(ap, fmt);
	vsnprintf(h->error, h->error_size, fmt, ap);
	va_end(ap);
	return 0;
}

void upstream_head_init(struct upstream_head *h, char *error, size_t error_size)
{
	AN(h);
	AN(error);
	CHECK(error_size > 0);
	memset(h, 0, sizeof(*h));
	h->state = UPSTREAM_HEAD_BEFORE;
	h->error = error;
	h->error_size = error_size;
}

int upstream_status_refused(long status, char *why, size_t n)
{
	if (status == 200 || status == 400 || status == 401 || status == 403 ||
	    status == 404 || status == 429 || (status >= 500 && status <= 599))
		return 0;
	if (status == 304)
		snprintf(why, n, "upstream sent a 304 to an unconditional request");
	else if (status >= 300 && status <= 399)
		snprintf(why, n, "upstream redirect (%ld) is not followed", status);
	else
		snprintf(why, n, "upstream status %ld is outside the contract", status);
	return 1;
}

/* (curl judges a status line without a code.) */
long upstream_status_of_line(const char *data, size_t n)
{
	size_t i = 5;

	while (i < n && data[i] != ' ')
		i++;
	while (i < n && data[i] == ' ')
		i++;
	if (i + 3 > n)
		return -1;
	for (size_t k = i; k < i + 3; k++)
		if (data[k] < '0' || data[k] > '9')
			return -1;
	if (i + 3 < n && data[i + 3] != ' ' && data[i + 3] != '\r' && data[i + 3] != '\n')
		return -1;
	return (data[i] - '0') * 100L + (data[i + 1] - '0') * 10L + (data[i + 2] - '0');
}

static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3u;
	}
	return h;
}

/* Visible ASCII, SP and HTAB only: no CR, LF, NUL or other control byte,
 * nothing above 0x7e. */
static int printable(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((p[i] < 0x20 && p[i] != '\t') || (unsigned char)p[i] > 0x7e)
			return 0;
	return 1;
}

static int digits(const char *p, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return 0;
	return 1;
}

/* An RFC 9110 tchar. */
static int tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static size_t token_len(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && tchar(p[i]))
		i++;
	return i;
}

static size_t skip_ows(const char *p, size_t i, size_t n)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i;
}

int upstream_media_type_ok(const char *p, size_t n, int json_only)
{
	size_t i, t;

	if (n == 0 || n >= UPSTREAM_HEADER_VALUE_MAX || !printable(p, n))
		return 0;
	t = token_len(p, n);
	if (t == 0 || t == n || p[t] != '/')
		return 0;
	i = t + 1 + token_len(p + t + 1, n - t - 1);
	if (i == t + 1)
		return 0;
	if (json_only &&
	    (i != sizeof(JSON_MEDIA) - 1 || strncasecmp(p, JSON_MEDIA, i) != 0))
		return 0;
	for (;;) {
		i = skip_ows(p, i, n);
		if (i == n)
			return 1;
		if (p[i] != ';')
			return 0;
		i = skip_ows(p, i + 1, n);
		if (i == n || p[i] == ';')
			continue; /* an empty parameter */
		t = token_len(p + i, n - i);
		if (t == 0 || i + t == n || p[i + t] != '=')
			return 0;
		i += t + 1;
		if (i < n && p[i] == '"') {
			for (i++; i < n && p[i] != '"'; i++)
				if (p[i] == '\\' && ++i == n)
					return 0;
			if (i == n)
				return 0;
			i++;
		} else {
			t = token_len(p + i, n - i);
			if (t == 0)
				return 0;
			i += t;
		}
	}
}

/*
 * One line of a tracked header (index i), value [v, end) untrimmed: the
 * first is remembered; a different later one is a conflict, which refuses
 * the answer for Content-Type and Content-Length. Returns 0 to go on, -1
 * when the answer was refused.
 */
static int note_header(struct upstream_head *h, size_t i, const char *v, const char *end)
{
	struct upstream_seen *s = &h->seen[i];
	size_t len;
	uint64_t hash;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v &&
	       (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	len = (size_t)(end - v);
	hash = fnv1a(v, len);
	if (s->count++ == 0) {
		s->len = len;
		s->hash = hash;
		if (len < sizeof(s->value)) {
			memcpy(s->value, v, len);
			s->value[len] = '\0';
		}
		if (tracked[i].kind == T_LENGTH && !digits(v, len)) {
			refuse(h, "upstream sent a Content-Length that is not a decimal "
				  "number");
			return -1;
		}
		return 0;
	}
	if (len == s->len &&
	    (len < sizeof(s->value) ? memcmp(s->value, v, len) == 0 : hash == s->hash))
		return 0; /* the same again: collapsed */
	if (tracked[i].kind == T_CODING)
		return 0; /* codings are a list: curl judges them */
	if (tracked[i].kind == T_ADVICE) {
		s->conflict = 1; /* not relayed */
		return 0;
	}
	refuse(h, "upstream sent 2 different %s headers", tracked[i].name);
	return -1;
}

size_t upstream_head_line(struct upstream_head *h, const char *data, size_t n)
{
	const char *colon;
	long status;

	AN(h);
	if (h->invalid)
		return 0;
	if (h->state == UPSTREAM_HEAD_BEFORE) {
		if (n < 5 || memcmp(data, "HTTP/", 5) != 0)
			return n; /* not a status line: curl judges */
		/* a new header block: an interim 1xx, or the final answer */
		memset(h->seen, 0, sizeof(h->seen));
		h->state = UPSTREAM_HEAD_IN;
		status = upstream_status_of_line(data, n);
		h->in_interim = status >= 100 && status <= 199 && status != 101;
		if (h->in_interim) {
			h->interim = status; /* curl waits for the next block */
			return n;
		}
		if (status >= 0 &&
		    upstream_status_refused(status, h->error, h->error_size)) {
			h->invalid = 1; /* stopped before its headers and body */
			return 0;
		}
		return n;
	}
	if (h->state == UPSTREAM_HEAD_DONE)
		return n; /* a trailer, after the body: never part of the answer */
	if (data[0] == '\r' || data[0] == '\n') {
		/* the blank line that ends the block */
		h->state = h->in_interim ? UPSTREAM_HEAD_BEFORE : UPSTREAM_HEAD_DONE;
		if (h->seen[H_LENGTH].count > 0 && h->seen[H_CODING].count > 0)
			return refuse(h, "upstream sent both Content-Length and "
					 "Transfer-Encoding");
		return n;
	}
	if (data[0] == ' ' || data[0] == '\t')
		return refuse(
		    h, "upstream sent a folded header line (obsolete line folding)");
	colon = memchr(data, ':', n);
	if (colon == NULL)
		return n;
	for (size_t i = 0; i < N_TRACKED; i++) {
		size_t len = strlen(tracked[i].name);

		if (len != (size_t)(colon - data) ||
		    strncasecmp(tracked[i].name, data, len) != 0)
			continue;
		if (note_header(h, i, colon + 1, data + n) != 0)
			return 0;
		break;
	}
	return n;
}

/*
 * CURLOPT_HEADERFUNCTION: every line of every header block, status lines
 * and the blank line included (curl unfolds nothing, passes trailers too,
 * and no proxy CONNECT block with CURLOPT_SUPPRESS_CONNECT_HEADERS). Returns
 * n to go on, 0 to stop the transfer (CURLE_WRITE_ERROR) when the answer is
 * outside the contract.
 */
static size_t header_cb(char *data, size_t size, size_t nitems, void *arg)
{
	struct upstream_fetch *f = arg;

	CHECK_OBJ_NOTNULL(f, FETCH_MAGIC);
	return upstream_head_line(&f->hd, data, size * nitems);
}

static void add_header(struct upstream_response *r, const char *name, const char *value)
{
	struct upstream_header *h;

	if (r->n_headers == UPSTREAM_HEADERS_MAX)
		return;
	h = &r->headers[r->n_headers++];
	h->name = name;
	snprintf(h->value, sizeof(h->value), "%s", value);
}

/* Content-Length is never relayed: the front frames its own answer. */
void upstream_head_relay(const struct upstream_head *h, struct upstream_response *r,
			 int64_t wall_ms)
{
	AN(h);
	AN(r);
	r->n_headers = 0;
	for (size_t i = 0; i < N_TRACKED; i++) {
		const struct upstream_seen *s = &h->seen[i];
		int ok = s->count > 0 && !s->conflict && s->len < sizeof(s->value);
		int64_t delay;

		switch (tracked[i].kind) {
		case T_TYPE:
			ok = ok &&
			     upstream_media_type_ok(s->value, s->len, r->status == 200);
			if (ok) {
				add_header(r, tracked[i].name, s->value);
			} else if (r->status == 200) {
				add_header(r, tracked[i].name, JSON_TYPE);
				cglog(CGLOG_DEBUG,
				      "upstream: a 200 with %s Content-Type, "
				      "relayed as " JSON_TYPE,
				      s->count == 0 ? "no"
				      : s->len >= sizeof(s->value)
					  ? "an over-long"
					  : "a non-JSON or malformed");
			}
			break;
		case T_LENGTH:
		case T_CODING:
			break;
		case T_ADVICE:
			ok = ok && s->len > 0 && printable(s->value, s->len);
			if (ok && i == H_RETRY_AFTER)
				ok = limit_parse_retry_after(s->value, wall_ms, &delay) ==
				     0;
			if (ok)
				add_header(r, tracked[i].name, s->value);
			break;
		}
	}
}

/* ---- the end of a fetch ---- */

/* The result for curl's code; `sent`: the request went out, so what curl
 * refused came from the answer. */
static enum upstream_result map_curl_code(CURLcode rc, int too_big, int sent)
{
	switch (rc) {
	case CURLE_OK:
		return UPSTREAM_OK;
	case CURLE_OPERATION_TIMEDOUT:
		return UPSTREAM_TIMEOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return UPSTREAM_CONNECT;
	case CURLE_PARTIAL_FILE:
		return UPSTREAM_TRUNCATED;
	case CURLE_FILESIZE_EXCEEDED:
		return UPSTREAM_TOO_BIG;
	case CURLE_WRITE_ERROR:
		return too_big ? UPSTREAM_TOO_BIG : UPSTREAM_FAILED;
	case CURLE_WEIRD_SERVER_REPLY: /* e.g. a NUL in a header, a bad status line */
		return UPSTREAM_INVALID;
	case CURLE_UNSUPPORTED_PROTOCOL: /* after sending: an HTTP/0.9 answer */
		return sent ? UPSTREAM_INVALID : UPSTREAM_FAILED;
	default:
		return UPSTREAM_FAILED;
	}
}

/*
 * Writes what went wrong with a failed transfer into resp.error, in words:
 * what kind of failure, curl's own account of it (its error buffer, else
 * curl_easy_strerror) and, when curl saw one, the socket's errno text.
 */
static void describe_failure(struct upstream_fetch *f, CURLcode rc)
{
	struct upstream_response *r = &f->resp;
	const char *what = "upstream request failed";
	const char *detail = f->curl_error[0] ? f->curl_error : curl_easy_strerror(rc);
	char errbuf[128], os[160] = "";
	long os_errno = 0;

	switch (r->result) {
	case UPSTREAM_TOO_BIG:
		snprintf(r->error, sizeof(r->error),
			 "upstream answer is larger than the %llu-byte limit",
			 (unsigned long long)f->up->cfg.max_body);
		return;
	case UPSTREAM_CONNECT:
		what = "upstream connection failed";
		break;
	case UPSTREAM_TIMEOUT:
		what = "upstream timed out";
		break;
	case UPSTREAM_TRUNCATED:
		what = "upstream answer cut short";
		break;
	case UPSTREAM_INVALID:
		what = "upstream answer is not valid HTTP";
		break;
	default:
		break;
	}
	if (curl_easy_getinfo(f->easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK &&
	    os_errno != 0) {
		const char *text = strerror_r((int)os_errno, errbuf, sizeof(errbuf));

		if (strstr(detail, text) == NULL)
			snprintf(os, sizeof(os), " (%s)", text);
	}
	if (snprintf(r->error, sizeof(r->error), "%s: %s%s", what, detail, os) >=
	    (int)sizeof(r->error))
		memcpy(r->error + sizeof(r->error) - 4, "...", 4); /* cut short: say so */
}

/* A refused answer is worth the operator's eye, but a vendor that sends
 * nothing else must not flood the log: one line a second at most. */
static void warn_refused(struct upstream *up, const char *why)
{
	struct timeval tv;

	if (event_base_gettimeofday_cached(up->base, &tv) != 0)
		gettimeofday(&tv, NULL);
	if (tv.tv_sec == up->warned_at) {
		up->unwarned++;
		return;
	}
	if (up->unwarned > 0)
		cglog(CGLOG_WARN,
		      "upstream: answer refused (502, or a stored answer "
		      "stands in): %s; %lu more refused and not logged since the "
		      "previous line",
		      why, up->unwarned);
	else
		cglog(CGLOG_WARN,
		      "upstream: answer refused (502, or a stored answer "
		      "stands in): %s",
		      why);
	up->warned_at = tv.tv_sec;
	up->unwarned = 0;
}

/* One word for a failure's cause (the metrics' label). */
static const char *cause_of(CURLcode rc, enum upstream_result result)
{
	switch (result) {
	case UPSTREAM_OK: return NULL;
	case UPSTREAM_TIMEOUT: return "timeout";
	case UPSTREAM_TRUNCATED: return "truncated";
	case UPSTREAM_TOO_BIG: return "too_big";
	case UPSTREAM_INVALID: return "invalid";
	case UPSTREAM_SHUTDOWN: return "shutdown";
	default: break;
	}
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
	case CURLE_COULDNT_CONNECT: return "refused";
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION: return "tls";
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING: return "reset";
	default: return "failed";
	}
}

static void finish(struct upstream_fetch *f, CURLcode rc)
{
	struct upstream *up = f->up;
	struct upstream_response *r = &f->resp;
	struct timeval tv;
	int64_t wall_ms;
	long sent = 0;

	curl_multi_remove_handle(up->multi, f->easy);
	fetch_unlink(f);
	curl_easy_getinfo(f->easy, CURLINFO_REQUEST_SIZE, &sent);
	r->result =
	    f->hd.invalid ? UPSTREAM_INVALID : map_curl_code(rc, f->too_big, sent > 0);
	curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME, &r->total_ms);
	r->total_ms *= 1000.0;
	if (r->result == UPSTREAM_OK) {
		curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &r->status);
		if (upstream_status_refused(r->status, r->error, sizeof(r->error))) {
			r->result =
			    UPSTREAM_INVALID; /* a final 1xx, or one curl parsed */
		} else {
			if (event_base_gettimeofday_cached(up->base, &tv) != 0)
				gettimeofday(&tv, NULL);
			wall_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
			upstream_head_relay(&f->hd, r, wall_ms);
		}
	} else if (rc == CURLE_GOT_NOTHING && f->hd.interim != 0 && !f->hd.invalid) {
		r->result = UPSTREAM_INVALID;
		snprintf(r->error, sizeof(r->error),
			 "upstream sent an interim %ld and no final answer",
			 f->hd.interim);
	} else if (!f->hd.invalid) {
		describe_failure(f, rc);
	}
	if (r->result != UPSTREAM_OK)
		r->n_headers = 0;
	r->cause = cause_of(rc, r->result);
	if (r->result == UPSTREAM_INVALID)
		warn_refused(up, r->error);
	cglog(CGLOG_DEBUG, "upstream done: result=%d status=%ld bytes=%zu ms=%.1f%s%s",
	      (int)r->result, r->status, r->body_len, r->total_ms,
	      r->error[0] ? " error=" : "", r->error);
	f->done(r, f->arg);
	fetch_destroy(f);
}

static void check_done(struct upstream *up)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
		struct upstream_fetch *f = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&f);
		CHECK_OBJ_NOTNULL(f, FETCH_MAGIC);
		finish(f, msg->data.result);
	}
}

static void event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;
	int action = (what & EV_READ ? CURL_CSELECT_IN : 0) |
		     (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	curl_multi_socket_action(up->multi, fd, action, &running);
	check_done(up);
}

static void timer_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;
	int running;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(up);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back in timeout_ms. */
static int timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct upstream *up = arg;
	struct timeval tv;

	(void)multi;
	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	if (timeout_ms < 0) {
		evtimer_del(up->timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	return evtimer_add(up->timer, &tv);
}

static void sock_unwatch(struct sock_watch *w)
{
	CHECK_OBJ_NOTNULL(w, SOCK_MAGIC);
	LIST_REMOVE(w, link);
	event_free(w->ev);
	w->magic = 0;
	free(w);
}

/* CURLMOPT_SOCKETFUNCTION: watch socket s for `what` (or stop watching). */
static int sock_cb(CURL *easy, curl_socket_t s, int what, void *arg,
		   void *sockp)
{
	struct upstream *up = arg;
	struct sock_watch *w = sockp;
	short kind = EV_PERSIST;

	(void)easy;
	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	if (what == CURL_POLL_REMOVE) {
		if (w != NULL) {
			curl_multi_assign(up->multi, s, NULL);
			sock_unwatch(w);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (w == NULL) {
		w = calloc(1, sizeof(*w));
		if (w == NULL)
			abort();
		w->magic = SOCK_MAGIC;
		LIST_INSERT_HEAD(&up->socks, w, link);
		curl_multi_assign(up->multi, s, w);
	} else {
		event_free(w->ev);
	}
	w->ev = event_new(up->base, s, kind, event_cb, up);
	if (w->ev == NULL)
		abort();
	return event_add(w->ev, NULL);
}

void upstream_set_config(struct upstream *up, const struct upstream_config *cfg)
{
	char *url = strdup(cfg->base_url);

	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	AN(url);
	free(up->base_url);
	up->base_url = url;
	free(up->ca_file);
	up->ca_file = cfg->ca_file && cfg->ca_file[0] ? strdup(cfg->ca_file) : NULL;
	up->cfg = *cfg;
	up->cfg.base_url = up->base_url;
	up->cfg.ca_file = up->ca_file;
	curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, cfg->max_connections);
	curl_multi_setopt(up->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cfg->max_connections);
	curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, cfg->max_connections);
}

struct upstream *upstream_new(struct event_base *base,
			      const struct upstream_config *cfg)
{
	struct upstream *up = calloc(1, sizeof(*up));

	if (up == NULL)
		abort();
	up->magic = UPSTREAM_MAGIC;
	LIST_INIT(&up->fetches);
	LIST_INIT(&up->socks);
	up->base = base;
	up->cfg = *cfg;
	up->base_url = strdup(cfg->base_url);
	up->cfg.base_url = up->base_url;
	up->ca_file = cfg->ca_file && cfg->ca_file[0] ? strdup(cfg->ca_file) : NULL;
	up->cfg.ca_file = up->ca_file;
	up->multi = curl_multi_init();
	up->timer = evtimer_new(base, timer_event_cb, up);
	if (up->base_url == NULL || up->multi == NULL || up->timer == NULL) {
		upstream_free(up);
		return NULL;
	}
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, cfg->max_connections);
	curl_multi_setopt(up->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cfg->max_connections);
	curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, cfg->max_connections);
	curl_multi_setopt(up->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	return up;
}

void upstream_free(struct upstream *up)
{
	if (up == NULL)
		return;
	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	while (!LIST_EMPTY(&up->fetches))
		upstream_cancel(LIST_FIRST(&up->fetches));
	if (up->multi)
		curl_multi_cleanup(up->multi);
	while (!LIST_EMPTY(&up->socks)) /* any curl did not remove on cleanup */
		sock_unwatch(LIST_FIRST(&up->socks));
	if (up->timer)
		event_free(up->timer);
	free(up->base_url);
	free(up->ca_file);
	up->magic = 0;
	free(up);
}

struct upstream_fetch *upstream_fetch(struct upstream *up,
				      const char *canonical_query,
				      const char *api_key, const char *request_id,
				      upstream_done_fn done, void *arg)
{
	struct upstream_fetch *f;
	struct curl_slist *h;
	size_t url_len, hdr_len;
	char *url = NULL, *hdr = NULL;

	CHECK_OBJ_NOTNULL(up, UPSTREAM_MAGIC);
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		abort();
	f->magic = FETCH_MAGIC;
	f->up = up;
	upstream_head_init(&f->hd, f->resp.error, sizeof(f->resp.error));
	f->done = done;
	f->arg = arg;
	f->easy = curl_easy_init();
	url_len = strlen(up->base_url) + sizeof(CONTACTS_PATH) + 1 + strlen(canonical_query);
	hdr_len = sizeof(API_KEY_HEADER) + strlen(api_key);
	url = malloc(url_len);
	hdr = malloc(hdr_len);
	if (f->easy == NULL || url == NULL || hdr == NULL)
		goto fail;
	snprintf(url, url_len, "%s%s?%s", up->base_url, CONTACTS_PATH, canonical_query);
	snprintf(hdr, hdr_len, "%s%s", API_KEY_HEADER, api_key);
	h = curl_slist_append(NULL, hdr);
	if (h == NULL)
		goto fail;
	f->headers = h;
	h = curl_slist_append(f->headers, "Accept: application/json");
	if (h == NULL)
		goto fail;
	if (request_id && request_id[0]) {
		char rid[96];

		/* the caller sanitised it: [A-Za-z0-9._:-], at most 64 */
		snprintf(rid, sizeof(rid), "X-Request-Id: %s", request_id);
		if (curl_slist_append(f->headers, rid) == NULL)
			goto fail;
	}

	curl_easy_setopt(f->easy, CURLOPT_URL, url);
	curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->headers);
	curl_easy_setopt(f->easy, CURLOPT_USERAGENT, "contacts-gateway/" CG_VERSION);
	curl_easy_setopt(f->easy, CURLOPT_PRIVATE, f);
	curl_easy_setopt(f->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(f->easy, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(f->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(f->easy, CURLOPT_HEADERDATA, f);
	curl_easy_setopt(f->easy, CURLOPT_ERRORBUFFER, f->curl_error);
	curl_easy_setopt(f->easy, CURLOPT_TIMEOUT_MS, up->cfg.timeout_ms);
	curl_easy_setopt(f->easy, CURLOPT_CONNECTTIMEOUT_MS, up->cfg.connect_timeout_ms);
	curl_easy_setopt(f->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)up->cfg.max_body);
	curl_easy_setopt(f->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(f->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(f->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(f->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	/* Waiting to multiplex only pays where HTTP/2 can be negotiated (TLS);
	 * over http:// it would queue every new request behind the first
	 * connection's answer on a cold gateway. */
	curl_easy_setopt(f->easy, CURLOPT_PIPEWAIT,
			 strncmp(up->base_url, "https://", 8) == 0 ? 1L : 0L);
	curl_easy_setopt(f->easy, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(f->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	if (up->ca_file) /* a private CA or a TLS-inspecting proxy's, added to none */
		curl_easy_setopt(f->easy, CURLOPT_CAINFO, up->ca_file);
	curl_easy_setopt(f->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(f->easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	free(url); /* curl copied it */
	free(hdr);
	url = hdr = NULL;

	LIST_INSERT_HEAD(&up->fetches, f, link);
	up->in_flight++;
	if (curl_multi_add_handle(up->multi, f->easy) != CURLM_OK) {
		fetch_unlink(f);
		fetch_destroy(f);
		return NULL;
	}
	return f;
fail:
	free(url);
	free(hdr);
	fetch_destroy(f); /* curl_easy_cleanup and free take NULL */
	return NULL;
}

void upstream_cancel(struct upstream_fetch *f)
{
	CHECK_OBJ_NOTNULL(f, FETCH_MAGIC);
	curl_multi_remove_handle(f->up->multi, f->easy);
	fetch_unlink(f);
	fetch_destroy(f);
}

size_t upstream_in_flight(const struct upstream *up)
{
	return up->in_flight;
}
