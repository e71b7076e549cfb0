/*
 * Unit tests for src/proxy_proto.c: PROXY protocol v1 lines and v2
 * headers read, and written then read back.
 *
 * The hap_* fixtures are real headers, recorded on loopback from HAProxy
 * 2.6.12 (Debian 12) in TCP mode: a frontend per case on 127.0.0.1, [::1]
 * or a unix socket, each with "server s 127.0.0.1:PORT <option>" pointing
 * at a Python socket that kept the bytes of the first connection.  The
 * clients were a Python socket sending "hello\r\n" and, through TLS
 * frontends ("bind 127.0.0.1:P ssl crt server.pem", a throwaway
 * certificate for CN=mail.example.org made with openssl), "openssl
 * s_client -servername mail.example.org" (OpenSSL 3.0), with a client
 * certificate for CN=alice.example.org when the frontend also had
 * "ca-file ca.pem verify optional".  The options:
 *   send-proxy                  (v1; from 127.0.0.1, [::1], a unix socket)
 *   send-proxy check check-send-proxy (v1 health check)
 *   send-proxy-v2               (from 127.0.0.1, [::1], a unix socket)
 *   send-proxy-v2 check check-send-proxy (v2 health check: LOCAL)
 *   send-proxy-v2-ssl           (TLS 1.3 client; and a plain client)
 *   send-proxy-v2-ssl-cn        (TLS 1.2 client with a certificate)
 *   send-proxy-v2 proxy-v2-options ssl,cert-cn,ssl-cipher,cert-sig,
 *       cert-key,authority,crc32c,unique-id  (TLS 1.3 client with a
 *       certificate; unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid)
 * The same recordings, with the "hello\r\n" after them, are the seeds in
 * tests/fuzz/corpus/proxy/.  The ports are the ephemeral ones of that run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

/* Fixtures: the bytes of string literals, without the NUL. */
#define FIXLEN(a)	(sizeof(a) - 1)
#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* HAProxy send-proxy, client 127.0.0.1 */
static const char hap_v1_tcp4[] = "PROXY TCP4 127.0.0.1 127.0.0.1 37492 36425\r\n";

/* HAProxy send-proxy, client [::1] */
static const char hap_v1_tcp6[] = "PROXY TCP6 ::1 ::1 59952 51029\r\n";

/* HAProxy send-proxy with check-send-proxy: a health check (not UNKNOWN) */
static const char hap_v1_check[] = "PROXY TCP4 127.0.0.1 127.0.0.1 35768 56987\r\n";

/* HAProxy send-proxy, client on a unix socket */
static const char hap_v1_unix[] = "PROXY UNKNOWN\r\n";

/* SPEC 2.1: the example, and the longest lines of each kind */
static const char spec_v1_example[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
static const char spec_v1_tcp4_max[] =
	"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
static const char spec_v1_tcp6_max[] =
	"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
static const char spec_v1_unknown_max[] =
	"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

#define V2_SIG	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a

/* HAProxy send-proxy-v2, client 127.0.0.1 */
static const uint8_t hap_v2_tcp4[] = {
	V2_SIG,
	0x21, 0x11, 0x00, 0x0c,			/* PROXY, TCP4, 12 bytes */
	0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
	0xe3, 0x72, 0x85, 0x8d,			/* 58226, 34189 */
};

/* HAProxy send-proxy-v2, client [::1] */
static const uint8_t hap_v2_tcp6[] = {
	V2_SIG,
	0x21, 0x21, 0x00, 0x24,			/* PROXY, TCP6, 36 bytes */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0xea, 0x5a, 0xac, 0xbd,			/* 59994, 44221 */
};

/*
 * HAProxy send-proxy-v2 with check-send-proxy: a health check.  The
 * recording from a unix-socket client is the same 16 bytes: HAProxy
 * sends LOCAL UNSPEC for addresses it cannot put in a header.
 */
static const uint8_t hap_v2_local[] = {
	V2_SIG,
	0x20, 0x00, 0x00, 0x00,			/* LOCAL, UNSPEC, 0 bytes */
};

/* HAProxy send-proxy-v2-ssl, a TLS 1.3 client */
static const uint8_t hap_v2_ssl[] = {
	V2_SIG,
	0x21, 0x11, 0x00, 0x1e,			/* PROXY, TCP4, 30 bytes */
	0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
	0xe7, 0x3e, 0xd1, 0x77,			/* 59198, 53623 */
	0x20, 0x00, 0x0f,			/* SSL, 15 bytes */
		0x01, 0x00, 0x00, 0x00, 0x00,	/* client SSL, verify 0 */
		0x21, 0x00, 0x07,		/* VERSION */
			'T', 'L', 'S', 'v', '1', '.', '3',
};

/* HAProxy send-proxy-v2-ssl, a plain client: the SSL TLV says client 0 */
static const uint8_t hap_v2_ssl_plain[] = {
	V2_SIG,
	0x21, 0x11, 0x00, 0x14,			/* PROXY, TCP4, 20 bytes */
	0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
	0xbb, 0x10, 0x8d, 0xd9,			/* 47888, 36313 */
	0x20, 0x00, 0x05,			/* SSL, 5 bytes */
		0x00, 0x00, 0x00, 0x00, 0x00,	/* client 0, verify 0 */
};

/* HAProxy send-proxy-v2-ssl-cn, a TLS 1.2 client with a certificate */
static const uint8_t hap_v2_ssl_cn[] = {
	V2_SIG,
	0x21, 0x11, 0x00, 0x32,			/* PROXY, TCP4, 50 bytes */
	0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
	0xda, 0x16, 0xc6, 0xef,			/* 55830, 50927 */
	0x20, 0x00, 0x23,			/* SSL, 35 bytes */
		0x07, 0x00, 0x00, 0x00, 0x00,	/* SSL, CERT_CONN, CERT_SESS; verify 0 */
		0x21, 0x00, 0x07,		/* VERSION */
			'T', 'L', 'S', 'v', '1', '.', '2',
		0x22, 0x00, 0x11,		/* CN */
			'a', 'l', 'i', 'c', 'e', '.', 'e', 'x', 'a', 'm', 'p', 'l',
			'e', '.', 'o', 'r', 'g',
};

/* HAProxy proxy-v2-options ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c,unique-id */
static const uint8_t hap_v2_options[] = {
	V2_SIG,
	0x21, 0x11, 0x00, 0xad,			/* PROXY, TCP4, 173 bytes */
	0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
	0xa6, 0xa2, 0xc4, 0x2d,			/* 42658, 50221 */
	0x03, 0x00, 0x04,			/* CRC32C */
		0xaa, 0xfd, 0x19, 0xf5,
	0x02, 0x00, 0x10,			/* AUTHORITY: the SNI */
		'm', 'a', 'i', 'l', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e',
		'.', 'o', 'r', 'g',
	0x05, 0x00, 0x2e,			/* UNIQUE_ID */
		'7', 'F', '0', '0', '0', '0', '0', '1', ':', 'A', '6', 'A',
		'2', '_', '7', 'F', '0', '0', '0', '0', '0', '1', ':', 'C',
		'4', '2', 'D', '_', '6', 'B', '0', '4', '5', '9', '8', '4',
		'_', '0', '0', '0', '9', ':', '2', '7', '7', '8',
	0x20, 0x00, 0x53,			/* SSL, 83 bytes */
		0x07, 0x00, 0x00, 0x00, 0x00,
		0x21, 0x00, 0x07,		/* VERSION */
			'T', 'L', 'S', 'v', '1', '.', '3',
		0x22, 0x00, 0x11,		/* CN */
			'a', 'l', 'i', 'c', 'e', '.', 'e', 'x', 'a', 'm', 'p', 'l',
			'e', '.', 'o', 'r', 'g',
		0x25, 0x00, 0x07,		/* KEY_ALG */
			'R', 'S', 'A', '2', '0', '4', '8',
		0x24, 0x00, 0x0a,		/* SIG_ALG */
			'R', 'S', 'A', '-', 'S', 'H', 'A', '2', '5', '6',
		0x23, 0x00, 0x16,		/* CIPHER */
			'T', 'L', 'S', '_', 'A', 'E', 'S', '_', '2', '5', '6', '_',
			'G', 'C', 'M', '_', 'S', 'H', 'A', '3', '8', '4',
};

/* proxy_parse on p[0..n) copied to an exact buffer. */
static enum parse_result
parse(const void *p, size_t n, struct proxy_header *out)
{
	uint8_t			*q = exact(p, n);
	enum parse_result	 r = proxy_parse(q, n, out);

	free(q);
	return r;
}

/* The length of a sun_path, which may fill its array without a NUL. */
static size_t
path_len(const struct sockaddr_un *sun)
{
	const char	*nul = memchr(sun->sun_path, '\0', sizeof(sun->sun_path));

	return nul != NULL ? (size_t)(nul - sun->sun_path) : sizeof(sun->sun_path);
}

/* "a.b.c.d:port", "[v6]:port", "unix:path" or "-"; checks the length too. */
static const char *
fmt(const struct sockaddr_storage *ss, socklen_t len)
{
	static char	 buf[200];
	char		 a[INET6_ADDRSTRLEN];

	switch (ss->ss_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)ss;

		assert_int_equal(len, sizeof(*sin));
		assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a)));
		snprintf(buf, sizeof(buf), "%s:%u", a, (unsigned)ntohs(sin->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)ss;

		assert_int_equal(len, sizeof(*sin6));
		assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a)));
		snprintf(buf, sizeof(buf), "[%s]:%u", a, (unsigned)ntohs(sin6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)(const void *)ss;
		size_t	 n = path_len(sun);

		assert_true(len >= offsetof(struct sockaddr_un, sun_path) + n);
		snprintf(buf, sizeof(buf), "unix:%.*s", (int)n, sun->sun_path);
		break;
	}
	case AF_UNSPEC:
		assert_int_equal(len, 0);
		snprintf(buf, sizeof(buf), "-");
		break;
	default:
		fail_msg("family %d", ss->ss_family);
	}
	return buf;
}

