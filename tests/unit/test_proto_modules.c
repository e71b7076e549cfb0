/*
 * Unit tests for the protocol modules (src/proto_smtp.c, src/proto_line.c,
 * src/proto_ldap.c), and their side of backend.tls = "starttls"
 * driven through evbuffers, as the session drives them, without sockets.
 *
 * What they guard: a module must take everything it can from an input
 * that holds many chunks at once.  A large read under TLS leaves dozens
 * of chunks in a bufferevent's input; bytes a module leaves behind are
 * not looked at again until the peer sends more, and a peer that has sent
 * all it had waits for an answer: the session stalls.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "ber.h"
#include "config.h"
#include "harness.h"
#include "proto.h"

#define MANY_CHUNKS	100

/* p under a STARTTLS listener whose own block (line = { ... }) says block. */
static void
harness_init_block(struct harness *h, const struct proto *p, const char *block)
{
	harness_open(h, p, block);
}

static void
harness_init(struct harness *h, const struct proto *p)
{
	harness_open(h, p, "reply = \"OK\"; refusal = \"ERR\";");
}

static void
harness_free(struct harness *h)
{
	harness_close(h);
}

static enum proto_verdict
run(struct harness *h, bool from_client)
{
	return harness_call(h, from_client ? HARNESS_CLIENT : HARNESS_BACKEND);
}

static enum proto_verdict
client_says(struct harness *h, const char *text)
{
	evbuffer_add(h->from_client, text, strlen(text));
	return run(h, true);
}

static enum proto_verdict
backend_says(struct harness *h, const char *text)
{
	evbuffer_add(h->from_backend, text, strlen(text));
	return run(h, false);
}

/* Each piece in its own chunk, as reads into a bufferevent leave them. */
static void
add_chunk(struct evbuffer *buf, const char *text)
{
	struct evbuffer	*one = evbuffer_new();

	assert_non_null(one);
	evbuffer_add(one, text, strlen(text));
	evbuffer_add_buffer(buf, one);	/* moves the chain, not the bytes */
	evbuffer_free(one);
}

static char *
drain_string(struct evbuffer *buf)
{
	size_t	 len = evbuffer_get_length(buf);
	char	*s = malloc(len + 1);

	assert_non_null(s);
	evbuffer_remove(buf, s, len);
	s[len] = '\0';
	return s;
}

/* A whole message in a hundred chunks goes to the backend in one call. */
static void
test_smtp_data_in_many_chunks(void **state)
{
	struct harness	 h;
	char		 line[64], *sent, *expected;
	size_t		 explen = 0;

	(void)state;
	harness_init(&h, &proto_smtp);
	assert_int_equal(backend_says(&h, "220 backend.test ESMTP\r\n"), PROTO_CONTINUE);
	assert_int_equal(client_says(&h, "EHLO client.test\r\n"), PROTO_CONTINUE);
	assert_int_equal(backend_says(&h, "250 backend.test\r\n"), PROTO_CONTINUE);
	assert_int_equal(client_says(&h,
	    "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"), PROTO_CONTINUE);
	assert_int_equal(client_says(&h, "x"), PROTO_HOLD);	/* content before the 354 */
	evbuffer_drain(h.from_client, 1);
	assert_int_equal(backend_says(&h, "250 OK\r\n250 OK\r\n354 go ahead\r\n"), PROTO_CONTINUE);
	free(drain_string(h.to_client));
	free(drain_string(h.to_backend));

	expected = calloc(MANY_CHUNKS + 1, sizeof(line) + 16);
	assert_non_null(expected);
	for (int i = 0; i < MANY_CHUNKS; i++) {
		snprintf(line, sizeof(line), "line %03d of the message\r\n", i);
		add_chunk(h.from_client, line);
		memcpy(expected + explen, line, strlen(line));
		explen += strlen(line);
	}
	add_chunk(h.from_client, ".\r\n");
	add_chunk(h.from_client, "QUIT\r\n");
	memcpy(expected + explen, ".\r\nQUIT\r\n", 10);

	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	sent = drain_string(h.to_backend);
	assert_string_equal(sent, expected);
	free(sent);
	free(expected);
	harness_free(&h);
}

/* Content that does not end yet is passed on whole, however many chunks. */
static void
test_smtp_unfinished_data_in_many_chunks(void **state)
{
	struct harness	 h;

	(void)state;
	harness_init(&h, &proto_smtp);
	backend_says(&h, "220 backend.test ESMTP\r\n");
	client_says(&h, "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
	backend_says(&h, "250 backend.test\r\n250 OK\r\n250 OK\r\n354 go ahead\r\n");
	free(drain_string(h.to_backend));
	for (int i = 0; i < MANY_CHUNKS; i++)
		add_chunk(h.from_client, "0123456789\r\n");
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	assert_int_equal(evbuffer_get_length(h.to_backend), MANY_CHUNKS * 12);
	harness_free(&h);
}

/*
 * line: replies that arrive in many chunks are all counted, so that an
 * upgrade pipelined behind the lines they answer is not held for ever.
 */
static void
test_line_replies_in_many_chunks(void **state)
{
	struct harness	 h;

	(void)state;
	harness_init(&h, &proto_line);
	for (int i = 0; i < MANY_CHUNKS; i++)
		assert_int_equal(client_says(&h, "PING\r\n"), PROTO_CONTINUE);
	assert_int_equal(client_says(&h, "STARTTLS\r\n"), PROTO_HOLD);
	for (int i = 0; i < MANY_CHUNKS; i++)
		add_chunk(h.from_backend, "PONG\r\n");
	assert_int_equal(run(&h, false), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_client), MANY_CHUNKS * 6);
	assert_int_equal(run(&h, true), PROTO_UPGRADE);
	harness_free(&h);
}

/*
 * ldap: a StartTLS that is refused (here: not offered on this listener)
 * with a search pipelined behind it in the same read.  The search must go
 * on to the backend at once: the client waits for its answer and sends
 * nothing more.
 */
