/*
 * config: see config.h. The option table below is the single list of
 * settings; adding a setting is one row plus a field in struct cg_config.
 * --help (config_usage), the man page (config_manpage_options, run by the
 * build's cg-manpage) and the file parser all read it.
 */
#include "gateway/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/derive.h"
#include "policy/encoding.h"
#include "policy/ttl.h"

enum opt_type {
	OPT_HOSTPORT, /* listen_host + listen_port */
	OPT_URL,      /* http:// or https:// base URL */
	OPT_PATH,
	OPT_FILE,     /* a path to a readable regular file, or "" */
	OPT_MS,       /* long, milliseconds; a duration (bare: ms) */
	OPT_COUNT,    /* long */
	OPT_BYTES,    /* uint64_t; accepts K, M, G suffixes (binary) */
	OPT_LEVEL,
	OPT_LOGFMT,   /* "text" or "json" (int 0/1) */
	OPT_CODINGS,  /* a list of content codings, or "off" (unsigned ENC_BIT mask) */
	OPT_RULES,    /* a list of derive rules, "all" or "off" (unsigned derive_rule bits) */
	OPT_NOCACHE,  /* ignore, revalidate or honour (int enum client_no_cache) */
	OPT_NETS,     /* addresses and CIDR networks, or "off" (struct proxy_nets) */
	OPT_TTL,      /* uint32_t seconds, or "inherit" (TTL_INHERIT); a duration */
	OPT_SECONDS,  /* uint32_t seconds; a duration (bare: s) */
	OPT_FLAG,     /* int 0/1; a bare --flag means 1 */
	OPT_RATE,     /* double, per second, decimals allowed */
	OPT_RATE_OFF, /* OPT_RATE, or "off" (0) */
	OPT_NAME,     /* an HTTP header name, or "" */
	OPT_SECRET,   /* a token: printable ASCII, no spaces */
};

struct opt {
	const char *name;
	enum opt_type type;
	size_t offset;
	uint64_t min, max; /* inclusive, for numbers */
	const char *def;
	const char *metavar;
	const char *help;
};

#define OFF(field) offsetof(struct cg_config, field)

