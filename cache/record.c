/*
 * record: see record.h.
 *
 * Layout, little-endian, no padding (read with memcpy: LMDB gives no
 * alignment guarantee):
 *
 *   0  u32 magic "CGR1"     4  u16 version (1)    6  u16 flags (0)
 *   8  i64 stored_ms       16  i64 expires_ms    24  u64 etag
 *  32  u8[32] key hash     64  u32 query_len     68  u32 ctype_len
 *  72  u64 body_len        80  query, ctype, body bytes
 *  then, for each representation whose bit is set in flags (bit ENC_GZIP,
 *  ENC_BR, ENC_ZSTD of policy/encoding.h, in that order): u64 length, bytes
 *  (flags bits 8-10: the derive rule that made the answer from another,
 *  store_entry.derived; none for the vendor's own)
 *  end-8  u64 XXH3-64 of every byte before it
 *
 * A record verifies when its size is exactly 88 + the three lengths + the
 * representations' (8 + length each), magic and version match, flags holds
 * no unknown bit, the lengths are within the store's bounds, and
 * the checksum matches. The id is not stored in the record, but the key
 * hash and query are, and a decode with an id checks that they hash to it,
 * so a record can never answer for another key.
 */
#include "cache/record.h"

#include "policy/encoding.h"

#include <string.h>
#include <xxhash.h>

#define RECORD_MAGIC 0x31524743u /* "CGR1" little-endian */
#define RECORD_VERSION 1
#define RECORD_ENC_FLAGS (ENC_BIT(ENC_GZIP) | ENC_BIT(ENC_BR) | ENC_BIT(ENC_ZSTD))
#define RECORD_DERIVED_SHIFT 8
#define RECORD_DERIVED_FLAGS ((uint16_t)(STORE_DERIVED_MASK << RECORD_DERIVED_SHIFT))

static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

size_t record_size(const struct store_entry *e)
{
	const size_t big = SIZE_MAX / 8; /* far below any sum overflowing */
	size_t size;

	if (e->query_len > STORE_QUERY_MAX || e->content_type_len > STORE_CTYPE_MAX ||
	    e->body_len > big)
		return 0;
	if (e->derived & ~STORE_DERIVED_MASK)
		return 0;
	size = RECORD_HEAD_LEN + e->query_len + e->content_type_len + e->body_len +
	       RECORD_TAIL_LEN;
	for (int k = ENC_GZIP; k < ENC_N; k++) {
		if (e->enc[k].len == 0)
			continue;
		if (e->enc[k].len > big)
			return 0;
		size += 8 + e->enc[k].len;
	}
	return size;
}

void record_write(uint8_t *p, const struct store_entry *e)
{
	uint8_t *start = p;
	size_t size = record_size(e);
	uint16_t flags = 0;

	for (int k = ENC_GZIP; k < ENC_N; k++)
		if (e->enc[k].len)
			flags |= (uint16_t)ENC_BIT(k);
	flags |= (uint16_t)(e->derived << RECORD_DERIVED_SHIFT);
	put_u32(p, RECORD_MAGIC);
	put_u16(p + 4, RECORD_VERSION);
	put_u16(p + 6, flags);
	put_u64(p + 8, (uint64_t)e->stored_ms);
	put_u64(p + 16, (uint64_t)e->expires_ms);
	put_u64(p + 24, e->etag);
	memcpy(p + 32, e->keyhash, STORE_KEYHASH_LEN);
	put_u32(p + 64, (uint32_t)e->query_len);
	put_u32(p + 68, (uint32_t)e->content_type_len);
	put_u64(p + 72, (uint64_t)e->body_len);
	p += RECORD_HEAD_LEN;
	if (e->query_len)
		memcpy(p, e->query, e->query_len);
	p += e->query_len;
	if (e->content_type_len)
		memcpy(p, e->content_type, e->content_type_len);
	p += e->content_type_len;
	if (e->body_len)
		memcpy(p, e->body, e->body_len);
	p += e->body_len;
	for (int k = ENC_GZIP; k < ENC_N; k++) {
		if (e->enc[k].len == 0)
			continue;
		put_u64(p, (uint64_t)e->enc[k].len);
		memcpy(p + 8, e->enc[k].p, e->enc[k].len);
		p += 8 + e->enc[k].len;
	}
	put_u64(p, XXH3_64bits(start, size - RECORD_TAIL_LEN));
}

