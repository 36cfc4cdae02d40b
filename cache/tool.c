/*
 * tool: see tool.h.
 *
 * Every command is one pass of store_scan (one read transaction: a
 * consistent snapshot) plus, for purge and import, short write transactions
 * of their own (store_delete, store_put), so a running gateway is never held
 * up for longer than one entry's write.
 *
 * purge: store_scan forbids writes from its callback, so ids are collected in
 * batches of at most PURGE_BATCH and deleted after the scan; a full batch
 * means another scan (what was deleted is gone from it). With --expired, an
 * entry is looked up again just before its delete, so one the gateway has
 * refreshed meanwhile stays.
 *
 * Export format (docs/operations.md): JSON lines. A header object, one object
 * per entry, an end object carrying the number of entry lines. The count is
 * at the end because the export streams one snapshot and knows it only then;
 * import refuses nothing for a missing end line but reports it (exit 1), as a
 * file cut short. Bodies are base64 (exact bytes); query and content_type
 * are JSON strings whose characters U+0000..U+00FF stand for bytes: export
 * escapes every byte outside printable ASCII as \u00XX, import maps them
 * back, so both round-trip byte for byte.
 *
 * Bounds: an import line is at most base64(--max-body-bytes) + LINE_OVERHEAD
 * bytes (read by hand, never grown past that; longer lines are skipped and
 * reported); stats tells at most KEYS_MAX key hashes apart; purge holds at
 * most PURGE_BATCH ids; an API key read by --key-stdin is at most KEY_MAX.
 */
#include "cache/tool.h"

#include "cache/lru.h"
#include "cache/repr.h"
#include "policy/encoding.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/store.h"

/* Reader slots asked of store_open. The tools need one, but the first
 * process to open an environment sizes its lock file's reader table and
 * later ones get that size: a gateway started while a tool holds a fresh
 * store open must still find the slots it needs (its default
 * --max-connections 1024 + 64). A slot is 64 bytes of lock file. */
#define TOOL_READERS (1024 + 64)
#define DEFAULT_CACHE_SIZE "1G"   /* gateway/config.c's cache-size default */
#define DEFAULT_MAX_BODY "64M"    /* gateway/config.c's max-body-bytes default */
#define DEFAULT_COMPRESS "gzip"   /* gateway/config.c's compress default */
#define DEFAULT_COMPRESS_MIN 1400 /* gateway/config.c's compress-min-bytes default */
#define KEY_MAX 512               /* longest x-api-key the gateway accepts */
#define HASH_PREFIX_MIN 8         /* shortest --key-hash prefix, hex digits */
#define PURGE_BATCH 65536         /* ids collected per purge scan */
#define KEYS_MAX 65536            /* key hashes stats counts apart */
#define PUT_ATTEMPTS 4            /* import: put, evict, put ... */
#define EVICT_SCAN 1024           /* entries one eviction pass looks at */
#define HEADER_MAX 4096           /* longest header line */
#define LINE_OVERHEAD (64 * 1024) /* an entry line beyond its base64 body */
#define FORMAT_NAME "contacts-gateway-cache"
#define FORMAT_VERSION 1
#define JSON_INT_MAX 9007199254740992.0 /* 2^53: exact in a JSON number */
#define PROG "contacts-gateway cache"

/* ---- options ---- */

enum {
	O_DIR = 1u << 0,
	O_KEYHASH = 1u << 1,
	O_PREFIX = 1u << 2,
	O_JSON = 1u << 3,
	O_ALL = 1u << 4,
	O_EXPIRED = 1u << 5,
	O_KEYSTDIN = 1u << 6,
	O_CACHESIZE = 1u << 7,
	O_MAXBODY = 1u << 8,
	O_FILE = 1u << 9, /* the positional FILE */
	O_TO = 1u << 10,
	O_COMPRESS = 1u << 11,
};

struct tool_opt {
	const char *name;
	unsigned bit;
	int has_value;
};

static const struct tool_opt tool_opts[] = {
	{"cache-dir", O_DIR, 1},       {"key-hash", O_KEYHASH, 1},
	{"query-prefix", O_PREFIX, 1}, {"json", O_JSON, 0},
	{"all", O_ALL, 0},             {"expired", O_EXPIRED, 0},
	{"key-stdin", O_KEYSTDIN, 0},  {"cache-size", O_CACHESIZE, 1},
	{"max-body-bytes", O_MAXBODY, 1}, {"to", O_TO, 1},
	{"compress", O_COMPRESS, 1},
};

#define N_TOOL_OPTS (sizeof(tool_opts) / sizeof(tool_opts[0]))

/* What the command line asked for; strings are borrowed from argv. */
struct opts {
	unsigned given; /* O_* bits seen */
	const char *cmd;
	const char *dir;
	char hash[2 * STORE_KEYHASH_LEN + 1]; /* lower-case hex, a prefix */
	size_t hash_len;                      /* 0: no key filter */
	const char *prefix;
	size_t prefix_len;
	const char *file;
	const char *to; /* recover's new directory */
	uint64_t cache_size;
	uint64_t max_body;
	unsigned compress; /* import: representations made (ENC_BIT mask) */
};

/* Which entries a command acts on; conditions combine with AND. */

/* ---- small helpers ---- */

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr: "contacts-gateway cache: <message>". */
static void complain(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* a - b, saturated (records hold whatever a writer put there). */
static int64_t sub_sat(int64_t a, int64_t b)
{
	int64_t r;

	if (__builtin_sub_overflow(a, b, &r))
		return b < 0 ? INT64_MAX : INT64_MIN;
	return r;
}

/* Division rounding towards minus infinity: -0.5 s is -1, expired. */
static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	if (a % b != 0 && (a < 0) != (b < 0))
		q--;
	return q;
}

/* "2026-01-01T00:00:00.000Z" into out (at least 32 bytes). */
static void iso8601(int64_t ms, char *out, size_t size)
{
	time_t s = (time_t)floor_div(ms, 1000);
	struct tm tm;
	char date[24];

	if (gmtime_r(&s, &tm) == NULL ||
	    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(out, size, "(%" PRId64 " ms)", ms);
		return;
	}
	snprintf(out, size, "%s.%03dZ", date, (int)(ms - floor_div(ms, 1000) * 1000));
}

static void to_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly 2n hex digits into n bytes. Returns 0 or -1. */
static int from_hex(const char *s, size_t len, uint8_t *out, size_t n)
{
	if (len != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value((unsigned char)s[2 * i]);
		int lo = hex_value((unsigned char)s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Bytes with a K, M or G suffix (binary), within [min, max]. */
static int parse_bytes(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;
	size_t len = strlen(s), i;

	if (len == 0)
		return -1;
	switch (s[len - 1]) {
	case 'k': case 'K': shift = 10; len--; break;
	case 'm': case 'M': shift = 20; len--; break;
	case 'g': case 'G': shift = 30; len--; break;
	default: break;
	}
	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > (UINT64_MAX >> shift))
		return -1;
	v <<= shift;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Writes bytes as a JSON string: printable ASCII as itself, every other
 * byte as \u00XX (a character U+0000..U+00FF standing for that byte). */
static void put_json_bytes(FILE *out, const char *s, size_t len)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			fputc('\\', out);
			fputc(c, out);
		} else if (c >= 0x20 && c < 0x7f) {
			fputc(c, out);
		} else {
			fprintf(out, "\\u%04x", c);
		}
	}
	fputc('"', out);
}

/* The inverse of put_json_bytes on a string cJSON decoded to UTF-8: each
 * character must be U+0001..U+00FF. Returns 0, or -1 if one is not or the
 * result would be longer than max. */
static int bytes_from_utf8(const char *s, char *out, size_t max, size_t *len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;

	while (*p) {
		unsigned c;

		if (*p < 0x80) {
			c = *p++;
		} else if ((p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) {
			c = (unsigned)(p[0] & 0x1f) << 6 | (p[1] & 0x3f);
			p += 2;
			if (c < 0x80 || c > 0xff)
				return -1;
		} else {
			return -1;
		}
		if (n == max)
			return -1;
		out[n++] = (char)c;
	}
	*len = n;
	return 0;
}

/* Writes a query as text: bytes outside printable ASCII as \xNN, so a
 * listing can never carry control characters to a terminal. */
static void put_text(FILE *out, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c > 0x20 && c < 0x7f && c != '\\')
			fputc(c, out);
		else
			fprintf(out, "\\x%02x", c);
	}
}

