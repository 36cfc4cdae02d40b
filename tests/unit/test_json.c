/* Unit tests for policy/json: the JSON-array recogniser, by cases and
 * against cJSON on generated and mutated documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "policy/json.h"

static int is_array(const char *s)
{
	return json_is_array(s, strlen(s));
}

static void test_accepts(void **state)
{
	static const char *const good[] = {
		"[]", " [ ] ", "\n\t[]\r\n", "[1]", "[-0]", "[0.5e-3]", "[1E+9]", "[-12.34e5]",
		"[true,false,null]", "[\"\"]", "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"]",
		"[\"\\u00e9\\uD83D\\uDE00\"]", "[\"caf\xc3\xa9\"]", "[{}]", "[{\"a\":1}]",
		"[{\"a\":{\"b\":[1,{\"c\":null}]},\"d\":\"e\"}]", "[[[]],[[],[]]]",
		"[ 1 , 2 ,\n3 ]", "[{ \"k\" : \"v\" , \"n\" : [ ] }]",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!is_array(good[i]))
			fail_msg("refused: %s", good[i]);
}

static void test_refuses(void **state)
{
	static const char *const bad[] = {
		"", " ", "{}", "1", "\"[]\"", "null", "[", "]", "[1", "[1,]", "[,1]", "[1 2]",
		"[]]", "[][]", "[] x", "[01]", "[1.]", "[.5]", "[+1]", "[1e]", "[1e+]", "[-]",
		"[--1]", "[0x10]", "[NaN]", "[Infinity]", "[tru]", "[nul]", "[True]", "[\"a]",
		"[\"\\x\"]", "[\"\\u12\"]", "[\"\\u12g4\"]", "[\"a\tb\"]", "[\"a\nb\"]",
		"[{]", "[{\"a\"}]", "[{\"a\":}]", "[{\"a\":1,}]", "[{1:2}]", "[{\"a\" 1}]",
		"[}", "[{]}", "[[}]", "[{\"a\":1]}", "['a']", "[1]\x01",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (is_array(bad[i]))
			fail_msg("accepted: %s", bad[i]);
	/* only the bytes given are read: the NUL inside is data */
	assert_false(json_is_array("[1]\0", 4));
	assert_true(json_is_array("[1] trailing", 3));
}

static void test_depth_bound(void **state)
{
	char buf[2 * JSON_DEPTH_MAX + 8];
	size_t n;

	(void)state;
	for (size_t depth = JSON_DEPTH_MAX; depth <= JSON_DEPTH_MAX + 1; depth++) {
		n = 0;
		for (size_t i = 0; i < depth; i++)
			buf[n++] = '[';
		for (size_t i = 0; i < depth; i++)
			buf[n++] = ']';
		assert_int_equal(json_is_array(buf, n), depth <= JSON_DEPTH_MAX);
	}
}

/* A small deterministic generator of JSON values. */
static uint64_t rng = 42;

static unsigned next(unsigned n)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)((rng >> 33) % n);
}

static void gen(char *out, size_t *n, size_t cap, int depth)
{
	static const char *const atoms[] = {"0", "-1.5", "2e10", "true", "false", "null",
					    "\"x\"", "\"\\u0041\\n\"", "\"\xc3\xa9\""};
	unsigned kind = depth > 6 ? 0 : next(4);

	if (*n + 64 > cap)
		kind = 0;
	if (kind == 0) {
		const char *a = atoms[next(sizeof(atoms) / sizeof(atoms[0]))];

		memcpy(out + *n, a, strlen(a));
		*n += strlen(a);
		return;
	}
	out[(*n)++] = kind == 1 ? '{' : '[';
	for (unsigned i = 0, k = next(4); i < k && *n + 64 < cap; i++) {
		if (i)
			out[(*n)++] = ',';
		if (next(3) == 0)
			out[(*n)++] = ' ';
		if (kind == 1) {
			memcpy(out + *n, "\"k\":", 4);
			*n += 4;
		}
		gen(out, n, cap, depth + 1);
	}
	out[(*n)++] = kind == 1 ? '}' : ']';
}

/* What cJSON says: one array, nothing after it. */
static int cjson_is_array(const char *s, size_t len)
{
	const char *end = NULL;
	cJSON *doc = cJSON_ParseWithLengthOpts(s, len, &end, 0);
	int ok = cJSON_IsArray(doc);

	cJSON_Delete(doc);
	if (ok)
		while (end < s + len && (*end == ' ' || *end == '\n' || *end == '\t' ||
					 *end == '\r'))
			end++;
	return ok && end == s + len;
}

static void test_against_cjson(void **state)
{
	static const char noise[] = "[]{},:\"\\ 0-1eE.tfnu\x01\xff";
	char buf[4096];

	(void)state;
	for (int round = 0; round < 20000; round++) {
		size_t n = 0;

		buf[n++] = '[';
		gen(buf, &n, sizeof(buf) - 2, 1);
		buf[n++] = ']';
		if (round % 2 == 0) {
			/* a valid document: both must accept */
			if (!json_is_array(buf, n) || !cjson_is_array(buf, n))
				fail_msg("disagree on a valid document: %.*s", (int)n, buf);
			continue;
		}
		/* a mutated one: whatever we accept, cJSON must accept too */
		for (int m = 0, k = 1 + (int)next(3); m < k; m++) {
			size_t at = next((unsigned)n);

			switch (next(3)) {
			case 0: buf[at] = noise[next(sizeof(noise) - 1)]; break;
			case 1: memmove(buf + at, buf + at + 1, n - at - 1); n--; break;
			default:
				if (n + 1 < sizeof(buf)) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = noise[next(sizeof(noise) - 1)];
					n++;
				}
			}
			if (n == 0)
				break;
		}
		if (json_is_array(buf, n) && !cjson_is_array(buf, n))
			fail_msg("accepted what cJSON refuses: %.*s", (int)n, buf);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepts),
		cmocka_unit_test(test_refuses),
		cmocka_unit_test(test_depth_bound),
		cmocka_unit_test(test_against_cjson),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
