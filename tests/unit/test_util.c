/* Unit tests for src/util.c: addresses, pins, the TLS record scan. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "log.h"
#include "util.h"

static void
test_addr_ipv4(void **state)
{
	struct addr	 a;
	const char	*why = NULL;
	char		 buf[64];

	assert_int_equal(addr_parse("192.0.2.1:25", 0, &a, &why), 0);
	assert_int_equal(a.kind, ADDR_INET);
	assert_string_equal(a.host, "192.0.2.1");
	assert_int_equal(a.port, 25);
	assert_int_equal(a.ss.ss_family, AF_INET);
	addr_format((struct sockaddr *)&a.ss, a.sslen, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.1:25");
}

static void
test_addr_ipv6(void **state)
{
	struct addr	 a;
	const char	*why = NULL;
	char		 buf[64];

	assert_int_equal(addr_parse("[2001:db8::1]:587", 0, &a, &why), 0);
	assert_int_equal(a.ss.ss_family, AF_INET6);
	assert_int_equal(a.port, 587);
	addr_format((struct sockaddr *)&a.ss, a.sslen, buf, sizeof(buf));
	assert_string_equal(buf, "[2001:db8::1]:587");
	assert_int_equal(addr_parse("[::]:443", 0, &a, &why), 0);
}

static void
test_addr_name_and_unix(void **state)
{
	struct addr	 a;
	const char	*why = NULL;
	char		 buf[128];

	assert_int_equal(addr_parse("mx.example:25", ADDR_ALLOW_NAME, &a, &why), 0);
	assert_int_equal(a.kind, ADDR_NAME);
	assert_string_equal(a.host, "mx.example");
	assert_int_equal(addr_parse("unix:/run/slapd.sock", ADDR_ALLOW_UNIX, &a, &why), 0);
	assert_int_equal(a.kind, ADDR_UNIX);
	addr_format((struct sockaddr *)&a.ss, a.sslen, buf, sizeof(buf));
	assert_string_equal(buf, "unix:/run/slapd.sock");
}

/* A failed parse reports why and never writes the output. */
static void
test_addr_errors(void **state)
{
	static const struct {
		const char	*text;
		int		 flags;
		const char	*why;
	} bad[] = {
		{ "192.0.2.1", 0, "missing :port" },
		{ "192.0.2.1:0", 0, "port must be a number from 1 to 65535" },
		{ "192.0.2.1:65536", 0, "port must be a number from 1 to 65535" },
		{ "192.0.2.1:25x", 0, "port must be a number from 1 to 65535" },
		{ "::1:25", 0, "an IPv6 address must be written in brackets, [v6]:port" },
		{ "[::1]25", 0, "expected [IPv6]:port" },
		{ "[nonsense]:25", 0, "not a valid IPv6 address inside [ ]" },
		{ "mx.example:25", 0, "not a numeric address" },
		{ "bad_host!:25", ADDR_ALLOW_NAME, "not a valid host name" },
		{ ":25", ADDR_ALLOW_NAME, "missing host" },
		{ "unix:/x", 0, "a unix socket is not allowed here" },
		{ "unix:relative", ADDR_ALLOW_UNIX, "a unix socket path must be absolute (unix:/path)" },
	};
	struct addr	 sentinel, a;
	const char	*why;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a = sentinel;
		why = NULL;
		assert_int_equal(addr_parse(bad[i].text, bad[i].flags, &a, &why), -1);
		assert_non_null(why);
		assert_string_equal(why, bad[i].why);
		assert_memory_equal(&a, &sentinel, sizeof(a));
	}
}

static void
test_addr_equal(void **state)
{
	struct addr	 a, b, c;
	const char	*why;

	assert_int_equal(addr_parse("127.0.0.1:25", 0, &a, &why), 0);
	assert_int_equal(addr_parse("127.0.0.1:25", 0, &b, &why), 0);
	assert_int_equal(addr_parse("127.0.0.1:26", 0, &c, &why), 0);
	assert_true(addr_sockaddr_equal((struct sockaddr *)&a.ss, a.sslen,
	    (struct sockaddr *)&b.ss, b.sslen));
	assert_false(addr_sockaddr_equal((struct sockaddr *)&a.ss, a.sslen,
	    (struct sockaddr *)&c.ss, c.sslen));
	assert_int_equal(addr_parse("[::1]:25", 0, &c, &why), 0);
	assert_false(addr_sockaddr_equal((struct sockaddr *)&a.ss, a.sslen,
	    (struct sockaddr *)&c.ss, c.sslen));
}

