/* Unit tests for gateway/config: defaults, flags, the file, precedence, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/config.h"

static enum config_status parse(struct cg_config *cfg, char *err, int argc,
				char **argv)
{
	config_defaults(cfg);
	return config_from_args(cfg, argc, argv, 0, err, CONFIG_ERR_MAX);
}

/* Writes `text` to a fresh temporary file; returns its path (static). */
static const char *write_file(const char *text)
{
	static char path[64];
	int fd;

	snprintf(path, sizeof(path), "/tmp/cg-test-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void test_defaults(void **state)
{
	struct cg_config cfg;

	(void)state;
	config_defaults(&cfg);
	assert_string_equal(cfg.listen.host, "127.0.0.1");
	assert_int_equal(cfg.listen.port, 8080);
	assert_string_equal(cfg.upstream, "https://api.vambe.me");
	assert_int_equal(cfg.upstream_timeout_ms, 30000);
	assert_int_equal(cfg.connect_timeout_ms, 5000);
	assert_int_equal(cfg.max_connections, 1024);
	assert_int_equal(cfg.max_body_bytes, 64u << 20);
	assert_int_equal(cfg.log_level, CGLOG_INFO);
	assert_string_equal(cfg.config_path, "");
}

static void test_flags(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *argv[] = {"--listen", "[::1]:0", "--upstream=http://127.0.0.1:9/base/",
			"--max-body-bytes", "2M", "--log-level", "debug",
			"--upstream-timeout", "1500"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 9, argv), CONFIG_OK);
	assert_string_equal(cfg.listen.host, "::1");
	assert_int_equal(cfg.listen.port, 0);
	assert_string_equal(cfg.upstream, "http://127.0.0.1:9/base");
	assert_int_equal(cfg.max_body_bytes, 2u << 20);
	assert_int_equal(cfg.log_level, CGLOG_DEBUG);
	assert_int_equal(cfg.upstream_timeout_ms, 1500);
}

static void test_protection_and_outage_settings(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *good[] = {"--upstream-rate", "2.5", "--offline", "--caller-header",
			"x-client-id", "--admin-listen", "127.0.0.1:0", "--admin-token",
			"0123456789abcdef", "--stale-if-error", "0", "--offline-when-open=false"};
	char *bad_rate[] = {"--upstream-rate", "0"};
	char *bad_rate2[] = {"--upstream-rate", "1.2.3"};
	char *bad_flag[] = {"--offline=perhaps"};
	char *bad_name[] = {"--caller-header", "x client"};
	char *bad_token[] = {"--admin-token", "has space"};
	char *bad_admin[] = {"--admin-listen", "nowhere"};

	(void)state;
	config_defaults(&cfg);
	assert_true(cfg.upstream_rate == 10.0);
	assert_int_equal(cfg.upstream_burst, 20);
	assert_int_equal(cfg.stale_if_error_s, 86400);
	assert_int_equal(cfg.stale_while_revalidate_s, 0);
	assert_int_equal(cfg.offline, 0);
	assert_string_equal(cfg.admin_listen.host, "");
	assert_string_equal(cfg.caller_header, "");
	assert_int_equal(parse(&cfg, err, 12, good), CONFIG_OK);
	assert_true(cfg.upstream_rate == 2.5);
	assert_int_equal(cfg.offline, 1); /* a bare flag */
	assert_string_equal(cfg.caller_header, "x-client-id");
	assert_string_equal(cfg.admin_listen.host, "127.0.0.1");
	assert_string_equal(cfg.admin_token, "0123456789abcdef");
	assert_int_equal(cfg.stale_if_error_s, 0);
	assert_int_equal(cfg.offline_when_open, 0);
	assert_int_equal(parse(&cfg, err, 2, bad_rate), CONFIG_ERROR);
	assert_non_null(strstr(err, "upstream-rate"));
	assert_int_equal(parse(&cfg, err, 2, bad_rate2), CONFIG_ERROR);
	assert_int_equal(parse(&cfg, err, 1, bad_flag), CONFIG_ERROR);
	assert_non_null(strstr(err, "true or false"));
	assert_int_equal(parse(&cfg, err, 2, bad_name), CONFIG_ERROR);
	assert_non_null(strstr(err, "header name"));
	assert_int_equal(parse(&cfg, err, 2, bad_token), CONFIG_ERROR);
	assert_int_equal(parse(&cfg, err, 2, bad_admin), CONFIG_ERROR);
	assert_non_null(strstr(err, "admin-listen"));
}

static void test_help_version(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *a1[] = {"--listen", "1.2.3.4:5", "--help"};
	char *a2[] = {"--version"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 3, a1), CONFIG_HELP);
	assert_int_equal(parse(&cfg, err, 1, a2), CONFIG_VERSION);
}

