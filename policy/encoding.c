/* encoding: see encoding.h. */
#include "policy/encoding.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

static const char *const names[ENC_N] = {"identity", "gzip", "br", "zstd"};

/* Ties go to the smallest representation first. */
static const enum encoding preference[ENC_N] = {ENC_BR, ENC_ZSTD, ENC_GZIP, ENC_IDENTITY};

const char *encoding_name(enum encoding e)
{
	return e < ENC_N ? names[e] : "identity";
}

static int is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* A qvalue: "0", "1", "0.5", "1.000", ... as thousandths; -1 if malformed. */
static int parse_q(const char *p, size_t len)
{
	int q, scale = 100;

	if (len == 0 || (p[0] != '0' && p[0] != '1'))
		return -1;
	q = (p[0] - '0') * 1000;
	if (len == 1)
		return q;
	if (p[1] != '.' || len > 5)
		return -1;
	for (size_t i = 2; i < len; i++, scale /= 10) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		q += (p[i] - '0') * scale;
	}
	return q > 1000 ? -1 : q;
}

enum encoding encoding_choose(const char *accept, unsigned available)
{
	int q[ENC_N], star = -1, named[ENC_N] = {0};
	enum encoding best = ENC_IDENTITY;
	int best_q = -1;
	const char *p = accept;

	for (int e = 0; e < ENC_N; e++)
		q[e] = -1;
	if (accept == NULL)
		return ENC_IDENTITY;
	while (*p) {
		const char *tok, *end;
		size_t tlen;
		int value = 1000;

		while (*p == ',' || is_space(*p))
			p++;
		if (!*p)
			break;
		tok = p;
		while (*p && *p != ',' && *p != ';' && !is_space(*p))
			p++;
		tlen = (size_t)(p - tok);
		/* parameters: only q matters */
		while (*p && *p != ',') {
			while (is_space(*p) || *p == ';')
				p++;
			end = p;
			while (*end && *end != ',' && *end != ';')
				end++;
			if ((end - p) >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
				size_t vlen = (size_t)(end - p - 2);

				while (vlen > 0 && is_space(p[2 + vlen - 1]))
					vlen--;
				value = parse_q(p + 2, vlen);
			}
			p = end;
		}
		if (value < 0)
			continue; /* a malformed element counts as not said */
		if (tlen == 1 && tok[0] == '*') {
			star = value;
			continue;
		}
		for (int e = 0; e < ENC_N; e++) {
			if (strlen(names[e]) == tlen && strncasecmp(tok, names[e], tlen) == 0) {
				q[e] = value;
				named[e] = 1;
			}
		}
		/* x-gzip is gzip (RFC 9110 section 8.4.1.3) */
		if (tlen == 6 && strncasecmp(tok, "x-gzip", 6) == 0) {
			q[ENC_GZIP] = value;
			named[ENC_GZIP] = 1;
		}
	}
	for (int e = 0; e < ENC_N; e++) {
		if (named[e])
			continue;
		if (star >= 0)
			q[e] = star;
		else if (e == ENC_IDENTITY)
			q[e] = 1; /* acceptable, but after anything the client named */
		else
			q[e] = 0;
	}
	for (int i = 0; i < ENC_N; i++) {
		enum encoding e = preference[i];

		if (e != ENC_IDENTITY && !(available & ENC_BIT(e)))
			continue;
		if (q[e] > 0 && q[e] > best_q) {
			best = e;
			best_q = q[e];
		}
	}
	return best_q > 0 ? best : ENC_IDENTITY;
}

int encoding_parse_list(const char *list, unsigned *mask)
{
	const char *p = list;

	*mask = 0;
	if (strcmp(list, "off") == 0 || strcmp(list, "") == 0)
		return 0;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		int found = 0;

		for (int e = ENC_GZIP; e < ENC_N; e++) {
			if (strlen(names[e]) == len && strncmp(p, names[e], len) == 0) {
				*mask |= ENC_BIT(e);
				found = 1;
			}
		}
		if (!found)
			return -1;
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}
