/*
 * Small pure helpers: network addresses as text, names, bounded strings.
 * Nothing here does I/O or logging, so the unit tests link it alone.
 */
#ifndef STP_UTIL_H
#define STP_UTIL_H

#include <sys/socket.h>
#include <sys/un.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADDR_HOST_MAX	253		/* longest DNS name (RFC 1035) */
#define ADDR_TEXT_MAX	(ADDR_HOST_MAX + 16 > (int)sizeof(((struct sockaddr_un *)0)->sun_path) + 8 ? \
			 ADDR_HOST_MAX + 16 : (int)sizeof(((struct sockaddr_un *)0)->sun_path) + 8)

enum addr_kind {
	ADDR_INET,		/* numeric IPv4 or IPv6 with a port */
	ADDR_NAME,		/* a host name to resolve, with a port */
	ADDR_UNIX,		/* unix:/path */
};

struct addr {
	enum addr_kind		 kind;
	char			 host[ADDR_HOST_MAX + 1];	/* as written, without brackets */
	uint16_t		 port;
	struct sockaddr_storage	 ss;		/* ADDR_INET and ADDR_UNIX */
	socklen_t		 sslen;
};

/* What addr_parse() accepts besides numeric host:port and [v6]:port. */
#define ADDR_ALLOW_NAME	0x01
#define ADDR_ALLOW_UNIX	0x02

/*
 * Parse "192.0.2.1:25", "[2001:db8::1]:25", "mx.example:25" (with
 * ADDR_ALLOW_NAME) or "unix:/run/x.sock" (with ADDR_ALLOW_UNIX).
 * Returns 0, or -1 with *why set to a static description of the problem;
 * *out is written only on success.
 */
int	 addr_parse(const char *text, int flags, struct addr *out, const char **why);

/* "192.0.2.1:25", "[2001:db8::1]:25" or "unix:/path"; always NUL-terminated. */
void	 addr_format(const struct sockaddr *, socklen_t, char *buf, size_t len);

/* True when both name the same address and port (or path). */
bool	 addr_sockaddr_equal(const struct sockaddr *, socklen_t,
	    const struct sockaddr *, socklen_t);

/* True if s is a syntactically valid DNS host name (letters, digits, '-', '.'). */
bool	 hostname_valid(const char *s);

/* True if s is a numeric IPv4 or IPv6 address. */
bool	 ip_literal(const char *s);

/*
 * A server name against a pattern, case-insensitively: exact, or
 * "*.example.com", which matches any name ending in ".example.com" (one
 * label or more before it) but not "example.com" itself, as
 * http.connect_allow matches its targets.
 */
bool	 server_name_match(const char *pattern, const char *name);

/* Edit distance, bounded; for "did you mean" suggestions. */
unsigned edit_distance(const char *a, const char *b);

/*
 * Match an SPKI SHA-256 digest against pins given as base64 text.
 * Returns true when any pin decodes to exactly this digest.
 */
bool	 pin_match(const unsigned char digest[32], const char *const *pins, size_t npins);

/* Decode a base64 pin into 32 bytes; 0 on success, -1 if not base64 of 32 bytes. */
int	 pin_decode(const char *b64, unsigned char out[32]);

/*
 * The offset of the first byte that may start a TLS handshake record
 * (0x16, then 0x03 and a minor version up to 4 when those bytes are
 * there), or len when none does.  What comes before it, after an upgrade
 * verb, is plaintext injected behind the verb and must be discarded.
 */
size_t	 tls_record_start(const unsigned char *p, size_t len);

#endif
