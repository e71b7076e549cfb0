/*
 * Unit tests for src/http_parse.c: HTTP/1.1 request heads and their
 * error codes, CONNECT authorities and the connect_allow rules.
 *
 * The curl requests are what curl 7.88.1 sent to a listener on
 * 127.0.0.1:8080, recorded byte for byte; IPPTOOL_E is what ipptool -E of
 * CUPS 2.4.2 (Debian 12, cups-ipp-utils) sent to a listener on
 * 127.0.0.1:18640 for ipp://127.0.0.1:18640/ipp/print, its first bytes on
 * the connection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

/* curl --proxy http://127.0.0.1:8080 https://localhost/ */
#define CURL_CONNECT							\
	"CONNECT localhost:443 HTTP/1.1\r\n"				\
	"Host: localhost:443\r\n"					\
	"User-Agent: curl/7.88.1\r\n"					\
	"Proxy-Connection: Keep-Alive\r\n"				\
	"\r\n"

/* curl http://127.0.0.1:8080/ */
#define CURL_GET							\
	"GET / HTTP/1.1\r\n"						\
	"Host: 127.0.0.1:8080\r\n"					\
	"User-Agent: curl/7.88.1\r\n"					\
	"Accept: */*\r\n"						\
	"\r\n"

/* RFC 2817 section 3.2: a client asks to upgrade to TLS */
#define RFC2817_UPGRADE							\
	"OPTIONS * HTTP/1.1\r\n"					\
	"Host: x\r\n"							\
	"Upgrade: TLS/1.0\r\n"						\
	"Connection: Upgrade\r\n"					\
	"\r\n"

/* ipptool -E -tv ipp://127.0.0.1:18640/ipp/print get-printer-attributes.test */
#define IPPTOOL_E_UA	"User-Agent: CUPS/2.4.2 (Linux 6.18.44-fc-v669; x86_64) IPP/2.0\r\n"
#define IPPTOOL_E							\
	"OPTIONS * HTTP/1.1\r\n"					\
	"Connection: Upgrade\r\n"					\
	"Host: localhost:18640\r\n"					\
	"Upgrade: TLS/1.2,TLS/1.1,TLS/1.0\r\n"				\
	IPPTOOL_E_UA							\
	"\r\n"
/* and what the backend must get of it inside TLS */
#define IPPTOOL_E_STRIPPED						\
	"OPTIONS * HTTP/1.1\r\n"					\
	"Host: localhost:18640\r\n"					\
	IPPTOOL_E_UA							\
	"\r\n"

/*
 * Parse s, which must be an error with this status; *out must not be
 * written.
 */
static void
check_error(const char *s, size_t n, int want)
{
	struct http_request	 r, sentinel;
	enum parse_result	 res;
	int			 status = -1;
	char			*q = exact(s, n);

	memset(&sentinel, 0xa5, sizeof(sentinel));
	r = sentinel;
	res = http_parse_request(q, n, &r, &status);
	free(q);
	if (res == PARSE_OK || res == PARSE_NEED_MORE || status != want)
		fail_msg("result %d status %d, want an error with %d, for:\n%.*s",
		    res, status, want, (int)(n > 200 ? 200 : n), s);
	assert_memory_equal(&r, &sentinel, sizeof(r));
}

#define BAD(s, want)	check_error(s, sizeof(s) - 1, want)

/* Parse s, which must be PARSE_OK. */
static struct http_request
parse_ok(const char *s, size_t n)
{
	struct http_request	 r;
	enum parse_result	 res;
	int			 status = -1;

	memset(&r, 0xa5, sizeof(r));
	res = http_parse_request(s, n, &r, &status);
	if (res != PARSE_OK)
		fail_msg("result %d status %d, want PARSE_OK, for:\n%.*s", res, status,
		    (int)(n > 200 ? 200 : n), s);
	return r;
}

#define OK(s)	parse_ok(s, strlen(s))

/* What curl sends to a proxy for https://: a CONNECT, parsed field by field. */
static void
test_request_curl_connect(void **state)
{
	const char		*s = CURL_CONNECT;
	struct http_request	 r = OK(s);

	assert_ptr_equal(r.method, s);
	assert_int_equal(r.method_len, 7);
	assert_ptr_equal(r.target, s + 8);
	assert_int_equal(r.target_len, strlen("localhost:443"));
	assert_memory_equal(r.target, "localhost:443", r.target_len);
	assert_int_equal(r.minor, 1);
	assert_int_equal(r.head_len, strlen(CURL_CONNECT));
	assert_false(r.upgrade_tls);
	assert_false(r.has_body);
	assert_true(http_is_connect(&r));
}

/* A plain GET from curl: origin form, no body. */
static void
test_request_curl_get(void **state)
{
	const char		*s = CURL_GET;
	struct http_request	 r = OK(s);

	assert_ptr_equal(r.method, s);
	assert_int_equal(r.method_len, 3);
	assert_ptr_equal(r.target, s + 4);
	assert_int_equal(r.target_len, 1);
	assert_int_equal(r.minor, 1);
	assert_int_equal(r.head_len, strlen(CURL_GET));
	assert_false(r.upgrade_tls);
	assert_false(r.has_body);
	assert_false(http_is_connect(&r));

	r = OK("GET /index.html HTTP/1.0\r\n\r\n");
	assert_int_equal(r.minor, 0);
	assert_int_equal(r.target_len, strlen("/index.html"));
}