static const struct opt opts[] = {
	{"config", OPT_PATH, OFF(config_path), 0, 0, "", "FILE",
	 "read settings from FILE (key = value lines); flags override it"},
	{"listen", OPT_HOSTPORT, OFF(listen), 0, 0, "127.0.0.1:8080", "HOST:PORT",
	 "address to serve on (port 0: any free port)"},
	{"upstream", OPT_URL, OFF(upstream), 0, 0, "https://api.vambe.me", "URL",
	 "the vendor's base URL (http:// or https://)"},
	{"upstream-ca-file", OPT_FILE, OFF(upstream_ca_file), 0, 0, "", "FILE",
	 "PEM file of CAs to trust for an https upstream (a private CA, a "
	 "TLS-inspecting proxy)"},
	{"upstream-timeout", OPT_MS, OFF(upstream_timeout_ms), 1, 3600000, "30000",
	 "MS", "longest upstream exchange; past it the client gets 504"},
	{"connect-timeout", OPT_MS, OFF(connect_timeout_ms), 1, 600000, "5000", "MS",
	 "longest upstream connect (TCP and TLS)"},
	{"client-timeout", OPT_MS, OFF(client_timeout_ms), 100, 3600000, "30000",
	 "MS", "idle or stalled client connections are closed after this"},
	{"shutdown-timeout", OPT_MS, OFF(shutdown_timeout_ms), 0, 600000, "10000",
	 "MS", "on SIGTERM, wait this long for in-flight requests"},
	{"max-connections", OPT_COUNT, OFF(max_connections), 1, 100000, "1024", "N",
	 "client connections served at once; more get 503"},
	{"upstream-connections", OPT_COUNT, OFF(upstream_connections), 1, 4096,
	 "64", "N", "upstream connections open at once (more requests queue)"},
	{"max-body-bytes", OPT_BYTES, OFF(max_body_bytes), 1024,
	 (uint64_t)4 << 30, "64M", "BYTES", "largest upstream body accepted (502 past it)"},
	{"max-header-bytes", OPT_BYTES, OFF(max_header_bytes), 1024, 1 << 20, "16K",
	 "BYTES", "largest client request line plus headers"},
	{"log-level", OPT_LEVEL, OFF(log_level), 0, 0, "info", "LEVEL",
	 "error, warn, info or debug"},
	{"cache-dir", OPT_PATH, OFF(cache_dir), 0, 0, "cache-data", "DIR",
	 "LMDB cache directory (created if missing)"},
	{"cache-size", OPT_BYTES, OFF(cache_size), 1 << 20, (uint64_t)1 << 40, "1G",
	 "BYTES", "cache map size; when full, expired then least used go"},
	{"cache-sync-interval", OPT_MS, OFF(cache_sync_ms), 10, 3600000, "1000", "MS",
	 "flush the cache to disk this often (what a power loss can cost)"},
	{"ttl", OPT_TTL, OFF(ttl_s), 0, TTL_MAX_S, "60", "SECONDS",
	 "freshness of stored answers (0: store nothing)"},
	{"ttl-cursor", OPT_TTL, OFF(ttl_cursor_s), 0, TTL_MAX_S, "inherit", "SECONDS",
	 "freshness for updated_after/created_after queries"},
	{"ttl-wide", OPT_TTL, OFF(ttl_wide_s), 0, TTL_MAX_S, "inherit", "SECONDS",
	 "freshness for days >= ttl-wide-days"},
	{"ttl-wide-days", OPT_COUNT, OFF(ttl_wide_days), 1, 365, "90", "DAYS",
	 "days from which a query is in the wide class"},
	{"max-waiters", OPT_COUNT, OFF(max_waiters), 1, 100000, "1024", "N",
	 "identical requests that may wait on one upstream fetch"},
	{"stale-while-revalidate", OPT_SECONDS, OFF(stale_while_revalidate_s), 0,
	 TTL_MAX_S, "0", "SECONDS",
	 "answer at once from an answer expired less than this, refreshing it behind"},
	{"stale-if-error", OPT_SECONDS, OFF(stale_if_error_s), 0, TTL_MAX_S, "86400",
	 "SECONDS", "when the upstream fails, answer from an answer expired less than this"},
	{"offline", OPT_FLAG, OFF(offline), 0, 1, "false", "",
	 "never contact the upstream; serve every stored answer "
	 "(at run time: POST /admin/offline)"},
	{"upstream-rate", OPT_RATE, OFF(upstream_rate), 0, 100000, "10", "RPS",
	 "upstream requests per second per API key, sustained"},
	{"upstream-burst", OPT_COUNT, OFF(upstream_burst), 1, 100000, "20", "N",
	 "upstream requests per API key at once, above the rate"},
	{"upstream-concurrency", OPT_COUNT, OFF(upstream_concurrency), 1, 4096, "32",
	 "N", "upstream requests in progress at once, all keys together"},
	{"queue-limit", OPT_COUNT, OFF(queue_limit), 0, 100000, "64", "N",
	 "requests per API key waiting for an upstream slot; more get 429"},
	{"queue-timeout", OPT_MS, OFF(queue_timeout_ms), 0, 600000, "5000", "MS",
	 "longest wait for an upstream slot; then a stored answer or 429"},
	{"upstream-retries", OPT_COUNT, OFF(upstream_retries), 0, 10, "2", "N",
	 "retries of a fetch that failed to connect or got 502/503/504"},
	{"retry-backoff", OPT_MS, OFF(retry_backoff_ms), 1, 60000, "200", "MS",
	 "first retry waits up to this (jittered, doubling each retry)"},
	{"breaker-threshold", OPT_COUNT, OFF(breaker_threshold), 0, 100000, "5", "N",
	 "consecutive upstream failures that open the circuit breaker (0: never)"},
	{"breaker-cooldown", OPT_MS, OFF(breaker_cooldown_ms), 100, 3600000, "10000",
	 "MS", "how long the breaker stays open before one probe request"},
	{"offline-when-open", OPT_FLAG, OFF(offline_when_open), 0, 1, "false", "",
	 "while the breaker is open, answer as --offline does"},
	{"caller-header", OPT_NAME, OFF(caller_header), 0, 0, "", "NAME",
	 "request header naming the internal caller (e.g. x-client-id): per-caller quotas"},
	{"caller-rate", OPT_RATE, OFF(caller_rate), 0, 100000, "5", "RPS",
	 "upstream requests per second per caller, when caller-header is set"},
	{"caller-burst", OPT_COUNT, OFF(caller_burst), 1, 100000, "10", "N",
	 "upstream requests per caller at once, above its rate"},
	{"admin-listen", OPT_HOSTPORT, OFF(admin_listen), 0, 0, "", "HOST:PORT",
	 "admin endpoint address, loopback only (off unless set; needs admin-token)"},
	{"admin-token", OPT_SECRET, OFF(admin_token), 0, 0, "", "TOKEN",
	 "bearer token the admin endpoint requires (better set in the config file)"},
	{"instance-name", OPT_NAME, OFF(instance_name), 0, 0, "", "NAME",
	 "this gateway's name, sent on every answer as X-Served-By and shown in the log "
	 "and metrics (several gateways behind HAProxy)"},
	{"log-format", OPT_LOGFMT, OFF(log_json), 0, 0, "text", "FORMAT",
	 "the error log's lines: text, or json (one object per line)"},
	{"access-log", OPT_PATH, OFF(access_log), 0, 0, "", "PATH",
	 "one JSON line per answered request to PATH (- : stdout); reopened on SIGHUP "
	 "and SIGUSR1 (off unless set)"},
	{"max-callers", OPT_COUNT, OFF(max_callers), 0, 4096, "256", "N",
	 "distinct callers counted in metrics (past it: \"other\")"},
	{"takeover", OPT_FLAG, OFF(takeover), 0, 1, "false", "",
	 "restart without refusing a connection: take the listening sockets of the gateway "
	 "running on the same cache-dir, which then drains and exits"},
	{"threads", OPT_COUNT, OFF(threads), 0, 64, "0", "N",
	 "front-end loops serving clients (0: one per core, at most 64)"},
	{"client-header-timeout", OPT_MS, OFF(client_header_timeout_ms), 100, 3600000,
	 "10000", "MS", "a client's whole request head must arrive within this (408)"},
	{"keepalive-timeout", OPT_MS, OFF(keepalive_timeout_ms), 100, 3600000, "30000",
	 "MS", "idle keep-alive connections are closed after this"},
	{"compress", OPT_CODINGS, OFF(compress), 0, 0, "gzip", "LIST",
	 "representations stored beside each answer and sent to clients that accept "
	 "them: gzip, br, zstd (comma-separated), or off"},
	{"compress-min-bytes", OPT_BYTES, OFF(compress_min_bytes), 0, (uint64_t)1 << 30,
	 "1400", "BYTES", "answers smaller than this are stored and sent uncompressed"},
	{"new-key-rate", OPT_RATE_OFF, OFF(new_key_rate), 0, 100000, "5", "RPS",
	 "upstream requests per second, all together, of API keys the vendor has not "
	 "yet answered 2xx (off: no limit)"},
	{"client-rate", OPT_RATE_OFF, OFF(client_rate), 0, 100000, "off", "RPS",
	 "upstream requests per second per client address (off: no limit)"},
	{"client-burst", OPT_COUNT, OFF(client_burst), 1, 100000, "20", "N",
	 "upstream requests per client address at once, above client-rate"},
	{"trusted-proxies", OPT_NETS, OFF(trusted_proxies), 0, 0, "off", "CIDRS",
	 "peers (addresses, CIDR networks, comma-separated, at most 32) whose "
	 "X-Forwarded-For names the client, for client-rate and the access log (off: none)"},
	{"unauthorized-ttl", OPT_SECONDS, OFF(unauthorized_ttl_s), 0, 3600, "10", "SECONDS",
	 "a vendor 401 for a key is answered locally this long (0: off)"},
	{"derive", OPT_RULES, OFF(derive), 0, 0, "off", "RULES",
	 "answer a miss from a fresh stored answer of the same key that holds it: pages, "
	 "cursors, days (comma-separated), all, or off"},
	{"widen-pages", OPT_COUNT, OFF(widen_pages), 0, 1000, "0", "N",
	 "with derive pages: a miss for a page of fewer than N asks the vendor for N at the "
	 "same offset, the rest of it answering the next pages (0: off)"},
	{"client-no-cache", OPT_NOCACHE, OFF(client_no_cache), 0, 0, "revalidate", "POLICY",
	 "a client's Cache-Control/Pragma no-cache: ignore, revalidate (refresh answers "
	 "older than no-cache-min-age) or honour (refresh every time)"},
	{"no-cache-min-age", OPT_SECONDS, OFF(no_cache_min_age_s), 0, 86400, "5", "SECONDS",
	 "with client-no-cache revalidate: answers younger than this are served as stored"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static const struct opt *find_opt(const char *name, size_t len)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

/* "pages,cursors", "all" or "off" as enum derive_rule bits; -1 if not. */
static int parse_rules(const char *value, unsigned *out)
{
	unsigned mask = 0;

	if (strcmp(value, "off") == 0) {
		*out = 0;
		return 0;
	}
	if (strcmp(value, "all") == 0) {
		*out = DERIVE_RULE_ALL;
		return 0;
	}
	while (*value) {
		size_t len = strcspn(value, ",");
		unsigned bit = 0;

		for (unsigned b = DERIVE_RULE_PAGES; b & DERIVE_RULE_ALL; b <<= 1)
			if (strlen(derive_rule_name((enum derive_rule)b)) == len &&
			    memcmp(derive_rule_name((enum derive_rule)b), value, len) == 0)
				bit = b;
		if (bit == 0)
			return -1;
		mask |= bit;
		value += len;
		if (*value == ',' && *++value == '\0')
			return -1; /* a trailing comma */
	}
	if (mask == 0)
		return -1;
	*out = mask;
	return 0;
}

/* Strict unsigned decimal: digits only, no sign, no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

static int parse_bytes(const char *s, uint64_t *out)
{
	char digits[32];
	size_t len = strlen(s);
	unsigned shift = 0;
	uint64_t v;

	if (len == 0 || len >= sizeof(digits))
		return -1;
	memcpy(digits, s, len + 1);
	switch (toupper((unsigned char)digits[len - 1])) {
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	default: break;
	}
	if (shift)
		digits[len - 1] = '\0';
	if (parse_u64(digits, &v) != 0 || v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

/* Duration units, lower case only (`5M` would read as bytes elsewhere). */
static const struct {
	const char *suffix;
	uint64_t ms;
} units[] = {
	{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

/*
 * A duration: whole digits and an optional unit (ms, s, m, h, d); bare digits
 * are in units of `bare_ms`. Sets *ms and returns 0, or -1 (nothing set) for
 * anything else: a sign, a fraction, a space, an unknown unit, an overflow.
 */
static int parse_duration(const char *s, uint64_t bare_ms, uint64_t *ms)
{
	char digits[24];
	size_t n = strspn(s, "0123456789");
	const char *unit = s + n;
	uint64_t v, scale = 0;

	if (n == 0 || n >= sizeof(digits))
		return -1;
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (parse_u64(digits, &v) != 0)
		return -1;
	if (*unit == '\0')
		scale = bare_ms;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && scale == 0; i++)
		if (strcmp(unit, units[i].suffix) == 0)
			scale = units[i].ms;
	if (scale == 0 || v > UINT64_MAX / scale)
		return -1;
	*ms = v * scale;
	return 0;
}

/* "" (not set) or a regular file this process can open for reading. */
static int set_file(char *dst, const struct opt *o, const char *v, char *err,
		    size_t err_size)
{
	size_t len = strlen(v);

	if (len >= CONFIG_PATH_MAX) {
		snprintf(err, err_size, "%s: path too long", o->name);
		return -1;
	}
	if (len > 0) {
		struct stat sb;
		/* O_NONBLOCK: a FIFO named by mistake must not hang the start */
		int fd = open(v, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

		if (fd < 0) {
			snprintf(err, err_size, "%s: %s: %s", o->name, v, strerror(errno));
			return -1;
		}
		if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
			close(fd);
			snprintf(err, err_size, "%s: %s is not a regular file", o->name, v);
			return -1;
		}
		close(fd);
	}
	memcpy(dst, v, len + 1);
	return 0;
}

/* true/yes/on/1 -> 1, false/no/off/0 -> 0, anything else -1. */
static int parse_bool(const char *v)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(v, yes[i]) == 0)
			return 1;
		if (strcmp(v, no[i]) == 0)
			return 0;
	}
	return -1;
}

