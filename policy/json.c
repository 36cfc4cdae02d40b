/*
 * json: see json.h. An iterative recogniser: a stack of one bit per open
 * container (1 object, 0 array) and a small state saying what may come
 * next. Every byte is looked at once.
 */
#include "policy/json.h"

#include <stdint.h>
#include <string.h>

/* What the recogniser expects next. */
enum want {
	W_VALUE,       /* a value (after '[' or ',' in an array, ':' in an object) */
	W_VALUE_OR_END, /* just after '[': a value or ']' */
	W_KEY,         /* after ',' in an object: a string key */
	W_KEY_OR_END,  /* just after '{': a key or '}' */
	W_COLON,       /* after a key */
	W_NEXT,        /* after a value inside a container: ',' or its closer */
	W_DONE,        /* the top-level array is closed: only whitespace */
};

static int is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Skips a string whose opening quote is at p[*i]; 0 on a malformed one. */
static int skip_string(const unsigned char *p, size_t len, size_t *i)
{
	size_t k = *i + 1;

	while (k < len) {
		unsigned char c = p[k];

		if (c == '"') {
			*i = k + 1;
			return 1;
		}
		if (c < 0x20)
			return 0;
		if (c != '\\') {
			k++;
			continue;
		}
		if (++k >= len)
			return 0;
		switch (p[k]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
		case 't':
			k++;
			break;
		case 'u':
			if (len - k < 5 || !is_hex(p[k + 1]) || !is_hex(p[k + 2]) ||
			    !is_hex(p[k + 3]) || !is_hex(p[k + 4]))
				return 0;
			k += 5;
			break;
		default:
			return 0;
		}
	}
	return 0;
}

/* Skips a number starting at p[*i]; 0 on a malformed one. */
static int skip_number(const unsigned char *p, size_t len, size_t *i)
{
	size_t k = *i;

	if (k < len && p[k] == '-')
		k++;
	if (k >= len)
		return 0;
	if (p[k] == '0') {
		k++;
	} else if (p[k] >= '1' && p[k] <= '9') {
		while (k < len && is_digit(p[k]))
			k++;
	} else {
		return 0;
	}
	if (k < len && p[k] == '.') {
		if (++k >= len || !is_digit(p[k]))
			return 0;
		while (k < len && is_digit(p[k]))
			k++;
	}
	if (k < len && (p[k] == 'e' || p[k] == 'E')) {
		if (++k < len && (p[k] == '+' || p[k] == '-'))
			k++;
		if (k >= len || !is_digit(p[k]))
			return 0;
		while (k < len && is_digit(p[k]))
			k++;
	}
	*i = k;
	return 1;
}

/* Skips the literal `word` at p[*i]; 0 if it is not there. */
static int skip_word(const unsigned char *p, size_t len, size_t *i, const char *word)
{
	size_t n = strlen(word);

	if (len - *i < n || memcmp(p + *i, word, n) != 0)
		return 0;
	*i += n;
	return 1;
}

int json_is_array(const char *text, size_t len)
{
	const unsigned char *p = (const unsigned char *)text;
	uint64_t stack[JSON_DEPTH_MAX / 64]; /* bit set: that level is an object */
	size_t i = 0, depth = 0;
	enum want want = W_VALUE;

	while (i < len && is_ws(p[i]))
		i++;
	if (i >= len || p[i] != '[')
		return 0; /* only an array will do at the top */
	while (i < len) {
		unsigned char c = p[i];

		if (is_ws(c)) {
			i++;
			continue;
		}
		switch (want) {
		case W_DONE:
			return 0; /* something after the array */
		case W_COLON:
			if (c != ':')
				return 0;
			i++;
			want = W_VALUE;
			continue;
		case W_KEY:
		case W_KEY_OR_END:
			if (c == '}' && want == W_KEY_OR_END)
				goto close;
			if (c != '"' || !skip_string(p, len, &i))
				return 0;
			want = W_COLON;
			continue;
		case W_NEXT:
			if (c == ',') {
				int object = (stack[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;

				i++;
				want = object ? W_KEY : W_VALUE;
				continue;
			}
			if (c == ']' || c == '}')
				goto close;
			return 0;
		case W_VALUE:
		case W_VALUE_OR_END:
			break;
		}
		/* a value, or ']' right after '[' */
		if (c == ']' && want == W_VALUE_OR_END)
			goto close;
		if (c == '[' || c == '{') {
			if (depth == JSON_DEPTH_MAX)
				return 0;
			if (c == '{')
				stack[depth / 64] |= UINT64_C(1) << (depth % 64);
			else
				stack[depth / 64] &= ~(UINT64_C(1) << (depth % 64));
			depth++;
			i++;
			want = c == '{' ? W_KEY_OR_END : W_VALUE_OR_END;
			continue;
		}
		if (c == '"') {
			if (!skip_string(p, len, &i))
				return 0;
		} else if (c == '-' || is_digit(c)) {
			if (!skip_number(p, len, &i))
				return 0;
		} else if (!skip_word(p, len, &i, c == 't' ? "true" : c == 'f' ? "false"
								     : "null")) {
			return 0;
		}
		want = W_NEXT;
		continue;
close:
		/* c closes the innermost container: it must be of its kind */
		if (depth == 0 ||
		    (int)((stack[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1) != (c == '}'))
			return 0;
		depth--;
		i++;
		want = depth == 0 ? W_DONE : W_NEXT;
	}
	return want == W_DONE;
}
