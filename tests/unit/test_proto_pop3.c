/*
 * Unit tests for the pop3 module (src/proto_pop3.c), driven through
 * evbuffers as the session drives it (tests/harness.h): replies matched
 * to pipelined commands, STLS held behind unanswered ones, multi-line
 * bodies streamed to their end in any split, the SASL dialogue, the CAPA
 * rewrite, what require_tls refuses, what is dropped inside TLS, the
 * bounds, and the proxy's own STLS towards the backend.  The backend's
 * bytes are Dovecot 2.3's (tests/fuzz/corpus/pop3).
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

#include "config.h"
#include "harness.h"
#include "pop3_parse.h"
#include "proto.h"

#define GREETING	"+OK Dovecot (Debian) ready.\r\n"
#define CAPA_REPLY \
	"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n" \
	"STLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"
#define LIST_REPLY	"+OK 2 messages:\r\n1 317\r\n2 129\r\n.\r\n"
#define RETR_REPLY \
	"+OK 129 octets\r\n" \
	"From: Bob <bob@example.test>\r\n" \
	"To: Alice <alice@example.test>\r\n" \
	"Subject: dots\r\n" \
	"\r\n" \
	"..\r\n" \
	"+OK fake\r\n" \
	"...two dots\r\n" \
	"..a dot\r\n" \
	"-ERR fake\r\n" \
	"last\r\n" \
	".\r\n"
#define STLS_OK		"+OK Begin TLS negotiation\r\n"
#define NEED_TLS	"-ERR TLS required: issue STLS first\r\n"
#define AUTH_NEED_TLS	"-ERR [AUTH] Authentication requires TLS: issue STLS first\r\n"
#define BACKEND_ERROR	"-ERR [SYS/TEMP] Service not available: backend protocol error\r\n"

static void
open_pop3(struct harness *h, bool require_tls)
{
	harness_open(h, &proto_pop3, NULL);
	h->conf.require_tls = require_tls;
}

static enum proto_verdict
client_says(struct harness *h, const char *text)
{
	evbuffer_add(h->from_client, text, strlen(text));
	return harness_call(h, HARNESS_CLIENT);
}

static enum proto_verdict
backend_says(struct harness *h, const char *text)
{
	evbuffer_add(h->from_backend, text, strlen(text));
	return harness_call(h, HARNESS_BACKEND);
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

static void
assert_drained(struct evbuffer *buf, const char *want)
{
	char	*got = drain_string(buf);

	assert_string_equal(got, want);
	free(got);
}

/* The upgrade as the session does it: bytes behind the verb go, then TLS. */
static void
upgrade(struct harness *h)
{
	evbuffer_drain(h->from_client, evbuffer_get_length(h->from_client));
	evbuffer_drain(h->from_backend, evbuffer_get_length(h->from_backend));
	h->client_tls = true;
	assert_int_equal(harness_call(h, HARNESS_TLS_READY), PROTO_CONTINUE);
}

/* Greeted, STLS answered, in TLS. */
static void
open_in_tls(struct harness *h, bool require_tls)
{
	open_pop3(h, require_tls);
	assert_int_equal(backend_says(h, GREETING), PROTO_CONTINUE);
	assert_int_equal(client_says(h, "STLS\r\n"), PROTO_UPGRADE);
	assert_drained(h->to_client, GREETING STLS_OK);
	upgrade(h);
}

/*
 * A pipelined LIST, RETR, STLS (RFC 2449): LIST and RETR go to the backend
 * at once, STLS waits until RETR's body has ended, whatever the split of
 * the backend's bytes; the "+OK fake" and ".." lines inside it are content.
 */