/* RFC 2817: Upgrade: TLS/1.0 with Connection: Upgrade, also in lists. */
static void
test_request_upgrade(void **state)
{
	struct http_request	 r;

	r = OK(RFC2817_UPGRADE);
	assert_true(r.upgrade_tls);
	assert_int_equal(r.method_len, 7);
	assert_memory_equal(r.method, "OPTIONS", 7);
	assert_int_equal(r.target_len, 1);
	assert_memory_equal(r.target, "*", 1);
	assert_int_equal(r.head_len, strlen(RFC2817_UPGRADE));
	assert_false(r.has_body);

	r = OK("OPTIONS * HTTP/1.1\r\nHost: x\r\n"
	    "Upgrade: TLS/1.0, HTTP/1.1\r\nConnection: Upgrade\r\n\r\n");
	assert_true(r.upgrade_tls);
	r = OK("OPTIONS * HTTP/1.1\r\nHost: x\r\n"
	    "Upgrade: TLS/1.0\r\nConnection: keep-alive, Upgrade\r\n\r\n");
	assert_true(r.upgrade_tls);
	r = OK("OPTIONS * HTTP/1.1\r\nHost: x\r\n"
	    "Upgrade: TLS/1.0, HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n");
	assert_true(r.upgrade_tls);
	/* field names and connection options ignore case; order does not matter */
	r = OK("GET / HTTP/1.1\r\nconnection: upgrade\r\nHost: x\r\nUPGRADE: TLS/1.0\r\n\r\n");
	assert_true(r.upgrade_tls);
	/* the lists may be split over several fields */
	r = OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nUpgrade: TLS/1.0\r\n"
	    "Connection: keep-alive\r\nConnection: Upgrade\r\n\r\n");
	assert_true(r.upgrade_tls);
}

/* An upgrade to TLS needs both fields, and a TLS/1.x protocol in Upgrade. */
static void
test_request_upgrade_incomplete(void **state)
{
	assert_false(OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: TLS/1.0\r\n\r\n").upgrade_tls);
	assert_false(OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n").upgrade_tls);
	assert_false(OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
	    "Connection: Upgrade\r\n\r\n").upgrade_tls);
	assert_false(OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: TLS/1.0\r\n"
	    "Connection: keep-alive\r\n\r\n").upgrade_tls);
	assert_false(OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: TLS/1.0\r\n"
	    "Connection: Upgrade-Insecure\r\n\r\n").upgrade_tls);
	/* the words in another field do not count */
	assert_false(OK("OPTIONS * HTTP/1.1\r\nHost: x\r\nX-Upgrade: TLS/1.0\r\n"
	    "Connection: Upgrade\r\n\r\n").upgrade_tls);
	/* nor protocols that are not TLS/1.x */
	static const char *const not_tls[] = {
		"TLS", "TLS/", "TLS/1", "TLS/1.", "TLS/2.0", "TLS/1.x", "TLS/1.0a", "TLS/1.0.1",
		"XTLS/1.0", "TLS/1.0/x", "SSL/3.0", "TLS/1.00000000000",	/* 17 bytes */
		"h2c", "websocket", "TLS /1.0", "\"TLS/1.0\"",
	};
	for (size_t i = 0; i < sizeof(not_tls) / sizeof(not_tls[0]); i++) {
		char	 buf[256];

		snprintf(buf, sizeof(buf), "OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: %s\r\n"
		    "Connection: Upgrade\r\n\r\n", not_tls[i]);
		if (OK(buf).upgrade_tls)
			fail_msg("\"%s\" taken for TLS", not_tls[i]);
		assert_string_equal(OK(buf).tls_token, "");
	}
}

/*
 * What ipptool -E sends: "TLS/1.2,TLS/1.1,TLS/1.0".  Any TLS/1.x protocol
 * qualifies; tls_token is the first the client listed, for the 101.
 */
static void
test_request_upgrade_tls_tokens(void **state)
{
	static const struct {
		const char	*upgrade, *token;
	} cases[] = {
		{ "TLS/1.2,TLS/1.1,TLS/1.0",	"TLS/1.2" },	/* CUPS */
		{ "TLS/1.0",			"TLS/1.0" },	/* RFC 2817 */
		{ "TLS/1.1",			"TLS/1.1" },
		{ "TLS/1.3",			"TLS/1.3" },
		{ "tls/1.2",			"TLS/1.2" },	/* ignoring case */
		{ "Tls/1.0, HTTP/1.1",		"TLS/1.0" },
		{ "h2c, TLS/1.1",		"TLS/1.1" },	/* not first in the list */
		{ "websocket , TLS/1.2 ,h2c",	"TLS/1.2" },
		{ ",, TLS/1.0 ,",		"TLS/1.0" },	/* empty elements */
		{ "TLS/1.x, TLS/1.10",		"TLS/1.10" },
		{ "TLS/1.000000000",		"TLS/1.000000000" },	/* 16 bytes */
	};
	struct http_request	 r;
	char			 buf[256];

	r = OK(IPPTOOL_E);
	assert_true(r.upgrade_tls);
	assert_string_equal(r.tls_token, "TLS/1.2");
	assert_int_equal(r.method_len, 7);
	assert_int_equal(r.target_len, 1);
	assert_int_equal(r.head_len, strlen(IPPTOOL_E));
	assert_false(r.has_body);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: %s\r\n"
		    "Connection: Upgrade\r\n\r\n", cases[i].upgrade);
		r = OK(buf);
		if (!r.upgrade_tls)
			fail_msg("\"%s\" not taken for TLS", cases[i].upgrade);
		assert_string_equal(r.tls_token, cases[i].token);
	}

	/* over several Upgrade fields, the first TLS/1.x in order */
	r = OK("OPTIONS * HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
	    "Upgrade: TLS/1.1\r\nUpgrade: TLS/1.2\r\n\r\n");
	assert_true(r.upgrade_tls);
	assert_string_equal(r.tls_token, "TLS/1.1");

	/* the token is found even without Connection: upgrade, which decides */
	r = OK("OPTIONS * HTTP/1.1\r\nUpgrade: TLS/1.2\r\n\r\n");
	assert_false(r.upgrade_tls);

	/* a plain request has none */
	assert_string_equal(OK(CURL_GET).tls_token, "");
}