/* A sockaddr for "192.0.2.1" or "2001:db8::1" and a port. */
static const struct sockaddr *
sa(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	}
	return (const struct sockaddr *)ss;
}

static const struct sockaddr *
sa_un(struct sockaddr_storage *ss, const char *path)
{
	struct sockaddr_un	*sun = (struct sockaddr_un *)(void *)ss;

	memset(ss, 0, sizeof(*ss));
	sun->sun_family = AF_UNIX;
	strncpy(sun->sun_path, path, sizeof(sun->sun_path));
	return (const struct sockaddr *)ss;
}

/*
 * A v2 header: signature, ver_cmd, fam, then body[0..n) as the rest,
 * with the length field saying so.  Its length.
 */
static size_t
v2(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const void *body, size_t n)
{
	static const uint8_t	 sig[] = { V2_SIG };

	memcpy(buf, sig, sizeof(sig));
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(n >> 8);
	buf[15] = (uint8_t)n;
	if (n > 0)
		memcpy(buf + 16, body, n);
	return 16 + n;
}

/* Every prefix of a header is NEED_MORE, and leaves *out alone. */
static void
assert_prefixes_need_more(const char *name, const void *p, size_t len)
{
	struct proxy_header	 h, sentinel;
	enum parse_result	 r;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t n = 0; n < len; n++) {
		h = sentinel;
		if ((r = parse(p, n, &h)) != PARSE_NEED_MORE)
			fail_msg("%s, %zu of %zu bytes: %d, not NEED_MORE", name, n, len, r);
		assert_memory_equal(&h, &sentinel, sizeof(h));
	}
}

/* Not a header: r, with *out left alone. */
static void
assert_parse_fails(const char *name, const void *p, size_t len, enum parse_result want)
{
	struct proxy_header	 h, sentinel;
	enum parse_result	 r;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	h = sentinel;
	if ((r = parse(p, len, &h)) != want)
		fail_msg("%s: %d, want %d", name, r, want);
	assert_memory_equal(&h, &sentinel, sizeof(h));
}

static bool
tlvs_empty(const struct proxy_tlvs *t)
{
	static const struct proxy_tlvs	 zero;

	return memcmp(t, &zero, sizeof(zero)) == 0;
}

/* Version 1 */

struct v1_case {
	const char	*name;
	const char	*line;
	size_t		 len;
	uint8_t		 fam;
	const char	*src;
	const char	*dst;
};

#define V1_CASE(a, fam, src, dst)	{ #a, a, FIXLEN(a), fam, src, dst }

static const struct v1_case v1_cases[] = {
	V1_CASE(hap_v1_tcp4, PROXY_FAM_TCP4, "127.0.0.1:37492", "127.0.0.1:36425"),
	V1_CASE(hap_v1_tcp6, PROXY_FAM_TCP6, "[::1]:59952", "[::1]:51029"),
	V1_CASE(hap_v1_check, PROXY_FAM_TCP4, "127.0.0.1:35768", "127.0.0.1:56987"),
	V1_CASE(hap_v1_unix, PROXY_FAM_UNSPEC, "-", "-"),
	V1_CASE(spec_v1_example, PROXY_FAM_TCP4, "192.168.0.1:56324", "192.168.0.11:443"),
	V1_CASE(spec_v1_tcp4_max, PROXY_FAM_TCP4, "255.255.255.255:65535",
	    "255.255.255.255:65535"),
	V1_CASE(spec_v1_tcp6_max, PROXY_FAM_TCP6,
	    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
	    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
	V1_CASE(spec_v1_unknown_max, PROXY_FAM_UNSPEC, "-", "-"),
};

/* The real lines and the specification's: addresses, ports, length. */
static void
test_v1_lines(void **state)
{
	struct proxy_header	 h;

	(void)state;
	for (size_t i = 0; i < NELEM(v1_cases); i++) {
		const struct v1_case *c = &v1_cases[i];

		memset(&h, 0xa5, sizeof(h));
		if (parse(c->line, c->len, &h) != PARSE_OK)
			fail_msg("%s: not OK", c->name);
		assert_int_equal(h.len, c->len);
		assert_int_equal(h.version, 1);
		assert_int_equal(h.command, PROXY_V2_PROXY);
		assert_int_equal(h.fam, c->fam);
		assert_int_equal(h.local, c->fam == PROXY_FAM_UNSPEC);
		assert_string_equal(fmt(&h.src, h.srclen), c->src);
		assert_string_equal(fmt(&h.dst, h.dstlen), c->dst);
		assert_true(tlvs_empty(&h.tlv));
	}
	assert_int_equal(FIXLEN(spec_v1_tcp4_max), 56);
	assert_int_equal(FIXLEN(spec_v1_tcp6_max), 104);
	assert_int_equal(FIXLEN(spec_v1_unknown_max), PROXY_V1_MAX);
}

/* What follows the line is the client's: not consumed, not looked at. */
static void
test_v1_followed(void **state)
{
	struct proxy_header	 h;
	char			 buf[256];

	(void)state;
	snprintf(buf, sizeof(buf), "%sEHLO client.example\r\n\n\n\r\r", hap_v1_tcp4);
	assert_int_equal(parse(buf, strlen(buf), &h), PARSE_OK);
	assert_int_equal(h.len, FIXLEN(hap_v1_tcp4));

	/* a second PROXY line is the client's business too */
	snprintf(buf, sizeof(buf), "%s%s", hap_v1_unix, hap_v1_tcp4);
	assert_int_equal(parse(buf, strlen(buf), &h), PARSE_OK);
	assert_int_equal(h.len, FIXLEN(hap_v1_unix));
	assert_true(h.local);

	/* more bytes than PROXY_V1_MAX, the line well within them */
	memset(buf, 'x', sizeof(buf));
	memcpy(buf, hap_v1_tcp6, FIXLEN(hap_v1_tcp6));
	assert_int_equal(parse(buf, sizeof(buf), &h), PARSE_OK);
	assert_int_equal(h.len, FIXLEN(hap_v1_tcp6));
}

/* Every prefix of every good line: NEED_MORE, *out untouched. */
static void
test_v1_truncated(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(v1_cases); i++)
		assert_prefixes_need_more(v1_cases[i].name, v1_cases[i].line, v1_cases[i].len);
}

/* After UNKNOWN anything goes up to the CRLF (SPEC 2.1). */
static void
test_v1_unknown(void **state)
{
	static const char	*lines[] = {
		"PROXY UNKNOWN\r\n",
		"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n",
		"PROXY UNKNOWN whatever,\x01 \x7f\xff  even  double spaces\r\n",
		"PROXY UNKNOWN \r\n",
	};
	struct proxy_header	 h;

	(void)state;
	for (size_t i = 0; i < NELEM(lines); i++) {
		memset(&h, 0xa5, sizeof(h));
		if (parse(lines[i], strlen(lines[i]), &h) != PARSE_OK)
			fail_msg("line %zu: not OK", i);
		assert_int_equal(h.len, strlen(lines[i]));
		assert_true(h.local);
		assert_int_equal(h.fam, PROXY_FAM_UNSPEC);
		assert_string_equal(fmt(&h.src, h.srclen), "-");
		assert_string_equal(fmt(&h.dst, h.dstlen), "-");
		assert_prefixes_need_more(lines[i], lines[i], strlen(lines[i]));
	}
}