static void
test_pop3_stls_waits_for_a_pipelined_body(void **state)
{
	const char	*replies = LIST_REPLY RETR_REPLY;
	size_t		 len = strlen(replies);

	(void)state;
	for (size_t split = 1; split < len; split++) {
		struct harness	 h;
		char		*first = malloc(split + 1);

		assert_non_null(first);
		memcpy(first, replies, split);
		first[split] = '\0';

		open_pop3(&h, false);
		backend_says(&h, GREETING);
		assert_int_equal(client_says(&h, "LIST\r\nRETR 2\r\nSTLS\r\n"), PROTO_HOLD);
		assert_drained(h.to_backend, "LIST\r\nRETR 2\r\n");
		assert_int_equal(backend_says(&h, first), PROTO_CONTINUE);
		/* the session gives the client's input to the module again */
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
		assert_int_equal(backend_says(&h, replies + split), PROTO_CONTINUE);
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
		assert_drained(h.to_client, GREETING LIST_REPLY RETR_REPLY STLS_OK);
		assert_int_equal(evbuffer_get_length(h.to_backend), 0);
		free(first);
		harness_close(&h);
	}
}

/* A byte at a time, the STLS behind RETR is not answered before the last one. */
static void
test_pop3_body_a_byte_at_a_time(void **state)
{
	const char	*r = RETR_REPLY;
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	assert_int_equal(client_says(&h, "RETR 2\r\nSTLS\r\n"), PROTO_HOLD);
	for (size_t i = 0; r[i] != '\0'; i++) {
		char one[2] = { r[i], '\0' };

		backend_says(&h, one);
		assert_int_equal(harness_call(&h, HARNESS_CLIENT),
		    r[i + 1] == '\0' ? PROTO_UPGRADE : PROTO_HOLD);
	}
	assert_drained(h.to_client, GREETING RETR_REPLY STLS_OK);
	harness_close(&h);
}

/* A body in a hundred chunks goes to the client in one call, and only it. */
static void
test_pop3_body_in_many_chunks(void **state)
{
	struct harness	 h;
	struct evbuffer	*one;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "RETR 2\r\nNOOP\r\n");
	free(drain_string(h.to_client));
	evbuffer_add(h.from_backend, "+OK\r\n", 5);
	for (int i = 0; i < 100; i++) {
		assert_non_null(one = evbuffer_new());
		evbuffer_add_printf(one, "line %d\r\n", i);
		evbuffer_add_buffer(h.from_backend, one);
		evbuffer_free(one);
	}
	evbuffer_add(h.from_backend, ".\r\n+OK\r\n", 8);
	assert_int_equal(harness_call(&h, HARNESS_BACKEND), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_backend), 0);
	/* both replies are in: STLS is answered at once */
	assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_UPGRADE);
	harness_close(&h);
}

/* A -ERR is one line, whatever the command. */
static void
test_pop3_err_is_one_line(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "RETR 9\r\nLIST\r\nCAPA\r\nSTLS\r\n");
	backend_says(&h, "-ERR There's no message 9.\r\n-ERR Unknown command: LIST\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	backend_says(&h, "-ERR Unknown command: CAPA\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	/* before TLS, a backend without CAPA gets the proxy's list */
	assert_drained(h.to_client, GREETING "-ERR There's no message 9.\r\n"
	    "-ERR Unknown command: LIST\r\n" POP3_CAPA_OWN STLS_OK);
	harness_close(&h);
}

