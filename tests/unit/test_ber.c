/*
 * Unit tests for src/ber.c: BER TLV headers, the LDAPMessage envelope,
 * the StartTLS and Abandon requests, and the responses the proxy writes.
 *
 * The LDAP fixtures are real traffic, recorded on loopback between real
 * clients and OpenLDAP's slapd 2.5.13 (the server of
 * tests/integration/slapd_backend.py):
 *   python3-ldap3 2.9.1: simple bind as uid=alice / alicepw, searches,
 *     an abandon and an unbind;
 *   ldapsearch -x -ZZ (OpenLDAP 2.5.13): the StartTLS extended request;
 *   ldapwhoami -x: an anonymous bind, the "Who am I?" extended request
 *     and an unbind;
 *   slapd's answers to them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"

#include <stdlib.h>
#include <string.h>

#include "ber.h"

/* Fixtures: the bytes of string literals, without the NUL. */
#define FIXLEN(a)	(sizeof(a) - 1)

/* python3-ldap3: Connection(user=..., password="alicepw").bind(), msgid 1 */
static const uint8_t ldap3_bind[] =
	"\x30\x38" "\x02\x01\x01"		/* LDAPMessage, messageID 1 */
	"\x60\x33"				/* [APPLICATION 0] BindRequest */
	"\x02\x01\x03"				/* version 3 */
	"\x04\x25" "uid=alice,ou=people,dc=example,dc=org"
	"\x80\x07" "alicepw";			/* simple [0] */

/* python3-ldap3: search("ou=people,...", "(uid=alice)", attributes=["cn", "mail"]) */
static const uint8_t ldap3_search[] =
	"\x30\x4b" "\x02\x01\x02"		/* messageID 2 */
	"\x63\x46"				/* [APPLICATION 3] SearchRequest */
	"\x04\x1b" "ou=people,dc=example,dc=org"
	"\x0a\x01\x02"				/* scope: wholeSubtree */
	"\x0a\x01\x03"				/* derefAliases: always */
	"\x02\x01\x00" "\x02\x01\x00"		/* sizeLimit, timeLimit */
	"\x01\x01\x00"				/* typesOnly FALSE */
	"\xa3\x0c" "\x04\x03" "uid" "\x04\x05" "alice"	/* equalityMatch */
	"\x30\x0a" "\x04\x02" "cn" "\x04\x04" "mail";

/* python3-ldap3 (ASYNC): abandon(3) sent as messageID 5 */
static const uint8_t ldap3_abandon[] =
	"\x30\x06" "\x02\x01\x05"
	"\x50\x01\x03";				/* [APPLICATION 16] MessageID 3 */

/* python3-ldap3: unbind(), messageID 6 */
static const uint8_t ldap3_unbind[] =
	"\x30\x05" "\x02\x01\x06" "\x42\x00";	/* [APPLICATION 2] NULL */

/* ldapsearch -ZZ: the StartTLS extended request (RFC 4511 section 4.14.1) */
static const uint8_t ldapsearch_starttls[] =
	"\x30\x1d" "\x02\x01\x01"
	"\x77\x18"				/* [APPLICATION 23] ExtendedRequest */
	"\x80\x16" "1.3.6.1.4.1.1466.20037";	/* requestName [0] */

/* ldapwhoami -x: anonymous simple bind */
static const uint8_t ldapwhoami_bind[] =
	"\x30\x0c" "\x02\x01\x01"
	"\x60\x07" "\x02\x01\x03" "\x04\x00" "\x80\x00";

/* ldapwhoami: the "Who am I?" extended request (RFC 4532) */
static const uint8_t ldapwhoami_whoami[] =
	"\x30\x1e" "\x02\x01\x02"
	"\x77\x19" "\x80\x17" "1.3.6.1.4.1.4203.1.11.3";

/* ldapwhoami: unbind, messageID 3 */
static const uint8_t ldapwhoami_unbind[] =
	"\x30\x05" "\x02\x01\x03" "\x42\x00";

/* slapd: BindResponse success to messageID 1 */
static const uint8_t slapd_bind_ok[] =
	"\x30\x0c" "\x02\x01\x01"
	"\x61\x07" "\x0a\x01\x00" "\x04\x00" "\x04\x00";

/* slapd: the SearchResultEntry for ldap3_search */
static const uint8_t slapd_search_entry[] =
	"\x30\x5a" "\x02\x01\x02"
	"\x64\x55"				/* [APPLICATION 4] */
	"\x04\x25" "uid=alice,ou=people,dc=example,dc=org"
	"\x30\x2c"
	"\x30\x0d" "\x04\x02" "cn" "\x31\x07" "\x04\x05" "Alice"
	"\x30\x1b" "\x04\x04" "mail" "\x31\x13" "\x04\x11" "alice@example.org";

/* slapd: the SearchResultDone for ldap3_search */
static const uint8_t slapd_search_done[] =
	"\x30\x0c" "\x02\x01\x02"
	"\x65\x07" "\x0a\x01\x00" "\x04\x00" "\x04\x00";

/* slapd without TLS: its answer to ldapsearch_starttls, protocolError */
static const uint8_t slapd_starttls_refused[] =
	"\x30\x2a" "\x02\x01\x01"
	"\x78\x25" "\x0a\x01\x02" "\x04\x00"
	"\x04\x1e" "unsupported extended operation";

/* slapd: the "Who am I?" response, an empty responseValue [11] */
static const uint8_t slapd_whoami_response[] =
	"\x30\x0e" "\x02\x01\x02"
	"\x78\x09" "\x0a\x01\x00" "\x04\x00" "\x04\x00" "\x8b\x00";

/*
 * A SearchResultDone as Active Directory encodes it, every length in the
 * four-octet long form.
 */
static const uint8_t ad_search_done[] =
	"\x30\x84\x00\x00\x00\x10" "\x02\x01\x02"
	"\x65\x84\x00\x00\x00\x07" "\x0a\x01\x00" "\x04\x00" "\x04\x00";

/* ber_tlv_header on p[0..n) copied to an exact buffer. */
static enum parse_result
tlv(const void *p, size_t n, struct ber_tlv *out)
{
	uint8_t			*q = exact(p, n);
	enum parse_result	 r = ber_tlv_header(q, n, out);

	free(q);
	return r;
}

/* ldap_peek on p[0..n) copied to an exact buffer. */
static enum parse_result
peek(const void *p, size_t n, uint64_t max, struct ldap_peek *out)
{
	uint8_t			*q = exact(p, n);
	enum parse_result	 r = ldap_peek(q, n, max, out);

	free(q);
	return r;
}

/* Short-form lengths: one length octet, up to 127. */
static void
test_tlv_short(void **state)
{
	struct ber_tlv	 t;

	assert_int_equal(tlv("\x30\x00", 2, &t), PARSE_OK);
	assert_int_equal(t.tag, 0x30);
	assert_int_equal(t.hdrlen, 2);
	assert_int_equal(t.len, 0);

	assert_int_equal(tlv("\x04\x7f", 2, &t), PARSE_OK);
	assert_int_equal(t.tag, 0x04);
	assert_int_equal(t.hdrlen, 2);
	assert_int_equal(t.len, 127);

	/* the content need not be here */
	assert_int_equal(tlv("\x78\x25", 2, &t), PARSE_OK);
	assert_int_equal(t.tag, 0x78);
	assert_int_equal(t.len, 0x25);

	/* a real message: the bytes after the header are not looked at */
	assert_int_equal(tlv(ldap3_bind, FIXLEN(ldap3_bind), &t), PARSE_OK);
	assert_int_equal(t.tag, 0x30);
	assert_int_equal(t.hdrlen, 2);
	assert_int_equal(t.len, 0x38);
}

/*
 * Long-form lengths: 0x81 to 0xfe and one to 126 length octets, leading
 * zero octets included (X.690 8.1.3.5; liblber reads up to eight inside a
 * message).
 */
