/*
 * The PROXY protocol: see proxy_proto.h.
 */
#include "autoconfig.h"

#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <string.h>

#include "proxy_proto.h"

static const uint8_t	 proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* The words our PP2_TYPE_STARTTLS_PROXY_UPGRADE may carry. */
static const char *const proxy_upgrades[] = { "starttls", "implicit", "none" };

#define PROXY_TLV_HEADER	3	/* type, length (two bytes) */
#define PROXY_SSL_FIXED		5	/* client, verify (four bytes) */
#define PROXY_V1_ADDR_MAX	45	/* INET6_ADDRSTRLEN less the NUL */

/* Plain ASCII classes: the line is ASCII whatever the locale says. */
static bool
proxy_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool
proxy_xdigit(uint8_t c)
{
	return proxy_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static uint16_t
proxy_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
proxy_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
proxy_set_in(struct sockaddr_storage *ss, socklen_t *len, const uint8_t addr[4],
    uint16_t port)
{
	struct sockaddr_in	 sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	memcpy(&sin.sin_addr, addr, 4);
	sin.sin_port = htons(port);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin, sizeof(sin));
	*len = sizeof(sin);
}

static void
proxy_set_in6(struct sockaddr_storage *ss, socklen_t *len, const uint8_t addr[16],
    uint16_t port)
{
	struct sockaddr_in6	 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	memcpy(&sin6.sin6_addr, addr, 16);
	sin6.sin6_port = htons(port);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin6, sizeof(sin6));
	*len = sizeof(sin6);
}

/*
 * An AF_UNIX address from its 108 bytes: the path up to its first NUL,
 * zeros after it, so that equal paths give equal sockaddrs.
 */
static void
proxy_set_un(struct sockaddr_storage *ss, socklen_t *len, const uint8_t addr[PROXY_V2_UNIX_ADDR])
{
	struct sockaddr_un	 sun;
	size_t			 n;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	n = strnlen((const char *)addr, PROXY_V2_UNIX_ADDR);
	if (n > sizeof(sun.sun_path))
		n = sizeof(sun.sun_path);
	memcpy(sun.sun_path, addr, n);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sun, sizeof(sun));
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
	    (n > 0 && n < sizeof(sun.sun_path) ? 1 : 0));
}

/* Version 1 */

/* A fixed word: can s[0..n) still be it (complete: is it)? */
static enum parse_result
proxy_v1_word(const uint8_t *s, size_t n, bool complete, const char *word)
{
	size_t	 wl = strlen(word);

	if (n > wl || memcmp(s, word, n) != 0)
		return PARSE_MALFORMED;
	if (!complete)
		return PARSE_NEED_MORE;
	return n == wl ? PARSE_OK : PARSE_MALFORMED;
}

/* "TCP4", "TCP6" or "UNKNOWN": *af is AF_INET, AF_INET6 or AF_UNSPEC. */
static enum parse_result
proxy_v1_proto(const uint8_t *s, size_t n, bool complete, int *af)
{
	static const struct {
		const char	*word;
		int		 af;
	} protos[] = {
		{ "TCP4", AF_INET },
		{ "TCP6", AF_INET6 },
		{ "UNKNOWN", AF_UNSPEC },
	};
	enum parse_result	 r, best = PARSE_MALFORMED;

	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		r = proxy_v1_word(s, n, complete, protos[i].word);
		if (r == PARSE_OK) {
			*af = protos[i].af;
			return PARSE_OK;
		}
		if (r == PARSE_NEED_MORE)
			best = PARSE_NEED_MORE;
	}
	return best;
}

/*
 * An address of the family: only its characters while incomplete, all of
 * inet_pton once complete (which takes no leading zeros in a dotted quad,
 * and no IPv6 zone).
 */
static enum parse_result
proxy_v1_addr(const uint8_t *s, size_t n, bool complete, int af, uint8_t addr[16])
{
	char	 buf[PROXY_V1_ADDR_MAX + 1];

	if (n > (af == AF_INET ? 15 : PROXY_V1_ADDR_MAX))
		return PARSE_MALFORMED;
	for (size_t i = 0; i < n; i++) {
		if (proxy_digit(s[i]) || s[i] == '.')
			continue;
		if (af == AF_INET6 && (proxy_xdigit(s[i]) || s[i] == ':'))
			continue;
		return PARSE_MALFORMED;
	}
	if (!complete)
		return PARSE_NEED_MORE;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(af, buf, addr) == 1 ? PARSE_OK : PARSE_MALFORMED;
}

