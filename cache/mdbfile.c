/*
 * mdbfile: see mdbfile.h.
 *
 * LMDB 0.9 layout, as read here (offsets in bytes, little-endian):
 *   page header (16): u64 pgno, u16 pad, u16 flags, u16 lower, u16 upper
 *                     (an overflow page: u32 page count instead of the two)
 *   branch and leaf pages: u16 node offsets from byte 16 up to `lower`; the
 *                     nodes themselves between `upper` and the page's end
 *   node (8 + key + data): u16 lo, u16 hi, u16 flags, u16 key size, key,
 *                     data. Leaf: data size lo | hi << 16; flag BIGDATA: the
 *                     data is a u64 overflow page number, SUBDATA: a 48-byte
 *                     database record. Branch: child page lo | hi << 16 |
 *                     flags << 32.
 *   meta page (pages 0 and 1), after the header: u32 magic 0xBEEFC0DE,
 *                     u32 version 1, u64 address, u64 map size, the free and
 *                     main database records (48 bytes each; the free one's
 *                     first u32 is the page size), u64 last page, u64 txnid.
 *   database record (48): u32 pad, u16 flags, u16 depth, u64 branch, leaf
 *                     and overflow page counts, u64 entries, u64 root.
 *   free database: key u64 txnid, value a page list: u64 n, n page numbers
 *                     in descending order.
 *
 * The walk is depth-first with recursion bounded by the tree's depth
 * (at most DEPTH_MAX); a bitmap of the file's pages refuses a page reached
 * twice, so damaged branch pages can neither loop nor blow up the walk.
 * What the walk allocates is bounded by the file: one page buffer per
 * level, the bitmap (one bit a page) and one value (at most the file).
 */
#include "cache/mdbfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE_HDR 16
#define NODE_HDR 8
#define META_LEN 136 /* MDB_meta */
#define DB_LEN 48    /* MDB_db */
#define MDB_MAGIC 0xBEEFC0DEu
#define MDB_VERSION 1u
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define F_BIGDATA 0x01
#define F_SUBDATA 0x02
#define MDB_INTEGERKEY 0x08
#define KEY_MAX 511                          /* LMDB's largest key */
#define DEPTH_MAX 31                         /* LMDB's cursor stack is 32 */
#define MAP_MAX ((uint64_t)1 << 40)          /* the largest --cache-size */

enum tree { T_FREE, T_MAIN, T_NAMED };

struct walk {
	struct mdbfile *f;
	const struct mdbfile_meta *m;
	struct mdbfile_report *r;
	uint8_t *seen; /* one bit per page of the file */
	enum tree tree;
	unsigned depth;
	mdbfile_value_fn fn; /* for T_NAMED "entries" only */
	void *arg;
	int stop;
	/* T_MAIN: what the named databases are */
	struct mdbfile_db named_db[2]; /* "meta", "entries" */
	int named_found[2];
};