/* Addresses inet_pton takes, written in ways a sender may choose. */
static void
test_v1_addresses(void **state)
{
	static const struct {
		const char	*line;
		const char	*src;
		const char	*dst;
	} cases[] = {
		{ "PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n", "0.0.0.0:0", "10.0.0.1:0" },
		{ "PROXY TCP6 2001:DB8::1 2001:db8:0:0:0:0:0:2 1 65535\r\n",
		    "[2001:db8::1]:1", "[2001:db8::2]:65535" },
		{ "PROXY TCP6 ::ffff:192.0.2.1 :: 25 587\r\n",
		    "[::ffff:192.0.2.1]:25", "[::]:587" },
		{ "PROXY TCP6 0001:0002:0003:0004:0005:0006:0007:0008 ::1 10 20\r\n",
		    "[1:2:3:4:5:6:7:8]:10", "[::1]:20" },
	};
	struct proxy_header	 h;

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		if (parse(cases[i].line, strlen(cases[i].line), &h) != PARSE_OK)
			fail_msg("%s: not OK", cases[i].line);
		assert_string_equal(fmt(&h.src, h.srclen), cases[i].src);
		assert_string_equal(fmt(&h.dst, h.dstlen), cases[i].dst);
	}
}

/* Whole lines that break the grammar: MALFORMED, *out untouched. */
static void
test_v1_malformed(void **state)
{
	static const char	*lines[] = {
		"proxy TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",	/* case */
		"Proxy TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY tcp4 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY unknown\r\n",
		"PROXY TCP5 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY UDP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY UNKNOWNX\r\n",
		"PROXYTCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		/* missing fields */
		"PROXY\r\n",
		"PROXY \r\n",
		"PROXY TCP4\r\n",
		"PROXY TCP4 192.168.0.1\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 \r\n",
		"PROXY TCP4 192.168.0.1  56324 443\r\n",
		/* one space, nothing else */
		"PROXY  TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11  56324 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324  443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n",
		"PROXY\tTCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 192.168.0.1\t192.168.0.11 56324 443\r\n",
		" PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		/* bad addresses */
		"PROXY TCP4 256.168.0.1 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 192.168.0 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 192.168.0.1.5 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 192.168.00.1 192.168.0.11 56324 443\r\n",	/* leading zero */
		"PROXY TCP4 0x7f.0.0.1 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 3232235521 192.168.0.11 56324 443\r\n",	/* one number */
		"PROXY TCP4 192.168.0.1 192.168..11 56324 443\r\n",
		"PROXY TCP4 localhost 192.168.0.11 56324 443\r\n",
		"PROXY TCP4 ::1 ::1 56324 443\r\n",			/* IPv6 under TCP4 */
		"PROXY TCP4 192.168.0.1 ::ffff:192.168.0.11 56324 443\r\n",
		"PROXY TCP6 192.168.0.1 192.168.0.11 56324 443\r\n",	/* IPv4 under TCP6 */
		"PROXY TCP6 ::1 192.168.0.11 56324 443\r\n",
		"PROXY TCP6 fe80::1%lo ::1 56324 443\r\n",		/* no zones */
		"PROXY TCP6 [::1] ::1 56324 443\r\n",
		"PROXY TCP6 1::2::3 ::1 56324 443\r\n",
		"PROXY TCP6 12345::1 ::1 56324 443\r\n",
		"PROXY TCP6 :::1 ::1 56324 443\r\n",
		"PROXY TCP6 g::1 ::1 56324 443\r\n",
		/* bad ports */
		"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 65536\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 99999 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 100000 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 +56324 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 0443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 00 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 0x50 443\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443a\r\n",
		/* line ends */
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\r\n",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",
		"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n443\r\n",
		"PROXY UNKNOWN\n",
		"PROXY UNKNOWN\rX\r\n",
		"PROXY UNKNOWN what\never\r\n",
		"PROXY\n",
		"\n",
		"P\r\n",
	};

	(void)state;
	for (size_t i = 0; i < NELEM(lines); i++)
		assert_parse_fails(lines[i], lines[i], strlen(lines[i]), PARSE_MALFORMED);
}

/* A NUL in a line is malformed wherever the grammar looks at it. */
static void
test_v1_nul(void **state)
{
	static const char	 line[] = "PROXY TCP4 192.168.0.1\0192.168.0.11 56324 443\r\n";

	(void)state;
	assert_parse_fails("NUL as a separator", line, FIXLEN(line), PARSE_MALFORMED);
	assert_parse_fails("NUL in PROXY", "PRO\0Y UNKNOWN\r\n", 15, PARSE_MALFORMED);
}

/*
 * Incomplete lines that can no longer become a header are MALFORMED at
 * once, without waiting for a CRLF that would not help.
 */
static void
test_v1_malformed_early(void **state)
{
	static const char	*starts[] = {
		"p",
		"PROXX",
		"PROXY_",
		"PROXY  ",
		"PROXY TCP5",
		"PROXY TCP4  ",
		"PROXY TCP4 1.2.3.4:",
		"PROXY TCP4 1.2.3.4 ::",
		"PROXY TCP4 1234567890123456",
		"PROXY TCP6 ::1 ::1%",
		"PROXY TCP4 1.2.3.4 5.6.7.8 00",
		"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
		"PROXY TCP4 1.2.3.4 5.6.7.8 123456",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 -",
		"PROXY TCP4 1.2.3.4\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
		"PROXY TCP4 999.2.3.4 ",		/* a whole word inet_pton refuses */
		"PROXY UNKNOWN\n",
	};
	struct proxy_header	 h;

	(void)state;
	for (size_t i = 0; i < NELEM(starts); i++)
		assert_parse_fails(starts[i], starts[i], strlen(starts[i]), PARSE_MALFORMED);

	/* but these can still become headers */
	assert_int_equal(parse("PROXY TCP", 9, &h), PARSE_NEED_MORE);
	assert_int_equal(parse("PROXY TCP4 ", 11, &h), PARSE_NEED_MORE);
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 0", 28, &h), PARSE_NEED_MORE);
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 6553", 31, &h), PARSE_NEED_MORE);
	assert_int_equal(parse("PROXY TCP4 999.2.3.4", 20, &h), PARSE_NEED_MORE);
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 31, &h), PARSE_NEED_MORE);
}

/* No CRLF within PROXY_V1_MAX bytes: MALFORMED, however it goes on. */
static void
test_v1_too_long(void **state)
{
	char			 buf[PROXY_V1_MAX + 16];
	struct proxy_header	 h;

	(void)state;
	/* UNKNOWN and its free text: 106 bytes without a CRLF are a prefix */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "PROXY UNKNOWN ", 14);
	assert_int_equal(parse(buf, PROXY_V1_MAX - 1, &h), PARSE_NEED_MORE);
	assert_parse_fails("107 bytes, no CR", buf, PROXY_V1_MAX, PARSE_MALFORMED);
	assert_parse_fails("all of it", buf, sizeof(buf), PARSE_MALFORMED);

	/* CRLF as bytes 106 and 107: the longest line there is */
	buf[PROXY_V1_MAX - 2] = '\r';
	buf[PROXY_V1_MAX - 1] = '\n';
	assert_int_equal(parse(buf, sizeof(buf), &h), PARSE_OK);
	assert_int_equal(h.len, PROXY_V1_MAX);
	assert_true(h.local);

	/* one more byte before it: the LF is byte 108 */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "PROXY UNKNOWN ", 14);
	buf[PROXY_V1_MAX - 1] = '\r';
	buf[PROXY_V1_MAX] = '\n';
	assert_parse_fails("108 bytes", buf, sizeof(buf), PARSE_MALFORMED);
	assert_parse_fails("107 bytes, the CR last", buf, PROXY_V1_MAX, PARSE_MALFORMED);
}

/* Version 2 */

struct v2_case {
	const char	*name;
	const uint8_t	*p;
	size_t		 len;
	uint8_t		 command;
	uint8_t		 fam;
	const char	*src;
	const char	*dst;
	bool		 ssl;
	uint8_t		 client;
	const char	*version;
	const char	*cn;
	const char	*cipher;
};

