/*
 * Unit tests for the imap module (src/proto_imap.c), driven through
 * evbuffers as the session drives it (tests/harness.h): what it relays,
 * answers, holds and drops, literal by literal, and its side of
 * backend.tls = "starttls".  The backend's lines are Dovecot 2.3's, the
 * client's imaplib's and curl's (tests/fuzz/corpus/imap).
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
#include "proto.h"

#define GREETING "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE " \
	"LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.\r\n"
#define GREETING_PLAIN "* OK Dovecot (Debian) ready.\r\n"
#define CAPABILITY "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE " \
	"LITERAL+ AUTH=PLAIN AUTH=LOGIN\r\n"

static char *
take(struct evbuffer *buf)
{
	size_t	 len = evbuffer_get_length(buf);
	char	*s = malloc(len + 1);

	assert_non_null(s);
	evbuffer_remove(buf, s, len);
	s[len] = '\0';
	return s;
}

/* What the module wrote towards a side since the last look, compared and dropped. */
#define SENT(buf, want) do {					\
	char *got_ = take(buf);					\
	assert_string_equal(got_, (want));			\
	free(got_);						\
} while (0)

static enum proto_verdict
client(struct harness *h, const char *text)
{
	evbuffer_add(h->from_client, text, strlen(text));
	return harness_call(h, HARNESS_CLIENT);
}

static enum proto_verdict
backend(struct harness *h, const char *text)
{
	evbuffer_add(h->from_backend, text, strlen(text));
	return harness_call(h, HARNESS_BACKEND);
}

/* A STARTTLS listener in front of Dovecot, its greeting relayed. */
static void
open_imap(struct harness *h, bool require_tls, const char *greeting)
{
	harness_open(h, &proto_imap, NULL);
	h->conf.require_tls = require_tls;
	assert_int_equal(backend(h, greeting), PROTO_CONTINUE);
}

/* The upgrade, as the session makes it: what was behind the verb is gone. */
static void
upgrade(struct harness *h)
{
	evbuffer_drain(h->from_client, evbuffer_get_length(h->from_client));
	h->client_tls = true;
	assert_int_equal(harness_call(h, HARNESS_TLS_READY), PROTO_CONTINUE);
}

/* Capabilities before TLS: STARTTLS and LOGINDISABLED added, AUTH= gone. */
static void
test_greeting_and_capabilities_before_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, true, GREETING);
	SENT(h.to_client, "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
	    "LITERAL+ STARTTLS LOGINDISABLED] Dovecot (Debian) ready.\r\n");
	assert_int_equal(client(&h, "A001 CAPABILITY\r\n"), PROTO_CONTINUE);
	SENT(h.to_backend, "A001 CAPABILITY\r\n");
	assert_int_equal(backend(&h, CAPABILITY "A001 OK Pre-login capabilities listed.\r\n"),
	    PROTO_CONTINUE);
	SENT(h.to_client, "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
	    "LITERAL+ STARTTLS LOGINDISABLED\r\nA001 OK Pre-login capabilities listed.\r\n");
	harness_close(&h);

	/* without require_tls the AUTH= items stay */
	open_imap(&h, false, GREETING);
	SENT(h.to_client, "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
	    "LITERAL+ AUTH=PLAIN AUTH=LOGIN STARTTLS] Dovecot (Debian) ready.\r\n");
	harness_close(&h);
}

/* Under require_tls: NO to LOGIN and AUTHENTICATE, BAD to the rest; nothing relayed. */
static void
test_refusals_before_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 LOGIN alice \"pw\"\r\na2 AUTHENTICATE PLAIN\r\n"
	    "a3 SELECT INBOX\r\na4 ENABLE UTF8=ACCEPT\r\na5 NOOP\r\n"), PROTO_CONTINUE);
	SENT(h.to_client,
	    "a1 NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n"
	    "a2 NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n"
	    "a3 BAD [PRIVACYREQUIRED] Use STARTTLS first\r\n"
	    "a4 BAD [PRIVACYREQUIRED] Use STARTTLS first\r\n");
	SENT(h.to_backend, "a5 NOOP\r\n");
	harness_close(&h);
}

