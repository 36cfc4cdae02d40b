/* proxy: see proxy.h. Addresses are read with inet_pton (libc). */
#include "policy/proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* An address (no prefix) into family and bytes; -1 if it is none. */
static int parse_addr(const char *s, size_t len, int *family, uint8_t out[16])
{
	char buf[PROXY_ADDR_MAX];

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, out) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out) == 1) {
		/* an IPv4-mapped IPv6 address is the IPv4 one */
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(out, mapped, 12) == 0) {
			memmove(out, out + 12, 4);
			*family = AF_INET;
		} else {
			*family = AF_INET6;
		}
		return 0;
	}
	return -1;
}

int proxy_parse(const char *text, struct proxy_nets *nets, char *err, size_t err_size)
{
	memset(nets, 0, sizeof(*nets));
	if (strcmp(text, "off") == 0 || text[0] == '\0')
		return 0;
	while (*text) {
		size_t len = strcspn(text, ","), alen;
		const char *slash = memchr(text, '/', len);
		struct proxy_net *net;
		unsigned max;

		if (nets->n == PROXY_NETS_MAX) {
			snprintf(err, err_size, "more than %d networks", PROXY_NETS_MAX);
			return -1;
		}
		net = &nets->net[nets->n];
		alen = slash ? (size_t)(slash - text) : len;
		if (parse_addr(text, alen, &net->family, net->addr) != 0) {
			snprintf(err, err_size, "'%.*s' is not an IPv4 or IPv6 address or network",
				 (int)(len < 64 ? len : 64), text);
			return -1;
		}
		max = net->family == AF_INET ? 32 : 128;
		net->prefix = max;
		if (slash) {
			char *end;
			unsigned long p;
			const char *digits = slash + 1;
			size_t dlen = len - alen - 1;

			if (dlen == 0 || dlen > 3 || strspn(digits, "0123456789") < dlen ||
			    (p = strtoul(digits, &end, 10)) > max) {
				snprintf(err, err_size, "'%.*s' has a prefix length out of 0..%u",
					 (int)(len < 64 ? len : 64), text, max);
				return -1;
			}
			net->prefix = (unsigned)p;
		}
		nets->n++;
		text += len;
		if (*text == ',' && *++text == '\0') {
			snprintf(err, err_size, "a trailing comma");
			return -1;
		}
	}
	return 0;
}

static int in_net(const struct proxy_net *net, int family, const uint8_t a[16])
{
	unsigned full = net->prefix / 8, rest = net->prefix % 8;

	if (family != net->family || memcmp(a, net->addr, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ net->addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

static int trusted(const struct proxy_nets *nets, const char *s, size_t len)
{
	uint8_t a[16];
	int family;

	if (parse_addr(s, len, &family, a) != 0)
		return 0;
	for (size_t i = 0; i < nets->n; i++)
		if (in_net(&nets->net[i], family, a))
			return 1;
	return 0;
}

int proxy_trusted(const struct proxy_nets *nets, const char *addr)
{
	return trusted(nets, addr, strlen(addr));
}

/* Trims spaces and tabs around s[0..*len). */
static const char *trim(const char *s, size_t *len)
{
	while (*len && (*s == ' ' || *s == '\t')) {
		s++;
		(*len)--;
	}
	while (*len && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
		(*len)--;
	return s;
}

void proxy_client(const struct proxy_nets *nets, const char *peer, const char *const *xff,
		  size_t n, char *out, size_t out_size)
{
	snprintf(out, out_size, "%s", peer);
	if (!proxy_trusted(nets, peer))
		return;
	/* right to left over every value, the last header's last item first */
	for (size_t h = n; h-- > 0;) {
		const char *v = xff[h];
		size_t end = strlen(v);

		while (end > 0) {
			size_t start = end, len;
			const char *item;
			uint8_t a[16];
			int family;

			while (start > 0 && v[start - 1] != ',')
				start--;
			len = end - start;
			item = trim(v + start, &len);
			end = start ? start - 1 : 0;
			if (len == 0)
				continue;
			if (parse_addr(item, len, &family, a) != 0)
				return; /* garbage: the last believable hop stands */
			snprintf(out, out_size, "%.*s", (int)len, item);
			if (!trusted(nets, item, len))
				return;
		}
	}
}