static void
test_ldap_refused_starttls_then_pipelined_search(void **state)
{
	static const unsigned char starttls[] = {
		0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16,
		'1', '.', '3', '.', '6', '.', '1', '.', '4', '.', '1', '.',
		'1', '4', '6', '6', '.', '2', '0', '0', '3', '7',
	};
	static const unsigned char search[] = {
		0x30, 0x25, 0x02, 0x01, 0x02, 0x63, 0x20,
		0x04, 0x00, 0x0a, 0x01, 0x00, 0x0a, 0x01, 0x00,
		0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x01, 0x01, 0x00,
		0x87, 0x0b, 'o', 'b', 'j', 'e', 'c', 't', 'C', 'l', 'a', 's', 's',
		0x30, 0x00,
	};
	struct harness	 h;
	unsigned char	 out[sizeof(search)];
	unsigned char	 resp[64];
	size_t		 n;

	(void)state;
	harness_init(&h, &proto_ldap);
	h.conf.client_tls = CLIENT_TLS_NONE;
	evbuffer_add(h.from_client, starttls, sizeof(starttls));
	evbuffer_add(h.from_client, search, sizeof(search));
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	/* the search went on, untouched */
	assert_int_equal(evbuffer_get_length(h.to_backend), sizeof(search));
	evbuffer_remove(h.to_backend, out, sizeof(out));
	assert_memory_equal(out, search, sizeof(search));
	/* and the client got an ExtendedResponse to message 1: protocolError (2) */
	n = evbuffer_remove(h.to_client, resp, sizeof(resp));
	assert_true(n > 12);
	assert_int_equal(resp[0], 0x30);
	assert_memory_equal(resp + 2, "\x02\x01\x01\x78", 4);
	assert_memory_equal(resp + 7, "\x0a\x01\x02", 3);	/* after 0x78 and its length */
	harness_free(&h);
}

static const unsigned char ldap_starttls_request[] = {
	0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16,
	'1', '.', '3', '.', '6', '.', '1', '.', '4', '.', '1', '.',
	'1', '4', '6', '6', '.', '2', '0', '0', '3', '7',
};

/* RFC 4511 4.14.2: StartTLS with TLS on is operationsError (1), implicit TLS too. */
static void
test_ldap_starttls_on_implicit_listener(void **state)
{
	struct harness	 h;
	unsigned char	 resp[64];

	(void)state;
	harness_init(&h, &proto_ldap);
	h.conf.client_tls = CLIENT_TLS_IMPLICIT;
	h.client_tls = true;
	evbuffer_add(h.from_client, ldap_starttls_request, sizeof(ldap_starttls_request));
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	assert_true(evbuffer_remove(h.to_client, resp, sizeof(resp)) > 12);
	assert_memory_equal(resp + 2, "\x02\x01\x01\x78", 4);
	assert_memory_equal(resp + 7, "\x0a\x01\x01", 3);
	harness_free(&h);
}

/*
 * Under require_tls only a real UnbindRequest (0x42) or AbandonRequest
 * (0x50) passes before TLS; constructed look-alikes with the same tag
 * numbers (0x62, 0x70) are protocol errors and never reach the backend.
 */
