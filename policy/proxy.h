/*
 * proxy: the client's address behind trusted proxies (HAProxy in front of
 * several gateways, docs/scale-out.md).
 *
 * --trusted-proxies lists networks (CIDR: 10.0.0.0/8, 127.0.0.1,
 * ::1/128). A request whose TCP peer is in one of them may name its client
 * in X-Forwarded-For: the client is the rightmost address in that list not
 * itself trusted (each proxy appends the address it saw, so addresses to
 * the left of an untrusted one are the client's word and are not
 * believed; nginx's real_ip_recursive and HAProxy agree). A peer not
 * trusted is the client, whatever it sends. Used for --client-rate and the
 * access log's `client`.
 *
 * Pure: no I/O, no allocation. Bounds: PROXY_NETS_MAX networks; a header
 * value is walked once.
 */
#ifndef CG_POLICY_PROXY_H
#define CG_POLICY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define PROXY_NETS_MAX 32
#define PROXY_ADDR_MAX 46 /* INET6_ADDRSTRLEN */

struct proxy_net {
	int family;        /* AF_INET or AF_INET6 */
	uint8_t addr[16];  /* network bytes (4 used for AF_INET) */
	unsigned prefix;   /* bits */
};

struct proxy_nets {
	struct proxy_net net[PROXY_NETS_MAX];
	size_t n;
};

/* Parses "off" or a comma-separated list of addresses and CIDRs into
 * nets. 0, or -1 with err (one sentence naming the bad item). */
int proxy_parse(const char *text, struct proxy_nets *nets, char *err, size_t err_size);

/* Is `addr` (text, IPv4 or IPv6) in one of nets? */
int proxy_trusted(const struct proxy_nets *nets, const char *addr);

/*
 * The client of a request from `peer` carrying X-Forwarded-For values
 * xff[0..n) (in the order received; NULL n 0 when absent): written to out
 * (out_size >= PROXY_ADDR_MAX), NUL-terminated. peer itself when it is not
 * trusted or nothing better is known.
 */
void proxy_client(const struct proxy_nets *nets, const char *peer, const char *const *xff,
		  size_t n, char *out, size_t out_size);

#endif
