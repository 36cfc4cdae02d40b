/*
 * fuzz_json: policy/json.c's json_is_array against cJSON as a second parser.
 *
 * Oracle, with the differences json.h documents accounted for:
 *   1. json_is_array accepts => cJSON parses one array with only JSON
 *      whitespace after it. Except: cJSON refuses a \u escape of a lone
 *      UTF-16 surrogate, which json_is_array does not decode (it checks
 *      four hex digits); such inputs are skipped.
 *   2. cJSON accepts an array nested at most JSON_DEPTH_MAX deep => the
 *      array as cJSON prints it back (strict JSON: cJSON is lenient about
 *      what it reads - control bytes as whitespace or inside strings,
 *      leading zeros - but not about what it writes) is accepted by
 *      json_is_array. Deeper ones are refused by json_is_array (its depth
 *      bound), which is checked too.
 *   3. Refusal is stable under a prefix: the bytes before the end of an
 *      accepted array, cut anywhere, are refused (one array, nothing less).
 */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/json.h"

static int json_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A \u escape of a UTF-16 surrogate anywhere (cJSON refuses lone ones). */
static int has_surrogate_escape(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 5 < n; i++)
		if (p[i] == '\\' && p[i + 1] == 'u' && (p[i + 2] | 0x20) == 'd' &&
		    ((p[i + 3] >= '8' && p[i + 3] <= '9') ||
		     ((p[i + 3] | 0x20) >= 'a' && (p[i + 3] | 0x20) <= 'f')))
			return 1;
	return 0;
}

static int depth(const cJSON *item)
{
	int d = 0;

	for (const cJSON *c = item ? item->child : NULL; c; c = c->next) {
		int k = depth(c);

		if (k > d)
			d = k;
	}
	return item && (cJSON_IsArray(item) || cJSON_IsObject(item)) ? d + 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *end = NULL;
	int ours = json_is_array((const char *)data, size);
	cJSON *doc = cJSON_ParseWithLengthOpts((const char *)data, size, &end, 0);
	int theirs = 0;

	if (doc != NULL && cJSON_IsArray(doc)) {
		size_t used = (size_t)(end - (const char *)data);

		theirs = 1;
		for (size_t i = used; i < size; i++)
			if (!json_ws(data[i]))
				theirs = 0;
	}
	/* 1 */
	if (ours && !theirs && !has_surrogate_escape(data, size))
		abort();
	/* 2 */
	if (theirs) {
		char *printed = cJSON_PrintUnformatted(doc);

		if (printed != NULL) {
			int d = depth(doc);
			int again = json_is_array(printed, strlen(printed));

			if (d <= JSON_DEPTH_MAX ? !again : again)
				abort();
			free(printed);
		}
	}
	/* 3 */
	if (ours && size > 0) {
		size_t last = size;

		while (last > 0 && json_ws(data[last - 1]))
			last--;
		if (last > 1 && json_is_array((const char *)data, last - 1))
			abort();
	}
	cJSON_Delete(doc);
	return 0;
}
