/* Unit tests for gateway/flight: coalescing, order, bounds, re-opening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/flight.h"

struct seen {
	int calls;
	int collapsed;
	int order;
	long status;
};

static int clock_tick;

static void waiter(void *result, void *arg, int collapsed)
{
	struct seen *s = arg;
	const long *status = result;

	s->calls++;
	s->collapsed = collapsed;
	s->order = ++clock_tick;
	s->status = *status;
}

static void id_of(uint8_t id[FLIGHT_ID_LEN], int n)
{
	memset(id, 0, FLIGHT_ID_LEN);
	memcpy(id, &n, sizeof(n));
	id[FLIGHT_ID_LEN - 1] = (uint8_t)n; /* differ beyond the hash bytes too */
}

static void test_coalesce_and_order(void **state)
{
	struct flight_table *t = flight_table_new(8);
	long status = 200;
	struct seen s[5] = {{0}};
	uint8_t id[FLIGHT_ID_LEN];
	struct flight *f;

	(void)state;
	clock_tick = 0;
	id_of(id, 1);
	assert_null(flight_find(t, id));
	f = flight_open(t, id);
	for (int i = 0; i < 5; i++) {
		assert_ptr_equal(flight_find(t, id), f);
		assert_int_equal(flight_join(f, waiter, &s[i]), 0);
	}
	assert_int_equal(flight_waiters(f), 5);
	assert_int_equal(flight_count(t), 1);
	flight_land(f, &status);
	assert_int_equal(flight_count(t), 0);
	assert_null(flight_find(t, id));
	for (int i = 0; i < 5; i++) {
		assert_int_equal(s[i].calls, 1);
		assert_int_equal(s[i].order, i + 1);
		assert_int_equal(s[i].collapsed, i > 0);
		assert_int_equal(s[i].status, 200);
	}
	flight_table_free(t);
}

static void test_bound_and_many_flights(void **state)
{
	struct flight_table *t = flight_table_new(2);
	long status = 504;
	struct seen s = {0};
	uint8_t id[FLIGHT_ID_LEN];
	struct flight *f;

	(void)state;
	id_of(id, 7);
	f = flight_open(t, id);
	assert_int_equal(flight_join(f, waiter, &s), 0);
	assert_int_equal(flight_join(f, waiter, &s), 0);
	assert_int_equal(flight_join(f, waiter, &s), -1);
	/* enough flights to make the table grow; each stays findable */
	for (int i = 100; i < 400; i++) {
		id_of(id, i);
		flight_open(t, id);
	}
	for (int i = 100; i < 400; i++) {
		id_of(id, i);
		assert_non_null(flight_find(t, id));
	}
	assert_int_equal(flight_count(t), 301);
	id_of(id, 7);
	assert_ptr_equal(flight_find(t, id), f);
	flight_land(f, &status);
	assert_int_equal(s.calls, 2);
	assert_int_equal(s.status, 504);
	flight_table_free(t); /* frees the 300 still open */
}

/* A waiter that opens a new flight for the same id while being woken. */
static struct flight_table *reentry_table;
static void reopen(void *r, void *arg, int collapsed)
{
	const uint8_t *id = arg;

	(void)r;
	(void)collapsed;
	assert_null(flight_find(reentry_table, id));
	flight_open(reentry_table, id);
}

static void test_reopen_from_waiter(void **state)
{
	uint8_t id[FLIGHT_ID_LEN];

	(void)state;
	reentry_table = flight_table_new(4);
	id_of(id, 3);
	assert_int_equal(flight_join(flight_open(reentry_table, id), reopen, id), 0);
	flight_land(flight_find(reentry_table, id), NULL);
	assert_non_null(flight_find(reentry_table, id));
	flight_table_free(reentry_table);
}

static int same(void *arg, const void *key)
{
	return arg == key;
}

static void test_find_waiter(void **state)
{
	struct flight_table *t = flight_table_new(8);
	struct seen s[3] = {{0}};
	uint8_t id[FLIGHT_ID_LEN];
	struct flight *f;
	long status = 200;

	(void)state;
	id_of(id, 9);
	f = flight_open(t, id);
	for (int i = 0; i < 3; i++)
		assert_int_equal(flight_join(f, waiter, &s[i]), 0);
	assert_ptr_equal(flight_find_waiter(f, same, &s[1]), &s[1]);
	assert_null(flight_find_waiter(f, same, &status));
	flight_land(f, &status);
	flight_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_coalesce_and_order),
		cmocka_unit_test(test_bound_and_many_flights),
		cmocka_unit_test(test_reopen_from_waiter),
		cmocka_unit_test(test_find_waiter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