static void
test_ldap_constructed_unbind_does_not_pass(void **state)
{
	static const unsigned char fake_unbind[] = {
		0x30, 0x07, 0x02, 0x01, 0x05, 0x62, 0x02, 0x04, 0x00,
	};
	static const unsigned char fake_abandon[] = {
		0x30, 0x08, 0x02, 0x01, 0x06, 0x70, 0x03, 0x02, 0x01, 0x01,
	};
	static const unsigned char unbind[] = {
		0x30, 0x05, 0x02, 0x01, 0x07, 0x42, 0x00,
	};
	struct harness	 h;

	(void)state;
	harness_init(&h, &proto_ldap);
	h.conf.require_tls = true;
	evbuffer_add(h.from_client, unbind, sizeof(unbind));
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_backend), sizeof(unbind));
	harness_free(&h);

	harness_init(&h, &proto_ldap);
	h.conf.require_tls = true;
	evbuffer_add(h.from_client, fake_unbind, sizeof(fake_unbind));
	assert_int_equal(run(&h, true), PROTO_CLOSE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_free(&h);

	harness_init(&h, &proto_ldap);
	h.conf.require_tls = true;
	evbuffer_add(h.from_client, fake_abandon, sizeof(fake_abandon));
	assert_int_equal(run(&h, true), PROTO_CLOSE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_free(&h);
}

/* backend.tls = "starttls": one step of the module's dialogue. */
static enum proto_verdict
backend_upgrade_says(struct harness *h, const char *text, const char **reason)
{
	enum proto_verdict v;

	evbuffer_add(h->from_backend, text, strlen(text));
	v = harness_call(h, HARNESS_DIALOGUE);
	if (reason != NULL)
		*reason = h->reason;
	return v;
}

static void
expect_sent(struct harness *h, const char *prefix)
{
	char	*sent = drain_string(h->to_backend);

	if (strncmp(sent, prefix, strlen(prefix)) != 0)
		fail_msg("sent \"%s\", expected \"%s...\"", sent, prefix);
	free(sent);
}

/*
 * SMTP towards the backend: the greeting is kept for the client, EHLO and
 * STARTTLS are the proxy's own, and TLS starts after the 220.
 */
static void
test_smtp_backend_starttls_dialogue(void **state)
{
	struct harness	 h;
	char		*shown;

	(void)state;
	harness_init(&h, &proto_smtp);
	assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);	/* SMTP: the server speaks first */
	assert_int_equal(backend_upgrade_says(&h, "220-mx.test ESMTP\r\n220 ", NULL), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	assert_int_equal(backend_upgrade_says(&h, "ready\r\n", NULL), PROTO_CONTINUE);
	expect_sent(&h, "EHLO ");
	assert_int_equal(backend_upgrade_says(&h,
	    "250-mx.test\r\n250-starttls\r\n250 SIZE 1000\r\n", NULL), PROTO_CONTINUE);
	expect_sent(&h, "STARTTLS\r\n");
	assert_int_equal(backend_upgrade_says(&h, "220 2.0.0 go ahead\r\n", NULL), PROTO_UPGRADE);
	assert_int_equal(evbuffer_get_length(h.to_client), 0);	/* nothing shown yet */

	/* in TLS: the client's turn, starting with the greeting read before */
	assert_int_equal(run(&h, false), PROTO_CONTINUE);
	shown = drain_string(h.to_client);
	assert_string_equal(shown, "220-mx.test ESMTP\r\n220 ready\r\n");
	free(shown);
	harness_free(&h);
}

/* What ends the dialogue, each with its reason. */
static void
test_smtp_backend_starttls_failures(void **state)
{
	static const struct {
		const char	*greeting_and_ehlo;
		const char	*starttls_reply;
		const char	*reason;
	} cases[] = {
		{ "554 no service\r\n", NULL,
		  "STARTTLS with the backend: the greeting is not 220: 554 no service" },
		/* the first EHLO line names the server; only later lines are keywords */
		{ "220 mx\r\n250-STARTTLS\r\n250 SIZE\r\n", NULL,
		  "STARTTLS with the backend: the backend does not offer STARTTLS" },
		{ "220 mx\r\n502 no EHLO\r\n", NULL,
		  "STARTTLS with the backend: EHLO refused: 502 no EHLO" },
		{ "220 mx\r\n250-mx\r\n250 STARTTLS\r\n", "454 TLS not available\r\n",
		  "STARTTLS with the backend: STARTTLS refused: 454 TLS not available" },
		{ "220 mx\r\n250-mx\r\n250 STARTTLS\r\n", "220 go\r\n250 injected\r\n",
		  "STARTTLS with the backend: the backend sent bytes after its 220 reply, before TLS" },
		{ "HTTP/1.1 400 Bad Request\r\n", NULL,
		  "STARTTLS with the backend: not an SMTP reply" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct harness	 h;
		const char	*reason = NULL;
		enum proto_verdict v;

		harness_init(&h, &proto_smtp);
		v = backend_upgrade_says(&h, cases[i].greeting_and_ehlo, &reason);
		if (cases[i].starttls_reply != NULL) {
			assert_int_equal(v, PROTO_CONTINUE);
			v = backend_upgrade_says(&h, cases[i].starttls_reply, &reason);
		}
		assert_int_equal(v, PROTO_CLOSE);
		assert_non_null(reason);
		assert_string_equal(reason, cases[i].reason);
		harness_free(&h);
	}
}

/* LDAP towards the backend: its own StartTLS, then one ExtendedResponse. */
static void
test_ldap_backend_starttls_dialogue(void **state)
{
	static const char success[] = "\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00";
	struct harness	 h;
	unsigned char	 sent[64];
	size_t		 n;

	(void)state;
	harness_init(&h, &proto_ldap);
	assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_CONTINUE);
	n = evbuffer_remove(h.to_backend, sent, sizeof(sent));
	assert_int_equal(n, sizeof(ldap_starttls_request));
	assert_memory_equal(sent, ldap_starttls_request, n);
	/* the response in two reads */
	evbuffer_add(h.from_backend, success, 5);
	assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_CONTINUE);
	evbuffer_add(h.from_backend, success + 5, sizeof(success) - 1 - 5);
	assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_UPGRADE);
	assert_int_equal(evbuffer_get_length(h.from_backend), 0);
	harness_free(&h);
}

static void
test_ldap_backend_starttls_failures(void **state)
{
	static const struct {
		const char	*bytes;
		size_t		 len;
		const char	*reason;
	} cases[] = {
		{ "\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00", 14,
		  "StartTLS with the backend: StartTLS refused: resultCode 2" },
		{ "\x30\x0c\x02\x01\x00\x78\x07\x0a\x01\x34\x04\x00\x04\x00", 14,
		  "StartTLS with the backend: a Notice of Disconnection: resultCode 52" },
		{ "\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00\x16", 15,
		  "StartTLS with the backend: the backend sent bytes after its response, before TLS" },
		{ "\x30\x0c\x02\x01\x01\x61\x07\x0a\x01\x00\x04\x00\x04\x00", 14,
		  "StartTLS with the backend: an answer that is not an ExtendedResponse" },
		{ "\x30\x0c\x02\x01\x07\x78\x07\x0a\x01\x00\x04\x00\x04\x00", 14,
		  "StartTLS with the backend: a response to another request" },
		{ "\x30\x80\x02\x01\x01", 5,
		  "StartTLS with the backend: a malformed or oversized LDAP message" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct harness	 h;
		const char	*reason = NULL;

		harness_init(&h, &proto_ldap);
		assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_CONTINUE);
		evbuffer_add(h.from_backend, cases[i].bytes, cases[i].len);
		assert_int_equal(backend_upgrade_says(&h, "", &reason), PROTO_CLOSE);
		assert_non_null(reason);
		assert_string_equal(reason, cases[i].reason);
		harness_free(&h);
	}
}

/* line towards the backend: line.command, and line.reply back when set. */
static void
test_line_backend_starttls(void **state)
{
	struct harness	 h;
	const char	*reason = NULL;

	(void)state;
	harness_init_block(&h, &proto_line, "reply = \"\";");
	assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_UPGRADE);
	expect_sent(&h, "STARTTLS\r\n");
	harness_free(&h);

	harness_init(&h, &proto_line);		/* reply = "OK" */
	assert_int_equal(backend_upgrade_says(&h, "", NULL), PROTO_CONTINUE);
	expect_sent(&h, "STARTTLS\r\n");
	assert_int_equal(backend_upgrade_says(&h, "o", NULL), PROTO_CONTINUE);
	assert_int_equal(backend_upgrade_says(&h, "k\n", NULL), PROTO_UPGRADE);
	harness_free(&h);

	harness_init(&h, &proto_line);
	backend_upgrade_says(&h, "", NULL);
	assert_int_equal(backend_upgrade_says(&h, "ERR busy\r\n", &reason), PROTO_CLOSE);
	assert_string_equal(reason, "STARTTLS with the backend: the backend answered 'ERR busy'");
	harness_free(&h);

	harness_init(&h, &proto_line);
	backend_upgrade_says(&h, "", NULL);
	assert_int_equal(backend_upgrade_says(&h, "OK\r\nPONG\r\n", &reason), PROTO_CLOSE);
	assert_string_equal(reason, "STARTTLS with the backend: the backend sent bytes after its reply, before TLS");
	harness_free(&h);
}