/* A port: 0 to 65535, decimal, no leading zeros, no sign. */
static enum parse_result
proxy_v1_port(const uint8_t *s, size_t n, bool complete, uint16_t *port)
{
	uint32_t	 v = 0;

	if (n > 5 || (n > 1 && s[0] == '0'))
		return PARSE_MALFORMED;
	for (size_t i = 0; i < n; i++) {
		if (!proxy_digit(s[i]))
			return PARSE_MALFORMED;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return PARSE_MALFORMED;
	if (!complete)
		return PARSE_NEED_MORE;
	if (n == 0)
		return PARSE_MALFORMED;
	*port = (uint16_t)v;
	return PARSE_OK;
}

/*
 * The text of a line, s[0..n) without its CRLF, or (complete false) the
 * start of one: "PROXY", protocol, source, destination, source port,
 * destination port, one space between fields.  After UNKNOWN anything
 * may follow, to be ignored (SPEC 2.1).
 */
static enum parse_result
proxy_v1_fields(const uint8_t *s, size_t n, bool complete, struct proxy_header *h)
{
	uint8_t			 addr[2][16];
	uint16_t		 port[2];
	int			 af = AF_UNSPEC;
	size_t			 start = 0;
	enum parse_result	 r;

	for (int field = 0;; field++) {
		const uint8_t	*sp = memchr(s + start, ' ', n - start);
		size_t		 end = sp != NULL ? (size_t)(sp - s) : n;
		bool		 whole = sp != NULL || complete;

		switch (field) {
		case 0:
			r = proxy_v1_word(s + start, end - start, whole, "PROXY");
			break;
		case 1:
			r = proxy_v1_proto(s + start, end - start, whole, &af);
			if (r == PARSE_OK && af == AF_UNSPEC) {
				if (!complete)
					return PARSE_NEED_MORE;
				h->local = true;
				h->fam = PROXY_FAM_UNSPEC;
				return PARSE_OK;
			}
			break;
		case 2:
		case 3:
			r = proxy_v1_addr(s + start, end - start, whole, af, addr[field - 2]);
			break;
		case 4:
		case 5:
			r = proxy_v1_port(s + start, end - start, whole, &port[field - 4]);
			break;
		default:
			return PARSE_MALFORMED;	/* a space after the last field */
		}
		if (r == PARSE_MALFORMED)
			return PARSE_MALFORMED;
		if (sp == NULL) {
			if (!complete)
				return PARSE_NEED_MORE;
			if (field != 5)
				return PARSE_MALFORMED;	/* fields missing */
			break;
		}
		start = end + 1;
	}
	if (af == AF_INET) {
		h->fam = PROXY_FAM_TCP4;
		proxy_set_in(&h->src, &h->srclen, addr[0], port[0]);
		proxy_set_in(&h->dst, &h->dstlen, addr[1], port[1]);
	} else {
		h->fam = PROXY_FAM_TCP6;
		proxy_set_in6(&h->src, &h->srclen, addr[0], port[0]);
		proxy_set_in6(&h->dst, &h->dstlen, addr[1], port[1]);
	}
	return PARSE_OK;
}

static enum parse_result
proxy_v1(const uint8_t *p, size_t len, struct proxy_header *h)
{
	size_t			 n = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	size_t			 i;
	enum parse_result	 r;

	for (i = 0; i < n; i++) {
		if (p[i] == '\n')
			return PARSE_MALFORMED;		/* a bare LF ends no line */
		if (p[i] == '\r')
			break;
	}
	if (i == n) {
		/* no CR yet: too long, or the start of a line */
		if (len >= PROXY_V1_MAX)
			return PARSE_MALFORMED;
		r = proxy_v1_fields(p, len, false, h);
		return r == PARSE_OK ? PARSE_NEED_MORE : r;
	}
	if (i + 2 > PROXY_V1_MAX)
		return PARSE_MALFORMED;		/* the LF would be byte 108 */
	if (i + 1 < len && p[i + 1] != '\n')
		return PARSE_MALFORMED;		/* a bare CR */
	r = proxy_v1_fields(p, i, true, h);
	if (r != PARSE_OK)
		return r;
	if (i + 1 == len)
		return PARSE_NEED_MORE;		/* a good line, but its LF is not here */
	h->version = 1;
	h->command = PROXY_V2_PROXY;
	h->len = i + 2;
	return PARSE_OK;
}

/* Version 2 */

/*
 * CRC-32C (Castagnoli; RFC 4960 appendix B), a bit at a time: at most
 * PROXY_V2_MAX bytes, once per connection, and only when the sender
 * asked for it, is not worth a table.
 */
static uint32_t
proxy_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n-- > 0) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc >> 1 ^ (0x82f63b78u & (0u - (crc & 1u)));
	}
	return crc;
}