#define V2_CASE(a, cmd, fam, src, dst, ssl, client, version, cn, cipher)	\
	{ #a, a, sizeof(a), cmd, fam, src, dst, ssl, client, version, cn, cipher }

static const struct v2_case v2_cases[] = {
	V2_CASE(hap_v2_tcp4, PROXY_V2_PROXY, PROXY_FAM_TCP4, "127.0.0.1:58226",
	    "127.0.0.1:34189", false, 0, "", "", ""),
	V2_CASE(hap_v2_tcp6, PROXY_V2_PROXY, PROXY_FAM_TCP6, "[::1]:59994", "[::1]:44221",
	    false, 0, "", "", ""),
	V2_CASE(hap_v2_local, PROXY_V2_LOCAL, PROXY_FAM_UNSPEC, "-", "-", false, 0, "", "", ""),
	V2_CASE(hap_v2_ssl, PROXY_V2_PROXY, PROXY_FAM_TCP4, "127.0.0.1:59198",
	    "127.0.0.1:53623", true, PP2_CLIENT_SSL, "TLSv1.3", "", ""),
	V2_CASE(hap_v2_ssl_plain, PROXY_V2_PROXY, PROXY_FAM_TCP4, "127.0.0.1:47888",
	    "127.0.0.1:36313", true, 0, "", "", ""),
	V2_CASE(hap_v2_ssl_cn, PROXY_V2_PROXY, PROXY_FAM_TCP4, "127.0.0.1:55830",
	    "127.0.0.1:50927", true,
	    PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
	    "TLSv1.2", "alice.example.org", ""),
	V2_CASE(hap_v2_options, PROXY_V2_PROXY, PROXY_FAM_TCP4, "127.0.0.1:42658",
	    "127.0.0.1:50221", true,
	    PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
	    "TLSv1.3", "alice.example.org", "TLS_AES_256_GCM_SHA384"),
};

/* HAProxy's headers: addresses, command, family and the SSL TLV. */
static void
test_v2_haproxy(void **state)
{
	struct proxy_header	 h;

	(void)state;
	for (size_t i = 0; i < NELEM(v2_cases); i++) {
		const struct v2_case *c = &v2_cases[i];

		memset(&h, 0xa5, sizeof(h));
		if (parse(c->p, c->len, &h) != PARSE_OK)
			fail_msg("%s: not OK", c->name);
		assert_int_equal(h.len, c->len);
		assert_int_equal(h.version, 2);
		assert_int_equal(h.command, c->command);
		assert_int_equal(h.fam, c->fam);
		assert_int_equal(h.local, c->fam == PROXY_FAM_UNSPEC);
		assert_string_equal(fmt(&h.src, h.srclen), c->src);
		assert_string_equal(fmt(&h.dst, h.dstlen), c->dst);
		assert_int_equal(h.tlv.ssl, c->ssl);
		assert_int_equal(h.tlv.ssl_client, c->client);
		assert_int_equal(h.tlv.ssl_verify, 0);
		assert_string_equal(h.tlv.ssl_version, c->version);
		assert_string_equal(h.tlv.ssl_cn, c->cn);
		assert_string_equal(h.tlv.ssl_cipher, c->cipher);
		assert_string_equal(h.tlv.upgrade, "");
	}
}

/* Everything proxy-v2-options can send, CRC32C checked. */
static void
test_v2_haproxy_options(void **state)
{
	static const char	 unique_id[] = "7F000001:A6A2_7F000001:C42D_6B045984_0009:2778";
	struct proxy_header	 h;

	(void)state;
	assert_int_equal(parse(hap_v2_options, sizeof(hap_v2_options), &h), PARSE_OK);
	assert_true(h.tlv.crc32c);
	assert_string_equal(h.tlv.authority, "mail.example.org");
	assert_int_equal(h.tlv.unique_id_len, FIXLEN(unique_id));
	assert_memory_equal(h.tlv.unique_id, unique_id, FIXLEN(unique_id));
	assert_string_equal(h.tlv.ssl_sig_alg, "RSA-SHA256");
	assert_string_equal(h.tlv.ssl_key_alg, "RSA2048");
	assert_int_equal(h.tlv.alpn_len, 0);

	/* the others carry no CRC32C, AUTHORITY or UNIQUE_ID */
	assert_int_equal(parse(hap_v2_ssl_cn, sizeof(hap_v2_ssl_cn), &h), PARSE_OK);
	assert_false(h.tlv.crc32c);
	assert_string_equal(h.tlv.authority, "");
	assert_int_equal(h.tlv.unique_id_len, 0);
}

/* What follows the header is the client's, even if it looks like TLVs. */
static void
test_v2_followed(void **state)
{
	uint8_t			 buf[256];
	struct proxy_header	 h;

	(void)state;
	memcpy(buf, hap_v2_tcp4, sizeof(hap_v2_tcp4));
	memcpy(buf + sizeof(hap_v2_tcp4), "\x02\xff\xff" "hello\r\n", 10);
	assert_int_equal(parse(buf, sizeof(hap_v2_tcp4) + 10, &h), PARSE_OK);
	assert_int_equal(h.len, sizeof(hap_v2_tcp4));
	assert_string_equal(h.tlv.authority, "");

	/* a TLS ClientHello right behind the header */
	memcpy(buf, hap_v2_local, sizeof(hap_v2_local));
	memcpy(buf + sizeof(hap_v2_local), "\x16\x03\x01\x02\x00\x01", 6);
	assert_int_equal(parse(buf, sizeof(hap_v2_local) + 6, &h), PARSE_OK);
	assert_int_equal(h.len, 16);
}

/* Every prefix of every header: NEED_MORE, *out untouched. */
static void
test_v2_truncated(void **state)
{
	uint8_t		 buf[300];
	uint8_t		 body[216] = { 0 };
	size_t		 n;

	(void)state;
	for (size_t i = 0; i < NELEM(v2_cases); i++)
		assert_prefixes_need_more(v2_cases[i].name, v2_cases[i].p, v2_cases[i].len);
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_UNIX_STREAM, body, sizeof(body));
	assert_prefixes_need_more("unix", buf, n);
}

/*
 * LOCAL: the connection's own addresses, whatever the family (its
 * address block is skipped), TLVs read after it as HAProxy sends them.
 */
static void
test_v2_local(void **state)
{
	static const uint8_t	 tcp4_block[] = {
		192, 0, 2, 1, 192, 0, 2, 2, 0x00, 0x19, 0x00, 0x19,
		0x02, 0x00, 0x03, 'a', '.', 'b',		/* AUTHORITY */
	};
	static const uint8_t	 ssl_tlv[] = {
		0x20, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	uint8_t			 buf[64];
	struct proxy_header	 h;
	size_t			 n;

	(void)state;
	n = v2(buf, PROXY_V2_LOCAL, PROXY_FAM_TCP4, tcp4_block, sizeof(tcp4_block));
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_int_equal(h.len, n);
	assert_true(h.local);
	assert_int_equal(h.command, PROXY_V2_LOCAL);
	assert_int_equal(h.fam, PROXY_FAM_TCP4);
	assert_string_equal(fmt(&h.src, h.srclen), "-");
	assert_string_equal(fmt(&h.dst, h.dstlen), "-");
	assert_string_equal(h.tlv.authority, "a.b");

	n = v2(buf, PROXY_V2_LOCAL, PROXY_FAM_UNSPEC, ssl_tlv, sizeof(ssl_tlv));
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_true(h.local);
	assert_true(h.tlv.ssl);
}

/*
 * The PROXY command with UNSPEC, or with a datagram family (which falls
 * back to UNSPEC): no addresses, the connection's own are used.
 */
static void
test_v2_unspec(void **state)
{
	static const struct {
		uint8_t		 fam;
		size_t		 n;
	} cases[] = {
		{ PROXY_FAM_UNSPEC, 0 },
		{ PROXY_FAM_UDP4, 12 },
		{ PROXY_FAM_UDP6, 36 },
		{ PROXY_FAM_UNIX_DGRAM, 216 },
	};
	uint8_t			 buf[300], body[216];
	struct proxy_header	 h;
	size_t			 n;

	(void)state;
	memset(body, 0x41, sizeof(body));
	for (size_t i = 0; i < NELEM(cases); i++) {
		n = v2(buf, PROXY_V2_PROXY, cases[i].fam, body, cases[i].n);
		memset(&h, 0xa5, sizeof(h));
		assert_int_equal(parse(buf, n, &h), PARSE_OK);
		assert_int_equal(h.len, n);
		assert_true(h.local);
		assert_int_equal(h.command, PROXY_V2_PROXY);
		assert_int_equal(h.fam, cases[i].fam);
		assert_string_equal(fmt(&h.src, h.srclen), "-");
		assert_string_equal(fmt(&h.dst, h.dstlen), "-");
		assert_true(tlvs_empty(&h.tlv));
	}
}

/* AF_UNIX over a stream: two 108-byte paths. */
static void
test_v2_unix(void **state)
{
	uint8_t			 body[216 + 8], buf[300];
	struct proxy_header	 h;
	size_t			 n;

	(void)state;
	memset(body, 0, sizeof(body));
	memcpy(body, "/run/client.sock", 16);
	memcpy(body + 108, "/run/starttls-proxy.sock", 24);
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_UNIX_STREAM, body, 216);
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_int_equal(h.len, 16 + 216);
	assert_false(h.local);
	assert_string_equal(fmt(&h.src, h.srclen), "unix:/run/client.sock");
	assert_string_equal(fmt(&h.dst, h.dstlen), "unix:/run/starttls-proxy.sock");
	assert_int_equal(h.srclen, offsetof(struct sockaddr_un, sun_path) + 17);

	/* a path of all 108 bytes, no NUL; bytes after a NUL are not the path */
	memset(body, 'x', 108);
	memcpy(body + 108, "/a\0junk", 7);
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_UNIX_STREAM, body, 216);
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_int_equal(h.srclen, sizeof(struct sockaddr_un));
	assert_int_equal(path_len((struct sockaddr_un *)(void *)&h.src), 108);
	assert_string_equal(fmt(&h.dst, h.dstlen), "unix:/a");
	assert_int_equal(((struct sockaddr_un *)(void *)&h.dst)->sun_path[3], 0);

	/* unnamed: empty paths */
	memset(body, 0, sizeof(body));
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_UNIX_STREAM, body, 216);
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_int_equal(h.src.ss_family, AF_UNIX);
	assert_int_equal(h.srclen, offsetof(struct sockaddr_un, sun_path));
}