static int set_hostport(struct cg_addr *addr, const char *name, const char *v,
			char *err, size_t err_size)
{
	const char *colon = strrchr(v, ':');
	const char *host = v;
	size_t host_len;
	uint64_t port;

	if (v[0] == '\0' && strcmp(name, "listen") != 0) { /* "": off */
		addr->host[0] = '\0';
		addr->port = 0;
		return 0;
	}
	if (colon == NULL || colon == v)
		goto bad;
	host_len = (size_t)(colon - v);
	if (host[0] == '[') { /* [::1]:8080 */
		if (host_len < 3 || host[host_len - 1] != ']')
			goto bad;
		host++;
		host_len -= 2;
	}
	if (host_len >= sizeof(addr->host) ||
	    parse_u64(colon + 1, &port) != 0 || port > 65535)
		goto bad;
	for (size_t i = 0; i < host_len; i++)
		if (!isalnum((unsigned char)host[i]) && !strchr(".-:", host[i]))
			goto bad;
	memcpy(addr->host, host, host_len);
	addr->host[host_len] = '\0';
	addr->port = (unsigned)port;
	return 0;
bad:
	snprintf(err, err_size, "%s: '%s' is not HOST:PORT (e.g. 127.0.0.1:8080)", name, v);
	return -1;
}

