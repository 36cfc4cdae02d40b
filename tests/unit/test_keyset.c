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
	struct keyset *s = keyset_new(8); /* 2 sets of 4 */
	uint8_t k[6][KEYSET_KEY_LEN], c[KEYSET_KEY_LEN];

	(void)state;
	/* four keys of one set are all kept (direct-mapped, each would have
	 * displaced the one before) */
	for (int i = 0; i < 4; i++)
		key_of(k[i], 1 + 2 * (uint64_t)i, 10 + (uint64_t)i); /* set 1 */
	keyset_put(s, k[0], 300);
	keyset_put(s, k[1], 100);
	keyset_put(s, k[2], 400);
	keyset_put(s, k[3], KEYSET_FOREVER);
	for (int i = 0; i < 4; i++)
		assert_true(keyset_get(s, k[i], 0) > 0);
	/* a fifth replaces the one whose deadline comes first */
	key_of(k[4], 9, 14);
	keyset_put(s, k[4], 200);
	assert_int_equal(keyset_get(s, k[1], 0), 0);
	assert_int_equal(keyset_get(s, k[0], 0), 300);
	assert_int_equal(keyset_get(s, k[4], 0), 200);
	/* an expired one goes before a live one, whatever the order put */
	key_of(k[5], 11, 15);
	keyset_put(s, k[5], 500);  /* replaces k[4] (200 is now the first) */
	assert_int_equal(keyset_get(s, k[4], 0), 0);
	assert_int_equal(keyset_get(s, k[3], 1000), KEYSET_FOREVER);
	assert_int_equal(keyset_get(s, k[2], 350), 400);
	/* putting a key again updates it in place */
	keyset_put(s, k[0], 600);
	assert_int_equal(keyset_get(s, k[0], 0), 600);
	assert_int_equal(keyset_count(s, 0), 4);
	keyset_forget(s, k[1]); /* not held any more: nothing changes */
	assert_int_equal(keyset_count(s, 0), 4);
	keyset_forget(s, k[0]);
	assert_int_equal(keyset_get(s, k[0], 0), 0);
	assert_int_equal(keyset_count(s, 0), 3);
	/* a flood of keys never holds more than the slots, and keys put with
	 * FOREVER are displaced too once every slot of their set is FOREVER */
	for (uint64_t i = 0; i < 10000; i++) {
		/* tags as uniform as a SHA-256's (i + 7 would tie the tag's
		 * low bits, which pick the way among ties, to the set) */
		uint64_t t = (i + 7) * 0x9E3779B97F4A7C15ull;

		key_of(c, i * 2654435761u, t ^ (t >> 33));
		keyset_put(s, c, KEYSET_FOREVER);
	}
	assert_true(keyset_count(s, 0) <= 8);
	assert_int_equal(keyset_get(s, k[3], 0), 0);
	keyset_free(s);
}

/* 24 random keys in 4096 slots (test_abuse's 401 flood): none forgotten. */
static void test_few_keys_all_kept(void **state)
{
	struct keyset *s = keyset_new(4096);
	uint8_t k[24][KEYSET_KEY_LEN];
	uint64_t x = 88172645463325252ull;

	(void)state;
	for (int trial = 0; trial < 200; trial++) {
		for (int i = 0; i < 24; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
			key_of(k[i], x, x * 31 + 1);
			keyset_put(s, k[i], 1000 + trial);
		}
		for (int i = 0; i < 24; i++)
			assert_int_equal(keyset_get(s, k[i], 999 + trial), 1000 + trial);
	}
	keyset_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_expire),
		cmocka_unit_test(test_displace_and_bound),
		cmocka_unit_test(test_few_keys_all_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