/* The signature, byte by byte: MALFORMED from the first wrong one. */
static void
test_v2_signature(void **state)
{
	uint8_t		 buf[sizeof(hap_v2_tcp4)];
	char		 name[32];

	(void)state;
	for (size_t i = 0; i < 12; i++) {
		memcpy(buf, hap_v2_tcp4, sizeof(buf));
		buf[i] ^= 0x01;
		snprintf(name, sizeof(name), "signature byte %zu", i);
		assert_parse_fails(name, buf, i + 1, PARSE_MALFORMED);
		assert_parse_fails(name, buf, sizeof(buf), PARSE_MALFORMED);
	}
	/* neither 'P' nor CR */
	assert_parse_fails("GET", "GET / HTTP/1.1\r\n", 16, PARSE_MALFORMED);
	assert_parse_fails("TLS", "\x16\x03\x01", 3, PARSE_MALFORMED);
	assert_parse_fails("NUL", "\0", 1, PARSE_MALFORMED);
	assert_parse_fails("LF", "\n", 1, PARSE_MALFORMED);
}

/* Versions, commands and families that do not exist: MALFORMED early. */
static void
test_v2_bad_version_command_family(void **state)
{
	static const uint8_t	 ver_cmds[] = { 0x00, 0x01, 0x10, 0x11, 0x22, 0x2f, 0x30, 0x31, 0xf1 };
	static const uint8_t	 fams[] = {
		0x01, 0x02, 0x10, 0x13, 0x20, 0x23, 0x30, 0x33, 0x40, 0x41, 0xf1, 0xff,
	};
	uint8_t			 buf[64];
	char			 name[32];

	(void)state;
	for (size_t i = 0; i < NELEM(ver_cmds); i++) {
		memcpy(buf, hap_v2_tcp4, sizeof(hap_v2_tcp4));
		buf[12] = ver_cmds[i];
		snprintf(name, sizeof(name), "ver_cmd %#x", ver_cmds[i]);
		assert_parse_fails(name, buf, 13, PARSE_MALFORMED);
		assert_parse_fails(name, buf, sizeof(hap_v2_tcp4), PARSE_MALFORMED);
	}
	for (size_t i = 0; i < NELEM(fams); i++) {
		memcpy(buf, hap_v2_tcp4, sizeof(hap_v2_tcp4));
		buf[13] = fams[i];
		snprintf(name, sizeof(name), "fam %#x", fams[i]);
		assert_parse_fails(name, buf, 14, PARSE_MALFORMED);
		assert_parse_fails(name, buf, sizeof(hap_v2_tcp4), PARSE_MALFORMED);
		buf[12] = PROXY_V2_LOCAL;
		assert_parse_fails(name, buf, sizeof(hap_v2_tcp4), PARSE_MALFORMED);
	}
}

/* An address block shorter than its family: MALFORMED from the 16 bytes. */
static void
test_v2_short_addresses(void **state)
{
	static const struct {
		uint8_t		 ver_cmd;
		uint8_t		 fam;
		size_t		 n;
	} cases[] = {
		{ PROXY_V2_PROXY, PROXY_FAM_TCP4, 11 },
		{ PROXY_V2_PROXY, PROXY_FAM_TCP4, 0 },
		{ PROXY_V2_PROXY, PROXY_FAM_TCP6, 35 },
		{ PROXY_V2_PROXY, PROXY_FAM_TCP6, 12 },
		{ PROXY_V2_PROXY, PROXY_FAM_UNIX_STREAM, 215 },
		{ PROXY_V2_PROXY, PROXY_FAM_UDP4, 11 },
		{ PROXY_V2_PROXY, PROXY_FAM_UDP6, 35 },
		{ PROXY_V2_PROXY, PROXY_FAM_UNIX_DGRAM, 108 },
		{ PROXY_V2_LOCAL, PROXY_FAM_TCP4, 11 },
		{ PROXY_V2_LOCAL, PROXY_FAM_TCP6, 0 },
	};
	uint8_t		 buf[300], body[216] = { 0 };
	char		 name[32];
	size_t		 n;

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		n = v2(buf, cases[i].ver_cmd, cases[i].fam, body, cases[i].n);
		snprintf(name, sizeof(name), "fam %#x, %zu bytes", cases[i].fam, cases[i].n);
		assert_parse_fails(name, buf, 16, PARSE_MALFORMED);
		assert_parse_fails(name, buf, n, PARSE_MALFORMED);
	}
}

/* The header's length against PROXY_V2_MAX: TOO_LONG from 16 bytes. */
static void
test_v2_too_long(void **state)
{
	uint8_t			*buf = calloc(1, PROXY_V2_MAX + 64);
	uint8_t			*body = calloc(1, PROXY_V2_MAX);
	struct proxy_header	 h;
	size_t			 n, noop;

	(void)state;
	assert_non_null(buf);
	assert_non_null(body);
	/* TCP4 addresses, then one NOOP to reach exactly PROXY_V2_MAX */
	noop = PROXY_V2_MAX - 16 - 12 - 3;
	body[12] = PP2_TYPE_NOOP;
	body[13] = (uint8_t)(noop >> 8);
	body[14] = (uint8_t)noop;
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, PROXY_V2_MAX - 16);
	assert_int_equal(n, PROXY_V2_MAX);
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_int_equal(h.len, PROXY_V2_MAX);
	assert_int_equal(parse(buf, 16, &h), PARSE_NEED_MORE);

	/* one more byte of NOOP */
	noop++;
	body[13] = (uint8_t)(noop >> 8);
	body[14] = (uint8_t)noop;
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, PROXY_V2_MAX - 15);
	assert_parse_fails("PROXY_V2_MAX + 1", buf, n, PARSE_TOO_LONG);
	assert_parse_fails("PROXY_V2_MAX + 1, 16 bytes", buf, 16, PARSE_TOO_LONG);

	/* the largest length field */
	buf[14] = buf[15] = 0xff;
	assert_parse_fails("65535", buf, 16, PARSE_TOO_LONG);
	buf[12] = PROXY_V2_LOCAL;
	buf[13] = PROXY_FAM_UNSPEC;
	assert_parse_fails("LOCAL 65535", buf, 16, PARSE_TOO_LONG);
	free(buf);
	free(body);
}

