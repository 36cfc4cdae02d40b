/*
 * config: the gateway's settings, from defaults, a config file and flags.
 *
 * One table in config.c names every setting once: its flag (`--name`), its
 * config-file key (`name`), its type, bounds, default and help line. Flags,
 * the file and `--help` all read that table, so they cannot disagree.
 *
 * Precedence: defaults < config file (`--config FILE`) < command-line flags,
 * whatever the order of the flags. A value is checked when it is set; a
 * struct cg_config that came back CONFIG_OK (or CONFIG_CHECK) is complete and
 * within bounds. What needs the system to be checked (can the listen host be
 * resolved, can the cache directory be made) is gateway/startup.c's job.
 *
 * Value syntax: durations are whole numbers with an optional unit (`500ms`,
 * `30s`, `5m`, `1h`, `1d`; a bare number is in the option's documented unit,
 * ms or s); sizes take K, M, G; flags take an optional true/false word.
 */
#ifndef CG_GATEWAY_CONFIG_H
#define CG_GATEWAY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gateway/log.h"
#include "policy/proxy.h"

#define CONFIG_HOST_MAX 256
#define CONFIG_URL_MAX 1024
#define CONFIG_PATH_MAX 1024
#define CONFIG_LINE_MAX 4096 /* longest config-file line */
#define CONFIG_ERR_MAX 512   /* error buffers passed in should be this big */

#define CONFIG_NAME_MAX 64   /* header names */
#define CONFIG_SECRET_MAX 256 /* the admin token */

/* Bits of cg_config.warn: how a setting was given that deserves a warning. */
#define CONFIG_WARN_TOKEN_ARGV 0x1u /* admin-token on the command line (ps shows it) */
#define CONFIG_WARN_TOKEN_FILE 0x2u /* admin-token in a file others may read */

/* A listening address; host "" means not set (the listener is off). */
struct cg_addr {
	char host[CONFIG_HOST_MAX];
	unsigned port; /* 0: an ephemeral port */
};

struct cg_config {
	char config_path[CONFIG_PATH_MAX]; /* "" when no file was given */
	struct cg_addr listen;
	char upstream[CONFIG_URL_MAX]; /* base URL, no trailing '/'; may hold
				       * user:password@: log config_redact_url() */
	char upstream_ca_file[CONFIG_PATH_MAX]; /* "" : the system's CAs; else a
						 * readable file of PEM CAs for
						 * CURLOPT_CAINFO */
	long upstream_timeout_ms;      /* whole upstream exchange */
	long connect_timeout_ms;       /* upstream TCP+TLS connect */
	long client_timeout_ms;        /* idle/slow client read and write */
	long shutdown_timeout_ms;      /* drain on SIGTERM before giving up */
	long max_connections;          /* client connections served at once */
	long upstream_connections;     /* upstream connections at once */
	uint64_t max_body_bytes;       /* largest upstream body accepted */
	uint64_t max_header_bytes;     /* largest client request head */
	enum cglog_level log_level;
	/* the cache */
	char cache_dir[CONFIG_PATH_MAX];
	uint64_t cache_size;           /* LMDB map size, bytes */
	long cache_sync_ms;            /* fsync period (power-loss window) */
	uint32_t ttl_s;                /* default freshness lifetime */
	uint32_t ttl_cursor_s;         /* or TTL_INHERIT */
	uint32_t ttl_wide_s;           /* or TTL_INHERIT */
	long ttl_wide_days;
	long max_waiters;              /* coalesced requests per upstream fetch */
	/* outages */
	uint32_t stale_while_revalidate_s; /* expired answers served while refreshing */
	uint32_t stale_if_error_s;     /* expired answers served when upstream fails */
	int offline;                   /* never contact the upstream */
	/* upstream protection */
	double upstream_rate;          /* requests/s per API key, sustained */
	long upstream_burst;           /* and at once */
	long upstream_concurrency;     /* upstream requests in progress at once */
	long queue_limit;              /* requests waiting for a token, per key */
	long queue_timeout_ms;         /* longest such wait */
	long upstream_retries;         /* retries of failed idempotent fetches */
	long retry_backoff_ms;         /* first retry's backoff ceiling */
	long breaker_threshold;        /* consecutive failures that open it; 0 off */
	long breaker_cooldown_ms;      /* how long it stays open */
	int offline_when_open;         /* serve as --offline while it is open */
	char caller_header[CONFIG_NAME_MAX]; /* "" : no per-caller quotas */
	double caller_rate;            /* per caller, requests/s */
	long caller_burst;
	/* administration */
	struct cg_addr admin_listen;   /* host "" : no admin listener */
	char admin_token[CONFIG_SECRET_MAX];
	/* observability */
	char instance_name[CONFIG_NAME_MAX]; /* "" : none; else X-Served-By */
	int log_json;                  /* the error log as JSON lines */
	char access_log[CONFIG_PATH_MAX]; /* "" off, "-" stdout */
	long max_callers;              /* caller labels in metrics */
	/* the front end */
	int takeover;                  /* take the listening sockets of the gateway on cache-dir */
	long threads;                  /* front-end loops; 0: one per core */
	long client_header_timeout_ms; /* a whole request head */
	long keepalive_timeout_ms;     /* idle between requests */
	/* compression */
	unsigned compress;             /* ENC_BIT mask of representations stored */
	uint64_t compress_min_bytes;   /* smaller bodies stay identity only */
	/* abuse */
	double new_key_rate;           /* upstream requests/s of never-good keys; 0 off */
	double client_rate;            /* upstream requests/s per client address; 0 off */
	long client_burst;
	struct proxy_nets trusted_proxies; /* peers whose X-Forwarded-For names the client */
	uint32_t unauthorized_ttl_s;   /* a vendor 401 answered locally this long; 0 off */
	/* the economy */
	unsigned derive;               /* enum derive_rule bits: answers derived from stored ones */
	long widen_pages;              /* a page of fewer asked as this many (0 off) */
	int client_no_cache;           /* enum client_no_cache: a client's no-cache */
	uint32_t no_cache_min_age_s;   /* revalidate: younger answers are served as they are */
	/* not a setting: CONFIG_WARN_* bits, for startup_warn() */
	unsigned warn;
};

