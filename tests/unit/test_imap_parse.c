/*
 * Unit tests for src/imap_parse.c: the framing of command and response
 * lines and the literals that end them, tags and verbs, response lines,
 * and the capability list rewrite in each of its three places.  The
 * fixtures are lines that Python's imaplib, curl, openssl s_client and
 * Dovecot 2.3 sent (tests/fuzz/corpus/imap, made by capture-corpus), and
 * hand-made variants of them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "imap_parse.h"

/* Dovecot 2.3's greeting, CAPABILITY reply and OK, as captured. */
#define DOVECOT_GREETING \
	"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ " \
	"AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready."
#define DOVECOT_TLS_GREETING \
	"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ " \
	"STARTTLS AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready."
#define DOVECOT_CAPABILITY \
	"* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS " \
	"AUTH=PLAIN AUTH=LOGIN"
#define DOVECOT_CAPABILITY_OK \
	"IFKE0 OK Pre-login capabilities listed, post-login capabilities have more."
/* Dovecot with disable_plaintext_auth = yes, to a client it does not trust */
#define DOVECOT_LOGINDISABLED \
	"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ " \
	"STARTTLS LOGINDISABLED] Dovecot (Debian) ready."
#define DOVECOT_LOGGED_IN \
	"a3 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT " \
	"LITERAL+ NOTIFY] Logged in"

static struct imap_line
line(const char *s, enum imap_line_mode mode)
{
	struct imap_line	 l;
	char			*p = exact(s, strlen(s));

	memset(&l, 0xa5, sizeof(l));
	assert_int_equal(imap_line_next(p, strlen(s), IMAP_LINE_MAX, mode, &l), PARSE_OK);
	free(p);
	return l;
}

static struct imap_line
command_line(const char *s)
{
	return line(s, IMAP_LINE_COMMAND);
}

/* The lines imaplib, curl and openssl s_client sent, as the proxy frames them. */
static void
test_line_real_commands(void **state)
{
	static const char *const plain[] = {
		"JDNI0 CAPABILITY\r\n",
		"JDNI1 LOGIN alice \"alice-secret-pw\"\r\n",
		"JDNI3 FETCH 1 (FLAGS BODY.PEEK[])\r\n",
		"CLFB1 AUTHENTICATE PLAIN\r\n",
		"AGFsaWNlAGFsaWNlLXNlY3JldC1wdw==\r\n",
		"A002 AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXNlY3JldC1wdw==\r\n",
		"A004 UID FETCH 1 BODY[]\r\n",
		". STARTTLS\r\n",
		"stp\"{}\" \"version\" \"1\")\r\n",	/* braces in a quoted string */
	};
	struct imap_line	 l;

	(void)state;
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		l = command_line(plain[i]);
		assert_int_equal(l.len, strlen(plain[i]));
		assert_int_equal(l.textlen, strlen(plain[i]) - 2);
		assert_true(l.clean);
		assert_false(l.malformed);
		assert_int_equal(l.literal, IMAP_LITERAL_NONE);
		assert_false(l.literal8);
		assert_int_equal(l.literal_size, 0);
	}

	/* imaplib's LOGIN with the password as a literal */
	l = command_line("MNMH1 LOGIN alice {15}\r\nalice-secret-pw\r\n");
	assert_int_equal(l.len, strlen("MNMH1 LOGIN alice {15}\r\n"));
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_int_equal(l.literal_size, 15);
	assert_false(l.malformed);
	assert_true(l.clean);
}

