/*
 * tool: `contacts-gateway cache COMMAND`, the operator's tools on a cache
 * directory (stats, list, purge, export, import, check, recover). They open the store beside
 * a running gateway or without one: LMDB serialises writers across
 * processes, and the tools never take the gateway's lock (STORE_EXCLUSIVE).
 * Every command but import refuses a directory that holds no store; all
 * but check and recover refuse a damaged or truncated one (store_open's
 * checks). check and recover read data.mdb defensively (store_salvage):
 * no length or content of the file crashes them.
 *
 * Exit status: 0 success, 1 partial failure (an import line skipped, an
 * entry that could not be deleted or written), 2 bad usage or an unusable
 * directory or file. Messages go to stderr as "contacts-gateway cache: ...".
 * docs/operations.md describes each command and the export format.
 */
#ifndef CG_CACHE_TOOL_H
#define CG_CACHE_TOOL_H

/* The cache directory when --cache-dir is not given: the gateway's own
 * default (the "cache-dir" row of gateway/config.c; keep them equal). */
#define CACHE_TOOL_DEFAULT_DIR "cache-data"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache/store.h"

/* Which entries a purge (or a listing) takes; the conditions combine with
 * AND; `all` takes everything, corrupt records included. */
struct cache_filter {
	const char *hash;   /* lower-case hex prefix of the key hash, or NULL */
	size_t hash_len;
	const char *prefix; /* canonical query prefix, or NULL */
	size_t prefix_len;
	int expired;        /* only entries past their freshness */
	int all;
	int64_t now;        /* set by cache_purge */
};

/*
 * Deletes the entries `f` takes from an open store, in scans of bounded
 * batches (an entry stored after its batch's scan is left). With `expired`,
 * each is checked again just before its delete, so one refreshed meanwhile
 * stays. Returns 0, or -1 if the store could not be read or some entries
 * could not be deleted (*failed counts them); *deleted either way.
 */
int cache_purge(struct store *st, struct cache_filter *f, uint64_t *deleted,
		uint64_t *failed);

/* An export's entry line, checked by cache_parse_line. body is malloc'd
 * (the caller frees it); the rest is held in place. */
struct cache_import_entry {
	uint8_t keyhash[STORE_KEYHASH_LEN];
	char query[STORE_QUERY_MAX];
	size_t query_len;
	char ctype[STORE_CTYPE_MAX];
	size_t ctype_len;
	int64_t stored_ms, expires_ms;
	uint64_t etag;
	uint8_t *body;
	size_t body_len;
};

enum cache_line {
	CACHE_LINE_ENTRY, /* *ie filled: every field checked, the ETag against the body */
	CACHE_LINE_END,   /* the end line; *end_entries its count, -1 if malformed */
	CACHE_LINE_BAD,   /* not an entry: *why says why */
};

/*
 * Parses one line of an export after its header (import's parser): buf
 * need not be NUL-terminated. With CACHE_LINE_ENTRY the caller frees
 * ie->body; otherwise ie->body is NULL. *why is NULL for a good line,
 * else a static sentence (a malformed end line is CACHE_LINE_END with a
 * why). Bodies longer than max_body are refused.
 */
enum cache_line cache_parse_line(const char *buf, size_t len, uint64_t max_body,
				 struct cache_import_entry *ie, int64_t *end_entries,
				 const char **why);

/* Why export cannot write e so that import reads it back exactly (a NUL
 * in its strings, times past 2^53), or NULL when it can. */
const char *cache_export_refuses(const struct store_entry *e);

/* Writes e as one export entry line, '\n' included (the format in
 * docs/operations.md). Check cache_export_refuses first. */
void cache_export_line(FILE *out, const struct store_entry *e);

/*
 * Runs one cache command. argv[0] is "cache", argv[1] the command and the
 * rest its options, as given after `contacts-gateway`. Borrows argv; reads
 * stdin only for `import -` and --key-stdin. Returns the exit status.
 */
int cache_tool_main(int argc, char **argv);

#endif
