/* Unit tests for src/cidr.c: access rules, as written and as matched. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "cidr.h"

/* The rule text reads back as want. */
static void
assert_rule(const char *text, const char *want)
{
	struct cidr_rule r;
	char		 why[160], buf[CIDR_FORMAT_MAX];

	if (cidr_rule_parse(text, &r, why, sizeof(why)) != 0)
		fail_msg("%s: %s", text, why);
	cidr_rule_format(&r, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static void
assert_bad(const char *text, const char *want_why)
{
	struct cidr_rule r;
	char		 why[160];

	assert_int_equal(cidr_rule_parse(text, &r, why, sizeof(why)), -1);
	assert_string_equal(why, want_why);
}

/* A peer's address from text, through a sockaddr as accept() gives it. */
static struct cidr_addr
peer(const char *text)
{
	struct sockaddr_storage	 ss;
	struct cidr_addr	 a;
	socklen_t		 len;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
		len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
		len = sizeof(*s4);
	}
	cidr_addr_from_sockaddr((struct sockaddr *)&ss, len, &a);
	return a;
}

static bool
matches(const char *rule, const char *addr)
{
	struct cidr_rule r;
	struct cidr_addr a = peer(addr);
	char		 why[160];

	assert_int_equal(cidr_rule_parse(rule, &r, why, sizeof(why)), 0);
	return cidr_rule_match(&r, &a);
}

static void
test_parse(void **state)
{
	assert_rule("allow 192.0.2.0/24", "allow 192.0.2.0/24");
	assert_rule("deny 192.0.2.7", "deny 192.0.2.7/32");
	assert_rule("deny   2001:db8::/32", "deny 2001:db8::/32");
	assert_rule("allow 2001:db8::1", "allow 2001:db8::1/128");
	assert_rule("allow 0.0.0.0/0", "allow 0.0.0.0/0");
	assert_rule("deny ::/0", "deny ::/0");
	assert_rule("deny all", "deny all");
	assert_rule("allow all", "allow all");
	/* inside ::ffff:0:0/96: the IPv4 rule it spells */
	assert_rule("deny ::ffff:192.0.2.0/120", "deny 192.0.2.0/24");
	assert_rule("deny ::ffff:0:0/96", "deny 0.0.0.0/0");
	/* shorter than /96 stays IPv6 */
	assert_rule("deny ::fffe:0:0/95", "deny ::fffe:0:0/95");
}

static void
test_parse_errors(void **state)
{
	assert_bad("permit all", "does not start with allow or deny");
	assert_bad("Allow all", "does not start with allow or deny");
	assert_bad("allow", "does not start with allow or deny");
	assert_bad("allow ", "no IPv4 or IPv6 address, prefix or \"all\" after the action");
	assert_bad("allow all ", "no IPv4 or IPv6 address, prefix or \"all\" after the action");
	assert_bad("allow 192.0.2.0/24 ", "\"/24 \" is not a prefix length (expected 0 to 32)");
	assert_bad("allow 192.0.2", "no IPv4 or IPv6 address, prefix or \"all\" after the action");
	assert_bad("allow 192.0.2.0/", "\"/\" is not a prefix length (expected 0 to 32)");
	assert_bad("allow 192.0.2.0/-1", "\"/-1\" is not a prefix length (expected 0 to 32)");
	assert_bad("allow 192.0.2.0/024", "\"/024\" is not a prefix length (expected 0 to 32)");
	assert_bad("allow 192.0.2.0/1000", "\"/1000\" is not a prefix length (expected 0 to 32)");
	assert_bad("allow 192.0.2.0/24/8", "\"/24/8\" is not a prefix length (expected 0 to 32)");
	assert_bad("allow 2001:db8::/129", "\"/129\" is not a prefix length (expected 0 to 128)");
	assert_bad("allow [2001:db8::]/32", "no IPv4 or IPv6 address, prefix or \"all\" after the action");
	assert_bad("deny 192.0.2.1/24",
	    "192.0.2.1 has bits set past /24 (expected the network, 192.0.2.0/24, or the address alone)");
	assert_bad("deny 2001:db8::1/64",
	    "2001:db8::1 has bits set past /64 (expected the network, 2001:db8::/64, or the address alone)");
	assert_bad("deny 10.0.0.0/0",
	    "10.0.0.0 has bits set past /0 (expected the network, 0.0.0.0/0, or the address alone)");
	assert_bad("allow 0123456789012345678901234567890123456789012345678901234567890123456789",
	    "too long for a rule (at most 64 characters)");
}

static void
test_match(void **state)
{
	assert_true(matches("allow 192.0.2.0/24", "192.0.2.0"));
	assert_true(matches("allow 192.0.2.0/24", "192.0.2.255"));
	assert_false(matches("allow 192.0.2.0/24", "192.0.3.0"));
	assert_false(matches("allow 192.0.2.0/24", "192.0.1.255"));
	assert_true(matches("deny 192.0.2.7", "192.0.2.7"));
	assert_false(matches("deny 192.0.2.7", "192.0.2.6"));
	assert_true(matches("allow 10.0.0.0/7", "11.255.255.255"));
	assert_false(matches("allow 10.0.0.0/7", "12.0.0.0"));
	assert_true(matches("allow 0.0.0.0/0", "203.0.113.9"));
	assert_false(matches("allow 0.0.0.0/0", "2001:db8::1"));
	assert_true(matches("allow 2001:db8::/32", "2001:db8:ffff::1"));
	assert_false(matches("allow 2001:db8::/32", "2001:db9::1"));
	assert_true(matches("allow 2001:db8::/33", "2001:db8:7fff::"));
	assert_false(matches("allow 2001:db8::/33", "2001:db8:8000::"));
	assert_true(matches("deny ::/0", "::1"));
	assert_false(matches("deny ::/0", "127.0.0.1"));
	assert_true(matches("deny all", "::1"));
	assert_true(matches("deny all", "127.0.0.1"));
	/* an IPv4-mapped client is its IPv4 address */
	assert_true(matches("deny 192.0.2.0/24", "::ffff:192.0.2.9"));
	assert_true(matches("deny ::ffff:192.0.2.0/120", "192.0.2.9"));
	assert_false(matches("deny ::/0", "::ffff:192.0.2.9"));
}

static void
test_first_match_wins(void **state)
{
	const char *const text[] = { "deny 192.0.2.7", "allow 192.0.2.0/24",
	    "allow 2001:db8::/32", "deny all" };
	struct cidr_rule rules[4];
	struct cidr_addr a;
	char		 why[160];
	size_t		 which;

	for (size_t i = 0; i < 4; i++)
		assert_int_equal(cidr_rule_parse(text[i], &rules[i], why, sizeof(why)), 0);
	a = peer("192.0.2.7");
	assert_false(cidr_allowed(rules, 4, &a, &which));
	assert_int_equal(which, 0);
	a = peer("192.0.2.8");
	assert_true(cidr_allowed(rules, 4, &a, &which));
	assert_int_equal(which, 1);
	a = peer("2001:db8::8");
	assert_true(cidr_allowed(rules, 4, &a, &which));
	assert_int_equal(which, 2);
	a = peer("198.51.100.1");
	assert_false(cidr_allowed(rules, 4, &a, &which));
	assert_int_equal(which, 3);
	/* no match: allowed */
	assert_true(cidr_allowed(rules, 3, &a, &which));
	assert_int_equal(which, 3);
	assert_true(cidr_allowed(rules, 0, &a, &which));
}

static void
test_other_families(void **state)
{
	struct sockaddr_un	 sun = { .sun_family = AF_UNIX, .sun_path = "/run/x" };
	struct cidr_addr	 a;
	struct cidr_rule	 r;
	char			 why[160];

	cidr_addr_from_sockaddr((struct sockaddr *)&sun, sizeof(sun), &a);
	assert_int_equal(a.family, AF_UNSPEC);
	assert_int_equal(cidr_rule_parse("deny 0.0.0.0/0", &r, why, sizeof(why)), 0);
	assert_false(cidr_rule_match(&r, &a));
	assert_int_equal(cidr_rule_parse("deny all", &r, why, sizeof(why)), 0);
	assert_true(cidr_rule_match(&r, &a));
	/* a sockaddr too short for its family is no address */
	cidr_addr_from_sockaddr((struct sockaddr *)&sun, 4, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	cidr_addr_from_sockaddr(NULL, 0, &a);
	assert_int_equal(a.family, AF_UNSPEC);
}

static void
test_mask(void **state)
{
	struct cidr_addr a = peer("2001:db8:1:2:3:4:5:6"), m;
	char		 buf[INET6_ADDRSTRLEN];

	cidr_addr_mask(&a, 64, &m);
	inet_ntop(AF_INET6, m.a, buf, sizeof(buf));
	assert_string_equal(buf, "2001:db8:1:2::");
	a = peer("192.0.2.77");
	cidr_addr_mask(&a, 28, &m);
	inet_ntop(AF_INET, m.a, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.64");
	cidr_addr_mask(&a, 200, &m);	/* capped */
	inet_ntop(AF_INET, m.a, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.77");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_first_match_wins),
		cmocka_unit_test(test_other_families),
		cmocka_unit_test(test_mask),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
