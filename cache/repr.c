/* repr: see repr.h. zlib, libbrotli and libzstd from Debian do the work. */
#include "cache/repr.h"

#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "policy/check.h"
#include "policy/encoding.h"

static unsigned char *gzip_of(const void *body, size_t len, size_t *out_len)
{
	z_stream z;
	uLong bound;
	unsigned char *out;

	memset(&z, 0, sizeof(z));
	/* windowBits 15 + 16: a gzip wrapper, as Content-Encoding: gzip wants */
	if (deflateInit2(&z, REPR_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK)
		return NULL;
	bound = deflateBound(&z, (uLong)len);
	if ((out = malloc(bound)) == NULL) {
		deflateEnd(&z);
		return NULL;
	}
	z.next_in = (Bytef *)(uintptr_t)body;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)bound;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
		deflateEnd(&z);
		free(out);
		return NULL;
	}
	*out_len = z.total_out;
	deflateEnd(&z);
	return out;
}

static unsigned char *br_of(const void *body, size_t len, size_t *out_len)
{
	size_t bound = BrotliEncoderMaxCompressedSize(len);
	unsigned char *out = bound ? malloc(bound) : NULL;

	if (out == NULL)
		return NULL;
	*out_len = bound;
	if (!BrotliEncoderCompress(REPR_BR_QUALITY, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, len,
				   body, out_len, out)) {
		free(out);
		return NULL;
	}
	return out;
}

static unsigned char *zstd_of(const void *body, size_t len, size_t *out_len)
{
	size_t bound = ZSTD_compressBound(len), n;
	unsigned char *out = malloc(bound);

	if (out == NULL)
		return NULL;
	n = ZSTD_compress(out, bound, body, len, REPR_ZSTD_LEVEL);
	if (ZSTD_isError(n)) {
		free(out);
		return NULL;
	}
	*out_len = n;
	return out;
}

void repr_make(const void *body, size_t len, unsigned mask, size_t min_bytes,
	       struct repr_set *out)
{
	memset(out, 0, sizeof(*out));
	if (len < min_bytes || len > UINT32_MAX) /* zlib's avail_in is 32 bits */
		return;
	for (int e = ENC_GZIP; e < ENC_N; e++) {
		unsigned char *p = NULL;
		size_t n = 0;

		if (!(mask & ENC_BIT(e)))
			continue;
		p = e == ENC_GZIP ? gzip_of(body, len, &n)
		    : e == ENC_BR ? br_of(body, len, &n) : zstd_of(body, len, &n);
		if (p != NULL && n >= len) { /* no smaller: not worth a representation */
			free(p);
			p = NULL;
		}
		out->buf[e] = p;
		out->len[e] = p ? n : 0;
	}
}

void repr_attach(const struct repr_set *r, struct store_entry *e)
{
	for (int k = ENC_GZIP; k < ENC_N; k++) {
		e->enc[k].p = r->buf[k];
		e->enc[k].len = r->buf[k] ? r->len[k] : 0;
	}
}

void repr_free(struct repr_set *r)
{
	for (int k = 0; k < STORE_ENC_N; k++) {
		free(r->buf[k]);
		r->buf[k] = NULL;
		r->len[k] = 0;
	}
}

int repr_gunzip(const void *gz, size_t gz_len, void *out, size_t out_size, size_t *len)
{
	z_stream z;
	int rc;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 15 + 16) != Z_OK)
		return -1;
	z.next_in = (Bytef *)(uintptr_t)gz;
	z.avail_in = (uInt)gz_len;
	z.next_out = out;
	z.avail_out = (uInt)out_size;
	rc = inflate(&z, Z_FINISH);
	*len = z.total_out;
	inflateEnd(&z);
	return rc == Z_STREAM_END && z.avail_in == 0 ? 0 : -1;
}
