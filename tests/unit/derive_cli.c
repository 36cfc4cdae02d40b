/*
 * derive_cli: policy/derive on the command line, for the differential test
 * (tests/integration/test_derive_diff.py) and for trying a case by hand.
 *
 *   derive_cli [--rules all|pages,cursors,days] S_QUERY FETCHED_MS Q_QUERY < S_BODY
 *       prints the derived body (exit 0) or the refusal reason and a newline
 *       (exit 1); a bad argument or query exits 2.
 *   derive_cli [--rules ...] --batch
 *       reads records from stdin until EOF, each
 *         S_QUERY \t FETCHED_MS \t Q_QUERY \t BODY_LEN \n BODY \n
 *       and answers each on stdout with
 *         "ok RULE LEN\n" BODY "\n"    or    "no REASON\n"
 *       (a record whose query does not parse: "no query\n"). Queries are raw
 *       query strings (percent-encoded; no tab or newline). Exit 0 at EOF,
 *       2 on a framing error.
 *   derive_cli [--rules ...] --bench N S_QUERY FETCHED_MS Q_QUERY < S_BODY
 *       derives N times (bench/derive) and prints one line: the outcome,
 *       S's bytes and elements, and the mean time per derivation.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/derive.h"

#define BODY_MAX (64u << 20) /* the gateway's own body ceiling */
#define LINE_MAX_LEN (3 * QUERY_RAW_MAX + 64)

static int parse_rules(const char *s, unsigned *rules)
{
	char buf[64];
	char *tok, *save = NULL;

	if (strcmp(s, "all") == 0) {
		*rules = DERIVE_RULE_ALL;
		return 0;
	}
	if (strlen(s) >= sizeof(buf))
		return -1;
	memcpy(buf, s, strlen(s) + 1);
	*rules = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "pages") == 0)
			*rules |= DERIVE_RULE_PAGES;
		else if (strcmp(tok, "cursors") == 0)
			*rules |= DERIVE_RULE_CURSORS;
		else if (strcmp(tok, "days") == 0)
			*rules |= DERIVE_RULE_DAYS;
		else
			return -1;
	}
	return 0;
}

static int parse_i64(const char *s, int64_t *v)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno || end == s || *end != '\0')
		return -1;
	*v = x;
	return 0;
}

static int parse_query(const char *raw, struct query *q)
{
	struct query_error err;

	return query_normalise(raw, strlen(raw), q, &err) == QUERY_OK ? 0 : -1;
}

/* Derives one case; writes the answer or the reason to stdout in `batch` or
 * plain form. Returns 0 derived, 1 refused. */
static int one(const struct query *sq, const char *body, size_t body_len, int64_t fetched,
	       const struct query *q, unsigned rules, int batch, char *out_buf)
{
	struct derive_source src = {sq, body, body_len, fetched};
	struct derive_answer a;
	enum derive_status st = derive_answer(&src, q, rules, &a);
	long n;

	if (st != DERIVE_OK) {
		printf(batch ? "no %s\n" : "%s\n", derive_status_name(st));
		return 1;
	}
	n = derive_write(&a, body, out_buf, body_len + 2);
	if (n < 0)
		abort(); /* an answer is never longer than S's body */
	if (batch)
		printf("ok %s %ld\n", derive_rule_name(a.rule), n);
	fwrite(out_buf, 1, (size_t)n, stdout);
	if (batch)
		putchar('\n');
	return 0;
}

static int batch(unsigned rules)
{
	static struct query sq, q;
	char line[LINE_MAX_LEN];
	char *body = malloc(BODY_MAX + 2), *out = malloc(BODY_MAX + 2);

	if (body == NULL || out == NULL)
		abort();
	while (fgets(line, sizeof(line), stdin)) {
		char *f[4], *save = NULL;
		int64_t fetched, len;
		int k = 0, bad;

		for (char *t = strtok_r(line, "\t\n", &save); t && k < 4;
		     t = strtok_r(NULL, "\t\n", &save))
			f[k++] = t;
		if (k != 4 || parse_i64(f[1], &fetched) != 0 ||
		    parse_i64(f[3], &len) != 0 || len < 0 || len > (int64_t)BODY_MAX ||
		    fread(body, 1, (size_t)len + 1, stdin) != (size_t)len + 1 ||
		    body[len] != '\n') {
			fprintf(stderr, "derive_cli: bad record\n");
			return 2;
		}
		bad = parse_query(f[0], &sq) != 0 || parse_query(f[2], &q) != 0;
		if (bad)
			printf("no query\n");
		else
			one(&sq, body, (size_t)len, fetched, &q, rules, 1, out);
		fflush(stdout);
	}
	free(body);
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	static struct query sq, q;
	unsigned rules = DERIVE_RULE_ALL;
	int64_t fetched, iterations = 0;
	size_t len = 0, cap = 1 << 16;
	char *body, *out;
	int i = 1, rc;

	if (argc > 2 && strcmp(argv[1], "--rules") == 0) {
		if (parse_rules(argv[2], &rules) != 0) {
			fprintf(stderr, "derive_cli: bad --rules\n");
			return 2;
		}
		i = 3;
	}
	if (argc - i == 1 && strcmp(argv[i], "--batch") == 0)
		return batch(rules);
	if (argc - i == 5 && strcmp(argv[i], "--bench") == 0) {
		if (parse_i64(argv[i + 1], &iterations) != 0 || iterations < 1)
			return 2;
		i += 2;
	}
	if (argc - i != 3 || parse_query(argv[i], &sq) != 0 ||
	    parse_i64(argv[i + 1], &fetched) != 0 || parse_query(argv[i + 2], &q) != 0) {
		fprintf(stderr,
			"usage: derive_cli [--rules R] S_QUERY FETCHED_MS Q_QUERY "
			"< S_BODY | derive_cli [--rules R] --batch\n");
		return 2;
	}
	body = malloc(cap);
	if (body == NULL)
		abort();
	for (;;) {
		size_t n = fread(body + len, 1, cap - len, stdin);

		len += n;
		if (len < cap)
			break;
		if (cap >= BODY_MAX)
			return 2;
		cap *= 2;
		body = realloc(body, cap);
		if (body == NULL)
			abort();
	}
	out = malloc(len + 2);
	if (out == NULL)
		abort();
	if (iterations > 0) {
		struct derive_source src = {&sq, body, len, fetched};
		struct derive_answer a = {0};
		enum derive_status st = DERIVE_OK;
		struct timespec t0, t1;
		double ns;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int64_t k = 0; k < iterations; k++)
			st = derive_answer(&src, &q, rules, &a);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 +
		      (double)(t1.tv_nsec - t0.tv_nsec)) /
		     (double)iterations;
		printf(
		    "%s %s: S %zu bytes, %zu elements, answer %zu elements; %.1f us per "
		    "derivation, %.0f MB/s\n",
		    derive_status_name(st),
		    st == DERIVE_OK ? derive_rule_name(a.rule) : "-", len,
		    st == DERIVE_OK ? a.s_count : 0, st == DERIVE_OK ? a.count : 0,
		    ns / 1e3, (double)len / ns * 1e3);
		free(body);
		free(out);
		return 0;
	}
	rc = one(&sq, body, len, fetched, &q, rules, 0, out);
	free(body);
	free(out);
	return rc;
}
