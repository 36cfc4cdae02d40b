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

/*
 * Runs one cache command. argv[0] is "cache", argv[1] the command and the
 * rest its options, as given after `contacts-gateway`. Borrows argv; reads
 * stdin only for `import -` and --key-stdin. Returns the exit status.
 */
int cache_tool_main(int argc, char **argv);

#endif