/* head_len is the head with its empty line; what follows is not part of it. */
static void
test_request_head_len(void **state)
{
#define POST_HEAD "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
	struct http_request	 r;

	r = OK(POST_HEAD "hello");
	assert_int_equal(r.head_len, strlen(POST_HEAD));
	assert_true(r.has_body);

	/* a pipelined second request */
	r = OK(CURL_GET CURL_GET);
	assert_int_equal(r.head_len, strlen(CURL_GET));

	/* a TLS ClientHello sent right behind the CONNECT */
	r = parse_ok(CURL_CONNECT "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	    strlen(CURL_CONNECT) + 11);
	assert_int_equal(r.head_len, strlen(CURL_CONNECT));
	assert_true(http_is_connect(&r));
}

/* Every proper prefix of curl's CONNECT: NEED_MORE, *out untouched. */
static void
test_request_need_more(void **state)
{
	const size_t		 len = strlen(CURL_CONNECT);
	struct http_request	 r, sentinel;
	int			 status;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t n = 0; n < len; n++) {
		char			*q = exact(CURL_CONNECT, n);
		enum parse_result	 res;

		r = sentinel;
		status = -1;
		res = http_parse_request(q, n, &r, &status);
		free(q);
		if (res != PARSE_NEED_MORE)
			fail_msg("%zu of %zu bytes: result %d status %d", n, len, res, status);
		assert_memory_equal(&r, &sentinel, sizeof(r));
	}

	char	*q = exact(CURL_CONNECT, len);

	assert_int_equal(http_parse_request(q, len, &r, &status), PARSE_OK);
	assert_int_equal(r.head_len, len);
	free(q);
}

/* Lines may end in a bare LF. */
static void
test_request_lf_only(void **state)
{
	static const char	 lf[] =
		"CONNECT localhost:443 HTTP/1.1\nHost: localhost:443\n"
		"User-Agent: curl/7.88.1\nProxy-Connection: Keep-Alive\n\n";
	static const char	 mixed[] =
		"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\n\r\n";
	struct http_request	 r;

	r = OK(lf);
	assert_int_equal(r.head_len, strlen(lf));
	assert_true(http_is_connect(&r));
	assert_int_equal(r.target_len, strlen("localhost:443"));
	assert_int_equal(r.minor, 1);

	r = OK(mixed);
	assert_int_equal(r.head_len, strlen(mixed));

	r = OK("OPTIONS * HTTP/1.1\nHost: x\nUpgrade: TLS/1.0\nConnection: Upgrade\n\n");
	assert_true(r.upgrade_tls);

	/* a partial LF-only head */
	for (size_t n = 0; n < strlen(lf); n++) {
		char	*q = exact(lf, n);
		int	 status;

		assert_int_equal(http_parse_request(q, n, &r, &status), PARSE_NEED_MORE);
		free(q);
	}
}

/* Empty lines before the request line are skipped and counted in head_len. */
static void
test_request_leading_empty_lines(void **state)
{
	struct http_request	 r;

	r = OK("\r\n" CURL_GET);
	assert_int_equal(r.head_len, strlen(CURL_GET) + 2);
	assert_int_equal(r.method_len, 3);
	r = OK("\n" CURL_GET);
	assert_int_equal(r.head_len, strlen(CURL_GET) + 1);
}

