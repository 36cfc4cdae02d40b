/*
 * admin: see admin.h.
 */
#include "gateway/admin.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cache/store.h"
#include "cache/tool.h"
#include "gateway/admit.h"
#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/fetch.h"
#include "gateway/log.h"
#include "policy/check.h"

#define ADMIN_MAGIC 0x41444d4eu
#define JSON_TYPE "application/json; charset=utf-8"
#define ADMIN_BODY_MAX 1024    /* requests carry no body */
#define ADMIN_HEADERS_MAX 8192
#define ADMIN_TIMEOUT_S 10
#define ADMIN_DIGEST_LEN 32 /* SHA-256 */

struct admin {
	unsigned magic;
	struct event_base *base;
	struct evhttp *http;
	const struct cg_config *cfg;
	uint8_t token_digest[ADMIN_DIGEST_LEN]; /* SHA-256 of --admin-token */
	struct store *store;
	struct fetcher *fetcher;
	unsigned port;
};

int admin_check(const struct cg_config *cfg, char *err, size_t err_size)
{
	const char *host = cfg->admin_listen.host;
	struct in_addr a4;
	struct in6_addr a6;

	if (host[0] == '\0')
		return 0;
	if (!((inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) ||
	      (inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6)) ||
	      strcmp(host, "localhost") == 0)) {
		snprintf(err, err_size, "admin-listen: '%s' is not a loopback address "
			 "(127.0.0.0/8 or ::1)", host);
		return -1;
	}
	if (cfg->admin_token[0] == '\0') {
		snprintf(err, err_size, "admin-listen is set but admin-token is not");
		return -1;
	}
	if (strlen(cfg->admin_token) < 16) {
		snprintf(err, err_size, "admin-token: use at least 16 characters");
		return -1;
	}
	return 0;
}

static void reply_json(struct evhttp_request *req, int code, cJSON *obj)
{
	struct evbuffer *body = evbuffer_new();
	char *text = cJSON_PrintUnformatted(obj);

	if (body == NULL || text == NULL)
		abort();
	evbuffer_add(body, text, strlen(text));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", JSON_TYPE);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
	evhttp_send_reply(req, code, NULL, body);
	cJSON_free(text);
	cJSON_Delete(obj);
	evbuffer_free(body);
}

static void reply_error(struct evhttp_request *req, int code, const char *error,
			const char *message)
{
	cJSON *obj = cJSON_CreateObject();

	if (obj == NULL)
		abort();
	cJSON_AddStringToObject(obj, "error", error);
	cJSON_AddStringToObject(obj, "message", message);
	reply_json(req, code, obj);
}

static int64_t mono_ms(const struct admin *ad)
{
	return loop_mono_ms(ad->base);
}

/* SHA-256 of len bytes at p. */
static void digest(const void *p, size_t len, uint8_t out[ADMIN_DIGEST_LEN])
{
	if (EVP_Digest(p, len, out, NULL, EVP_sha256(), NULL) != 1)
		abort();
}

int admin_token_matches(const uint8_t want[32], const char *presented, size_t len)
{
	uint8_t got[ADMIN_DIGEST_LEN];

	/* digests of both sides have one length whatever the token's, and
	 * CRYPTO_memcmp takes the same time wherever they differ: neither the
	 * length nor a prefix of the token shows in the time taken */
	digest(presented, len, got);
	return CRYPTO_memcmp(want, got, ADMIN_DIGEST_LEN) == 0;
}

static int authorised(const struct admin *ad, struct evhttp_request *req)
{
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
					      "Authorization");

	if (auth == NULL || evutil_ascii_strncasecmp(auth, "Bearer ", 7) != 0)
		return 0; /* the scheme is case-insensitive (RFC 9110) */
	auth += 7;
	return admin_token_matches(ad->token_digest, auth, strlen(auth));
}

/* "true"/"false" (also 1/0, yes/no, on/off): 1, 0, or -1. */
static int parse_bool(const char *v)
{
	if (v == NULL)
		return -1;
	if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
		return 1;
	if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
		return 0;
	return -1;
}