/* RFC 7888: "{n+}", after SP or '('; RFC 3516: "~{n}". */
static void
test_line_literals(void **state)
{
	struct imap_line	 l;

	(void)state;
	l = command_line("a3 LOGIN {5+}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_NONSYNC);
	assert_int_equal(l.literal_size, 5);
	l = command_line("alice {15+}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_NONSYNC);
	assert_int_equal(l.literal_size, 15);
	l = command_line("a2 ID (\"name\" {7+}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_NONSYNC);
	assert_int_equal(l.literal_size, 7);
	l = command_line("a ID ({4}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_int_equal(l.literal_size, 4);
	l = command_line("a APPEND INBOX ~{12}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_true(l.literal8);
	assert_int_equal(l.literal_size, 12);
	l = command_line("a APPEND INBOX (\\Seen) ~{0+}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_NONSYNC);
	assert_true(l.literal8);
	assert_int_equal(l.literal_size, 0);
	l = command_line("a LOGIN {007}\r\n");		/* Dovecot reads 7 */
	assert_int_equal(l.literal_size, 7);
	l = command_line("a X {9223372036854775807}\r\n");
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_int_equal(l.literal_size, UINT64_C(9223372036854775807));
	/* a bare LF ends the line too; the literal is there, the line not clean */
	l = command_line("a LOGIN {5}\n");
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_int_equal(l.textlen, strlen("a LOGIN {5}"));
	assert_false(l.clean);
	/* an escaped backslash closes the string; an escaped quote does not */
	l = command_line("a LOGIN \"x\\\\\" {5}\r\n");
	assert_false(l.malformed);
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	/* '}' is an ATOM-CHAR: an atom may end with one */
	l = command_line("a LOGIN user pass}\r\n");
	assert_false(l.malformed);
	assert_int_equal(l.literal, IMAP_LITERAL_NONE);
}

/*
 * Lines the proxy cannot frame as every server would: malformed, and no
 * literal is honoured on them.
 */
static void
test_line_malformed(void **state)
{
	static const char *const bad[] = {
		"a LOGIN x{5}\r\n",		/* glued to an atom: Dovecot says BAD, no literal */
		"a LOGIN \"a\"{5}\r\n",		/* glued to a quoted string: Dovecot takes it */
		"a LOGIN \"x {5}\r\n",		/* inside an unterminated quoted string */
		"a LOGIN \"x\\\" {5}\r\n",	/* the quote is escaped: still inside */
		"a LOGIN \"x\\",		/* a backslash at the end of the line */
		"a LOGIN {5a}\r\n",
		"a LOGIN {}\r\n",
		"a LOGIN {+}\r\n",
		"a LOGIN {5++}\r\n",
		"a LOGIN {-5}\r\n",
		"a {5} LOGIN\r\n",		/* a marker that does not end the line */
		"a LOGIN {5}x\r\n",
		"a LOGIN {5} \r\n",
		"{5}\r\n",
		"a X {99999999999999999999}\r\n",	/* 20 digits */
		"a X x~{5}\r\n",
		"a LOGIN \"unterminated\r\n",
	};
	struct imap_line	 l;
	char			 buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s", bad[i],
		    strchr(bad[i], '\n') == NULL ? "\r\n" : "");
		l = command_line(buf);
		assert_true(l.malformed);
		assert_int_equal(l.literal, IMAP_LITERAL_NONE);
		assert_false(l.literal8);
		assert_int_equal(l.literal_size, 0);
		assert_int_equal(l.len, strlen(buf));
	}
}

/* Before TLS only CRLF, with no other CR and no NUL, is clean. */
static void
test_line_clean(void **state)
{
	static const char *const unclean[] = {
		"a NOOP\n", "a NO\rOP\r\n", "a NOOP\r\r\n", "\n", "\ra NOOP\r\n",
	};
	static const char nul[] = "a NO\0OP\r\n";
	struct imap_line	 l;
	char			*p;

	(void)state;
	for (size_t i = 0; i < sizeof(unclean) / sizeof(unclean[0]); i++)
		assert_false(command_line(unclean[i]).clean);
	assert_true(command_line("\r\n").clean);
	p = exact(nul, sizeof(nul) - 1);
	assert_int_equal(imap_line_next(p, sizeof(nul) - 1, 64, IMAP_LINE_COMMAND, &l), PARSE_OK);
	assert_false(l.clean);
	assert_int_equal(l.len, sizeof(nul) - 1);
	free(p);
	l = command_line("a NOOP\r\n");
	assert_true(l.clean);
}

/* NEED_MORE and TOO_LONG write nothing; the bound counts the LF. */
static void
test_line_bounds(void **state)
{
	struct imap_line	 l, sentinel;
	char			*p;

	(void)state;
	memset(&sentinel, 0x5a, sizeof(sentinel));
	l = sentinel;
	p = exact("a NOOP\r", 7);
	assert_int_equal(imap_line_next(p, 7, 64, IMAP_LINE_COMMAND, &l), PARSE_NEED_MORE);
	assert_memory_equal(&l, &sentinel, sizeof(l));
	assert_int_equal(imap_line_next(p, 7, 7, IMAP_LINE_COMMAND, &l), PARSE_TOO_LONG);
	assert_memory_equal(&l, &sentinel, sizeof(l));
	free(p);
	p = exact("a NOOP\r\n", 8);
	assert_int_equal(imap_line_next(p, 8, 7, IMAP_LINE_COMMAND, &l), PARSE_TOO_LONG);
	assert_int_equal(imap_line_next(p, 8, 8, IMAP_LINE_COMMAND, &l), PARSE_OK);
	assert_int_equal(l.len, 8);
	assert_int_equal(imap_line_next(p, 0, 8, IMAP_LINE_COMMAND, &l), PARSE_NEED_MORE);
	free(p);
}

/* A response's literal is any "{digits}" that ends it; "+" is no part of it. */
static void
test_line_responses(void **state)
{
	struct imap_line	 l;

	(void)state;
	l = line("* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {317}\r\n", IMAP_LINE_RESPONSE);
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_int_equal(l.literal_size, 317);
	l = line("* 1 FETCH (BINARY[] ~{8}\r\n", IMAP_LINE_RESPONSE);
	assert_true(l.literal8);
	l = line("* OK text {5+}\r\n", IMAP_LINE_RESPONSE);
	assert_int_equal(l.literal, IMAP_LITERAL_NONE);
	l = line("* OK \"{5}\r\n", IMAP_LINE_RESPONSE);	/* as imaplib reads it */
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	l = line("* OK x{5}\r\n", IMAP_LINE_RESPONSE);
	assert_int_equal(l.literal, IMAP_LITERAL_SYNC);
	assert_false(l.malformed);
	l = line(DOVECOT_GREETING "\r\n", IMAP_LINE_RESPONSE);
	assert_int_equal(l.literal, IMAP_LITERAL_NONE);
	assert_false(l.malformed);
	l = line("* 1 FETCH (BODY[] {99999999999999999999}\r\n", IMAP_LINE_RESPONSE);
	assert_true(l.malformed);
	assert_int_equal(l.literal, IMAP_LITERAL_NONE);
}

static struct imap_command
command(const char *s, enum parse_result want)
{
	struct imap_command	 c;

	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(imap_command_parse(s, strlen(s), &c), want);
	return c;
}

/* Tags as imaplib ("JDNI0"), curl ("A001") and openssl s_client (".") write them. */
static void
test_command_tags_and_verbs(void **state)
{
	static const struct {
		const char	*text;
		const char	*tag;
		enum imap_verb	 verb;
	} ok[] = {
		{ "JDNI0 CAPABILITY", "JDNI0", IMAP_CAPABILITY },
		{ "A001 capability", "A001", IMAP_CAPABILITY },
		{ ". STARTTLS", ".", IMAP_STARTTLS },
		{ "a StartTLS", "a", IMAP_STARTTLS },
		{ "a NOOP", "a", IMAP_NOOP },
		{ "a logout", "a", IMAP_LOGOUT },
		{ "a ID (\"name\" \"x\")", "a", IMAP_ID },
		{ "a IDLE", "a", IMAP_OTHER },
		{ "JDNI1 LOGIN alice \"alice-secret-pw\"", "JDNI1", IMAP_LOGIN },
		{ "CLFB1 AUTHENTICATE PLAIN", "CLFB1", IMAP_AUTHENTICATE },
		{ "A004 UID FETCH 1 BODY[]", "A004", IMAP_OTHER },
		{ "x] ENABLE UTF8=ACCEPT", "x]", IMAP_OTHER },	/* ']' is an ASTRING-CHAR */
		{ "a STARTTLSX", "a", IMAP_OTHER },
	};
	struct imap_command	 c;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		c = command(ok[i].text, PARSE_OK);
		assert_ptr_equal(c.tag, ok[i].text);
		assert_int_equal(c.taglen, strlen(ok[i].tag));
		assert_int_equal(c.verb, ok[i].verb);
	}
	c = command("JDNI1 LOGIN alice \"pw\"", PARSE_OK);
	assert_string_equal(c.args, "alice \"pw\"");
	assert_int_equal(c.argslen, strlen("alice \"pw\""));
	c = command("a NOOP", PARSE_OK);
	assert_null(c.args);
	assert_int_equal(c.argslen, 0);
	c = command("a NOOP ", PARSE_OK);
	assert_non_null(c.args);
	assert_int_equal(c.argslen, 0);
}

/* What is no command; the tag is kept when it alone was valid. */
static void
test_command_malformed(void **state)
{
	static const char *const no_tag[] = {
		"", "a", " NOOP", "+ NOOP", "a+ NOOP", "* NOOP", "a(b NOOP",
		"a{5} NOOP", "a\"b NOOP", "a%b NOOP", "a\\b NOOP", "\x80 NOOP", "a\tNOOP",
	};
	struct imap_command	 c;
	char			 tag[IMAP_TAG_MAX + 8];

	(void)state;
	for (size_t i = 0; i < sizeof(no_tag) / sizeof(no_tag[0]); i++) {
		c = command(no_tag[i], PARSE_MALFORMED);
		assert_null(c.tag);
		assert_int_equal(c.taglen, 0);
		assert_int_equal(c.verb, IMAP_OTHER);
	}
	/* a valid tag, a bad verb: the tag is there for the reply */
	c = command("a  NOOP", PARSE_MALFORMED);
	assert_int_equal(c.taglen, 1);
	c = command("a NO(OP", PARSE_MALFORMED);
	assert_int_equal(c.taglen, 1);
	c = command("a NOOP\r", PARSE_MALFORMED);
	assert_int_equal(c.taglen, 1);
	c = command("a ", PARSE_MALFORMED);
	assert_int_equal(c.taglen, 1);
	c = command("a {5}", PARSE_MALFORMED);
	assert_int_equal(c.taglen, 1);
	/* IMAP_TAG_MAX bytes of tag, and one more */
	memset(tag, 'T', sizeof(tag));
	memcpy(tag + IMAP_TAG_MAX, " NOOP", 6);
	c = command(tag, PARSE_OK);
	assert_int_equal(c.taglen, IMAP_TAG_MAX);
	memset(tag, 'T', sizeof(tag));
	memcpy(tag + IMAP_TAG_MAX + 1, " NOOP", 6);
	c = command(tag, PARSE_MALFORMED);
	assert_null(c.tag);
}

static void
test_allowed_before_tls(void **state)
{
	(void)state;
	assert_true(imap_allowed_before_tls(IMAP_CAPABILITY));
	assert_true(imap_allowed_before_tls(IMAP_NOOP));
	assert_true(imap_allowed_before_tls(IMAP_LOGOUT));
	assert_true(imap_allowed_before_tls(IMAP_ID));
	assert_true(imap_allowed_before_tls(IMAP_STARTTLS));
	assert_false(imap_allowed_before_tls(IMAP_LOGIN));
	assert_false(imap_allowed_before_tls(IMAP_AUTHENTICATE));
	assert_false(imap_allowed_before_tls(IMAP_OTHER));
}

static struct imap_response
response(const char *s, enum parse_result want)
{
	struct imap_response	 r, sentinel;
	char			*p = exact(s, strlen(s));

	memset(&sentinel, 0xa5, sizeof(sentinel));
	r = sentinel;
	assert_int_equal(imap_response_parse(p, strlen(s), &r), want);
	if (want != PARSE_OK)
		assert_memory_equal(&r, &sentinel, sizeof(r));
	free(p);
	return r;
}

/* Dovecot's responses, and the kinds and codes the module goes by. */
static void
test_responses(void **state)
{
	struct imap_response	 r;
	const char		*s;

	(void)state;
	s = DOVECOT_GREETING;
	r = response(s, PARSE_OK);
	assert_int_equal(r.kind, IMAP_RESP_UNTAGGED);
	assert_int_equal(r.status, IMAP_STATUS_OK);
	assert_true(r.capability);
	assert_int_equal(r.caps_off, strlen("* OK [CAPABILITY"));
	assert_int_equal(r.caps_off + r.caps_len, strchr(s, ']') - s);

	s = DOVECOT_CAPABILITY;
	r = response(s, PARSE_OK);
	assert_int_equal(r.kind, IMAP_RESP_UNTAGGED);
	assert_int_equal(r.status, IMAP_STATUS_NONE);
	assert_true(r.capability);
	assert_int_equal(r.caps_off, strlen("* CAPABILITY"));
	assert_int_equal(r.caps_len, strlen(s) - strlen("* CAPABILITY"));

	s = DOVECOT_CAPABILITY_OK;
	assert_int_equal(imap_response_parse(s, strlen(s), &r), PARSE_OK);
	assert_int_equal(r.kind, IMAP_RESP_TAGGED);
	assert_ptr_equal(r.tag, s);
	assert_int_equal(r.taglen, 5);
	assert_int_equal(r.status, IMAP_STATUS_OK);
	assert_false(r.capability);

	r = response(DOVECOT_LOGGED_IN, PARSE_OK);
	assert_int_equal(r.kind, IMAP_RESP_TAGGED);
	assert_true(r.capability);

	r = response(". OK Begin TLS negotiation now.", PARSE_OK);
	assert_int_equal(r.taglen, 1);
	r = response("a1 NO [AUTHENTICATIONFAILED] Authentication failed.", PARSE_OK);
	assert_int_equal(r.status, IMAP_STATUS_NO);
	assert_false(r.capability);
	r = response("a1 bad Error in IMAP command", PARSE_OK);
	assert_int_equal(r.status, IMAP_STATUS_BAD);
	r = response("* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice", PARSE_OK);
	assert_int_equal(r.status, IMAP_STATUS_PREAUTH);
	assert_true(r.capability);
	r = response("* BYE Logging out", PARSE_OK);
	assert_int_equal(r.status, IMAP_STATUS_BYE);
	r = response("* 1 EXISTS", PARSE_OK);
	assert_int_equal(r.status, IMAP_STATUS_NONE);
	assert_false(r.capability);
	r = response("* ID (\"name\" \"Dovecot\")", PARSE_OK);
	assert_false(r.capability);
	r = response("* OK [CAPABILITYX a] x", PARSE_OK);
	assert_false(r.capability);
	r = response("* CAPABILITYX a", PARSE_OK);
	assert_false(r.capability);
	r = response("* OK [CAPABILITY] empty", PARSE_OK);
	assert_true(r.capability);
	assert_int_equal(r.caps_len, 0);

	/* continuations: Dovecot's "+ OK" to a literal, "+ " to AUTHENTICATE */
	assert_int_equal(response("+ OK", PARSE_OK).kind, IMAP_RESP_CONTINUATION);
	assert_int_equal(response("+ ", PARSE_OK).kind, IMAP_RESP_CONTINUATION);
	assert_int_equal(response("+", PARSE_OK).kind, IMAP_RESP_CONTINUATION);

	response("+OK", PARSE_MALFORMED);
	response("", PARSE_MALFORMED);
	response("*", PARSE_MALFORMED);
	response("* ", PARSE_MALFORMED);
	response("a", PARSE_MALFORMED);
	response("a ", PARSE_MALFORMED);
	response("a BYE now", PARSE_MALFORMED);
	response("a PREAUTH now", PARSE_MALFORMED);
	response("a FETCH x", PARSE_MALFORMED);
	response("a(b OK x", PARSE_MALFORMED);
	response("* OK [CAPABILITY IMAP4rev1 STARTTLS", PARSE_MALFORMED);
}

static char *
rewrite(const char *s, unsigned flags)
{
	static char	 out[4096];
	char		*p = exact(s, strlen(s));
	ssize_t		 n = imap_capability_rewrite(p, strlen(s), flags, out, sizeof(out) - 1);

	free(p);
	assert_true(n > 0);
	assert_true((size_t)n <= strlen(s) + IMAP_CAPABILITY_GROWTH + 2);
	out[n] = '\0';
	return out;
}

#define BEFORE_TLS	IMAP_CAPS_ADD_STARTTLS
#define BEFORE_TLS_REQUIRED (IMAP_CAPS_ADD_STARTTLS | IMAP_CAPS_ADD_LOGINDISABLED | \
	IMAP_CAPS_DROP_AUTH)
#define INSIDE_TLS	(IMAP_CAPS_DROP_STARTTLS | IMAP_CAPS_DROP_LOGINDISABLED)

/* The greeting's [CAPABILITY ...] code. */
static void
test_rewrite_greeting(void **state)
{
	(void)state;
	assert_string_equal(rewrite(DOVECOT_GREETING, BEFORE_TLS_REQUIRED),
	    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
	    "STARTTLS LOGINDISABLED] Dovecot (Debian) ready.\r\n");
	assert_string_equal(rewrite(DOVECOT_GREETING, BEFORE_TLS),
	    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
	    "AUTH=PLAIN AUTH=LOGIN STARTTLS] Dovecot (Debian) ready.\r\n");
	/* Dovecot with ssl = yes offers STARTTLS itself: not twice */
	assert_string_equal(rewrite(DOVECOT_TLS_GREETING, BEFORE_TLS),
	    DOVECOT_TLS_GREETING "\r\n");
	/* a LOGINDISABLED of the backend's own is kept before TLS */
	assert_string_equal(rewrite(DOVECOT_LOGINDISABLED, BEFORE_TLS),
	    DOVECOT_LOGINDISABLED "\r\n");
	assert_string_equal(rewrite(DOVECOT_LOGINDISABLED, BEFORE_TLS_REQUIRED),
	    DOVECOT_LOGINDISABLED "\r\n");
	/* IMAPS, or inside TLS: neither STARTTLS nor LOGINDISABLED */
	assert_string_equal(rewrite(DOVECOT_LOGINDISABLED, INSIDE_TLS),
	    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+] "
	    "Dovecot (Debian) ready.\r\n");
	assert_string_equal(rewrite("* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] Logged in",
	    INSIDE_TLS), "* PREAUTH [CAPABILITY IMAP4rev1] Logged in\r\n");
}

/* Untagged "* CAPABILITY ...". */
static void
test_rewrite_untagged(void **state)
{
	(void)state;
	assert_string_equal(rewrite(DOVECOT_CAPABILITY, INSIDE_TLS),
	    "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
	    "AUTH=PLAIN AUTH=LOGIN\r\n");
	assert_string_equal(rewrite(DOVECOT_CAPABILITY, BEFORE_TLS_REQUIRED),
	    "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
	    "LOGINDISABLED\r\n");
	/* ASCII case is ignored; the items kept keep theirs */
	assert_string_equal(rewrite("* capability imap4rev1 starttls auth=plain LoginDisabled "
	    "Auth=Cram-MD5 AUTHX", BEFORE_TLS_REQUIRED),
	    "* capability imap4rev1 starttls LoginDisabled AUTHX\r\n");
	assert_string_equal(rewrite("* capability imap4rev1 starttls auth=plain LoginDisabled",
	    INSIDE_TLS), "* capability imap4rev1 auth=plain\r\n");
	/* runs of spaces are one separator; an empty list gets what is added */
	assert_string_equal(rewrite("* CAPABILITY  IMAP4rev1   IDLE ", 0),
	    "* CAPABILITY IMAP4rev1 IDLE\r\n");
	assert_string_equal(rewrite("* CAPABILITY", BEFORE_TLS_REQUIRED),
	    "* CAPABILITY STARTTLS LOGINDISABLED\r\n");
	assert_string_equal(rewrite("* CAPABILITY STARTTLS", INSIDE_TLS), "* CAPABILITY\r\n");
}

/* [CAPABILITY ...] in a tagged OK (Dovecot's answer to LOGIN, among others). */
static void
test_rewrite_tagged(void **state)
{
	(void)state;
	assert_string_equal(rewrite(DOVECOT_LOGGED_IN, INSIDE_TLS), DOVECOT_LOGGED_IN "\r\n");
	assert_string_equal(rewrite("a1 OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] done",
	    INSIDE_TLS), "a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] done\r\n");
	assert_string_equal(rewrite("a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] done",
	    BEFORE_TLS_REQUIRED), "a1 OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] done\r\n");
	assert_string_equal(rewrite("a1 NO [CAPABILITY IMAP4rev1] no", BEFORE_TLS),
	    "a1 NO [CAPABILITY IMAP4rev1 STARTTLS] no\r\n");
}

/* No list, too many items, no room: -1. */
static void
test_rewrite_refuses(void **state)
{
	char		 out[512], big[4096];
	size_t		 off;
	ssize_t		 n;
	const char	*s = DOVECOT_GREETING;

	(void)state;
	assert_int_equal(imap_capability_rewrite(DOVECOT_CAPABILITY_OK,
	    strlen(DOVECOT_CAPABILITY_OK), BEFORE_TLS, out, sizeof(out)), -1);
	assert_int_equal(imap_capability_rewrite("* 1 EXISTS", 10, BEFORE_TLS, out, sizeof(out)), -1);
	assert_int_equal(imap_capability_rewrite("+ OK", 4, BEFORE_TLS, out, sizeof(out)), -1);
	/* exactly the room it needs, and one byte less */
	n = imap_capability_rewrite(s, strlen(s), BEFORE_TLS_REQUIRED, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal(imap_capability_rewrite(s, strlen(s), BEFORE_TLS_REQUIRED, out,
	    (size_t)n), n);
	assert_int_equal(imap_capability_rewrite(s, strlen(s), BEFORE_TLS_REQUIRED, out,
	    (size_t)n - 1), -1);
	/* IMAP_CAPABILITY_ITEMS_MAX items, and one more */
	off = (size_t)snprintf(big, sizeof(big), "* CAPABILITY");
	for (int i = 0; i < IMAP_CAPABILITY_ITEMS_MAX; i++)
		off += (size_t)snprintf(big + off, sizeof(big) - off, " X%d", i);
	assert_true(imap_capability_rewrite(big, off, BEFORE_TLS, big + 2048, 2048) > 0);
	off += (size_t)snprintf(big + off, sizeof(big) - off, " Y");
	assert_int_equal(imap_capability_rewrite(big, off, BEFORE_TLS, out, sizeof(out)), -1);
}

static void
test_capability_has(void **state)
{
	(void)state;
	assert_true(imap_capability_has(DOVECOT_TLS_GREETING, strlen(DOVECOT_TLS_GREETING),
	    "STARTTLS"));
	assert_false(imap_capability_has(DOVECOT_GREETING, strlen(DOVECOT_GREETING), "STARTTLS"));
	assert_true(imap_capability_has(DOVECOT_GREETING, strlen(DOVECOT_GREETING), "literal+"));
	assert_false(imap_capability_has(DOVECOT_GREETING, strlen(DOVECOT_GREETING), "LITERAL-"));
	assert_true(imap_capability_has(DOVECOT_CAPABILITY, strlen(DOVECOT_CAPABILITY),
	    "STARTTLS"));
	assert_false(imap_capability_has("* OK STARTTLS", 13, "STARTTLS"));
	assert_false(imap_capability_has("* CAPABILITY STARTTLSX", 22, "STARTTLS"));
	assert_false(imap_capability_has(DOVECOT_CAPABILITY_OK, strlen(DOVECOT_CAPABILITY_OK),
	    "OK"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_real_commands),
		cmocka_unit_test(test_line_literals),
		cmocka_unit_test(test_line_malformed),
		cmocka_unit_test(test_line_clean),
		cmocka_unit_test(test_line_bounds),
		cmocka_unit_test(test_line_responses),
		cmocka_unit_test(test_command_tags_and_verbs),
		cmocka_unit_test(test_command_malformed),
		cmocka_unit_test(test_allowed_before_tls),
		cmocka_unit_test(test_responses),
		cmocka_unit_test(test_rewrite_greeting),
		cmocka_unit_test(test_rewrite_untagged),
		cmocka_unit_test(test_rewrite_tagged),
		cmocka_unit_test(test_rewrite_refuses),
		cmocka_unit_test(test_capability_has),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