/* A malformed request line: 400. */
static void
test_error_request_line(void **state)
{
	BAD("GET\r\n\r\n", 400);				/* no spaces */
	BAD("CONNECT\r\nHost: x\r\n\r\n", 400);
	BAD("GET /\r\n\r\n", 400);				/* one space */
	BAD("G@T / HTTP/1.1\r\n\r\n", 400);			/* bad method token */
	BAD("GET(x) / HTTP/1.1\r\n\r\n", 400);
	BAD("GE\"T / HTTP/1.1\r\n\r\n", 400);
	BAD(" GET / HTTP/1.1\r\n\r\n", 400);			/* empty method */
	BAD("GET  / HTTP/1.1\r\n\r\n", 400);			/* empty target */
	BAD("GET /a\x01" "b HTTP/1.1\r\n\r\n", 400);		/* control characters */
	BAD("GET /a\x7f" "b HTTP/1.1\r\n\r\n", 400);
	BAD("GET /a\tb HTTP/1.1\r\n\r\n", 400);
	BAD("GET /a\rb HTTP/1.1\r\n\r\n", 400);
	BAD("CONNECT localhost:443\x00 HTTP/1.1\r\n\r\n", 400);
	BAD("GET / HTTP/1.1 \r\n\r\n", 400);			/* trailing space */
	BAD("GET / HTTP/1.1\r\r\n\r\n", 400);
	BAD("GET / HTTP/1.10\r\n\r\n", 400);
	BAD("GET / HTTP/1\r\n\r\n", 400);
	BAD("GET / http/1.1\r\n\r\n", 400);
	BAD("GET / HTTP/x.1\r\n\r\n", 400);
	BAD("GET / HTTP/1.x\r\n\r\n", 400);
	BAD("GET / FTP/1.1\r\n\r\n", 400);
	BAD("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 400);	/* TLS, then an LF */
}

/* Malformed header fields: 400. */
static void
test_error_fields(void **state)
{
	BAD("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);	/* space before the colon */
	BAD("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400);
	BAD("GET / HTTP/1.1\r\nHost x\r\n\r\n", 400);		/* no colon */
	BAD("GET / HTTP/1.1\r\n: x\r\n\r\n", 400);		/* empty name */
	BAD("GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", 400);
	BAD("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400);	/* obs-fold */
	BAD("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 400);
	BAD("GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400);	/* whitespace before the first */
	BAD("GET / HTTP/1.1\r\nX-A: a\x01" "b\r\n\r\n", 400);	/* control characters */
	BAD("GET / HTTP/1.1\r\nX-A: a\x00" "b\r\n\r\n", 400);
	BAD("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400);
}

/* Content-Length that is not one number, or that fights another framing: 400. */
static void
test_error_content_length(void **state)
{
	BAD("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
	/* two different lengths */
	BAD("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 0\r\n\r\n", 400);
	/* a length with chunked encoding: request smuggling (RFC 9112 section 6.3) */
	BAD("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
	BAD("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400);
}

/* A request line over 8192 bytes: 414; 8192 with its CRLF is fine. */
static void
test_error_414(void **state)
{
	static char		 buf[HTTP_REQUEST_LINE_MAX + 64];
	struct http_request	 r;
	size_t			 k = HTTP_REQUEST_LINE_MAX - 16;	/* "GET /" k " HTTP/1.1\r\n" */

	/* no LF at all, 8192 bytes and more */
	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', sizeof(buf) - 5);
	check_error(buf, HTTP_REQUEST_LINE_MAX, 414);
	check_error(buf, sizeof(buf), 414);

	/* one byte short: it may still come */
	{
		char	*q = exact(buf, HTTP_REQUEST_LINE_MAX - 1);
		int	 status;

		assert_int_equal(http_parse_request(q, HTTP_REQUEST_LINE_MAX - 1, &r, &status),
		    PARSE_NEED_MORE);
		free(q);
	}

	/* exactly 8192 bytes with the CRLF */
	memcpy(buf + 5 + k, " HTTP/1.1\r\n\r\n", 13);
	r = parse_ok(buf, 5 + k + 13);
	assert_int_equal(r.target_len, k + 1);
	assert_int_equal(r.head_len, HTTP_REQUEST_LINE_MAX + 2);

	/* 8193 */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "GET /", 5);
	memcpy(buf + 5 + k + 1, " HTTP/1.1\r\n\r\n", 13);
	check_error(buf, 5 + k + 1 + 13, 414);
}

/* Append "name: value\r\n" at buf[*off]. */
static void
add_field(char *buf, size_t *off, const char *name, size_t vlen)
{
	size_t	 nl = strlen(name);

	memcpy(buf + *off, name, nl);
	memcpy(buf + *off + nl, ": ", 2);
	memset(buf + *off + nl + 2, 'v', vlen);
	memcpy(buf + *off + nl + 2 + vlen, "\r\n", 2);
	*off += nl + 2 + vlen + 2;
}

/* A head of 16384 bytes is fine; one more byte is 431, even unfinished. */
static void
test_error_431_size(void **state)
{
	static char		 buf[HTTP_HEAD_MAX + 256];
	static const char	 line[] = "GET / HTTP/1.1\r\n";
	struct http_request	 r;
	size_t			 off;

	/* one long field: 16 + (7 + k + 2) + 2 == 16384 */
	off = strlen(line);
	memcpy(buf, line, off);
	add_field(buf, &off, "X-Pad", HTTP_HEAD_MAX - 16 - 9 - 2);
	memcpy(buf + off, "\r\n", 2);
	off += 2;
	assert_int_equal(off, HTTP_HEAD_MAX);
	r = parse_ok(buf, off);
	assert_int_equal(r.head_len, HTTP_HEAD_MAX);

	off = strlen(line);
	add_field(buf, &off, "X-Pad", HTTP_HEAD_MAX - 16 - 9 - 2 + 1);
	memcpy(buf + off, "\r\n", 2);
	off += 2;
	assert_int_equal(off, HTTP_HEAD_MAX + 1);
	check_error(buf, off, 431);

	/* many fields of 200 bytes, well under 100 of them */
	off = strlen(line);
	for (int i = 0; i < 82; i++)
		add_field(buf, &off, "X-Pad", 191);
	assert_true(off > HTTP_HEAD_MAX);
	check_error(buf, off, 431);

	/* a head that never ends */
	memset(buf + strlen(line), 'x', sizeof(buf) - strlen(line));
	check_error(buf, sizeof(buf), 431);
	off = strlen(line);
	for (int i = 0; i < 82; i++)
		add_field(buf, &off, "X-Pad", 191);
	check_error(buf, HTTP_HEAD_MAX, 431);
	{
		char	*q = exact(buf, HTTP_HEAD_MAX - 1);
		int	 status;

		assert_int_equal(http_parse_request(q, HTTP_HEAD_MAX - 1, &r, &status),
		    PARSE_NEED_MORE);
		free(q);
	}
}

/* 100 header fields are fine; 101 are 431. */
static void
test_error_431_fields(void **state)
{
	static char		 buf[4096];
	static const char	 line[] = "GET / HTTP/1.1\r\n";
	struct http_request	 r;
	size_t			 off = strlen(line);

	memcpy(buf, line, off);
	for (int i = 0; i < HTTP_FIELDS_MAX; i++)
		add_field(buf, &off, "X-A", 1);
	memcpy(buf + off, "\r\n", 2);
	r = parse_ok(buf, off + 2);
	assert_int_equal(r.head_len, off + 2);

	add_field(buf, &off, "X-A", 1);
	memcpy(buf + off, "\r\n", 2);
	check_error(buf, off + 2, 431);
}

/* Not HTTP/1.x: 505. */
static void
test_error_505(void **state)
{
	BAD("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
	BAD("CONNECT localhost:443 HTTP/2.0\r\nHost: localhost:443\r\n\r\n", 505);
	BAD("GET / HTTP/3.0\r\n\r\n", 505);
	BAD("GET / HTTP/0.9\r\n\r\n", 505);
	assert_int_equal(OK("GET / HTTP/1.9\r\n\r\n").minor, 9);
}

/* has_body: a Content-Length over 0, or a Transfer-Encoding. */
static void
test_has_body(void **state)
{
	assert_false(OK("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
	assert_false(OK("POST / HTTP/1.1\r\nContent-Length: 000\r\n\r\n").has_body);
	assert_true(OK("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").has_body);
	assert_true(OK("POST / HTTP/1.1\r\ncontent-length:5 \r\n\r\n").has_body);
	assert_true(OK("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").has_body);
	assert_true(OK("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
	assert_true(OK("POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n").has_body);
	assert_false(OK(CURL_GET).has_body);
	assert_false(OK(CURL_CONNECT).has_body);
}

/* Methods are case-sensitive: only "CONNECT" is a CONNECT. */
static void
test_is_connect(void **state)
{
	struct http_request	 r;

	assert_true(http_is_connect(&(struct http_request){ .method = "CONNECT", .method_len = 7 }));
	assert_false(http_is_connect(&(struct http_request){ .method = "connect", .method_len = 7 }));
	assert_false(http_is_connect(&(struct http_request){ .method = "Connect", .method_len = 7 }));
	assert_false(http_is_connect(&(struct http_request){ .method = "CONNECTX", .method_len = 8 }));
	assert_false(http_is_connect(&(struct http_request){ .method = "CONNEC", .method_len = 6 }));
	assert_false(http_is_connect(&(struct http_request){ .method = "GET", .method_len = 3 }));
	r = OK("connect localhost:443 HTTP/1.1\r\n\r\n");
	assert_false(http_is_connect(&r));
	r = OK("CONNECT localhost:443 HTTP/1.1\r\n\r\n");
	assert_true(http_is_connect(&r));
}

/* Authority form: host:port and [v6]:port. */
static void
test_authority_ok(void **state)
{
	struct addr	 a;
	const char	*line = "CONNECT db.internal:5432 HTTP/1.1";

	assert_int_equal(http_authority_parse("localhost:443", 13, &a), 0);
	assert_int_equal(a.kind, ADDR_NAME);
	assert_string_equal(a.host, "localhost");
	assert_int_equal(a.port, 443);

	assert_int_equal(http_authority_parse("[::1]:8443", 10, &a), 0);
	assert_int_equal(a.kind, ADDR_INET);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 8443);

	assert_int_equal(http_authority_parse("127.0.0.1:5432", 14, &a), 0);
	assert_int_equal(a.kind, ADDR_INET);
	assert_int_equal(a.port, 5432);

	/* only len bytes: the target inside the request line */
	assert_int_equal(http_authority_parse(line + 8, strlen("db.internal:5432"), &a), 0);
	assert_int_equal(a.kind, ADDR_NAME);
	assert_string_equal(a.host, "db.internal");
	assert_int_equal(a.port, 5432);
}

/* Anything else is not an authority, and *out is not written. */
static void
test_authority_errors(void **state)
{
	static const char *const bad[] = {
		"localhost", "localhost:0", "localhost:99999", "localhost:", ":443",
		"/path", "http://x:80", "a b:80", "*", "::1:443", "[::1]", "[::1]:",
		"[zz]:443", "user@localhost:443", "localhost:443 ", "localhost:44a",
		"localhost:-1", "",
	};
	struct addr	 a, sentinel;
	char		 longname[400];

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a = sentinel;
		if (http_authority_parse(bad[i], strlen(bad[i]), &a) != -1)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_memory_equal(&a, &sentinel, sizeof(a));
	}

	/* longer than any host name */
	memset(longname, 'a', sizeof(longname));
	memcpy(longname + sizeof(longname) - 4, ":443", 4);
	a = sentinel;
	assert_int_equal(http_authority_parse(longname, sizeof(longname), &a), -1);
	assert_memory_equal(&a, &sentinel, sizeof(a));
}

/* A NUL inside the len bytes does not cut the authority short. */
static void
test_authority_embedded_nul(void **state)
{
	struct addr	 a, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	a = sentinel;
	assert_int_equal(http_authority_parse("localhost:443\0.evil:80", 22, &a), -1);
	assert_memory_equal(&a, &sentinel, sizeof(a));
}

/* An authority that must parse. */
static struct addr
authority(const char *s)
{
	struct addr	 a;

	if (http_authority_parse(s, strlen(s), &a) != 0)
		fail_msg("\"%s\" not an authority", s);
	return a;
}

/* Exact rules: the host without regard to case, and the same port. */
static void
test_rule_exact(void **state)
{
	struct addr	 t = authority("DB.Internal:5432");

	assert_true(http_connect_rule_match("db.internal:5432", &t));
	assert_true(http_connect_rule_match("DB.INTERNAL:5432", &t));
	assert_false(http_connect_rule_match("db.internal:5433", &t));
	assert_false(http_connect_rule_match("db.internal:543", &t));
	assert_false(http_connect_rule_match("db.internal.evil:5432", &t));
	assert_false(http_connect_rule_match("b.internal:5432", &t));
	assert_false(http_connect_rule_match("internal:5432", &t));

	t = authority("127.0.0.1:5432");
	assert_true(http_connect_rule_match("127.0.0.1:5432", &t));
	assert_false(http_connect_rule_match("localhost:5432", &t));
}

/* "*.example.com:443": names below example.com, on port 443 only. */
static void
test_rule_wildcard(void **state)
{
	static const char	 rule[] = "*.example.com:443";
	struct addr		 t;

	t = authority("a.example.com:443");
	assert_true(http_connect_rule_match(rule, &t));
	t = authority("a.b.example.com:443");
	assert_true(http_connect_rule_match(rule, &t));
	t = authority("A.EXAMPLE.COM:443");
	assert_true(http_connect_rule_match(rule, &t));
	assert_true(http_connect_rule_match("*.EXAMPLE.com:443", &t));

	t = authority("example.com:443");
	assert_false(http_connect_rule_match(rule, &t));
	t = authority("badexample.com:443");
	assert_false(http_connect_rule_match(rule, &t));
	t = authority("a.example.com:444");
	assert_false(http_connect_rule_match(rule, &t));
	t = authority("a.example.com.evil:443");
	assert_false(http_connect_rule_match(rule, &t));
	t = authority("example.com.a:443");
	assert_false(http_connect_rule_match(rule, &t));
	t = authority("a.example.org:443");
	assert_false(http_connect_rule_match(rule, &t));
	/* addresses are never under a name */
	t = authority("[::1]:443");
	assert_false(http_connect_rule_match(rule, &t));
	t = authority("127.0.0.1:443");
	assert_false(http_connect_rule_match(rule, &t));
}

/* An IPv6 rule is written in brackets and matches that address. */
static void
test_rule_ipv6(void **state)
{
	struct addr	 t = authority("[::1]:443");

	assert_true(http_connect_rule_match("[::1]:443", &t));
	assert_false(http_connect_rule_match("[::1]:444", &t));
	assert_false(http_connect_rule_match("[::2]:443", &t));
	assert_false(http_connect_rule_match("127.0.0.1:443", &t));
	assert_false(http_connect_rule_match("localhost:443", &t));

	t = authority("localhost:443");
	assert_false(http_connect_rule_match("[::1]:443", &t));
}

/* A rule that is not host:port matches nothing. */
static void
test_rule_malformed(void **state)
{
	static const char *const bad[] = {
		"", "db.internal", "*.example.com", "*:443", "*.:443", "*", "*.",
		"*.*.example.com:443", "db.internal:0", "db.internal:99999",
	};
	struct addr	 t1 = authority("db.internal:443"), t2 = authority("a.example.com:443");

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (http_connect_rule_match(bad[i], &t1) || http_connect_rule_match(bad[i], &t2))
			fail_msg("rule \"%s\" matched", bad[i]);
}

/* Any rule of the list allows; no rules allow nothing: never an open proxy. */
static void
test_connect_allowed(void **state)
{
	static char	 r1[] = "db.internal:5432", r2[] = "*.example.com:443";
	char *const	 rules[] = { r1, r2 };
	struct addr	 t;

	t = authority("db.internal:5432");
	assert_true(http_connect_allowed(rules, 2, &t));
	assert_true(http_connect_allowed(rules, 1, &t));
	assert_false(http_connect_allowed(rules, 0, &t));
	assert_false(http_connect_allowed(NULL, 0, &t));

	t = authority("a.example.com:443");
	assert_true(http_connect_allowed(rules, 2, &t));
	assert_false(http_connect_allowed(rules, 1, &t));
	assert_false(http_connect_allowed(rules, 0, &t));

	t = authority("example.com:443");
	assert_false(http_connect_allowed(rules, 2, &t));
	t = authority("evil.org:443");
	assert_false(http_connect_allowed(rules, 2, &t));
	t = authority("db.internal:22");
	assert_false(http_connect_allowed(rules, 2, &t));
	t = authority("localhost:443");
	assert_false(http_connect_allowed(NULL, 0, &t));
}

/*
 * Strip s, which must give want: PARSE_OK, into a buffer of exactly
 * strlen(s) bytes (the most the result can take), from an exact copy.
 */
static void
strip_ok(const char *s, const char *want)
{
	size_t	 n = strlen(s), outlen = 0;
	char	*q = exact(s, n), *out = malloc(n);

	assert_non_null(out);
	if (http_strip_hop_by_hop(q, n, out, n, &outlen) != PARSE_OK)
		fail_msg("not PARSE_OK for:\n%s", s);
	if (outlen != strlen(want) || memcmp(out, want, outlen) != 0)
		fail_msg("got:\n%.*s\nwant:\n%s", (int)outlen, out, want);
	/* and what is left is a head without an upgrade, as long as it says */
	{
		struct http_request	 r = parse_ok(out, outlen);

		assert_int_equal(r.head_len, outlen);
		assert_false(r.upgrade_tls);
	}
	free(q);
	free(out);
}

/* Strip s[0..n), which must fail with want; out and *outlen untouched. */
static void
strip_bad(const char *s, size_t n, size_t outsz, enum parse_result want)
{
	char			 out[HTTP_HEAD_MAX + 64], sentinel[sizeof(out)];
	char			*q = exact(s, n);
	size_t			 outlen = 12345;
	enum parse_result	 res;

	assert_true(outsz <= sizeof(out));
	memset(out, 0x5a, sizeof(out));
	memcpy(sentinel, out, sizeof(out));
	res = http_strip_hop_by_hop(q, n, out, outsz, &outlen);
	free(q);
	if (res != want)
		fail_msg("result %d, want %d, for:\n%.*s", res, want, (int)(n > 300 ? 300 : n), s);
	assert_int_equal(outlen, 12345);
	assert_memory_equal(out, sentinel, sizeof(out));
}

#define STRIP_BAD(s)	strip_bad(s, sizeof(s) - 1, sizeof(s) - 1, PARSE_MALFORMED)

/* ipptool -E, captured: the backend gets OPTIONS * without the upgrade. */
static void
test_strip_ipptool(void **state)
{
	strip_ok(IPPTOOL_E, IPPTOOL_E_STRIPPED);
	strip_ok(RFC2817_UPGRADE, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
}

/* Every field that Connection names goes; the others stay byte for byte. */
static void
test_strip_connection_names(void **state)
{
	strip_ok("GET /named HTTP/1.1\r\nHost: localhost\r\nX-Foo: 1\r\n"
	    "Connection: Upgrade, X-Foo\r\nUpgrade: TLS/1.0\r\n"
	    "X-Bar:   spaced  out \t\r\nAccept: */*\r\n\r\n",
	    "GET /named HTTP/1.1\r\nHost: localhost\r\n"
	    "X-Bar:   spaced  out \t\r\nAccept: */*\r\n\r\n");
	/* a named field that comes several times, and before Connection */
	strip_ok("GET / HTTP/1.1\r\nX-Foo: 1\r\nHost: h\r\nX-Foo: 2\r\n"
	    "Connection: x-foo, upgrade\r\nUpgrade: TLS/1.2\r\nX-Foo: 3\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	/* h2c's HTTP2-Settings, with a TLS/1.x beside h2c */
	strip_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
	    "Upgrade: h2c, TLS/1.2\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	/* a name is a whole field name, not a prefix */
	strip_ok("GET / HTTP/1.1\r\nX-Foo: 1\r\nX-Foobar: 2\r\nX-Fo: 3\r\n"
	    "Connection: upgrade, X-Foo\r\nUpgrade: TLS/1.0\r\n\r\n",
	    "GET / HTTP/1.1\r\nX-Foobar: 2\r\nX-Fo: 3\r\n\r\n");
	/* close and keep-alive are options; Keep-Alive the field goes with the latter */
	strip_ok("GET / HTTP/1.1\r\nHost: h\r\nKeep-Alive: timeout=5\r\n"
	    "Connection: keep-alive, close, upgrade\r\nUpgrade: TLS/1.0\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	/* whatever it names: the client asked for it (RFC 9110 section 7.6.1) */
	strip_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, host\r\n"
	    "Upgrade: TLS/1.0\r\nAccept: */*\r\n\r\n",
	    "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
	/* fields that only look like the hop-by-hop ones stay */
	strip_ok("GET / HTTP/1.1\r\nX-Upgrade: TLS/1.0\r\nConnection-Id: 7\r\n"
	    "Upgraded: no\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n",
	    "GET / HTTP/1.1\r\nX-Upgrade: TLS/1.0\r\nConnection-Id: 7\r\nUpgraded: no\r\n\r\n");
}

/* Several Connection and Upgrade fields, empty list elements. */
static void
test_strip_several_fields(void **state)
{
	strip_ok("OPTIONS * HTTP/1.1\r\nConnection: keep-alive\r\nHost: localhost\r\n"
	    "Keep-Alive: timeout=5\r\nConnection: Upgrade\r\nX-A: a\r\nConnection: ,X-A,,\r\n"
	    "Upgrade: TLS/1.0\r\nX-B: b\r\n\r\n",
	    "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nX-B: b\r\n\r\n");
	strip_ok("OPTIONS * HTTP/1.1\r\nUpgrade: h2c\r\nUpgrade: TLS/1.2\r\n"
	    "Connection:\r\nConnection: upgrade\r\nHost: h\r\n\r\n",
	    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
	/* a Connection that names Connection or Upgrade changes nothing more */
	strip_ok("OPTIONS * HTTP/1.1\r\nConnection: connection, upgrade, UPGRADE\r\n"
	    "Upgrade: TLS/1.2\r\nHost: h\r\n\r\n",
	    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
}

/* Field names and connection options ignore case. */
static void
test_strip_case(void **state)
{
	strip_ok("GET /case HTTP/1.1\r\nhost: localhost\r\nupgrade: tls/1.1\r\n"
	    "CONNECTION: UPGRADE, x-foo\r\nX-FOO: y\r\nx-Keep: z\r\n\r\n",
	    "GET /case HTTP/1.1\r\nhost: localhost\r\nx-Keep: z\r\n\r\n");
	strip_ok("GET / HTTP/1.1\r\nuPgRaDe: TLS/1.0\r\ncOnNeCtIoN: Upgrade,X-a\r\nx-A: 1\r\n\r\n",
	    "GET / HTTP/1.1\r\n\r\n");
}

/* Each line keeps its own ending; empty lines before the request go. */
static void
test_strip_line_endings(void **state)
{
	strip_ok("GET /lf HTTP/1.1\nHost: localhost\nConnection: upgrade\n"
	    "Upgrade: TLS/1.2\nAccept: */*\r\n\n",
	    "GET /lf HTTP/1.1\nHost: localhost\nAccept: */*\r\n\n");
	strip_ok("\r\n" RFC2817_UPGRADE, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
	strip_ok("\n\n" RFC2817_UPGRADE, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
	strip_ok("\r\n\r\n" IPPTOOL_E, IPPTOOL_E_STRIPPED);
	/* nothing to strip: the head as it is */
	strip_ok(CURL_GET, CURL_GET);
	strip_ok("GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\n\r\n");
	strip_ok("GET / HTTP/1.1\n\n", "GET / HTTP/1.1\n\n");
	strip_ok("GET / HTTP/1.1\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\n",
	    "GET / HTTP/1.1\r\n\n");
}

/* Not one whole head, or a Connection list of other than tokens: MALFORMED. */
static void
test_strip_malformed(void **state)
{
	/* Connection names what cannot be a field name */
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nConnection: Upgrade, X Foo\r\nUpgrade: TLS/1.0\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nConnection: Upgrade, \"X-Foo\"\r\nUpgrade: TLS/1.0\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nConnection: Upgrade; x=1\r\nUpgrade: TLS/1.0\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nConnection: Upgrade, a/b\r\nUpgrade: TLS/1.0\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n"
	    "Connection: x\ty\r\n\r\n");
	/* not one whole head */
	STRIP_BAD("");
	STRIP_BAD("\r\n");
	STRIP_BAD("\r\n\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nHost: x\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r");
	STRIP_BAD(RFC2817_UPGRADE "G");			/* bytes after the head */
	STRIP_BAD(RFC2817_UPGRADE "\r\n");
	STRIP_BAD(RFC2817_UPGRADE RFC2817_UPGRADE);
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nHost x\r\n\r\n");	/* malformed fields */
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nHost : x\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n");
	STRIP_BAD("OPTIONS * HTTP/1.1\r\nX: a\x01" "b\r\n\r\n");

	/* every proper prefix of the capture */
	for (size_t n = 0; n < strlen(IPPTOOL_E); n++)
		strip_bad(IPPTOOL_E, n, HTTP_HEAD_MAX, PARSE_MALFORMED);
}

/* The result must fit: TOO_LONG, out untouched; more than 100 fields too. */
static void
test_strip_bounds(void **state)
{
	static char	 buf[HTTP_HEAD_MAX + 64], out[HTTP_HEAD_MAX];
	size_t		 want = strlen(IPPTOOL_E_STRIPPED), outlen, off;

	strip_bad(IPPTOOL_E, strlen(IPPTOOL_E), want - 1, PARSE_TOO_LONG);
	strip_bad(IPPTOOL_E, strlen(IPPTOOL_E), 0, PARSE_TOO_LONG);
	assert_int_equal(http_strip_hop_by_hop(IPPTOOL_E, strlen(IPPTOOL_E), out, want,
	    &outlen), PARSE_OK);
	assert_int_equal(outlen, want);
	assert_memory_equal(out, IPPTOOL_E_STRIPPED, want);

	/* 100 fields in the largest head the parser takes */
	off = strlen("GET / HTTP/1.1\r\n");
	memcpy(buf, "GET / HTTP/1.1\r\n", off);
	add_field(buf, &off, "Connection", 7);
	memcpy(buf + off - 9, "upgrade", 7);
	add_field(buf, &off, "Upgrade", 7);
	memcpy(buf + off - 9, "TLS/1.0", 7);
	for (int i = 0; i < 97; i++)
		add_field(buf, &off, "X-Pad", 100);
	add_field(buf, &off, "X-Last", HTTP_HEAD_MAX - off - 10 - 2);
	memcpy(buf + off, "\r\n", 2);
	off += 2;
	assert_int_equal(off, HTTP_HEAD_MAX);
	assert_true(parse_ok(buf, off).upgrade_tls);
	assert_int_equal(http_strip_hop_by_hop(buf, off, out, sizeof(out), &outlen), PARSE_OK);
	assert_int_equal(outlen, HTTP_HEAD_MAX - strlen("Connection: upgrade\r\nUpgrade: TLS/1.0\r\n"));

	/* 101 fields */
	off = strlen("GET / HTTP/1.1\r\n");
	for (int i = 0; i < 101; i++)
		add_field(buf, &off, "X-Pad", 10);
	memcpy(buf + off, "\r\n", 2);
	off += 2;
	strip_bad(buf, off, HTTP_HEAD_MAX, PARSE_TOO_LONG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_curl_connect),
		cmocka_unit_test(test_request_curl_get),
		cmocka_unit_test(test_request_upgrade),
		cmocka_unit_test(test_request_upgrade_incomplete),
		cmocka_unit_test(test_request_upgrade_tls_tokens),
		cmocka_unit_test(test_request_head_len),
		cmocka_unit_test(test_request_need_more),
		cmocka_unit_test(test_request_lf_only),
		cmocka_unit_test(test_request_leading_empty_lines),
		cmocka_unit_test(test_error_request_line),
		cmocka_unit_test(test_error_fields),
		cmocka_unit_test(test_error_content_length),
		cmocka_unit_test(test_error_414),
		cmocka_unit_test(test_error_431_size),
		cmocka_unit_test(test_error_431_fields),
		cmocka_unit_test(test_error_505),
		cmocka_unit_test(test_has_body),
		cmocka_unit_test(test_is_connect),
		cmocka_unit_test(test_authority_ok),
		cmocka_unit_test(test_authority_errors),
		cmocka_unit_test(test_authority_embedded_nul),
		cmocka_unit_test(test_rule_exact),
		cmocka_unit_test(test_rule_wildcard),
		cmocka_unit_test(test_rule_ipv6),
		cmocka_unit_test(test_rule_malformed),
		cmocka_unit_test(test_connect_allowed),
		cmocka_unit_test(test_strip_ipptool),
		cmocka_unit_test(test_strip_connection_names),
		cmocka_unit_test(test_strip_several_fields),
		cmocka_unit_test(test_strip_case),
		cmocka_unit_test(test_strip_line_endings),
		cmocka_unit_test(test_strip_malformed),
		cmocka_unit_test(test_strip_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