/* The address block of a family, or -1 for a family that does not exist. */
static int
proxy_v2_addrlen(uint8_t fam)
{
	switch (fam) {
	case PROXY_FAM_UNSPEC:
		return 0;
	case PROXY_FAM_TCP4:
	case PROXY_FAM_UDP4:
		return 2 * 4 + 2 * 2;
	case PROXY_FAM_TCP6:
	case PROXY_FAM_UDP6:
		return 2 * 16 + 2 * 2;
	case PROXY_FAM_UNIX_STREAM:
	case PROXY_FAM_UNIX_DGRAM:
		return 2 * PROXY_V2_UNIX_ADDR;
	default:
		return -1;
	}
}

/*
 * The TLV at p[*off..end): it must lie within it.  *off moves past it.
 */
static enum parse_result
proxy_tlv_next(const uint8_t *p, size_t *off, size_t end, uint8_t *type,
    const uint8_t **v, size_t *vlen)
{
	size_t	 n;

	if (end - *off < PROXY_TLV_HEADER)
		return PARSE_MALFORMED;
	n = proxy_be16(p + *off + 1);
	if (n > end - *off - PROXY_TLV_HEADER)
		return PARSE_MALFORMED;
	*type = p[*off];
	*v = p + *off + PROXY_TLV_HEADER;
	*vlen = n;
	*off += PROXY_TLV_HEADER + n;
	return PARSE_OK;
}

/* Text into a NUL-terminated field of size bytes. */
static enum parse_result
proxy_text(const uint8_t *v, size_t vlen, char *dst, size_t size)
{
	if (vlen >= size)
		return PARSE_TOO_LONG;
	if (memchr(v, '\0', vlen) != NULL)
		return PARSE_MALFORMED;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
	return PARSE_OK;
}

/* Seen twice?  A kept TLV that comes twice is ambiguous. */
static bool
proxy_seen(uint8_t seen[32], uint8_t type)
{
	bool	 was = (seen[type / 8] >> (type % 8)) & 1;

	seen[type / 8] |= (uint8_t)(1u << (type % 8));
	return was;
}

/* The value of a PP2_TYPE_SSL: client, verify, then sub-TLVs filling it. */
static enum parse_result
proxy_ssl(const uint8_t *v, size_t vlen, struct proxy_tlvs *t)
{
	uint8_t			 seen[32] = { 0 }, type;
	const uint8_t		*sv;
	size_t			 off = PROXY_SSL_FIXED, svlen;
	enum parse_result	 r;

	if (vlen < PROXY_SSL_FIXED)
		return PARSE_MALFORMED;
	t->ssl = true;
	t->ssl_client = v[0];
	t->ssl_verify = proxy_be32(v + 1);
	while (off < vlen) {
		if ((r = proxy_tlv_next(v, &off, vlen, &type, &sv, &svlen)) != PARSE_OK)
			return r;
		switch (type) {
		case PP2_SUBTYPE_SSL_VERSION:
		case PP2_SUBTYPE_SSL_CN:
		case PP2_SUBTYPE_SSL_CIPHER:
		case PP2_SUBTYPE_SSL_SIG_ALG:
		case PP2_SUBTYPE_SSL_KEY_ALG:
			if (proxy_seen(seen, type))
				return PARSE_MALFORMED;
			break;
		default:
			continue;	/* not ours to know */
		}
		switch (type) {
		case PP2_SUBTYPE_SSL_VERSION:
			r = proxy_text(sv, svlen, t->ssl_version, sizeof(t->ssl_version));
			break;
		case PP2_SUBTYPE_SSL_CN:
			r = proxy_text(sv, svlen, t->ssl_cn, sizeof(t->ssl_cn));
			break;
		case PP2_SUBTYPE_SSL_CIPHER:
			r = proxy_text(sv, svlen, t->ssl_cipher, sizeof(t->ssl_cipher));
			break;
		case PP2_SUBTYPE_SSL_SIG_ALG:
			r = proxy_text(sv, svlen, t->ssl_sig_alg, sizeof(t->ssl_sig_alg));
			break;
		default:
			r = proxy_text(sv, svlen, t->ssl_key_alg, sizeof(t->ssl_key_alg));
			break;
		}
		if (r != PARSE_OK)
			return r;
	}
	return PARSE_OK;
}