/* TLVs that do not fill the rest of the header exactly: MALFORMED. */
static void
test_v2_tlv_framing(void **state)
{
	uint8_t			 buf[sizeof(hap_v2_options) + 8];
	uint8_t			 body[64];
	struct proxy_header	 h;
	size_t			 n;

	(void)state;
	/* the SSL TLV one byte longer than the header */
	memcpy(buf, hap_v2_ssl, sizeof(hap_v2_ssl));
	buf[30] = 0x10;
	assert_parse_fails("SSL overruns", buf, sizeof(hap_v2_ssl), PARSE_MALFORMED);
	/* the header one byte shorter than its TLVs */
	memcpy(buf, hap_v2_ssl, sizeof(hap_v2_ssl));
	buf[15] = 0x1d;
	assert_parse_fails("header cuts SSL", buf, sizeof(hap_v2_ssl), PARSE_MALFORMED);
	/* one, two stray bytes after the TLVs: not even a TLV header */
	for (size_t extra = 1; extra <= 2; extra++) {
		memcpy(buf, hap_v2_ssl, sizeof(hap_v2_ssl));
		memset(buf + sizeof(hap_v2_ssl), 0, extra);
		buf[15] = (uint8_t)(0x1e + extra);
		assert_parse_fails("stray bytes", buf, sizeof(hap_v2_ssl) + extra,
		    PARSE_MALFORMED);
	}
	/* a sub-TLV one byte longer than the SSL TLV, a NOOP after it */
	memset(body, 0, 12);
	memcpy(body + 12, "\x20\x00\x0f" "\x01\x00\x00\x00\x00" "\x21\x00\x08" "TLSv1.3"
	    "\x04\x00\x00", 21);
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + 21);
	assert_parse_fails("sub-TLV overruns", buf, n, PARSE_MALFORMED);
	/* with its right length: fine */
	body[12 + 10] = 0x07;
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + 21);
	assert_int_equal(parse(buf, n, &h), PARSE_OK);
	assert_string_equal(h.tlv.ssl_version, "TLSv1.3");
	/* an SSL TLV without its five fixed bytes */
	memcpy(body + 12, "\x20\x00\x04" "\x01\x00\x00\x00", 7);
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + 7);
	assert_parse_fails("SSL of 4 bytes", buf, n, PARSE_MALFORMED);
	/* stray bytes inside the SSL TLV after its sub-TLVs */
	memcpy(body + 12, "\x20\x00\x07" "\x01\x00\x00\x00\x00" "\x21\x00", 10);
	n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + 10);
	assert_parse_fails("SSL stray bytes", buf, n, PARSE_MALFORMED);
}

/* A duplicated TLV of a kind kept: which one would count?  MALFORMED. */
static void
test_v2_tlv_duplicates(void **state)
{
	static const struct {
		const char	*name;
		const char	*tlvs;
		size_t		 n;
		enum parse_result want;
	} cases[] = {
		{ "AUTHORITY twice", "\x02\x00\x01" "a" "\x02\x00\x01" "b", 8, PARSE_MALFORMED },
		{ "UNIQUE_ID twice", "\x05\x00\x01" "a" "\x05\x00\x01" "a", 8, PARSE_MALFORMED },
		{ "ALPN twice", "\x01\x00\x02" "h2" "\x01\x00\x02" "h2", 10, PARSE_MALFORMED },
		{ "SSL twice", "\x20\x00\x05" "\0\0\0\0\0" "\x20\x00\x05" "\0\0\0\0\0", 16,
		    PARSE_MALFORMED },
		{ "VERSION twice", "\x20\x00\x0f" "\x01\0\0\0\0" "\x21\x00\x02" "v1"
		    "\x21\x00\x02" "v2", 18, PARSE_MALFORMED },
		{ "CN twice", "\x20\x00\x0b" "\x07\0\0\0\0" "\x22\x00\x00" "\x22\x00\x00", 14,
		    PARSE_MALFORMED },
		{ "NOOP twice", "\x04\x00\x00" "\x04\x00\x01" "x", 7, PARSE_OK },
		{ "NETNS twice", "\x30\x00\x01" "a" "\x30\x00\x01" "b", 8, PARSE_OK },
		{ "unknown sub-TLV twice", "\x20\x00\x0b" "\x01\0\0\0\0" "\x2f\x00\x00"
		    "\x2f\x00\x00", 14, PARSE_OK },
	};
	uint8_t			 body[64], buf[96];
	struct proxy_header	 h;
	size_t			 n;

	(void)state;
	memset(body, 0, 12);
	for (size_t i = 0; i < NELEM(cases); i++) {
		memcpy(body + 12, cases[i].tlvs, cases[i].n);
		n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + cases[i].n);
		if (cases[i].want == PARSE_OK)
			assert_int_equal(parse(buf, n, &h), PARSE_OK);
		else
			assert_parse_fails(cases[i].name, buf, n, cases[i].want);
	}
}

/* TLV values over the fields that keep them: TOO_LONG; at the bound: OK. */
static void
test_v2_tlv_bounds(void **state)
{
	static const struct {
		uint8_t		 type;
		uint8_t		 subtype;	/* inside SSL when not 0 */
		size_t		 max;
	} cases[] = {
		{ PP2_TYPE_ALPN, 0, PROXY_ALPN_MAX },
		{ PP2_TYPE_AUTHORITY, 0, PROXY_AUTHORITY_MAX },
		{ PP2_TYPE_UNIQUE_ID, 0, PROXY_UNIQUE_ID_MAX },
		{ PP2_TYPE_SSL, PP2_SUBTYPE_SSL_VERSION, PROXY_SSL_TEXT_MAX },
		{ PP2_TYPE_SSL, PP2_SUBTYPE_SSL_CIPHER, PROXY_SSL_TEXT_MAX },
		{ PP2_TYPE_SSL, PP2_SUBTYPE_SSL_SIG_ALG, PROXY_SSL_TEXT_MAX },
		{ PP2_TYPE_SSL, PP2_SUBTYPE_SSL_KEY_ALG, PROXY_SSL_TEXT_MAX },
		{ PP2_TYPE_SSL, PP2_SUBTYPE_SSL_CN, PROXY_SSL_CN_MAX },
	};
	uint8_t			 body[600], buf[700];
	struct proxy_header	 h;
	char			 name[48];

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		for (size_t vlen = cases[i].max; vlen <= cases[i].max + 1; vlen++) {
			size_t	 n = 0, total;

			memset(body, 0, 12);
			n = 12;
			if (cases[i].subtype != 0) {
				body[n++] = PP2_TYPE_SSL;
				body[n++] = (uint8_t)((5 + 3 + vlen) >> 8);
				body[n++] = (uint8_t)(5 + 3 + vlen);
				memcpy(body + n, "\x01\0\0\0\0", 5);
				n += 5;
				body[n++] = cases[i].subtype;
			} else
				body[n++] = cases[i].type;
			body[n++] = (uint8_t)(vlen >> 8);
			body[n++] = (uint8_t)vlen;
			memset(body + n, 'x', vlen);
			n += vlen;
			total = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, n);
			snprintf(name, sizeof(name), "type %#x/%#x, %zu bytes", cases[i].type,
			    cases[i].subtype, vlen);
			if (vlen > cases[i].max) {
				assert_parse_fails(name, buf, total, PARSE_TOO_LONG);
				continue;
			}
			if (parse(buf, total, &h) != PARSE_OK)
				fail_msg("%s: not OK", name);
		}
	}
	/* at the bound, the whole value is there */
	assert_int_equal(strlen(h.tlv.ssl_cn), PROXY_SSL_CN_MAX);
}

/* Text TLVs with a NUL in them cannot be kept as strings: MALFORMED. */
static void
test_v2_tlv_nul(void **state)
{
	static const struct {
		const char	*tlvs;
		size_t		 n;
	} cases[] = {
		{ "\x02\x00\x04" "a\0.b", 7 },
		{ "\x02\x00\x01" "\0", 4 },
		{ "\x20\x00\x0c" "\x01\0\0\0\0" "\x21\x00\x04" "TLS\0", 15 },
		{ "\x20\x00\x0c" "\x01\0\0\0\0" "\x22\x00\x04" "\0bob", 15 },
	};
	uint8_t		 body[64], buf[96];
	size_t		 n;

	(void)state;
	memset(body, 0, 12);
	for (size_t i = 0; i < NELEM(cases); i++) {
		memcpy(body + 12, cases[i].tlvs, cases[i].n);
		n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + cases[i].n);
		assert_parse_fails("NUL", buf, n, PARSE_MALFORMED);
	}
}

/* A CRC32C must match the header (HAProxy's, with a byte changed: not). */
static void
test_v2_crc32c(void **state)
{
	uint8_t			 buf[sizeof(hap_v2_options)];
	struct proxy_header	 h;

	(void)state;
	for (size_t i = 0; i < sizeof(buf); i++) {
		if (i == 28)
			continue;	/* the CRC32C's type: 0x23 is no CRC32C */
		memcpy(buf, hap_v2_options, sizeof(buf));
		buf[i] ^= 0x20;
		memset(&h, 0, sizeof(h));
		if (parse(buf, sizeof(buf), &h) == PARSE_OK)
			fail_msg("byte %zu changed: still OK", i);
	}
	/* a CRC32C of other than four bytes */
	{
		uint8_t	 body[32], hdr[64];
		size_t	 n;

		memset(body, 0, 12);
		memcpy(body + 12, "\x03\x00\x03\0\0\0", 6);
		n = v2(hdr, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 18);
		assert_parse_fails("CRC32C of 3 bytes", hdr, n, PARSE_MALFORMED);
	}
}

