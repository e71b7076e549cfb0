/*
 * Unit tests for src/proto_postgres.c through the module driver
 * (tests/harness.h): the verdicts and the bytes each way for the startup
 * packets, direct TLS, cancel, the refusals and the proxy's own
 * SSLRequest towards the server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "pg_parse.h"
#include "proto.h"

static const uint8_t ssl_request[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
static const uint8_t gssenc_request[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30 };
static const uint8_t cancel[] = {
	0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x10, 0x92, 0, 0, 0x5e, 0xed,
};
static const uint8_t startup[] =
    "\x00\x00\x00\x3c\x00\x03\x00\x00user\0alice\0database\0postgres\0"
    "application_name\0psql\0";

static void
open_pg(struct harness *h, enum client_tls ctls, bool require_tls)
{
	harness_open(h, &proto_postgres, NULL);
	h->conf.client_tls = ctls;
	h->conf.require_tls = require_tls;
	h->client_tls = ctls == CLIENT_TLS_IMPLICIT;
}

static void
feed(struct harness *h, const void *p, size_t n)
{
	evbuffer_add(h->from_client, p, n);
}

static size_t
len(struct evbuffer *b)
{
	return evbuffer_get_length(b);
}

static bool
has(const char *p, size_t n, const char *s, size_t k)
{
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(p + i, s, k) == 0)
			return true;
	return false;
}

/* The SQLSTATE of the ErrorResponse queued to the client. */
static void
assert_error(struct harness *h, const char *sqlstate)
{
	size_t		 n = len(h->to_client);
	const char	*p = (const char *)evbuffer_pullup(h->to_client, -1);
	char		 field[8];

	assert_true(n > 5);
	assert_int_equal(p[0], 'E');
	assert_true(has(p, n, "SFATAL", 7));
	snprintf(field, sizeof(field), "C%s", sqlstate);
	assert_true(has(p, n, field, strlen(field) + 1));
}

static void
test_sslrequest_is_answered_s(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, ssl_request, sizeof(ssl_request));
	feed(&h, startup, sizeof(startup));	/* injected: the session discards it */
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	assert_false(h.direct_tls);
	assert_int_equal(len(h.to_client), 1);
	assert_memory_equal(evbuffer_pullup(h.to_client, -1), "S", 1);
	assert_int_equal(len(h.from_client), sizeof(startup));	/* left for the session */
	assert_int_equal(len(h.to_backend), 0);
	harness_close(&h);
}

static void
test_sslrequest_in_pieces(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	for (size_t i = 0; i < sizeof(ssl_request) - 1; i++) {
		feed(&h, ssl_request + i, 1);
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
		assert_int_equal(len(h.to_client), 0);
	}
	feed(&h, ssl_request + sizeof(ssl_request) - 1, 1);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	harness_close(&h);
}

