/*
 * fuzz_import_line: cache/tool.c's cache_parse_line, import's reading of
 * one export line.
 *
 * Properties: an entry line comes back with every bound kept (query 1..4096
 * bytes, type <= 256, body <= max_body, the ETag equal to the body's
 * XXH3-64), only from a line with no raw control byte (an export writes
 * none, and cJSON would let a raw NUL cut a string short); and it
 * round-trips: written again by export's line writer and parsed, it gives
 * the same fields, byte for byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cache/tool.h"

#define MAX_BODY (64 * 1024)

static void to_entry(const struct cache_import_entry *ie, struct store_entry *e)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->keyhash, ie->keyhash, STORE_KEYHASH_LEN);
	e->query = ie->query;
	e->query_len = ie->query_len;
	e->content_type = ie->ctype;
	e->content_type_len = ie->ctype_len;
	e->stored_ms = ie->stored_ms;
	e->expires_ms = ie->expires_ms;
	e->etag = ie->etag;
	e->body = ie->body;
	e->body_len = ie->body_len;
}

static int same(const struct cache_import_entry *a, const struct cache_import_entry *b)
{
	return memcmp(a->keyhash, b->keyhash, STORE_KEYHASH_LEN) == 0 &&
	       a->query_len == b->query_len && memcmp(a->query, b->query, a->query_len) == 0 &&
	       a->ctype_len == b->ctype_len && memcmp(a->ctype, b->ctype, a->ctype_len) == 0 &&
	       a->stored_ms == b->stored_ms && a->expires_ms == b->expires_ms &&
	       a->etag == b->etag && a->body_len == b->body_len &&
	       (a->body_len == 0 || memcmp(a->body, b->body, a->body_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cache_import_entry a, b;
	struct store_entry e;
	int64_t end = 0;
	const char *why;
	enum cache_line k = cache_parse_line((const char *)data, size, MAX_BODY, &a, &end, &why);

	if (k != CACHE_LINE_ENTRY) {
		if (a.body != NULL || (k == CACHE_LINE_BAD && why == NULL))
			abort();
		return 0;
	}
	if (why != NULL || a.query_len < 1 || a.query_len > STORE_QUERY_MAX ||
	    a.ctype_len > STORE_CTYPE_MAX || a.body_len > MAX_BODY ||
	    XXH3_64bits(a.body, a.body_len) != a.etag)
		abort();
	for (size_t i = 0; i < size; i++)
		if (data[i] < 0x20 && data[i] != '\t' && data[i] != '\r')
			abort();
	to_entry(&a, &e);
	if (cache_export_refuses(&e) == NULL) {
		char *line = NULL;
		size_t len = 0;
		FILE *out = open_memstream(&line, &len);

		if (out == NULL)
			abort();
		cache_export_line(out, &e);
		fclose(out);
		if (len == 0 || line[len - 1] != '\n')
			abort();
		if (cache_parse_line(line, len - 1, MAX_BODY, &b, &end, &why) != CACHE_LINE_ENTRY ||
		    !same(&a, &b))
			abort();
		free(b.body);
		free(line);
	}
	free(a.body);
	a.body = NULL;
	return 0;
}
