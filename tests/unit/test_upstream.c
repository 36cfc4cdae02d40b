/*
 * Unit tests for gateway/upstream's pure parts (gateway/upstream_contract.h):
 * the contract on the vendor's answer, fed line by line as curl hands them
 * over - statuses (3xx, 304, 1xx, 999), Content-Type and Content-Length given
 * twice, over-long values, framing, folding, interim blocks, trailers - and
 * what a relayed answer's headers hold. No curl, no network.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/upstream_contract.h"

#define JSON_TYPE "application/json; charset=utf-8"
#define T1994 INT64_C(784111777000) /* Sun, 06 Nov 1994 08:49:37 GMT */

/* One answer's head and the response it fills. */
struct answer {
	struct upstream_head h;
	struct upstream_response r;
};

static void answer_init(struct answer *a)
{
	memset(a, 0, sizeof(*a));
	upstream_head_init(&a->h, a->r.error, sizeof(a->r.error));
}

/*
 * Feeds the lines (NULL-terminated) one by one. Returns the index of the
 * line the head refused (0 returned), or -1 if it took them all; a refused
 * head refuses every later line too.
 */
static int feed(struct answer *a, const char *const *lines)
{
	int refused = -1;

	for (int i = 0; lines[i] != NULL; i++) {
		size_t n = strlen(lines[i]);
		size_t rc = upstream_head_line(&a->h, lines[i], n);

		if (rc == 0 && refused < 0)
			refused = i;
		assert_true(rc == 0 || rc == n);
		if (refused >= 0)
			assert_int_equal(rc, 0);
	}
	assert_int_equal(a->h.invalid, refused >= 0);
	return refused;
}

/* The relayed value of header `name`, or NULL. */
static const char *relayed(const struct answer *a, const char *name)
{
	for (size_t i = 0; i < a->r.n_headers; i++)
		if (strcmp(a->r.headers[i].name, name) == 0)
			return a->r.headers[i].value;
	return NULL;
}

/* Feeds a whole head that must be accepted, then relays it as `status`. */
static void relay(struct answer *a, long status, const char *const *lines)
{
	answer_init(a);
	assert_int_equal(feed(a, lines), -1);
	a->r.status = status;
	upstream_head_relay(&a->h, &a->r, T1994);
}

