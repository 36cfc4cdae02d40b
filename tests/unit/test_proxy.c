/* Unit tests for policy/proxy: trusted networks and X-Forwarded-For. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/proxy.h"

static void parse_ok(const char *text, struct proxy_nets *nets)
{
	char err[160];

	if (proxy_parse(text, nets, err, sizeof(err)) != 0)
		fail_msg("%s: %s", text, err);
}

static void test_parse(void **state)
{
	struct proxy_nets nets;
	char err[160];

	(void)state;
	parse_ok("off", &nets);
	assert_int_equal(nets.n, 0);
	parse_ok("10.0.0.0/8,127.0.0.1,::1/128,fd00::/8", &nets);
	assert_int_equal(nets.n, 4);
	assert_int_equal(nets.net[1].prefix, 32);
	assert_int_equal(proxy_parse("10.0.0.0/33", &nets, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "prefix length out of 0..32"));
	assert_int_equal(proxy_parse("::/129", &nets, err, sizeof(err)), -1);
	assert_int_equal(proxy_parse("10.0.0.0/", &nets, err, sizeof(err)), -1);
	assert_int_equal(proxy_parse("10.0.0.0/8x", &nets, err, sizeof(err)), -1);
	assert_int_equal(proxy_parse("haproxy.local", &nets, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "'haproxy.local' is not an IPv4 or IPv6 address"));
	assert_int_equal(proxy_parse("10.0.0.1,", &nets, err, sizeof(err)), -1);
	assert_int_equal(proxy_parse("10.0.0.1,,10.0.0.2", &nets, err, sizeof(err)), -1);
	{
		char many[40 * 12] = "";

		for (int i = 0; i < 33; i++)
			snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s10.0.0.%d",
				 i ? "," : "", i);
		assert_int_equal(proxy_parse(many, &nets, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "more than 32"));
	}
}

static void test_trusted(void **state)
{
	struct proxy_nets nets;

	(void)state;
	parse_ok("10.1.0.0/16,192.168.1.128/25,::1,2001:db8::/33", &nets);
	assert_true(proxy_trusted(&nets, "10.1.255.3"));
	assert_false(proxy_trusted(&nets, "10.2.0.1"));
	assert_true(proxy_trusted(&nets, "192.168.1.200"));
	assert_false(proxy_trusted(&nets, "192.168.1.127"));
	assert_true(proxy_trusted(&nets, "::1"));
	assert_true(proxy_trusted(&nets, "2001:db8:7fff::1"));
	assert_false(proxy_trusted(&nets, "2001:db8:8000::1"));
	assert_true(proxy_trusted(&nets, "::ffff:10.1.0.9")); /* mapped: the IPv4 one */
	assert_false(proxy_trusted(&nets, "not an address"));
	parse_ok("0.0.0.0/0", &nets);
	assert_true(proxy_trusted(&nets, "203.0.113.9"));
	assert_false(proxy_trusted(&nets, "::2"));
}

static const char *client(const struct proxy_nets *nets, const char *peer,
			  const char *const *xff, size_t n)
{
	static char out[PROXY_ADDR_MAX];

	proxy_client(nets, peer, xff, n, out, sizeof(out));
	return out;
}

static void test_client(void **state)
{
	struct proxy_nets nets;
	const char *one[] = {"203.0.113.7"};
	const char *chain[] = {"198.51.100.1, 203.0.113.7, 10.0.0.2"};
	const char *forged[] = {"1.2.3.4", "203.0.113.7"};
	const char *junk[] = {"junk, 203.0.113.7"};
	const char *junk_last[] = {"203.0.113.7, junk"};
	const char *all_trusted[] = {"10.0.0.5, 10.0.0.6"};
	const char *v6[] = {" 2001:db8::5 ,10.0.0.3"};

	(void)state;
	parse_ok("10.0.0.0/8", &nets);
	/* a peer not trusted is the client, whatever it says */
	assert_string_equal(client(&nets, "192.0.2.1", one, 1), "192.0.2.1");
	/* a trusted peer: the rightmost untrusted hop */
	assert_string_equal(client(&nets, "10.0.0.1", one, 1), "203.0.113.7");
	assert_string_equal(client(&nets, "10.0.0.1", chain, 1), "203.0.113.7");
	/* several fields: the last one's last item first; what the client wrote
	 * to the left of an untrusted hop is not believed */
	assert_string_equal(client(&nets, "10.0.0.1", forged, 2), "203.0.113.7");
	assert_string_equal(client(&nets, "10.0.0.1", junk, 1), "203.0.113.7");
	/* garbage where a hop should be: the last believable one stands */
	assert_string_equal(client(&nets, "10.0.0.1", junk_last, 1), "10.0.0.1");
	/* every hop trusted: the leftmost */
	assert_string_equal(client(&nets, "10.0.0.1", all_trusted, 1), "10.0.0.5");
	assert_string_equal(client(&nets, "10.0.0.1", v6, 1), "2001:db8::5");
	/* no header */
	assert_string_equal(client(&nets, "10.0.0.1", NULL, 0), "10.0.0.1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_trusted),
		cmocka_unit_test(test_client),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
