/*
 * Access lists: "allow 192.0.2.0/24", "deny 2001:db8::/32", "deny all",
 * as pure functions over strings and addresses (no libevent, no logging).
 *
 * A rule is an action and a prefix: an IPv4 or IPv6 address, optionally
 * /len (a bare address is /32 or /128), or "all".  A prefix with bits set
 * past its length ("192.0.2.1/24") is refused: it is almost always a typo
 * for the host or for the network, and guessing either would be wrong.
 * Clients are matched on their address made canonical: an IPv4-mapped
 * IPv6 address (::ffff:192.0.2.7) is the IPv4 address, and a rule written
 * inside ::ffff:0:0/96 is the IPv4 rule it spells.  Other families (a
 * unix path from a PROXY header) match only "all".
 */
#ifndef STP_CIDR_H
#define STP_CIDR_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CIDR_TEXT_MAX	64	/* a rule's text, longest valid: "allow " + v6/128 */
#define CIDR_FORMAT_MAX	(6 + 46 + 4 + 1)	/* "allow " + address + "/128" */

/* A client's address, canonical: AF_INET (4 bytes used), AF_INET6, or AF_UNSPEC. */
struct cidr_addr {
	int		 family;
	uint8_t		 a[16];
};

struct cidr_rule {
	bool		 allow;
	int		 family;	/* AF_INET, AF_INET6, or AF_UNSPEC for "all" */
	uint8_t		 a[16];		/* the network, host bits zero */
	unsigned	 len;		/* 0..32 or 0..128 */
};

/* One rule from its text; -1 with why (at most len bytes) when it is not one. */
int	 cidr_rule_parse(const char *text, struct cidr_rule *out, char *why, size_t len);
/* The rule as text ("deny 192.0.2.0/24", "allow all"), always NUL-terminated. */
void	 cidr_rule_format(const struct cidr_rule *, char *buf, size_t len);

/* The canonical address of a peer; AF_UNSPEC for other families. */
void	 cidr_addr_from_sockaddr(const struct sockaddr *, socklen_t, struct cidr_addr *out);
/* addr with every bit past len cleared (len is capped to the family's width). */
void	 cidr_addr_mask(const struct cidr_addr *, unsigned len, struct cidr_addr *out);
/* True when the rule's prefix holds addr. */
bool	 cidr_rule_match(const struct cidr_rule *, const struct cidr_addr *);
/*
 * The verdict of an ordered list: the first rule that matches decides;
 * none: allowed.  *which is the index of the deciding rule, or n.
 */
bool	 cidr_allowed(const struct cidr_rule *, size_t n, const struct cidr_addr *,
	    size_t *which);

#endif