static void
test_tlv_long(void **state)
{
	static const struct {
		const char	*bytes;
		size_t		 n;
		size_t		 hdrlen;
		uint64_t	 len;
	} cases[] = {
		{ "\x04\x81\x80", 3, 3, 128 },
		{ "\x04\x81\xff", 3, 3, 255 },
		{ "\x04\x81\x05", 3, 3, 5 },		/* not minimal, but BER */
		{ "\x30\x82\x01\x00", 4, 4, 256 },
		{ "\x30\x82\xff\xff", 4, 4, 65535 },
		{ "\x30\x83\x01\x11\x70", 5, 5, 70000 },
		{ "\x30\x84\x00\x00\x00\x10", 6, 6, 16 },
		{ "\x30\x84\x01\x02\x03\x04", 6, 6, 0x01020304 },
		{ "\x30\x84\xff\xff\xff\xff", 6, 6, 0xffffffffu },
		{ "\x30\x85\x00\x00\x00\x00\x10", 7, 7, 16 },
		{ "\x30\x85\x01\x00\x00\x00\x00", 7, 7, 0x100000000ull },
		{ "\x30\x88\x00\x00\x00\x00\x00\x00\x00\x10", 10, 10, 16 },
		{ "\x30\x87\x00\xff\xff\xff\xff\xff\xff", 9, 9, 0xffffffffffffull },
		{ "\x30\x87\x01\x00\x00\x00\x00\x00\x00", 9, 9, 0x1000000000000ull },
		/* 2^56 and over: too large for any use, saturated */
		{ "\x30\x88\x00\xff\xff\xff\xff\xff\xff\xff", 10, 10, BER_LEN_HUGE - 1 },
		{ "\x30\x88\x01\x00\x00\x00\x00\x00\x00\x00", 10, 10, BER_LEN_HUGE },
		{ "\x30\x88\xff\xff\xff\xff\xff\xff\xff\xff", 10, 10, BER_LEN_HUGE },
		{ "\x30\x89\x00\x00\x00\x00\x00\x00\x00\x00\x05", 11, 11, 5 },
		{ "\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x05", 11, 11, BER_LEN_HUGE },
	};
	struct ber_tlv	 t;
	uint8_t		 most[128];

	/* 126 length octets, the most there can be: 125 zeros, then 7 */
	memset(most, 0, sizeof(most));
	most[0] = 0x04;
	most[1] = 0xfe;
	most[127] = 7;
	assert_int_equal(tlv(most, sizeof(most), &t), PARSE_OK);
	assert_int_equal(t.hdrlen, 128);
	assert_int_equal(t.len, 7);
	assert_int_equal(tlv(most, sizeof(most) - 1, &t), PARSE_NEED_MORE);
	most[2] = 1;
	assert_int_equal(tlv(most, sizeof(most), &t), PARSE_OK);
	assert_int_equal(t.len, BER_LEN_HUGE);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&t, 0xa5, sizeof(t));
		assert_int_equal(tlv(cases[i].bytes, cases[i].n, &t), PARSE_OK);
		assert_int_equal(t.tag, (uint8_t)cases[i].bytes[0]);
		assert_int_equal(t.hdrlen, cases[i].hdrlen);
		assert_int_equal(t.len, cases[i].len);
	}
}

/* Fewer bytes than the header: NEED_MORE, and *out is not written. */
static void
test_tlv_need_more(void **state)
{
	struct ber_tlv	 t, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	t = sentinel;
	assert_int_equal(tlv("", 0, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x30", 1, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x04\x81", 2, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x30\x82\x01", 3, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x30\x83\x01\x11", 4, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x30\x85", 2, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x30\x85\x00\x00\x00\x00", 6, &t), PARSE_NEED_MORE);
	assert_int_equal(tlv("\x30\xfe\x00\x00\x00\x00", 6, &t), PARSE_NEED_MORE);
	for (size_t n = 2; n < 6; n++)
		assert_int_equal(tlv(ad_search_done, n, &t), PARSE_NEED_MORE);
	assert_memory_equal(&t, &sentinel, sizeof(t));
	assert_int_equal(tlv(ad_search_done, 6, &t), PARSE_OK);
	assert_int_equal(t.hdrlen, 6);
	assert_int_equal(t.len, 16);
}

/*
 * Indefinite lengths (RFC 4511 5.1), the reserved length octet 0xff
 * (X.690 8.1.3.5) and multi-octet tags (none in the envelope) are
 * MALFORMED, and *out is not written.
 */
static void
test_tlv_malformed(void **state)
{
	static const struct {
		const char	*bytes;
		size_t		 n;
	} cases[] = {
		{ "\x30\x80\x02\x01\x01\x00\x00", 7 },	/* indefinite length */
		{ "\x30\x80", 2 },
		{ "\x30\xff", 2 },			/* reserved */
		{ "\x30\xff\x00\x00\x00\x00\x10", 7 },
		{ "\x1f", 1 },				/* known from the tag alone */
		{ "\x1f\x01\x00", 3 },			/* multi-octet tags */
		{ "\x3f\x81\x00\x00", 4 },
		{ "\x5f\x22\x00", 3 },
		{ "\x7f\x22\x00", 3 },
		{ "\x9f\x01\x00", 3 },
		{ "\xbf\x01\x00", 3 },
		{ "\xdf\x01\x00", 3 },
		{ "\xff\x01\x00", 3 },
	};
	struct ber_tlv	 t, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		t = sentinel;
		if (tlv(cases[i].bytes, cases[i].n, &t) != PARSE_MALFORMED)
			fail_msg("case %zu (%02x %02x): not MALFORMED", i,
			    (uint8_t)cases[i].bytes[0], (uint8_t)cases[i].bytes[1]);
		assert_memory_equal(&t, &sentinel, sizeof(t));
	}
}

/* A real message and what ldap_peek must say about it. */
struct peek_case {
	const char	*name;
	const uint8_t	*p;
	size_t		 len;
	size_t		 need;		/* bytes ldap_peek needs: up to the op header */
	int32_t		 msgid;
	enum ldap_op	 op;
	uint8_t		 op_tag;
};

#define PEEK_CASE(a, need, msgid, op, tag)	{ #a, a, FIXLEN(a), need, msgid, op, tag }

static const struct peek_case peek_cases[] = {
	PEEK_CASE(ldap3_bind, 7, 1, LDAP_OP_BIND_REQUEST, 0x60),
	PEEK_CASE(ldap3_search, 7, 2, LDAP_OP_SEARCH_REQUEST, 0x63),
	PEEK_CASE(ldap3_abandon, 7, 5, LDAP_OP_ABANDON_REQUEST, 0x50),
	PEEK_CASE(ldap3_unbind, 7, 6, LDAP_OP_UNBIND_REQUEST, 0x42),
	PEEK_CASE(ldapsearch_starttls, 7, 1, LDAP_OP_EXTENDED_REQUEST, 0x77),
	PEEK_CASE(ldapwhoami_bind, 7, 1, LDAP_OP_BIND_REQUEST, 0x60),
	PEEK_CASE(ldapwhoami_whoami, 7, 2, LDAP_OP_EXTENDED_REQUEST, 0x77),
	PEEK_CASE(ldapwhoami_unbind, 7, 3, LDAP_OP_UNBIND_REQUEST, 0x42),
	PEEK_CASE(slapd_bind_ok, 7, 1, LDAP_OP_BIND_RESPONSE, 0x61),
	PEEK_CASE(slapd_search_entry, 7, 2, LDAP_OP_SEARCH_ENTRY, 0x64),
	PEEK_CASE(slapd_search_done, 7, 2, LDAP_OP_SEARCH_DONE, 0x65),
	PEEK_CASE(slapd_starttls_refused, 7, 1, LDAP_OP_EXTENDED_RESPONSE, 0x78),
	PEEK_CASE(slapd_whoami_response, 7, 2, LDAP_OP_EXTENDED_RESPONSE, 0x78),
	PEEK_CASE(ad_search_done, 15, 2, LDAP_OP_SEARCH_DONE, 0x65),
};

/* The whole of each real message: total, msgid, op and op_tag. */
static void
test_peek_real(void **state)
{
	struct ldap_peek	 pk;

	for (size_t i = 0; i < sizeof(peek_cases) / sizeof(peek_cases[0]); i++) {
		const struct peek_case *c = &peek_cases[i];

		memset(&pk, 0xa5, sizeof(pk));
		if (peek(c->p, c->len, LDAP_MSG_MAX_PRE_TLS, &pk) != PARSE_OK)
			fail_msg("%s: not PARSE_OK", c->name);
		if (pk.total != c->len || pk.msgid != c->msgid || pk.op != c->op ||
		    pk.op_tag != c->op_tag)
			fail_msg("%s: total %llu msgid %d op %d tag %#x, want %zu %d %d %#x",
			    c->name, (unsigned long long)pk.total, (int)pk.msgid, (int)pk.op,
			    pk.op_tag, c->len, (int)c->msgid, (int)c->op, c->op_tag);
	}
}

/*
 * Every prefix of a message's first LDAP_PEEK_MAX bytes: NEED_MORE (and
 * *out untouched) until the op header is in, then the same answer as for
 * the whole message.
 */
static void
test_peek_truncated(void **state)
{
	struct ldap_peek	 pk, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(peek_cases) / sizeof(peek_cases[0]); i++) {
		const struct peek_case *c = &peek_cases[i];
		size_t	 upto = c->len < LDAP_PEEK_MAX ? c->len : LDAP_PEEK_MAX;

		for (size_t n = 0; n <= upto; n++) {
			enum parse_result r;

			pk = sentinel;
			r = peek(c->p, n, LDAP_MSG_MAX_PRE_TLS, &pk);
			if (n < c->need) {
				if (r != PARSE_NEED_MORE)
					fail_msg("%s, %zu bytes: %d, not NEED_MORE", c->name, n, r);
				assert_memory_equal(&pk, &sentinel, sizeof(pk));
				continue;
			}
			if (r != PARSE_OK)
				fail_msg("%s, %zu bytes: %d, not OK", c->name, n, r);
			assert_int_equal(pk.total, c->len);
			assert_int_equal(pk.msgid, c->msgid);
			assert_int_equal(pk.op, c->op);
			assert_int_equal(pk.op_tag, c->op_tag);
		}
	}
}