/*
 * 0xE5 is ours, and only with one of our words.  Clouds use their own
 * custom types: Google Cloud's Private Service Connect an 8-byte
 * connection ID in 0xE0, AWS 0xEA, Azure 0xEE; none of them is ours.
 */
static void
test_v2_custom_tlvs(void **state)
{
	static const struct {
		const char	*tlvs;
		size_t		 n;
		const char	*upgrade;
	} cases[] = {
		{ "\xe5\x00\x08" "starttls", 11, "starttls" },
		{ "\xe5\x00\x08" "implicit", 11, "implicit" },
		{ "\xe5\x00\x04" "none", 7, "none" },
		{ "\xe0\x00\x08" "\x00\x9b\x34\xd7\x0a\x00\x3c\x64", 11, "" },	/* GCP */
		{ "\xe0\x00\x08" "starttls", 11, "" },			/* GCP's type */
		{ "\xe5\x00\x08" "STARTTLS", 11, "" },
		{ "\xe5\x00\x09" "starttls\0", 12, "" },
		{ "\xe5\x00\x00", 3, "" },
		{ "\xe0\x00\x08" "\x00\x9b\x34\xd7\x0a\x00\x3c\x64"
		    "\xe5\x00\x08" "implicit" "\xe5\x00\x04" "none", 29, "implicit" },
		{ "\xea\x00\x08" "\x01vpce-1a", 11, "" },			/* AWS */
		{ "\xee\x00\x05" "\x01\xc1\x45\x00\x21", 8, "" },		/* Azure */
		{ "\xf0\x00\x01" "x" "\xff\x00\x00", 7, "" },
	};
	uint8_t			 body[64], buf[96];
	struct proxy_header	 h;
	size_t			 n;

	(void)state;
	memset(body, 0, 12);
	for (size_t i = 0; i < NELEM(cases); i++) {
		memcpy(body + 12, cases[i].tlvs, cases[i].n);
		n = v2(buf, PROXY_V2_PROXY, PROXY_FAM_TCP4, body, 12 + cases[i].n);
		if (parse(buf, n, &h) != PARSE_OK)
			fail_msg("case %zu: not OK", i);
		assert_string_equal(h.tlv.upgrade, cases[i].upgrade);
	}
}

/* Writing */

/* Byte for byte what HAProxy sends for the same connections. */
static void
test_build_v2_as_haproxy(void **state)
{
	struct sockaddr_storage	 s, d;
	struct proxy_tls_info	 tls13 = { .tls = true, .version = "TLSv1.3" };
	uint8_t			 out[PROXY_V2_MAX];

	(void)state;
	assert_int_equal(proxy_build_v2(sa(&s, "127.0.0.1", 58226), sa(&d, "127.0.0.1", 34189),
	    NULL, out, sizeof(out)), sizeof(hap_v2_tcp4));
	assert_memory_equal(out, hap_v2_tcp4, sizeof(hap_v2_tcp4));

	assert_int_equal(proxy_build_v2(sa(&s, "::1", 59994), sa(&d, "::1", 44221),
	    NULL, out, sizeof(out)), sizeof(hap_v2_tcp6));
	assert_memory_equal(out, hap_v2_tcp6, sizeof(hap_v2_tcp6));

	assert_int_equal(proxy_build_v2(sa(&s, "127.0.0.1", 59198), sa(&d, "127.0.0.1", 53623),
	    &tls13, out, sizeof(out)), sizeof(hap_v2_ssl));
	assert_memory_equal(out, hap_v2_ssl, sizeof(hap_v2_ssl));

	/* no addresses, or AF_UNIX ones: LOCAL UNSPEC, as HAProxy */
	assert_int_equal(proxy_build_v2(NULL, NULL, NULL, out, sizeof(out)), 16);
	assert_memory_equal(out, hap_v2_local, sizeof(hap_v2_local));
	assert_int_equal(proxy_build_v2(sa_un(&s, "/run/c.sock"), sa_un(&d, "/run/p.sock"),
	    NULL, out, sizeof(out)), 16);
	assert_memory_equal(out, hap_v2_local, sizeof(hap_v2_local));
}

static void
test_build_v1_as_haproxy(void **state)
{
	struct sockaddr_storage	 s, d;
	uint8_t			 out[PROXY_V1_MAX];

	(void)state;
	assert_int_equal(proxy_build_v1(sa(&s, "127.0.0.1", 37492), sa(&d, "127.0.0.1", 36425),
	    out, sizeof(out)), FIXLEN(hap_v1_tcp4));
	assert_memory_equal(out, hap_v1_tcp4, FIXLEN(hap_v1_tcp4));
	assert_int_equal(proxy_build_v1(sa(&s, "::1", 59952), sa(&d, "::1", 51029),
	    out, sizeof(out)), FIXLEN(hap_v1_tcp6));
	assert_memory_equal(out, hap_v1_tcp6, FIXLEN(hap_v1_tcp6));
	assert_int_equal(proxy_build_v1(sa_un(&s, "/run/c.sock"), sa_un(&d, "/run/p.sock"),
	    out, sizeof(out)), FIXLEN(hap_v1_unix));
	assert_memory_equal(out, hap_v1_unix, FIXLEN(hap_v1_unix));
	assert_int_equal(proxy_build_v1(NULL, sa(&d, "::1", 1), out, sizeof(out)),
	    FIXLEN(hap_v1_unix));
	assert_int_equal(proxy_build_v1(sa(&s, "192.168.0.1", 56324), sa(&d, "192.168.0.11", 443),
	    out, sizeof(out)), FIXLEN(spec_v1_example));
	assert_memory_equal(out, spec_v1_example, FIXLEN(spec_v1_example));
	assert_int_equal(proxy_build_v1(sa(&s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
	    sa(&d, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), out, sizeof(out)),
	    FIXLEN(spec_v1_tcp6_max));
	assert_memory_equal(out, spec_v1_tcp6_max, FIXLEN(spec_v1_tcp6_max));
}

/* Address pairs, written then read back, in both versions. */
static void
test_roundtrip_addresses(void **state)
{
	static const struct {
		const char	*src;
		uint16_t	 sport;
		const char	*dst;
		uint16_t	 dport;
		const char	*want_src;
		const char	*want_dst;
	} cases[] = {
		{ "192.0.2.1", 1, "198.51.100.7", 25, "192.0.2.1:1", "198.51.100.7:25" },
		{ "0.0.0.0", 0, "255.255.255.255", 65535, "0.0.0.0:0", "255.255.255.255:65535" },
		{ "2001:db8::1", 40000, "2001:db8::2", 587, "[2001:db8::1]:40000",
		    "[2001:db8::2]:587" },
		{ "::", 0, "::1", 1, "[::]:0", "[::1]:1" },
		/* mixed: the IPv4 one mapped */
		{ "192.0.2.1", 5, "2001:db8::2", 6, "[::ffff:192.0.2.1]:5", "[2001:db8::2]:6" },
		{ "2001:db8::1", 7, "10.1.2.3", 8, "[2001:db8::1]:7", "[::ffff:10.1.2.3]:8" },
		{ "::ffff:192.0.2.9", 9, "::ffff:192.0.2.10", 10, "[::ffff:192.0.2.9]:9",
		    "[::ffff:192.0.2.10]:10" },
	};
	struct sockaddr_storage	 s, d;
	struct proxy_header	 h;
	uint8_t			 out[PROXY_V2_MAX];
	ssize_t			 n;

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		sa(&s, cases[i].src, cases[i].sport);
		sa(&d, cases[i].dst, cases[i].dport);

		n = proxy_build_v1((struct sockaddr *)&s, (struct sockaddr *)&d, out, sizeof(out));
		assert_true(n > 0 && n <= PROXY_V1_MAX);
		assert_int_equal(parse(out, (size_t)n, &h), PARSE_OK);
		assert_int_equal(h.len, n);
		assert_int_equal(h.version, 1);
		assert_false(h.local);
		assert_string_equal(fmt(&h.src, h.srclen), cases[i].want_src);
		assert_string_equal(fmt(&h.dst, h.dstlen), cases[i].want_dst);

		n = proxy_build_v2((struct sockaddr *)&s, (struct sockaddr *)&d, NULL, out,
		    sizeof(out));
		assert_true(n > 0);
		assert_int_equal(parse(out, (size_t)n, &h), PARSE_OK);
		assert_int_equal(h.len, n);
		assert_int_equal(h.version, 2);
		assert_false(h.local);
		assert_int_equal(h.command, PROXY_V2_PROXY);
		assert_string_equal(fmt(&h.src, h.srclen), cases[i].want_src);
		assert_string_equal(fmt(&h.dst, h.dstlen), cases[i].want_dst);
		assert_true(tlvs_empty(&h.tlv));
	}
}