static void handle_status(struct admin *ad, struct evhttp_request *req)
{
	const struct admit *admit = fetcher_admit(ad->fetcher);
	cJSON *obj = cJSON_CreateObject();

	if (obj == NULL)
		abort();
	cJSON_AddBoolToObject(obj, "offline", fetcher_offline(ad->fetcher, mono_ms(ad)));
	cJSON_AddStringToObject(obj, "breaker", admit_breaker_state(admit));
	cJSON_AddNumberToObject(obj, "upstream_running", (double)admit_running(admit));
	cJSON_AddNumberToObject(obj, "upstream_queued", (double)admit_queued(admit));
	cJSON_AddNumberToObject(obj, "upstream_flights", (double)fetcher_flights(ad->fetcher));
	cJSON_AddNumberToObject(obj, "cache_entries", (double)store_count(ad->store));
	reply_json(req, 200, obj);
}

static void handle_offline(struct admin *ad, struct evhttp_request *req,
			   struct evkeyvalq *params)
{
	int on = parse_bool(evhttp_find_header(params, "on"));
	cJSON *obj;

	if (on < 0) {
		reply_error(req, 400, "invalid_parameter", "on must be true or false");
		return;
	}
	fetcher_set_offline(ad->fetcher, on, "the admin endpoint");
	obj = cJSON_CreateObject();
	if (obj == NULL)
		abort();
	cJSON_AddBoolToObject(obj, "offline", on);
	reply_json(req, 200, obj);
}

static void handle_purge(struct admin *ad, struct evhttp_request *req,
			 struct evkeyvalq *params)
{
	const char *all = evhttp_find_header(params, "all");
	const char *hash = evhttp_find_header(params, "key_hash");
	const char *prefix = evhttp_find_header(params, "query_prefix");
	const char *expired = evhttp_find_header(params, "expired");
	char hex[2 * STORE_KEYHASH_LEN + 1];
	struct cache_filter f;
	uint64_t deleted = 0, failed = 0;
	cJSON *obj;

	memset(&f, 0, sizeof(f));
	if ((all && parse_bool(all) < 0) || (expired && parse_bool(expired) < 0)) {
		reply_error(req, 400, "invalid_parameter", "all and expired take true or false");
		return;
	}
	f.all = all && parse_bool(all) == 1;
	f.expired = expired && parse_bool(expired) == 1;
	if (hash) {
		size_t len = strlen(hash);

		if (len < 8 || len > 2 * STORE_KEYHASH_LEN) {
			reply_error(req, 400, "invalid_parameter",
				    "key_hash must be 8 to 64 hex digits");
			return;
		}
		for (size_t i = 0; i < len; i++) {
			if (!isxdigit((unsigned char)hash[i])) {
				reply_error(req, 400, "invalid_parameter",
					    "key_hash must be 8 to 64 hex digits");
				return;
			}
			hex[i] = (char)tolower((unsigned char)hash[i]);
		}
		hex[len] = '\0';
		f.hash = hex;
		f.hash_len = len;
	}
	if (prefix && prefix[0]) {
		f.prefix = prefix;
		f.prefix_len = strlen(prefix);
	}
	if (!f.all && !f.hash && !f.prefix && !f.expired) {
		reply_error(req, 400, "invalid_parameter",
			    "say what to purge: all=true, key_hash, query_prefix or expired=true");
		return;
	}
	if (f.all && (f.hash || f.prefix || f.expired)) {
		reply_error(req, 400, "invalid_parameter",
			    "all=true cannot be combined with other conditions");
		return;
	}
	if (cache_purge(ad->store, &f, &deleted, &failed) != 0) {
		cglog(CGLOG_ERROR, "admin: purge: %llu deleted, %llu failed",
		      (unsigned long long)deleted, (unsigned long long)failed);
		reply_error(req, 500, "purge_failed", "the purge did not complete; see the log");
		return;
	}
	cglog(CGLOG_INFO, "admin: purged %llu entries", (unsigned long long)deleted);
	obj = cJSON_CreateObject();
	if (obj == NULL)
		abort();
	cJSON_AddNumberToObject(obj, "deleted", (double)deleted);
	reply_json(req, 200, obj);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct admin *ad = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	struct evkeyvalq params;