/* Message IDs from 0 to 2^31 - 1, in one to four octets. */
static void
test_peek_msgids(void **state)
{
	static const struct {
		const char	*bytes;
		size_t		 n;
		int32_t		 msgid;
	} cases[] = {
		{ "\x30\x05\x02\x01\x00\x42\x00", 7, 0 },
		{ "\x30\x05\x02\x01\x7f\x42\x00", 7, 127 },
		{ "\x30\x06\x02\x02\x00\x80\x42\x00", 8, 128 },
		{ "\x30\x06\x02\x02\x00\x7f\x42\x00", 8, 127 },	/* not minimal */
		{ "\x30\x07\x02\x03\x00\x80\x00\x42\x00", 9, 32768 },
		{ "\x30\x08\x02\x04\x7f\xff\xff\xff\x42\x00", 10, 2147483647 },
	};
	struct ldap_peek	 pk;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(peek(cases[i].bytes, cases[i].n, LDAP_MSG_MAX_PRE_TLS, &pk),
		    PARSE_OK);
		assert_int_equal(pk.msgid, cases[i].msgid);
		assert_int_equal(pk.total, cases[i].n);
		assert_int_equal(pk.op, LDAP_OP_UNBIND_REQUEST);
	}
}

/*
 * A message over max is TOO_LONG from its header alone, before the rest
 * of it (or even its messageID) is here; one of exactly max is not.
 */
static void
test_peek_too_long(void **state)
{
	/* a SEQUENCE of 70000 content octets: 70006 bytes in all */
	static const uint8_t	 long4[] = "\x30\x84\x00\x01\x11\x70\x02\x01\x01\x63\x84\x00\x01\x11\x67";
	static const uint8_t	 long3[] = "\x30\x83\x01\x11\x70";
	/* 5 + 65531 == 65536 and 5 + 65532 == 65537 */
	static const uint8_t	 at_max[] = "\x30\x83\x00\xff\xfb\x02\x01\x07\x63\x83\x00\xff\xf3";
	static const uint8_t	 over_max[] = "\x30\x83\x00\xff\xfc";
	struct ldap_peek	 pk, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	pk = sentinel;
	for (size_t n = 6; n <= FIXLEN(long4); n++)
		assert_int_equal(peek(long4, n, LDAP_MSG_MAX_PRE_TLS, &pk), PARSE_TOO_LONG);
	assert_int_equal(peek(long3, FIXLEN(long3), LDAP_MSG_MAX_PRE_TLS, &pk), PARSE_TOO_LONG);
	assert_int_equal(peek(over_max, FIXLEN(over_max), 65536, &pk), PARSE_TOO_LONG);
	assert_int_equal(peek(ldap3_bind, FIXLEN(ldap3_bind), FIXLEN(ldap3_bind) - 1, &pk),
	    PARSE_TOO_LONG);
	assert_memory_equal(&pk, &sentinel, sizeof(pk));

	/* exactly max: fine, the rest of the header is needed */
	assert_int_equal(peek(at_max, 5, 65536, &pk), PARSE_NEED_MORE);
	assert_int_equal(peek(at_max, FIXLEN(at_max), 65536, &pk), PARSE_OK);
	assert_int_equal(pk.total, 65536);
	assert_int_equal(pk.msgid, 7);
	assert_int_equal(pk.op, LDAP_OP_SEARCH_REQUEST);
	assert_int_equal(peek(ldap3_bind, FIXLEN(ldap3_bind), FIXLEN(ldap3_bind), &pk), PARSE_OK);

	/* after TLS the limit is four length octets */
	assert_int_equal(peek(long4, FIXLEN(long4), LDAP_MSG_MAX, &pk), PARSE_OK);
	assert_int_equal(pk.total, 70006);
	assert_int_equal(pk.msgid, 1);
	assert_int_equal(pk.op, LDAP_OP_SEARCH_REQUEST);
}

/* Not an LDAPMessage: MALFORMED, and *out is not written. */
static void
test_peek_malformed(void **state)
{
	static const struct {
		const char	*why;
		const char	*bytes;
		size_t		 n;
	} cases[] = {
		{ "SET, not SEQUENCE", "\x31\x05\x02\x01\x01\x42\x00", 7 },
		{ "OCTET STRING, not SEQUENCE", "\x04\x05\x02\x01\x01\x42\x00", 7 },
		{ "a bare BindRequest", "\x60\x07\x02\x01\x03\x04\x00\x80\x00", 9 },
		{ "TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11 },
		{ "HTTP", "GET / HTTP/1.1\r\n", 16 },
		{ "indefinite length", "\x30\x80\x02\x01\x01\x42\x00\x00\x00", 9 },
		{ "messageID OCTET STRING", "\x30\x05\x04\x01\x01\x42\x00", 7 },
		{ "messageID ENUMERATED", "\x30\x05\x0a\x01\x01\x42\x00", 7 },
		{ "messageID constructed", "\x30\x07\x22\x03\x02\x01\x01\x42\x00", 9 },
		{ "messageID -1", "\x30\x05\x02\x01\xff\x42\x00", 7 },
		{ "messageID -128", "\x30\x05\x02\x01\x80\x42\x00", 7 },
		{ "messageID -2^31", "\x30\x08\x02\x04\x80\x00\x00\x00\x42\x00", 10 },
		{ "messageID of 5 octets", "\x30\x09\x02\x05\x00\x80\x00\x00\x00\x42\x00", 11 },
		{ "messageID of 5 octets, small", "\x30\x09\x02\x05\x00\x00\x00\x00\x01\x42\x00", 11 },
		{ "messageID of 0 octets", "\x30\x04\x02\x00\x42\x00", 6 },
		{ "messageID past the SEQUENCE", "\x30\x03\x02\x04\x00\x00\x00\x01\x42\x00", 10 },
		{ "protocolOp UNIVERSAL", "\x30\x05\x02\x01\x01\x04\x00", 7 },
		{ "protocolOp SEQUENCE", "\x30\x05\x02\x01\x01\x30\x00", 7 },
		{ "protocolOp context [0]", "\x30\x05\x02\x01\x01\x80\x00", 7 },
		{ "protocolOp context [3] constructed", "\x30\x05\x02\x01\x01\xa3\x00", 7 },
		{ "protocolOp PRIVATE", "\x30\x05\x02\x01\x01\xc2\x00", 7 },
		{ "protocolOp multi-octet tag", "\x30\x06\x02\x01\x01\x7f\x22\x00", 8 },
		{ "protocolOp longer than the message", "\x30\x05\x02\x01\x01\x42\x01\x00", 8 },
		{ "protocolOp much longer", "\x30\x0c\x02\x01\x01\x60\x82\x01\x00\x02\x01\x03\x04\x00", 14 },
		{ "protocolOp indefinite", "\x30\x0c\x02\x01\x01\x60\x80\x02\x01\x03\x04\x00\x00\x00", 14 },
	};
	struct ldap_peek	 pk, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum parse_result r;

		pk = sentinel;
		r = peek(cases[i].bytes, cases[i].n, LDAP_MSG_MAX_PRE_TLS, &pk);
		if (r != PARSE_MALFORMED)
			fail_msg("%s: %d, not MALFORMED", cases[i].why, r);
		assert_memory_equal(&pk, &sentinel, sizeof(pk));
	}
}

/* The responses that end an operation, and only those. */
static void
test_op_is_final_response(void **state)
{
	for (int op = 0; op <= 31; op++) {
		bool want = op == LDAP_OP_BIND_RESPONSE || op == LDAP_OP_SEARCH_DONE ||
		    op == LDAP_OP_MODIFY_RESPONSE || op == LDAP_OP_ADD_RESPONSE ||
		    op == LDAP_OP_DEL_RESPONSE || op == LDAP_OP_MODDN_RESPONSE ||
		    op == LDAP_OP_COMPARE_RESPONSE || op == LDAP_OP_EXTENDED_RESPONSE;

		if (ldap_op_is_final_response((enum ldap_op)op) != want)
			fail_msg("op %d: want %d", op, want);
	}
	/* spelled out */
	assert_true(ldap_op_is_final_response(LDAP_OP_BIND_RESPONSE));
	assert_true(ldap_op_is_final_response(LDAP_OP_SEARCH_DONE));
	assert_true(ldap_op_is_final_response(LDAP_OP_EXTENDED_RESPONSE));
	assert_false(ldap_op_is_final_response(LDAP_OP_SEARCH_ENTRY));
	assert_false(ldap_op_is_final_response(LDAP_OP_SEARCH_REFERENCE));
	assert_false(ldap_op_is_final_response(LDAP_OP_INTERMEDIATE));
	assert_false(ldap_op_is_final_response(LDAP_OP_BIND_REQUEST));
	assert_false(ldap_op_is_final_response(LDAP_OP_UNBIND_REQUEST));
	assert_false(ldap_op_is_final_response(LDAP_OP_ABANDON_REQUEST));
}

