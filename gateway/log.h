/*
 * cglog: the gateway's diagnostic log, one line per event on stderr.
 *
 * Lines look like `2026-11-24T04:10:00.123Z info listening on 127.0.0.1:8080`.
 * The level is process-wide and set once at start (and on reload later).
 * Never log an API key: callers log key hashes only.
 */
#ifndef CG_GATEWAY_LOG_H
#define CG_GATEWAY_LOG_H

enum cglog_level {
	CGLOG_ERROR = 0,
	CGLOG_WARN,
	CGLOG_INFO,
	CGLOG_DEBUG,
};

/* Sets the most verbose level written; lines above it are dropped. */
void cglog_set_level(enum cglog_level level);

/* Lines as JSON objects {"time","level","msg"} (1) or text (0). */
void cglog_set_json(int json);

/* Routes libevent's own warnings through cglog (once, at start). */
void cglog_capture_libevent(void);

/* Returns 1 if a line at `level` would be written (guards costly arguments). */
int cglog_enabled(enum cglog_level level);

/* Parses "error", "warn", "info" or "debug". Returns 0 and sets *out, or -1. */
int cglog_parse_level(const char *name, enum cglog_level *out);

/* Writes one line at `level`; printf-style. */
void cglog(enum cglog_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
