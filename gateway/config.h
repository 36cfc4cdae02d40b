/*
 * config: the gateway's settings, from defaults, a config file and flags.
 *
 * One table in config.c names every setting once: its flag (`--name`), its
 * config-file key (`name`), its type, bounds, default and help line. Flags,
 * the file and `--help` all read that table, so they cannot disagree.
 *
 * Precedence: defaults < config file (`--config FILE`) < command-line flags,
 * whatever the order of the flags. A value is checked when it is set; a
 * struct cg_config that came back CONFIG_OK is complete and within bounds.
 */
#ifndef CG_GATEWAY_CONFIG_H
#define CG_GATEWAY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gateway/log.h"

#define CONFIG_HOST_MAX 256
#define CONFIG_URL_MAX 1024
#define CONFIG_PATH_MAX 1024
#define CONFIG_LINE_MAX 4096 /* longest config-file line */
#define CONFIG_ERR_MAX 512   /* error buffers passed in should be this big */

struct cg_config {
	char config_path[CONFIG_PATH_MAX]; /* "" when no file was given */
	char listen_host[CONFIG_HOST_MAX];
	unsigned listen_port;          /* 0: an ephemeral port */
	char upstream[CONFIG_URL_MAX]; /* base URL, no trailing '/' */
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
};

enum config_status {
	CONFIG_OK = 0,
	CONFIG_HELP,    /* --help was asked: print config_usage, exit 0 */
	CONFIG_VERSION, /* --version was asked: exit 0 */
	CONFIG_ERROR,   /* err holds one line for the user: exit 2 */
};

/* Fills every setting with its default. */
void config_defaults(struct cg_config *cfg);

/*
 * Applies argv[first..argc-1] over the defaults: first the file named by
 * --config (if any), then every other flag. Flags are `--name value` or
 * `--name=value`. On CONFIG_ERROR, `err` (err_size bytes) says what is wrong
 * in one line without a trailing newline. Borrows argv.
 */
enum config_status config_from_args(struct cg_config *cfg, int argc,
				    char *const argv[], int first, char *err,
				    size_t err_size);

/* Sets one setting by its name (no dashes). Returns 0, or -1 with err set. */
int config_set(struct cg_config *cfg, const char *name, const char *value,
	       char *err, size_t err_size);

/*
 * Reads `key = value` lines from `path` ('#' starts a comment line; blank
 * lines are skipped). Returns 0, or -1 with err naming the file and line.
 */
int config_load_file(struct cg_config *cfg, const char *path, char *err,
		     size_t err_size);

/* Prints the usage text, every option with its default, to `out`. */
void config_usage(FILE *out, const char *argv0);

#endif