/* Each request's response; -1 for Unbind, Abandon and the non-requests. */
static void
test_response_for(void **state)
{
	int	 want[32];

	for (int op = 0; op <= 31; op++)
		want[op] = -1;
	want[LDAP_OP_BIND_REQUEST] = LDAP_OP_BIND_RESPONSE;
	want[LDAP_OP_SEARCH_REQUEST] = LDAP_OP_SEARCH_DONE;
	want[LDAP_OP_MODIFY_REQUEST] = LDAP_OP_MODIFY_RESPONSE;
	want[LDAP_OP_ADD_REQUEST] = LDAP_OP_ADD_RESPONSE;
	want[LDAP_OP_DEL_REQUEST] = LDAP_OP_DEL_RESPONSE;
	want[LDAP_OP_MODDN_REQUEST] = LDAP_OP_MODDN_RESPONSE;
	want[LDAP_OP_COMPARE_REQUEST] = LDAP_OP_COMPARE_RESPONSE;
	want[LDAP_OP_EXTENDED_REQUEST] = LDAP_OP_EXTENDED_RESPONSE;

	for (int op = 0; op <= 31; op++)
		if (ldap_response_for((enum ldap_op)op) != want[op])
			fail_msg("op %d: %d, want %d", op,
			    ldap_response_for((enum ldap_op)op), want[op]);
	assert_int_equal(ldap_response_for(LDAP_OP_UNBIND_REQUEST), -1);
	assert_int_equal(ldap_response_for(LDAP_OP_ABANDON_REQUEST), -1);
	assert_int_equal(ldap_response_for(LDAP_OP_BIND_RESPONSE), -1);
	assert_int_equal(ldap_response_for(LDAP_OP_INTERMEDIATE), -1);
}

/* The messageID an AbandonRequest names, or -1, from the message's first bytes. */
static void
test_abandon_target(void **state)
{
	static const struct {
		const char	*why;
		const char	*bytes;
		size_t		 n;
		int32_t		 want;
	} cases[] = {
		{ "with a control", "\x30\x23\x02\x01\x05\x50\x01\x03"
		    "\xa0\x1b\x30\x19\x04\x17" "2.16.840.1.113730.3.4.2", 37, 3 },
		{ "largest target", "\x30\x09\x02\x01\x05\x50\x04\x7f\xff\xff\xff", 11, 2147483647 },
		{ "target 0", "\x30\x06\x02\x01\x05\x50\x01\x00", 8, 0 },
		{ "negative target", "\x30\x06\x02\x01\x05\x50\x01\xff", 8, -1 },
		{ "empty target", "\x30\x05\x02\x01\x05\x50\x00", 7, -1 },
		{ "target of 5 octets", "\x30\x0a\x02\x01\x05\x50\x05\x00\x00\x00\x00\x03", 12, -1 },
		{ "target 00 03, as liblber reads it", "\x30\x07\x02\x01\x05\x50\x02\x00\x03", 9, 3 },
		{ "every length 0x84", "\x30\x84\x00\x00\x00\x0e\x02\x84\x00\x00\x00\x01\x05"
		    "\x50\x84\x00\x00\x00\x01\x03", 20, 3 },
		{ "4 GiB of controls announced, none here",
		    "\x30\x84\xff\xff\xff\xf0\x02\x01\x05\x50\x01\x03\xa0\x84", 14, 3 },
		{ "constructed tag", "\x30\x08\x02\x01\x05\x70\x03\x02\x01\x03", 10, -1 },
		{ "op past the message", "\x30\x06\x02\x01\x05\x50\x02\x03", 8, -1 },
		{ "empty", "", 0, -1 },
		{ "one byte", "\x30", 1, -1 },
		{ "HTTP", "GET / HTTP/1.1\r\n\r\n", 18, -1 },
	};
	uint8_t		*q;

	assert_int_equal(ldap_abandon_target(ldap3_abandon, FIXLEN(ldap3_abandon)), 3);

	/* not an AbandonRequest */
	assert_int_equal(ldap_abandon_target(ldap3_unbind, FIXLEN(ldap3_unbind)), -1);
	assert_int_equal(ldap_abandon_target(ldap3_bind, FIXLEN(ldap3_bind)), -1);
	assert_int_equal(ldap_abandon_target(ldapsearch_starttls, FIXLEN(ldapsearch_starttls)), -1);

	/* up to the target: -1; what follows it need not be here, nor matter */
	for (size_t n = 0; n < FIXLEN(ldap3_abandon); n++) {
		q = exact(ldap3_abandon, n);
		assert_int_equal(ldap_abandon_target(q, n), -1);
		free(q);
	}
	q = exact("\x30\x06\x02\x01\x05\x50\x01\x03\x30", 9);
	assert_int_equal(ldap_abandon_target(q, 9), 3);
	free(q);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int32_t	 got;

		q = exact(cases[i].bytes, cases[i].n);
		got = ldap_abandon_target(q, cases[i].n);
		free(q);
		if (got != cases[i].want)
			fail_msg("%s: %d, want %d", cases[i].why, (int)got, (int)cases[i].want);
	}
}

/*
 * Only an LDAPMessage is an AbandonRequest: the envelope must be a
 * SEQUENCE and the messageID an INTEGER.
 */
static void
test_abandon_target_envelope(void **state)
{
	static const struct {
		const char	*why;
		const char	*bytes;
		size_t		 n;
	} cases[] = {
		{ "SET, not SEQUENCE", "\x31\x06\x02\x01\x05\x50\x01\x03", 8 },
		{ "[APPLICATION 16] envelope", "\x70\x06\x02\x01\x05\x50\x01\x03", 8 },
		{ "messageID OCTET STRING", "\x30\x06\x04\x01\x05\x50\x01\x03", 8 },
	};
	uint8_t		*q;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int32_t	 got;

		q = exact(cases[i].bytes, cases[i].n);
		got = ldap_abandon_target(q, cases[i].n);
		free(q);
		if (got != -1)
			fail_msg("%s: %d, want -1", cases[i].why, (int)got);
	}
}

/* ldap_starttls_check on p[0..n) copied to an exact buffer. */
static enum ldap_starttls
starttls(const void *p, size_t n)
{
	uint8_t			*q = exact(p, n);
	enum ldap_starttls	 r = ldap_starttls_check(q, n);

	free(q);
	return r;
}

/* What ldapsearch -ZZ sends is a valid StartTLS request. */
static void
test_starttls_real(void **state)
{
	assert_int_equal(starttls(ldapsearch_starttls, FIXLEN(ldapsearch_starttls)),
	    LDAP_STARTTLS_VALID);
}

/* A requestValue, or anything else after the requestName, is MALFORMED. */
static void
test_starttls_request_value(void **state)
{
	static const uint8_t	 with_value[] =
		"\x30\x1f\x02\x01\x01\x77\x1a\x80\x16" "1.3.6.1.4.1.1466.20037" "\x81\x00";
	static const uint8_t	 with_value2[] =
		"\x30\x22\x02\x01\x01\x77\x1d\x80\x16" "1.3.6.1.4.1.1466.20037" "\x81\x03" "abc";
	static const uint8_t	 with_junk[] =
		"\x30\x1f\x02\x01\x01\x77\x1a\x80\x16" "1.3.6.1.4.1.1466.20037" "\x00\x00";

	assert_int_equal(starttls(with_value, FIXLEN(with_value)), LDAP_STARTTLS_MALFORMED);
	assert_int_equal(starttls(with_value2, FIXLEN(with_value2)), LDAP_STARTTLS_MALFORMED);
	assert_int_equal(starttls(with_junk, FIXLEN(with_junk)), LDAP_STARTTLS_MALFORMED);
}

/* Controls after the protocolOp are allowed. */
static void
test_starttls_controls(void **state)
{
	/* the ManageDsaIT control (RFC 3296), as ldapsearch -M sends it */
	static const uint8_t	 with_control[] =
		"\x30\x3a\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037"
		"\xa0\x1b\x30\x19\x04\x17" "2.16.840.1.113730.3.4.2";

	assert_int_equal(starttls(with_control, FIXLEN(with_control)), LDAP_STARTTLS_VALID);
}