/* Under require_tls nothing but CAPA, QUIT and STLS reaches the backend. */
static void
test_pop3_require_tls_refuses(void **state)
{
	static const char *const login[] = {
		"USER alice\r\n", "PASS secret\r\n", "APOP alice 0123456789abcdef\r\n",
		"AUTH PLAIN\r\n", "AUTH\r\n", "auth plain AGFsaWNlAHNlY3JldA==\r\n", "user x\r\n",
	};
	static const char *const other[] = {
		"NOOP\r\n", "STAT\r\n", "RETR 1\r\n", "LIST\r\n", "XTND XLIST\r\n", "\r\n",
		"STARTTLS\r\n", "UTF8\r\n", "CAPAX\r\n", "QUIT\tnow\r\n",
	};
	struct harness	 h;

	(void)state;
	open_pop3(&h, true);
	backend_says(&h, GREETING);
	free(drain_string(h.to_client));
	for (size_t i = 0; i < sizeof(login) / sizeof(login[0]); i++) {
		assert_int_equal(client_says(&h, login[i]), PROTO_CONTINUE);
		assert_drained(h.to_client, AUTH_NEED_TLS);
	}
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		assert_int_equal(client_says(&h, other[i]), PROTO_CONTINUE);
		assert_drained(h.to_client, NEED_TLS);
	}
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	/* CAPA goes; its reply loses USER and SASL and gains STLS */
	assert_int_equal(client_says(&h, "CAPA\r\n"), PROTO_CONTINUE);
	assert_drained(h.to_backend, "CAPA\r\n");
	backend_says(&h, CAPA_REPLY);
	assert_drained(h.to_client,
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "STLS\r\n.\r\n");
	/* a refusal behind an open command waits for its reply */
	assert_int_equal(client_says(&h, "CAPA\r\nUSER alice\r\n"), PROTO_HOLD);
	assert_drained(h.to_backend, "CAPA\r\n");
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	backend_says(&h, "-ERR no\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_drained(h.to_client, POP3_CAPA_OWN AUTH_NEED_TLS);
	assert_int_equal(client_says(&h, "QUIT\r\n"), PROTO_CONTINUE);
	assert_drained(h.to_backend, "QUIT\r\n");
	harness_close(&h);
}

/* Without require_tls the cleartext CAPA keeps USER and SASL. */
static void
test_pop3_capa_before_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "CAPA\r\n");
	backend_says(&h, CAPA_REPLY);
	assert_drained(h.to_client, GREETING
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "USER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n");
	harness_close(&h);
}

/*
 * Inside TLS: STLS is the proxy's -ERR, CAPA loses STLS (and a -ERR to CAPA
 * stays one), and what the backend sends while nothing is asked is dropped.
 */
static void
test_pop3_inside_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_in_tls(&h, true);
	assert_int_equal(backend_says(&h, "-ERR late\r\n+OK stale\r\n"), PROTO_CONTINUE);
	assert_int_equal(h.dropped, 22);
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_CONTINUE);
	assert_drained(h.to_client, "-ERR TLS already active\r\n");
	client_says(&h, "CAPA\r\nCAPA\r\nSTLS\r\n");
	backend_says(&h, CAPA_REPLY "-ERR x\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_drained(h.to_client,
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "USER\r\nSASL PLAIN LOGIN\r\n.\r\n" "-ERR x\r\n" "-ERR TLS already active\r\n");
	/* USER and PASS go to the backend now; +OK to PASS ends the parsing */
	assert_int_equal(client_says(&h, "USER alice\r\nPASS alice-secret-pw\r\nSTAT\r\n"),
	    PROTO_CONTINUE);
	assert_drained(h.to_backend, "CAPA\r\nCAPA\r\nUSER alice\r\nPASS alice-secret-pw\r\nSTAT\r\n");
	assert_int_equal(backend_says(&h, "+OK\r\n"), PROTO_CONTINUE);
	assert_int_equal(backend_says(&h, "+OK Logged in.\r\n+OK 2 446\r\n"), PROTO_TRANSPARENT);
	assert_drained(h.to_client, "+OK\r\n+OK Logged in.\r\n");
	/* the rest is the session's to relay */
	assert_drained(h.from_backend, "+OK 2 446\r\n");
	harness_close(&h);
}

/*
 * XCLIENT and XOIP are a trusted proxy's, never a client's: refused before
 * TLS and inside it, with or without require_tls.
 */
static void
test_pop3_xclient_is_refused(void **state)
{
	struct harness	 h;

	(void)state;
	for (int tls = 0; tls <= 1; tls++) {
		if (tls)
			open_in_tls(&h, true);
		else {
			open_pop3(&h, false);
			backend_says(&h, GREETING);
		}
		free(drain_string(h.to_client));
		assert_int_equal(client_says(&h, "XCLIENT ADDR=192.0.2.66\r\nxoip 192.0.2.66\r\n"),
		    PROTO_CONTINUE);
		assert_drained(h.to_client, "-ERR XCLIENT is not allowed through the proxy\r\n"
		    "-ERR XCLIENT is not allowed through the proxy\r\n");
		assert_int_equal(evbuffer_get_length(h.to_backend), 0);
		harness_close(&h);
	}
}

