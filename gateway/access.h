/*
 * access: the access log, one JSON object per line per answered request
 * (--access-log PATH, "-" for stdout).
 *
 * Fields, in this order: time (RFC 3339, ms, UTC, when answered),
 * request_id, method, path, query (the canonical query, or the raw one,
 * escaped, when it was refused), code, cache, bytes (body bytes sent),
 * duration_ms, upstream_ms and upstream_code (null when the vendor was not
 * asked for this request), key_id (the first 12 hex digits of
 * SHA-256(key), as the cache tools print it; null without a key), caller
 * (the --caller-header value, sanitised; null without one), client (the
 * peer's address). Never the raw key, never another header's value.
 *
 * Writing never holds a loop on the log: each front loop appends lines to
 * its own buffer (ACCESS_BUF bytes) and writes it out with one write(2) of
 * whole lines when it is three-quarters full, on the loop's tick (four
 * times a second) and at exit; one write of whole lines at a time is what
 * keeps lines of different loops from interleaving (an O_APPEND file takes
 * each write whole; a pipe, each write of at most PIPE_BUF bytes, so lines
 * are capped at ACCESS_LINE_MAX and pipe writes split at line ends). The
 * main thread reopens the file on SIGHUP/SIGUSR1 by dup2() onto the same
 * descriptor, so the loops never see it change.
 *
 * Threads: an access_log belongs to one loop; the fd is shared.
 */
#ifndef CG_GATEWAY_ACCESS_H
#define CG_GATEWAY_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#define ACCESS_BUF 65536
#define ACCESS_LINE_MAX 4096 /* PIPE_BUF: one line, one atomic pipe write */

/* One answered request. Strings borrowed; NULL where the field is null. */
struct access_rec {
	int64_t time_ms; /* when answered, ms since the epoch */
	const char *request_id;
	const char *method;
	const char *path;
	const char *query;
	int code;
	const char *cache;
	uint64_t bytes;
	double duration_ms;
	double upstream_ms; /* < 0: null */
	int upstream_code;  /* 0: null */
	const char *key_id;
	const char *caller;
	const char *client;
};

struct access_log;

/* A loop's log writing to `fd` (borrowed: the main thread owns it). */
struct access_log *access_log_new(int fd);

/* Writes out what is buffered and frees the log. NULL is a no-op. */
void access_log_free(struct access_log *al);

/* Buffers one line (written out when the buffer fills). */
void access_log_add(struct access_log *al, const struct access_rec *r);

/* Writes out what is buffered. */
void access_log_flush(struct access_log *al);

/* The line for r (with its newline) in out[0..size), NUL-terminated,
 * strings JSON-escaped and cut short so that the line fits. Returns its
 * length. Pure. size must be at least 512. */
size_t access_encode(char *out, size_t size, const struct access_rec *r);

/* The key id: the first 12 hex digits of a key hash (SHA-256). */
void access_key_id(const uint8_t keyhash[32], char out[13]);

#endif