static void
test_hostname(void **state)
{
	assert_true(hostname_valid("mail.example.com"));
	assert_true(hostname_valid("localhost"));
	assert_false(hostname_valid(""));
	assert_false(hostname_valid("a..b"));
	assert_false(hostname_valid(".a"));
	assert_false(hostname_valid("a b"));
	assert_true(ip_literal("127.0.0.1"));
	assert_true(ip_literal("::1"));
	assert_false(ip_literal("localhost"));
}

/* SHA-256 of "abc", and its base64 */
static const unsigned char abc_digest[32] = {
	0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde,
	0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
	0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
};
#define ABC_PIN "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="

static void
test_pins(void **state)
{
	unsigned char	 out[32], sentinel[32];
	const char	*one[] = { ABC_PIN };
	const char	*other[] = { "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" };
	const char	*mixed[] = { "not base64", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", ABC_PIN };

	assert_int_equal(pin_decode(ABC_PIN, out), 0);
	assert_memory_equal(out, abc_digest, 32);
	memset(sentinel, 0x5a, sizeof(sentinel));
	memcpy(out, sentinel, 32);
	assert_int_equal(pin_decode("short", out), -1);
	assert_int_equal(pin_decode("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0", out), -1);
	assert_int_equal(pin_decode("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAF!0=", out), -1);
	assert_memory_equal(out, sentinel, 32);
	assert_true(pin_match(abc_digest, one, 1));
	assert_false(pin_match(abc_digest, other, 1));
	assert_true(pin_match(abc_digest, mixed, 3));
	assert_false(pin_match(abc_digest, mixed, 2));
	assert_false(pin_match(abc_digest, NULL, 0));
}

static void
test_tls_record_start(void **state)
{
	const unsigned char hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00 };
	const unsigned char injected[] = "RSET\r\nMAIL FROM:<x>\r\n\x16\x03\x01\x00\x10";
	const unsigned char fake[] = "A\x16Z\x16\x03\x09" "B";
	const unsigned char partial[] = "NOOP\r\n\x16";

	assert_int_equal(tls_record_start(hello, sizeof(hello)), 0);
	assert_int_equal(tls_record_start(injected, sizeof(injected) - 1), 21);
	assert_int_equal(tls_record_start((const unsigned char *)"RSET\r\n", 6), 6);
	assert_int_equal(tls_record_start(fake, sizeof(fake) - 1), sizeof(fake) - 1);
	/* a 0x16 at the end may be the start of a record still in flight */
	assert_int_equal(tls_record_start(partial, sizeof(partial) - 1), 6);
	assert_int_equal(tls_record_start(hello, 0), 0);
}

static void
test_edit_distance(void **state)
{
	assert_int_equal(edit_distance("timeouts", "tmeouts"), 1);
	assert_int_equal(edit_distance("smtp", "smpt"), 2);
	assert_int_equal(edit_distance("", "abc"), 3);
	assert_int_equal(edit_distance("same", "same"), 0);
}

/* Guarantee 4: what a peer chooses cannot end a value or a line. */
static void
test_log_escape(void **state)
{
	char	 out[64], small[8];

	(void)state;
	assert_string_equal(log_escape("mail.example", false, out, sizeof(out)), "mail.example");
	assert_string_equal(log_escape("[::1]:25", false, out, sizeof(out)), "[::1]:25");
	assert_string_equal(log_escape("unix:/run/a b", false, out, sizeof(out)),
	    "unix:/run/a\\x20b");
	assert_string_equal(log_escape("a\nsession x=\"y\"", false, out, sizeof(out)),
	    "a\\x0asession\\x20x\\x3d\\x22y\\x22");
	assert_string_equal(log_escape("caf\xc3\xa9", false, out, sizeof(out)), "caf\\xc3\\xa9");
	/* quoted: spaces and '=' stay, quotes and backslashes become ', controls \xHH */
	assert_string_equal(log_escape("454 no\" end=x \\ \r\n", true, out, sizeof(out)),
	    "454 no' end=x ' \\x0d\\x0a");
	assert_string_equal(log_escape("\x7f\x01", true, out, sizeof(out)), "\\x7f\\x01");
	/* truncated, never inside an escape */
	assert_string_equal(log_escape("abcd\nef", false, small, sizeof(small)), "abcd");
	assert_string_equal(log_escape("abcdefghij", false, small, sizeof(small)), "abcdefg");
	assert_string_equal(log_escape("", false, small, sizeof(small)), "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_ipv4),
		cmocka_unit_test(test_addr_ipv6),
		cmocka_unit_test(test_addr_name_and_unix),
		cmocka_unit_test(test_addr_errors),
		cmocka_unit_test(test_addr_equal),
		cmocka_unit_test(test_hostname),
		cmocka_unit_test(test_pins),
		cmocka_unit_test(test_tls_record_start),
		cmocka_unit_test(test_edit_distance),
		cmocka_unit_test(test_log_escape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
