/*
 * Access list rules (cidr.h says what they mean).
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <string.h>

#include "cidr.h"

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static unsigned
family_bits(int family)
{
	return family == AF_INET ? 32 : family == AF_INET6 ? 128 : 0;
}

/* Clear the bits of a[] past len; true if some were set. */
static bool
mask_bits(uint8_t *a, unsigned len, unsigned bits)
{
	bool	 had = false;

	for (unsigned i = len; i < bits; i++) {
		uint8_t	 bit = (uint8_t)(0x80u >> (i % 8));

		if (a[i / 8] & bit) {
			had = true;
			a[i / 8] &= (uint8_t)~bit;
		}
	}
	return had;
}

/* "24" as a prefix length no greater than max: decimal, 1 to 3 digits. */
static int
parse_len(const char *s, unsigned max, unsigned *out)
{
	unsigned	 v = 0;
	size_t		 n = 0;

	for (; s[n] >= '0' && s[n] <= '9'; n++) {
		if (n == 3)
			return -1;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (n == 0 || s[n] != '\0' || v > max || (n > 1 && s[0] == '0'))
		return -1;
	*out = v;
	return 0;
}

int
cidr_rule_parse(const char *text, struct cidr_rule *out, char *why, size_t len)
{
	char		 buf[CIDR_TEXT_MAX + 1];
	const char	*p;
	char		*slash;
	size_t		 n = strnlen(text, CIDR_TEXT_MAX + 1);
	struct cidr_rule r;

	memset(&r, 0, sizeof(r));
	if (n > CIDR_TEXT_MAX) {
		snprintf(why, len, "too long for a rule (at most %d characters)", CIDR_TEXT_MAX);
		return -1;
	}
	if (strncmp(text, "allow ", 6) == 0) {
		r.allow = true;
		p = text + 6;
	} else if (strncmp(text, "deny ", 5) == 0)
		p = text + 5;
	else {
		snprintf(why, len, "does not start with allow or deny");
		return -1;
	}
	while (*p == ' ')
		p++;
	if (strcmp(p, "all") == 0) {
		r.family = AF_UNSPEC;
		*out = r;
		return 0;
	}
	memcpy(buf, p, strlen(p) + 1);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, r.a) == 1)
		r.family = AF_INET;
	else if (inet_pton(AF_INET6, buf, r.a) == 1)
		r.family = AF_INET6;
	else {
		snprintf(why, len, "no IPv4 or IPv6 address, prefix or \"all\" after the action");
		return -1;
	}
	r.len = family_bits(r.family);
	if (slash != NULL && parse_len(slash, r.len, &r.len) == -1) {
		snprintf(why, len, "\"/%s\" is not a prefix length (expected 0 to %u)", slash,
		    family_bits(r.family));
		return -1;
	}
	if (mask_bits(r.a, r.len, family_bits(r.family))) {
		char	 net[INET6_ADDRSTRLEN];

		inet_ntop(r.family, r.a, net, sizeof(net));
		snprintf(why, len, "%s has bits set past /%u (expected the network, %s/%u, "
		    "or the address alone)", buf, r.len, net, r.len);
		return -1;
	}
	/* ::ffff:a.b.c.d/n, n >= 96: the IPv4 rule, as clients are matched */
	if (r.family == AF_INET6 && r.len >= 96 && memcmp(r.a, v4mapped, 12) == 0) {
		memmove(r.a, r.a + 12, 4);
		memset(r.a + 4, 0, 12);
		r.family = AF_INET;
		r.len -= 96;
	}
	*out = r;
	return 0;
}

void
cidr_rule_format(const struct cidr_rule *r, char *buf, size_t len)
{
	char	 net[INET6_ADDRSTRLEN];

	if (r->family == AF_UNSPEC) {
		snprintf(buf, len, "%s all", r->allow ? "allow" : "deny");
		return;
	}
	if (inet_ntop(r->family, r->a, net, sizeof(net)) == NULL)
		snprintf(net, sizeof(net), "?");
	snprintf(buf, len, "%s %s/%u", r->allow ? "allow" : "deny", net, r->len);
}

void
cidr_addr_from_sockaddr(const struct sockaddr *sa, socklen_t salen, struct cidr_addr *out)
{
	memset(out, 0, sizeof(*out));
	out->family = AF_UNSPEC;
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		out->family = AF_INET;
		memcpy(out->a, &sin->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 &&
	    salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (memcmp(sin6->sin6_addr.s6_addr, v4mapped, 12) == 0) {
			out->family = AF_INET;
			memcpy(out->a, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			out->family = AF_INET6;
			memcpy(out->a, sin6->sin6_addr.s6_addr, 16);
		}
	}
}

void
cidr_addr_mask(const struct cidr_addr *in, unsigned len, struct cidr_addr *out)
{
	unsigned bits = family_bits(in->family);

	*out = *in;
	(void)mask_bits(out->a, len < bits ? len : bits, bits);
}

bool
cidr_rule_match(const struct cidr_rule *r, const struct cidr_addr *addr)
{
	struct cidr_addr	 net;

	if (r->family == AF_UNSPEC)
		return true;
	if (r->family != addr->family)
		return false;
	cidr_addr_mask(addr, r->len, &net);
	return memcmp(net.a, r->a, 16) == 0;
}

bool
cidr_allowed(const struct cidr_rule *rules, size_t n, const struct cidr_addr *addr,
    size_t *which)
{
	for (size_t i = 0; i < n; i++)
		if (cidr_rule_match(&rules[i], addr)) {
			*which = i;
			return rules[i].allow;
		}
	*which = n;
	return true;
}