static void expect_error(char **argv, int argc, const char *needle)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];

	assert_int_equal(parse(&cfg, err, argc, argv), CONFIG_ERROR);
	if (strstr(err, needle) == NULL)
		fail_msg("error '%s' does not mention '%s'", err, needle);
	assert_null(strchr(err, '\n'));
}

static void test_bad_values(void **state)
{
	char *unknown[] = {"--nope", "1"};
	char *missing[] = {"--listen"};
	char *positional[] = {"serve"};
	char *zero[] = {"--max-connections", "0"};
	char *abc[] = {"--max-connections", "abc"};
	char *neg[] = {"--upstream-timeout", "-5"};
	char *huge[] = {"--upstream-timeout", "99999999999999999999999"};
	char *nohost[] = {"--listen", "nohost"};
	char *badport[] = {"--listen", "127.0.0.1:65536"};
	char *ftp[] = {"--upstream", "ftp://x"};
	char *query[] = {"--upstream", "http://x/?a=b"};
	char *level[] = {"--log-level", "loud"};
	char *bytes[] = {"--max-body-bytes", "12Q"};

	(void)state;
	expect_error(unknown, 2, "--nope");
	expect_error(missing, 1, "needs a value");
	expect_error(positional, 1, "serve");
	expect_error(zero, 2, "max-connections");
	expect_error(abc, 2, "abc");
	expect_error(neg, 2, "upstream-timeout");
	expect_error(huge, 2, "upstream-timeout");
	expect_error(nohost, 2, "HOST:PORT");
	expect_error(badport, 2, "HOST:PORT");
	expect_error(ftp, 2, "upstream");
	expect_error(query, 2, "upstream");
	expect_error(level, 2, "loud");
	expect_error(bytes, 2, "max-body-bytes");
}

static void test_file_and_precedence(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	const char *path = write_file("# a comment\n\n  listen = 127.0.0.1:9999 \n"
				      "upstream-timeout=2000\nlog-level = warn\n");
	char *argv[] = {"--upstream-timeout", "3000", "--config", (char *)path};

	(void)state;
	assert_int_equal(parse(&cfg, err, 4, argv), CONFIG_OK);
	assert_int_equal(cfg.listen.port, 9999);      /* from the file */
	assert_int_equal(cfg.upstream_timeout_ms, 3000); /* flag beats file */
	assert_int_equal(cfg.log_level, CGLOG_WARN);
	unlink(path);
}

static void test_file_errors(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	const char *path = write_file("listen = 127.0.0.1:1\nbogus = 1\n");
	char *argv[] = {"--config", (char *)path};
	char *nofile[] = {"--config", "/nonexistent/cg.conf"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 2, argv), CONFIG_ERROR);
	assert_non_null(strstr(err, ":2:"));
	assert_non_null(strstr(err, "bogus"));
	unlink(path);

	path = write_file("max-connections = lots\n");
	argv[1] = (char *)path;
	assert_int_equal(parse(&cfg, err, 2, argv), CONFIG_ERROR);
	assert_non_null(strstr(err, ":1:"));
	unlink(path);

	path = write_file("just words\n");
	argv[1] = (char *)path;
	assert_int_equal(parse(&cfg, err, 2, argv), CONFIG_ERROR);
	assert_non_null(strstr(err, "key = value"));
	unlink(path);

	assert_int_equal(parse(&cfg, err, 2, nofile), CONFIG_ERROR);
	assert_non_null(strstr(err, "/nonexistent/cg.conf"));
}

