/* access: see access.h. */
#include "gateway/access.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "policy/check.h"

#define ACCESS_MAGIC 0x41434353u

struct access_log {
	unsigned magic;
	int fd;
	int pipe;  /* the fd is a pipe or a socket: writes of at most PIPE_BUF */
	size_t len;
	unsigned long failed; /* writes that failed (the lines lost) */
	char buf[ACCESS_BUF];
};

struct access_log *access_log_new(int fd)
{
	struct access_log *al = malloc(sizeof(*al));
	struct stat sb;

	AN(al);
	al->magic = ACCESS_MAGIC;
	al->fd = fd;
	al->pipe = fstat(fd, &sb) == 0 && !S_ISREG(sb.st_mode);
	al->len = 0;
	al->failed = 0;
	return al;
}

void access_log_free(struct access_log *al)
{
	if (al == NULL)
		return;
	CHECK_OBJ(al, ACCESS_MAGIC);
	access_log_flush(al);
	al->magic = 0;
	free(al);
}

/* Writes p[0..len) whole (short writes continue; an error drops it). */
static void write_all(struct access_log *al, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(al->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			al->failed++;
			return;
		}
		p += n;
		len -= (size_t)n;
	}
}

void access_log_flush(struct access_log *al)
{
	size_t at = 0;

	CHECK_OBJ_NOTNULL(al, ACCESS_MAGIC);
	while (at < al->len) {
		size_t n = al->len - at;

		if (al->pipe && n > ACCESS_LINE_MAX) { /* whole lines, <= PIPE_BUF */
			n = ACCESS_LINE_MAX;
			while (n > 0 && al->buf[at + n - 1] != '\n')
				n--;
			CHECK(n > 0); /* every line is at most ACCESS_LINE_MAX */
		}
		write_all(al, al->buf + at, n);
		at += n;
	}
	al->len = 0;
}

void access_log_add(struct access_log *al, const struct access_rec *r)
{
	CHECK_OBJ_NOTNULL(al, ACCESS_MAGIC);
	if (al->len + ACCESS_LINE_MAX > sizeof(al->buf))
		access_log_flush(al);
	al->len += access_encode(al->buf + al->len, ACCESS_LINE_MAX, r);
	if (al->len > sizeof(al->buf) * 3 / 4)
		access_log_flush(al);
}

/* Appends a JSON string (or null) to out[*n..end), keeping `reserve` bytes. */
static void put_str(char *out, size_t size, size_t *n, size_t reserve, const char *s)
{
	if (s == NULL) {
		if (*n + 4 + reserve < size) {
			memcpy(out + *n, "null", 4);
			*n += 4;
		}
		return;
	}
	out[(*n)++] = '"';
	for (; *s && *n + 8 + reserve < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[(*n)++] = '\\';
			out[(*n)++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			*n += (size_t)snprintf(out + *n, size - *n, "\\u%04x", c);
		} else {
			out[(*n)++] = (char)c;
		}
	}
	out[(*n)++] = '"';
}

size_t access_encode(char *out, size_t size, const struct access_rec *r)
{
	/* room kept for the fields after a string, so that a long path or
	 * query is cut short instead of the line */
	const size_t tail = 320;
	char stamp[32];
	time_t secs = (time_t)(r->time_ms / 1000);
	struct tm tm;
	size_t n;

	CHECK(size >= 512);
	gmtime_r(&secs, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = (size_t)snprintf(out, size, "{\"time\":\"%s.%03dZ\",\"request_id\":", stamp,
			     (int)(r->time_ms % 1000));
	put_str(out, size, &n, tail, r->request_id);
	n += (size_t)snprintf(out + n, size - n, ",\"method\":");
	put_str(out, size, &n, tail, r->method);
	n += (size_t)snprintf(out + n, size - n, ",\"path\":");
	put_str(out, size, &n, tail + size / 2, r->path); /* the query gets half */
	n += (size_t)snprintf(out + n, size - n, ",\"query\":");
	put_str(out, size, &n, tail, r->query);
	n += (size_t)snprintf(out + n, size - n, ",\"code\":%d,\"cache\":", r->code);
	put_str(out, size, &n, 0, r->cache);
	n += (size_t)snprintf(out + n, size - n, ",\"bytes\":%" PRIu64 ",\"duration_ms\":%.3f",
			      r->bytes, r->duration_ms);
	if (r->upstream_ms >= 0)
		n += (size_t)snprintf(out + n, size - n, ",\"upstream_ms\":%.3f",
				      r->upstream_ms);
	else
		n += (size_t)snprintf(out + n, size - n, ",\"upstream_ms\":null");
	if (r->upstream_code)
		n += (size_t)snprintf(out + n, size - n, ",\"upstream_code\":%d",
				      r->upstream_code);
	else
		n += (size_t)snprintf(out + n, size - n, ",\"upstream_code\":null");
	n += (size_t)snprintf(out + n, size - n, ",\"key_id\":");
	put_str(out, size, &n, 0, r->key_id);
	n += (size_t)snprintf(out + n, size - n, ",\"caller\":");
	put_str(out, size, &n, 0, r->caller);
	n += (size_t)snprintf(out + n, size - n, ",\"client\":");
	put_str(out, size, &n, 0, r->client);
	n += (size_t)snprintf(out + n, size - n, "}\n");
	CHECK(n < size);
	return n;
}

void access_key_id(const uint8_t keyhash[32], char out[13])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 6; i++) {
		out[2 * i] = hex[keyhash[i] >> 4];
		out[2 * i + 1] = hex[keyhash[i] & 15];
	}
	out[12] = '\0';
}
