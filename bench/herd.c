/*
 * herd: a thundering-herd client for bench/herd. Opens N keep-alive
 * connections to 127.0.0.1:PORT, then sends the same GET on each, back to
 * back, and reads every answer with one epoll loop, so the figures are the
 * server's and not a client's thread scheduling or interpreter.
 *
 * Usage: herd PORT PATH API_KEY [N [PAUSE_MS]]
 *   N: connections and requests (default 50, at most 1000); PAUSE_MS: wait
 *   this long after the connections are open, before the first send
 *   (default 0), so the server has accepted them all (and a harness can
 *   look at where they went).
 * Prints one line per request, in sending order: its latency in ms (from
 * just before its send to the last byte of its answer), its HTTP status,
 * when its answer ended, in ms after the first send, and its body's length
 * (Content-Length; every byte of it was read).
 * Exits 1 if an answer does not come within 30 s or is not HTTP/1.1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HERD_MAX 1000
#define HEAD_MAX 16384
#define DEADLINE_MS 30000

struct client {
	int fd;
	double sent_ms, done_ms;
	int status;
	char head[HEAD_MAX];
	size_t head_len;
	long long body_left; /* -1 until the head is complete */
	long long body_len;  /* its Content-Length */
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Takes bytes of an answer; returns 1 when it is complete. */
static int take(struct client *c, const char *p, size_t n)
{
	if (c->body_left < 0) {
		size_t before = c->head_len; /* head bytes from earlier reads */
		size_t room = sizeof(c->head) - 1 - c->head_len;
		size_t k = n < room ? n : room;
		char *end, *cl;

		memcpy(c->head + c->head_len, p, k);
		c->head_len += k;
		c->head[c->head_len] = '\0';
		end = strstr(c->head, "\r\n\r\n");
		if (end == NULL) {
			if (c->head_len == sizeof(c->head) - 1) {
				fprintf(stderr, "herd: answer head over %d bytes\n", HEAD_MAX);
				exit(1);
			}
			return 0;
		}
		if (sscanf(c->head, "HTTP/1.1 %d", &c->status) != 1) {
			fprintf(stderr, "herd: not an HTTP/1.1 answer\n");
			exit(1);
		}
		cl = strcasestr(c->head, "\r\ncontent-length:");
		c->body_left = cl ? atoll(cl + 17) : 0;
		c->body_len = c->body_left;
		/* the bytes of this read past the head belong to the body */
		c->body_left -= (long long)(n - ((size_t)(end + 4 - c->head) - before));
		return c->body_left <= 0;
	}
	c->body_left -= (long long)n;
	return c->body_left <= 0;
}

int main(int argc, char **argv)
{
	static struct client cl[HERD_MAX];
	static char buf[1 << 20];
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char req[2048];
	int n = argc > 4 ? atoi(argv[4]) : 50, pause_ms = argc > 5 ? atoi(argv[5]) : 0;
	int ep, left, one = 1, len;
	double deadline;

	if (argc < 4 || n < 1 || n > HERD_MAX || pause_ms < 0 || pause_ms > 10000) {
		fprintf(stderr, "usage: herd PORT PATH API_KEY [N<=%d [PAUSE_MS<=10000]]\n",
			HERD_MAX);
		return 2;
	}
	sa.sin_port = htons((unsigned short)atoi(argv[1]));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	len = snprintf(req, sizeof(req),
		       "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\n\r\n",
		       argv[2], argv[3]);
	if (len <= 0 || (size_t)len >= sizeof(req) || (ep = epoll_create1(0)) < 0)
		return 2;
	for (int i = 0; i < n; i++) {
		cl[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (cl[i].fd < 0 || connect(cl[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			perror("herd: connect");
			return 1;
		}
		setsockopt(cl[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		cl[i].body_left = -1;
	}
	if (pause_ms > 0) {
		struct timespec ts = {pause_ms / 1000, (long)(pause_ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < n; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

		cl[i].sent_ms = now_ms();
		if (write(cl[i].fd, req, (size_t)len) != len) {
			perror("herd: write");
			return 1;
		}
		epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev);
	}
	deadline = now_ms() + DEADLINE_MS;
	for (left = n; left > 0 && now_ms() < deadline;) {
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, 1000);

		for (int j = 0; j < k; j++) {
			struct client *c = &cl[evs[j].data.u32];
			ssize_t got = read(c->fd, buf, sizeof(buf));

			if (got <= 0) {
				if (got < 0 && errno == EINTR)
					continue;
				fprintf(stderr, "herd: connection closed before its answer\n");
				return 1;
			}
			if (take(c, buf, (size_t)got)) {
				c->done_ms = now_ms();
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				left--;
			}
		}
	}
	if (left > 0) {
		fprintf(stderr, "herd: %d of %d answers missing after %d ms\n", left, n,
			DEADLINE_MS);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		printf("%.3f %d %.3f %lld\n", cl[i].done_ms - cl[i].sent_ms, cl[i].status,
		       cl[i].done_ms - cl[0].sent_ms, cl[i].body_len);
		close(cl[i].fd);
	}
	close(ep);
	return 0;
}