static const char b64_digits[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Streams base64 (RFC 4648, padded) of p[0..n) to out. */
static void put_base64(FILE *out, const uint8_t *p, size_t n)
{
	char buf[4096];
	size_t used = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t left = n - i;

		if (left > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (left > 2)
			v |= p[i + 2];
		buf[used++] = b64_digits[v >> 18 & 63];
		buf[used++] = b64_digits[v >> 12 & 63];
		buf[used++] = left > 1 ? b64_digits[v >> 6 & 63] : '=';
		buf[used++] = left > 2 ? b64_digits[v & 63] : '=';
		if (used == sizeof(buf)) {
			fwrite(buf, 1, used, out);
			used = 0;
		}
	}
	fwrite(buf, 1, used, out);
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decoded size of len base64 characters (len a multiple of 4). */
static size_t b64_decoded_len(const char *s, size_t len)
{
	size_t n = len / 4 * 3;

	if (len >= 1 && s[len - 1] == '=')
		n--;
	if (len >= 2 && s[len - 2] == '=')
		n--;
	return n;
}

/* Strict padded base64 into out (b64_decoded_len bytes). Returns 0 or -1. */
static int b64_decode(const char *s, size_t len, uint8_t *out)
{
	size_t o = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int last = i + 4 == len;

		for (int k = 0; k < 4; k++)
			v[k] = b64_value((unsigned char)s[i + k]);
		if (v[0] < 0 || v[1] < 0)
			return -1;
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (v[2] < 0) {
			if (!last || s[i + 2] != '=' || s[i + 3] != '=')
				return -1;
			break;
		}
		out[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
		if (v[3] < 0) {
			if (!last || s[i + 3] != '=')
				return -1;
			break;
		}
		out[o++] = (uint8_t)((v[2] & 3) << 6 | v[3]);
	}
	return 0;
}

/* ---- the store ---- */

/* Opens dir for a tool: never exclusive; `create` only for import. NULL
 * (after one stderr line) when the directory is unusable. */
static struct store *tool_open(const char *dir, int create, uint64_t map_bytes)
{
	char err[512];
	struct store *st;

	errno = 0; /* store_open words a non-directory by errno */
	st = store_open(dir, create ? map_bytes : 0, TOOL_READERS,
			create ? 0 : STORE_EXISTING, err, sizeof(err));
	if (st == NULL)
		complain("%s", err);
	return st;
}

static int filter_match(const struct cache_filter *f, const struct store_entry *e)
{
	if (f->hash_len) {
		char hex[2 * STORE_KEYHASH_LEN + 1];

		to_hex(e->keyhash, STORE_KEYHASH_LEN, hex);
		if (memcmp(hex, f->hash, f->hash_len) != 0)
			return 0;
	}
	if (f->prefix_len &&
	    (e->query_len < f->prefix_len || memcmp(e->query, f->prefix, f->prefix_len) != 0))
		return 0;
	if (f->expired && e->expires_ms > f->now)
		return 0;
	return 1;
}

static void filter_from(struct cache_filter *f, const struct opts *o)
{
	memset(f, 0, sizeof(*f));
	if (o->hash_len) {
		f->hash = o->hash;
		f->hash_len = o->hash_len;
	}
	f->prefix = o->prefix;
	f->prefix_len = o->prefix_len;
	f->expired = (o->given & O_EXPIRED) != 0;
	f->now = now_ms();
}

static int filtering(const struct cache_filter *f)
{
	return f->hash_len || f->prefix_len || f->expired;
}

/* ---- stats ---- */

struct key_count {
	uint8_t hash[STORE_KEYHASH_LEN];
	uint64_t entries;
	uint64_t body_bytes;
	int used;
};

struct stats {
	int64_t now;
	uint64_t entries, corrupt, expired, body_bytes;
	int64_t oldest, newest;
	struct key_count *keys; /* open addressing, cap a power of 2 */
	size_t cap, n_keys;
	uint64_t other_entries; /* of key hashes past KEYS_MAX */
};

static size_t key_slot(const struct key_count *keys, size_t cap, const uint8_t *hash)
{
	uint64_t h;
	size_t i;

	memcpy(&h, hash, sizeof(h)); /* a SHA-256: already uniform */
	for (i = (size_t)h & (cap - 1);; i = (i + 1) & (cap - 1))
		if (!keys[i].used || memcmp(keys[i].hash, hash, STORE_KEYHASH_LEN) == 0)
			return i;
}

/* Counts an entry under its key hash; NULL when KEYS_MAX are known. */
static struct key_count *key_find(struct stats *s, const uint8_t *hash)
{
	size_t i;

	if (s->keys == NULL) {
		s->cap = 64;
		if ((s->keys = calloc(s->cap, sizeof(*s->keys))) == NULL)
			abort();
	}
	i = key_slot(s->keys, s->cap, hash);
	if (s->keys[i].used)
		return &s->keys[i];
	if (s->n_keys == KEYS_MAX)
		return NULL;
	if (2 * (s->n_keys + 1) > s->cap) { /* keep the load at most 1/2 */
		size_t cap = 2 * s->cap;
		struct key_count *keys = calloc(cap, sizeof(*keys));

		if (keys == NULL)
			abort();
		for (size_t k = 0; k < s->cap; k++)
			if (s->keys[k].used)
				keys[key_slot(keys, cap, s->keys[k].hash)] = s->keys[k];
		free(s->keys);
		s->keys = keys;
		s->cap = cap;
		i = key_slot(s->keys, s->cap, hash);
	}
	s->keys[i].used = 1;
	memcpy(s->keys[i].hash, hash, STORE_KEYHASH_LEN);
	s->n_keys++;
	return &s->keys[i];
}

static int stats_scan(const uint8_t id[STORE_ID_LEN], enum store_status status,
		      const struct store_entry *e, void *arg)
{
	struct stats *s = arg;
	struct key_count *k;

	(void)id;
	if (status != STORE_OK) {
		s->corrupt++;
		return 0;
	}
	if (s->entries == 0 || e->stored_ms < s->oldest)
		s->oldest = e->stored_ms;
	if (s->entries == 0 || e->stored_ms > s->newest)
		s->newest = e->stored_ms;
	s->entries++;
	s->body_bytes += e->body_len;
	if (e->expires_ms <= s->now)
		s->expired++;
	if ((k = key_find(s, e->keyhash)) == NULL) {
		s->other_entries++;
		return 0;
	}
	k->entries++;
	k->body_bytes += e->body_len;
	return 0;
}

static int by_entries(const void *a, const void *b)
{
	const struct key_count *x = a, *y = b;

	if (x->entries != y->entries)
		return x->entries < y->entries ? 1 : -1;
	return memcmp(x->hash, y->hash, STORE_KEYHASH_LEN);
}

static int run_stats(const struct opts *o)
{
	struct stats s;
	struct store *st;
	uint64_t map_bytes, used_bytes;
	char oldest[40], newest[40], hex[2 * STORE_KEYHASH_LEN + 1];
	size_t n = 0;
	int json = (o->given & O_JSON) != 0;

	if ((st = tool_open(o->dir, 0, 0)) == NULL)
		return 2;
	memset(&s, 0, sizeof(s));
	s.now = now_ms();
	if (store_scan(st, stats_scan, &s) != STORE_OK) {
		complain("cannot read the cache in %s: %s", o->dir, store_last_error(st));
		free(s.keys);
		store_close(st);
		return 1;
	}
	store_usage(st, &map_bytes, &used_bytes);
	store_close(st);
	/* the known key hashes, packed at the front, most entries first */
	for (size_t i = 0; i < s.cap; i++)
		if (s.keys[i].used)
			s.keys[n++] = s.keys[i];
	if (n)
		qsort(s.keys, n, sizeof(*s.keys), by_entries);
	iso8601(s.oldest, oldest, sizeof(oldest));
	iso8601(s.newest, newest, sizeof(newest));
	if (json) {
		printf("{\"directory\":");
		put_json_bytes(stdout, o->dir, strlen(o->dir));
		printf(",\"entries\":%" PRIu64 ",\"corrupt\":%" PRIu64 ",\"expired\":%" PRIu64
		       ",\"body_bytes\":%" PRIu64 ",\"map_bytes\":%" PRIu64
		       ",\"used_bytes\":%" PRIu64,
		       s.entries, s.corrupt, s.expired, s.body_bytes, map_bytes, used_bytes);
		if (s.entries)
			printf(",\"oldest_stored\":\"%s\",\"oldest_age_s\":%" PRId64
			       ",\"newest_stored\":\"%s\",\"newest_age_s\":%" PRId64,
			       oldest, floor_div(sub_sat(s.now, s.oldest), 1000), newest,
			       floor_div(sub_sat(s.now, s.newest), 1000));
		printf(",\"key_hashes\":[");
		for (size_t i = 0; i < n; i++) {
			to_hex(s.keys[i].hash, STORE_KEYHASH_LEN, hex);
			printf("%s{\"key_hash\":\"%s\",\"entries\":%" PRIu64
			       ",\"body_bytes\":%" PRIu64 "}",
			       i ? "," : "", hex, s.keys[i].entries, s.keys[i].body_bytes);
		}
		printf("],\"other_key_hash_entries\":%" PRIu64 "}\n", s.other_entries);
	} else {
		printf("directory        %s\n", o->dir);
		printf("entries          %" PRIu64 "\n", s.entries);
		printf("corrupt records  %" PRIu64 "\n", s.corrupt);
		printf("expired          %" PRIu64 "\n", s.expired);
		printf("body bytes       %" PRIu64 "\n", s.body_bytes);
		printf("map size         %" PRIu64 "\n", map_bytes);
		printf("bytes used       %" PRIu64 " (%.1f%% of the map)\n", used_bytes,
		       map_bytes ? 100.0 * (double)used_bytes / (double)map_bytes : 0.0);
		if (s.entries) {
			printf("oldest stored    %s (age %" PRId64 " s)\n", oldest,
			       floor_div(sub_sat(s.now, s.oldest), 1000));
			printf("newest stored    %s (age %" PRId64 " s)\n", newest,
			       floor_div(sub_sat(s.now, s.newest), 1000));
		}
		printf("key hashes       %zu%s\n", n,
		       s.other_entries ? " (and more, not told apart)" : "");
		for (size_t i = 0; i < n; i++) {
			to_hex(s.keys[i].hash, STORE_KEYHASH_LEN, hex);
			printf("  %s  %" PRIu64 " entr%s, %" PRIu64 " body bytes\n", hex,
			       s.keys[i].entries, s.keys[i].entries == 1 ? "y" : "ies",
			       s.keys[i].body_bytes);
		}
		if (s.other_entries)
			printf("  (other key hashes)  %" PRIu64 " entries\n", s.other_entries);
	}
	free(s.keys);
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}

/* ---- list ---- */

struct list_ctx {
	const struct cache_filter *f;
	int json;
	uint64_t shown;
};

static int list_scan(const uint8_t id[STORE_ID_LEN], enum store_status status,
		     const struct store_entry *e, void *arg)
{
	struct list_ctx *l = arg;
	char hex[2 * STORE_KEYHASH_LEN + 1];
	int64_t age, left;

	if (status != STORE_OK) {
		if (filtering(l->f))
			return 0; /* its key hash and query are unknown */
		to_hex(id, STORE_ID_LEN, hex);
		if (l->json)
			printf("{\"corrupt\":true,\"id\":\"%s\"}\n", hex);
		else
			printf("corrupt record (entry id %s)\n", hex);
		l->shown++;
		return 0;
	}
	if (!filter_match(l->f, e))
		return 0;
	to_hex(e->keyhash, STORE_KEYHASH_LEN, hex);
	age = floor_div(sub_sat(l->f->now, e->stored_ms), 1000);
	left = floor_div(sub_sat(e->expires_ms, l->f->now), 1000);
	if (l->json) {
		printf("{\"key_hash\":\"%s\",\"query\":", hex);
		put_json_bytes(stdout, e->query, e->query_len);
		printf(",\"age_s\":%" PRId64 ",\"expires_in_s\":%" PRId64
		       ",\"expired\":%s,\"body_bytes\":%zu,\"stored_ms\":%" PRId64
		       ",\"expires_ms\":%" PRId64 ",\"etag\":\"%016" PRIx64
		       "\",\"content_type\":",
		       age, left, e->expires_ms <= l->f->now ? "true" : "false", e->body_len,
		       e->stored_ms, e->expires_ms, e->etag);
		put_json_bytes(stdout, e->content_type, e->content_type_len);
		fputs("}\n", stdout);
	} else {
		printf("%s %8" PRId64 " %8" PRId64 " %10zu ", hex, age, left, e->body_len);
		put_text(stdout, e->query, e->query_len);
		fputc('\n', stdout);
	}
	l->shown++;
	return ferror(stdout) ? 1 : 0;
}

static int run_list(const struct opts *o)
{
	struct cache_filter f;
	struct list_ctx l = {&f, (o->given & O_JSON) != 0, 0};
	struct store *st;
	int rc = 0;

	if ((st = tool_open(o->dir, 0, 0)) == NULL)
		return 2;
	filter_from(&f, o);
	if (store_scan(st, list_scan, &l) != STORE_OK) {
		complain("cannot read the cache in %s: %s", o->dir, store_last_error(st));
		rc = 1;
	}
	store_close(st);
	if (fflush(stdout) != 0 || ferror(stdout))
		rc = 1;
	return rc;
}

/* ---- purge ---- */

struct purge_ctx {
	const struct cache_filter *f;
	int all;
	uint8_t (*ids)[STORE_ID_LEN];
	size_t n;
	int full; /* the batch filled: scan again */
};

static int purge_scan(const uint8_t id[STORE_ID_LEN], enum store_status status,
		      const struct store_entry *e, void *arg)
{
	struct purge_ctx *p = arg;

	if (status != STORE_OK ? !p->all : !(p->all || filter_match(p->f, e)))
		return 0;
	memcpy(p->ids[p->n++], id, STORE_ID_LEN);
	if (p->n == PURGE_BATCH) {
		p->full = 1;
		return 1;
	}
	return 0;
}

/* With --expired: is the entry still expired (not refreshed since)? */
static int still_expired(struct store *st, const uint8_t id[STORE_ID_LEN], int64_t now)
{
	struct store_view *view;
	struct store_entry e;
	int yes;

	if (store_get(st, id, &view, &e) != STORE_OK)
		return 0; /* gone, or corrupt: not what --expired asks for */
	yes = e.expires_ms <= now;
	store_view_release(view);
	return yes;
}

int cache_purge(struct store *st, struct cache_filter *f, uint64_t *deleted,
		uint64_t *failed)
{
	struct purge_ctx p;
	int rc = 0;

	*deleted = *failed = 0;
	memset(&p, 0, sizeof(p));
	p.f = f;
	p.all = f->all;
	if ((p.ids = malloc(PURGE_BATCH * sizeof(*p.ids))) == NULL)
		abort();
	for (;;) {
		uint64_t round = 0;

		p.n = 0;
		p.full = 0;
		f->now = now_ms();
		if (store_scan(st, purge_scan, &p) != STORE_OK) {
			rc = -1;
			break;
		}
		for (size_t i = 0; i < p.n; i++) {
			if (f->expired && !p.all && !still_expired(st, p.ids[i], f->now))
				continue;
			switch (store_delete(st, p.ids[i])) {
			case STORE_OK:
				round++;
				break;
			case STORE_NOT_FOUND: /* deleted by someone else meanwhile */
				break;
			default:
				(*failed)++;
				break;
			}
		}
		*deleted += round;
		if (!p.full)
			break;
		if (round == 0) { /* a full batch and no progress: do not spin */
			rc = -1;
			break;
		}
	}
	free(p.ids);
	return rc == 0 && *failed == 0 ? 0 : -1;
}

static int run_purge(const struct opts *o)
{
	struct cache_filter f;
	struct store *st;
	uint64_t deleted = 0, failed = 0;
	int rc = 0;

	if ((st = tool_open(o->dir, 0, 0)) == NULL)
		return 2;
	filter_from(&f, o);
	f.all = (o->given & O_ALL) != 0;
	if (cache_purge(st, &f, &deleted, &failed) != 0) {
		if (failed)
			complain("%" PRIu64 " entries could not be deleted: %s", failed,
				 store_last_error(st));
		else
			complain("purge of %s stopped: the cache could not be read or "
				 "a batch of %d entries could not be deleted (%s)", o->dir,
				 PURGE_BATCH, store_last_error(st));
		rc = 1;
	}
	store_close(st);
	printf("purged %" PRIu64 " entr%s\n", deleted, deleted == 1 ? "y" : "ies");
	return rc;
}

/* ---- export ---- */

struct export_ctx {
	FILE *out;
	uint64_t written, corrupt, refused;
};

static int export_scan(const uint8_t id[STORE_ID_LEN], enum store_status status,
		       const struct store_entry *e, void *arg)
{
	struct export_ctx *x = arg;
	char hex[2 * STORE_ID_LEN + 1];
	const char *why;

	if (status != STORE_OK) {
		to_hex(id, STORE_ID_LEN, hex);
		complain("warning: skipped a corrupt record (entry id %s)", hex);
		x->corrupt++;
		return 0;
	}
	if ((why = cache_export_refuses(e)) != NULL) {
		to_hex(id, STORE_ID_LEN, hex);
		complain("warning: skipped entry %s: %s", hex, why);
		x->refused++;
		return 0;
	}
	cache_export_line(x->out, e);
	x->written++;
	return ferror(x->out) ? 1 : 0;
}

const char *cache_export_refuses(const struct store_entry *e)
{
	/* a NUL cannot travel in a JSON string through cJSON; the gateway
	 * never stores one (the query is canonical, the type a header value) */
	if (memchr(e->query, '\0', e->query_len) ||
	    memchr(e->content_type, '\0', e->content_type_len))
		return "its query or content type holds a NUL byte";
	/* import reads numbers as JSON doubles: only what it can read back */
	if (e->stored_ms < 0 || e->stored_ms > (int64_t)JSON_INT_MAX ||
	    e->expires_ms < 0 || e->expires_ms > (int64_t)JSON_INT_MAX)
		return "its times are out of range";
	return NULL;
}

void cache_export_line(FILE *out, const struct store_entry *e)
{
	char hex[2 * STORE_KEYHASH_LEN + 1];

	to_hex(e->keyhash, STORE_KEYHASH_LEN, hex);
	fprintf(out, "{\"key_hash\":\"%s\",\"query\":", hex);
	put_json_bytes(out, e->query, e->query_len);
	fprintf(out, ",\"stored_ms\":%" PRId64 ",\"expires_ms\":%" PRId64
		",\"content_type\":", e->stored_ms, e->expires_ms);
	put_json_bytes(out, e->content_type, e->content_type_len);
	fprintf(out, ",\"etag\":\"%016" PRIx64 "\",\"body_b64\":\"", e->etag);
	put_base64(out, e->body, e->body_len);
	fputs("\"}\n", out);
}

/* fsyncs the directory holding `path` (best effort). */
static void sync_parent(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) : 0;
	int fd;

	if (slash == NULL) {
		memcpy(dir, ".", 2);
	} else if (len == 0) {
		memcpy(dir, "/", 2);
	} else if (len < sizeof(dir)) {
		memcpy(dir, path, len);
		dir[len] = '\0';
	} else {
		return;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static int run_export(const struct opts *o)
{
	struct export_ctx x = {0};
	struct store *st;
	char tmp[PATH_MAX], when[40];
	int to_stdout = strcmp(o->file, "-") == 0;
	int fd, ok, rc = 0;

	if ((st = tool_open(o->dir, 0, 0)) == NULL)
		return 2;
	/* a file is written beside its final name and renamed when complete:
	 * FILE is never a half export */
	if (to_stdout) {
		x.out = stdout;
	} else {
		if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", o->file) >= sizeof(tmp)) {
			complain("%s: path too long", o->file);
			store_close(st);
			return 2;
		}
		if ((fd = mkstemp(tmp)) < 0) { /* mode 0600: entries are customer data */
			complain("cannot create %s (written as %s.tmp-*, then renamed): %s",
				 o->file, o->file, strerror(errno));
			store_close(st);
			return 2;
		}
		if ((x.out = fdopen(fd, "w")) == NULL)
			abort();
	}
	iso8601(now_ms(), when, sizeof(when));
	fprintf(x.out, "{\"format\":\"%s\",\"version\":%d,\"exported_at\":\"%s\"}\n",
		FORMAT_NAME, FORMAT_VERSION, when);
	if (store_scan(st, export_scan, &x) != STORE_OK) {
		complain("cannot read the cache in %s: %s", o->dir, store_last_error(st));
		rc = 1;
	}
	store_close(st);
	if (rc == 0) /* an incomplete export has no end line: import says so */
		fprintf(x.out, "{\"end\":true,\"entries\":%" PRIu64 "}\n", x.written);
	ok = fflush(x.out) == 0 && !ferror(x.out);
	if (!to_stdout) {
		ok = ok && fsync(fileno(x.out)) == 0;
		ok = (fclose(x.out) == 0) && ok;
		if (ok && rc == 0 && rename(tmp, o->file) != 0) {
			complain("cannot rename %s to %s: %s", tmp, o->file, strerror(errno));
			ok = 0;
		} else if (ok && rc == 0) {
			sync_parent(o->file); /* the new name survives a power loss too */
		}
		if (!ok || rc != 0)
			unlink(tmp);
	}
	if (!ok) {
		complain("writing %s failed: %s", to_stdout ? "stdout" : o->file,
			 strerror(errno));
		return 1;
	}
	if (rc != 0)
		return rc;
	fprintf(stderr, PROG ": exported %" PRIu64 " entr%s to %s", x.written,
		x.written == 1 ? "y" : "ies", to_stdout ? "stdout" : o->file);
	if (x.corrupt)
		fprintf(stderr, " (%" PRIu64 " corrupt record%s skipped)", x.corrupt,
			x.corrupt == 1 ? "" : "s");
	fputc('\n', stderr);
	return x.refused ? 1 : 0;
}

/* ---- import ---- */

struct line {
	char *buf;
	size_t len, cap;
};

enum line_status { LINE_OK, LINE_EOF, LINE_TOO_LONG, LINE_ERROR };

/* Reads one line (without its '\n') into l, growing l->buf to at most
 * max + 1 bytes; a longer line is consumed and reported LINE_TOO_LONG. */
static enum line_status read_line(FILE *in, struct line *l, size_t max)
{
	int c, any = 0;

	l->len = 0;
	while ((c = getc_unlocked(in)) != EOF) {
		any = 1;
		if (c == '\n')
			return LINE_OK;
		if (l->len == max) {
			while ((c = getc_unlocked(in)) != EOF && c != '\n')
				;
			return ferror(in) ? LINE_ERROR : LINE_TOO_LONG;
		}
		if (l->len + 1 >= l->cap) {
			size_t cap = l->cap ? 2 * l->cap : 65536;
			char *buf;

			if (cap > max + 1)
				cap = max + 1;
			if ((buf = realloc(l->buf, cap)) == NULL) {
				errno = ENOMEM;
				return LINE_ERROR;
			}
			l->buf = buf;
			l->cap = cap;
		}
		l->buf[l->len++] = (char)c;
	}
	if (ferror(in))
		return LINE_ERROR;
	return any ? LINE_OK : LINE_EOF;
}

static int blank(const struct line *l)
{
	for (size_t i = 0; i < l->len; i++)
		if (!strchr(" \t\r", l->buf[i]))
			return 0;
	return 1;
}

/* A JSON integer in [0, 2^53]. Returns 0 or -1. */
static int json_int(const cJSON *o, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	double d;

	if (!cJSON_IsNumber(v))
		return -1;
	d = v->valuedouble;
	if (!(d >= 0 && d <= JSON_INT_MAX) || (double)(int64_t)d != d)
		return -1;
	*out = (int64_t)d;
	return 0;
}

static const char *json_string(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

/* Checks an entry object; NULL when good, else why it is not. */
static const char *check_entry(const cJSON *o, uint64_t max_body, struct cache_import_entry *ie)
{
	const char *s;
	uint8_t etag[8];
	size_t len;

	if ((s = json_string(o, "key_hash")) == NULL)
		return "no key_hash string";
	if (from_hex(s, strlen(s), ie->keyhash, STORE_KEYHASH_LEN) != 0)
		return "key_hash is not 64 hex digits";
	if ((s = json_string(o, "query")) == NULL)
		return "no query string";
	if (bytes_from_utf8(s, ie->query, sizeof(ie->query), &ie->query_len) != 0 ||
	    ie->query_len == 0)
		return "query is empty, longer than 4096 bytes, or holds characters "
		       "past U+00FF";
	if ((s = json_string(o, "content_type")) == NULL)
		return "no content_type string";
	if (bytes_from_utf8(s, ie->ctype, sizeof(ie->ctype), &ie->ctype_len) != 0)
		return "content_type is longer than 256 bytes or holds characters past "
		       "U+00FF";
	if (json_int(o, "stored_ms", &ie->stored_ms) != 0)
		return "stored_ms is not a whole number from 0 to 2^53";
	if (json_int(o, "expires_ms", &ie->expires_ms) != 0)
		return "expires_ms is not a whole number from 0 to 2^53";
	if ((s = json_string(o, "etag")) == NULL ||
	    from_hex(s, strlen(s), etag, sizeof(etag)) != 0)
		return "etag is not 16 hex digits";
	ie->etag = 0;
	for (int i = 0; i < 8; i++)
		ie->etag = ie->etag << 8 | etag[i];
	if ((s = json_string(o, "body_b64")) == NULL)
		return "no body_b64 string";
	len = strlen(s);
	if (len % 4 != 0)
		return "body_b64 is not padded base64";
	ie->body_len = b64_decoded_len(s, len);
	if (ie->body_len > max_body)
		return "the body is larger than --max-body-bytes";
	if ((ie->body = malloc(ie->body_len ? ie->body_len : 1)) == NULL)
		return "out of memory for the body";
	if (b64_decode(s, len, ie->body) != 0)
		return "body_b64 is not base64";
	if (XXH3_64bits(ie->body, ie->body_len) != ie->etag)
		return "the etag does not match the body (XXH3-64): the body was changed";
	return NULL;
}

struct import_ctx {
	const char *name; /* the file, for messages */
	struct store *st;
	uint64_t max_body;
	unsigned compress;
	uint64_t imported, skipped, kept, evicted, entry_lines;
	int seen_end;
	int64_t end_entries;
	char why[STORE_ERROR_MAX + 96]; /* import_put's last reason */
};

static void skip_line(struct import_ctx *c, unsigned long lineno, const char *why)
{
	complain("%s:%lu: skipped: %s", c->name, lineno, why);
	c->skipped++;
}

/* Writes a checked entry unless the cache holds a newer answer for it. */
static const char *import_put(struct import_ctx *c, struct cache_import_entry *ie)
{
	uint8_t id[STORE_ID_LEN];
	struct store_entry e;
	struct repr_set reps;
	enum store_status s;
	size_t evicted = 0;
	const char *why;

	store_entry_id(ie->keyhash, ie->query, ie->query_len, id);
	memset(&e, 0, sizeof(e));
	e.stored_ms = ie->stored_ms;
	e.expires_ms = ie->expires_ms;
	memcpy(e.keyhash, ie->keyhash, STORE_KEYHASH_LEN);
	e.query = ie->query;
	e.query_len = ie->query_len;
	e.content_type = ie->ctype;
	e.content_type_len = ie->ctype_len;
	e.body = ie->body;
	e.body_len = ie->body_len;
	/* the export holds the identity body: its representations are made
	 * again, as the gateway makes them when it stores an answer */
	repr_make(e.body, e.body_len, c->compress, DEFAULT_COMPRESS_MIN, &reps);
	repr_attach(&reps, &e);
	/* a later answer stored (by a gateway, perhaps meanwhile) is kept */
	s = lru_put_unless_newer(NULL, c->st, id, &e, now_ms(), &evicted);
	c->evicted += evicted;
	repr_free(&reps);
	switch (s) {
	case STORE_OK:
		c->imported++;
		why = NULL;
		break;
	case STORE_NEWER:
		c->kept++;
		why = NULL;
		break;
	case STORE_FULL:
		snprintf(c->why, sizeof(c->why), "the cache is full even after evicting (%s): "
			 "it needs a larger --cache-size", store_last_error(c->st));
		why = c->why;
		break;
	case STORE_INVALID:
		why = "the store refused the entry's sizes";
		break;
	default:
		snprintf(c->why, sizeof(c->why), "the store could not write it: %s",
			 store_last_error(c->st));
		why = c->why;
		break;
	}
	return why;
}

enum cache_line cache_parse_line(const char *buf, size_t len, uint64_t max_body,
				 struct cache_import_entry *ie, int64_t *end_entries,
				 const char **why)
{
	enum cache_line kind = CACHE_LINE_BAD;
	cJSON *o;

	memset(ie, 0, sizeof(*ie));
	*why = NULL;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)buf[i] < 0x20 && buf[i] != '\t' && buf[i] != '\r') {
			/* an export writes none; cJSON would take a raw NUL in a
			 * string and cut it short there */
			*why = "holds a raw control byte (an export escapes every one)";
			return CACHE_LINE_BAD;
		}
	if (memmem(buf, len, "\\u0000", 6) != NULL) {
		*why = "holds a \\u0000 escape (no NUL bytes in these strings)";
		return CACHE_LINE_BAD;
	}
	o = cJSON_ParseWithLength(buf, len);
	if (!cJSON_IsObject(o)) {
		*why = "not a JSON object";
	} else if (cJSON_GetObjectItemCaseSensitive(o, "end") != NULL) {
		kind = CACHE_LINE_END;
		if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "end")) ||
		    json_int(o, "entries", end_entries) != 0) {
			*end_entries = -1;
			*why = "a malformed end line";
		}
	} else if ((*why = check_entry(o, max_body, ie)) == NULL) {
		kind = CACHE_LINE_ENTRY;
	}
	cJSON_Delete(o); /* ie holds copies */
	if (kind != CACHE_LINE_ENTRY) {
		free(ie->body);
		ie->body = NULL;
	}
	return kind;
}