static int set_url(char *dst, const char *v, char *err, size_t err_size)
{
	size_t len = strlen(v);
	const char *host;

	if (strncmp(v, "http://", 7) == 0)
		host = v + 7;
	else if (strncmp(v, "https://", 8) == 0)
		host = v + 8;
	else
		goto bad;
	while (len > 0 && v[len - 1] == '/')
		len--;
	if (len <= (size_t)(host - v) || len >= CONFIG_URL_MAX ||
	    strpbrk(v, "?# \t\r\n") != NULL)
		goto bad;
	memcpy(dst, v, len);
	dst[len] = '\0';
	return 0;
bad: {
	char shown[CONFIG_URL_MAX];

	config_redact_url(v, shown, sizeof(shown));
	snprintf(err, err_size,
		 "upstream: '%s' is not an http:// or https:// base URL", shown);
	return -1;
}
}

/* A decimal rate: digits, at most one '.', from o->min to o->max, not 0. */
static int set_rate(double *dst, const struct opt *o, const char *v, char *err,
		    size_t err_size)
{
	double whole = 0, scale = 1;
	int dot = 0, digits = 0;

	for (const char *c = v; *c; c++) {
		if (*c == '.' && !dot) {
			dot = 1;
		} else if (*c >= '0' && *c <= '9' && digits < 12) {
			digits++;
			if (dot)
				scale /= 10;
			whole = whole * (dot ? 1 : 10) + (*c - '0') * (dot ? scale : 1);
		} else {
			digits = -1;
			break;
		}
	}
	if (digits <= 0 || whole < 0.0001 || whole > (double)o->max) {
		snprintf(err, err_size, "%s: '%s' is not a number of requests per second "
			 "from 0.0001 to %llu (e.g. 2.5)", o->name, v,
			 (unsigned long long)o->max);
		return -1;
	}
	*dst = whole;
	return 0;
}

