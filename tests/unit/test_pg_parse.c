/*
 * Unit tests for src/pg_parse.c: the startup packets of the PostgreSQL
 * protocol 3.0, framed from their first 8 bytes within 8 to 10,000 bytes,
 * and the ErrorResponse the proxy writes.  The fixtures are libpq 15's
 * own bytes (psql), captured on loopback.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "pg_parse.h"

/* psql's SSLRequest, GSSENCRequest and StartupMessage (user alice, database postgres). */
static const uint8_t psql_ssl[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
static const uint8_t psql_gssenc[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30 };
static const uint8_t psql_startup[] =
    "\x00\x00\x00\x3c\x00\x03\x00\x00user\0alice\0database\0postgres\0"
    "application_name\0psql\0";	/* the final NUL is the literal's */
/* libpq's CancelRequest for backend 4242, key 0x5eed */
static const uint8_t libpq_cancel[] = {
	0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x10, 0x92, 0, 0, 0x5e, 0xed,
};

static struct pg_packet sentinel = { .kind = (enum pg_packet_kind)99, .len = 0xa5a5a5a5u,
    .code = 0xa5a5a5a5u };

static enum parse_result
parse(const void *p, size_t len, struct pg_packet *out, enum pg_packet_error *err)
{
	void			*q = exact(p, len);
	enum parse_result	 r;

	*out = sentinel;
	*err = (enum pg_packet_error)99;
	r = pg_packet_parse(q, len, out, err);
	free(q);
	return r;
}

static void
head(uint8_t *buf, uint32_t len, uint32_t code)
{
	buf[0] = (uint8_t)(len >> 24);
	buf[1] = (uint8_t)(len >> 16);
	buf[2] = (uint8_t)(len >> 8);
	buf[3] = (uint8_t)len;
	buf[4] = (uint8_t)(code >> 24);
	buf[5] = (uint8_t)(code >> 16);
	buf[6] = (uint8_t)(code >> 8);
	buf[7] = (uint8_t)code;
}

static void
test_libpq_packets(void **state)
{
	struct pg_packet	 pk;
	enum pg_packet_error	 err;

	(void)state;
	assert_int_equal(parse(psql_ssl, sizeof(psql_ssl), &pk, &err), PARSE_OK);
	assert_int_equal(pk.kind, PG_PACKET_SSL_REQUEST);
	assert_int_equal(pk.len, 8);
	assert_int_equal(pk.code, PG_CODE_SSL);
	assert_int_equal(parse(psql_gssenc, sizeof(psql_gssenc), &pk, &err), PARSE_OK);
	assert_int_equal(pk.kind, PG_PACKET_GSSENC_REQUEST);
	assert_int_equal(parse(libpq_cancel, sizeof(libpq_cancel), &pk, &err), PARSE_OK);
	assert_int_equal(pk.kind, PG_PACKET_CANCEL_REQUEST);
	assert_int_equal(pk.len, PG_CANCEL_LEN);
	assert_int_equal(parse(psql_startup, sizeof(psql_startup), &pk, &err), PARSE_OK);
	assert_int_equal(pk.kind, PG_PACKET_STARTUP);
	assert_int_equal(pk.len, sizeof(psql_startup));
	assert_int_equal(pk.code, 0x00030000);
}

/* The header is enough: a StartupMessage is classified before it is whole. */
static void
test_header_is_enough(void **state)
{
	struct pg_packet	 pk;
	enum pg_packet_error	 err;

	(void)state;
	assert_int_equal(parse(psql_startup, PG_PACKET_HEADER, &pk, &err), PARSE_OK);
	assert_int_equal(pk.kind, PG_PACKET_STARTUP);
	assert_int_equal(pk.len, 60);
	assert_int_equal(parse(libpq_cancel, PG_PACKET_HEADER, &pk, &err), PARSE_OK);
	assert_int_equal(pk.kind, PG_PACKET_CANCEL_REQUEST);
}

/* Fewer than 8 bytes of a good packet: more is needed, nothing is written. */
static void
test_need_more(void **state)
{
	struct pg_packet	 pk;
	enum pg_packet_error	 err;

	(void)state;
	for (size_t n = 0; n < PG_PACKET_HEADER; n++) {
		assert_int_equal(parse(psql_startup, n, &pk, &err), PARSE_NEED_MORE);
		assert_memory_equal(&pk, &sentinel, sizeof(pk));
		assert_int_equal(err, 99);
		assert_int_equal(parse(psql_ssl, n, &pk, &err), PARSE_NEED_MORE);
	}
}

/* The length is judged from its own 4 bytes, before the code is there. */
static void
test_lengths(void **state)
{
	uint8_t			 buf[PG_PACKET_HEADER];
	struct pg_packet	 pk;
	enum pg_packet_error	 err;

	(void)state;
	head(buf, 7, 0x00030000);
	assert_int_equal(parse(buf, 4, &pk, &err), PARSE_MALFORMED);
	assert_int_equal(err, PG_ERROR_LENGTH);
	assert_memory_equal(&pk, &sentinel, sizeof(pk));
	head(buf, 0, 0);
	assert_int_equal(parse(buf, 4, &pk, &err), PARSE_MALFORMED);
	head(buf, 10001, 0x00030000);
	assert_int_equal(parse(buf, 4, &pk, &err), PARSE_TOO_LONG);
	assert_int_equal(err, PG_ERROR_LENGTH);
	head(buf, 0xffffffffu, 0x00030000);
	assert_int_equal(parse(buf, 4, &pk, &err), PARSE_TOO_LONG);
	/* a TLS record read as a length: 0x16030100 */
	memcpy(buf, "\x16\x03\x01\x02\x00\x01\x00\x01", 8);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_TOO_LONG);
	/* the bounds themselves */
	head(buf, PG_PACKET_MAX, 0x00030000);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_OK);
	assert_int_equal(pk.len, PG_PACKET_MAX);
	head(buf, PG_PACKET_MIN, 0x00030000);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_OK);
	assert_int_equal(pk.len, PG_PACKET_MIN);
}