/* A failed login keeps the parsing on; APOP and AUTH succeed alike. */
static void
test_pop3_logins(void **state)
{
	struct harness	 h;

	(void)state;
	open_in_tls(&h, true);
	client_says(&h, "USER alice\r\nPASS wrong\r\nAPOP alice 0123\r\n");
	assert_int_equal(backend_says(&h, "+OK\r\n-ERR [AUTH] Authentication failed.\r\n"),
	    PROTO_CONTINUE);
	assert_int_equal(backend_says(&h, "+OK Logged in.\r\n"), PROTO_TRANSPARENT);
	harness_close(&h);

	open_in_tls(&h, true);
	assert_int_equal(client_says(&h, "AUTH PLAIN AGFsaWNlAGFsaWNlLXNlY3JldC1wdw==\r\n"),
	    PROTO_CONTINUE);
	assert_int_equal(backend_says(&h, "+OK Logged in.\r\n"), PROTO_TRANSPARENT);
	harness_close(&h);

	/* a transparent listener: nothing to parse at all */
	harness_open(&h, &proto_pop3, NULL);
	h.conf.client_tls = CLIENT_TLS_NONE;
	assert_int_equal(backend_says(&h, GREETING), PROTO_TRANSPARENT);
	assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_TRANSPARENT);
	harness_close(&h);
}

/*
 * AUTH with a mechanism opens a dialogue (RFC 5034): a STLS behind it is
 * held, then relayed as the SASL response after the "+" challenge; only
 * once the dialogue is over is STLS the verb again.
 */
static void
test_pop3_sasl_dialogue_holds_stls(void **state)
{
	struct harness	 h;

	(void)state;
	for (int cancel = 0; cancel <= 1; cancel++) {
		open_pop3(&h, false);
		backend_says(&h, GREETING);
		assert_int_equal(client_says(&h, "AUTH LOGIN\r\nSTLS\r\n"), PROTO_HOLD);
		assert_drained(h.to_backend, "AUTH LOGIN\r\n");
		assert_int_equal(backend_says(&h, "+ VXNlcm5hbWU6\r\n"), PROTO_CONTINUE);
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
		assert_drained(h.to_backend, "STLS\r\n");
		assert_int_equal(backend_says(&h, "+ UGFzc3dvcmQ6\r\n"), PROTO_CONTINUE);
		if (cancel) {
			assert_int_equal(client_says(&h, "*\r\n"), PROTO_CONTINUE);
			assert_drained(h.to_backend, "*\r\n");
			assert_int_equal(backend_says(&h,
			    "-ERR Authentication aborted by client.\r\n"), PROTO_CONTINUE);
		} else {
			assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_CONTINUE);
			assert_drained(h.to_backend, "STLS\r\n");
			assert_int_equal(backend_says(&h, "-ERR [AUTH] Authentication failed.\r\n"),
			    PROTO_CONTINUE);
		}
		assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_UPGRADE);
		assert_int_equal(evbuffer_get_length(h.to_backend), 0);
		harness_close(&h);
	}

	/* a challenge nobody waits for is a protocol error */
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "AUTH PLAIN\r\n");
	backend_says(&h, "+ \r\n");
	assert_int_equal(backend_says(&h, "+ \r\n"), PROTO_CLOSE);
	assert_int_equal(h.end, END_BACKEND_ERROR);
	harness_close(&h);
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "NOOP\r\n");
	assert_int_equal(backend_says(&h, "+ \r\n"), PROTO_CLOSE);
	harness_close(&h);
}