/* A header name (token characters) or a secret (visible ASCII), "" allowed. */
static int set_token(char *dst, const struct opt *o, const char *v, char *err,
		     size_t err_size)
{
	size_t max = o->type == OPT_NAME ? CONFIG_NAME_MAX : CONFIG_SECRET_MAX;
	size_t len = strlen(v);

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		int ok = o->type == OPT_NAME
				 ? (isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL)
				 : (c > 0x20 && c < 0x7f);

		if (!ok || c == '\0') {
			snprintf(err, err_size, "%s: character %zu is not allowed in %s",
				 o->name, i + 1,
				 o->type == OPT_NAME ? "a header name" : "a token");
			return -1;
		}
	}
	if (len >= max) {
		snprintf(err, err_size, "%s: longer than %zu characters", o->name, max - 1);
		return -1;
	}
	memcpy(dst, v, len + 1);
	return 0;
}

int config_set(struct cg_config *cfg, const char *name, const char *value,
	       char *err, size_t err_size)
{
	const struct opt *o = find_opt(name, strlen(name));
	char *field;
	uint64_t n;

	if (o == NULL) {
		snprintf(err, err_size, "unknown option '%s'", name);
		return -1;
	}
	field = (char *)cfg + o->offset;
	switch (o->type) {
	case OPT_HOSTPORT:
		return set_hostport((struct cg_addr *)(void *)field, name, value, err,
				    err_size);
	case OPT_FLAG: {
		int b = parse_bool(value);

		if (b < 0) {
			snprintf(err, err_size, "%s: '%s' is not true or false "
				 "(or yes, no, on, off, 1, 0)", name, value);
			return -1;
		}
		*(int *)(void *)field = b;
		return 0;
	}
	case OPT_RATE_OFF:
		if (strcmp(value, "off") == 0 || strcmp(value, "0") == 0) {
			*(double *)(void *)field = 0;
			return 0;
		}
		return set_rate((double *)(void *)field, o, value, err, err_size);
	case OPT_RATE:
		return set_rate((double *)(void *)field, o, value, err, err_size);
	case OPT_NAME:
	case OPT_SECRET:
		return set_token(field, o, value, err, err_size);
	case OPT_URL:
		return set_url(field, value, err, err_size);
	case OPT_FILE:
		return set_file(field, o, value, err, err_size);
	case OPT_PATH:
		if (strlen(value) >= CONFIG_PATH_MAX) {
			snprintf(err, err_size, "%s: path too long", name);
			return -1;
		}
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case OPT_CODINGS:
		if (encoding_parse_list(value, (unsigned *)(void *)field) != 0) {
			snprintf(err, err_size, "%s: '%s' is not a list of gzip, br, zstd, or off",
				 name, value);
			return -1;
		}
		return 0;
	case OPT_NETS: {
		char why[160];

		if (proxy_parse(value, (struct proxy_nets *)(void *)field, why, sizeof(why)) != 0) {
			snprintf(err, err_size, "%s: %s", name, why);
			return -1;
		}
		return 0;
	}
	case OPT_RULES:
		if (parse_rules(value, (unsigned *)(void *)field) != 0) {
			snprintf(err, err_size, "%s: '%s' is not a list of pages, cursors, days, "
				 "or all, or off", name, value);
			return -1;
		}
		return 0;
	case OPT_NOCACHE: {
		static const char *const policies[] = {"ignore", "revalidate", "honour"};

		for (int i = 0; i < 3; i++) {
			if (strcmp(value, policies[i]) == 0) {
				*(int *)(void *)field = i; /* enum client_no_cache's order */
				return 0;
			}
		}
		snprintf(err, err_size, "%s: '%s' is not ignore, revalidate or honour", name,
			 value);
		return -1;
	}
	case OPT_LOGFMT:
		if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0) {
			snprintf(err, err_size, "%s: '%s' is not text or json", name, value);
			return -1;
		}
		*(int *)(void *)field = strcmp(value, "json") == 0;
		return 0;
	case OPT_LEVEL:
		if (cglog_parse_level(value, (enum cglog_level *)(void *)field) != 0) {
			snprintf(err, err_size,
				 "%s: '%s' is not one of error, warn, info, debug",
				 name, value);
			return -1;
		}
		return 0;
	case OPT_TTL:
	case OPT_SECONDS: {
		/* a TTL class may inherit --ttl; --ttl itself and plain seconds not */
		int inherits = o->type == OPT_TTL && strcmp(name, "ttl") != 0;

		if (inherits && strcmp(value, "inherit") == 0) {
			*(uint32_t *)(void *)field = TTL_INHERIT;
			return 0;
		}
		if (parse_duration(value, 1000, &n) != 0 || n % 1000 != 0 ||
		    n / 1000 < o->min || n / 1000 > o->max) {
			snprintf(err, err_size, "%s: '%s' is not a duration of whole seconds "
				 "from %llu to %llu s (bare seconds, or with a unit: 30s, 5m, "
				 "1h, 1d)%s", name, value, (unsigned long long)o->min,
				 (unsigned long long)o->max, inherits ? ", or inherit" : "");
			return -1;
		}
		*(uint32_t *)(void *)field = (uint32_t)(n / 1000);
		return 0;
	}
	case OPT_MS:
		if (parse_duration(value, 1, &n) != 0 || n < o->min || n > o->max) {
			snprintf(err, err_size, "%s: '%s' is not a duration from %llu to %llu ms "
				 "(bare milliseconds, or with a unit: 500ms, 30s, 5m, 1h, 1d)",
				 name, value, (unsigned long long)o->min,
				 (unsigned long long)o->max);
			return -1;
		}
		*(long *)(void *)field = (long)n;
		return 0;
	case OPT_COUNT:
	case OPT_BYTES:
		if ((o->type == OPT_BYTES ? parse_bytes(value, &n)
					  : parse_u64(value, &n)) != 0 ||
		    n < o->min || n > o->max) {
			snprintf(err, err_size,
				 "%s: '%s' is not a whole number from %llu to %llu%s",
				 name, value, (unsigned long long)o->min,
				 (unsigned long long)o->max,
				 o->type == OPT_BYTES ? " (K, M, G suffixes allowed)" : "");
			return -1;
		}
		if (o->type == OPT_BYTES)
			*(uint64_t *)(void *)field = n;
		else
			*(long *)(void *)field = (long)n;
		return 0;
	}
	return -1;
}

