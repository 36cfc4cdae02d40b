/*
 * fuzz_record: cache/record.c's record_decode, the check every stored
 * answer passes before it is served.
 *
 * Input: a mode byte, then record bytes. Mode bit 1 rewrites the checksum
 * to match (so the other checks are reached); bit 2 asks for the record's
 * own entry id (so the id check passes). Properties:
 *   - a record decodes iff it is exactly what record_write makes for the
 *     entry it decodes to (re-encoding gives the same bytes), every pointer
 *     inside it; with the checksum made right and the fields well-formed it
 *     must decode (no false refusal);
 *   - mode bit 4: a record written from the input's bytes, with one bit
 *     flipped (chosen by the input), is refused: a damaged record is never
 *     decoded as valid.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cache/record.h"

static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Would record_decode accept p (checksum aside)? Written from the layout,
 * not from record.c. */
static int well_formed(const uint8_t *p, size_t n)
{
	uint64_t q, c;

	if (n < 88 || get32(p) != 0x31524743u || p[4] != 1 || p[5] != 0 || p[6] || p[7])
		return 0;
	q = get32(p + 64);
	c = get32(p + 68);
	return q <= STORE_QUERY_MAX && c <= STORE_CTYPE_MAX && q + c <= n - 88 &&
	       get64(p + 72) == n - 88 - q - c;
}

static void own_id(const uint8_t *p, size_t n, uint8_t id[STORE_ID_LEN])
{
	uint32_t q = get32(p + 64);

	if (n < 88 || q > n - 88)
		q = 0;
	store_entry_id(p + 32, (const char *)p + 80, q, id);
}

static void check_decoded(const uint8_t *rec, size_t n, const struct store_entry *e)
{
	uint8_t *again;

	if (record_size(e) != n || XXH3_64bits(rec, n - 8) != get64(rec + n - 8))
		abort();
	if ((const uint8_t *)e->query < rec || (const uint8_t *)e->body + e->body_len > rec + n)
		abort();
	if ((again = malloc(n)) == NULL)
		abort();
	record_write(again, e);
	if (memcmp(again, rec, n) != 0)
		abort();
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t mode, id[STORE_ID_LEN], *rec;
	struct store_entry e;
	size_t n;
	enum store_status s;

	if (size < 1)
		return 0;
	mode = data[0];
	n = size - 1;
	if ((rec = malloc(n ? n : 1)) == NULL)
		abort();
	memcpy(rec, data + 1, n);
	if ((mode & 1) && n >= 8) {
		uint64_t sum = XXH3_64bits(rec, n - 8);

		memcpy(rec + n - 8, &sum, 8);
	}
	if (mode & 2 && n >= 88)
		own_id(rec, n, id);
	s = record_decode(rec, n, (mode & 2) && n >= 88 ? id : NULL, &e);
	if (s == STORE_OK)
		check_decoded(rec, n, &e);
	else if (s != STORE_CORRUPT)
		abort();
	if (s != STORE_OK && well_formed(rec, n) && XXH3_64bits(rec, n - 8) == get64(rec + n - 8))
		abort(); /* a sound record refused */
	free(rec);

	if ((mode & 4) && size >= 40) {
		/* a record from the input's bytes, then one bit flipped */
		struct store_entry w;
		size_t len, bit;

		memset(&w, 0, sizeof(w));
		memcpy(w.keyhash, data + 1, STORE_KEYHASH_LEN);
		memcpy(&w.stored_ms, data + 1, 8);
		memcpy(&w.expires_ms, data + 9, 8);
		w.query = (const char *)data + 33;
		w.query_len = (size - 33) % 64;
		if (w.query_len > size - 33)
			w.query_len = size - 33;
		w.content_type = "application/json";
		w.content_type_len = 16;
		w.body = data + 33 + w.query_len;
		w.body_len = size - 33 - w.query_len;
		w.etag = XXH3_64bits(w.body, w.body_len);
		len = record_size(&w);
		if ((rec = malloc(len)) == NULL)
			abort();
		record_write(rec, &w);
		store_entry_id(w.keyhash, w.query, w.query_len, id);
		if (record_decode(rec, len, id, &e) != STORE_OK)
			abort(); /* what record_write makes decodes */
		memcpy(&bit, data + 17, sizeof(bit) < 8 ? sizeof(bit) : 8);
		bit %= len * 8;
		rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		if (record_decode(rec, len, id, &e) == STORE_OK)
			abort(); /* a damaged record decoded as valid */
		free(rec);
	}
	return 0;
}