/* A string of n copies of c (n < 1024). */
static const char *run_of(char c, size_t n)
{
	static char buf[4][1024];
	static int next;
	char *s = buf[next++ % 4];

	assert_true(n < sizeof(buf[0]));
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ------------------------------------------------------------------------ */
/* Statuses                                                                 */

static void test_status_refused(void **state)
{
	static const long relayed_ok[] = {200, 400, 401, 403, 404, 429, 500, 502, 599};
	static const long refused[] = {-1,  0,	 100, 101, 199, 201, 204, 206,
				       299, 300, 301, 302, 307, 308, 399, 402,
				       405, 418, 499, 600, 999, 1000};
	char why[256];

	(void)state;
	for (size_t i = 0; i < sizeof(relayed_ok) / sizeof(relayed_ok[0]); i++) {
		why[0] = '\0';
		assert_int_equal(upstream_status_refused(relayed_ok[i], why, sizeof(why)),
				 0);
		assert_string_equal(why, "");
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		assert_int_equal(upstream_status_refused(refused[i], why, sizeof(why)),
				 1);
	upstream_status_refused(304, why, sizeof(why));
	assert_string_equal(why, "upstream sent a 304 to an unconditional request");
	upstream_status_refused(301, why, sizeof(why));
	assert_string_equal(why, "upstream redirect (301) is not followed");
	upstream_status_refused(399, why, sizeof(why));
	assert_string_equal(why, "upstream redirect (399) is not followed");
	upstream_status_refused(999, why, sizeof(why));
	assert_string_equal(why, "upstream status 999 is outside the contract");
	upstream_status_refused(204, why, sizeof(why));
	assert_string_equal(why, "upstream status 204 is outside the contract");
	/* a short buffer is cut, never overrun */
	memset(why, 'x', sizeof(why));
	upstream_status_refused(999, why, 8);
	assert_string_equal(why, "upstrea");
	assert_int_equal(why[8], 'x');
}

static void test_status_of_line(void **state)
{
	static const struct {
		const char *line;
		long status;
	} cases[] = {
	    {"HTTP/1.1 200 OK\r\n", 200},
	    {"HTTP/2 200\r\n", 200},
	    {"HTTP/1.1 404 Not Found\r\n", 404},
	    {"HTTP/1.1 999 Whatever\r\n", 999},
	    {"HTTP/1.0 304\n", 304},
	    {"HTTP/1.1  204 two spaces\r\n", 204},
	    {"HTTP/1.1 200", 200},
	    {"HTTP/1.1 20 OK\r\n", -1},
	    {"HTTP/1.1 2000 OK\r\n", -1},
	    {"HTTP/1.1 2x0 OK\r\n", -1},
	    {"HTTP/1.1 \r\n", -1},
	    {"HTTP/1.1", -1},
	    {"HTTP/", -1},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(
		    upstream_status_of_line(cases[i].line, strlen(cases[i].line)),
		    cases[i].status);
}

/* A final 3xx, 304, 1xx (101) or 999 stops the answer at its status line,
 * before its headers and body. */
static void test_head_refuses_statuses(void **state)
{
	static const struct {
		const char *status_line;
		const char *why;
	} cases[] = {
	    {"HTTP/1.1 301 Moved Permanently\r\n",
	     "upstream redirect (301) is not followed"},
	    {"HTTP/1.1 302 Found\r\n", "upstream redirect (302) is not followed"},
	    {"HTTP/1.1 304 Not Modified\r\n",
	     "upstream sent a 304 to an unconditional request"},
	    {"HTTP/1.1 999 Odd\r\n", "upstream status 999 is outside the contract"},
	    {"HTTP/1.1 101 Switching Protocols\r\n",
	     "upstream status 101 is outside the contract"},
	    {"HTTP/2 204\r\n", "upstream status 204 is outside the contract"},
	};
	struct answer a;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *lines[] = {cases[i].status_line, "Location: /x\r\n",
				       "Content-Type: application/json\r\n", "\r\n",
				       NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 0);
		assert_string_equal(a.r.error, cases[i].why);
	}
	/* a status line without a code is curl's to judge */
	{
		const char *lines[] = {"HTTP/1.1 abc\r\n", "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), -1);
	}
}

/* ------------------------------------------------------------------------ */
/* Headers given twice                                                      */

static void test_duplicate_content_type(void **state)
{
	struct answer a;

	(void)state;
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n",
				       "Content-Type: application/json\r\n",
				       "Content-Type: text/html\r\n", "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 2);
		assert_string_equal(a.r.error,
				    "upstream sent 2 different Content-Type headers");
	}
	{
		/* the same again (trimmed, any case of name) is collapsed */
		const char *lines[] = {"HTTP/1.1 200 OK\r\n",
				       "Content-Type: application/json\r\n",
				       "content-type:application/json  \r\n",
				       "CONTENT-TYPE: \tapplication/json\r\n",
				       "\r\n",
				       NULL};

		relay(&a, 200, lines);
		assert_string_equal(relayed(&a, "Content-Type"), "application/json");
		assert_int_equal(a.r.n_headers, 1);
	}
	{
		/* values compare exactly: a different case is a different value */
		const char *lines[] = {"HTTP/1.1 404 Not Found\r\n",
				       "Content-Type: text/plain\r\n",
				       "Content-Type: text/PLAIN\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 2);
	}
}

static void test_duplicate_content_length(void **state)
{
	struct answer a;

	(void)state;
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", "Content-Length: 10\r\n",
				       "Content-Length: 11\r\n", "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 2);
		assert_string_equal(a.r.error,
				    "upstream sent 2 different Content-Length headers");
	}
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", "Content-Length: 10\r\n",
				       "content-length: 10\r\n", "\r\n", NULL};

		relay(&a, 200, lines);
		assert_null(relayed(&a, "Content-Length")); /* the front frames */
	}
	{
		/* not plain digits, on its first line */
		static const char *const bad[] = {
		    "Content-Length: 1e3\r\n", "Content-Length: -1\r\n",
		    "Content-Length: +5\r\n",  "Content-Length: 1 0\r\n",
		    "Content-Length:\r\n",     NULL};

		for (int i = 0; bad[i] != NULL; i++) {
			const char *lines[] = {"HTTP/1.1 200 OK\r\n", bad[i], "\r\n",
					       NULL};

			answer_init(&a);
			assert_int_equal(feed(&a, lines), 1);
			assert_string_equal(a.r.error,
					    "upstream sent a Content-Length that "
					    "is not a decimal number");
		}
	}
	{
		/* framing twice over */
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", "Content-Length: 10\r\n",
				       "Transfer-Encoding: chunked\r\n", "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 3); /* found at the blank line */
		assert_string_equal(a.r.error, "upstream sent both Content-Length and "
					       "Transfer-Encoding");
	}
	{
		/* codings are a list: repeats that differ are curl's to judge */
		const char *lines[] = {"HTTP/1.1 200 OK\r\n",
				       "Transfer-Encoding: gzip\r\n",
				       "Transfer-Encoding: chunked\r\n", "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), -1);
	}
}

/* ------------------------------------------------------------------------ */
/* Long values                                                              */

static void test_long_content_type(void **state)
{
	char line[1100], other[1100];
	const char *tail;
	struct answer a;

	(void)state;
	/* 255 bytes: still a value */
	tail = run_of('a', 255 - strlen("application/json;x="));
	snprintf(line, sizeof(line), "Content-Type: application/json;x=%s\r\n", tail);
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", line, "\r\n", NULL};

		relay(&a, 200, lines);
		assert_int_equal(strlen(relayed(&a, "Content-Type")), 255);
	}
	/* 256 and more: a 200 gets the JSON type, another status none */
	tail = run_of('a', 256 - strlen("application/json;x="));
	snprintf(line, sizeof(line), "Content-Type: application/json;x=%s\r\n", tail);
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", line, "\r\n", NULL};

		relay(&a, 200, lines);
		assert_string_equal(relayed(&a, "Content-Type"), JSON_TYPE);
		assert_int_equal(a.r.n_headers, 1);
		relay(&a, 404, lines);
		assert_null(relayed(&a, "Content-Type"));
	}
	/* two over-long values: compared by hash, the same is collapsed... */
	tail = run_of('b', 900);
	snprintf(line, sizeof(line), "Content-Type: text/x;p=%s\r\n", tail);
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", line, line, "\r\n", NULL};

		relay(&a, 200, lines);
		assert_string_equal(relayed(&a, "Content-Type"), JSON_TYPE);
	}
	/* ...one differing in its last byte, of the same length, is not */
	snprintf(other, sizeof(other), "Content-Type: text/x;p=%.*sc\r\n", 899, tail);
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", line, other, "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 2);
	}
	/* a long advice header is dropped, the answer stands */
	snprintf(line, sizeof(line), "X-RateLimit-Limit: %s\r\n", run_of('1', 300));
	{
		const char *lines[] = {"HTTP/1.1 429 Too Many\r\n", line,
				       "Retry-After: 5\r\n", "\r\n", NULL};

		relay(&a, 429, lines);
		assert_null(relayed(&a, "X-RateLimit-Limit"));
		assert_string_equal(relayed(&a, "Retry-After"), "5");
	}
}

