/* Unit tests for gateway/admin: the bearer token compare (issue 16: it used
 * to compare the raw strings, so its time depended on the token's length). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "gateway/admin.h"

static void sha256(const char *s, uint8_t out[32])
{
	assert_int_equal(EVP_Digest(s, strlen(s), out, NULL, EVP_sha256(), NULL), 1);
}

static void test_token_compare(void **state)
{
	const char *token = "correct-horse-battery-staple";
	uint8_t want[32];

	(void)state;
	sha256(token, want);
	assert_true(admin_token_matches(want, token, strlen(token)));
	/* a prefix, a longer string, one byte off, empty: refused */
	assert_false(admin_token_matches(want, token, strlen(token) - 1));
	assert_false(admin_token_matches(want, "correct-horse-battery-staple!", 29));
	assert_false(admin_token_matches(want, "correct-horse-battery-stapLe", 28));
	assert_false(admin_token_matches(want, "Correct-horse-battery-staple", 28));
	assert_false(admin_token_matches(want, "", 0));
	/* the length given is what counts, not a NUL */
	assert_true(admin_token_matches(want, "correct-horse-battery-staple-and-more", 28));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_compare),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