/* Is v[0..vlen) one of our upgrade words? */
static bool
proxy_upgrade_known(const void *v, size_t vlen)
{
	for (size_t i = 0; i < sizeof(proxy_upgrades) / sizeof(proxy_upgrades[0]); i++)
		if (strlen(proxy_upgrades[i]) == vlen && memcmp(v, proxy_upgrades[i], vlen) == 0)
			return true;
	return false;
}

/*
 * The TLVs of the whole header hdr[0..total), from off: they must fill
 * it exactly.  A CRC32C covers the whole header with its own value as
 * zeros.
 */
static enum parse_result
proxy_tlvs(const uint8_t *hdr, size_t off, size_t total, struct proxy_tlvs *t)
{
	static const uint8_t	 zero[4];
	uint8_t			 seen[32] = { 0 }, type;
	const uint8_t		*v;
	size_t			 vlen, crc_at = 0;
	enum parse_result	 r;
	uint32_t		 crc;

	while (off < total) {
		if ((r = proxy_tlv_next(hdr, &off, total, &type, &v, &vlen)) != PARSE_OK)
			return r;
		switch (type) {
		case PP2_TYPE_ALPN:
		case PP2_TYPE_AUTHORITY:
		case PP2_TYPE_CRC32C:
		case PP2_TYPE_UNIQUE_ID:
		case PP2_TYPE_SSL:
			if (proxy_seen(seen, type))
				return PARSE_MALFORMED;
			break;
		}
		r = PARSE_OK;
		switch (type) {
		case PP2_TYPE_ALPN:
			if (vlen > sizeof(t->alpn))
				return PARSE_TOO_LONG;
			memcpy(t->alpn, v, vlen);
			t->alpn_len = vlen;
			break;
		case PP2_TYPE_AUTHORITY:
			r = proxy_text(v, vlen, t->authority, sizeof(t->authority));
			break;
		case PP2_TYPE_CRC32C:
			if (vlen != 4)
				return PARSE_MALFORMED;
			crc_at = (size_t)(v - hdr);
			break;
		case PP2_TYPE_UNIQUE_ID:
			if (vlen > sizeof(t->unique_id))
				return PARSE_TOO_LONG;
			memcpy(t->unique_id, v, vlen);
			t->unique_id_len = vlen;
			break;
		case PP2_TYPE_SSL:
			r = proxy_ssl(v, vlen, t);
			break;
		case PP2_TYPE_STARTTLS_PROXY_UPGRADE:
			/* the first of ours counts; others' values of this type are not looked at */
			if (t->upgrade[0] == '\0' && proxy_upgrade_known(v, vlen)) {
				memcpy(t->upgrade, v, vlen);
				t->upgrade[vlen] = '\0';
			}
			break;
		default:
			break;		/* NOOP, NETNS, others' */
		}
		if (r != PARSE_OK)
			return r;
	}
	if (crc_at != 0) {
		crc = proxy_crc32c(0xffffffffu, hdr, crc_at);
		crc = proxy_crc32c(crc, zero, sizeof(zero));
		crc = proxy_crc32c(crc, hdr + crc_at + 4, total - crc_at - 4);
		if (~crc != proxy_be32(hdr + crc_at))
			return PARSE_MALFORMED;
		t->crc32c = true;
	}
	return PARSE_OK;
}