static void test_media_type_grammar(void **state)
{
	static const char *const json_ok[] = {"application/json",
					      "Application/JSON",
					      "application/json;charset=utf-8",
					      "application/json ; charset=utf-8",
					      "application/json;\tcharset=\"utf-8\"",
					      "application/json; a=\"b;c\\\"d\"",
					      "application/json;",
					      "application/json; ;",
					      NULL};
	static const char *const bad[] = {"",
					  "application",
					  "application/",
					  "/json",
					  "application /json",
					  "application/json x",
					  "application/json; a",
					  "application/json; a=",
					  "application/json; =b",
					  "application/json; a=\"b",
					  "application/json; a=\"b\\",
					  "application/json; a=b c",
					  "application/json\r",
					  "appli\x01"
					  "cation/json",
					  "application/j\xc3\xa9son",
					  NULL};

	(void)state;
	for (int i = 0; json_ok[i] != NULL; i++) {
		assert_true(upstream_media_type_ok(json_ok[i], strlen(json_ok[i]), 1));
		assert_true(upstream_media_type_ok(json_ok[i], strlen(json_ok[i]), 0));
	}
	for (int i = 0; bad[i] != NULL; i++)
		if (upstream_media_type_ok(bad[i], strlen(bad[i]), 0))
			fail_msg("accepted: \"%s\"", bad[i]);
	/* any media type, unless only JSON will do */
	assert_true(upstream_media_type_ok("text/plain", 10, 0));
	assert_false(upstream_media_type_ok("text/plain", 10, 1));
	assert_false(upstream_media_type_ok("application/jsonx", 17, 1));
	assert_false(upstream_media_type_ok("application/json-seq", 20, 1));
	assert_true(upstream_media_type_ok("application/problem+json", 24, 0));
	/* n bounds the value, not a NUL */
	assert_true(upstream_media_type_ok("text/plainGARBAGE", 10, 0));
	/* shorter than UPSTREAM_HEADER_VALUE_MAX */
	{
		char v[UPSTREAM_HEADER_VALUE_MAX + 1];

		memcpy(v, "text/", 5);
		memset(v + 5, 'x', sizeof(v) - 5);
		assert_true(upstream_media_type_ok(v, UPSTREAM_HEADER_VALUE_MAX - 1, 0));
		assert_false(upstream_media_type_ok(v, UPSTREAM_HEADER_VALUE_MAX, 0));
	}
}