/* 'N' once; then an SSLRequest on the same connection; a second one is refused. */
static void
test_gssencrequest(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, gssenc_request, sizeof(gssenc_request));
	feed(&h, ssl_request, sizeof(ssl_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	assert_int_equal(len(h.to_client), 2);
	assert_memory_equal(evbuffer_pullup(h.to_client, -1), "NS", 2);
	harness_close(&h);

	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, gssenc_request, sizeof(gssenc_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	feed(&h, gssenc_request, sizeof(gssenc_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	evbuffer_drain(h.to_client, 1);
	assert_error(&h, "08P01");
	assert_int_equal(h.end, END_PROTOCOL_ERROR);
	harness_close(&h);
}

/* A ClientHello as the first byte: TLS at once, with nothing read or written. */
static void
test_direct_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, "\x16", 1);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	assert_true(h.direct_tls);
	assert_int_equal(len(h.from_client), 1);
	assert_int_equal(len(h.to_client), 0);
	harness_close(&h);

	/* only as the very first byte: after a GSSENCRequest it is a length */
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, gssenc_request, sizeof(gssenc_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	feed(&h, "\x16\x03\x01\x02\x00\x01\x00\x01", 8);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_false(h.direct_tls);
	harness_close(&h);

	/* a listener without client TLS has none */
	open_pg(&h, CLIENT_TLS_NONE, false);
	feed(&h, "\x16\x03\x01\x02\x00\x01\x00\x01", 8);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_false(h.direct_tls);
	harness_close(&h);
}

static void
test_no_client_tls_answers_n(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_NONE, false);
	feed(&h, ssl_request, sizeof(ssl_request));
	feed(&h, startup, sizeof(startup));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONNECT);
	assert_int_equal(len(h.to_client), 1);
	assert_memory_equal(evbuffer_pullup(h.to_client, -1), "N", 1);
	assert_int_equal(len(h.from_client), sizeof(startup));
	harness_close(&h);

	/* once */
	open_pg(&h, CLIENT_TLS_NONE, false);
	feed(&h, ssl_request, sizeof(ssl_request));
	feed(&h, ssl_request, sizeof(ssl_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	evbuffer_drain(h.to_client, 1);
	assert_error(&h, "08P01");
	harness_close(&h);
}

/* Guarantee 5: a cleartext StartupMessage under require_tls gets 28000, and nothing more. */
static void
test_require_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, startup, 8);	/* refused from its header */
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_error(&h, "28000");
	assert_int_equal(len(h.to_backend), 0);
	assert_int_equal(len(h.from_client), 0);
	harness_close(&h);
}

/* Without require_tls: the whole StartupMessage, then the backend, then relay. */
static void
test_cleartext_startup_is_relayed(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, false);
	feed(&h, startup, sizeof(startup) - 1);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	feed(&h, startup + sizeof(startup) - 1, 1);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONNECT);
	assert_int_equal(len(h.from_client), sizeof(startup));	/* kept for the relay */
	assert_int_equal(len(h.to_backend), 0);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	assert_int_equal(harness_call(&h, HARNESS_BACKEND_READY), PROTO_TRANSPARENT);
	harness_close(&h);
}