/*
 * Guarantee 1: a module stops answering once its replies reach the
 * client's room, leaves the rest of the input, and goes on where it
 * stopped when called again.
 */
static void
check_stops_at_room(const struct proto *p, const char *greeting, const char *cmd,
    size_t cmdlen, size_t reply_max)
{
	struct harness	 h;
	size_t		 n = 0, got, total = 0;

	harness_init(&h, p);
	h.conf.require_tls = true;
	if (greeting != NULL)
		backend_says(&h, greeting);
	free(drain_string(h.to_client));
	for (int i = 0; i < 1000; i++)
		evbuffer_add(h.from_client, cmd, cmdlen);
	h.client_room = 200;
	while (evbuffer_get_length(h.from_client) > 0 && n++ < 2000) {
		assert_int_equal(run(&h, true), PROTO_CONTINUE);
		got = evbuffer_get_length(h.to_client);
		assert_true(got >= 1 || evbuffer_get_length(h.from_client) == 0);
		assert_true(got < 200 + reply_max);
		total += got;
		evbuffer_drain(h.to_client, got);	/* the client reads */
	}
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	assert_true(n > 10);	/* it did stop, many times */
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	assert_true(total >= 1000);
	harness_free(&h);
}

static void
test_modules_stop_at_the_clients_room(void **state)
{
	(void)state;
	static const char bind[] =
	    "\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00";

	check_stops_at_room(&proto_smtp, "220 backend.test ESMTP\r\n", "MAIL\r\n", 6, 64);
	check_stops_at_room(&proto_line, NULL, "\n", 1, 64);
	check_stops_at_room(&proto_ldap, NULL, bind, sizeof(bind) - 1, 128);
}

/*
 * ldap, hardening round 2.  Helpers: BER messages as evbuffer bytes, and
 * the resultCode of the one ExtendedResponse the proxy wrote.
 */
static void
add_bytes(struct evbuffer *b, const void *p, size_t n)
{
	assert_int_equal(evbuffer_add(b, p, n), 0);
}

#define LDAP_ADD(b, lit)	add_bytes((b), (lit), sizeof(lit) - 1)

/* messageID m, a SearchRequest of the base "" for (objectClass=*) */
static void
ldap_search(struct evbuffer *b, unsigned m)
{
	uint8_t	 msg[] = {
		0x30, 0x26, 0x02, 0x02, (uint8_t)(m >> 8), (uint8_t)m, 0x63, 0x20,
		0x04, 0x00, 0x0a, 0x01, 0x00, 0x0a, 0x01, 0x00,
		0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x01, 0x01, 0x00,
		0x87, 0x0b, 'o', 'b', 'j', 'e', 'c', 't', 'C', 'l', 'a', 's', 's',
		0x30, 0x00,
	};

	add_bytes(b, msg, sizeof(msg));
}

/* messageID m abandons target t */
static void
ldap_abandon(struct evbuffer *b, unsigned m, unsigned t)
{
	uint8_t	 msg[] = {
		0x30, 0x08, 0x02, 0x02, (uint8_t)(m >> 8), (uint8_t)m,
		0x50, 0x02, (uint8_t)(t >> 8), (uint8_t)t,
	};

	add_bytes(b, msg, sizeof(msg));
}

/* the SearchResultDone to messageID m */
static void
ldap_done(struct evbuffer *b, unsigned m)
{
	uint8_t	 msg[] = {
		0x30, 0x0d, 0x02, 0x02, (uint8_t)(m >> 8), (uint8_t)m,
		0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
	};

	add_bytes(b, msg, sizeof(msg));
}

static void
ldap_starttls_msg(struct evbuffer *b, uint8_t msgid)
{
	uint8_t	 msg[sizeof(ldap_starttls_request)];

	memcpy(msg, ldap_starttls_request, sizeof(msg));
	msg[4] = msgid;
	add_bytes(b, msg, sizeof(msg));
}

/* The proxy's one answer to the client: an ExtendedResponse; its resultCode. */
static int
ldap_answer(struct harness *h, int msgid)
{
	uint8_t		 resp[LDAP_RESPONSE_MAX];
	size_t		 n = evbuffer_get_length(h->to_client);
	struct ldap_peek pk;
	enum ldap_op	 op;
	int		 code;

	assert_true(n > 0 && n <= sizeof(resp));
	evbuffer_remove(h->to_client, resp, n);
	assert_int_equal(ldap_peek(resp, n, n, &pk), PARSE_OK);
	assert_int_equal(pk.total, n);		/* one message, no more */
	assert_int_equal(pk.msgid, msgid);
	code = ldap_result_code(resp, n, &op);
	assert_int_equal(op, LDAP_OP_EXTENDED_RESPONSE);
	return code;
}

/*
 * Guarantee 2: an abandoned search is still outstanding, StartTLS is
 * refused until its final response has been relayed, and then accepted.
 */
