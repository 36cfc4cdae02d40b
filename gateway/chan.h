/*
 * chan: a bounded queue of messages into one event loop, from any thread.
 *
 * The only way work crosses between the gateway's threads (STYLE 11): each
 * loop that receives owns one chan; any thread may chan_send into it; the
 * owning loop is woken through an eventfd and handles every queued message,
 * in the order sent, with the chan's callback, on its own thread.
 *
 * Messages are the sender's structs with a struct chan_msg as their first
 * member (intrusive: sending allocates nothing). Ownership passes to the
 * receiver with a successful chan_send. The wake-up costs one write(2) when
 * the queue goes from empty to non-empty and one read(2) per batch, so a
 * burst of messages costs two syscalls, not two per message.
 *
 * Bounds: at most `limit` messages queued; chan_send refuses more (the
 * sender keeps its message and answers for it).
 *
 * Threads: chan_send from any thread; everything else on the owning loop's
 * thread. The queue is a mutex-protected list: a miss or a landing takes the
 * lock once; the hit path never sends.
 */
#ifndef CG_GATEWAY_CHAN_H
#define CG_GATEWAY_CHAN_H

#include <stddef.h>

struct event_base;
struct chan;

struct chan_msg {
	struct chan_msg *next;
	unsigned kind; /* the sender's: tells the receiver which struct this is */
};

/* Called on the owning loop for each message, in order; takes ownership. */
typedef void (*chan_fn)(struct chan_msg *m, void *arg);

/* A chan into `base` (borrowed, must outlive it) holding at most `limit`
 * messages. NULL if the eventfd or its event cannot be made. */
struct chan *chan_new(struct event_base *base, size_t limit, chan_fn fn, void *arg);

/* Queues m (ownership passes on success). Returns 0, or -1 when `limit`
 * messages are queued already (m stays the caller's). Any thread. */
int chan_send(struct chan *c, struct chan_msg *m);

/* Handles every message queued now, as the wake-up would (owning thread). */
void chan_drain(struct chan *c);

/* Messages queued (a snapshot; any thread). */
size_t chan_length(struct chan *c);

/* Frees the chan; messages still queued are handed to `fn` first (so their
 * owner frees them). Owning thread, with no sender left. */
void chan_free(struct chan *c);

#endif