static enum parse_result
proxy_v2(const uint8_t *p, size_t len, struct proxy_header *h)
{
	const uint8_t	*a = p + PROXY_V2_HEADER;
	size_t		 total;
	int		 addrlen;

	if (memcmp(p, proxy_v2_sig, len < sizeof(proxy_v2_sig) ? len : sizeof(proxy_v2_sig)) != 0)
		return PARSE_MALFORMED;
	if (len < 13)
		return PARSE_NEED_MORE;
	if (p[12] != PROXY_V2_LOCAL && p[12] != PROXY_V2_PROXY)
		return PARSE_MALFORMED;		/* version 2, LOCAL or PROXY only */
	if (len < 14)
		return PARSE_NEED_MORE;
	/* LOCAL too: its TLVs start after the block of its family */
	if ((addrlen = proxy_v2_addrlen(p[13])) == -1)
		return PARSE_MALFORMED;
	if (len < PROXY_V2_HEADER)
		return PARSE_NEED_MORE;
	total = PROXY_V2_HEADER + (size_t)proxy_be16(p + 14);
	if (total > PROXY_V2_MAX)
		return PARSE_TOO_LONG;
	if (total < PROXY_V2_HEADER + (size_t)addrlen)
		return PARSE_MALFORMED;
	if (len < total)
		return PARSE_NEED_MORE;

	h->version = 2;
	h->command = p[12];
	h->fam = p[13];
	h->len = total;
	h->local = true;
	if (h->command == PROXY_V2_PROXY) {
		switch (h->fam) {
		case PROXY_FAM_TCP4:
			proxy_set_in(&h->src, &h->srclen, a, proxy_be16(a + 8));
			proxy_set_in(&h->dst, &h->dstlen, a + 4, proxy_be16(a + 10));
			h->local = false;
			break;
		case PROXY_FAM_TCP6:
			proxy_set_in6(&h->src, &h->srclen, a, proxy_be16(a + 32));
			proxy_set_in6(&h->dst, &h->dstlen, a + 16, proxy_be16(a + 34));
			h->local = false;
			break;
		case PROXY_FAM_UNIX_STREAM:
			proxy_set_un(&h->src, &h->srclen, a);
			proxy_set_un(&h->dst, &h->dstlen, a + PROXY_V2_UNIX_ADDR);
			h->local = false;
			break;
		default:
			break;		/* UNSPEC, and datagrams fall back to it */
		}
	}
	return proxy_tlvs(p, PROXY_V2_HEADER + (size_t)addrlen, total, &h->tlv);
}

enum parse_result
proxy_parse(const uint8_t *p, size_t len, struct proxy_header *out)
{
	struct proxy_header	 h;
	enum parse_result	 r;

	if (len == 0)
		return PARSE_NEED_MORE;
	/* a header of a few hundred bytes at most: build it aside, then copy */
	memset(&h, 0, sizeof(h));
	if (p[0] == 'P')
		r = proxy_v1(p, len, &h);
	else if (p[0] == proxy_v2_sig[0])
		r = proxy_v2(p, len, &h);
	else
		r = PARSE_MALFORMED;
	if (r == PARSE_OK)
		*out = h;
	return r;
}

/* Writing */

/* Both ends as one family: AF_INET, AF_INET6 or AF_UNSPEC. */
struct proxy_ends {
	int		 af;
	uint8_t		 src[16], dst[16];	/* 4 or 16 bytes, network order */
	uint8_t		 sport[2], dport[2];	/* network order */
};

static void
proxy_end(const struct sockaddr *sa, int af, uint8_t addr[16], uint8_t port[2])
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

		if (af == AF_INET) {
			memcpy(addr, &sin->sin_addr, 4);
		} else {
			/* ::ffff:a.b.c.d (RFC 4291 section 2.5.5.2) */
			memset(addr, 0, 10);
			addr[10] = addr[11] = 0xff;
			memcpy(addr + 12, &sin->sin_addr, 4);
		}
		memcpy(port, &sin->sin_port, 2);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;

		memcpy(addr, &sin6->sin6_addr, 16);
		memcpy(port, &sin6->sin6_port, 2);
	}
}

static void
proxy_ends(const struct sockaddr *src, const struct sockaddr *dst, struct proxy_ends *e)
{
	int	 sf = src != NULL ? src->sa_family : AF_UNSPEC;
	int	 df = dst != NULL ? dst->sa_family : AF_UNSPEC;

	memset(e, 0, sizeof(*e));
	if ((sf != AF_INET && sf != AF_INET6) || (df != AF_INET && df != AF_INET6)) {
		e->af = AF_UNSPEC;
		return;
	}
	e->af = sf == AF_INET && df == AF_INET ? AF_INET : AF_INET6;
	proxy_end(src, e->af, e->src, e->sport);
	proxy_end(dst, e->af, e->dst, e->dport);
}

ssize_t
proxy_build_v1(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out,
    size_t outlen)
{
	struct proxy_ends	 e;
	char			 line[PROXY_V1_MAX + 1];
	char			 s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int			 n;

	proxy_ends(src, dst, &e);
	if (e.af == AF_UNSPEC)
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	else {
		if (inet_ntop(e.af, e.src, s, sizeof(s)) == NULL ||
		    inet_ntop(e.af, e.dst, d, sizeof(d)) == NULL)
			return -1;
		n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
		    e.af == AF_INET ? "TCP4" : "TCP6", s, d,
		    (unsigned)proxy_be16(e.sport), (unsigned)proxy_be16(e.dport));
	}
	if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n > outlen)
		return -1;
	memcpy(out, line, (size_t)n);
	return n;
}