static void
test_ldap_abandoned_request_stays_outstanding(void **state)
{
	struct harness	 h;

	(void)state;
	harness_init(&h, &proto_ldap);
	ldap_search(h.from_client, 5);
	ldap_abandon(h.from_client, 6, 5);
	ldap_starttls_msg(h.from_client, 7);
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(ldap_answer(&h, 7), LDAP_OPERATIONS_ERROR);
	assert_int_equal(evbuffer_get_length(h.to_backend), 40 + 10);	/* search, abandon */
	evbuffer_drain(h.to_backend, 50);

	ldap_done(h.from_backend, 5);		/* the server answers it anyway */
	assert_int_equal(run(&h, false), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_client), 15);
	evbuffer_drain(h.to_client, 15);
	ldap_starttls_msg(h.from_client, 8);
	assert_int_equal(run(&h, true), PROTO_UPGRADE);
	assert_int_equal(ldap_answer(&h, 8), LDAP_SUCCESS);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_free(&h);
}

/*
 * More abandoned requests than the set holds, never answered: the module
 * forgets abandoned ones rather than hold the client for ever, and before
 * TLS then refuses StartTLS for good.  Requests that are not abandoned
 * are never forgotten: a full set of them holds the client.
 */
static void
test_ldap_forgets_only_abandoned_requests(void **state)
{
	struct harness	 h;

	(void)state;
	for (int in_tls = 0; in_tls < 2; in_tls++) {
		harness_init(&h, &proto_ldap);
		h.client_tls = in_tls;
		for (unsigned i = 1; i <= 300; i++) {
			ldap_search(h.from_client, i);
			ldap_abandon(h.from_client, 1000 + i, i);
		}
		ldap_search(h.from_client, 400);
		assert_int_equal(run(&h, true), PROTO_CONTINUE);
		assert_int_equal(evbuffer_get_length(h.from_client), 0);
		assert_int_equal(evbuffer_get_length(h.to_backend), 301 * 40 + 300 * 10);
		evbuffer_drain(h.to_backend, evbuffer_get_length(h.to_backend));
		ldap_done(h.from_backend, 400);
		assert_int_equal(run(&h, false), PROTO_CONTINUE);
		assert_int_equal(evbuffer_get_length(h.to_client), 15);	/* relayed */
		evbuffer_drain(h.to_client, 15);
		ldap_starttls_msg(h.from_client, 9);
		assert_int_equal(run(&h, true), PROTO_CONTINUE);
		assert_int_equal(ldap_answer(&h, 9), LDAP_OPERATIONS_ERROR);
		/* all answered after all: the set is empty, StartTLS still refused */
		for (unsigned i = 1; i <= 300; i++)
			ldap_done(h.from_backend, i);
		assert_int_equal(run(&h, false), PROTO_CONTINUE);
		assert_int_equal(evbuffer_get_length(h.to_client),
		    in_tls ? (300 - 45) * 15 : 300 * 15);
		evbuffer_drain(h.to_client, evbuffer_get_length(h.to_client));
		ldap_starttls_msg(h.from_client, 10);
		assert_int_equal(run(&h, true), PROTO_CONTINUE);
		assert_int_equal(ldap_answer(&h, 10), LDAP_OPERATIONS_ERROR);
		harness_free(&h);
	}

	harness_init(&h, &proto_ldap);
	for (unsigned i = 1; i <= 257; i++)
		ldap_search(h.from_client, i);
	assert_int_equal(run(&h, true), PROTO_HOLD);
	assert_int_equal(evbuffer_get_length(h.to_backend), 256 * 40);
	assert_int_equal(evbuffer_get_length(h.from_client), 40);
	ldap_done(h.from_backend, 3);
	assert_int_equal(run(&h, false), PROTO_CONTINUE);
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	harness_free(&h);
}

/* Inside TLS, feed a message that announces 4 GiB, chunk after chunk. */
static void
feed_huge(struct harness *h, const void *head, size_t headlen, size_t chunks)
{
	static uint8_t	 filler[65536];

	add_bytes(h->from_client, head, headlen);
	for (size_t i = 0; i < chunks; i++) {
		add_bytes(h->from_client, filler, sizeof(filler));
		assert_int_equal(run(h, true), PROTO_CONTINUE);
		/* Guarantee 1: nothing of it is held */
		assert_int_equal(evbuffer_get_length(h->from_client), 0);
	}
}

/*
 * Guarantee 1: an Abandon that announces 4 GiB streams to the backend,
 * its target read from the first bytes; a StartTLS that announces as
 * much is answered operationsError from its first bytes and dropped.
 */
static void
test_ldap_huge_messages_inside_tls_are_not_held(void **state)
{
	static const char abandon[] = "\x30\x84\xff\xff\xff\xf0\x02\x01\x02\x50\x01\x01";
	static const char starttls[] = "\x30\x84\xff\xff\xff\xf0\x02\x01\x03"
	    "\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037" "\xa0\x84\xff\xff\xff\xcb";
	struct harness	 h;

	(void)state;
	harness_init(&h, &proto_ldap);
	h.client_tls = true;
	ldap_search(h.from_client, 1);
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	evbuffer_drain(h.to_backend, 40);
	feed_huge(&h, abandon, sizeof(abandon) - 1, 32);
	assert_int_equal(evbuffer_get_length(h.to_backend), sizeof(abandon) - 1 + 32 * 65536);
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	/* the abandoned search is still answered inside TLS */
	ldap_done(h.from_backend, 1);
	assert_int_equal(run(&h, false), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_client), 15);
	harness_free(&h);

	harness_init(&h, &proto_ldap);
	h.client_tls = true;
	feed_huge(&h, starttls, sizeof(starttls) - 1, 32);
	assert_int_equal(ldap_answer(&h, 3), LDAP_OPERATIONS_ERROR);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_free(&h);
}

/*
 * The bound on what the module holds to classify an ExtendedRequest or
 * an Abandon: until LDAP_CLASSIFY_MAX bytes are in, it waits, relaying
 * nothing; at LDAP_CLASSIFY_MAX it decides.
 */