/* Inside TLS: the StartupMessage connects; an unreachable backend is 08006. */
static void
test_inside_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	h.client_tls = true;
	assert_int_equal(harness_call(&h, HARNESS_TLS_READY), PROTO_CONTINUE);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	feed(&h, startup, sizeof(startup));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONNECT);
	assert_int_equal(len(h.to_client), 0);
	{
		struct proto_io io = {
			.state = h.state, .conf = &h.conf, .client_tls = true,
			.to_client = h.to_client, .to_backend = h.to_backend,
		};

		proto_postgres.backend_failed(&io);
	}
	assert_error(&h, "08006");
	harness_close(&h);

	/* a second upgrade inside TLS, and a GSSENCRequest there */
	open_pg(&h, CLIENT_TLS_IMPLICIT, false);
	assert_int_equal(harness_call(&h, HARNESS_TLS_READY), PROTO_CONTINUE);
	feed(&h, ssl_request, sizeof(ssl_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_error(&h, "08P01");
	harness_close(&h);
	open_pg(&h, CLIENT_TLS_IMPLICIT, false);
	feed(&h, gssenc_request, sizeof(gssenc_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_error(&h, "08P01");
	harness_close(&h);
}

/* A CancelRequest: queued for the backend; the rest is dropped; no answer ever. */
static void
test_cancel(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	feed(&h, cancel, 12);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_int_equal(len(h.to_backend), 0);
	feed(&h, cancel + 12, sizeof(cancel) - 12);
	feed(&h, "junk", 4);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONNECT);
	assert_int_equal(len(h.to_backend), sizeof(cancel));
	assert_memory_equal(evbuffer_pullup(h.to_backend, -1), cancel, sizeof(cancel));
	assert_int_equal(len(h.from_client), 0);
	assert_int_equal(harness_call(&h, HARNESS_BACKEND_READY), PROTO_CONTINUE);
	feed(&h, startup, sizeof(startup));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_int_equal(len(h.from_client), 0);
	assert_int_equal(len(h.to_backend), sizeof(cancel));
	evbuffer_add(h.from_backend, "x", 1);
	assert_int_equal(harness_call(&h, HARNESS_BACKEND), PROTO_CONTINUE);
	assert_int_equal(h.dropped, 1);
	{
		struct proto_io io = {
			.state = h.state, .conf = &h.conf,
			.to_client = h.to_client, .to_backend = h.to_backend,
		};

		proto_postgres.backend_failed(&io);
	}
	assert_int_equal(len(h.to_client), 0);
	harness_close(&h);
}

/* A refusing session: 53300 at the StartupMessage, in TLS too; a cancel is dropped. */
static void
test_busy(void **state)
{
	struct harness	 h;

	(void)state;
	open_pg(&h, CLIENT_TLS_STARTTLS, true);
	h.refusal = PROTO_REFUSAL_BUSY;
	feed(&h, ssl_request, sizeof(ssl_request));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	evbuffer_drain(h.to_client, 1);
	h.client_tls = true;
	assert_int_equal(harness_call(&h, HARNESS_TLS_READY), PROTO_CONTINUE);
	feed(&h, startup, 8);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_error(&h, "53300");
	assert_int_equal(h.end, END_BUSY);
	assert_int_equal(len(h.to_backend), 0);
	harness_close(&h);

	open_pg(&h, CLIENT_TLS_STARTTLS, false);
	h.refusal = PROTO_REFUSAL_BUSY;
	feed(&h, cancel, sizeof(cancel));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	assert_int_equal(h.end, END_BUSY);
	assert_int_equal(len(h.to_backend), 0);
	assert_int_equal(len(h.to_client), 0);
	harness_close(&h);
}

/* backend.tls = "starttls": SSLRequest, then 'S' alone. */
static void
test_backend_starttls(void **state)
{
	static const struct {
		const char		*answer;
		size_t			 n;
		enum proto_verdict	 want;
	} cases[] = {
		{ "S", 1, PROTO_UPGRADE },
		{ "SE", 2, PROTO_CLOSE },	/* CVE-2021-23222 */
		{ "N", 1, PROTO_CLOSE },
		{ "E\0\0\0\x08", 5, PROTO_CLOSE },
		{ "\0", 1, PROTO_CLOSE },
	};
	struct harness	 h;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		open_pg(&h, CLIENT_TLS_STARTTLS, true);
		assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
		assert_int_equal(len(h.to_backend), sizeof(ssl_request));
		assert_memory_equal(evbuffer_pullup(h.to_backend, -1), ssl_request,
		    sizeof(ssl_request));
		assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
		evbuffer_add(h.from_backend, cases[i].answer, cases[i].n);
		assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), cases[i].want);
		if (cases[i].want == PROTO_CLOSE) {
			assert_int_equal(h.end, END_BACKEND_TLS_FAILED);
			assert_non_null(h.reason);
		} else
			assert_int_equal(len(h.from_backend), 0);
		harness_close(&h);
	}
}

/* Bad packets before and inside TLS: 08P01, and the input is not read further. */
static void
test_malformed(void **state)
{
	static const uint8_t bad[][8] = {
		{ 0, 0, 0, 7, 0, 3, 0, 0 },
		{ 0, 0, 0x27, 0x11, 0, 3, 0, 0 },		/* 10001 */
		{ 0, 0, 0, 8, 0, 2, 0, 0 },			/* protocol 2.0 */
		{ 0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e },	/* a short CancelRequest */
		{ 0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f },	/* a long SSLRequest */
	};
	struct harness	 h;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int tls = 0; tls < 2; tls++) {
			open_pg(&h, CLIENT_TLS_STARTTLS, false);
			h.client_tls = tls;
			feed(&h, bad[i], sizeof(bad[i]));
			feed(&h, startup, sizeof(startup));
			assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
			assert_error(&h, "08P01");
			assert_int_equal(h.end, END_PROTOCOL_ERROR);
			assert_int_equal(len(h.from_client), 0);
			assert_int_equal(len(h.to_backend), 0);
			harness_close(&h);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sslrequest_is_answered_s),
		cmocka_unit_test(test_sslrequest_in_pieces),
		cmocka_unit_test(test_gssencrequest),
		cmocka_unit_test(test_direct_tls),
		cmocka_unit_test(test_no_client_tls_answers_n),
		cmocka_unit_test(test_require_tls),
		cmocka_unit_test(test_cleartext_startup_is_relayed),
		cmocka_unit_test(test_inside_tls),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_busy),
		cmocka_unit_test(test_backend_starttls),
		cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