void config_defaults(struct cg_config *cfg)
{
	char err[CONFIG_ERR_MAX];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < N_OPTS; i++) {
		int rc = config_set(cfg, opts[i].name, opts[i].def, err, sizeof(err));

		(void)rc;
	}
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/*
 * 1 if the file open as `f` can be read by users other than its owner: by
 * others, or by its group unless that is this process's own group (a file
 * root:gateway 0640 read by a gateway running as that group is the usual
 * way to keep a secret).
 */
static int readable_by_others(FILE *f)
{
	struct stat sb;

	if (fstat(fileno(f), &sb) != 0)
		return 0;
	if (sb.st_mode & S_IROTH)
		return 1;
	return (sb.st_mode & S_IRGRP) && sb.st_gid != getegid();
}

int config_load_file(struct cg_config *cfg, const char *path, char *err,
		     size_t err_size)
{
	char line[CONFIG_LINE_MAX];
	char why[CONFIG_ERR_MAX];
	unsigned set_on[N_OPTS] = {0}; /* the line that set each option, 0: none */
	unsigned lineno = 0;
	int rc = -1;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		snprintf(err, err_size, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *key, *value, *eq;
		const struct opt *o;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, err_size, "%s:%u: line longer than %d bytes",
				 path, lineno, CONFIG_LINE_MAX - 2);
			goto out;
		}
		key = trim(line);
		if (*key == '\0' || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (eq == NULL) {
			snprintf(err, err_size, "%s:%u: expected 'key = value'", path,
				 lineno);
			goto out;
		}
		*eq = '\0';
		key = trim(key);
		value = trim(eq + 1);
		if (strcmp(key, "config") == 0) {
			snprintf(err, err_size, "%s:%u: 'config' cannot be set in a file",
				 path, lineno);
			goto out;
		}
		o = find_opt(key, strlen(key));
		if (o != NULL && set_on[o - opts] != 0) {
			snprintf(err, err_size, "%s:%u: '%s' already set on line %u", path,
				 lineno, key, set_on[o - opts]);
			goto out;
		}
		if (config_set(cfg, key, value, why, sizeof(why)) != 0) {
			snprintf(err, err_size, "%s:%u: %s", path, lineno, why);
			goto out;
		}
		set_on[o - opts] = lineno; /* config_set knew the key: o != NULL */
		if (o->type == OPT_SECRET && value[0] != '\0' && readable_by_others(f))
			cfg->warn |= CONFIG_WARN_TOKEN_FILE;
	}
	if (ferror(f)) {
		snprintf(err, err_size, "%s: read error", path);
		goto out;
	}
	rc = 0;