static void
test_ldap_classification_is_bounded(void **state)
{
	static const char whoami[] = "\x30\x84\xff\xff\xff\xf0\x02\x01\x02"
	    "\x77\x84\x00\x00\x00\x1d\x80\x17" "1.3.6.1.4.1.4203.1.11.3";
	static uint8_t	 zeros[LDAP_CLASSIFY_MAX];
	struct harness	 h;

	(void)state;
	harness_init(&h, &proto_ldap);
	h.client_tls = true;
	add_bytes(h.from_client, whoami, sizeof(whoami) - 1);
	add_bytes(h.from_client, zeros, LDAP_CLASSIFY_MAX - 1 - (sizeof(whoami) - 1));
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), LDAP_CLASSIFY_MAX - 1);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	add_bytes(h.from_client, zeros, 1);
	assert_int_equal(run(&h, true), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	assert_int_equal(evbuffer_get_length(h.to_backend), LDAP_CLASSIFY_MAX);	/* relayed */
	harness_free(&h);
}

/*
 * StartTLS in encodings slapd takes: answered by the proxy, never relayed,
 * with or without require_tls, and inside TLS operationsError.
 */
static void
test_ldap_unusual_starttls_is_answered(void **state)
{
	static const struct {
		const char	*bytes;
		size_t		 n;
		int		 code;		/* before TLS; -1: success, the upgrade */
		int		 in_tls;
	} cases[] = {
		{ "\x30\x81\x1d\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037", 32, -1, 1 },
		{ "\x30\x1e\x02\x01\x01\x77\x19\x80\x81\x16" "1.3.6.1.4.1.1466.20037", 32, -1, 1 },
		{ "\x30\x1e\x02\x02\x00\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037", 32, -1, 1 },
		{ "\x30\x1d\x02\x01\x01\x77\x18\x04\x16" "1.3.6.1.4.1.1466.20037", 31, 2, 1 },
		{ "\x30\x1e\x02\x01\x01\x77\x19\x9f\x00\x16" "1.3.6.1.4.1.1466.20037", 32, 2, 1 },
		{ "\x30\x1d\x02\x01\x01\x77\x00\x80\x16" "1.3.6.1.4.1.1466.20037", 31, 2, 2 },
		{ "\x30\x1d\x02\x01\x01\x77\x18\xa0\x16" "1.3.6.1.4.1.1466.20037", 31, 2, 2 },
		{ "\x30\x3d\x02\x01\x01\x77\x18\x80\x16" "1.3.6.1.4.1.1466.20037"
		    "\xa0\x1e\x30\x1c\x04\x17" "2.16.840.1.113730.3.4.2" "\x01\x01\xff", 63, 12, 1 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int mode = 0; mode < 3; mode++) {	/* require_tls, optional TLS, in TLS */
			struct harness		 h;
			enum proto_verdict	 v;

			harness_init(&h, &proto_ldap);
			h.conf.require_tls = mode == 0;
			h.client_tls = mode == 2;
			add_bytes(h.from_client, cases[i].bytes, cases[i].n);
			v = run(&h, true);
			if (mode < 2 && cases[i].code == -1) {
				assert_int_equal(v, PROTO_UPGRADE);
				assert_int_equal(ldap_answer(&h, 1), LDAP_SUCCESS);
			} else {
				assert_int_equal(v, PROTO_CONTINUE);
				if (ldap_answer(&h, 1) != (mode == 2 ? cases[i].in_tls : cases[i].code))
					fail_msg("case %zu, mode %d: wrong resultCode", i, mode);
			}
			assert_int_equal(evbuffer_get_length(h.from_client), 0);
			assert_int_equal(evbuffer_get_length(h.to_backend), 0);
			harness_free(&h);
		}
	}
}

/*
 * smtp, Guarantee 2: one side's bytes to the module, with the reason it
 * gives for a close.
 */
static enum proto_verdict
smtp_step(struct harness *h, bool from_client, const char *text, const char **reason)
{
	enum proto_verdict	 v;

	evbuffer_add(from_client ? h->from_client : h->from_backend, text, strlen(text));
	v = run(h, from_client);
	if (reason != NULL)
		*reason = h->reason;
	return v;
}

static void
expect_buffer(struct evbuffer *buf, const char *want)
{
	char	*got = drain_string(buf);

	if (strcmp(got, want) != 0)
		fail_msg("got \"%s\", expected \"%s\"", got, want);
	free(got);
}