/* --client-no-cache: what a request's Cache-Control: no-cache (or Pragma:
 * no-cache) does. */
enum client_no_cache {
	CNC_IGNORE = 0,  /* nothing: answered as any request */
	CNC_REVALIDATE,  /* a stored answer younger than no-cache-min-age is served;
			  * an older one is refreshed (coalesced, within the key's
			  * rate) */
	CNC_HONOUR,      /* every such request is refreshed upstream */
};

enum config_status {
	CONFIG_OK = 0,
	CONFIG_HELP,    /* --help was asked: print config_usage, exit 0 */
	CONFIG_VERSION, /* --version, -v or -V was asked: exit 0 */
	CONFIG_CHECK,   /* -t/--check-config: settings complete as for CONFIG_OK;
			 * validate (startup_check), print, exit 0 or 2 */
	CONFIG_ERROR,   /* err holds one line for the user: exit 2 */
};

/* Fills every setting with its default. */
void config_defaults(struct cg_config *cfg);

/*
 * Applies argv[first..argc-1] over the defaults: first the file named by
 * --config (if any), then every other flag. Flags are `--name value` or
 * `--name=value`; a value that starts with `--` is taken as a missing value
 * (`--name=--x` passes one). A boolean flag may be followed by one of true,
 * false, yes, no, on, off, 1, 0. On CONFIG_ERROR, `err` (err_size bytes) says
 * what is wrong in one line without a trailing newline. Borrows argv.
 */
enum config_status config_from_args(struct cg_config *cfg, int argc,
				    char *const argv[], int first, char *err,
				    size_t err_size);

/* Sets one setting by its name (no dashes). Returns 0, or -1 with err set. */
int config_set(struct cg_config *cfg, const char *name, const char *value,
	       char *err, size_t err_size);

/*
 * Reads `key = value` lines from `path` ('#' starts a comment line; blank
 * lines are skipped; a key set twice is an error naming both lines).
 * Returns 0, or -1 with err naming the file and line.
 */
int config_load_file(struct cg_config *cfg, const char *path, char *err,
		     size_t err_size);

/* Prints the usage text, every option with its bounds and default, to `out`. */
void config_usage(FILE *out, const char *argv0);

/*
 * Prints the options as man(7) paragraphs (`.TP` per option, with bounds and
 * default), for the OPTIONS section of contacts-gateway(8): the man page is
 * made from the same table as --help.
 */
void config_manpage_options(FILE *out);

/*
 * Copies `url` into `out` (out_size bytes, always terminated) with the
 * userinfo of its authority (`user:password@`) replaced by `***@`, so a
 * credential in --upstream is never logged. Borrows both.
 */
void config_redact_url(const char *url, char *out, size_t out_size);

#endif