out:
	fclose(f);
	return rc;
}

/* The flags that are not settings, for --help and the man page. */
static const struct {
	const char *flags;
	const char *help;
} actions[] = {
	{"-t, --check-config",
	 "check flags and config file as a start would (listen host resolves, "
	 "cache-dir usable), print 'configuration ok' or the error, exit 0 or 2; "
	 "binds and creates nothing"},
	{"-v, -V, --version", "print the version and exit"},
	{"-h, --help", "print this help and exit"},
};

#define N_ACTIONS (sizeof(actions) / sizeof(actions[0]))

static int is_check_flag(const char *arg)
{
	return strcmp(arg, "-t") == 0 || strcmp(arg, "--check-config") == 0;
}

/*
 * Walks argv twice. Pass one handles --config, --help, --version and
 * --check-config and checks every flag's name and value presence; pass two
 * sets everything else, so flags beat the file whatever their order.
 */
enum config_status config_from_args(struct cg_config *cfg, int argc,
				    char *const argv[], int first, char *err,
				    size_t err_size)
{
	char why[CONFIG_ERR_MAX];
	int check = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (int i = first; i < argc; i++) {
			const char *arg = argv[i];
			const char *name, *eq, *value;
			const struct opt *o;
			size_t len;

			if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
				return CONFIG_HELP;
			if (strcmp(arg, "--version") == 0 || strcmp(arg, "-v") == 0 ||
			    strcmp(arg, "-V") == 0)
				return CONFIG_VERSION;
			if (is_check_flag(arg)) {
				check = 1;
				continue;
			}
			if (strncmp(arg, "--", 2) != 0) {
				snprintf(err, err_size, "unexpected argument '%s' (see --help)", arg);
				return CONFIG_ERROR;
			}
			name = arg + 2;
			eq = strchr(name, '=');
			len = eq ? (size_t)(eq - name) : strlen(name);
			o = find_opt(name, len);
			if (o == NULL) {
				snprintf(err, err_size, "unknown option '%.*s' (see --help)",
					 (int)len + 2, arg);
				return CONFIG_ERROR;
			}
			if (eq) {
				value = eq + 1;
			} else if (o->type == OPT_FLAG) {
				/* a bare --flag, or --flag followed by a boolean word */
				if (i + 1 < argc && parse_bool(argv[i + 1]) >= 0)
					value = argv[++i];
				else
					value = "true";
			} else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
				value = argv[++i];
			} else {
				snprintf(err, err_size, "%s needs a value", arg);
				return CONFIG_ERROR;
			}
			if ((pass == 0) != (strcmp(o->name, "config") == 0))
				continue;
			if (config_set(cfg, o->name, value, why, sizeof(why)) != 0) {
				snprintf(err, err_size, "%s", why);
				return CONFIG_ERROR;
			}
			if (o->type == OPT_SECRET && value[0] != '\0')
				cfg->warn |= CONFIG_WARN_TOKEN_ARGV;
			if (pass == 0 &&
			    config_load_file(cfg, cfg->config_path, err, err_size) != 0)
				return CONFIG_ERROR;
		}
	}
	return check ? CONFIG_CHECK : CONFIG_OK;
}

/* A byte count as --help writes it: with the largest exact K, M, G suffix. */
static void format_bytes(uint64_t v, char *buf, size_t size)
{
	static const char suffix[] = "KMG";
	int s = -1;

	while (s < 2 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		s++;
	}
	snprintf(buf, size, "%llu%.*s", (unsigned long long)v, s >= 0 ? 1 : 0,
		 s >= 0 ? &suffix[s] : "");
}