/* The module after the greeting and one EHLO, both answered. */
static void
smtp_ready(struct harness *h, const char *ehlo_reply)
{
	harness_init(h, &proto_smtp);
	assert_int_equal(smtp_step(h, false, "220 mx.test ESMTP\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(h, true, "EHLO client.test\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(h, false, ehlo_reply, NULL), PROTO_CONTINUE);
	free(drain_string(h->to_client));
	free(drain_string(h->to_backend));
}

/*
 * A 334 leaves AUTH open: every client line is then a SASL response,
 * relayed, STARTTLS included, until the backend's final reply.  Lines
 * behind AUTH wait for its reply.
 */
static void
test_smtp_sasl_dialogue_holds_the_upgrade(void **state)
{
	struct harness	 h;

	(void)state;
	smtp_ready(&h, "250-mx.test\r\n250 AUTH LOGIN\r\n");
	assert_int_equal(smtp_step(&h, true, "AUTH LOGIN\r\nSTARTTLS\r\n", NULL), PROTO_HOLD);
	expect_buffer(h.to_backend, "AUTH LOGIN\r\n");
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	/* the 334: STARTTLS is the username */
	assert_int_equal(smtp_step(&h, false, "334 VXNlcm5hbWU6\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_backend, "STARTTLS\r\n");
	expect_buffer(h.to_client, "334 VXNlcm5hbWU6\r\n");
	/* the next line waits for the backend's answer to the response */
	assert_int_equal(smtp_step(&h, true, "STARTTLS\r\n", NULL), PROTO_HOLD);
	assert_int_equal(smtp_step(&h, false, "334 UGFzc3dvcmQ6\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_backend, "STARTTLS\r\n");
	/* "*" is a response too; the 501 ends the dialogue */
	assert_int_equal(smtp_step(&h, false, "334 again\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "*\r\n", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_backend, "*\r\n");
	assert_int_equal(smtp_step(&h, true, "STARTTLS\r\n", NULL), PROTO_HOLD);
	assert_int_equal(smtp_step(&h, false, "501 5.7.0 cancelled\r\n", NULL), PROTO_CONTINUE);
	free(drain_string(h.to_client));
	/* now, and only now, a command: the upgrade */
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_UPGRADE);
	expect_buffer(h.to_client, "220 2.0.0 Ready to start TLS\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_free(&h);

	/* the dialogue inside TLS: a response is never answered 503 */
	smtp_ready(&h, "250-mx.test\r\n250 AUTH LOGIN\r\n");
	h.client_tls = true;
	assert_int_equal(smtp_step(&h, true, "AUTH LOGIN\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, false, "334 VXNlcm5hbWU6\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "STARTTLS\r\n", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_backend, "AUTH LOGIN\r\nSTARTTLS\r\n");
	expect_buffer(h.to_client, "334 VXNlcm5hbWU6\r\n");
	assert_int_equal(smtp_step(&h, false, "235 ok\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "STARTTLS\r\n", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_client, "235 ok\r\n503 5.5.1 TLS already active\r\n");
	harness_free(&h);
}

/*
 * BDAT is a chunk only while the backend's last EHLO reply offers
 * CHUNKING; behind an EHLO that has no reply yet it waits for it.
 */
static void
test_smtp_bdat_follows_chunking(void **state)
{
	struct harness	 h;

	(void)state;
	smtp_ready(&h, "250-mx.test\r\n250-CHUNKING\r\n250 SIZE 100\r\n");
	h.client_tls = true;
	assert_int_equal(smtp_step(&h, true, "BDAT 10\r\nSTARTTLS\r\nBDAT 0 LAST\r\n", NULL),
	    PROTO_CONTINUE);
	expect_buffer(h.to_backend, "BDAT 10\r\nSTARTTLS\r\nBDAT 0 LAST\r\n");
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	assert_int_equal(smtp_step(&h, false, "250 a\r\n250 b\r\n", NULL), PROTO_CONTINUE);
	free(drain_string(h.to_client));

	/* a new EHLO: BDAT waits for its reply, which offers nothing */
	assert_int_equal(smtp_step(&h, true, "EHLO client.test\r\nBDAT 10\r\nSTARTTLS\r\n", NULL),
	    PROTO_HOLD);
	expect_buffer(h.to_backend, "EHLO client.test\r\n");
	assert_int_equal(smtp_step(&h, false, "250-mx.test\r\n250 SIZE 100\r\n", NULL),
	    PROTO_CONTINUE);
	/* now BDAT is a command, and STARTTLS another, answered in order */
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_HOLD);
	expect_buffer(h.to_backend, "BDAT 10\r\n");
	assert_int_equal(smtp_step(&h, false, "500 5.5.1 unknown\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_client, "250-mx.test\r\n250 SIZE 100\r\n500 5.5.1 unknown\r\n"
	    "503 5.5.1 TLS already active\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_free(&h);

	/* HELO, and a negative EHLO reply, offer nothing either */
	smtp_ready(&h, "250-mx.test\r\n250 CHUNKING\r\n");
	assert_int_equal(smtp_step(&h, true, "HELO client.test\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, false, "250 mx.test\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "BDAT 6\r\nNOOP\r\n", NULL), PROTO_CONTINUE);
	expect_buffer(h.to_backend, "HELO client.test\r\nBDAT 6\r\nNOOP\r\n");
	harness_free(&h);
}

/*
 * A reply is one unit: held until its last line, its lines all of one
 * code, at most 16 KiB; a 3xx only where a dialogue takes one.  Anything
 * else is a backend protocol error, and nothing of the reply is relayed.
 */
static void
test_smtp_reply_is_one_unit(void **state)
{
	static const struct {
		const char	*client;
		const char	*backend;
		const char	*reason;
	} cases[] = {
		{ "EHLO c\r\n", "250-a\r\n250-b\r\n550 x\r\n",
		  "a multiline reply from the backend with different codes on its lines" },
		{ "EHLO c\r\n", "250-a\r\n451 x\r\n",
		  "a multiline reply from the backend with different codes on its lines" },
		{ "NOOP\r\n", "550-a\r\n250 x\r\n",
		  "a multiline reply from the backend with different codes on its lines" },
		{ "NOOP\r\n", "354 go ahead\r\n",
		  "a 3xx reply from the backend to a command that takes none" },
		{ "MAIL FROM:<a@b>\r\n", "334 what\r\n",
		  "a 3xx reply from the backend to a command that takes none" },
		{ "DATA\r\n", "334 what\r\n",
		  "a 3xx reply from the backend to a command that takes none" },
		{ "AUTH LOGIN\r\n", "354 go ahead\r\n",
		  "a 3xx reply from the backend to a command that takes none" },
		{ "", "354 go ahead\r\n",
		  "a 3xx reply from the backend to no command" },
		{ "DATA\r\n", "354 go ahead\r\n250 too early\r\n",
		  "a reply from the backend before the end of the message content" },
	};
	struct harness	 h;
	const char	*reason;
	char		 line[100];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		smtp_ready(&h, "250 mx.test\r\n");
		smtp_step(&h, true, cases[i].client, NULL);
		reason = NULL;
		assert_int_equal(smtp_step(&h, false, cases[i].backend, &reason), PROTO_CLOSE);
		assert_non_null(reason);
		assert_string_equal(reason, cases[i].reason);
		/* the 354 before the early reply, then the 421 alone */
		if (strncmp(cases[i].backend, "354 go ahead\r\n250", 17) == 0)
			expect_buffer(h.to_client, "354 go ahead\r\n"
			    "421 4.3.0 Service not available: backend protocol error\r\n");
		else
			expect_buffer(h.to_client,
			    "421 4.3.0 Service not available: backend protocol error\r\n");
		harness_free(&h);
	}

	/* 16 KiB: a reply that grows past it without its last line */
	smtp_ready(&h, "250 mx.test\r\n");
	smtp_step(&h, true, "EHLO c\r\n", NULL);
	snprintf(line, sizeof(line), "250-%090d\r\n", 0);
	for (int i = 0; i < 16384 / 96; i++)
		assert_int_equal(smtp_step(&h, false, line, NULL), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_client), 0);	/* held */
	assert_int_equal(smtp_step(&h, false, line, &reason), PROTO_CLOSE);
	assert_string_equal(reason, "a reply from the backend longer than 16 KiB");
	harness_free(&h);
}

/*
 * A reply half read, even one nobody asked for, holds STARTTLS: its rest
 * must be relayed in cleartext, not arrive inside TLS.
 */
static void
test_smtp_starttls_waits_for_a_whole_reply(void **state)
{
	struct harness	 h;

	(void)state;
	smtp_ready(&h, "250 mx.test\r\n");
	assert_int_equal(smtp_step(&h, false, "421-closing\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "STARTTLS\r\n", NULL), PROTO_HOLD);
	assert_int_equal(smtp_step(&h, false, "421 now\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_UPGRADE);
	expect_buffer(h.to_client, "421-closing\r\n421 now\r\n220 2.0.0 Ready to start TLS\r\n");
	harness_free(&h);

	/* a line cut short counts too */
	smtp_ready(&h, "250 mx.test\r\n");
	assert_int_equal(smtp_step(&h, false, "421 clos", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "STARTTLS\r\n", NULL), PROTO_HOLD);
	assert_int_equal(smtp_step(&h, false, "ing\r\n", NULL), PROTO_CONTINUE);
	assert_int_equal(smtp_step(&h, true, "", NULL), PROTO_UPGRADE);
	expect_buffer(h.to_client, "421 closing\r\n220 2.0.0 Ready to start TLS\r\n");
	harness_free(&h);
}

/*
 * Before TLS a bare CR or LF, in a command line or in message content,
 * is refused and closes the session, and is not relayed; inside TLS the
 * same bytes go through as before.
 */
static void
test_smtp_bare_line_endings(void **state)
{
	static const char *const lines[] = {
		"NOOP\n", "NOOP\rMAIL FROM:<a@b>\r\n", "NOOP\r\r\n", "\n",
	};
	static const char *const content[] = {
		"hello\n.\nMAIL FROM:<x>\r\n", "hello\r\n.\nMAIL FROM:<x>\r\n",
		"hello\n.\r\nMAIL FROM:<x>\r\n", "hello\r.\rMAIL FROM:<x>\r\n", "a\nb\r\n.\r\n",
	};
	struct harness	 h;
	const char	*reason;

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		smtp_ready(&h, "250 mx.test\r\n");
		assert_int_equal(smtp_step(&h, true, lines[i], &reason), PROTO_CLOSE);
		assert_string_equal(reason, "a bare CR or LF in a command line before TLS");
		expect_buffer(h.to_client, "500 5.5.2 Bare CR or LF not allowed\r\n");
		assert_int_equal(evbuffer_get_length(h.to_backend), 0);
		harness_free(&h);

		smtp_ready(&h, "250 mx.test\r\n");
		h.client_tls = true;
		assert_int_equal(smtp_step(&h, true, lines[i], NULL), PROTO_CONTINUE);
		assert_int_equal(evbuffer_get_length(h.to_backend), strlen(lines[i]));
		harness_free(&h);
	}
	for (size_t i = 0; i < sizeof(content) / sizeof(content[0]); i++) {
		smtp_ready(&h, "250 mx.test\r\n");
		smtp_step(&h, true, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", NULL);
		smtp_step(&h, false, "250 ok\r\n250 ok\r\n354 go\r\n", NULL);
		free(drain_string(h.to_client));
		free(drain_string(h.to_backend));
		assert_int_equal(smtp_step(&h, true, "Subject: x\r\n\r\n", NULL), PROTO_CONTINUE);
		expect_buffer(h.to_backend, "Subject: x\r\n\r\n");
		assert_int_equal(smtp_step(&h, true, content[i], &reason), PROTO_CLOSE);
		assert_string_equal(reason, "a bare CR or LF in message content before TLS");
		expect_buffer(h.to_client, "500 5.5.2 Bare CR or LF not allowed\r\n");
		assert_int_equal(evbuffer_get_length(h.to_backend), 0);
		harness_free(&h);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_modules_stop_at_the_clients_room),
		cmocka_unit_test(test_smtp_data_in_many_chunks),
		cmocka_unit_test(test_smtp_unfinished_data_in_many_chunks),
		cmocka_unit_test(test_line_replies_in_many_chunks),
		cmocka_unit_test(test_ldap_refused_starttls_then_pipelined_search),
		cmocka_unit_test(test_ldap_starttls_on_implicit_listener),
		cmocka_unit_test(test_ldap_constructed_unbind_does_not_pass),
		cmocka_unit_test(test_smtp_backend_starttls_dialogue),
		cmocka_unit_test(test_smtp_backend_starttls_failures),
		cmocka_unit_test(test_ldap_backend_starttls_dialogue),
		cmocka_unit_test(test_ldap_backend_starttls_failures),
		cmocka_unit_test(test_line_backend_starttls),
		cmocka_unit_test(test_ldap_abandoned_request_stays_outstanding),
		cmocka_unit_test(test_ldap_forgets_only_abandoned_requests),
		cmocka_unit_test(test_ldap_huge_messages_inside_tls_are_not_held),
		cmocka_unit_test(test_ldap_classification_is_bounded),
		cmocka_unit_test(test_ldap_unusual_starttls_is_answered),
		cmocka_unit_test(test_smtp_sasl_dialogue_holds_the_upgrade),
		cmocka_unit_test(test_smtp_bdat_follows_chunking),
		cmocka_unit_test(test_smtp_reply_is_one_unit),
		cmocka_unit_test(test_smtp_starttls_waits_for_a_whole_reply),
		cmocka_unit_test(test_smtp_bare_line_endings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
