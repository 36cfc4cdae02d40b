/* Unit tests for policy/encoding: Accept-Encoding negotiation (RFC 9110
 * section 12.5.3) and the --compress list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/encoding.h"

#define ALL (ENC_BIT(ENC_GZIP) | ENC_BIT(ENC_BR) | ENC_BIT(ENC_ZSTD))
#define GZ ENC_BIT(ENC_GZIP)

static void test_choose(void **state)
{
	(void)state;
	assert_int_equal(encoding_choose(NULL, ALL), ENC_IDENTITY);
	assert_int_equal(encoding_choose("", ALL), ENC_IDENTITY);
	assert_int_equal(encoding_choose("gzip", ALL), ENC_GZIP);
	assert_int_equal(encoding_choose("gzip", 0), ENC_IDENTITY); /* not stored */
	assert_int_equal(encoding_choose("gzip, deflate", GZ), ENC_GZIP); /* requests */
	assert_int_equal(encoding_choose("gzip, deflate, br", ALL), ENC_BR); /* Node */
	assert_int_equal(encoding_choose("gzip, deflate, br", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("GZIP", ALL), ENC_GZIP); /* case-insensitive */
	assert_int_equal(encoding_choose("x-gzip", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("deflate", ALL), ENC_IDENTITY);
	/* q-values */
	assert_int_equal(encoding_choose("br;q=0.5, gzip;q=0.8", ALL), ENC_GZIP);
	assert_int_equal(encoding_choose("br;q=0.8, gzip;q=0.8", ALL), ENC_BR); /* tie: smaller */
	assert_int_equal(encoding_choose("gzip;q=0", GZ), ENC_IDENTITY);
	assert_int_equal(encoding_choose("gzip; q=0.001", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("gzip;q=1.0, identity;q=0.5", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("identity;q=1, gzip;q=0.5", GZ), ENC_IDENTITY);
	/* * stands for every coding not named */
	assert_int_equal(encoding_choose("*", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("*;q=0.5, gzip;q=0", ALL), ENC_BR);
	assert_int_equal(encoding_choose("*;q=0", GZ), ENC_IDENTITY); /* nothing: identity */
	assert_int_equal(encoding_choose("identity;q=0", GZ), ENC_IDENTITY); /* idem */
	assert_int_equal(encoding_choose("identity;q=0, gzip", GZ), ENC_GZIP);
	/* malformed elements are skipped */
	assert_int_equal(encoding_choose("gzip;q=2, br", ALL), ENC_BR);
	assert_int_equal(encoding_choose("gzip;q=0.0001", GZ), ENC_IDENTITY);
	assert_int_equal(encoding_choose(",,, ;q=1, gzip", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("gzip;level=1;q=0.5", GZ), ENC_GZIP);
	assert_int_equal(encoding_choose("gzipx", GZ), ENC_IDENTITY);
}

static void test_list(void **state)
{
	unsigned m;

	(void)state;
	assert_int_equal(encoding_parse_list("gzip", &m), 0);
	assert_int_equal(m, GZ);
	assert_int_equal(encoding_parse_list("gzip,br,zstd", &m), 0);
	assert_int_equal(m, ALL);
	assert_int_equal(encoding_parse_list("off", &m), 0);
	assert_int_equal(m, 0);
	assert_int_equal(encoding_parse_list("gzip,lz4", &m), -1);
	assert_int_equal(encoding_parse_list("identity", &m), -1);
	assert_string_equal(encoding_name(ENC_BR), "br");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_choose),
		cmocka_unit_test(test_list),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
