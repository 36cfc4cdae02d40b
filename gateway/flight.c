/*
 * flight: see flight.h. Flights live in a chained hash table keyed by their
 * 32-byte id (already a SHA-256, so its first bytes are a good hash); the
 * table doubles when it holds more flights than buckets. Waiters are a
 * singly linked FIFO per flight.
 */
#include "gateway/flight.h"

#include <stdlib.h>
#include <string.h>

#include "policy/check.h"

#define TABLE_MAGIC 0x464c5442u
#define FLIGHT_MAGIC 0x464c4954u
#define INITIAL_BUCKETS 64

struct waiter {
	flight_waiter_fn fn;
	void *arg;
	struct waiter *next;
};

struct flight {
	unsigned magic;
	struct flight_table *table;
	uint8_t id[FLIGHT_ID_LEN];
	struct waiter *head, **tail;
	size_t n_waiters;
	void *data;          /* the owner's */
	struct flight *next; /* bucket chain */
};

struct flight_table {
	unsigned magic;
	struct flight **buckets;
	size_t n_buckets; /* a power of two */
	size_t n_flights;
	size_t max_waiters;
};

static size_t bucket_of(const struct flight_table *t, const uint8_t *id)
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	return (size_t)h & (t->n_buckets - 1);
}

struct flight_table *flight_table_new(size_t max_waiters)
{
	struct flight_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		abort();
	t->magic = TABLE_MAGIC;
	t->n_buckets = INITIAL_BUCKETS;
	t->buckets = calloc(t->n_buckets, sizeof(*t->buckets));
	if (t->buckets == NULL)
		abort();
	t->max_waiters = max_waiters;
	return t;
}

void flight_table_set_max(struct flight_table *t, size_t max_waiters)
{
	CHECK_OBJ_NOTNULL(t, TABLE_MAGIC);
	t->max_waiters = max_waiters;
}

static void flight_free(struct flight *f)
{
	struct waiter *w = f->head;

	while (w) {
		struct waiter *next = w->next;

		free(w);
		w = next;
	}
	f->magic = 0;
	free(f);
}

void flight_table_free(struct flight_table *t)
{
	if (t == NULL)
		return;
	CHECK_OBJ_NOTNULL(t, TABLE_MAGIC);
	for (size_t i = 0; i < t->n_buckets; i++) {
		while (t->buckets[i]) {
			struct flight *f = t->buckets[i];

			t->buckets[i] = f->next;
			flight_free(f);
		}
	}
	free(t->buckets);
	t->magic = 0;
	free(t);
}

struct flight *flight_find(struct flight_table *t, const uint8_t id[FLIGHT_ID_LEN])
{
	CHECK_OBJ_NOTNULL(t, TABLE_MAGIC);
	for (struct flight *f = t->buckets[bucket_of(t, id)]; f; f = f->next)
		if (memcmp(f->id, id, FLIGHT_ID_LEN) == 0)
			return f;
	return NULL;
}

static void grow(struct flight_table *t)
{
	struct flight **old = t->buckets;
	size_t old_n = t->n_buckets;

	t->n_buckets *= 2;
	t->buckets = calloc(t->n_buckets, sizeof(*t->buckets));
	if (t->buckets == NULL)
		abort();
	for (size_t i = 0; i < old_n; i++) {
		while (old[i]) {
			struct flight *f = old[i];
			size_t b = bucket_of(t, f->id);

			old[i] = f->next;
			f->next = t->buckets[b];
			t->buckets[b] = f;
		}
	}
	free(old);
}

struct flight *flight_open(struct flight_table *t, const uint8_t id[FLIGHT_ID_LEN])
{
	struct flight *f;
	size_t b;

	CHECK_OBJ_NOTNULL(t, TABLE_MAGIC);
	CHECK(flight_find(t, id) == NULL);
	if (t->n_flights >= t->n_buckets)
		grow(t);
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		abort();
	f->magic = FLIGHT_MAGIC;
	f->table = t;
	memcpy(f->id, id, FLIGHT_ID_LEN);
	f->tail = &f->head;
	b = bucket_of(t, id);
	f->next = t->buckets[b];
	t->buckets[b] = f;
	t->n_flights++;
	return f;
}

void flight_set_data(struct flight *f, void *data)
{
	CHECK_OBJ_NOTNULL(f, FLIGHT_MAGIC);
	f->data = data;
}

void *flight_data(const struct flight *f)
{
	CHECK_OBJ_NOTNULL(f, FLIGHT_MAGIC);
	return f->data;
}

int flight_join(struct flight *f, flight_waiter_fn fn, void *arg)
{
	struct waiter *w;

	CHECK_OBJ_NOTNULL(f, FLIGHT_MAGIC);
	if (f->n_waiters >= f->table->max_waiters)
		return -1;
	w = malloc(sizeof(*w));
	if (w == NULL)
		abort();
	w->fn = fn;
	w->arg = arg;
	w->next = NULL;
	*f->tail = w;
	f->tail = &w->next;
	f->n_waiters++;
	return 0;
}

void flight_land(struct flight *f, void *result)
{
	struct flight_table *t = f->table;
	struct flight **pp;
	int collapsed = 0;

	CHECK_OBJ_NOTNULL(f, FLIGHT_MAGIC);
	/* leave the table first: a waiter may open a new flight for the id */
	for (pp = &t->buckets[bucket_of(t, f->id)]; *pp != f; pp = &(*pp)->next)
		CHECK(*pp != NULL);
	*pp = f->next;
	t->n_flights--;
	while (f->head) {
		struct waiter *w = f->head;

		f->head = w->next;
		f->n_waiters--;
		w->fn(result, w->arg, collapsed);
		collapsed = 1;
		free(w);
	}
	f->magic = 0;
	free(f);
}

void *flight_find_waiter(const struct flight *f, int (*match)(void *arg, const void *key),
			 const void *key)
{
	CHECK_OBJ_NOTNULL(f, FLIGHT_MAGIC);
	for (const struct waiter *w = f->head; w; w = w->next)
		if (match(w->arg, key))
			return w->arg;
	return NULL;
}

size_t flight_waiters(const struct flight *f)
{
	return f->n_waiters;
}

size_t flight_count(const struct flight_table *t)
{
	return t->n_flights;
}