/* AUTH alone and Dovecot's "AUTH  PLAIN" are the mechanism list. */
static void
test_pop3_auth_mechanism_list(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	assert_int_equal(client_says(&h, "AUTH\r\nAUTH  PLAIN\r\nSTLS\r\n"), PROTO_HOLD);
	backend_says(&h, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n+OK\r\n+OK fake\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	backend_says(&h, ".\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	harness_close(&h);
}

/* A verb the proxy does not know leaves no count to trust before TLS. */
static void
test_pop3_unknown_verb_refuses_stls(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "XTND XLIST Subject\r\n");
	assert_drained(h.to_backend, "XTND XLIST Subject\r\n");
	backend_says(&h, "-ERR Unknown command.\r\n");
	assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_CONTINUE);
	assert_drained(h.to_client, GREETING "-ERR Unknown command.\r\n"
	    "-ERR TLS not available after a command the proxy does not know\r\n");
	harness_close(&h);
}

/* Before TLS, a CR or a NUL inside a command line never reaches the backend. */
static void
test_pop3_cr_in_command_line(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	backend_says(&h, GREETING);
	free(drain_string(h.to_client));
	evbuffer_add(h.from_client, "ST\rLS\r\nUSER a\0b\r\nUSER a\r\r\n", 26);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_drained(h.to_client, "-ERR Command line with a CR or NUL refused\r\n"
	    "-ERR Command line with a CR or NUL refused\r\n"
	    "-ERR Command line with a CR or NUL refused\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);
}

/* 4 KiB before TLS, 16 KiB inside it until authentication, then a close. */
static void
test_pop3_line_limits(void **state)
{
	struct harness	 h;
	char		*line;

	(void)state;
	for (int tls = 0; tls <= 1; tls++) {
		size_t	 max = tls ? POP3_LINE_MAX : POP3_LINE_MAX_PRE_TLS;

		assert_non_null(line = malloc(max + 2));
		/* the longest line taken: max bytes with its CRLF */
		memset(line, 'x', max);
		memcpy(line, "NOOP ", 5);
		memcpy(line + max - 2, "\r\n", 3);
		if (tls)
			open_in_tls(&h, false);
		else {
			open_pop3(&h, false);
			backend_says(&h, GREETING);
		}
		free(drain_string(h.to_client));
		assert_int_equal(client_says(&h, line), PROTO_CONTINUE);
		assert_int_equal(evbuffer_get_length(h.to_backend), max);
		free(drain_string(h.to_backend));
		backend_says(&h, "+OK\r\n");
		free(drain_string(h.to_client));
		/* one byte more, no LF yet */
		memset(line, 'x', max + 1);
		line[max + 1] = '\0';
		assert_int_equal(client_says(&h, line), PROTO_CLOSE);
		assert_int_equal(h.end, END_PROTOCOL_ERROR);
		assert_drained(h.to_client, "-ERR Line too long\r\n");
		assert_int_equal(evbuffer_get_length(h.to_backend), 0);
		harness_close(&h);
		free(line);
	}
}

/* What the backend sends that the proxy cannot follow ends the session. */
static void
test_pop3_backend_errors(void **state)
{
	static const char *const bad[] = {
		"+ok\r\n", "OK\r\n", "* OK IMAP\r\n", "+OKAY\r\n",
	};
	struct harness	 h;
	char		*big;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		open_pop3(&h, false);
		assert_int_equal(backend_says(&h, bad[i]), PROTO_CLOSE);
		assert_int_equal(h.end, END_BACKEND_ERROR);
		assert_drained(h.to_client, BACKEND_ERROR);
		harness_close(&h);
	}
	/* a status line past 16 KiB, a CAPA reply past 16 KiB, a malformed CAPA */
	assert_non_null(big = malloc(POP3_CAPA_MAX + 64));
	open_pop3(&h, false);
	memset(big, 'x', POP3_REPLY_LINE_MAX);
	memcpy(big, "+OK ", 4);
	big[POP3_REPLY_LINE_MAX] = '\0';
	assert_int_equal(backend_says(&h, big), PROTO_CLOSE);
	harness_close(&h);

	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "CAPA\r\n");
	backend_says(&h, "+OK\r\n");
	memset(big, 'X', POP3_CAPA_MAX);
	for (size_t i = 99; i < POP3_CAPA_MAX; i += 100)
		memcpy(big + i - 1, "\r\n", 2);
	big[POP3_CAPA_MAX] = '\0';
	assert_int_equal(backend_says(&h, big), PROTO_CLOSE);
	assert_string_equal(h.reason, "a CAPA reply from the backend longer than 16 KiB");
	harness_close(&h);

	open_pop3(&h, false);
	backend_says(&h, GREETING);
	client_says(&h, "CAPA\r\n");
	assert_int_equal(backend_says(&h, "+OK\r\nT\rOP\r\n.\r\n"), PROTO_CLOSE);
	assert_string_equal(h.reason, "a malformed CAPA reply from the backend");
	harness_close(&h);
	free(big);
}