/*
 * A synchronizing literal on a refused command is refused before the
 * client sends it: no "+"; what comes next is a command.  A
 * non-synchronizing one is skipped with the command, unread.
 */
static void
test_literals_on_refused_commands(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 LOGIN {5}\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "a1 NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n");
	assert_int_equal(client(&h, "a2 NOOP\r\n"), PROTO_CONTINUE);
	SENT(h.to_backend, "a2 NOOP\r\n");
	assert_int_equal(backend(&h, "a2 OK NOOP completed.\r\n"), PROTO_CONTINUE);
	free(take(h.to_client));

	/* the literal holds what would be a command: it is data, and dropped */
	assert_int_equal(client(&h, "a3 LOGIN {9+}\r\nb1 NOOP\r\n {2+}\r\nxy\r\n"),
	    PROTO_CONTINUE);
	SENT(h.to_client, "a3 NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	/* in pieces, a byte at a time */
	for (const char *p = "a4 X {3+}\r\nabc\r\n"; *p != '\0'; p++) {
		char one[2] = { *p, '\0' };

		assert_int_equal(client(&h, one), PROTO_CONTINUE);
	}
	SENT(h.to_client, "a4 BAD [PRIVACYREQUIRED] Use STARTTLS first\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	harness_close(&h);
}

/*
 * A synchronizing literal on a relayed command: the line goes, the client
 * waits for the backend's "+", then n bytes pass unparsed; a tagged
 * completion instead ends the command.
 */
static void
test_synchronizing_literal_relayed(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	/* the client sends its literal before the "+" (it should not): held */
	assert_int_equal(client(&h, "a1 ID (\"name\" {12}\r\nx STARTTLS\r\n)\r\n"), PROTO_HOLD);
	SENT(h.to_backend, "a1 ID (\"name\" {12}\r\n");
	assert_int_equal(backend(&h, "+ OK\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "+ OK\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	SENT(h.to_backend, "x STARTTLS\r\n)\r\n");
	assert_int_equal(evbuffer_get_length(h.to_client), 0);	/* STARTTLS was data */
	assert_int_equal(backend(&h, "* ID NIL\r\na1 OK ID completed.\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "* ID NIL\r\na1 OK ID completed.\r\n");

	/* refused by the backend: the bytes after it are commands */
	assert_int_equal(client(&h, "a2 ID ({99}\r\n"), PROTO_HOLD);
	SENT(h.to_backend, "a2 ID ({99}\r\n");
	assert_int_equal(backend(&h, "a2 BAD Literal size too large\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "a2 BAD Literal size too large\r\n");
	assert_int_equal(client(&h, "a3 LOGIN x y\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "a3 NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);
}

/* {n+} on a relayed command only where the backend reads it as a literal. */
static void
test_nonsynchronizing_literal_relayed(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, true, GREETING);	/* LITERAL+ */
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 ID (\"name\" {12+}\r\nb STARTTLS\r\n)\r\n"),
	    PROTO_CONTINUE);
	SENT(h.to_backend, "a1 ID (\"name\" {12+}\r\nb STARTTLS\r\n)\r\n");
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	harness_close(&h);

	/* a backend without LITERAL+ would run "b NOOP" as a command */
	open_imap(&h, true, GREETING_PLAIN);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 ID (\"name\" {8+}\r\nb NOOP\r\n)\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "a1 BAD Non-synchronizing literal not supported here\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	/* LITERAL-: up to 4096 bytes */
	assert_int_equal(client(&h, "a2 CAPABILITY\r\n"), PROTO_CONTINUE);
	SENT(h.to_backend, "a2 CAPABILITY\r\n");
	assert_int_equal(backend(&h, "* CAPABILITY IMAP4rev1 LITERAL-\r\na2 OK done\r\n"),
	    PROTO_CONTINUE);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a3 ID ({1+}\r\nx)\r\n"), PROTO_CONTINUE);
	SENT(h.to_backend, "a3 ID ({1+}\r\nx)\r\n");
	assert_int_equal(backend(&h, "a3 OK done\r\n"), PROTO_CONTINUE);
	free(take(h.to_client));
	evbuffer_add_printf(h.from_client, "a4 ID ({4097+}\r\n%4097d)\r\n", 4097);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	SENT(h.to_client, "a4 BAD Non-synchronizing literal not supported here\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);
}

/* Lines the proxy cannot frame are answered BAD and never relayed. */
static void
test_unframeable_lines(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, false, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 NOOP x{5+}\r\nb1 NOOP\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "a1 BAD Error in IMAP command\r\n");
	SENT(h.to_backend, "b1 NOOP\r\n");
	assert_int_equal(backend(&h, "b1 OK done\r\n"), PROTO_CONTINUE);
	free(take(h.to_client));
	evbuffer_add(h.from_client, "a2 NOOP\nb2 LOGIN a\rb\r\nc2 NOOP\0\r\n", 32);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	SENT(h.to_client, "a2 BAD Bare CR, LF or NUL not allowed before TLS\r\n"
	    "b2 BAD Bare CR, LF or NUL not allowed before TLS\r\n"
	    "c2 BAD Bare CR, LF or NUL not allowed before TLS\r\n");
	assert_int_equal(client(&h, "+ NOOP\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "* BAD Error in IMAP command\r\n");
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);
}

/*
 * Guarantee 2: STARTTLS waits for the greeting, for the completion of
 * every command before it, and for the backend to be between responses.
 */
static void
test_starttls_waits(void **state)
{
	struct harness	 h;

	(void)state;
	harness_open(&h, &proto_imap, NULL);
	h.conf.require_tls = true;
	assert_int_equal(client(&h, "a STARTTLS\r\n"), PROTO_HOLD);
	assert_int_equal(backend(&h, GREETING), PROTO_CONTINUE);
	free(take(h.to_client));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	SENT(h.to_client, "a OK Begin TLS negotiation now\r\n");
	harness_close(&h);

	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 NOOP\r\na2 STARTTLS\r\n"), PROTO_HOLD);
	SENT(h.to_backend, "a1 NOOP\r\n");
	assert_int_equal(backend(&h, "* 1 EXI"), PROTO_CONTINUE);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	assert_int_equal(backend(&h, "STS\r\na1 OK NOOP completed.\r\n* OK half"), PROTO_CONTINUE);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);	/* a partial line */
	assert_int_equal(backend(&h, " a line\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "* 1 EXISTS\r\na1 OK NOOP completed.\r\n* OK half a line\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	SENT(h.to_client, "a2 OK Begin TLS negotiation now\r\n");
	harness_close(&h);

	/* a backend response with a literal, half relayed */
	open_imap(&h, false, GREETING);
	free(take(h.to_client));
	assert_int_equal(backend(&h, "* OK {4}\r\nab"), PROTO_CONTINUE);
	assert_int_equal(client(&h, "a STARTTLS\r\n"), PROTO_HOLD);
	assert_int_equal(backend(&h, "cd"), PROTO_CONTINUE);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);	/* its last line */
	assert_int_equal(backend(&h, " more\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "* OK {4}\r\nabcd more\r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_UPGRADE);
	harness_close(&h);
}

/*
 * AUTHENTICATE is a dialogue: after a "+", a line that reads STARTTLS is
 * the client's SASL response, relayed; the tagged OK authenticates.
 */
static void
test_sasl_dialogue(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, false, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a1 AUTHENTICATE PLAIN\r\nSTARTTLS\r\n"), PROTO_HOLD);
	SENT(h.to_backend, "a1 AUTHENTICATE PLAIN\r\n");
	assert_int_equal(backend(&h, "+ \r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "+ \r\n");
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);	/* the next "+" */
	SENT(h.to_backend, "STARTTLS\r\n");
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	assert_int_equal(client(&h, "*\r\n"), PROTO_HOLD);	/* no "+" yet */
	assert_int_equal(backend(&h, "+ \r\n"), PROTO_CONTINUE);
	free(take(h.to_client));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	SENT(h.to_backend, "*\r\n");
	assert_int_equal(backend(&h, "a1 BAD Authentication aborted by client.\r\n"),
	    PROTO_CONTINUE);
	SENT(h.to_client, "a1 BAD Authentication aborted by client.\r\n");
	/* the dialogue is over: STARTTLS is the verb again */
	assert_int_equal(client(&h, "a2 STARTTLS\r\n"), PROTO_UPGRADE);
	SENT(h.to_client, "a2 OK Begin TLS negotiation now\r\n");
	upgrade(&h);
	/* SASL-IR, inside TLS: authenticated, then transparent */
	assert_int_equal(client(&h, "a3 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n"), PROTO_HOLD);
	SENT(h.to_backend, "a3 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
	evbuffer_add_printf(h.from_backend, "a3 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
	    "* 1 EXISTS\r\n");
	assert_int_equal(harness_call(&h, HARNESS_BACKEND), PROTO_TRANSPARENT);
	SENT(h.to_client, "a3 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
	SENT(h.from_backend, "* 1 EXISTS\r\n");	/* the session relays the rest */
	harness_close(&h);
}

/*
 * Inside TLS: STARTTLS is refused, the capability lists lose STARTTLS and
 * LOGINDISABLED, and what answers nothing asked inside TLS is dropped.
 */
static void
test_inside_tls(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a STARTTLS\r\n"), PROTO_UPGRADE);
	free(take(h.to_client));
	upgrade(&h);
	/* nothing asked yet: all of it is dropped, a literal, a "+" and a BYE too */
	assert_int_equal(backend(&h, "* OK late\r\nz1 OK late\r\n* 1 FETCH (BODY[] {5}\r\n"
	    "z2 OK)\r\n+ go on\r\n* BYE late\r\n"), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_client), 0);
	assert_int_equal(h.dropped, strlen("* OK late\r\nz1 OK late\r\n* 1 FETCH (BODY[] {5}\r\n"
	    "z2 OK)\r\n+ go on\r\n* BYE late\r\n"));
	assert_int_equal(client(&h, "b STARTTLS\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "b BAD TLS already active\r\n");
	assert_int_equal(client(&h, "c CAPABILITY\r\n"), PROTO_CONTINUE);
	SENT(h.to_backend, "c CAPABILITY\r\n");
	assert_int_equal(backend(&h, "z3 OK not ours\r\n* CAPABILITY IMAP4rev1 STARTTLS "
	    "LOGINDISABLED AUTH=PLAIN\r\nc OK done\r\n* OK unsolicited\r\n* BYE going\r\n"),
	    PROTO_CONTINUE);
	SENT(h.to_client, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nc OK done\r\n* BYE going\r\n");
	/* a failed LOGIN keeps parsing; a successful one ends it */
	assert_int_equal(client(&h, "d LOGIN alice wrong\r\n"), PROTO_CONTINUE);
	assert_int_equal(backend(&h, "d NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
	    PROTO_CONTINUE);
	assert_int_equal(client(&h, "e LOGIN alice right\r\nf SELECT INBOX\r\n"), PROTO_CONTINUE);
	SENT(h.to_backend, "d LOGIN alice wrong\r\ne LOGIN alice right\r\nf SELECT INBOX\r\n");
	free(take(h.to_client));
	assert_int_equal(backend(&h, "* CAPABILITY IMAP4rev1 IDLE STARTTLS\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "* CAPABILITY IMAP4rev1 IDLE\r\n");
	assert_int_equal(backend(&h, "e OK Logged in\r\n"), PROTO_TRANSPARENT);
	SENT(h.to_client, "e OK Logged in\r\n");
	harness_close(&h);
}

/* A command whose tag is open waits: each completion names one command. */
static void
test_tag_in_use(void **state)
{
	struct harness	 h;

	(void)state;
	open_imap(&h, false, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a NOOP\r\na ID ({4}\r\n"), PROTO_HOLD);
	SENT(h.to_backend, "a NOOP\r\n");
	assert_int_equal(backend(&h, "a OK done\r\n"), PROTO_CONTINUE);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_HOLD);
	SENT(h.to_backend, "a ID ({4}\r\n");	/* the tag is free again */
	harness_close(&h);

	open_imap(&h, false, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a ID ({4}\r\n"), PROTO_HOLD);
	assert_int_equal(backend(&h, "+ OK\r\n"), PROTO_CONTINUE);
	assert_int_equal(client(&h, "abcd)\r\n"), PROTO_CONTINUE);
	assert_int_equal(client(&h, "a NOOP\r\n"), PROTO_HOLD);	/* until a's completion */
	assert_int_equal(backend(&h, "a OK done\r\n"), PROTO_CONTINUE);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	SENT(h.to_backend, "a ID ({4}\r\nabcd)\r\na NOOP\r\n");
	harness_close(&h);
}

/* Limits: 8 KiB before TLS, literals included; then a close. */
static void
test_line_limits(void **state)
{
	struct harness	 h;
	char		*big;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	big = malloc(9000);
	assert_non_null(big);
	memset(big, 'x', 9000);
	evbuffer_add(h.from_client, "a NOOP ", 7);
	evbuffer_add(h.from_client, big, 9000);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CLOSE);
	SENT(h.to_client, "* BAD [TOOBIG] Line too long\r\n");
	assert_int_equal(h.end, END_PROTOCOL_ERROR);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);

	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a LOGIN {8190+}\r\n"), PROTO_CLOSE);
	SENT(h.to_client, "* BAD [TOOBIG] Line too long\r\n");
	harness_close(&h);

	/* a refused {n}: no data will come, nothing to bound */
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a LOGIN {100000}\r\n"), PROTO_CONTINUE);
	SENT(h.to_client, "a NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n");
	harness_close(&h);

	/* inside TLS, 64 KiB a line, and a relayed literal is streamed */
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a STARTTLS\r\n"), PROTO_UPGRADE);
	upgrade(&h);
	assert_int_equal(client(&h, "b ID ({100000+}\r\n"), PROTO_CONTINUE);
	for (int i = 0; i < 11; i++) {
		evbuffer_add(h.from_client, big, 9000);
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
		assert_int_equal(evbuffer_get_length(h.from_client), 0);
	}
	assert_int_equal(evbuffer_get_length(h.to_backend), strlen("b ID ({100000+}\r\n") + 99000);
	free(take(h.to_backend));
	harness_close(&h);
	free(big);
}

/* PREAUTH: never on a STARTTLS listener; elsewhere, nothing to enforce. */
static void
test_preauth_greeting(void **state)
{
	struct harness	 h;

	(void)state;
	harness_open(&h, &proto_imap, NULL);
	assert_int_equal(backend(&h, "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\r\n"),
	    PROTO_CLOSE);
	SENT(h.to_client, "* BYE [UNAVAILABLE] Service not available\r\n");
	assert_int_equal(h.end, END_BACKEND_ERROR);
	harness_close(&h);

	harness_open(&h, &proto_imap, NULL);
	h.conf.client_tls = CLIENT_TLS_IMPLICIT;
	h.client_tls = true;
	assert_int_equal(harness_call(&h, HARNESS_TLS_READY), PROTO_CONTINUE);
	assert_int_equal(backend(&h, "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] Logged in\r\n"),
	    PROTO_TRANSPARENT);
	SENT(h.to_client, "* PREAUTH [CAPABILITY IMAP4rev1] Logged in\r\n");
	harness_close(&h);
}

/* What no backend may send: the session ends with * BYE. */
static void
test_backend_errors(void **state)
{
	static const char *const bad[] = {
		"A1 OK greeting with a tag\r\n",
		"* NO greeting\r\n",
		"+ greeting\r\n",
		"garbage\r\n",
		GREETING "+ OK\r\n",			/* a "+" when none is due */
		GREETING "* PREAUTH again\r\n",
		GREETING "* CAPABILITY IMAP4rev1 {8}\r\n",
		GREETING "* OK {99999999999999999999}\r\n",
	};
	struct harness	 h;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		harness_open(&h, &proto_imap, NULL);
		assert_int_equal(backend(&h, bad[i]), PROTO_CLOSE);
		assert_int_equal(h.end, END_BACKEND_ERROR);
		harness_close(&h);
	}
	/* a tagged response with a literal, to a command that is open */
	open_imap(&h, false, GREETING);
	assert_int_equal(client(&h, "a NOOP\r\n"), PROTO_CONTINUE);
	assert_int_equal(backend(&h, "a OK {3}\r\n"), PROTO_CLOSE);
	harness_close(&h);
}

/* A literal in many chunks goes to the backend in one call. */
static void
test_literal_in_many_chunks(void **state)
{
	struct harness	 h;
	struct evbuffer	*one;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	assert_int_equal(client(&h, "a STARTTLS\r\n"), PROTO_UPGRADE);
	upgrade(&h);
	assert_int_equal(client(&h, "b LOGIN {500}\r\n"), PROTO_HOLD);
	assert_int_equal(backend(&h, "+ OK\r\n"), PROTO_CONTINUE);
	for (int i = 0; i < 100; i++) {
		one = evbuffer_new();
		evbuffer_add(one, "12345", 5);
		evbuffer_add_buffer(h.from_client, one);
		evbuffer_free(one);
	}
	evbuffer_add(h.from_client, " {2+}\r\nxy\r\n", 11);
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.from_client), 0);
	assert_int_equal(evbuffer_get_length(h.to_backend), 15 + 500 + 11);
	harness_close(&h);
}

/* backend.tls = "starttls": the proxy's own dialogue, then the kept greeting. */
static void
test_backend_starttls(void **state)
{
	struct harness	 h;

	(void)state;
	harness_open(&h, &proto_imap, NULL);
	h.conf.require_tls = true;
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	evbuffer_add(h.from_backend, GREETING_PLAIN, strlen(GREETING_PLAIN));
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
	SENT(h.to_backend, "A1 CAPABILITY\r\n");
	evbuffer_add_printf(h.from_backend, "* CAPABILITY IMAP4rev1 LITERAL+ STARTTLS "
	    "LOGINDISABLED\r\nA1 OK Pre-login capabilities listed.\r\n");
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
	SENT(h.to_backend, "A2 STARTTLS\r\n");
	evbuffer_add_printf(h.from_backend, "A2 OK Begin TLS negotiation now.\r\n");
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_UPGRADE);
	/* up, in TLS: the greeting is the client's now */
	assert_int_equal(harness_call(&h, HARNESS_BACKEND), PROTO_CONTINUE);
	SENT(h.to_client, GREETING_PLAIN);
	assert_int_equal(client(&h, "a ID ({1+}\r\nx)\r\n"), PROTO_CONTINUE);	/* LITERAL+ known */
	SENT(h.to_backend, "a ID ({1+}\r\nx)\r\n");
	harness_close(&h);

	/* a greeting with STARTTLS in its list: no A1 */
	harness_open(&h, &proto_imap, NULL);
	evbuffer_add_printf(h.from_backend, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_CONTINUE);
	SENT(h.to_backend, "A2 STARTTLS\r\n");
	evbuffer_add_printf(h.from_backend, "A2 OK go\r\n");
	assert_int_equal(harness_call(&h, HARNESS_DIALOGUE), PROTO_UPGRADE);
	assert_int_equal(harness_call(&h, HARNESS_BACKEND), PROTO_CONTINUE);
	SENT(h.to_client, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
	harness_close(&h);
}

static void
bup_fails(const char *const *lines, size_t n, const char *why)
{
	struct harness		 h;
	enum proto_verdict	 v = PROTO_CONTINUE;

	harness_open(&h, &proto_imap, NULL);
	for (size_t i = 0; i < n && v == PROTO_CONTINUE; i++) {
		evbuffer_add(h.from_backend, lines[i], strlen(lines[i]));
		v = harness_call(&h, HARNESS_DIALOGUE);
	}
	assert_int_equal(v, PROTO_CLOSE);
	assert_int_equal(h.end, END_BACKEND_TLS_FAILED);
	assert_non_null(strstr(h.reason, why));
	harness_close(&h);
}

static void
test_backend_starttls_failures(void **state)
{
	static const char *const preauth[] = { "* PREAUTH logged in\r\n" };
	static const char *const bye[] = { "* BYE busy\r\n" };
	static const char *const not_offered[] = { "* OK [CAPABILITY IMAP4rev1] hi\r\n" };
	static const char *const not_offered_a1[] = { "* OK hi\r\n",
	    "* CAPABILITY IMAP4rev1\r\nA1 OK done\r\n" };
	static const char *const refused[] = { "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
	    "A2 NO not now\r\n" };
	static const char *const after[] = { "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
	    "A2 OK go\r\n* OK injected\r\n" };
	static const char *const other[] = { "* OK [CAPABILITY STARTTLS] hi\r\n", "A1 OK x\r\n" };
	static const char *const cont[] = { "* OK [CAPABILITY STARTTLS] hi\r\n", "+ go\r\n" };
	static const char *const literal[] = { "* OK hi\r\n", "* CAPABILITY {8}\r\n" };

	(void)state;
	bup_fails(preauth, 1, "PREAUTH");
	bup_fails(bye, 1, "BYE");
	bup_fails(not_offered, 1, "does not offer STARTTLS");
	bup_fails(not_offered_a1, 2, "does not offer STARTTLS");
	bup_fails(refused, 2, "STARTTLS refused: A2 NO not now");
	bup_fails(after, 2, "bytes after its OK");
	bup_fails(other, 2, "another command");
	bup_fails(cont, 2, "continuation");
	bup_fails(literal, 2, "literal");
}

/* Guarantee 1: a client that does not read its refusals is paused. */
static void
test_stops_at_the_clients_room(void **state)
{
	struct harness	 h;
	size_t		 rounds = 0;

	(void)state;
	open_imap(&h, true, GREETING);
	free(take(h.to_client));
	for (int i = 0; i < 1000; i++)
		evbuffer_add(h.from_client, "a LOGIN x y\r\n", 13);
	h.client_room = 300;
	while (evbuffer_get_length(h.from_client) > 0 && rounds++ < 2000) {
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONTINUE);
		assert_true(h.stopped || evbuffer_get_length(h.from_client) == 0);
		assert_true(evbuffer_get_length(h.to_client) < 300 + 128);
		evbuffer_drain(h.to_client, evbuffer_get_length(h.to_client));
	}
	assert_true(rounds > 100);
	assert_int_equal(evbuffer_get_length(h.to_backend), 0);
	harness_close(&h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_capabilities_before_tls),
		cmocka_unit_test(test_refusals_before_tls),
		cmocka_unit_test(test_literals_on_refused_commands),
		cmocka_unit_test(test_synchronizing_literal_relayed),
		cmocka_unit_test(test_nonsynchronizing_literal_relayed),
		cmocka_unit_test(test_unframeable_lines),
		cmocka_unit_test(test_starttls_waits),
		cmocka_unit_test(test_sasl_dialogue),
		cmocka_unit_test(test_inside_tls),
		cmocka_unit_test(test_tag_in_use),
		cmocka_unit_test(test_line_limits),
		cmocka_unit_test(test_preauth_greeting),
		cmocka_unit_test(test_backend_errors),
		cmocka_unit_test(test_literal_in_many_chunks),
		cmocka_unit_test(test_backend_starttls),
		cmocka_unit_test(test_backend_starttls_failures),
		cmocka_unit_test(test_stops_at_the_clients_room),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
