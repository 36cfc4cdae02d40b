/*
 * mdbfile: a defensive reader of an LMDB data file (data.mdb), for the
 * store's checks at open and for `cache check` / `cache recover`.
 *
 * LMDB reads its file through a memory map and trusts every byte of it: a
 * page past the end of a truncated file is a SIGBUS, a damaged page header
 * an out-of-bounds read. This module reads the same file with pread, one
 * page at a time, and checks every page it follows before it looks inside:
 * page number, type, the node table, every node's bounds, overflow runs,
 * tree depth, free-page lists, and that no page is reached twice. It never
 * maps the file, so a short or damaged file cannot crash it: what it cannot
 * read is counted and skipped.
 *
 * The format read is LMDB 0.9's on 64-bit little-endian Linux (Debian 12's
 * liblmdb 0.9.24): 16-byte page headers, 64-bit page numbers, page size the
 * system's. Only what contacts-gateway stores is accepted as intact: no
 * DUPSORT databases, the free database's flags as LMDB sets them.
 *
 * A walk covers one snapshot: the meta page chosen (LMDB's rule: the valid
 * one with the higher transaction id), its free database, its main database
 * and the named databases "meta" and "entries" in it. The caller keeps the
 * snapshot still while it walks (store.c holds an LMDB read transaction of
 * that id, so no writer reuses its pages) or walks a file no writer uses.
 *
 * Ownership: struct mdbfile borrows the fd; a report is a plain value.
 */
#ifndef CG_CACHE_MDBFILE_H
#define CG_CACHE_MDBFILE_H

#include <stddef.h>
#include <stdint.h>

#define MDBFILE_WHY_MAX 200
#define MDBFILE_NONE UINT64_MAX /* LMDB's P_INVALID: an empty tree's root */

struct mdbfile_db {
	uint16_t flags, depth;
	uint64_t entries, root;
};

struct mdbfile_meta {
	int valid; /* 0: `why` says what is wrong with it */
	char why[MDBFILE_WHY_MAX];
	uint32_t psize;
	uint64_t mapsize, last_pg, txnid;
	struct mdbfile_db free_db, main_db;
};

struct mdbfile {
	int fd;         /* borrowed, open for reading */
	uint64_t size;  /* bytes, at mdbfile_open */
	uint32_t psize; /* the system's page size: the only one accepted */
	uint64_t pages; /* whole pages in the file */
	struct mdbfile_meta meta[2];
};

/* What a walk found. Counts are of pages unless named otherwise. */
struct mdbfile_report {
	uint64_t pages_read;   /* branch, leaf and overflow pages checked */
	uint64_t missing;      /* pages the trees refer to past the end of the file */
	uint64_t damaged;      /* pages or nodes that failed a check (skipped) */
	uint64_t needed_pages; /* highest page the trees refer to, plus one */
	uint64_t values;       /* "entries" values handed to the callback */
	int has_entries;       /* the "entries" database was found */
	char first[MDBFILE_WHY_MAX]; /* the first problem, in words; "" if none */
};

/*
 * Reads the file's size and both meta pages. Returns the index (0 or 1) of
 * the meta page LMDB would use (the valid one with the higher transaction
 * id), or -1 if neither is valid (f->meta[i].why say why; a file shorter
 * than two pages has no valid meta).
 */
int mdbfile_open(struct mdbfile *f, int fd);

/* Called for each value of the "entries" database, with pointers valid for
 * the call only. Returns 0 to go on, non-zero to stop the walk. */
typedef int (*mdbfile_value_fn)(const uint8_t *key, size_t key_len, const uint8_t *val,
				size_t val_len, void *arg);

/*
 * Walks the snapshot of meta page `which`: every page of every tree (the
 * free list's page numbers too), and with fn non-NULL reads each "entries"
 * value in full and hands it to fn. Fills `r`. Returns 0 when the snapshot
 * is whole and sound (no page missing or damaged), else -1; a walk stopped
 * by fn returns 0 with what it had found so far.
 */
int mdbfile_walk(struct mdbfile *f, int which, mdbfile_value_fn fn, void *arg,
		 struct mdbfile_report *r);

#endif