/*
 * At the upgrade the backend owes nothing: a line it had half sent, with
 * no command open, does not hold STLS, and inside TLS its end is dropped.
 */
static void
test_pop3_partial_line_at_the_upgrade(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, true);
	backend_says(&h, GREETING);
	assert_int_equal(backend_says(&h, "-ERR Disconn"), PROTO_CONTINUE);
	assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_UPGRADE);
	upgrade(&h);	/* the session drops the backend's input here */
	assert_int_equal(backend_says(&h, "ected for inactivity.\r\n"), PROTO_CONTINUE);
	assert_int_equal(h.dropped, 23);
	assert_drained(h.to_client, GREETING STLS_OK);
	harness_close(&h);
}

/* Guarantee 1: the module stops at the client's room and goes on from there. */
static void
test_pop3_stops_at_the_clients_room(void **state)
{
	struct harness	 h;
	size_t		 n = 0, got, total = 0;

	(void)state;
	open_pop3(&h, true);
	backend_says(&h, GREETING);
	free(drain_string(h.to_client));
	for (int i = 0; i < 1000; i++)
		evbuffer_add(h.from_client, "USER x\r\n", 8);
	h.client_room = 200;
	while (evbuffer_get_length(h.from_client) > 0 && n++ < 2000) {
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
		got = evbuffer_get_length(h.to_client);
		assert_true(got < 200 + strlen(AUTH_NEED_TLS));
		total += got;
		evbuffer_drain(h.to_client, got);	/* the client reads */
	}
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	assert_true(n > 10);
	assert_int_equal(total, 1000 * strlen(AUTH_NEED_TLS));
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);
}

/* At most POP3_PIPELINE_MAX commands in flight. */
static void
test_pop3_pipeline_bound(void **state)
{
	struct harness	 h;

	(void)state;
	open_pop3(&h, false);
	for (int i = 0; i < 200; i++)
		evbuffer_add(h.from_client, "NOOP\r\n", 6);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	/* the greeting counts */
	assert_int_equal(evbuffer_get_length(h.to_backend), (POP3_PIPELINE_MAX - 1) * 6);
	harness_close(&h);
}

/* The implicit listener (POP3S): its greeting is relayed, STLS hidden and refused. */
static void
test_pop3_implicit(void **state)
{
	struct harness	 h;

	(void)state;
	harness_open(&h, &proto_pop3, NULL);
	h.conf.client_tls = CLIENT_TLS_IMPLICIT;
	h.client_tls = true;
	assert_int_equal(harness_call(&h, HARNESS_TLS_READY), PROTO_CONTINUE);
	backend_says(&h, GREETING);
	client_says(&h, "CAPA\r\nSTLS\r\n");
	backend_says(&h, CAPA_REPLY);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_drained(h.to_client, GREETING
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "USER\r\nSASL PLAIN LOGIN\r\n.\r\n" "-ERR TLS already active\r\n");
	harness_close(&h);
}