/* ------------------------------------------------------------------------ */
/* Blocks, folding, trailers                                                */

static void test_interim_blocks_and_trailers(void **state)
{
	struct answer a;

	(void)state;
	{
		/* an interim 100's headers are forgotten at the final block */
		const char *lines[] = {
		    "HTTP/1.1 100 Continue\r\n", "Content-Type: text/html\r\n", "\r\n",
		    "HTTP/1.1 200 OK\r\n", "Content-Type: application/json\r\n", "\r\n",
		    /* chunked trailers: never part of the answer */
		    "Content-Type: text/html\r\n", "Retry-After: 9\r\n", "\r\n", NULL};

		relay(&a, 200, lines);
		assert_int_equal(a.h.interim, 100);
		assert_int_equal(a.h.state, UPSTREAM_HEAD_DONE);
		assert_string_equal(relayed(&a, "Content-Type"), "application/json");
		assert_null(relayed(&a, "Retry-After"));
	}
	{
		/* lines before a status line are curl's to judge */
		const char *lines[] = {"garbage\r\n", "HTTP/1.1 200 OK\r\n", "\r\n",
				       NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), -1);
		assert_int_equal(a.h.state, UPSTREAM_HEAD_DONE);
	}
	{
		/* obs-fold */
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", "X-Thing: a\r\n", " b\r\n",
				       "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 2);
		assert_string_equal(
		    a.r.error,
		    "upstream sent a folded header line (obsolete line folding)");
	}
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", "X-Thing: a\r\n", "\tb\r\n",
				       "\r\n", NULL};

		answer_init(&a);
		assert_int_equal(feed(&a, lines), 2);
	}
	{
		/* a line without a colon, untracked names: passed over */
		const char *lines[] = {"HTTP/1.1 200 OK\r\n",
				       "no colon here\r\n",
				       "Content-Type-Extra: x\r\n",
				       "Content-Typ: y\r\n",
				       "\n",
				       NULL};

		relay(&a, 200, lines);
		assert_string_equal(relayed(&a, "Content-Type"), JSON_TYPE);
	}
}

/* ------------------------------------------------------------------------ */
/* What a relayed answer holds                                              */