static void test_durations(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *good[] = {"--upstream-timeout", "2s", "--connect-timeout", "500ms",
			"--client-timeout", "5m", "--breaker-cooldown", "1h",
			"--queue-timeout", "0", "--ttl", "5m", "--stale-if-error", "1d",
			"--stale-while-revalidate", "30", "--ttl-cursor", "2000ms",
			"--ttl-wide", "1h", "--shutdown-timeout", "0s"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 22, good), CONFIG_OK);
	assert_int_equal(cfg.upstream_timeout_ms, 2000);
	assert_int_equal(cfg.connect_timeout_ms, 500);
	assert_int_equal(cfg.client_timeout_ms, 300000);
	assert_int_equal(cfg.breaker_cooldown_ms, 3600000);
	assert_int_equal(cfg.queue_timeout_ms, 0);
	assert_int_equal(cfg.ttl_s, 300);
	assert_int_equal(cfg.stale_if_error_s, 86400);
	assert_int_equal(cfg.stale_while_revalidate_s, 30); /* bare: seconds */
	assert_int_equal(cfg.ttl_cursor_s, 2);
	assert_int_equal(cfg.ttl_wide_s, 3600);
	assert_int_equal(cfg.shutdown_timeout_ms, 0);
}


static void test_bad_durations(void **state)
{
	char *bad[][2] = {
		{"--upstream-timeout", "1d"},      /* above 1h */
		{"--upstream-timeout", "0ms"},     /* below 1 */
		{"--upstream-timeout", "1.5s"},    /* whole numbers only */
		{"--upstream-timeout", "10 s"},
		{"--upstream-timeout", "5S"},      /* lower-case units */
		{"--upstream-timeout", "5M"},
		{"--upstream-timeout", "s"},
		{"--upstream-timeout", "5sec"},
		{"--upstream-timeout", "-5s"},
		{"--upstream-timeout", "99999999999999999999d"},
		{"--upstream-timeout", "999999999999999d"}, /* overflows in ms */
		{"--ttl", "1500ms"},               /* not whole seconds */
		{"--ttl", "366d"},                 /* above TTL_MAX_S */
		{"--ttl", "inherit"},              /* only the classes inherit */
		{"--stale-if-error", "1.5"},
		{"--ttl-wide", "5x"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_error(bad[i], 2, bad[i][0] + 2);
}

static void test_missing_values(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *ttl[] = {"--ttl", "--listen", "127.0.0.1:1"};
	char *last[] = {"--listen", "127.0.0.1:1", "--upstream"};
	char *dashdash[] = {"--cache-dir", "--"};
	char *eq_form[] = {"--admin-token=--not-missing-1234", "--cache-dir", "-d"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 3, ttl), CONFIG_ERROR);
	assert_string_equal(err, "--ttl needs a value");
	assert_int_equal(parse(&cfg, err, 3, last), CONFIG_ERROR);
	assert_string_equal(err, "--upstream needs a value");
	assert_int_equal(parse(&cfg, err, 2, dashdash), CONFIG_ERROR);
	assert_string_equal(err, "--cache-dir needs a value");
	/* --name=VALUE passes a value that starts with dashes; one dash is a value */
	assert_int_equal(parse(&cfg, err, 3, eq_form), CONFIG_OK);
	assert_string_equal(cfg.admin_token, "--not-missing-1234");
	assert_string_equal(cfg.cache_dir, "-d");
}

static void test_boolean_words(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *off[] = {"--offline", "false", "--ttl", "7"};
	char *on[] = {"--offline", "yes", "--offline-when-open", "on"};
	char *bare[] = {"--offline", "--ttl", "7", "--offline-when-open"};
	char *zero[] = {"--offline", "0", "--offline-when-open", "off"};
	char *word[] = {"--offline", "maybe"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 4, off), CONFIG_OK);
	assert_int_equal(cfg.offline, 0);
	assert_int_equal(cfg.ttl_s, 7);
	assert_int_equal(parse(&cfg, err, 4, on), CONFIG_OK);
	assert_int_equal(cfg.offline, 1);
	assert_int_equal(cfg.offline_when_open, 1);
	assert_int_equal(parse(&cfg, err, 4, bare), CONFIG_OK);
	assert_int_equal(cfg.offline, 1);
	assert_int_equal(cfg.offline_when_open, 1);
	assert_int_equal(cfg.ttl_s, 7);
	assert_int_equal(parse(&cfg, err, 4, zero), CONFIG_OK);
	assert_int_equal(cfg.offline, 0);
	assert_int_equal(cfg.offline_when_open, 0);
	/* a word that is not boolean is the next argument, not the flag's */
	assert_int_equal(parse(&cfg, err, 2, word), CONFIG_ERROR);
	assert_non_null(strstr(err, "maybe"));
}

