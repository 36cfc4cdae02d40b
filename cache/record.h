/*
 * record: the bytes of one stored answer, as they lie in the LMDB map.
 * Internal to cache/ (store.c, the salvage in tool.c) and the fuzz suite;
 * the layout is described in record.c.
 *
 * Invariant: record_decode accepts exactly what record_write produces for
 * some entry: a record whose checksum, lengths, magic or version do not
 * verify is refused (STORE_CORRUPT) and nothing of it is handed out.
 */
#ifndef CG_CACHE_RECORD_H
#define CG_CACHE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"

#define RECORD_HEAD_LEN 80
#define RECORD_TAIL_LEN 8

/* Bytes record_write needs for e, or 0 if e breaks a bound (query over
 * STORE_QUERY_MAX, type over STORE_CTYPE_MAX, a size that would overflow). */
size_t record_size(const struct store_entry *e);

/* Writes e as a record into p (record_size(e) bytes), with e->etag as it
 * is (the caller sets it) and the checksum last. Borrows everything. */
void record_write(uint8_t *p, const struct store_entry *e);

/*
 * Checks the record p[0..size) and fills `e` with pointers into it.
 * With `id` non-NULL, the record must also belong to that entry id (its key
 * hash and query hash to it). Returns STORE_OK or STORE_CORRUPT; on
 * STORE_CORRUPT `e` is unspecified.
 */
enum store_status record_decode(const void *p, size_t size, const uint8_t *id,
				struct store_entry *e);

/* record_decode, with verify 0: the layout is checked (lengths, magic,
 * version, flags: nothing outside the record is ever read) but not the
 * checksum nor the id, for a record verified before at the same place
 * (store.c's readers remember those). */
enum store_status record_decode_how(const void *p, size_t size, const uint8_t *id,
				    struct store_entry *e, int verify);

/* The stored_ms of a record that at least has a head with the right magic
 * (store_put_unless_newer's look at the entry it may replace); 0 if not. */
int record_peek_stored(const void *p, size_t size, int64_t *stored_ms);

#endif