/* The TLS information, written then read back. */
static void
test_roundtrip_tls(void **state)
{
	static const struct proxy_tls_info cases[] = {
		{ .tls = true, .version = "TLSv1.3", .cipher = "TLS_AES_256_GCM_SHA384",
		    .sni = "mail.example.org", .upgrade = "starttls" },
		{ .tls = true, .version = "TLSv1.2", .cipher = "ECDHE-RSA-AES128-GCM-SHA256",
		    .upgrade = "implicit" },
		{ .tls = true },
		{ .tls = true, .cipher = "TLS_CHACHA20_POLY1305_SHA256", .sni = "" },
		{ .tls = false, .upgrade = "none" },
		{ .tls = false, .version = "TLSv1.3", .sni = "db.internal" },
		{ .tls = false },
	};
	struct sockaddr_storage	 s, d;
	struct proxy_header	 h;
	uint8_t			 out[PROXY_V2_MAX];
	ssize_t			 n;

	(void)state;
	sa(&s, "203.0.113.5", 51515);
	sa(&d, "192.0.2.25", 25);
	for (size_t i = 0; i < NELEM(cases); i++) {
		const struct proxy_tls_info *t = &cases[i];

		n = proxy_build_v2((struct sockaddr *)&s, (struct sockaddr *)&d, t, out,
		    sizeof(out));
		assert_true(n > 0);
		memset(&h, 0xa5, sizeof(h));
		assert_int_equal(parse(out, (size_t)n, &h), PARSE_OK);
		assert_int_equal(h.len, n);
		assert_string_equal(fmt(&h.src, h.srclen), "203.0.113.5:51515");
		assert_string_equal(fmt(&h.dst, h.dstlen), "192.0.2.25:25");
		assert_int_equal(h.tlv.ssl, t->tls);
		assert_int_equal(h.tlv.ssl_client, t->tls ? PP2_CLIENT_SSL : 0);
		assert_int_equal(h.tlv.ssl_verify, 0);
		assert_string_equal(h.tlv.ssl_version, t->tls && t->version ? t->version : "");
		assert_string_equal(h.tlv.ssl_cipher, t->tls && t->cipher ? t->cipher : "");
		assert_string_equal(h.tlv.authority, t->sni ? t->sni : "");
		assert_string_equal(h.tlv.upgrade, t->upgrade ? t->upgrade : "");
		assert_string_equal(h.tlv.ssl_cn, "");
		assert_false(h.tlv.crc32c);
	}

	/* LOCAL UNSPEC keeps its TLVs */
	n = proxy_build_v2(NULL, NULL, &cases[0], out, sizeof(out));
	assert_true(n > 16);
	assert_int_equal(parse(out, (size_t)n, &h), PARSE_OK);
	assert_true(h.local);
	assert_int_equal(h.command, PROXY_V2_LOCAL);
	assert_string_equal(h.tlv.ssl_version, "TLSv1.3");
	assert_string_equal(h.tlv.authority, "mail.example.org");
	assert_string_equal(h.tlv.upgrade, "starttls");
}

/* Strings the reader would not keep: the writer says -1 and writes nothing. */
static void
test_build_v2_refuses(void **state)
{
	char			 long_name[PROXY_AUTHORITY_MAX + 2];
	char			 long_text[PROXY_SSL_TEXT_MAX + 2];
	struct sockaddr_storage	 s, d;
	uint8_t			 out[PROXY_V2_MAX], sentinel[PROXY_V2_MAX];
	struct proxy_tls_info	 t;

	(void)state;
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	memset(long_text, 'b', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = '\0';
	sa(&s, "192.0.2.1", 1);
	sa(&d, "192.0.2.2", 2);
	memset(sentinel, 0xa5, sizeof(sentinel));

	const struct proxy_tls_info cases[] = {
		{ .sni = long_name },
		{ .tls = true, .version = long_text },
		{ .tls = true, .cipher = long_text },
		{ .upgrade = "STARTTLS" },
		{ .upgrade = "starttls " },
		{ .upgrade = "tls" },
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		memcpy(out, sentinel, sizeof(out));
		if (proxy_build_v2((struct sockaddr *)&s, (struct sockaddr *)&d, &cases[i], out,
		    sizeof(out)) != -1)
			fail_msg("case %zu: not -1", i);
		assert_memory_equal(out, sentinel, sizeof(out));
	}

	/* one byte shorter: fine */
	long_name[PROXY_AUTHORITY_MAX] = '\0';
	t = (struct proxy_tls_info){ .sni = long_name };
	assert_true(proxy_build_v2((struct sockaddr *)&s, (struct sockaddr *)&d, &t, out,
	    sizeof(out)) > 0);
}

/* An output buffer too small by even one byte: -1, nothing written. */
static void
test_build_too_small(void **state)
{
	static const struct proxy_tls_info tls = { .tls = true, .version = "TLSv1.3",
	    .cipher = "TLS_AES_128_GCM_SHA256", .sni = "mx.example.net", .upgrade = "starttls" };
	struct sockaddr_storage	 s4, d4, s6, d6;
	uint8_t			 buf[PROXY_V2_MAX];
	ssize_t			 want, n;
	struct {
		const struct sockaddr		*src, *dst;
		const struct proxy_tls_info	*tls;
		int				 version;
	} cases[] = {
		{ sa(&s4, "192.0.2.1", 1), sa(&d4, "192.0.2.2", 2), NULL, 1 },
		{ sa(&s6, "2001:db8::1", 65535), sa(&d6, "2001:db8::2", 65535), NULL, 1 },
		{ NULL, NULL, NULL, 1 },
		{ (struct sockaddr *)&s4, (struct sockaddr *)&d4, NULL, 2 },
		{ (struct sockaddr *)&s6, (struct sockaddr *)&d6, &tls, 2 },
		{ NULL, NULL, &tls, 2 },
	};

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		want = cases[i].version == 1 ?
		    proxy_build_v1(cases[i].src, cases[i].dst, buf, sizeof(buf)) :
		    proxy_build_v2(cases[i].src, cases[i].dst, cases[i].tls, buf, sizeof(buf));
		assert_true(want > 0);
		for (size_t outlen = 0; outlen < (size_t)want; outlen++) {
			memset(buf, 0xa5, sizeof(buf));
			n = cases[i].version == 1 ?
			    proxy_build_v1(cases[i].src, cases[i].dst, buf, outlen) :
			    proxy_build_v2(cases[i].src, cases[i].dst, cases[i].tls, buf, outlen);
			if (n != -1)
				fail_msg("case %zu, outlen %zu: %zd, want -1", i, outlen, n);
			for (size_t j = 0; j < sizeof(buf); j++)
				if (buf[j] != 0xa5)
					fail_msg("case %zu, outlen %zu: byte %zu written", i,
					    outlen, j);
		}
		n = cases[i].version == 1 ?
		    proxy_build_v1(cases[i].src, cases[i].dst, buf, (size_t)want) :
		    proxy_build_v2(cases[i].src, cases[i].dst, cases[i].tls, buf, (size_t)want);
		assert_int_equal(n, want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_lines),
		cmocka_unit_test(test_v1_followed),
		cmocka_unit_test(test_v1_truncated),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_addresses),
		cmocka_unit_test(test_v1_malformed),
		cmocka_unit_test(test_v1_nul),
		cmocka_unit_test(test_v1_malformed_early),
		cmocka_unit_test(test_v1_too_long),
		cmocka_unit_test(test_v2_haproxy),
		cmocka_unit_test(test_v2_haproxy_options),
		cmocka_unit_test(test_v2_followed),
		cmocka_unit_test(test_v2_truncated),
		cmocka_unit_test(test_v2_local),
		cmocka_unit_test(test_v2_unspec),
		cmocka_unit_test(test_v2_unix),
		cmocka_unit_test(test_v2_signature),
		cmocka_unit_test(test_v2_bad_version_command_family),
		cmocka_unit_test(test_v2_short_addresses),
		cmocka_unit_test(test_v2_too_long),
		cmocka_unit_test(test_v2_tlv_framing),
		cmocka_unit_test(test_v2_tlv_duplicates),
		cmocka_unit_test(test_v2_tlv_bounds),
		cmocka_unit_test(test_v2_tlv_nul),
		cmocka_unit_test(test_v2_crc32c),
		cmocka_unit_test(test_v2_custom_tlvs),
		cmocka_unit_test(test_build_v2_as_haproxy),
		cmocka_unit_test(test_build_v1_as_haproxy),
		cmocka_unit_test(test_roundtrip_addresses),
		cmocka_unit_test(test_roundtrip_tls),
		cmocka_unit_test(test_build_v2_refuses),
		cmocka_unit_test(test_build_too_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
