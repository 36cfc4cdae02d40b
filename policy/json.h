/*
 * json: is an upstream body one JSON array? (RFC 8259 syntax)
 *
 * The gateway stores only answers whose body is a JSON array. Parsing the
 * body into a document to find out (cJSON) allocates several times the body
 * and, at the 64 MiB body ceiling, holds the loop for a long while. This
 * checker reads the bytes once, allocates nothing and keeps one bit of
 * state per open container, so its cost is one pass and its memory a fixed
 * JSON_DEPTH_MAX bits.
 *
 * Accepted: optional whitespace, one array, optional whitespace, nothing
 * else. Inside: objects, arrays, strings (escapes checked: \" \\ \/ \b \f
 * \n \r \t \uXXXX; raw control characters below 0x20 refused), numbers in
 * JSON's grammar (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), true,
 * false, null. Bytes of 0x80 and above inside strings are taken as they are
 * (as cJSON does: UTF-8 validity is the producer's business). Nesting
 * deeper than JSON_DEPTH_MAX is refused.
 */
#ifndef CG_POLICY_JSON_H
#define CG_POLICY_JSON_H

#include <stddef.h>

#define JSON_DEPTH_MAX 512

/* 1 if p[0..len) is exactly one JSON array (whitespace around allowed),
 * else 0. Reads only p[0..len); p need not be NUL-terminated. */
int json_is_array(const char *p, size_t len);

#endif