static void
test_request_lengths(void **state)
{
	uint8_t			 buf[PG_PACKET_HEADER];
	struct pg_packet	 pk;
	enum pg_packet_error	 err;

	(void)state;
	head(buf, 12, PG_CODE_SSL);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_MALFORMED);
	assert_int_equal(err, PG_ERROR_REQUEST_LENGTH);
	head(buf, 16, PG_CODE_GSSENC);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_MALFORMED);
	assert_int_equal(err, PG_ERROR_REQUEST_LENGTH);
	head(buf, 12, PG_CODE_CANCEL);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_MALFORMED);
	assert_int_equal(err, PG_ERROR_CANCEL_LENGTH);
	head(buf, 8, PG_CODE_CANCEL);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_MALFORMED);
	head(buf, 20, PG_CODE_CANCEL);
	assert_int_equal(parse(buf, 8, &pk, &err), PARSE_MALFORMED);
	assert_memory_equal(&pk, &sentinel, sizeof(pk));
}

/* Major version 3 with any minor is a StartupMessage; the server negotiates. */
static void
test_codes(void **state)
{
	static const struct {
		uint32_t		 code;
		enum parse_result	 want;
	} cases[] = {
		{ 0x00030000, PARSE_OK },
		{ 0x00030002, PARSE_OK },	/* 3.2, PostgreSQL 18's libpq */
		{ 0x0003ffff, PARSE_OK },
		{ 0x00020000, PARSE_MALFORMED },	/* protocol 2.0 */
		{ 0x00040000, PARSE_MALFORMED },
		{ 0x00000000, PARSE_MALFORMED },
		{ 80877101, PARSE_MALFORMED },	/* 1234.5677 */
		{ 80877105, PARSE_MALFORMED },	/* 1234.5681 */
		{ 0xffffffffu, PARSE_MALFORMED },
	};
	uint8_t			 buf[PG_PACKET_HEADER];
	struct pg_packet	 pk;
	enum pg_packet_error	 err;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		head(buf, 40, cases[i].code);
		assert_int_equal(parse(buf, 8, &pk, &err), cases[i].want);
		if (cases[i].want == PARSE_OK)
			assert_int_equal(pk.kind, PG_PACKET_STARTUP);
		else
			assert_int_equal(err, PG_ERROR_CODE);
	}
}

static void
test_error_words(void **state)
{
	(void)state;
	assert_string_equal(pg_packet_error_words(PG_ERROR_LENGTH),
	    "invalid length of startup packet");
	assert_string_equal(pg_packet_error_words(PG_ERROR_CANCEL_LENGTH),
	    "invalid length of CancelRequest");
	assert_non_null(pg_packet_error_words((enum pg_packet_error)42));
}

/* The bytes of an ErrorResponse as the server writes its own. */
static void
test_build_error(void **state)
{
	static const uint8_t want[] =
	    "E\x00\x00\x00\x3b" "SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0";
	uint8_t	 buf[PG_ERROR_MAX];
	ssize_t	 n;

	(void)state;
	n = pg_build_error("FATAL", "53300", "sorry, too many clients already", buf, sizeof(buf));
	assert_int_equal(n, sizeof(want));	/* the literal's own NUL is the terminator */
	assert_memory_equal(buf, want, sizeof(want));
	/* its length field counts itself and the rest, not the type byte */
	assert_int_equal(buf[4] + 1, n);
}

static void
test_build_error_bounds(void **state)
{
	uint8_t	 buf[64];
	ssize_t	 n;

	(void)state;
	n = pg_build_error("FATAL", "08006", "x", buf, sizeof(buf));
	assert_true(n > 0);
	/* exactly enough room, and one byte less */
	assert_int_equal(pg_build_error("FATAL", "08006", "x", buf, (size_t)n), n);
	assert_int_equal(pg_build_error("FATAL", "08006", "x", buf, (size_t)n - 1), -1);
	for (size_t size = 0; size < (size_t)n; size++) {
		uint8_t *q = exact(buf, size);

		assert_int_equal(pg_build_error("FATAL", "08006", "x", q, size), -1);
		free(q);
	}
	assert_int_equal(pg_build_error("FATAL", "0800", "x", buf, sizeof(buf)), -1);
	assert_int_equal(pg_build_error("FATAL", "080060", "x", buf, sizeof(buf)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_libpq_packets),
		cmocka_unit_test(test_header_is_enough),
		cmocka_unit_test(test_need_more),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_request_lengths),
		cmocka_unit_test(test_codes),
		cmocka_unit_test(test_error_words),
		cmocka_unit_test(test_build_error),
		cmocka_unit_test(test_build_error_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
