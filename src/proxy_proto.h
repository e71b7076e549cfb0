/*
 * The PROXY protocol, versions 1 and 2 (HAProxy's doc/proxy-protocol.txt,
 * revision 2020/03/05): reading the header a load balancer puts before a
 * connection's first byte, and writing the one the proxy puts before the
 * backend's.  No libevent, no logging.
 */
#ifndef STP_PROXY_PROTO_H
#define STP_PROXY_PROTO_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parse.h"

#define PROXY_V1_MAX		107	/* SPEC 2.1: the longest line, CRLF included */
#define PROXY_V2_HEADER		16	/* SPEC 2.2: signature, ver_cmd, fam, len */
#define PROXY_V2_MAX		4096	/* ours: a whole v2 header, TLVs included */
#define PROXY_V2_UNIX_ADDR	108	/* SPEC 2.2: one AF_UNIX address */

/* The 13th byte: version 2 in the high nibble, the command in the low one. */
#define PROXY_V2_LOCAL		0x20
#define PROXY_V2_PROXY		0x21

/* The 14th byte: address family (high nibble) and transport (low nibble). */
#define PROXY_FAM_UNSPEC	0x00
#define PROXY_FAM_TCP4		0x11
#define PROXY_FAM_UDP4		0x12
#define PROXY_FAM_TCP6		0x21
#define PROXY_FAM_UDP6		0x22
#define PROXY_FAM_UNIX_STREAM	0x31
#define PROXY_FAM_UNIX_DGRAM	0x32

/* TLV types (SPEC 2.2) */
#define PP2_TYPE_ALPN		0x01
#define PP2_TYPE_AUTHORITY	0x02
#define PP2_TYPE_CRC32C		0x03
#define PP2_TYPE_NOOP		0x04
#define PP2_TYPE_UNIQUE_ID	0x05
#define PP2_TYPE_SSL		0x20
#define PP2_SUBTYPE_SSL_VERSION	0x21
#define PP2_SUBTYPE_SSL_CN	0x22
#define PP2_SUBTYPE_SSL_CIPHER	0x23
#define PP2_SUBTYPE_SSL_SIG_ALG	0x24
#define PP2_SUBTYPE_SSL_KEY_ALG	0x25
#define PP2_TYPE_NETNS		0x30
#define PP2_TYPE_MIN_CUSTOM	0xe0	/* SPEC 2.2.8: for applications */
#define PP2_TYPE_MAX_CUSTOM	0xef

/*
 * Ours, in the custom range: how the client side of the connection got
 * to TLS, as text: "starttls" (an upgrade verb the proxy answered),
 * "implicit" (TLS from the first byte) or "none".  The custom range is
 * shared, and clouds have taken some of it (Google Cloud's Private
 * Service Connect 0xE0, AWS 0xEA, Azure 0xEE), so ours is 0xE5, and a
 * 0xE5 whose value is not one of these three words is not ours and is
 * ignored.
 */
#define PP2_TYPE_STARTTLS_PROXY_UPGRADE	0xe5

/* The client field of PP2_TYPE_SSL (SPEC 2.2.6) */
#define PP2_CLIENT_SSL		0x01
#define PP2_CLIENT_CERT_CONN	0x02
#define PP2_CLIENT_CERT_SESS	0x04

/*
 * The TLV values proxy_parse() keeps, copied out of the input so that
 * the header outlives the buffer it came from.  Text is NUL-terminated;
 * a value longer than its field is PARSE_TOO_LONG, text with a NUL in it
 * PARSE_MALFORMED.  A TLV that is absent leaves its field empty (so an
 * empty value and none are the same).
 */
#define PROXY_ALPN_MAX		255	/* one ALPN protocol name (RFC 7301) */
#define PROXY_AUTHORITY_MAX	255	/* an SNI host name (RFC 6066) */
#define PROXY_UNIQUE_ID_MAX	128	/* SPEC 2.2.5 */
#define PROXY_SSL_TEXT_MAX	63	/* version, cipher, algorithm names */
#define PROXY_SSL_CN_MAX	255	/* 64 characters (RFC 5280) of UTF-8 */
#define PROXY_UPGRADE_MAX	15

struct proxy_tlvs {
	uint8_t		 alpn[PROXY_ALPN_MAX];		/* bytes */
	size_t		 alpn_len;
	char		 authority[PROXY_AUTHORITY_MAX + 1];
	uint8_t		 unique_id[PROXY_UNIQUE_ID_MAX];	/* bytes */
	size_t		 unique_id_len;
	bool		 crc32c;		/* one was there, and it matched */
	bool		 ssl;			/* a PP2_TYPE_SSL was there */
	uint8_t		 ssl_client;		/* its PP2_CLIENT_* bits */
	uint32_t	 ssl_verify;		/* 0: a client certificate verified */
	char		 ssl_version[PROXY_SSL_TEXT_MAX + 1];
	char		 ssl_cipher[PROXY_SSL_TEXT_MAX + 1];
	char		 ssl_sig_alg[PROXY_SSL_TEXT_MAX + 1];
	char		 ssl_key_alg[PROXY_SSL_TEXT_MAX + 1];
	char		 ssl_cn[PROXY_SSL_CN_MAX + 1];
	char		 upgrade[PROXY_UPGRADE_MAX + 1];	/* ours, or "" */
};

