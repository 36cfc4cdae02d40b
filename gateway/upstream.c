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
 */
#include "gateway/upstream.h"

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "gateway/log.h"

#define UPSTREAM_MAGIC 0x55505354u
#define FETCH_MAGIC 0x46455443u
#define SOCK_MAGIC 0x534f434bu
#define CONTACTS_PATH "/api/public/contacts"
#define API_KEY_HEADER "x-api-key: "

/* Aborts when a struct that came through a void * is not what it claims.
 * Not assert(): it must hold in Release builds (-DNDEBUG) too. */
#define CHECK_OBJ(p, m) \
	do { \
		if ((p) == NULL || (p)->magic != (m)) \
			abort(); \
	} while (0)

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
	size_t in_flight;
	LIST_HEAD(, upstream_fetch) fetches;
	LIST_HEAD(, sock_watch) socks;
};

/* Vendor response headers we pass on, in their canonical spelling. */
static const char *const relayed_headers[] = {
	"Content-Type",         "Retry-After",
	"X-RateLimit-Limit",    "X-RateLimit-Remaining",
	"X-RateLimit-Reset",    "RateLimit-Limit",
	"RateLimit-Remaining",  "RateLimit-Reset",
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
	if (f->resp.body)
		evbuffer_free(f->resp.body);
	f->magic = 0;
	free(f);
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct upstream_fetch *f = arg;
	size_t n = size * nmemb;

	CHECK_OBJ(f, FETCH_MAGIC);
	if (evbuffer_get_length(f->resp.body) + n > f->up->cfg.max_body) {
		f->too_big = 1;
		return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
	}
	if (evbuffer_add(f->resp.body, data, n) != 0)
		return 0;
	return n;
}

static size_t header_cb(char *data, size_t size, size_t nitems, void *arg)
{
	struct upstream_fetch *f = arg;
	size_t n = size * nitems;
	const char *colon, *v, *end;

	CHECK_OBJ(f, FETCH_MAGIC);
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		f->resp.n_headers = 0; /* a new response (after 100, redirects) */
		return n;
	}
	colon = memchr(data, ':', n);
	if (colon == NULL)
		return n;
	for (size_t i = 0; i < sizeof(relayed_headers) / sizeof(relayed_headers[0]); i++) {
		const char *name = relayed_headers[i];
		struct upstream_header *h;
		size_t len;

		if (strlen(name) != (size_t)(colon - data) ||
		    strncasecmp(name, data, strlen(name)) != 0)
			continue;
		if (f->resp.n_headers == UPSTREAM_HEADERS_MAX)
			break;
		v = colon + 1;
		end = data + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
				   end[-1] == ' ' || end[-1] == '\t'))
			end--;
		len = (size_t)(end - v);
		if (len >= UPSTREAM_HEADER_VALUE_MAX)
			break; /* not relayed rather than relayed cut short */
		h = &f->resp.headers[f->resp.n_headers++];
		h->name = name;
		memcpy(h->value, v, len);
		h->value[len] = '\0';
		break;
	}
	return n;
}

static enum upstream_result map_curl_code(CURLcode rc, int too_big)
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
	default:
		return UPSTREAM_FAILED;
	}
}

static void finish(struct upstream_fetch *f, CURLcode rc)
{
	struct upstream *up = f->up;
	struct upstream_response *r = &f->resp;

	curl_multi_remove_handle(up->multi, f->easy);
	fetch_unlink(f);
	r->result = map_curl_code(rc, f->too_big);
	curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME, &r->total_ms);
	r->total_ms *= 1000.0;
	if (r->result == UPSTREAM_OK) {
		curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &r->status);
	} else if (r->result == UPSTREAM_TOO_BIG) {
		snprintf(r->error, sizeof(r->error),
			 "upstream answer is larger than the %llu-byte limit",
			 (unsigned long long)up->cfg.max_body);
	} else {
		snprintf(r->error, sizeof(r->error), "%s",
			 f->curl_error[0] ? f->curl_error : curl_easy_strerror(rc));
	}
	cglog(CGLOG_DEBUG, "upstream done: result=%d status=%ld bytes=%zu ms=%.1f%s%s",
	      (int)r->result, r->status, evbuffer_get_length(r->body), r->total_ms,
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
		CHECK_OBJ(f, FETCH_MAGIC);
		finish(f, msg->data.result);
	}
}

static void event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;
	int action = (what & EV_READ ? CURL_CSELECT_IN : 0) |
		     (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	CHECK_OBJ(up, UPSTREAM_MAGIC);
	curl_multi_socket_action(up->multi, fd, action, &running);
	check_done(up);
}

static void timer_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;
	int running;

	(void)fd;
	(void)what;
	CHECK_OBJ(up, UPSTREAM_MAGIC);
	curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(up);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back in timeout_ms. */
static int timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct upstream *up = arg;
	struct timeval tv;

	(void)multi;
	CHECK_OBJ(up, UPSTREAM_MAGIC);
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
	CHECK_OBJ(w, SOCK_MAGIC);
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
	CHECK_OBJ(up, UPSTREAM_MAGIC);
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
	CHECK_OBJ(up, UPSTREAM_MAGIC);
	while (!LIST_EMPTY(&up->fetches))
		upstream_cancel(LIST_FIRST(&up->fetches));
	if (up->multi)
		curl_multi_cleanup(up->multi);
	while (!LIST_EMPTY(&up->socks)) /* any curl did not remove on cleanup */
		sock_unwatch(LIST_FIRST(&up->socks));
	if (up->timer)
		event_free(up->timer);
	free(up->base_url);
	up->magic = 0;
	free(up);
}

struct upstream_fetch *upstream_fetch(struct upstream *up,
				      const char *canonical_query,
				      const char *api_key, upstream_done_fn done,
				      void *arg)
{
	struct upstream_fetch *f;
	struct curl_slist *h;
	size_t url_len, hdr_len;
	char *url = NULL, *hdr = NULL;

	CHECK_OBJ(up, UPSTREAM_MAGIC);
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		abort();
	f->magic = FETCH_MAGIC;
	f->up = up;
	f->done = done;
	f->arg = arg;
	f->easy = curl_easy_init();
	f->resp.body = evbuffer_new();
	url_len = strlen(up->base_url) + sizeof(CONTACTS_PATH) + 1 + strlen(canonical_query);
	hdr_len = sizeof(API_KEY_HEADER) + strlen(api_key);
	url = malloc(url_len);
	hdr = malloc(hdr_len);
	if (f->easy == NULL || f->resp.body == NULL || url == NULL || hdr == NULL)
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
	curl_easy_setopt(f->easy, CURLOPT_FOLLOWLOCATION, 0L);
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
	fetch_destroy(f); /* curl_easy_cleanup and evbuffer checks take NULL */
	return NULL;
}

void upstream_cancel(struct upstream_fetch *f)
{
	CHECK_OBJ(f, FETCH_MAGIC);
	curl_multi_remove_handle(f->up->multi, f->easy);
	fetch_unlink(f);
	fetch_destroy(f);
}

size_t upstream_in_flight(const struct upstream *up)
{
	return up->in_flight;
}
