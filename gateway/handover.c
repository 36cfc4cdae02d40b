/* handover: see handover.h. */
#include "gateway/handover.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gateway/log.h"
#include "policy/check.h"

#define HANDOVER_MAGIC 0x48414e44u
#define ASK "take\n"

struct handover {
	unsigned magic;
	int fd;                 /* the listening Unix socket */
	struct event *ev;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int fds[HANDOVER_FDS_MAX];
	size_t n;
	int given;              /* handed over already */
	void (*taken)(void *arg);
	void *arg;
};

static int unix_path(const char *dir, struct sockaddr_un *sa, char *err, size_t err_size)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if ((size_t)snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s", dir,
			     HANDOVER_SOCKET) >= sizeof(sa->sun_path)) {
		snprintf(err, err_size, "handover: the cache directory's path is too long for a "
			 "Unix socket (%zu bytes at most)", sizeof(sa->sun_path) - 14);
		return -1;
	}
	return 0;
}

/* Sends the fds with one message: "ok N\n" and N descriptors. */
static int send_fds(int sock, const int *fds, size_t n)
{
	char text[32];
	struct iovec iov;
	struct msghdr msg;
	char control[CMSG_SPACE(sizeof(int) * HANDOVER_FDS_MAX)];
	struct cmsghdr *cm;

	memset(&msg, 0, sizeof(msg));
	memset(control, 0, sizeof(control));
	iov.iov_base = text;
	iov.iov_len = (size_t)snprintf(text, sizeof(text), "ok %zu\n", n);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	return sendmsg(sock, &msg, MSG_NOSIGNAL) == (ssize_t)iov.iov_len ? 0 : -1;
}

/* A successor connected: its ask is read (it writes it at once), the
 * sockets sent, the connection closed. */
static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct handover *ho = arg;
	char ask[16];
	struct pollfd pfd;
	ssize_t got = -1;
	int c;

	(void)fd;
	(void)what;
	CHECK_OBJ_NOTNULL(ho, HANDOVER_MAGIC);
	c = accept4(ho->fd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	/* bounded: the ask is 5 bytes written right after connect */
	pfd.fd = c;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 1000) == 1)
		got = recv(c, ask, sizeof(ask) - 1, MSG_DONTWAIT);
	if (got != (ssize_t)strlen(ASK) || memcmp(ask, ASK, strlen(ASK)) != 0 || ho->given) {
		(void)send(c, "no\n", 3, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(c);
		return;
	}
	if (send_fds(c, ho->fds, ho->n) != 0) {
		cglog(CGLOG_ERROR, "handover: could not send the listening sockets: %s",
		      strerror(errno));
		close(c);
		return;
	}
	close(c);
	ho->given = 1;
	cglog(CGLOG_INFO, "handover: %zu listening socket(s) handed to a new gateway", ho->n);
	ho->taken(ho->arg);
}

struct handover *handover_offer(struct event_base *base, const char *dir, const int *fds,
				size_t n, void (*taken)(void *arg), void *arg, char *err,
				size_t err_size)
{
	struct handover *ho;
	struct sockaddr_un sa;

	if (n == 0 || n > HANDOVER_FDS_MAX || unix_path(dir, &sa, err, err_size) != 0)
		return NULL;
	ho = calloc(1, sizeof(*ho));
	AN(ho);
	ho->magic = HANDOVER_MAGIC;
	memcpy(ho->fds, fds, n * sizeof(*fds));
	ho->n = n;
	ho->taken = taken;
	ho->arg = arg;
	snprintf(ho->path, sizeof(ho->path), "%s", sa.sun_path);
	/* a socket left by a gateway that died: ours now (we hold the lock) */
	unlink(ho->path);
	ho->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (ho->fd < 0 || bind(ho->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(ho->fd, 4) != 0) {
		snprintf(err, err_size, "handover: %s: %s", ho->path, strerror(errno));
		if (ho->fd >= 0)
			close(ho->fd);
		free(ho);
		return NULL;
	}
	ho->ev = event_new(base, ho->fd, EV_READ | EV_PERSIST, on_accept, ho);
	AN(ho->ev);
	event_add(ho->ev, NULL);
	return ho;
}

void handover_free(struct handover *ho)
{
	if (ho == NULL)
		return;
	CHECK_OBJ_NOTNULL(ho, HANDOVER_MAGIC);
	event_free(ho->ev);
	close(ho->fd);
	if (!ho->given) /* a successor's socket would have the same name: leave it */
		unlink(ho->path);
	ho->magic = 0;
	free(ho);
}

int handover_take(const char *dir, int *fds, size_t max, char *err, size_t err_size)
{
	struct sockaddr_un sa;
	char text[32];
	struct iovec iov = {text, sizeof(text) - 1};
	char control[CMSG_SPACE(sizeof(int) * HANDOVER_FDS_MAX)];
	struct msghdr msg;
	struct cmsghdr *cm;
	struct pollfd pfd;
	size_t n = 0;
	ssize_t got;
	int s;

	if (unix_path(dir, &sa, err, err_size) != 0)
		return -1;
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		snprintf(err, err_size, "handover: socket: %s", strerror(errno));
		return -1;
	}
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		close(s);
		if (e == ENOENT || e == ECONNREFUSED)
			return 0; /* no gateway offers one: nothing to take over */
		snprintf(err, err_size, "handover: %s: %s", sa.sun_path, strerror(e));
		return -1;
	}
	pfd.fd = s;
	pfd.events = POLLIN;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);
	if (send(s, ASK, strlen(ASK), MSG_NOSIGNAL) != (ssize_t)strlen(ASK) ||
	    poll(&pfd, 1, HANDOVER_TIMEOUT_MS) != 1 ||
	    (got = recvmsg(s, &msg, MSG_CMSG_CLOEXEC)) <= 0) {
		snprintf(err, err_size, "handover: the running gateway did not hand over its "
			 "sockets within %d ms", HANDOVER_TIMEOUT_MS);
		close(s);
		return -1;
	}
	close(s);
	text[got] = '\0';
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (n < max)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	if (strncmp(text, "ok ", 3) != 0 || n == 0) {
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
		snprintf(err, err_size, "handover: the running gateway refused (%s)",
			 strncmp(text, "no", 2) == 0 ? "a handover is under way already" : "?");
		return -1;
	}
	return (int)n;
}