static void test_relay(void **state)
{
	struct answer a;

	(void)state;
	{
		const char *lines[] = {"HTTP/1.1 200 OK\r\n",
				       "Content-Type: text/html\r\n",
				       "Content-Length: 2\r\n",
				       "X-RateLimit-Limit: 100\r\n",
				       "X-RateLimit-Remaining: 99\r\n",
				       "X-RateLimit-Reset: 60\r\n",
				       "RateLimit-Limit: 100\r\n",
				       "RateLimit-Remaining: 99\r\n",
				       "RateLimit-Reset: 60\r\n",
				       "Server: x\r\n",
				       "\r\n",
				       NULL};

		relay(&a, 200, lines);
		assert_string_equal(relayed(&a, "Content-Type"),
				    JSON_TYPE); /* not JSON */
		assert_string_equal(relayed(&a, "X-RateLimit-Limit"), "100");
		assert_string_equal(relayed(&a, "X-RateLimit-Remaining"), "99");
		assert_string_equal(relayed(&a, "X-RateLimit-Reset"), "60");
		assert_string_equal(relayed(&a, "RateLimit-Limit"), "100");
		assert_string_equal(relayed(&a, "RateLimit-Remaining"), "99");
		assert_string_equal(relayed(&a, "RateLimit-Reset"), "60");
		assert_int_equal(a.r.n_headers, 7);
		assert_true(a.r.n_headers <= UPSTREAM_HEADERS_MAX);
	}
	{
		/* no Content-Type on a 200: the JSON type; on a 404: none */
		const char *lines[] = {"HTTP/1.1 200 OK\r\n", "\r\n", NULL};

		relay(&a, 200, lines);
		assert_string_equal(relayed(&a, "Content-Type"), JSON_TYPE);
		relay(&a, 404, lines);
		assert_int_equal(a.r.n_headers, 0);
	}
	{
		/* another status keeps a valid media type, drops a broken one */
		const char *ok[] = {"HTTP/1.1 404 Not Found\r\n",
				    "Content-Type: text/plain; charset=us-ascii\r\n",
				    "\r\n", NULL};
		const char *broken[] = {"HTTP/1.1 404 Not Found\r\n",
					"Content-Type: text plain\r\n", "\r\n", NULL};

		relay(&a, 404, ok);
		assert_string_equal(relayed(&a, "Content-Type"),
				    "text/plain; charset=us-ascii");
		relay(&a, 404, broken);
		assert_null(relayed(&a, "Content-Type"));
	}
	{
		/* Retry-After: seconds or an HTTP-date; else, or given twice
		 * with different values, or unprintable: dropped */
		static const struct {
			const char *line;
			const char *relayed;
		} cases[] = {
		    {"Retry-After: 120\r\n", "120"},
		    {"Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
		     "Sun, 06 Nov 1994 08:49:37 GMT"},
		    {"Retry-After: soon\r\n", NULL},
		    {"Retry-After: -1\r\n", NULL},
		    {"Retry-After:\r\n", NULL},
		    {"Retry-After: 1\x01\r\n", NULL},
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			const char *lines[] = {"HTTP/1.1 429 Too Many Requests\r\n",
					       cases[i].line, "\r\n", NULL};
			const char *got;

			relay(&a, 429, lines);
			got = relayed(&a, "Retry-After");
			if (cases[i].relayed == NULL)
				assert_null(got);
			else
				assert_string_equal(got, cases[i].relayed);
		}
	}
	{
		const char *twice[] = {"HTTP/1.1 429 Too Many Requests\r\n",
				       "Retry-After: 5\r\n",
				       "Retry-After: 6\r\n",
				       "X-RateLimit-Reset: 5\r\n",
				       "X-RateLimit-Reset: 5\r\n",
				       "\r\n",
				       NULL};

		relay(&a, 429, twice); /* the answer stands */
		assert_null(relayed(&a, "Retry-After"));
		assert_string_equal(relayed(&a, "X-RateLimit-Reset"), "5");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_status_refused),
	    cmocka_unit_test(test_status_of_line),
	    cmocka_unit_test(test_head_refuses_statuses),
	    cmocka_unit_test(test_duplicate_content_type),
	    cmocka_unit_test(test_duplicate_content_length),
	    cmocka_unit_test(test_long_content_type),
	    cmocka_unit_test(test_media_type_grammar),
	    cmocka_unit_test(test_interim_blocks_and_trailers),
	    cmocka_unit_test(test_relay),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
