/* Unit tests for gateway/config: defaults, flags, the file, precedence, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