static uint16_t u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void problem(struct walk *w, int missing, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Counts a problem and keeps the first one's words. */
static void problem(struct walk *w, int missing, const char *fmt, ...)
{
	va_list ap;

	if (missing)
		w->r->missing++;
	else
		w->r->damaged++;
	if (w->r->first[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(w->r->first, sizeof(w->r->first), fmt, ap);
	va_end(ap);
}

static void need(struct walk *w, uint64_t pgno)
{
	if (pgno + 1 > w->r->needed_pages)
		w->r->needed_pages = pgno + 1;
}

/* Reads `len` bytes at `off` in full. 0, or -1 (short or failed). */
static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = 0; /* the end of the file */
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static void parse_db(const uint8_t *p, struct mdbfile_db *db)
{
	db->flags = u16(p + 4);
	db->depth = u16(p + 6);
	db->entries = u64(p + 32);
	db->root = u64(p + 40);
}

static int meta_read(struct mdbfile *f, int i)
{
	struct mdbfile_meta *m = &f->meta[i];
	uint8_t buf[PAGE_HDR + META_LEN];
	const uint8_t *p = buf + PAGE_HDR;

	memset(m, 0, sizeof(*m));
	if ((uint64_t)(i + 1) * f->psize > f->size) {
		snprintf(m->why, sizeof(m->why), "meta page %d is past the end of the file", i);
		return -1;
	}
	if (read_at(f->fd, buf, sizeof(buf), (uint64_t)i * f->psize) != 0) {
		snprintf(m->why, sizeof(m->why), "meta page %d cannot be read: %s", i,
			 errno ? strerror(errno) : "short read");
		return -1;
	}
	m->psize = u32(p + 24);
	m->mapsize = u64(p + 16);
	parse_db(p + 24, &m->free_db);
	parse_db(p + 72, &m->main_db);
	m->last_pg = u64(p + 120);
	m->txnid = u64(p + 128);
	if (!(u16(buf + 10) & P_META) || u32(p) != MDB_MAGIC)
		snprintf(m->why, sizeof(m->why), "meta page %d is not an LMDB meta page", i);
	else if (u32(p + 4) != MDB_VERSION)
		snprintf(m->why, sizeof(m->why), "meta page %d: LMDB format version %u, not %u",
			 i, u32(p + 4), MDB_VERSION);
	else if (m->psize != f->psize)
		snprintf(m->why, sizeof(m->why), "meta page %d: page size %u, not the system's %u",
			 i, m->psize, f->psize);
	else if (m->mapsize > MAP_MAX || m->last_pg < 1 || m->last_pg >= MAP_MAX / f->psize)
		snprintf(m->why, sizeof(m->why),
			 "meta page %d: map size %llu or last page %llu out of range", i,
			 (unsigned long long)m->mapsize, (unsigned long long)m->last_pg);
	else if (m->free_db.flags != MDB_INTEGERKEY || m->main_db.flags != 0)
		snprintf(m->why, sizeof(m->why),
			 "meta page %d: database flags %#x/%#x are not what LMDB sets", i,
			 m->free_db.flags, m->main_db.flags);
	else
		m->valid = 1;
	return m->valid ? 0 : -1;
}

int mdbfile_open(struct mdbfile *f, int fd)
{
	struct stat sb;
	long ps = sysconf(_SC_PAGESIZE);
	int pick = -1;

	memset(f->meta, 0, sizeof(f->meta));
	f->fd = fd;
	f->psize = ps > 0 ? (uint32_t)ps : 4096;
	f->size = 0;
	if (fstat(fd, &sb) == 0 && sb.st_size > 0)
		f->size = (uint64_t)sb.st_size;
	f->pages = f->size / f->psize;
	for (int i = 0; i < 2; i++)
		if (meta_read(f, i) == 0 && (pick < 0 || f->meta[i].txnid > f->meta[pick].txnid))
			pick = i;
	return pick;
}

/* Marks a page as reached; 0, or -1 if it was already (a second path). */
static int mark(struct walk *w, uint64_t pgno)
{
	if (pgno >= w->f->pages)
		return 0; /* past the end: counted as missing by the caller */
	if (w->seen[pgno / 8] & (1u << (pgno % 8)))
		return -1;
	w->seen[pgno / 8] |= (uint8_t)(1u << (pgno % 8));
	return 0;
}

/*
 * Is page pgno one the snapshot may use, and present? 0: go on;
 * -1: a problem, counted (missing or damaged).
 */
static int usable(struct walk *w, uint64_t pgno, uint64_t count, const char *what)
{
	if (pgno < 2 || pgno > w->m->last_pg || count > w->m->last_pg - pgno + 1) {
		problem(w, 0, "%s page %llu is outside the pages in use (2..%llu)", what,
			(unsigned long long)pgno, (unsigned long long)w->m->last_pg);
		return -1;
	}
	need(w, pgno + count - 1);
	if (pgno + count > w->f->pages) {
		problem(w, 1, "%s page %llu is past the end of the file (which holds %llu "
			"whole pages)", what, (unsigned long long)(pgno + count - 1),
			(unsigned long long)w->f->pages);
		return -1;
	}
	for (uint64_t i = 0; i < count; i++)
		if (mark(w, pgno + i) != 0) {
			problem(w, 0, "%s page %llu is reached twice", what,
				(unsigned long long)(pgno + i));
			return -1;
		}
	return 0;
}

static int read_page(struct walk *w, uint64_t pgno, uint8_t *buf)
{
	if (read_at(w->f->fd, buf, w->f->psize, pgno * w->f->psize) != 0) {
		problem(w, 1, "page %llu cannot be read: %s", (unsigned long long)pgno,
			errno ? strerror(errno) : "short read");
		return -1;
	}
	w->r->pages_read++;
	return 0;
}

/* LMDB's key order: bytes, then length; the free database's u64 keys. */
static int key_cmp(const struct walk *w, const uint8_t *a, size_t al, const uint8_t *b,
		   size_t bl)
{
	int c;

	if (w->tree == T_FREE && al == 8 && bl == 8) {
		uint64_t x = u64(a), y = u64(b);

		return (x > y) - (x < y);
	}
	c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : (al > bl) - (al < bl);
}

/*
 * A leaf node's value: in the page, or in an overflow run read into *heap
 * (caller frees) when `want`. Returns 0 with *val and *len set (val NULL when
 * not wanted and not in the page), or -1 (a problem, counted).
 */
static int leaf_value(struct walk *w, const uint8_t *node, size_t room, int want,
		      const uint8_t **val, size_t *len, uint8_t **heap)
{
	uint16_t nflags = u16(node + 4);
	size_t ksize = u16(node + 6), dsize = u16(node) | (size_t)u16(node + 2) << 16;
	uint8_t head[PAGE_HDR];
	uint64_t pgno, pages;

	*val = NULL;
	*len = dsize;
	*heap = NULL;
	if (!(nflags & F_BIGDATA)) {
		if (NODE_HDR + ksize + dsize > room) {
			problem(w, 0, "a node's data runs past its page");
			return -1;
		}
		*val = node + NODE_HDR + ksize;
		return 0;
	}
	if (NODE_HDR + ksize + 8 > room) {
		problem(w, 0, "a node's overflow page number runs past its page");
		return -1;
	}
	pgno = u64(node + NODE_HDR + ksize);
	if (pgno >= 2 && pgno < w->f->pages && read_at(w->f->fd, head, sizeof(head),
							 pgno * w->f->psize) == 0) {
		pages = u32(head + 12);
		if (u64(head) != pgno || u16(head + 10) != P_OVERFLOW || pages == 0 ||
		    (uint64_t)dsize > pages * w->f->psize - PAGE_HDR) {
			problem(w, 0, "overflow page %llu is damaged", (unsigned long long)pgno);
			return -1;
		}
	} else {
		pages = 1;
	}
	if (usable(w, pgno, pages, "overflow") != 0)
		return -1;
	w->r->pages_read += pages;
	if (!want)
		return 0;
	if ((*heap = malloc(dsize ? dsize : 1)) == NULL)
		abort();
	if (read_at(w->f->fd, *heap, dsize, pgno * w->f->psize + PAGE_HDR) != 0) {
		problem(w, 1, "overflow page %llu cannot be read", (unsigned long long)pgno);
		free(*heap);
		*heap = NULL;
		return -1;
	}
	*val = *heap;
	return 0;
}

/* The free database's values: page lists, in range and descending. */
static void free_list(struct walk *w, const uint8_t *val, size_t len)
{
	uint64_t n, prev = UINT64_MAX;

	if (len < 8 || (n = u64(val)) != len / 8 - 1 || len % 8 != 0) {
		problem(w, 0, "a free-page list is malformed");
		return;
	}
	for (uint64_t i = 1; i <= n; i++) {
		uint64_t pgno = u64(val + 8 * i);

		if (pgno < 2 || pgno > w->m->last_pg || pgno >= prev) {
			problem(w, 0, "a free-page list holds page %llu out of order or range",
				(unsigned long long)pgno);
			return;
		}
		prev = pgno;
		if (mark(w, pgno) != 0) {
			problem(w, 0, "page %llu is both free and in use",
				(unsigned long long)pgno);
			return;
		}
	}
}

static void walk_tree(struct walk *w, const struct mdbfile_db *db, enum tree tree);

/* A named database's record in the main database. */
static void named(struct walk *w, const uint8_t *key, size_t ksize, const uint8_t *val,
		  size_t len)
{
	static const char *const names[2] = {"meta", "entries"};

	if (len != DB_LEN) {
		problem(w, 0, "a named database's record is %zu bytes, not %d", len, DB_LEN);
		return;
	}
	for (int i = 0; i < 2; i++)
		if (ksize == strlen(names[i]) && memcmp(key, names[i], ksize) == 0) {
			parse_db(val, &w->named_db[i]);
			w->named_found[i] = 1;
		}
}

static void walk_page(struct walk *w, uint64_t pgno, unsigned level)
{
	uint8_t *page = malloc(w->f->psize);
	const uint8_t *prev_key = NULL;
	size_t prev_len = 0;
	uint16_t flags, lower, upper;
	size_t nkeys;
	int leaf = level == w->depth;

	if (page == NULL)
		abort();
	if (usable(w, pgno, 1, leaf ? "leaf" : "branch") != 0 || read_page(w, pgno, page) != 0)
		goto out;
	flags = u16(page + 10);
	lower = u16(page + 12);
	upper = u16(page + 14);
	if (u64(page) != pgno || flags != (leaf ? P_LEAF : P_BRANCH)) {
		problem(w, 0, "page %llu is not the %s page its parent says", (unsigned long long)pgno,
			leaf ? "leaf" : "branch");
		goto out;
	}
	if (lower < PAGE_HDR + 2 || (lower - PAGE_HDR) % 2 || upper < lower ||
	    upper > w->f->psize) {
		problem(w, 0, "page %llu has a damaged node table", (unsigned long long)pgno);
		goto out;
	}
	nkeys = (size_t)(lower - PAGE_HDR) / 2;
	for (size_t i = 0; i < nkeys && !w->stop; i++) {
		size_t off = u16(page + PAGE_HDR + 2 * i), room, ksize;
		const uint8_t *node = page + off, *key;
		uint16_t nflags;

		if (off < upper || off > w->f->psize - NODE_HDR) {
			problem(w, 0, "page %llu: node %zu lies outside the page",
				(unsigned long long)pgno, i);
			continue;
		}
		room = w->f->psize - off;
		nflags = u16(node + 4);
		ksize = u16(node + 6);
		key = node + NODE_HDR;
		if (ksize > KEY_MAX || NODE_HDR + ksize > room) {
			problem(w, 0, "page %llu: node %zu's key is out of bounds",
				(unsigned long long)pgno, i);
			continue;
		}
		if ((leaf || i > 0) && prev_key && key_cmp(w, prev_key, prev_len, key, ksize) >= 0)
			problem(w, 0, "page %llu: keys out of order", (unsigned long long)pgno);
		if (leaf || i > 0) {
			prev_key = key;
			prev_len = ksize;
		}
		if (!leaf) {
			uint64_t child = u16(node) | (uint64_t)u16(node + 2) << 16 |
					 (uint64_t)nflags << 32;

			walk_page(w, child, level + 1);
			continue;
		}
		if (nflags & ~(F_BIGDATA | F_SUBDATA) ||
		    ((nflags & F_SUBDATA) && (w->tree != T_MAIN || (nflags & F_BIGDATA)))) {
			problem(w, 0, "page %llu: node %zu has flags %#x (not used here)",
				(unsigned long long)pgno, i, nflags);
			continue;
		}
		{
			const uint8_t *val;
			size_t len;
			uint8_t *heap;
			int want = w->tree == T_FREE || w->tree == T_MAIN || w->fn != NULL;

			if (leaf_value(w, node, room, want, &val, &len, &heap) != 0)
				continue;
			if (w->tree == T_FREE)
				free_list(w, val, len);
			else if (w->tree == T_MAIN && (nflags & F_SUBDATA))
				named(w, key, ksize, val, len);
			else if (w->fn != NULL) {
				w->r->values++;
				if (w->fn(key, ksize, val, len, w->arg) != 0)
					w->stop = 1;
			}
			free(heap);
		}
	}
out:
	free(page);
}

static void walk_tree(struct walk *w, const struct mdbfile_db *db, enum tree tree)
{
	w->tree = tree;
	if (db->root == MDBFILE_NONE) {
		if (db->depth != 0)
			problem(w, 0, "an empty database has depth %u", db->depth);
		return;
	}
	if (db->depth < 1 || db->depth > DEPTH_MAX) {
		problem(w, 0, "a database's depth %u is out of range", db->depth);
		return;
	}
	w->depth = db->depth;
	walk_page(w, db->root, 1);
}

int mdbfile_walk(struct mdbfile *f, int which, mdbfile_value_fn fn, void *arg,
		 struct mdbfile_report *r)
{
	struct walk w;

	memset(r, 0, sizeof(*r));
	memset(&w, 0, sizeof(w));
	w.f = f;
	w.r = r;
	if (which < 0 || which > 1 || !f->meta[which].valid) {
		snprintf(r->first, sizeof(r->first), "no valid meta page");
		r->damaged = 1;
		return -1;
	}
	w.m = &f->meta[which];
	r->needed_pages = 2;
	if ((w.seen = calloc(f->pages / 8 + 1, 1)) == NULL)
		abort();
	walk_tree(&w, &w.m->free_db, T_FREE);
	walk_tree(&w, &w.m->main_db, T_MAIN);
	for (int i = 0; i < 2 && !w.stop; i++) {
		if (!w.named_found[i])
			continue;
		if (w.named_db[i].flags != 0) {
			problem(&w, 0, "the %s database has flags %#x (not used here)",
				i ? "entries" : "meta", w.named_db[i].flags);
			continue;
		}
		w.fn = i == 1 ? fn : NULL;
		w.arg = arg;
		walk_tree(&w, &w.named_db[i], T_NAMED);
	}
	r->has_entries = w.named_found[1];
	free(w.seen);
	return r->missing || r->damaged ? -1 : 0;
}
