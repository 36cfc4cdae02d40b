/*
 * repr: the compressed representations of a body (gzip, br, zstd), made
 * once when an answer is stored and kept beside it (store_entry.enc), so
 * that a hit never compresses: each client gets the best representation it
 * accepts (policy/encoding) straight from the map.
 *
 * Levels, chosen by measurement on a 562 KB answer of the simulator's
 * (tools: bench/compress; one core of this machine):
 *   gzip 6   117 KB (20.8 %)  7.8 ms   (level 1: 25 %, 5.6 ms; 9: 19.8 %, 19 ms)
 *   br 4     ~112 KB (~20 %)  ~7 ms    (quality 1: 21.9 %, 1.4 ms; 5: 19.4 %, 12 ms)
 *   zstd 3   116 KB (20.7 %)  2.2 ms   (level 1: 20.0 %, 1.0 ms; 11: 18 %, 14 ms)
 * A representation that comes out no smaller than the body is not kept;
 * bodies under a floor (--compress-min-bytes) get none.
 *
 * Pure of I/O; allocates the outputs (freed by repr_free).
 */
#ifndef CG_CACHE_REPR_H
#define CG_CACHE_REPR_H

#include <stddef.h>

#include "cache/store.h"

#define REPR_GZIP_LEVEL 6
#define REPR_BR_QUALITY 4
#define REPR_ZSTD_LEVEL 3

struct repr_set {
	unsigned char *buf[STORE_ENC_N]; /* owned; NULL: not made */
	size_t len[STORE_ENC_N];
};

/* Makes the representations in `mask` (ENC_BIT of policy/encoding.h) of
 * body[0..len) if len >= min_bytes. Never fails: a coding that cannot be
 * made (out of memory in the library) is left out. */
void repr_make(const void *body, size_t len, unsigned mask, size_t min_bytes,
	       struct repr_set *out);

/* Points e->enc at the representations (borrowed from r). */
void repr_attach(const struct repr_set *r, struct store_entry *e);

/* Frees what repr_make made. */
void repr_free(struct repr_set *r);

/* Decodes a gzip representation into out[0..*len) (size out_size); for
 * checks (the tests, the cache tools). Returns 0, or -1 if it is not
 * valid gzip or does not fit. */
int repr_gunzip(const void *gz, size_t gz_len, void *out, size_t out_size, size_t *len);

#endif