static uint8_t *
proxy_put_tlv(uint8_t *w, uint8_t type, const void *v, size_t n)
{
	w[0] = type;
	w[1] = (uint8_t)(n >> 8);
	w[2] = (uint8_t)n;
	if (n > 0)
		memcpy(w + PROXY_TLV_HEADER, v, n);
	return w + PROXY_TLV_HEADER + n;
}

/* The length of an optional string, or SIZE_MAX when over max. */
static size_t
proxy_optlen(const char *s, size_t max)
{
	size_t	 n = s != NULL ? strlen(s) : 0;

	return n > max ? SIZE_MAX : n;
}

ssize_t
proxy_build_v2(const struct sockaddr *src, const struct sockaddr *dst,
    const struct proxy_tls_info *tls, uint8_t *out, size_t outlen)
{
	static const struct proxy_tls_info	 none;
	struct proxy_ends	 e;
	size_t			 addrlen, total, sni, ver, cip, up, ssl = 0;
	uint8_t			*w = out;
	uint8_t			 fixed[PROXY_SSL_FIXED] = { PP2_CLIENT_SSL, 0, 0, 0, 0 };

	if (tls == NULL)
		tls = &none;
	sni = proxy_optlen(tls->sni, PROXY_AUTHORITY_MAX);
	ver = proxy_optlen(tls->version, PROXY_SSL_TEXT_MAX);
	cip = proxy_optlen(tls->cipher, PROXY_SSL_TEXT_MAX);
	up = proxy_optlen(tls->upgrade, PROXY_UPGRADE_MAX);
	if (sni == SIZE_MAX || ver == SIZE_MAX || cip == SIZE_MAX || up == SIZE_MAX)
		return -1;
	if (up > 0 && !proxy_upgrade_known(tls->upgrade, up))
		return -1;		/* the reader would not know it for ours */

	proxy_ends(src, dst, &e);
	addrlen = e.af == AF_INET ? 12 : e.af == AF_INET6 ? 36 : 0;
	total = PROXY_V2_HEADER + addrlen;
	if (sni > 0)
		total += PROXY_TLV_HEADER + sni;
	if (tls->tls) {
		ssl = PROXY_SSL_FIXED;
		if (ver > 0)
			ssl += PROXY_TLV_HEADER + ver;
		if (cip > 0)
			ssl += PROXY_TLV_HEADER + cip;
		total += PROXY_TLV_HEADER + ssl;
	}
	if (up > 0)
		total += PROXY_TLV_HEADER + up;
	if (total > outlen || total > PROXY_V2_MAX)
		return -1;

	memcpy(w, proxy_v2_sig, sizeof(proxy_v2_sig));
	w += sizeof(proxy_v2_sig);
	*w++ = e.af == AF_UNSPEC ? PROXY_V2_LOCAL : PROXY_V2_PROXY;
	*w++ = e.af == AF_INET ? PROXY_FAM_TCP4 : e.af == AF_INET6 ? PROXY_FAM_TCP6 :
	    PROXY_FAM_UNSPEC;
	*w++ = (uint8_t)((total - PROXY_V2_HEADER) >> 8);
	*w++ = (uint8_t)(total - PROXY_V2_HEADER);
	if (addrlen > 0) {
		size_t	 al = e.af == AF_INET ? 4 : 16;

		memcpy(w, e.src, al);
		memcpy(w + al, e.dst, al);
		memcpy(w + 2 * al, e.sport, 2);
		memcpy(w + 2 * al + 2, e.dport, 2);
		w += addrlen;
	}
	if (sni > 0)
		w = proxy_put_tlv(w, PP2_TYPE_AUTHORITY, tls->sni, sni);
	if (tls->tls) {
		/* its length covers the sub-TLVs that follow the fixed part */
		*w++ = PP2_TYPE_SSL;
		*w++ = (uint8_t)(ssl >> 8);
		*w++ = (uint8_t)ssl;
		memcpy(w, fixed, sizeof(fixed));
		w += sizeof(fixed);
		if (ver > 0)
			w = proxy_put_tlv(w, PP2_SUBTYPE_SSL_VERSION, tls->version, ver);
		if (cip > 0)
			w = proxy_put_tlv(w, PP2_SUBTYPE_SSL_CIPHER, tls->cipher, cip);
	}
	if (up > 0)
		w = proxy_put_tlv(w, PP2_TYPE_STARTTLS_PROXY_UPGRADE, tls->upgrade, up);
	return (ssize_t)(w - out);
}
