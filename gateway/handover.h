/*
 * handover: a restart without systemd that refuses no connection.
 *
 * The running gateway offers its listening sockets on a Unix socket in its
 * cache directory (DIR/gateway.sock: the directory is the gateway's own,
 * mode 0700, so only its user can connect). A new gateway started on the
 * same directory with --takeover connects, asks ("take"), and receives
 * every listening socket in one message (SCM_RIGHTS); the old one then
 * drains as on SIGTERM: it stops accepting (its copies of the sockets
 * close, the sockets stay open in the new process, so their backlog keeps
 * every connection that arrives), answers what is in flight and exits,
 * releasing the cache directory's lock. The new gateway waits for that
 * lock, opens the cache and starts accepting on the sockets it received:
 * connections that came meanwhile wait in the backlog, none is refused
 * (and, unlike two processes on SO_REUSEPORT, none queued on a socket that
 * closes is reset).
 *
 * Threads: the main loop's. Bounds: HANDOVER_FDS_MAX sockets; the new
 * side's exchange is bounded by HANDOVER_TIMEOUT_MS.
 */
#ifndef CG_GATEWAY_HANDOVER_H
#define CG_GATEWAY_HANDOVER_H

#include <stddef.h>

#define HANDOVER_FDS_MAX 64
#define HANDOVER_TIMEOUT_MS 5000
#define HANDOVER_SOCKET "gateway.sock"

struct event_base;
struct handover;

/* The old side: offers fds[0..n) (borrowed: they stay the caller's) at
 * dir/gateway.sock on base; once a successor took them, calls taken(arg)
 * (once). NULL with err if the socket cannot be made (the gateway runs on
 * without offering a handover). */
struct handover *handover_offer(struct event_base *base, const char *dir, const int *fds,
				size_t n, void (*taken)(void *arg), void *arg, char *err,
				size_t err_size);

/* Stops offering (removes the socket) and frees it. NULL is a no-op. */
void handover_free(struct handover *ho);

/*
 * The new side: asks the gateway on `dir` for its listening sockets.
 * Returns how many it got into fds (at most max), 0 when no gateway runs
 * there (nothing to take over: start normally), or -1 with err.
 */
int handover_take(const char *dir, int *fds, size_t max, char *err, size_t err_size);

#endif