static void test_check_config_and_version_flags(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *t[] = {"--ttl", "5", "-t"};
	char *t_long[] = {"--check-config", "--ttl", "5"};
	char *t_bad[] = {"-t", "--ttl", "x"};
	char *v[] = {"-v"};
	char *vv[] = {"--ttl", "5", "-V"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 3, t), CONFIG_CHECK);
	assert_int_equal(cfg.ttl_s, 5); /* every setting is applied */
	assert_int_equal(parse(&cfg, err, 3, t_long), CONFIG_CHECK);
	assert_int_equal(parse(&cfg, err, 3, t_bad), CONFIG_ERROR);
	assert_int_equal(parse(&cfg, err, 1, v), CONFIG_VERSION);
	assert_int_equal(parse(&cfg, err, 3, vv), CONFIG_VERSION);
}

static void test_repeated_key_in_file(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char want[CONFIG_ERR_MAX];
	const char *path = write_file("ttl = 5\n# comment\nlisten = 127.0.0.1:1\n"
				      "  ttl=6\n");
	char *argv[] = {"--config", (char *)path};

	(void)state;
	assert_int_equal(parse(&cfg, err, 2, argv), CONFIG_ERROR);
	snprintf(want, sizeof(want), "%s:4: 'ttl' already set on line 1", path);
	assert_string_equal(err, want);
	unlink(path);
}

static void test_redact_url(void **state)
{
	char out[CONFIG_URL_MAX];
	char tiny[8];
	static const char *const cases[][2] = {
		{"https://api.vambe.me", "https://api.vambe.me"},
		{"https://user:secret@api.vambe.me/v1", "https://***@api.vambe.me/v1"},
		{"http://user@h:8080", "http://***@h:8080"},
		{"http://u:p%40ss@h/x", "http://***@h/x"},
		{"http://u:pa/ss@h/x", "http://***@h/x"}, /* a raw '/' in the password */
		{"u:secret@h", "***@h"},                  /* no scheme */
		{"http://h/a?b=c@d", "http://h/a?b=c@d"},   /* '@' in a query only */
		{"", ""},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		config_redact_url(cases[i][0], out, sizeof(out));
		assert_string_equal(out, cases[i][1]);
	}
	config_redact_url("http://u:secret@h", tiny, sizeof(tiny));
	assert_null(strstr(tiny, "secret"));
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

static void test_credential_not_in_errors(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *argv[] = {"--upstream", "ftp://user:hunter2@x"};
	char *good[] = {"--upstream", "https://user:hunter2@x/"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 2, argv), CONFIG_ERROR);
	assert_null(strstr(err, "hunter2"));
	assert_non_null(strstr(err, "ftp://***@x"));
	assert_int_equal(parse(&cfg, err, 2, good), CONFIG_OK);
	assert_string_equal(cfg.upstream, "https://user:hunter2@x"); /* kept for curl */
}

static void test_upstream_ca_file(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	const char *path = write_file("-----BEGIN CERTIFICATE-----\n");
	char *good[] = {"--upstream-ca-file", (char *)path};
	char *missing[] = {"--upstream-ca-file", "/nonexistent/ca.pem"};
	char *dir[] = {"--upstream-ca-file", "/tmp"};
	char *none[] = {"--upstream-ca-file="};

	(void)state;
	config_defaults(&cfg);
	assert_string_equal(cfg.upstream_ca_file, "");
	assert_int_equal(parse(&cfg, err, 2, good), CONFIG_OK);
	assert_string_equal(cfg.upstream_ca_file, path);
	assert_int_equal(parse(&cfg, err, 2, missing), CONFIG_ERROR);
	assert_non_null(strstr(err, "upstream-ca-file"));
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(parse(&cfg, err, 2, dir), CONFIG_ERROR);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(parse(&cfg, err, 1, none), CONFIG_OK);
	assert_string_equal(cfg.upstream_ca_file, "");
	unlink(path);
}