/* Other extended requests, other operations and garbage are NOT StartTLS. */
static void
test_starttls_not(void **state)
{
	static const uint8_t	 short_oid[] =
		"\x30\x1c\x02\x01\x01\x77\x17\x80\x15" "1.3.6.1.4.1.1466.2003";
	static const uint8_t	 long_oid[] =
		"\x30\x1e\x02\x01\x01\x77\x19\x80\x17" "1.3.6.1.4.1.1466.200370";
	static const uint8_t	 notice_oid[] =
		"\x30\x1d\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20036";
	static const uint8_t	 as_response[] =
		"\x30\x1d\x02\x01\x01\x78\x18\x8a\x16" "1.3.6.1.4.1.1466.20037";

	assert_int_equal(starttls(ldapwhoami_whoami, FIXLEN(ldapwhoami_whoami)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(ldap3_bind, FIXLEN(ldap3_bind)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(ldapwhoami_bind, FIXLEN(ldapwhoami_bind)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(ldap3_search, FIXLEN(ldap3_search)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(ldap3_unbind, FIXLEN(ldap3_unbind)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(ldap3_abandon, FIXLEN(ldap3_abandon)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(slapd_starttls_refused, FIXLEN(slapd_starttls_refused)),
	    LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(short_oid, FIXLEN(short_oid)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(long_oid, FIXLEN(long_oid)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(notice_oid, FIXLEN(notice_oid)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(as_response, FIXLEN(as_response)), LDAP_NOT_STARTTLS);
}

/* A truncated StartTLS, one with bytes after it, and garbage: NOT. */
static void
test_starttls_truncated(void **state)
{
	static const uint8_t	 trailing[] =
		"\x30\x1d\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037" "\x30";
	/* the op says it is longer than the message */
	static const uint8_t	 op_too_long[] =
		"\x30\x1d\x02\x01\x01\x77\x19\x80\x16" "1.3.6.1.4.1.1466.20037";
	/* the requestName says it is longer than the op */
	static const uint8_t	 name_too_long[] =
		"\x30\x1d\x02\x01\x01\x77\x18\x80\x17" "1.3.6.1.4.1.1466.20037";

	for (size_t n = 0; n < FIXLEN(ldapsearch_starttls); n++)
		if (starttls(ldapsearch_starttls, n) != LDAP_NOT_STARTTLS)
			fail_msg("%zu bytes of %zu: not LDAP_NOT_STARTTLS", n,
			    FIXLEN(ldapsearch_starttls));
	assert_int_equal(starttls(trailing, FIXLEN(trailing)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(op_too_long, FIXLEN(op_too_long)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(name_too_long, FIXLEN(name_too_long)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10),
	    LDAP_NOT_STARTTLS);
	assert_int_equal(starttls("STARTTLS\r\n", 10), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls("\x30\x80\x02\x01\x01\x77\x80\x80\x16"
	    "1.3.6.1.4.1.1466.20037" "\x00\x00\x00\x00", 35), LDAP_NOT_STARTTLS);
}

/*
 * Only an LDAPMessage is a StartTLS request: the envelope must be a
 * SEQUENCE and the messageID an INTEGER.
 */
static void
test_starttls_envelope(void **state)
{
	static const uint8_t	 set[] =
		"\x31\x1d\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037";
	static const uint8_t	 id_octets[] =
		"\x30\x1d\x04\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037";

	assert_int_equal(starttls(set, FIXLEN(set)), LDAP_NOT_STARTTLS);
	assert_int_equal(starttls(id_octets, FIXLEN(id_octets)), LDAP_NOT_STARTTLS);
}

/*
 * The longest envelope there can be, every length with 126 octets: it
 * fits in LDAP_PEEK_MAX, and ldap_peek needs all of it.
 */
static void
test_peek_longest_envelope(void **state)
{
	uint8_t			 m[400];
	struct ldap_peek	 pk;
	size_t			 n = 0;

	memset(m, 0, sizeof(m));
	m[n++] = 0x30;				/* content: 132 + 128 + 2 */
	m[n++] = 0xfe;
	n += 124;
	m[n++] = 0x01;
	m[n++] = 0x06;
	m[n++] = 0x02;				/* messageID 2^31 - 1 */
	m[n++] = 0xfe;
	n += 125;
	m[n++] = 0x04;
	memcpy(m + n, "\x7f\xff\xff\xff", 4);
	n += 4;
	m[n++] = 0x63;				/* a SearchRequest of 2 octets */
	m[n++] = 0xfe;
	n += 125;
	m[n++] = 0x02;
	assert_int_equal(n, 388);
	assert_true(n <= LDAP_PEEK_MAX);
	m[n++] = 0x04;
	m[n++] = 0x00;
	for (size_t k = 0; k < 388; k++)
		assert_int_equal(peek(m, k, LDAP_MSG_MAX, &pk), PARSE_NEED_MORE);
	assert_int_equal(peek(m, 388, LDAP_MSG_MAX, &pk), PARSE_OK);
	assert_int_equal(pk.total, n);
	assert_int_equal(pk.msgid, INT32_MAX);
	assert_int_equal(pk.op, LDAP_OP_SEARCH_REQUEST);
	assert_int_equal(pk.op_off, 388);
	assert_int_equal(pk.op_len, 2);
}

/* ldap_extended_kind on p[0..n) copied to an exact buffer. */
static enum ldap_extended
ext_kind(const void *p, size_t n)
{
	uint8_t			*q = exact(p, n);
	enum ldap_extended	 r = ldap_extended_kind(q, n);

	free(q);
	return r;
}

#define OIDS	"1.3.6.1.4.1.1466.20037"

/*
 * Encodings of a StartTLS that liblber (and so slapd) takes as one, and
 * what ldap_extended_kind and ldap_starttls_check say of each.  slapd
 * reads the first element after the ExtendedRequest's header as the
 * requestName, whatever its tag and whether or not it lies inside the
 * ExtendedRequest (tests/integration/test_ldap_encodings.py shows it).
 */
static const struct ext_case {
	const char		*why;
	const char		*bytes;
	size_t			 n;
	enum ldap_extended	 kind;
	enum ldap_starttls	 check;
} ext_cases[] = {
	{ "ldapsearch -ZZ", "\x30\x1d\x02\x01\x01\x77\x18\x80\x16" OIDS, 31,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "message length 0x81 0x1d", "\x30\x81\x1d\x02\x01\x01\x77\x18\x80\x16" OIDS, 32,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "message length 0x84", "\x30\x84\x00\x00\x00\x1d\x02\x01\x01\x77\x18\x80\x16" OIDS, 35,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "message length 0x85", "\x30\x85\x00\x00\x00\x00\x1d\x02\x01\x01\x77\x18\x80\x16" OIDS,
	    36, LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "messageID length 0x88", "\x30\x25\x02\x88\x00\x00\x00\x00\x00\x00\x00\x01\x01"
	    "\x77\x18\x80\x16" OIDS, 39, LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "messageID 00 01", "\x30\x1e\x02\x02\x00\x01\x77\x18\x80\x16" OIDS, 32,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "messageID 00 80", "\x30\x1e\x02\x02\x00\x80\x77\x18\x80\x16" OIDS, 32,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "op length 0x82", "\x30\x1f\x02\x01\x01\x77\x82\x00\x18\x80\x16" OIDS, 33,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "OID length 0x81", "\x30\x1e\x02\x01\x01\x77\x19\x80\x81\x16" OIDS, 32,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "OID length 0x88", "\x30\x25\x02\x01\x01\x77\x20\x80\x88\x00\x00\x00\x00\x00\x00\x00\x16"
	    OIDS, 39, LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "a control", "\x30\x3a\x02\x01\x01\x77\x18\x80\x16" OIDS
	    "\xa0\x1b\x30\x19\x04\x17" "2.16.840.1.113730.3.4.2", 60,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_VALID },
	{ "a critical control", "\x30\x3d\x02\x01\x01\x77\x18\x80\x16" OIDS
	    "\xa0\x1e\x30\x1c\x04\x17" "2.16.840.1.113730.3.4.2" "\x01\x01\xff", 63,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_CRITICAL },
	/* what slapd takes, but no valid StartTLS: refused by the proxy */
	{ "name as OCTET STRING", "\x30\x1d\x02\x01\x01\x77\x18\x04\x16" OIDS, 31,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "name [APPLICATION 0]", "\x30\x1d\x02\x01\x01\x77\x18\x40\x16" OIDS, 31,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "name PRIVATE", "\x30\x1d\x02\x01\x01\x77\x18\xc0\x16" OIDS, 31,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "name tag 9f 00", "\x30\x1e\x02\x01\x01\x77\x19\x9f\x00\x16" OIDS, 32,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "name tag of 8 octets", "\x30\x24\x02\x01\x01\x77\x1f"
	    "\x9f\x81\x81\x81\x81\x81\x81\x00\x16" OIDS, 38,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "junk after the name", "\x30\x1f\x02\x01\x01\x77\x1a\x80\x16" OIDS "\x04\x00", 33,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "a requestValue", "\x30\x1f\x02\x01\x01\x77\x1a\x80\x16" OIDS "\x81\x00", 33,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "primitive op 0x57", "\x30\x1d\x02\x01\x01\x57\x18\x80\x16" OIDS, 31,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "OID and a NUL", "\x30\x1e\x02\x01\x01\x77\x19\x80\x17" OIDS "\x00", 32,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "OID, NUL and more", "\x30\x20\x02\x01\x01\x77\x1b\x80\x19" OIDS "\x00xy", 34,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "messageID 0", "\x30\x1d\x02\x01\x00\x77\x18\x80\x16" OIDS, 31,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "something after the op", "\x30\x1f\x02\x01\x01\x77\x18\x80\x16" OIDS "\x04\x00", 33,
	    LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	{ "controls, then more", "\x30\x21\x02\x01\x01\x77\x18\x80\x16" OIDS
	    "\xa0\x00\x04\x00", 35, LDAP_EXT_STARTTLS, LDAP_STARTTLS_MALFORMED },
	/* no requestName a strict reader finds: it cannot be relayed either */
	{ "name constructed", "\x30\x1d\x02\x01\x01\x77\x18\xa0\x16" OIDS, 31,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	{ "empty op, the name after it", "\x30\x1d\x02\x01\x01\x77\x00\x80\x16" OIDS, 31,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	{ "op shorter than the name", "\x30\x1d\x02\x01\x01\x77\x02\x80\x16" OIDS, 31,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	{ "name of indefinite length", "\x30\x1f\x02\x01\x01\x77\x1a\x80\x80" OIDS "\x00\x00", 33,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	{ "name length 0xff", "\x30\x1d\x02\x01\x01\x77\x18\x80\xff" OIDS, 31,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	{ "name tag of 9 octets", "\x30\x25\x02\x01\x01\x77\x20"
	    "\x9f\x81\x81\x81\x81\x81\x81\x81\x00\x16" OIDS, 39,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	{ "name header cut by the op", "\x30\x07\x02\x01\x01\x77\x02\x9f\x81", 9,
	    LDAP_EXT_UNREADABLE, LDAP_NOT_STARTTLS },
	/* other extended requests, and other operations */
	{ "WhoAmI", "\x30\x1e\x02\x01\x02\x77\x19\x80\x17" "1.3.6.1.4.1.4203.1.11.3", 32,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "WhoAmI named as OCTET STRING", "\x30\x1e\x02\x01\x02\x77\x19\x04\x17"
	    "1.3.6.1.4.1.4203.1.11.3", 32, LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "an OID one short", "\x30\x1c\x02\x01\x01\x77\x17\x80\x15" "1.3.6.1.4.1.1466.2003", 30,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "an OID one longer", "\x30\x1e\x02\x01\x01\x77\x19\x80\x17" OIDS "0", 32,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "the Notice OID", "\x30\x1d\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20036", 31,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "an ExtendedResponse", "\x30\x1d\x02\x01\x01\x78\x18\x8a\x16" OIDS, 31,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "a BindRequest", "\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00", 14,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
	{ "empty name", "\x30\x07\x02\x01\x01\x77\x02\x80\x00", 9,
	    LDAP_EXT_NOT_STARTTLS, LDAP_NOT_STARTTLS },
};

/*
 * ldap_extended_kind: NEED_MORE on every prefix shorter than the message
 * (all these are under LDAP_CLASSIFY_MAX), then the kind; and
 * ldap_starttls_check on the whole message.
 */
static void
test_extended_kind(void **state)
{
	for (size_t i = 0; i < sizeof(ext_cases) / sizeof(ext_cases[0]); i++) {
		const struct ext_case *c = &ext_cases[i];
		enum ldap_extended k;
		enum ldap_starttls t;
		struct ldap_peek pk;

		if (peek(c->bytes, c->n, LDAP_MSG_MAX, &pk) != PARSE_OK || pk.total != c->n)
			fail_msg("%s: not one whole message", c->why);
		for (size_t n = 0; n < c->n; n++)
			if ((k = ext_kind(c->bytes, n)) != LDAP_EXT_NEED_MORE &&
			    !(c->kind == LDAP_EXT_NOT_STARTTLS && k == LDAP_EXT_NOT_STARTTLS &&
			    pk.op != LDAP_OP_EXTENDED_REQUEST))
				fail_msg("%s, %zu bytes: %d, not NEED_MORE", c->why, n, k);
		if ((k = ext_kind(c->bytes, c->n)) != c->kind)
			fail_msg("%s: kind %d, want %d", c->why, k, c->kind);
		if ((t = starttls(c->bytes, c->n)) != c->check)
			fail_msg("%s: check %d, want %d", c->why, t, c->check);
	}
}

/*
 * The classification is bounded: a StartTLS announcing 4 GiB is told from
 * its first LDAP_CLASSIFY_MAX bytes, and so is the worst case, every
 * length in 126 octets and an 8-octet tag on the name.
 */
static void
test_extended_kind_bounded(void **state)
{
	static const uint8_t	 huge_starttls[] = "\x30\x84\xff\xff\xff\xf0\x02\x01\x02"
	    "\x77\x18\x80\x16" OIDS "\xa0\x84\xff\xff\xff\xcb";
	static const uint8_t	 huge_whoami[] = "\x30\x84\xff\xff\xff\xf0\x02\x01\x02"
	    "\x77\x19\x80\x17" "1.3.6.1.4.1.4203.1.11.3" "\xa0\x84\xff\xff\xff\xca";
	uint8_t			 m[LDAP_CLASSIFY_MAX];
	size_t			 n = 0;

	memset(m, 'x', sizeof(m));
	memcpy(m, huge_starttls, FIXLEN(huge_starttls));
	for (size_t k = 0; k < LDAP_CLASSIFY_MAX; k++)
		assert_int_equal(ext_kind(m, k), LDAP_EXT_NEED_MORE);
	assert_int_equal(ext_kind(m, LDAP_CLASSIFY_MAX), LDAP_EXT_STARTTLS);
	memcpy(m, huge_whoami, FIXLEN(huge_whoami));
	assert_int_equal(ext_kind(m, LDAP_CLASSIFY_MAX - 1), LDAP_EXT_NEED_MORE);
	assert_int_equal(ext_kind(m, LDAP_CLASSIFY_MAX), LDAP_EXT_NOT_STARTTLS);

	/* the worst case: 388 octets of envelope, 135 of name header, 23 */
	memset(m, 0, sizeof(m));
	m[n++] = 0x30;
	m[n++] = 0xfe;
	n += 124;
	m[n++] = 0x01;				/* 418 = 132 + 128 + 158 */
	m[n++] = 0xa2;
	m[n++] = 0x02;
	m[n++] = 0xfe;
	n += 125;
	m[n++] = 0x04;
	memcpy(m + n, "\x7f\xff\xff\xff", 4);
	n += 4;
	m[n++] = 0x77;
	m[n++] = 0xfe;
	n += 125;
	m[n++] = 158;				/* 8 + 127 + 23 */
	memcpy(m + n, "\x9f\x81\x81\x81\x81\x81\x81\x00", 8);
	n += 8;
	m[n++] = 0xfe;
	n += 125;
	m[n++] = 23;
	memcpy(m + n, OIDS, 22);
	n += 23;
	assert_int_equal(n, 546);
	for (size_t k = 0; k < n; k++)
		assert_int_equal(ext_kind(m, k), LDAP_EXT_NEED_MORE);
	assert_int_equal(ext_kind(m, n), LDAP_EXT_STARTTLS);
	assert_int_equal(starttls(m, n), LDAP_STARTTLS_MALFORMED);	/* the name's tag */
	m[n - 1] = 'x';
	assert_int_equal(ext_kind(m, n), LDAP_EXT_NOT_STARTTLS);
}

/* Controls after a StartTLS (RFC 4511 4.1.11): well-formed, critical or not. */
static void
test_starttls_control_forms(void **state)
{
	static const struct {
		const char		*why;
		const char		*controls;	/* the content of [0] */
		size_t			 n;
		enum ldap_starttls	 want;
	} cases[] = {
		{ "none", "", 0, LDAP_STARTTLS_VALID },
		{ "a type", "\x30\x05\x04\x03" "1.2", 7, LDAP_STARTTLS_VALID },
		{ "criticality FALSE", "\x30\x08\x04\x03" "1.2" "\x01\x01\x00", 10, LDAP_STARTTLS_VALID },
		{ "a value", "\x30\x09\x04\x03" "1.2" "\x04\x02" "ab", 11, LDAP_STARTTLS_VALID },
		{ "FALSE and a value", "\x30\x0c\x04\x03" "1.2" "\x01\x01\x00\x04\x02" "ab", 14,
		    LDAP_STARTTLS_VALID },
		{ "two", "\x30\x05\x04\x03" "1.2" "\x30\x05\x04\x03" "1.3", 14, LDAP_STARTTLS_VALID },
		{ "long forms", "\x30\x81\x06\x04\x81\x03" "1.2", 9, LDAP_STARTTLS_VALID },
		{ "TRUE", "\x30\x08\x04\x03" "1.2" "\x01\x01\xff", 10, LDAP_STARTTLS_CRITICAL },
		{ "TRUE as 01", "\x30\x08\x04\x03" "1.2" "\x01\x01\x01", 10, LDAP_STARTTLS_CRITICAL },
		{ "the second TRUE", "\x30\x05\x04\x03" "1.2" "\x30\x08\x04\x03" "1.3" "\x01\x01\xff",
		    17, LDAP_STARTTLS_CRITICAL },
		{ "not a SEQUENCE", "\x31\x05\x04\x03" "1.2", 7, LDAP_STARTTLS_MALFORMED },
		{ "no type", "\x30\x00", 2, LDAP_STARTTLS_MALFORMED },
		{ "type not OCTET STRING", "\x30\x05\x06\x03" "1.2", 7, LDAP_STARTTLS_MALFORMED },
		{ "BOOLEAN of 2 octets", "\x30\x09\x04\x03" "1.2" "\x01\x02\x00\xff", 11,
		    LDAP_STARTTLS_MALFORMED },
		{ "BOOLEAN empty", "\x30\x07\x04\x03" "1.2" "\x01\x00", 9, LDAP_STARTTLS_MALFORMED },
		{ "value then BOOLEAN", "\x30\x0c\x04\x03" "1.2" "\x04\x02" "ab" "\x01\x01\xff", 14,
		    LDAP_STARTTLS_MALFORMED },
		{ "value not OCTET STRING", "\x30\x09\x04\x03" "1.2" "\x02\x02" "ab", 11,
		    LDAP_STARTTLS_MALFORMED },
		{ "two values", "\x30\x0d\x04\x03" "1.2" "\x04\x02" "ab" "\x04\x02" "cd", 15,
		    LDAP_STARTTLS_MALFORMED },
		{ "a control past the end", "\x30\x06\x04\x03" "1.2", 7, LDAP_STARTTLS_MALFORMED },
		{ "type past the control", "\x30\x05\x04\x04" "1.2", 7, LDAP_STARTTLS_MALFORMED },
		{ "trailing byte", "\x30\x05\x04\x03" "1.2" "\x00", 8, LDAP_STARTTLS_MALFORMED },
	};
	uint8_t		 m[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t			 n = 0;
		enum ldap_starttls	 got;

		m[n++] = 0x30;
		m[n++] = (uint8_t)(3 + 26 + 2 + cases[i].n);
		memcpy(m + n, "\x02\x01\x01\x77\x18\x80\x16" OIDS, 29);
		n += 29;
		m[n++] = 0xa0;
		m[n++] = (uint8_t)cases[i].n;
		memcpy(m + n, cases[i].controls, cases[i].n);
		n += cases[i].n;
		if ((got = starttls(m, n)) != cases[i].want)
			fail_msg("%s: %d, want %d", cases[i].why, got, cases[i].want);
	}
}

/*
 * Build a response into a buffer with a canary after it, compare with
 * want[0..wantlen), and parse it back with ldap_peek.
 */
static void
check_built(ssize_t n, const uint8_t *buf, const void *want, size_t wantlen,
    int32_t msgid, enum ldap_op op)
{
	struct ldap_peek	 pk;

	if (n != (ssize_t)wantlen)
		fail_msg("built %zd bytes, want %zu", n, wantlen);
	if (memcmp(buf, want, wantlen) != 0) {
		for (size_t i = 0; i < wantlen; i++)
			if (buf[i] != ((const uint8_t *)want)[i])
				fail_msg("byte %zu: %#04x, want %#04x", i, buf[i],
				    ((const uint8_t *)want)[i]);
	}
	assert_int_equal(peek(buf, (size_t)n, LDAP_MSG_MAX_PRE_TLS, &pk), PARSE_OK);
	assert_int_equal(pk.total, (uint64_t)n);
	assert_int_equal(pk.msgid, msgid);
	assert_int_equal(pk.op, op);
	assert_int_equal(pk.op_tag, 0x60 | op);
}

/*
 * The StartTLS success response (RFC 4511 section 4.14.2), by hand:
 * LDAPMessage { messageID 1, [APPLICATION 24] { resultCode success,
 * matchedDN "", diagnosticMessage "", responseName [10] the OID } }.
 */
static void
test_build_starttls_success(void **state)
{
	static const uint8_t	 want[] =
		"\x30\x24"
		"\x02\x01\x01"
		"\x78\x1f"
		"\x0a\x01\x00"
		"\x04\x00"
		"\x04\x00"
		"\x8a\x16" "1.3.6.1.4.1.1466.20037";
	/* without responseName: the shape of slapd's own responses */
	static const uint8_t	 want_noname[] =
		"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00";
	uint8_t			 buf[LDAP_RESPONSE_MAX];
	ssize_t			 n;

	assert_int_equal(FIXLEN(want), 38);
	n = ldap_build_result(1, LDAP_OP_EXTENDED_RESPONSE, LDAP_SUCCESS, "",
	    LDAP_STARTTLS_OID, buf, sizeof(buf));
	check_built(n, buf, want, FIXLEN(want), 1, LDAP_OP_EXTENDED_RESPONSE);

	n = ldap_build_result(1, LDAP_OP_EXTENDED_RESPONSE, LDAP_SUCCESS, "",
	    NULL, buf, sizeof(buf));
	check_built(n, buf, want_noname, FIXLEN(want_noname), 1, LDAP_OP_EXTENDED_RESPONSE);
}

/* The builder writes exactly what slapd sends for the same results. */
static void
test_build_matches_slapd(void **state)
{
	uint8_t		 buf[LDAP_RESPONSE_MAX];
	ssize_t		 n;

	n = ldap_build_result(1, LDAP_OP_BIND_RESPONSE, LDAP_SUCCESS, "", NULL,
	    buf, sizeof(buf));
	check_built(n, buf, slapd_bind_ok, FIXLEN(slapd_bind_ok), 1, LDAP_OP_BIND_RESPONSE);

	n = ldap_build_result(2, LDAP_OP_SEARCH_DONE, LDAP_SUCCESS, "", NULL,
	    buf, sizeof(buf));
	check_built(n, buf, slapd_search_done, FIXLEN(slapd_search_done), 2,
	    LDAP_OP_SEARCH_DONE);

	n = ldap_build_result(1, LDAP_OP_EXTENDED_RESPONSE, LDAP_PROTOCOL_ERROR,
	    "unsupported extended operation", NULL, buf, sizeof(buf));
	check_built(n, buf, slapd_starttls_refused, FIXLEN(slapd_starttls_refused), 1,
	    LDAP_OP_EXTENDED_RESPONSE);
}

/* A BindResponse with confidentialityRequired (13) for messageID 2. */
static void
test_build_confidentiality_required(void **state)
{
	static const uint8_t	 want[] =
		"\x30\x18"
		"\x02\x01\x02"
		"\x61\x13"
		"\x0a\x01\x0d"
		"\x04\x00"
		"\x04\x0c" "TLS required";
	static const uint8_t	 want_empty[] =
		"\x30\x0c\x02\x01\x02\x61\x07\x0a\x01\x0d\x04\x00\x04\x00";
	uint8_t			 buf[LDAP_RESPONSE_MAX];
	ssize_t			 n;

	n = ldap_build_result(2, LDAP_OP_BIND_RESPONSE, LDAP_CONFIDENTIALITY_REQUIRED,
	    "TLS required", NULL, buf, sizeof(buf));
	check_built(n, buf, want, FIXLEN(want), 2, LDAP_OP_BIND_RESPONSE);

	n = ldap_build_result(2, LDAP_OP_BIND_RESPONSE, LDAP_CONFIDENTIALITY_REQUIRED,
	    "", NULL, buf, sizeof(buf));
	check_built(n, buf, want_empty, FIXLEN(want_empty), 2, LDAP_OP_BIND_RESPONSE);
}

/*
 * A Notice of Disconnection (RFC 4511 section 4.4.1): messageID 0, an
 * ExtendedResponse with responseName 1.3.6.1.4.1.1466.20036.
 */
static void
test_build_notice(void **state)
{
	static const uint8_t	 want[] =
		"\x30\x31"
		"\x02\x01\x00"
		"\x78\x2c"
		"\x0a\x01\x34"				/* unavailable (52) */
		"\x04\x00"
		"\x04\x0d" "shutting down"
		"\x8a\x16" "1.3.6.1.4.1.1466.20036";
	static const uint8_t	 want_empty[] =
		"\x30\x24\x02\x01\x00\x78\x1f\x0a\x01\x34\x04\x00\x04\x00"
		"\x8a\x16" "1.3.6.1.4.1.1466.20036";
	uint8_t			 buf[LDAP_RESPONSE_MAX];
	ssize_t			 n;

	n = ldap_build_notice(LDAP_UNAVAILABLE, "shutting down", buf, sizeof(buf));
	check_built(n, buf, want, FIXLEN(want), 0, LDAP_OP_EXTENDED_RESPONSE);

	n = ldap_build_notice(LDAP_UNAVAILABLE, "", buf, sizeof(buf));
	check_built(n, buf, want_empty, FIXLEN(want_empty), 0, LDAP_OP_EXTENDED_RESPONSE);
}

/* The resultCode of captured responses, and what is not a result. */
static void
test_result_code(void **state)
{
	enum ldap_op	 op;

	(void)state;
	assert_int_equal(ldap_result_code(slapd_bind_ok, FIXLEN(slapd_bind_ok), &op), 0);
	assert_int_equal(op, LDAP_OP_BIND_RESPONSE);
	assert_int_equal(ldap_result_code(slapd_search_done, FIXLEN(slapd_search_done), &op), 0);
	assert_int_equal(op, LDAP_OP_SEARCH_DONE);
	assert_true(ldap_result_code(slapd_starttls_refused, FIXLEN(slapd_starttls_refused), &op) > 0);
	assert_int_equal(op, LDAP_OP_EXTENDED_RESPONSE);
	/* a SearchResultEntry carries no LDAPResult; requests neither */
	assert_int_equal(ldap_result_code(slapd_search_entry, FIXLEN(slapd_search_entry), &op), -1);
	assert_int_equal(ldap_result_code(ldap3_unbind, FIXLEN(ldap3_unbind), &op), -1);
	/* truncated */
	assert_int_equal(ldap_result_code(slapd_bind_ok, FIXLEN(slapd_bind_ok) - 1, &op), -1);
}

/* messageIDs in the fewest octets of two's complement: 00 80 for 128. */
static void
test_build_msgids(void **state)
{
	static const struct {
		int32_t		 msgid;
		const char	*integer;	/* the INTEGER TLV */
		size_t		 len;
	} cases[] = {
		{ 0, "\x02\x01\x00", 3 },
		{ 1, "\x02\x01\x01", 3 },
		{ 127, "\x02\x01\x7f", 3 },
		{ 128, "\x02\x02\x00\x80", 4 },
		{ 255, "\x02\x02\x00\xff", 4 },
		{ 256, "\x02\x02\x01\x00", 4 },
		{ 32767, "\x02\x02\x7f\xff", 4 },
		{ 32768, "\x02\x03\x00\x80\x00", 5 },
		{ 8388607, "\x02\x03\x7f\xff\xff", 5 },
		{ 8388608, "\x02\x04\x00\x80\x00\x00", 6 },
		{ 16777216, "\x02\x04\x01\x00\x00\x00", 6 },
		{ 2147483647, "\x02\x04\x7f\xff\xff\xff", 6 },
	};
	static const uint8_t	 bind_result[] = "\x61\x07\x0a\x01\x00\x04\x00\x04\x00";
	uint8_t			 buf[LDAP_RESPONSE_MAX], want[32];
	ssize_t			 n;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t	 body = cases[i].len + FIXLEN(bind_result);

		want[0] = 0x30;
		want[1] = (uint8_t)body;
		memcpy(want + 2, cases[i].integer, cases[i].len);
		memcpy(want + 2 + cases[i].len, bind_result, FIXLEN(bind_result));
		n = ldap_build_result(cases[i].msgid, LDAP_OP_BIND_RESPONSE, LDAP_SUCCESS,
		    "", NULL, buf, sizeof(buf));
		check_built(n, buf, want, 2 + body, cases[i].msgid, LDAP_OP_BIND_RESPONSE);
	}

	/* a negative messageID cannot be written */
	assert_int_equal(ldap_build_result(-1, LDAP_OP_BIND_RESPONSE, LDAP_SUCCESS,
	    "", NULL, buf, sizeof(buf)), -1);
	assert_int_equal(ldap_build_result(INT32_MIN, LDAP_OP_BIND_RESPONSE, LDAP_SUCCESS,
	    "", NULL, buf, sizeof(buf)), -1);
}

/* Long diagnostics: long-form lengths, one and two octets. */
static void
test_build_long(void **state)
{
	char			 diag[257];
	uint8_t			 buf[LDAP_RESPONSE_MAX];
	static const uint8_t	 head200[] =
		"\x30\x81\xd6" "\x02\x01\x05" "\x61\x81\xd0"
		"\x0a\x01\x0d" "\x04\x00" "\x04\x81\xc8";
	static const uint8_t	 head255[] =
		"\x30\x82\x01\x26" "\x02\x01\x00" "\x78\x82\x01\x1f"
		"\x0a\x01\x33" "\x04\x00" "\x04\x81\xff";
	struct ldap_peek	 pk;
	ssize_t			 n;

	memset(diag, 'x', sizeof(diag));
	diag[200] = '\0';
	n = ldap_build_result(5, LDAP_OP_BIND_RESPONSE, LDAP_CONFIDENTIALITY_REQUIRED,
	    diag, NULL, buf, sizeof(buf));
	assert_int_equal(n, FIXLEN(head200) + 200);
	assert_memory_equal(buf, head200, FIXLEN(head200));
	assert_memory_equal(buf + FIXLEN(head200), diag, 200);
	assert_int_equal(peek(buf, (size_t)n, LDAP_MSG_MAX_PRE_TLS, &pk), PARSE_OK);
	assert_int_equal(pk.total, (uint64_t)n);
	assert_int_equal(pk.msgid, 5);

	/* the longest: 255 octets of diagnostic and a responseName */
	diag[200] = 'x';
	diag[255] = '\0';
	n = ldap_build_notice(LDAP_BUSY, diag, buf, sizeof(buf));
	assert_int_equal(n, 298);
	assert_true(n <= LDAP_RESPONSE_MAX);
	assert_memory_equal(buf, head255, FIXLEN(head255));
	assert_memory_equal(buf + FIXLEN(head255), diag, 255);
	assert_memory_equal(buf + FIXLEN(head255) + 255,
	    "\x8a\x16" "1.3.6.1.4.1.1466.20036", 24);
	assert_int_equal(peek(buf, (size_t)n, LDAP_MSG_MAX_PRE_TLS, &pk), PARSE_OK);
	assert_int_equal(pk.total, 298);
	assert_int_equal(pk.msgid, 0);
	assert_int_equal(pk.op, LDAP_OP_EXTENDED_RESPONSE);

	/* over 255: refused */
	diag[255] = 'x';
	diag[256] = '\0';
	assert_int_equal(ldap_build_notice(LDAP_BUSY, diag, buf, sizeof(buf)), -1);
}

/* An output buffer too small by even one byte: -1, nothing past it written. */
static void
test_build_too_small(void **state)
{
	uint8_t		 buf[64];
	ssize_t		 n;

	for (size_t outlen = 0; outlen < 38; outlen++) {
		memset(buf, 0xa5, sizeof(buf));
		n = ldap_build_result(1, LDAP_OP_EXTENDED_RESPONSE, LDAP_SUCCESS, "",
		    LDAP_STARTTLS_OID, buf, outlen);
		if (n != -1)
			fail_msg("outlen %zu: %zd, want -1", outlen, n);
		for (size_t i = outlen; i < sizeof(buf); i++)
			if (buf[i] != 0xa5)
				fail_msg("outlen %zu: byte %zu written", outlen, i);
	}
	assert_int_equal(ldap_build_result(1, LDAP_OP_EXTENDED_RESPONSE, LDAP_SUCCESS,
	    "", LDAP_STARTTLS_OID, buf, 38), 38);

	for (size_t outlen = 0; outlen < 51; outlen++)
		assert_int_equal(ldap_build_notice(LDAP_UNAVAILABLE, "shutting down",
		    buf, outlen), -1);
	assert_int_equal(ldap_build_notice(LDAP_UNAVAILABLE, "shutting down", buf, 51), 51);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tlv_short),
		cmocka_unit_test(test_tlv_long),
		cmocka_unit_test(test_tlv_need_more),
		cmocka_unit_test(test_tlv_malformed),
		cmocka_unit_test(test_peek_real),
		cmocka_unit_test(test_peek_truncated),
		cmocka_unit_test(test_peek_msgids),
		cmocka_unit_test(test_peek_too_long),
		cmocka_unit_test(test_peek_malformed),
		cmocka_unit_test(test_op_is_final_response),
		cmocka_unit_test(test_response_for),
		cmocka_unit_test(test_abandon_target),
		cmocka_unit_test(test_abandon_target_envelope),
		cmocka_unit_test(test_starttls_real),
		cmocka_unit_test(test_starttls_request_value),
		cmocka_unit_test(test_starttls_controls),
		cmocka_unit_test(test_starttls_not),
		cmocka_unit_test(test_starttls_truncated),
		cmocka_unit_test(test_starttls_envelope),
		cmocka_unit_test(test_peek_longest_envelope),
		cmocka_unit_test(test_extended_kind),
		cmocka_unit_test(test_extended_kind_bounded),
		cmocka_unit_test(test_starttls_control_forms),
		cmocka_unit_test(test_build_starttls_success),
		cmocka_unit_test(test_build_matches_slapd),
		cmocka_unit_test(test_build_confidentiality_required),
		cmocka_unit_test(test_build_notice),
		cmocka_unit_test(test_result_code),
		cmocka_unit_test(test_build_msgids),
		cmocka_unit_test(test_build_long),
		cmocka_unit_test(test_build_too_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
