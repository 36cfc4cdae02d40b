/*
 * encoding: content codings, and the choice among the representations of
 * an answer by a request's Accept-Encoding (RFC 9110 section 12.5.3).
 *
 * Stored answers may carry, besides their identity body, a gzip, a br and
 * a zstd representation (computed once, when stored). encoding_choose
 * reads Accept-Encoding: a list of codings, each with an optional
 * ";q=VALUE" (0 to 1, three decimals; q=0 means "not acceptable"), "*"
 * standing for every coding not named, "identity" acceptable unless
 * refused by name or by "*;q=0". It picks the acceptable representation
 * with the highest q among those available; ties go to the smallest
 * (br, then zstd, then gzip, then identity). No header, or one that
 * accepts nothing available: identity (RFC 9110 allows a server to send
 * identity when nothing else fits; the gateway always does).
 *
 * Pure: no allocation, no I/O; malformed elements are skipped, never fatal.
 */
#ifndef CG_POLICY_ENCODING_H
#define CG_POLICY_ENCODING_H

enum encoding {
	ENC_IDENTITY = 0,
	ENC_GZIP,
	ENC_BR,
	ENC_ZSTD,
	ENC_N,
};

#define ENC_BIT(e) (1u << (e))

/* "identity", "gzip", "br", "zstd": the token in headers. */
const char *encoding_name(enum encoding e);

/* The representation to send for `accept` (the Accept-Encoding value, or
 * NULL when absent) among `available` (ENC_BIT mask; identity is always
 * available). */
enum encoding encoding_choose(const char *accept, unsigned available);

/* Parses a --compress list ("gzip,br", "zstd", "off") into an ENC_BIT
 * mask. Returns 0, or -1 on an unknown name. */
int encoding_parse_list(const char *list, unsigned *mask);

#endif