/* An option's bounds as "1..3600000 ms", or "" for types without bounds. */
static void format_bounds(const struct opt *o, char *buf, size_t size)
{
	char lo[24], hi[24];

	switch (o->type) {
	case OPT_MS:
	case OPT_SECONDS:
	case OPT_TTL:
		snprintf(buf, size, "%llu..%llu %s%s", (unsigned long long)o->min,
			 (unsigned long long)o->max, o->type == OPT_MS ? "ms" : "s",
			 o->type == OPT_TTL && strcmp(o->name, "ttl") != 0 ? ", or inherit"
									 : "");
		return;
	case OPT_COUNT:
		snprintf(buf, size, "%llu..%llu", (unsigned long long)o->min,
			 (unsigned long long)o->max);
		return;
	case OPT_BYTES:
		format_bytes(o->min, lo, sizeof(lo));
		format_bytes(o->max, hi, sizeof(hi));
		snprintf(buf, size, "%s..%s bytes", lo, hi);
		return;
	case OPT_RATE:
		snprintf(buf, size, "0.0001..%llu per s", (unsigned long long)o->max);
		return;
	case OPT_RATE_OFF:
		snprintf(buf, size, "0.0001..%llu per s, or off", (unsigned long long)o->max);
		return;
	case OPT_FLAG:
		snprintf(buf, size, "true or false");
		return;
	default:
		buf[0] = '\0';
		return;
	}
}

void config_usage(FILE *out, const char *argv0)
{
	fprintf(out,
		"Usage: %s [OPTIONS]\n"
		"A caching gateway for GET /api/public/contacts.\n\n"
		"Options (each also a config-file key, without the dashes):\n",
		argv0);
	for (size_t i = 0; i < N_OPTS; i++) {
		char flag[64], bounds[80];

		snprintf(flag, sizeof(flag), "--%s%s%s", opts[i].name,
			 opts[i].metavar[0] ? " " : "", opts[i].metavar);
		format_bounds(&opts[i], bounds, sizeof(bounds));
		fprintf(out, "  %-32s %s", flag, opts[i].help);
		if (bounds[0] != '\0')
			fprintf(out, " [%s]", bounds);
		if (opts[i].def[0] != '\0')
			fprintf(out, " [default: %s]", opts[i].def);
		fputc('\n', out);
	}
	fprintf(out, "\nOther flags:\n");
	for (size_t i = 0; i < N_ACTIONS; i++)
		fprintf(out, "  %-32s %s\n", actions[i].flags, actions[i].help);
	fprintf(out,
		"\nDurations (MS, SECONDS) take a unit: 500ms, 30s, 5m, 1h, 1d; a bare\n"
		"number is in the unit the option names. BYTES take K, M, G. A flag\n"
		"without a value may be followed by true or false.\n"
		"Bad options or values exit with status 2.\n");
	fprintf(out, "Cache tools (stats, list, purge, export, import): %s cache --help\n", argv0);
}

/* Writes `s` as roff text: backslashes and hyphens escaped, no control line. */
static void roff_text(FILE *out, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", out);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '-')
			fputs("\\-", out);
		else
			fputc(*s, out);
	}
}

void config_manpage_options(FILE *out)
{
	for (size_t i = 0; i < N_OPTS; i++) {
		char bounds[80];

		fputs(".TP\n\\fB", out);
		roff_text(out, "--");
		roff_text(out, opts[i].name);
		fputs("\\fR", out);
		if (opts[i].metavar[0] != '\0') {
			fputs(" \\fI", out);
			roff_text(out, opts[i].metavar);
			fputs("\\fR", out);
		}
		fputc('\n', out);
		roff_text(out, opts[i].help);
		fputs(".\n", out);
		format_bounds(&opts[i], bounds, sizeof(bounds));
		if (bounds[0] != '\0') {
			fputs("Range: ", out);
			roff_text(out, bounds);
			fputs(".\n", out);
		}
		if (opts[i].def[0] != '\0') {
			fputs("Default: ", out);
			roff_text(out, opts[i].def);
			fputs(".\n", out);
		}
	}
	for (size_t i = 0; i < N_ACTIONS; i++) {
		fputs(".TP\n\\fB", out);
		roff_text(out, actions[i].flags);
		fputs("\\fR\n", out);
		roff_text(out, actions[i].help);
		fputs(".\n", out);
	}
}

void config_redact_url(const char *url, char *out, size_t out_size)
{
	const char *auth = strstr(url, "://");
	const char *at = NULL;
	size_t end;

	if (out_size == 0)
		return;
	auth = auth ? auth + 3 : url;
	/* the last '@' before any query or fragment: a password with a raw
	 * '/' in it must not escape (over-redacting a path is harmless) */
	end = (size_t)(auth - url) + strcspn(auth, "?#");
	for (const char *c = auth; c < url + end; c++)
		if (*c == '@')
			at = c;
	if (at == NULL)
		snprintf(out, out_size, "%s", url);
	else
		snprintf(out, out_size, "%.*s***%s", (int)(auth - url), url, at);
}