struct proxy_header {
	size_t			 len;		/* bytes the header took */
	int			 version;	/* 1 or 2 */
	/*
	 * Use the connection's own addresses: a v2 LOCAL (a health check),
	 * a v1 UNKNOWN, or a v2 PROXY for a family the proxy does not take
	 * addresses from (UNSPEC, and UDP, which falls back to UNSPEC as
	 * SPEC 2.2 asks).  src and dst are then AF_UNSPEC, their lengths 0.
	 */
	bool			 local;
	uint8_t			 command;	/* PROXY_V2_LOCAL or _PROXY; v1: _PROXY */
	uint8_t			 fam;		/* PROXY_FAM_*; v1: TCP4, TCP6 or UNSPEC */
	struct sockaddr_storage	 src;		/* the client */
	struct sockaddr_storage	 dst;		/* the address it connected to */
	socklen_t		 srclen;
	socklen_t		 dstlen;
	struct proxy_tlvs	 tlv;		/* v2 only; empty for v1 */
};

/*
 * The PROXY header at the start of p[0..len), v1 or v2 as its first byte
 * says ('P' or '\r'; anything else is PARSE_MALFORMED).
 *
 * PARSE_NEED_MORE while what is there can still become a header;
 * PARSE_MALFORMED as soon as it cannot: a byte off the v2 signature or
 * the v1 grammar, a bare CR or LF, no CRLF in the first PROXY_V1_MAX
 * bytes, an unknown v2 version, command or family, a v2 address block
 * shorter than its family needs, TLVs (and SSL sub-TLVs) that do not
 * exactly fill the rest of the header, a duplicated TLV of a kind kept
 * here, or a CRC32C that does not match.  PARSE_TOO_LONG for a v2 header
 * over PROXY_V2_MAX, or a TLV value longer than its field above.
 *
 * v1 addresses are IPv4 or IPv6 literals of the family named (inet_pton:
 * dotted quads without leading zeros), ports 0 to 65535 without leading
 * zeros or signs, fields one space apart.  v2: AF_INET, AF_INET6 and
 * AF_UNIX addresses (the path up to its first NUL); TLVs follow the
 * address block of every family, LOCAL and UNSPEC included, because
 * HAProxy sends its TLVs after a LOCAL UNSPEC header too.
 *
 * *out is written only with PARSE_OK; out->len is then the bytes to
 * consume (what follows is the client's).
 */
enum parse_result proxy_parse(const uint8_t *p, size_t len, struct proxy_header *out);

/*
 * Write a v1 line for src and dst: "PROXY TCP4 ..." for two IPv4
 * addresses, "PROXY TCP6 ..." for two IPv6 ones or an IPv6 and an IPv4
 * one (the IPv4 one written as ::ffff:a.b.c.d), "PROXY UNKNOWN\r\n" for
 * anything else (AF_UNIX, or a NULL address).  Its length (at most
 * PROXY_V1_MAX), or -1 if out is too small; nothing is written then.
 */
ssize_t	proxy_build_v1(const struct sockaddr *src, const struct sockaddr *dst,
	    uint8_t *out, size_t outlen);

/* What the v2 header tells the backend about the client side. */
struct proxy_tls_info {
	bool		 tls;		/* the client side is in TLS now */
	const char	*version;	/* "TLSv1.3"; NULL or "" for none */
	const char	*cipher;	/* "TLS_AES_256_GCM_SHA384" */
	const char	*sni;		/* PP2_TYPE_AUTHORITY */
	const char	*upgrade;	/* "starttls", "implicit", "none" */
};

/*
 * Write a v2 header for src and dst: a PROXY command over TCP4 or TCP6
 * (an IPv4 address mapped when the other one is IPv6), or, as HAProxy
 * does, a LOCAL command with the UNSPEC family for anything else
 * (AF_UNIX, a NULL address), which every receiver must accept.  With
 * tls, in this order: PP2_TYPE_AUTHORITY (sni); PP2_TYPE_SSL when
 * tls->tls, with PP2_CLIENT_SSL, verify 0 (no client certificates are
 * asked for) and the VERSION and CIPHER sub-TLVs; our
 * PP2_TYPE_STARTTLS_PROXY_UPGRADE.  NULL or empty strings are left out.
 * Its length, or -1 if out is too small, or a string is longer than
 * proxy_parse() keeps, or upgrade is not one of the three words; nothing
 * is written then.
 */
ssize_t	proxy_build_v2(const struct sockaddr *src, const struct sockaddr *dst,
	    const struct proxy_tls_info *tls, uint8_t *out, size_t outlen);

#endif