	CHECK_OBJ_NOTNULL(ad, ADMIN_MAGIC);
	if (!authorised(ad, req)) {
		struct evhttp_connection *evcon = evhttp_request_get_connection(req);
		char *addr = NULL;
		ev_uint16_t port = 0;

		if (evcon)
			evhttp_connection_get_peer(evcon, &addr, &port);
		cglog(CGLOG_WARN, "admin: refused a request without the right bearer token "
		      "(from %s, %s)", addr ? addr : "?", path ? path : "?");
		evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
				  "Bearer");
		reply_error(req, 401, "unauthorized", "a valid bearer token is required");
		return;
	}
	TAILQ_INIT(&params);
	if (query && evhttp_parse_query_str(query, &params) != 0) {
		reply_error(req, 400, "invalid_parameter", "the query string does not parse");
		return;
	}
	if (path == NULL)
		path = "";
	if (strcmp(path, "/admin/status") == 0 && method == EVHTTP_REQ_GET) {
		handle_status(ad, req);
	} else if (strcmp(path, "/admin/offline") == 0 && method == EVHTTP_REQ_POST) {
		handle_offline(ad, req, &params);
	} else if (strcmp(path, "/admin/purge") == 0 && method == EVHTTP_REQ_POST) {
		handle_purge(ad, req, &params);
	} else if (!strcmp(path, "/admin/status") || !strcmp(path, "/admin/offline") ||
		   !strcmp(path, "/admin/purge")) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
				  strcmp(path, "/admin/status") == 0 ? "GET" : "POST");
		reply_error(req, 405, "method_not_allowed", "see Allow");
	} else {
		reply_error(req, 404, "not_found",
			    "admin routes: GET /admin/status, POST /admin/offline, "
			    "POST /admin/purge");
	}
	evhttp_clear_headers(&params);
}

struct admin *admin_new(struct event_base *base, const struct cg_config *cfg,
			struct store *store, struct fetcher *fetcher, char *err,
			size_t err_size)
{
	struct admin *ad = calloc(1, sizeof(*ad));
	struct evhttp_bound_socket *bound;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (ad == NULL)
		abort();
	ad->magic = ADMIN_MAGIC;
	ad->cfg = cfg;
	digest(cfg->admin_token, strlen(cfg->admin_token), ad->token_digest);
	ad->store = store;
	ad->fetcher = fetcher;
	ad->base = base;
	ad->http = evhttp_new(base);
	if (ad->http == NULL)
		abort();
	evhttp_set_gencb(ad->http, on_request, ad);
	evhttp_set_allowed_methods(ad->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
					     EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
					     EVHTTP_REQ_DELETE);
	evhttp_set_max_headers_size(ad->http, ADMIN_HEADERS_MAX);
	evhttp_set_max_body_size(ad->http, ADMIN_BODY_MAX);
	evhttp_set_timeout(ad->http, ADMIN_TIMEOUT_S);
	bound = evhttp_bind_socket_with_handle(ad->http, cfg->admin_listen.host,
					       (ev_uint16_t)cfg->admin_listen.port);
	if (bound == NULL) {
		snprintf(err, err_size, "cannot listen on %s:%u for the admin endpoint",
			 cfg->admin_listen.host, cfg->admin_listen.port);
		admin_free(ad);
		return NULL;
	}
	ad->port = cfg->admin_listen.port;
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss,
			&sslen) == 0) {
		if (ss.ss_family == AF_INET)
			ad->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			ad->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return ad;
}

void admin_set_config(struct admin *ad, const struct cg_config *cfg)
{
	CHECK_OBJ_NOTNULL(ad, ADMIN_MAGIC);
	ad->cfg = cfg;
	digest(cfg->admin_token, strlen(cfg->admin_token), ad->token_digest);
}

unsigned admin_port(const struct admin *ad)
{
	return ad->port;
}

void admin_free(struct admin *ad)
{
	if (ad == NULL)
		return;
	CHECK_OBJ_NOTNULL(ad, ADMIN_MAGIC);
	if (ad->http)
		evhttp_free(ad->http);
	ad->magic = 0;
	free(ad);
}
