/*
 * tool: `contacts-gateway cache COMMAND`, the operator's tools on a cache
 * directory (stats, list, purge, export, import). They open the store beside
 * a running gateway or without one: LMDB serialises writers across
 * processes, and the tools never take the gateway's lock (STORE_EXCLUSIVE).
 * Every command but import refuses a directory that holds no store.
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

struct store;

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

/*
 * Runs one cache command. argv[0] is "cache", argv[1] the command and the
 * rest its options, as given after `contacts-gateway`. Borrows argv; reads
 * stdin only for `import -` and --key-stdin. Returns the exit status.
 */
int cache_tool_main(int argc, char **argv);

#endif