enum store_status record_decode(const void *rec, size_t size, const uint8_t *id,
				struct store_entry *e)
{
	return record_decode_how(rec, size, id, e, 1);
}

enum store_status record_decode_how(const void *rec, size_t size, const uint8_t *id,
				    struct store_entry *e, int verify)
{
	const uint8_t *p = rec, *at;
	uint8_t check_id[STORE_ID_LEN];
	uint64_t body_len;
	uint32_t query_len, ctype_len;
	uint16_t flags;
	size_t left;

	if (size < RECORD_HEAD_LEN + RECORD_TAIL_LEN || get_u32(p) != RECORD_MAGIC ||
	    get_u16(p + 4) != RECORD_VERSION)
		return STORE_CORRUPT;
	flags = get_u16(p + 6);
	if (flags & ~(RECORD_ENC_FLAGS | RECORD_DERIVED_FLAGS))
		return STORE_CORRUPT;
	query_len = get_u32(p + 64);
	ctype_len = get_u32(p + 68);
	body_len = get_u64(p + 72);
	/* every length is checked against what is left before it is used, so
	 * no sum or difference can wrap */
	left = size - RECORD_HEAD_LEN - RECORD_TAIL_LEN;
	if (query_len > STORE_QUERY_MAX || ctype_len > STORE_CTYPE_MAX ||
	    left < (size_t)query_len + ctype_len)
		return STORE_CORRUPT;
	left -= (size_t)query_len + ctype_len;
	if (body_len > left)
		return STORE_CORRUPT;
	left -= (size_t)body_len;
	at = p + RECORD_HEAD_LEN + query_len + ctype_len + body_len;
	memset(e->enc, 0, sizeof(e->enc));
	for (int k = ENC_GZIP; k < ENC_N; k++) {
		uint64_t len;

		if (!(flags & ENC_BIT(k)))
			continue;
		if (left < 8)
			return STORE_CORRUPT;
		len = get_u64(at);
		if (len == 0 || len > left - 8)
			return STORE_CORRUPT;
		e->enc[k].p = at + 8;
		e->enc[k].len = (size_t)len;
		at += 8 + len;
		left -= 8 + (size_t)len;
	}
	if (left != 0)
		return STORE_CORRUPT;
	if (verify &&
	    XXH3_64bits(p, size - RECORD_TAIL_LEN) != get_u64(p + size - RECORD_TAIL_LEN))
		return STORE_CORRUPT;
	e->stored_ms = (int64_t)get_u64(p + 8);
	e->expires_ms = (int64_t)get_u64(p + 16);
	e->etag = get_u64(p + 24);
	e->derived = (flags & RECORD_DERIVED_FLAGS) >> RECORD_DERIVED_SHIFT;
	memcpy(e->keyhash, p + 32, STORE_KEYHASH_LEN);
	e->query = (const char *)p + RECORD_HEAD_LEN;
	e->query_len = query_len;
	e->content_type = e->query + query_len;
	e->content_type_len = ctype_len;
	e->body = e->content_type + ctype_len;
	e->body_len = (size_t)body_len;
	if (id != NULL && verify) {
		store_entry_id(e->keyhash, e->query, e->query_len, check_id);
		if (memcmp(check_id, id, STORE_ID_LEN) != 0)
			return STORE_CORRUPT;
	}
	return STORE_OK;
}

int record_peek_stored(const void *rec, size_t size, int64_t *stored_ms)
{
	const uint8_t *p = rec;

	if (size < RECORD_HEAD_LEN || get_u32(p) != RECORD_MAGIC)
		return 0;
	*stored_ms = (int64_t)get_u64(p + 8);
	return 1;
}