/* One line after the header. */
static void import_line(struct import_ctx *c, unsigned long lineno, const struct line *l)
{
	struct cache_import_entry *ie;
	const char *why;
	int64_t end_entries = -1;

	if (c->seen_end) {
		skip_line(c, lineno, "a line after the end line");
		return;
	}
	if ((ie = calloc(1, sizeof(*ie))) == NULL)
		abort();
	switch (cache_parse_line(l->buf, l->len, c->max_body, ie, &end_entries, &why)) {
	case CACHE_LINE_END:
		c->seen_end = 1;
		c->end_entries = end_entries;
		if (why != NULL)
			skip_line(c, lineno, why);
		break;
	case CACHE_LINE_BAD:
		c->entry_lines++;
		skip_line(c, lineno, why);
		break;
	case CACHE_LINE_ENTRY:
		c->entry_lines++;
		if ((why = import_put(c, ie)) != NULL)
			skip_line(c, lineno, why);
		break;
	}
	free(ie->body);
	free(ie);
}

/* The first line: refuses another format or a newer version. 0 or -1. */
static int check_header(const char *name, const struct line *l)
{
	cJSON *o = cJSON_ParseWithLength(l->buf, l->len);
	const char *format = o ? json_string(o, "format") : NULL;
	int64_t version;
	int rc = -1;

	if (!cJSON_IsObject(o) || format == NULL || strcmp(format, FORMAT_NAME) != 0 ||
	    cJSON_GetObjectItemCaseSensitive(o, "end") != NULL) {
		complain("%s: not a contacts-gateway cache export (its first line is not "
			 "a {\"format\":\"%s\",...} header)", name, FORMAT_NAME);
	} else if (json_int(o, "version", &version) != 0 || version < 1) {
		complain("%s: the header's version is not a whole number from 1", name);
	} else if (version > FORMAT_VERSION) {
		complain("%s: export format version %" PRId64 " is newer than this "
			 "contacts-gateway reads (%d); import it with a newer "
			 "contacts-gateway", name, version, FORMAT_VERSION);
	} else {
		rc = 0;
	}
	cJSON_Delete(o);
	return rc;
}

