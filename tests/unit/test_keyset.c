/* Unit tests for policy/keyset: remember, expire, displace, forget, bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/keyset.h"

static void key_of(uint8_t k[KEYSET_KEY_LEN], uint64_t slot_bits, uint64_t tag)
{
	memset(k, 0, KEYSET_KEY_LEN);
	memcpy(k, &slot_bits, 8);
	memcpy(k + 8, &tag, 8);
}

static void test_put_get_expire(void **state)
{
	struct keyset *s = keyset_new(16);
	uint8_t a[KEYSET_KEY_LEN], b[KEYSET_KEY_LEN];

	(void)state;
	key_of(a, 3, 111);
	key_of(b, 4, 222);
	assert_int_equal(keyset_get(s, a, 0), 0);
	keyset_put(s, a, 1000);
	keyset_put(s, b, KEYSET_FOREVER);
	assert_int_equal(keyset_get(s, a, 999), 1000);
	assert_int_equal(keyset_get(s, a, 1000), 0); /* expired at its deadline */
	assert_int_equal(keyset_get(s, b, INT64_MAX - 1), KEYSET_FOREVER);
	assert_int_equal(keyset_count(s, 0), 2);
	assert_int_equal(keyset_count(s, 1000), 1);
	keyset_forget(s, b);
	assert_int_equal(keyset_get(s, b, 0), 0);
	keyset_free(s);
}

static void test_displace_and_bound(void **state)
{
	struct keyset *s = keyset_new(8);
	uint8_t a[KEYSET_KEY_LEN], b[KEYSET_KEY_LEN], c[KEYSET_KEY_LEN];

	(void)state;
	key_of(a, 5, 1);
	key_of(b, 5 + 8, 2); /* same slot of 8, another key */
	keyset_put(s, a, 100);
	keyset_put(s, b, 100);
	assert_int_equal(keyset_get(s, a, 0), 0); /* displaced: forgotten */
	assert_int_equal(keyset_get(s, b, 0), 100);
	keyset_forget(s, a); /* not its slot any more: b stays */
	assert_int_equal(keyset_get(s, b, 0), 100);
	/* a flood of keys never holds more than the slots */
	for (uint64_t i = 0; i < 10000; i++) {
		key_of(c, i * 2654435761u, i + 7);
		keyset_put(s, c, 100);
	}
	assert_true(keyset_count(s, 0) <= 8);
	keyset_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_expire),
		cmocka_unit_test(test_displace_and_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
