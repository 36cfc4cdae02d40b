/*
 * chan: see chan.h. A FIFO list under a mutex, and an eventfd the owning
 * loop watches. The sender that makes the list non-empty writes the eventfd;
 * the loop reads it, then takes the whole list at once and handles it with
 * the lock released (a handler may send into this same chan).
 */
#include "gateway/chan.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "policy/check.h"

#define CHAN_MAGIC 0x4348414eu

struct chan {
	unsigned magic;
	pthread_mutex_t lock;
	struct chan_msg *head, **tail; /* under lock */
	size_t length;                 /* under lock */
	size_t limit;
	int efd;
	struct event *ev;
	chan_fn fn;
	void *arg;
};

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct chan *c = arg;
	uint64_t n;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(c, CHAN_MAGIC);
	/* the count is only a wake-up; EAGAIN (woken already) is fine */
	if (read(c->efd, &n, sizeof(n)) < 0 && errno != EAGAIN && errno != EINTR)
		abort();
	chan_drain(c);
}

struct chan *chan_new(struct event_base *base, size_t limit, chan_fn fn, void *arg)
{
	struct chan *c = calloc(1, sizeof(*c));

	AN(c);
	c->magic = CHAN_MAGIC;
	AZ(pthread_mutex_init(&c->lock, NULL));
	c->tail = &c->head;
	c->limit = limit;
	c->fn = fn;
	c->arg = arg;
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->efd < 0)
		goto fail;
	c->ev = event_new(base, c->efd, EV_READ | EV_PERSIST, on_wake, c);
	if (c->ev == NULL || event_add(c->ev, NULL) != 0)
		goto fail;
	return c;
fail:
	if (c->ev)
		event_free(c->ev);
	if (c->efd >= 0)
		close(c->efd);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return NULL;
}

int chan_send(struct chan *c, struct chan_msg *m)
{
	int wake;

	CHECK_OBJ_NOTNULL(c, CHAN_MAGIC);
	m->next = NULL;
	AZ(pthread_mutex_lock(&c->lock));
	if (c->length >= c->limit) {
		AZ(pthread_mutex_unlock(&c->lock));
		return -1;
	}
	wake = c->length == 0;
	*c->tail = m;
	c->tail = &m->next;
	c->length++;
	AZ(pthread_mutex_unlock(&c->lock));
	if (wake) {
		uint64_t one = 1;

		/* cannot fail short of a broken fd: the counter has room for
		 * 2^64 - 2 wake-ups and the reader resets it */
		if (write(c->efd, &one, sizeof(one)) != sizeof(one))
			abort();
	}
	return 0;
}

void chan_drain(struct chan *c)
{
	struct chan_msg *m;

	CHECK_OBJ_NOTNULL(c, CHAN_MAGIC);
	AZ(pthread_mutex_lock(&c->lock));
	m = c->head;
	c->head = NULL;
	c->tail = &c->head;
	c->length = 0;
	AZ(pthread_mutex_unlock(&c->lock));
	while (m != NULL) {
		struct chan_msg *next = m->next;

		c->fn(m, c->arg);
		m = next;
	}
}

size_t chan_length(struct chan *c)
{
	size_t n;

	CHECK_OBJ_NOTNULL(c, CHAN_MAGIC);
	AZ(pthread_mutex_lock(&c->lock));
	n = c->length;
	AZ(pthread_mutex_unlock(&c->lock));
	return n;
}

void chan_free(struct chan *c)
{
	if (c == NULL)
		return;
	CHECK_OBJ_NOTNULL(c, CHAN_MAGIC);
	chan_drain(c);
	event_free(c->ev);
	close(c->efd);
	AZ(pthread_mutex_destroy(&c->lock));
	c->magic = 0;
	free(c);
}