static void test_token_warnings(void **state)
{
	struct cg_config cfg;
	char err[CONFIG_ERR_MAX];
	char *argv_token[] = {"--admin-token", "0123456789abcdef"};
	const char *path = write_file("admin-token = 0123456789abcdef\n");
	char *file[] = {"--config", (char *)path};
	char *plain[] = {"--ttl", "5"};

	(void)state;
	assert_int_equal(parse(&cfg, err, 2, plain), CONFIG_OK);
	assert_int_equal(cfg.warn, 0);
	assert_int_equal(parse(&cfg, err, 2, argv_token), CONFIG_OK);
	assert_int_equal(cfg.warn, CONFIG_WARN_TOKEN_ARGV);
	assert_int_equal(chmod(path, 0600), 0); /* mkstemp's mode, said again */
	assert_int_equal(parse(&cfg, err, 2, file), CONFIG_OK);
	assert_int_equal(cfg.warn, 0);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(parse(&cfg, err, 2, file), CONFIG_OK);
	assert_int_equal(cfg.warn, CONFIG_WARN_TOKEN_FILE);
	unlink(path);
}

/* What `print` writes, in a static buffer (overwritten by the next call). */
static const char *captured(void (*print)(FILE *))
{
	static char buf[2][32768];
	static int which;
	char *out = buf[which ^= 1];
	FILE *f = fmemopen(out, sizeof(buf[0]), "w");

	assert_non_null(f);
	print(f);
	assert_true(ftell(f) < (long)sizeof(buf[0]) - 1); /* it all fitted */
	fclose(f);
	return out;
}

static void print_usage(FILE *f)
{
	config_usage(f, "contacts-gateway");
}

/* The line of `text` that starts with `start` (at most 511 bytes), or "". */
static const char *line_of(const char *text, const char *start)
{
	static char line[512];
	const char *p = strstr(text, start);
	size_t len = p ? strcspn(p, "\n") : 0;

	snprintf(line, sizeof(line), "%.*s", (int)len, p ? p : "");
	return line;
}

static void test_usage_shows_bounds(void **state)
{
	const char *text = captured(print_usage);

	(void)state;
	assert_non_null(strstr(line_of(text, "--upstream-timeout MS"),
			       "[1..3600000 ms] [default: 30000]"));
	assert_non_null(strstr(line_of(text, "--ttl-cursor"),
			       "[0..31536000 s, or inherit] [default: inherit]"));
	assert_non_null(strstr(line_of(text, "--max-body-bytes"),
			       "[1K..4G bytes] [default: 64M]"));
	assert_non_null(strstr(text, "-t, --check-config"));
	assert_non_null(strstr(text, "-v, -V, --version"));
}

static void test_manpage_has_every_option(void **state)
{
	const char *usage = captured(print_usage);
	const char *text = captured(config_manpage_options);
	size_t tps = 0, flags = 0;

	(void)state;
	for (const char *p = text; (p = strstr(p, ".TP\n")) != NULL; p++)
		tps++;
	/* every "  --name" line of --help is one .TP paragraph; the actions too */
	for (const char *p = usage; (p = strstr(p, "\n  --")) != NULL; p++)
		flags++;
	assert_int_equal(tps, flags + 3);
	assert_non_null(strstr(text, "\\fB\\-\\-upstream\\-timeout\\fR \\fIMS\\fR\n"));
	assert_non_null(strstr(text, "Range: 1..3600000 ms.\nDefault: 30000.\n"));
	assert_null(strstr(text, "\n.\n"));
	for (const char *p = text; *p; p++) /* no bare hyphen reaches roff */
		if (*p == '-')
			assert_true(p > text && p[-1] == '\\');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_help_version),
		cmocka_unit_test(test_protection_and_outage_settings),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_file_and_precedence),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_bad_durations),
		cmocka_unit_test(test_missing_values),
		cmocka_unit_test(test_boolean_words),
		cmocka_unit_test(test_check_config_and_version_flags),
		cmocka_unit_test(test_repeated_key_in_file),
		cmocka_unit_test(test_redact_url),
		cmocka_unit_test(test_credential_not_in_errors),
		cmocka_unit_test(test_upstream_ca_file),
		cmocka_unit_test(test_token_warnings),
		cmocka_unit_test(test_usage_shows_bounds),
		cmocka_unit_test(test_manpage_has_every_option),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