/* backend.tls = "starttls": greeting kept, STLS, +OK, nothing more, then the greeting. */
static void
test_pop3_backend_starttls(void **state)
{
	static const struct {
		const char	*bytes;
		const char	*why;
	} fail[] = {
		{ "-ERR [SYS/TEMP] busy\r\n",
		  "STLS with the backend: the greeting is not +OK: -ERR [SYS/TEMP] busy" },
		{ "* OK IMAP4rev1\r\n", "STLS with the backend: not a POP3 reply: * OK IMAP4rev1" },
		{ GREETING "-ERR Unknown command.\r\n",
		  "STLS with the backend: STLS refused: -ERR Unknown command." },
		{ GREETING "+OK Begin TLS negotiation now.\r\n\x16\x03\x01",
		  "STLS with the backend: the backend sent bytes after its +OK reply, before TLS" },
	};
	struct harness	 h;

	(void)state;
	open_pop3(&h, true);
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);	/* the server speaks first */
	evbuffer_add(h.from_backend, GREETING, strlen(GREETING));
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
	assert_drained(h.to_backend, "STLS\r\n");
	evbuffer_add(h.from_backend, "+OK Begin TLS negotiation now.\r\n", 32);
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_UPGRADE);
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	/* in TLS, the greeting goes to the client first */
	assert_int_equal(harness_call(&h, HARNESS_BACKEND), PROTO_CONTINUE);
	assert_drained(h.to_client, GREETING);
	assert_int_equal(client_says(&h, "STLS\r\n"), PROTO_UPGRADE);
	harness_close(&h);

	for (size_t i = 0; i < sizeof(fail) / sizeof(fail[0]); i++) {
		open_pop3(&h, true);
		harness_call(&h, HARNESS_DIALOGUE);
		evbuffer_add(h.from_backend, fail[i].bytes, strlen(fail[i].bytes));
		assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CLOSE);
		assert_int_equal(h.end, END_BACKEND_TLS_FAILED);
		assert_string_equal(h.reason, fail[i].why);
		harness_close(&h);
	}
}

/* backend_failed and busy: -ERR [SYS/TEMP] (RFC 3206). */
static void
test_pop3_unavailable(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	struct harness	 h;

	(void)state;
	assert_non_null(b);
	proto_pop3.refuse(b, PROTO_REFUSAL_BUSY);
	assert_drained(b, "-ERR [SYS/TEMP] Too many connections, try again later\r\n");
	evbuffer_free(b);
	open_pop3(&h, true);
	{
		struct proto_io io = { .state = h.state, .conf = &h.conf, .to_client = h.to_client };

		proto_pop3.backend_failed(&io);
	}
	assert_drained(h.to_client, "-ERR [SYS/TEMP] Service not available\r\n");
	harness_close(&h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pop3_stls_waits_for_a_pipelined_body),
		cmocka_unit_test(test_pop3_body_a_byte_at_a_time),
		cmocka_unit_test(test_pop3_body_in_many_chunks),
		cmocka_unit_test(test_pop3_err_is_one_line),
		cmocka_unit_test(test_pop3_require_tls_refuses),
		cmocka_unit_test(test_pop3_capa_before_tls),
		cmocka_unit_test(test_pop3_inside_tls),
		cmocka_unit_test(test_pop3_logins),
		cmocka_unit_test(test_pop3_xclient_is_refused),
		cmocka_unit_test(test_pop3_sasl_dialogue_holds_stls),
		cmocka_unit_test(test_pop3_auth_mechanism_list),
		cmocka_unit_test(test_pop3_unknown_verb_refuses_stls),
		cmocka_unit_test(test_pop3_cr_in_command_line),
		cmocka_unit_test(test_pop3_line_limits),
		cmocka_unit_test(test_pop3_backend_errors),
		cmocka_unit_test(test_pop3_partial_line_at_the_upgrade),
		cmocka_unit_test(test_pop3_stops_at_the_clients_room),
		cmocka_unit_test(test_pop3_pipeline_bound),
		cmocka_unit_test(test_pop3_implicit),
		cmocka_unit_test(test_pop3_backend_starttls),
		cmocka_unit_test(test_pop3_unavailable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