static int run_import(const struct opts *o)
{
	struct import_ctx c;
	struct line l = {0};
	struct stat sb;
	char data_path[PATH_MAX];
	unsigned long lineno = 1;
	size_t max_line;
	enum line_status ls;
	FILE *in;
	int from_stdin = strcmp(o->file, "-") == 0, fresh, rc = 0;

	memset(&c, 0, sizeof(c));
	c.name = from_stdin ? "stdin" : o->file;
	c.max_body = o->max_body;
	c.compress = o->compress;
	/* base64 of the largest body, plus the other fields, escaped */
	max_line = (size_t)(4 * ((o->max_body + 2) / 3) + LINE_OVERHEAD);
	if ((in = from_stdin ? stdin : fopen(o->file, "r")) == NULL) {
		complain("cannot read %s: %s", o->file, strerror(errno));
		return 2;
	}
	ls = read_line(in, &l, HEADER_MAX);
	if (ls != LINE_OK) {
		if (ls == LINE_EOF)
			complain("%s: empty, not a contacts-gateway cache export", c.name);
		else if (ls == LINE_TOO_LONG)
			complain("%s: not a contacts-gateway cache export (first line over %d "
				 "bytes)", c.name, HEADER_MAX);
		else
			complain("%s: %s", c.name, strerror(errno));
		rc = 2;
		goto out;
	}
	if (check_header(c.name, &l) != 0) {
		rc = 2;
		goto out;
	}
	/* import may create the store, but never adopts a directory holding
	 * other data: an existing data.mdb must be a store already */
	if ((size_t)snprintf(data_path, sizeof(data_path), "%s/data.mdb", o->dir) >=
	    sizeof(data_path)) {
		complain("%s: path too long", o->dir);
		rc = 2;
		goto out;
	}
	if (stat(o->dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		complain("cache directory %s: not a directory", o->dir);
		rc = 2;
		goto out;
	}
	fresh = stat(data_path, &sb) != 0;
	if ((c.st = tool_open(o->dir, fresh, o->cache_size)) == NULL) {
		rc = 2;
		goto out;
	}
	while ((ls = read_line(in, &l, max_line)) != LINE_EOF) {
		lineno++;
		if (ls == LINE_ERROR) {
			complain("%s:%lu: %s", c.name, lineno, strerror(errno));
			rc = 1;
			break;
		}
		if (ls == LINE_TOO_LONG) {
			char why[160];

			c.entry_lines++;
			snprintf(why, sizeof(why),
				 "longer than %zu bytes (a body over --max-body-bytes %" PRIu64
				 "?)", max_line, o->max_body);
			skip_line(&c, lineno, why);
			continue;
		}
		if (blank(&l))
			continue;
		import_line(&c, lineno, &l);
	}
	if (rc == 0 && !c.seen_end) {
		complain("%s: no end line: the export was cut short?", c.name);
		rc = 1;
	} else if (rc == 0 && c.end_entries >= 0 &&
		   (uint64_t)c.end_entries != c.entry_lines) {
		complain("%s: %" PRIu64 " entry lines, but the end line says %" PRId64
			 ": lines were lost or added", c.name, c.entry_lines, c.end_entries);
		rc = 1;
	}
	if (c.skipped)
		rc = 1;
	printf("imported %" PRIu64 ", skipped %" PRIu64, c.imported, c.skipped);
	if (c.kept)
		printf(", kept %" PRIu64 " newer entr%s already in the cache", c.kept,
		       c.kept == 1 ? "y" : "ies");
	if (c.evicted)
		printf(", evicted %" PRIu64 " to make room (the cache is too small)",
		       c.evicted);
	putchar('\n');
	store_close(c.st);
out:
	free(l.buf);
	if (!from_stdin)
		fclose(in);
	return rc;
}

/* ---- check and recover ---- */

static int damaged(const struct store_salvage *r)
{
	return r->pages_missing || r->damaged || r->corrupt || !r->has_entries;
}

static int run_check(const struct opts *o)
{
	struct store_salvage r;
	char err[512];
	int json = (o->given & O_JSON) != 0, bad;

	if (store_salvage(o->dir, NULL, NULL, &r, err, sizeof(err)) != STORE_OK) {
		complain("%s", err);
		return 2;
	}
	bad = damaged(&r);
	if (!r.has_entries && r.first_problem[0] == '\0')
		snprintf(r.first_problem, sizeof(r.first_problem),
			 "no \"entries\" database: not a contacts-gateway cache, or its main "
			 "database is lost");
	if (json) {
		printf("{\"directory\":");
		put_json_bytes(stdout, o->dir, strlen(o->dir));
		printf(",\"clean\":%s,\"file_bytes\":%" PRIu64 ",\"needed_bytes\":%" PRIu64
		       ",\"page_size\":%u,\"txnid\":%" PRIu64 ",\"pinned\":%s"
		       ",\"pages_read\":%" PRIu64 ",\"pages_missing\":%" PRIu64
		       ",\"damaged\":%" PRIu64 ",\"intact\":%" PRIu64 ",\"corrupt\":%" PRIu64
		       ",\"first_problem\":",
		       bad ? "false" : "true", r.file_bytes, r.needed_bytes, r.page_size, r.txnid,
		       r.pinned ? "true" : "false", r.pages_read, r.pages_missing, r.damaged,
		       r.intact, r.corrupt);
		put_json_bytes(stdout, r.first_problem, strlen(r.first_problem));
		printf("}\n");
	} else {
		printf("directory        %s\n", o->dir);
		printf("data.mdb         %" PRIu64 " bytes, %" PRIu64 " needed by its trees "
		       "(page size %u)%s\n", r.file_bytes, r.needed_bytes, r.page_size,
		       r.pages_missing ? ": TRUNCATED" : "");
		printf("snapshot         transaction %" PRIu64 ", last page %" PRIu64 ", %s\n",
		       r.txnid, r.last_page,
		       r.pinned ? "held by a read transaction" : "read as it lies (no LMDB)");
		printf("pages            %" PRIu64 " read, %" PRIu64 " missing past the end, %"
		       PRIu64 " damaged pages or nodes\n", r.pages_read, r.pages_missing,
		       r.damaged);
		printf("records          %" PRIu64 " intact, %" PRIu64 " failed their checks\n",
		       r.intact, r.corrupt);
		if (r.first_problem[0])
			printf("first problem    %s\n", r.first_problem);
		if (bad)
			printf("verdict          damaged: copy the intact entries out with "
			       "'contacts-gateway cache recover --cache-dir %s --to NEWDIR'\n",
			       o->dir);
		else
			printf("verdict          clean\n");
	}
	if (fflush(stdout) != 0 || ferror(stdout))
		return 2;
	return bad ? 1 : 0;
}

struct recover_ctx {
	struct store *to;
	uint64_t copied, full, failed;
	char last_error[STORE_ERROR_MAX];
};

static int recover_scan(const uint8_t id[STORE_ID_LEN], enum store_status status,
			const struct store_entry *e, void *arg)
{
	struct recover_ctx *c = arg;
	struct store_entry copy;
	enum store_status s;

	if (status != STORE_OK)
		return 0; /* counted by the salvage */
	copy = *e;
	s = store_put(c->to, id, &copy);
	if (s == STORE_OK) {
		c->copied++;
		return 0;
	}
	if (s == STORE_FULL)
		c->full++;
	else
		c->failed++;
	snprintf(c->last_error, sizeof(c->last_error), "%s", store_last_error(c->to));
	return 0;
}

static int run_recover(const struct opts *o)
{
	struct recover_ctx c;
	struct store_salvage r;
	struct stat a, b;
	char path[PATH_MAX], err[512];
	int rc = 0;

	memset(&c, 0, sizeof(c));
	if ((size_t)snprintf(path, sizeof(path), "%s/data.mdb", o->to) >= sizeof(path)) {
		complain("%s: path too long", o->to);
		return 2;
	}
	if (stat(o->to, &a) == 0 && stat(o->dir, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino) {
		complain("--to %s is the damaged cache directory itself: name a new one", o->to);
		return 2;
	}
	if (stat(path, &a) == 0) {
		complain("--to %s already holds a cache: recover writes into a new directory",
			 o->to);
		return 2;
	}
	/* the source first: an unusable one creates nothing */
	if (store_salvage(o->dir, NULL, NULL, &r, err, sizeof(err)) != STORE_OK) {
		complain("%s", err);
		return 2;
	}
	if ((c.to = store_open(o->to, o->cache_size, TOOL_READERS, 0, err, sizeof(err))) ==
	    NULL) {
		complain("%s", err);
		return 2;
	}
	if (store_salvage(o->dir, recover_scan, &c, &r, err, sizeof(err)) != STORE_OK) {
		complain("%s", err);
		store_close(c.to);
		return 2;
	}
	store_close(c.to);
	if (r.pages_missing)
		complain("data.mdb is truncated (%" PRIu64 " bytes, %" PRIu64 " needed): the "
			 "entries on the %" PRIu64 " missing pages are lost", r.file_bytes,
			 r.needed_bytes, r.pages_missing);
	if (r.damaged)
		complain("%" PRIu64 " damaged pages or nodes skipped (the first: %s): the "
			 "entries there are lost", r.damaged, r.first_problem);
	if (r.corrupt)
		complain("%" PRIu64 " records failed their checksum: not copied", r.corrupt);
	if (c.full)
		complain("%" PRIu64 " entries did not fit in %s (%s): recover again into a new "
			 "directory with a larger --cache-size", c.full, o->to, c.last_error);
	if (c.failed)
		complain("%" PRIu64 " entries could not be written to %s: %s", c.failed, o->to,
			 c.last_error);
	if (damaged(&r) || c.full || c.failed)
		rc = 1;
	printf("recovered %" PRIu64 " entr%s into %s", c.copied, c.copied == 1 ? "y" : "ies",
	       o->to);
	if (rc)
		printf(" (some were lost: see above)");
	putchar('\n');
	if (fflush(stdout) != 0 || ferror(stdout))
		rc = 1;
	return rc;
}

/* ---- the command line ---- */

struct command {
	const char *name;
	int (*run)(const struct opts *o);
	unsigned allowed;
	const char *help;
};

static const struct command commands[] = {
	{"stats", run_stats, O_DIR | O_JSON,
	 "Usage: contacts-gateway cache stats [--cache-dir DIR] [--json]\n"
	 "Counts the entries: corrupt records, expired entries, body bytes, the map's\n"
	 "size and the bytes in use, the oldest and newest stored time (ISO 8601 UTC,\n"
	 "and age), and entries per key hash (hex SHA-256 of an API key; keys are never\n"
	 "stored).\n\n"
	 "  --cache-dir DIR      the cache directory [default: " CACHE_TOOL_DEFAULT_DIR "]\n"
	 "  --json               one JSON object instead of text\n"},
	{"list", run_list, O_DIR | O_KEYHASH | O_KEYSTDIN | O_PREFIX | O_JSON,
	 "Usage: contacts-gateway cache list [--cache-dir DIR] [--key-hash HEX | --key-stdin]\n"
	 "                                   [--query-prefix STR] [--json]\n"
	 "One line per entry: key hash (hex), age in s, expires-in in s (negative when\n"
	 "expired), body bytes, canonical query. A corrupt record is shown as such\n"
	 "(when no filter is given).\n\n"
	 "  --cache-dir DIR      the cache directory [default: " CACHE_TOOL_DEFAULT_DIR "]\n"
	 "  --key-hash HEX       entries of this key hash (64 hex digits, or a prefix of 8+)\n"
	 "  --key-stdin          read an API key from stdin (first line) and use its hash\n"
	 "  --query-prefix STR   entries whose canonical query starts with STR\n"
	 "  --json               one JSON object per line\n"},
	{"purge", run_purge,
	 O_DIR | O_KEYHASH | O_KEYSTDIN | O_PREFIX | O_EXPIRED | O_ALL,
	 "Usage: contacts-gateway cache purge [--cache-dir DIR]\n"
	 "           (--all | [--key-hash HEX | --key-stdin] [--query-prefix STR] [--expired])\n"
	 "Deletes the entries that meet every condition given, and prints how many.\n"
	 "Refuses to run without a condition unless --all is given.\n\n"
	 "  --cache-dir DIR      the cache directory [default: " CACHE_TOOL_DEFAULT_DIR "]\n"
	 "  --all                every entry, corrupt records included\n"
	 "  --key-hash HEX       entries of this key hash (64 hex digits, or a prefix of 8+)\n"
	 "  --key-stdin          read an API key from stdin (first line) and use its hash\n"
	 "  --query-prefix STR   entries whose canonical query starts with STR\n"
	 "  --expired            entries past their expiry\n"},
	{"export", run_export, O_DIR | O_FILE,
	 "Usage: contacts-gateway cache export FILE [--cache-dir DIR]\n"
	 "Writes every entry to FILE ('-': stdout) as JSON lines (docs/operations.md),\n"
	 "from one consistent snapshot. A file is written beside FILE and renamed when\n"
	 "complete. Corrupt records are skipped with a warning.\n\n"
	 "  --cache-dir DIR      the cache directory [default: " CACHE_TOOL_DEFAULT_DIR "]\n"},
	{"import", run_import, O_DIR | O_FILE | O_CACHESIZE | O_MAXBODY | O_COMPRESS,
	 "Usage: contacts-gateway cache import FILE [--cache-dir DIR] [--cache-size BYTES]\n"
	 "                                          [--max-body-bytes BYTES] [--compress LIST]\n"
	 "Writes the entries of an export (FILE, '-': stdin) into the cache, creating\n"
	 "the store if the directory has none. Each line is checked (bounds, hex, the\n"
	 "ETag against the body); a bad line is skipped and named. An entry the cache\n"
	 "holds a newer answer for is kept. The compressed representations are made\n"
	 "again from the body, as the gateway makes them. Prints \"imported N, skipped\n"
	 "M\"; exits 1 if a line was skipped.\n\n"
	 "  --cache-dir DIR        the cache directory [default: " CACHE_TOOL_DEFAULT_DIR "]\n"
	 "  --cache-size BYTES     map size when import creates the store [default: "
	 DEFAULT_CACHE_SIZE "]\n"
	 "  --max-body-bytes BYTES largest body accepted (bounds a line) [default: "
	 DEFAULT_MAX_BODY "]\n"
	 "  --compress LIST        representations made: gzip, br, zstd, or off [default: "
	 DEFAULT_COMPRESS "]\n"},
	{"check", run_check, O_DIR | O_JSON,
	 "Usage: contacts-gateway cache check [--cache-dir DIR] [--json]\n"
	 "Reads data.mdb without trusting it (no memory map; every page checked) and\n"
	 "verifies that the file covers every page its trees use, that those pages are\n"
	 "sound, and every record's checksum. Prints a summary. Safe on a truncated or\n"
	 "damaged file and beside a running gateway.\n\n"
	 "  --cache-dir DIR      the cache directory [default: " CACHE_TOOL_DEFAULT_DIR "]\n"
	 "  --json               one JSON object instead of text\n\n"
	 "Exit status: 0 clean, 1 damaged (run 'contacts-gateway cache recover'), 2 bad\n"
	 "usage or unusable (no cache, not an LMDB file, no sound meta page).\n"},
	{"recover", run_recover, O_DIR | O_TO | O_CACHESIZE,
	 "Usage: contacts-gateway cache recover --to NEWDIR [--cache-dir DIR]\n"
	 "                                      [--cache-size BYTES]\n"
	 "Copies every intact entry (its checksum verified) of a damaged or truncated\n"
	 "cache into a new cache in NEWDIR, reading the old one as check does. Start the\n"
	 "gateway on NEWDIR afterwards (or move it into place). Prints what was copied\n"
	 "and what was lost.\n\n"
	 "  --to NEWDIR          the new cache directory (must hold no cache yet)\n"
	 "  --cache-dir DIR      the damaged cache directory [default: "
	 CACHE_TOOL_DEFAULT_DIR "]\n"
	 "  --cache-size BYTES   map size of the new cache [default: " DEFAULT_CACHE_SIZE "]\n\n"
	 "Exit status: 0 every entry copied, 1 some were lost or could not be written,\n"
	 "2 bad usage or an unusable directory.\n"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	fputs("Usage: contacts-gateway cache COMMAND [OPTIONS]\n"
	      "Tools for a gateway's cache directory; they work while a gateway runs on it.\n\n"
	      "Commands:\n"
	      "  stats  [--cache-dir DIR] [--json]\n"
	      "         entries, corrupt records, sizes, ages, entries per key hash\n"
	      "  list   [--cache-dir DIR] [FILTERS] [--json]\n"
	      "         one line per entry: key hash, age, expires-in, body bytes, query\n"
	      "  purge  [--cache-dir DIR] (--all | FILTERS [--expired])\n"
	      "         deletes the entries meeting every condition; prints how many\n"
	      "  export FILE [--cache-dir DIR]\n"
	      "         writes every entry to FILE as JSON lines ('-': stdout)\n"
	      "  import FILE [--cache-dir DIR] [--cache-size BYTES] [--max-body-bytes BYTES]\n"
	      "         writes an export's entries into the cache ('-': stdin)\n"
	      "  check  [--cache-dir DIR] [--json]\n"
	      "         verifies data.mdb's pages and every record; exit 1 if damaged\n"
	      "  recover --to NEWDIR [--cache-dir DIR] [--cache-size BYTES]\n"
	      "         copies every intact entry of a damaged cache into NEWDIR\n\n"
	      "FILTERS: --key-hash HEX (64 hex digits or a prefix of 8+) or --key-stdin (an\n"
	      "API key on stdin, hashed), and --query-prefix STR; they combine with AND.\n"
	      "--cache-dir defaults to " CACHE_TOOL_DEFAULT_DIR ", as for the gateway.\n"
	      "`contacts-gateway cache COMMAND --help` describes one command.\n\n"
	      "Exit status: 0 success, 1 partial failure, 2 bad usage or unusable directory.\n",
	      out);
}

static int set_key_hash(struct opts *o, const char *v)
{
	size_t len = strlen(v);

	if (len < HASH_PREFIX_MIN || len > 2 * STORE_KEYHASH_LEN) {
		complain("--key-hash: '%s' is not 8 to 64 hex digits", v);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		int d = hex_value((unsigned char)v[i]);

		if (d < 0) {
			complain("--key-hash: '%s' is not hex", v);
			return -1;
		}
		o->hash[i] = "0123456789abcdef"[d];
	}
	o->hash[len] = '\0';
	o->hash_len = len;
	return 0;
}

/* --key-stdin: the first line of stdin (not echoed on a terminal) is an API
 * key; only its hash is kept, the key is wiped. */
static int read_key_stdin(struct opts *o)
{
	char key[KEY_MAX + 1];
	uint8_t hash[STORE_KEYHASH_LEN];
	struct termios old, quiet;
	size_t len = 0;
	int c, echo_off = 0, rc = -1, too_long = 0;

	if (isatty(STDIN_FILENO)) {
		fputs("API key (not echoed): ", stderr);
		if (tcgetattr(STDIN_FILENO, &old) == 0) {
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
		}
	}
	while ((c = getchar()) != EOF && c != '\n') {
		if (len == sizeof(key)) {
			too_long = 1;
			break;
		}
		key[len++] = (char)c;
	}
	if (echo_off) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (len > 0 && key[len - 1] == '\r')
		len--;
	if (too_long || len == 0 || len > KEY_MAX) {
		complain("--key-stdin: no API key on stdin, or one over %d bytes", KEY_MAX);
		goto out;
	}
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e) {
			complain("--key-stdin: an API key is visible ASCII (no spaces)");
			goto out;
		}
	}
	store_hash_api_key(key, len, hash);
	to_hex(hash, STORE_KEYHASH_LEN, o->hash);
	o->hash_len = 2 * STORE_KEYHASH_LEN;
	rc = 0;
out:
	explicit_bzero(key, sizeof(key));
	return rc;
}

/* Parses argv[1..] of a command into o. 0: run, 1: --help, -1: bad usage
 * (reported). */
static int parse_args(const struct command *cmd, int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *name, *eq, *value = NULL;
		const struct tool_opt *t = NULL;
		size_t len;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
			return 1;
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
			if ((cmd->allowed & O_FILE) && !(o->given & O_FILE) &&
			    (arg[0] != '-' || strcmp(arg, "-") == 0)) {
				o->file = arg;
				o->given |= O_FILE;
				continue;
			}
			complain("unexpected argument '%s' (see contacts-gateway cache %s --help)",
				 arg, cmd->name);
			return -1;
		}
		name = arg + 2;
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		for (size_t k = 0; k < N_TOOL_OPTS; k++)
			if (strlen(tool_opts[k].name) == len &&
			    memcmp(tool_opts[k].name, name, len) == 0)
				t = &tool_opts[k];
		if (t == NULL || !(cmd->allowed & t->bit)) {
			complain("%s option '--%.*s' (see contacts-gateway cache %s --help)",
				 t ? "no" : "unknown", (int)len, name, cmd->name);
			return -1;
		}
		if (o->given & t->bit) {
			complain("option '--%s' given twice", t->name);
			return -1;
		}
		o->given |= t->bit;
		if (t->has_value) {
			if (eq)
				value = eq + 1;
			else if (i + 1 < argc)
				value = argv[++i];
			else {
				complain("option '--%s' needs a value", t->name);
				return -1;
			}
		} else if (eq) {
			complain("option '--%s' takes no value", t->name);
			return -1;
		}
		switch (t->bit) {
		case O_DIR:
			if (*value == '\0') {
				complain("--cache-dir: empty");
				return -1;
			}
			o->dir = value;
			break;
		case O_TO:
			if (*value == '\0') {
				complain("--to: empty");
				return -1;
			}
			o->to = value;
			break;
		case O_KEYHASH:
			if (set_key_hash(o, value) != 0)
				return -1;
			break;
		case O_PREFIX:
			if (*value == '\0') {
				complain("--query-prefix: empty (use --all to mean every entry)");
				return -1;
			}
			o->prefix = value;
			o->prefix_len = strlen(value);
			break;
		case O_CACHESIZE:
			if (parse_bytes(value, 1u << 20, (uint64_t)1 << 40, &o->cache_size) != 0) {
				complain("--cache-size: '%s' is not 1M to 1024G bytes (K, M, G "
					 "suffixes allowed)", value);
				return -1;
			}
			break;
		case O_COMPRESS:
			if (encoding_parse_list(value, &o->compress) != 0) {
				complain("--compress: '%s' is not a list of gzip, br, zstd, or off",
					 value);
				return -1;
			}
			break;
		case O_MAXBODY:
			if (parse_bytes(value, 1024, (uint64_t)4 << 30, &o->max_body) != 0) {
				complain("--max-body-bytes: '%s' is not 1K to 4G bytes (K, M, G "
					 "suffixes allowed)", value);
				return -1;
			}
			break;
		default:
			break;
		}
	}
	if ((cmd->allowed & O_FILE) && !(o->given & O_FILE)) {
		complain("%s needs a FILE ('-': std%s)", cmd->name,
			 strcmp(cmd->name, "export") == 0 ? "out" : "in");
		return -1;
	}
	if (strcmp(cmd->name, "recover") == 0 && !(o->given & O_TO)) {
		complain("recover needs --to NEWDIR (a new directory for the intact entries)");
		return -1;
	}
	if ((o->given & O_KEYHASH) && (o->given & O_KEYSTDIN)) {
		complain("--key-hash and --key-stdin exclude each other");
		return -1;
	}
	if (strcmp(cmd->name, "purge") == 0) {
		unsigned conditions = o->given & (O_KEYHASH | O_KEYSTDIN | O_PREFIX | O_EXPIRED);

		if ((o->given & O_ALL) && conditions) {
			complain("purge: --all cannot be combined with a condition");
			return -1;
		}
		if (!(o->given & O_ALL) && !conditions) {
			complain("purge: no condition given; name one (--key-hash, --key-stdin, "
				 "--query-prefix, --expired) or --all");
			return -1;
		}
	}
	if ((o->given & O_KEYSTDIN) && read_key_stdin(o) != 0)
		return -1;
	return 0;
}

int cache_tool_main(int argc, char **argv)
{
	const struct command *cmd = NULL;
	struct opts o;
	int rc;

	/* a closed pipe (export - | head) is a write error, exit 1, not a signal */
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		complain("unknown command '%s' (see contacts-gateway cache --help)", argv[1]);
		return 2;
	}
	memset(&o, 0, sizeof(o));
	o.cmd = cmd->name;
	o.dir = CACHE_TOOL_DEFAULT_DIR;
	if (parse_bytes(DEFAULT_CACHE_SIZE, 0, UINT64_MAX, &o.cache_size) != 0 ||
	    parse_bytes(DEFAULT_MAX_BODY, 0, UINT64_MAX, &o.max_body) != 0 ||
	    encoding_parse_list(DEFAULT_COMPRESS, &o.compress) != 0)
		abort();
	rc = parse_args(cmd, argc - 1, argv + 1, &o);
	if (rc == 1) {
		fputs(cmd->help, stdout);
		if (strstr(cmd->help, "Exit status") == NULL)
			fputs("\nExit status: 0 success, 1 partial failure, 2 bad usage or "
			      "unusable directory.\n", stdout);
		return 0;
	}
	if (rc != 0)
		return 2;
	return cmd->run(&o);
}
