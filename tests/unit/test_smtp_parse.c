/*
 * Unit tests for src/smtp_parse.c: command verbs, line endings, the pre-TLS
 * allow list, BDAT arguments, reply lines, the EHLO reply rewrite and its
 * extensions, and the end of DATA, lax and strict.
 */
#define _GNU_SOURCE	/* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

/* Shorthand: smtp_command_parse on a string literal. */
static struct smtp_command
command(const char *s)
{
	struct smtp_command	 c;

	memset(&c, 0xa5, sizeof(c));
	smtp_command_parse(s, strlen(s), &c);
	return c;
}

/* Every verb is recognized, in any case. */
static void
test_command_verbs(void **state)
{
	static const struct {
		const char	*text;
		enum smtp_verb	 verb;
	} verbs[] = {
		{ "EHLO", SMTP_EHLO },		{ "HELO", SMTP_HELO },
		{ "STARTTLS", SMTP_STARTTLS },	{ "NOOP", SMTP_NOOP },
		{ "RSET", SMTP_RSET },		{ "QUIT", SMTP_QUIT },
		{ "MAIL", SMTP_MAIL },		{ "RCPT", SMTP_RCPT },
		{ "DATA", SMTP_DATA },		{ "BDAT", SMTP_BDAT },
		{ "AUTH", SMTP_AUTH },
		{ "ehlo", SMTP_EHLO },		{ "helo", SMTP_HELO },
		{ "starttls", SMTP_STARTTLS },	{ "noop", SMTP_NOOP },
		{ "rset", SMTP_RSET },		{ "quit", SMTP_QUIT },
		{ "mail", SMTP_MAIL },		{ "rcpt", SMTP_RCPT },
		{ "data", SMTP_DATA },		{ "bdat", SMTP_BDAT },
		{ "auth", SMTP_AUTH },
		{ "StartTLS", SMTP_STARTTLS },	{ "eHlO", SMTP_EHLO },
	};
	struct smtp_command	 c;

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		c = command(verbs[i].text);
		assert_int_equal(c.verb, verbs[i].verb);
		assert_int_equal(c.argslen, 0);
		assert_ptr_equal(c.args, verbs[i].text + strlen(verbs[i].text));
	}
}

/* The arguments start after the verb and all the spaces and tabs after it. */
static void
test_command_args(void **state)
{
	const char		*mail = "MAIL FROM:<a@example.org> SIZE=100";
	const char		*rcpt = "rcpt \t  TO:<b@example.org>";
	const char		*ehlo = "EHLO\tclient.example  ";
	const char		*bdat = "BDAT 100 LAST";
	struct smtp_command	 c;

	c = command(mail);
	assert_int_equal(c.verb, SMTP_MAIL);
	assert_ptr_equal(c.args, mail + 5);
	assert_int_equal(c.argslen, strlen("FROM:<a@example.org> SIZE=100"));

	c = command(rcpt);
	assert_int_equal(c.verb, SMTP_RCPT);
	assert_ptr_equal(c.args, rcpt + 8);
	assert_int_equal(c.argslen, strlen("TO:<b@example.org>"));

	/* trailing spaces belong to the arguments */
	c = command(ehlo);
	assert_int_equal(c.verb, SMTP_EHLO);
	assert_ptr_equal(c.args, ehlo + 5);
	assert_int_equal(c.argslen, strlen("client.example  "));

	c = command(bdat);
	assert_int_equal(c.verb, SMTP_BDAT);
	assert_memory_equal(c.args, "100 LAST", 8);
	assert_int_equal(c.argslen, 8);

	/* spaces only: a verb with no arguments */
	c = command("STARTTLS   ");
	assert_int_equal(c.verb, SMTP_STARTTLS);
	assert_int_equal(c.argslen, 0);
}

/* Unknown verbs, an empty line and a verb with a suffix are SMTP_OTHER. */
static void
test_command_other(void **state)
{
	struct smtp_command	 c;
	const char		*empty = "";

	c = command("VRFY postmaster");
	assert_int_equal(c.verb, SMTP_OTHER);
	assert_memory_equal(c.args, "postmaster", 10);
	assert_int_equal(c.argslen, 10);
	assert_int_equal(command("XCLIENT ADDR=192.0.2.1").verb, SMTP_OTHER);
	assert_int_equal(command("GET / HTTP/1.1").verb, SMTP_OTHER);

	c = command(empty);
	assert_int_equal(c.verb, SMTP_OTHER);
	assert_ptr_equal(c.args, empty);
	assert_int_equal(c.argslen, 0);

	assert_int_equal(command("STARTTLSX").verb, SMTP_OTHER);
	assert_int_equal(command("STARTTL").verb, SMTP_OTHER);
	assert_int_equal(command("STARTTLS").verb, SMTP_STARTTLS);
	assert_int_equal(command("MAIL:FROM:<x>").verb, SMTP_OTHER);
	assert_int_equal(command("EHLOclient").verb, SMTP_OTHER);
	/* a leading space is not skipped: the verb is empty */
	assert_int_equal(command(" EHLO x").verb, SMTP_OTHER);
}

/* Only len bytes are looked at: the text need not end in NUL. */
static void
test_command_len(void **state)
{
	struct smtp_command	 c;

	memset(&c, 0xa5, sizeof(c));
	smtp_command_parse("QUITX", 4, &c);
	assert_int_equal(c.verb, SMTP_QUIT);
	assert_int_equal(c.argslen, 0);
	smtp_command_parse("STARTTLS\r\n", 8, &c);
	assert_int_equal(c.verb, SMTP_STARTTLS);
	assert_int_equal(c.argslen, 0);
}

/* Shorthand: smtp_line_crlf on a string literal holding one line. */
static bool
crlf(const char *s)
{
	return smtp_line_crlf(s, strlen(s));
}

/*
 * Only CRLF ends a line well; a bare LF at its end or a CR anywhere else
 * in it is where servers disagree about where the command ends.
 */
static void
test_line_crlf(void **state)
{
	assert_true(crlf("EHLO client.test\r\n"));
	assert_true(crlf("\r\n"));
	assert_true(crlf("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"));
	assert_true(crlf("8bit \xc3\xa9 and NUL \x01 are not line endings\r\n"));

	assert_false(crlf("EHLO client.test\n"));		/* bare LF */
	assert_false(crlf("\n"));
	assert_false(crlf("NOOP\rMAIL FROM:<a@b>\r\n"));	/* a bare CR inside */
	assert_false(crlf("\rNOOP\r\n"));
	assert_false(crlf("NOOP\r\r\n"));			/* CR CR LF */
	assert_false(crlf("NOOP\r"));				/* no LF at all */
	assert_false(crlf("NOOP"));
	assert_false(crlf(""));
	/* only linelen bytes count: a CR after them is not looked at */
	assert_true(smtp_line_crlf("QUIT\r\n\rX", 6));
	assert_false(smtp_line_crlf("QUIT\r\n", 5));
}

/* EHLO, HELO, NOOP, RSET, QUIT and STARTTLS are allowed before TLS; nothing else. */
static void
test_allowed_before_tls(void **state)
{
	assert_true(smtp_allowed_before_tls(SMTP_EHLO));
	assert_true(smtp_allowed_before_tls(SMTP_HELO));
	assert_true(smtp_allowed_before_tls(SMTP_STARTTLS));
	assert_true(smtp_allowed_before_tls(SMTP_NOOP));
	assert_true(smtp_allowed_before_tls(SMTP_RSET));
	assert_true(smtp_allowed_before_tls(SMTP_QUIT));
	assert_false(smtp_allowed_before_tls(SMTP_OTHER));
	assert_false(smtp_allowed_before_tls(SMTP_MAIL));
	assert_false(smtp_allowed_before_tls(SMTP_RCPT));
	assert_false(smtp_allowed_before_tls(SMTP_DATA));
	assert_false(smtp_allowed_before_tls(SMTP_BDAT));
	assert_false(smtp_allowed_before_tls(SMTP_AUTH));
}

/* Shorthand: smtp_bdat_args on a string literal. */
static int
bdat(const char *s, uint64_t *size, bool *last)
{
	return smtp_bdat_args(s, strlen(s), size, last);
}

/* Valid sizes, with and without LAST in any case. */
static void
test_bdat_valid(void **state)
{
	uint64_t	 size;
	bool		 last;

	assert_int_equal(bdat("100", &size, &last), 0);
	assert_int_equal(size, 100);
	assert_false(last);
	assert_int_equal(bdat("0", &size, &last), 0);
	assert_int_equal(size, 0);
	assert_false(last);
	assert_int_equal(bdat("0 LAST", &size, &last), 0);
	assert_int_equal(size, 0);
	assert_true(last);
	assert_int_equal(bdat("986 LAST", &size, &last), 0);
	assert_int_equal(size, 986);
	assert_true(last);
	assert_int_equal(bdat("42 last", &size, &last), 0);
	assert_int_equal(size, 42);
	assert_true(last);
	assert_int_equal(bdat("42 LaSt", &size, &last), 0);
	assert_true(last);
	assert_int_equal(bdat("007", &size, &last), 0);
	assert_int_equal(size, 7);
	/* the largest size allowed */
	assert_int_equal(bdat("1125899906842624", &size, &last), 0);
	assert_true(size == SMTP_BDAT_MAX);
	assert_false(last);
	/* only len bytes are looked at */
	assert_int_equal(smtp_bdat_args("12 LAST\r\n", 7, &size, &last), 0);
	assert_int_equal(size, 12);
	assert_true(last);
	assert_int_equal(smtp_bdat_args("123456", 2, &size, &last), 0);
	assert_int_equal(size, 12);
	assert_false(last);
}

/* Malformed arguments return -1 and never write the outputs. */
static void
test_bdat_malformed(void **state)
{
	static const char *bad[] = {
		"",
		" ",
		"LAST",
		"abc",
		"-1",
		"+1",
		" 100",
		"0x10",
		"100x",
		"100 x",
		"100 LAS",
		"100 LASTX",
		"100 LAST ",
		"100 LAST x",
		"100 LAST LAST",
		"100 200",
		"100\tLAST",
		"100LAST",		/* RFC 3030: chunk-size SP end-marker */
		"1125899906842625",	/* SMTP_BDAT_MAX + 1 */
		"99999999999999999999",	/* beyond uint64_t */
		"18446744073709551616",	/* 2^64: would wrap to 0 */
		"99999999999999999999999999999999999999 LAST",
	};
	uint64_t	 size;
	bool		 last;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size = 0xa5a5a5a5a5a5a5a5ULL;
		last = true;
		if (bdat(bad[i], &size, &last) != -1)
			fail_msg("smtp_bdat_args(\"%s\") accepted it: size %llu, last %d",
			    bad[i], (unsigned long long)size, (int)last);
		assert_true(size == 0xa5a5a5a5a5a5a5a5ULL);
		assert_true(last);
	}
}

/* Shorthand: smtp_reply_parse on a string literal. */
static enum parse_result
reply(const char *s, struct smtp_reply *r)
{
	return smtp_reply_parse(s, strlen(s), r);
}

/* A final line, a continuation line and a bare code. */
static void
test_reply_valid(void **state)
{
	const char		*ok = "250 OK";
	const char		*pipe = "250-PIPELINING";
	const char		*bare = "250";
	struct smtp_reply	 r;

	assert_int_equal(reply(ok, &r), PARSE_OK);
	assert_int_equal(r.code, 250);
	assert_true(r.final);
	assert_ptr_equal(r.text, ok + 4);
	assert_int_equal(r.textlen, 2);

	assert_int_equal(reply(pipe, &r), PARSE_OK);
	assert_int_equal(r.code, 250);
	assert_false(r.final);
	assert_ptr_equal(r.text, pipe + 4);
	assert_int_equal(r.textlen, 10);

	assert_int_equal(reply(bare, &r), PARSE_OK);
	assert_int_equal(r.code, 250);
	assert_true(r.final);
	assert_int_equal(r.textlen, 0);

	assert_int_equal(reply("220 mx.example ESMTP Postfix", &r), PARSE_OK);
	assert_int_equal(r.code, 220);
	assert_int_equal(reply("354 End data with <CR><LF>.<CR><LF>", &r), PARSE_OK);
	assert_int_equal(r.code, 354);
	assert_int_equal(reply("421-4.3.2 closing", &r), PARSE_OK);
	assert_int_equal(r.code, 421);
	assert_false(r.final);
	assert_int_equal(reply("599 x", &r), PARSE_OK);
	assert_int_equal(r.code, 599);
	assert_int_equal(reply("200 x", &r), PARSE_OK);
	assert_int_equal(r.code, 200);

	/* empty text after the separator */
	assert_int_equal(reply("250-", &r), PARSE_OK);
	assert_false(r.final);
	assert_int_equal(r.textlen, 0);
	assert_int_equal(reply("250 ", &r), PARSE_OK);
	assert_true(r.final);
	assert_int_equal(r.textlen, 0);

	/* only len bytes are looked at */
	assert_int_equal(smtp_reply_parse("250-OK\r\n", 6, &r), PARSE_OK);
	assert_false(r.final);
	assert_int_equal(r.textlen, 2);
}

/* Malformed lines: PARSE_MALFORMED, and *out is never written. */
static void
test_reply_malformed(void **state)
{
	static const char *bad[] = {
		"", "2", "25", "2500 x", "250x", "250_x", "250\tx", "abc", "a50 x",
		"2a0 x", "25a x", "650 x", "199 x", "099 x", "999 x", " 250 x",
		"-250 x",
	};
	struct smtp_reply	 sentinel, r;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = sentinel;
		if (reply(bad[i], &r) != PARSE_MALFORMED)
			fail_msg("smtp_reply_parse(\"%s\") accepted it", bad[i]);
		assert_memory_equal(&r, &sentinel, sizeof(r));
	}
}

/* EHLO replies as real servers send them. */
#define AIOSMTPD_EHLO							\
	"250-localhost\r\n"						\
	"250-SIZE 33554432\r\n"						\
	"250-8BITMIME\r\n"						\
	"250-SMTPUTF8\r\n"						\
	"250 HELP\r\n"

#define POSTFIX_EHLO							\
	"250-mx.example.org\r\n"					\
	"250-PIPELINING\r\n"						\
	"250-SIZE 10240000\r\n"						\
	"250-VRFY\r\n"							\
	"250-ETRN\r\n"							\
	"250-STARTTLS\r\n"						\
	"250-AUTH PLAIN LOGIN\r\n"					\
	"250-AUTH=PLAIN LOGIN\r\n"					\
	"250-ENHANCEDSTATUSCODES\r\n"					\
	"250-8BITMIME\r\n"						\
	"250-DSN\r\n"							\
	"250-SMTPUTF8\r\n"						\
	"250 CHUNKING\r\n"

/*
 * Rewrite in with flags and check the result is exactly want (NUL
 * terminated for the error message).
 */
static void
check_rewrite(const char *in, unsigned flags, const char *want)
{
	char	 out[SMTP_EHLO_REPLY_MAX + 1];
	ssize_t	 n;

	memset(out, 0, sizeof(out));
	n = smtp_ehlo_rewrite(in, strlen(in), flags, out, SMTP_EHLO_REPLY_MAX);
	if (n < 0)
		fail_msg("smtp_ehlo_rewrite failed with flags %#x on:\n%s", flags, in);
	if ((size_t)n != strlen(want) || memcmp(out, want, (size_t)n) != 0)
		fail_msg("flags %#x:\nwant:\n%s\ngot (%zd bytes):\n%.*s",
		    flags, want, n, (int)n, out);
}

/* How many times word occurs in p[0..len). */
static size_t
occurrences(const char *p, size_t len, const char *word)
{
	size_t	 n = 0, wlen = strlen(word);

	for (size_t i = 0; i + wlen <= len; i++)
		if (memcmp(p + i, word, wlen) == 0)
			n++;
	return n;
}

/* Without flags, a well formed reply comes out the same. */
static void
test_ehlo_unchanged(void **state)
{
	check_rewrite(AIOSMTPD_EHLO, 0, AIOSMTPD_EHLO);
	check_rewrite(POSTFIX_EHLO, 0, POSTFIX_EHLO);
	/* nothing to drop */
	check_rewrite(AIOSMTPD_EHLO, SMTP_EHLO_DROP_STARTTLS | SMTP_EHLO_DROP_AUTH,
	    AIOSMTPD_EHLO);
}

/* ADD_STARTTLS: one "250-STARTTLS", just before the final line (SPEC). */
static void
test_ehlo_add_starttls(void **state)
{
	char	 out[SMTP_EHLO_REPLY_MAX];
	ssize_t	 n;

	check_rewrite(AIOSMTPD_EHLO, SMTP_EHLO_ADD_STARTTLS,
	    "250-localhost\r\n"
	    "250-SIZE 33554432\r\n"
	    "250-8BITMIME\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-STARTTLS\r\n"
	    "250 HELP\r\n");
	n = smtp_ehlo_rewrite(AIOSMTPD_EHLO, strlen(AIOSMTPD_EHLO),
	    SMTP_EHLO_ADD_STARTTLS, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal(occurrences(out, (size_t)n, "STARTTLS"), 1);
	assert_int_equal(occurrences(out, (size_t)n, "250 "), 1);
}

/* ADD_STARTTLS when the backend offers it already: still exactly one. */
static void
test_ehlo_add_no_duplicate(void **state)
{
	char	 out[SMTP_EHLO_REPLY_MAX];
	ssize_t	 n;

	check_rewrite(POSTFIX_EHLO, SMTP_EHLO_ADD_STARTTLS,
	    "250-mx.example.org\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n"
	    "250-VRFY\r\n"
	    "250-ETRN\r\n"
	    "250-AUTH PLAIN LOGIN\r\n"
	    "250-AUTH=PLAIN LOGIN\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n"
	    "250-DSN\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-STARTTLS\r\n"
	    "250 CHUNKING\r\n");
	n = smtp_ehlo_rewrite(POSTFIX_EHLO, strlen(POSTFIX_EHLO),
	    SMTP_EHLO_ADD_STARTTLS, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal(occurrences(out, (size_t)n, "STARTTLS"), 1);
	/* and when STARTTLS is already the final line, in lower case */
	check_rewrite("250-mx\r\n250-SIZE 1000\r\n250 starttls\r\n", SMTP_EHLO_ADD_STARTTLS,
	    "250-mx\r\n250-STARTTLS\r\n250 SIZE 1000\r\n");
	/* with ADD and DROP_AUTH together */
	check_rewrite(POSTFIX_EHLO, SMTP_EHLO_ADD_STARTTLS | SMTP_EHLO_DROP_AUTH,
	    "250-mx.example.org\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n"
	    "250-VRFY\r\n"
	    "250-ETRN\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n"
	    "250-DSN\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-STARTTLS\r\n"
	    "250 CHUNKING\r\n");
}

/* DROP_STARTTLS: gone from the middle, and from the end (the line before becomes final). */
static void
test_ehlo_drop_starttls(void **state)
{
	check_rewrite(POSTFIX_EHLO, SMTP_EHLO_DROP_STARTTLS,
	    "250-mx.example.org\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n"
	    "250-VRFY\r\n"
	    "250-ETRN\r\n"
	    "250-AUTH PLAIN LOGIN\r\n"
	    "250-AUTH=PLAIN LOGIN\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n"
	    "250-DSN\r\n"
	    "250-SMTPUTF8\r\n"
	    "250 CHUNKING\r\n");
	check_rewrite(
	    "250-mx.example\r\n"
	    "250-PIPELINING\r\n"
	    "250 STARTTLS\r\n",
	    SMTP_EHLO_DROP_STARTTLS,
	    "250-mx.example\r\n"
	    "250 PIPELINING\r\n");
	/* down to the greeting alone */
	check_rewrite("250-mx.example\r\n250 STARTTLS\r\n", SMTP_EHLO_DROP_STARTTLS,
	    "250 mx.example\r\n");
	/* a keyword that only starts with STARTTLS stays */
	check_rewrite("250-mx\r\n250-STARTTLSX\r\n250 starttls\r\n", SMTP_EHLO_DROP_STARTTLS,
	    "250-mx\r\n250 STARTTLSX\r\n");
}

/* DROP_AUTH drops AUTH and AUTH=, in any case, but not other keywords starting with AUTH. */
static void
test_ehlo_drop_auth(void **state)
{
	check_rewrite(POSTFIX_EHLO, SMTP_EHLO_DROP_AUTH,
	    "250-mx.example.org\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n"
	    "250-VRFY\r\n"
	    "250-ETRN\r\n"
	    "250-STARTTLS\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n"
	    "250-DSN\r\n"
	    "250-SMTPUTF8\r\n"
	    "250 CHUNKING\r\n");
	check_rewrite(
	    "250-mx\r\n"
	    "250-AUTHX foo\r\n"
	    "250-auth plain\r\n"
	    "250-Auth=LOGIN\r\n"
	    "250-AUTH\r\n"
	    "250-X-AUTH bar\r\n"
	    "250-AUTHENTICATE\r\n"
	    "250 AUTH CRAM-MD5\r\n",
	    SMTP_EHLO_DROP_AUTH,
	    "250-mx\r\n"
	    "250-AUTHX foo\r\n"
	    "250-X-AUTH bar\r\n"
	    "250 AUTHENTICATE\r\n");
}

/* A one-line reply gets a continuation mark and STARTTLS after it. */
static void
test_ehlo_single_line(void **state)
{
	check_rewrite("250 mx.example\r\n", SMTP_EHLO_ADD_STARTTLS,
	    "250-mx.example\r\n250 STARTTLS\r\n");
	check_rewrite("250 mx.example\r\n", 0, "250 mx.example\r\n");
	/* the greeting line is never dropped, whatever it says */
	check_rewrite("250 AUTH\r\n", SMTP_EHLO_DROP_AUTH, "250 AUTH\r\n");
}

/* Bare LF line endings come out as CRLF. */
static void
test_ehlo_bare_lf(void **state)
{
	check_rewrite(
	    "250-localhost\n"
	    "250-SIZE 33554432\n"
	    "250-8BITMIME\n"
	    "250-SMTPUTF8\n"
	    "250 HELP\n",
	    SMTP_EHLO_ADD_STARTTLS,
	    "250-localhost\r\n"
	    "250-SIZE 33554432\r\n"
	    "250-8BITMIME\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-STARTTLS\r\n"
	    "250 HELP\r\n");
	check_rewrite("250-localhost\n250-SIZE 1\r\n250 HELP\n", 0,
	    "250-localhost\r\n250-SIZE 1\r\n250 HELP\r\n");
}

/* Malformed replies: -1. */
static void
test_ehlo_malformed(void **state)
{
	static const char *bad[] = {
		"",
		"\r\n",
		"garbage\r\n",
		"garbage",
		"550 5.7.1 go away\r\n",
		"220 mx.example ESMTP\r\n",
		"502 5.5.2 Error: command not recognized\r\n",
		"250-localhost\r\n550 x\r\n",
		"250-localhost\r\n251 x\r\n",
		"250-localhost\r\n25\r\n",
		"250-localhost\r\nabc\r\n",
		"250-localhost\r\n2500 x\r\n",
		/* no final line */
		"250-localhost\r\n",
		"250-localhost\r\n250-SIZE 33554432\r\n250-HELP\r\n",
		/* the final line is not complete */
		"250-localhost\r\n250 HELP",
		"250 localhost",
		/* bytes after the final line */
		"250 localhost\r\n250 extra\r\n",
		"250 localhost\r\ntrailing",
		"250 localhost\r\n\r\n",
	};
	char	 out[SMTP_EHLO_REPLY_MAX];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (unsigned flags = 0; flags < 8; flags++) {
			if (smtp_ehlo_rewrite(bad[i], strlen(bad[i]), flags, out,
			    sizeof(out)) != -1)
				fail_msg("accepted with flags %#x: \"%s\"", flags, bad[i]);
		}
	}
}

/* An output buffer one byte too small: -1, and nothing written past outlen. */
static void
test_ehlo_out_too_small(void **state)
{
	static const char	 want[] =
	    "250-localhost\r\n"
	    "250-SIZE 33554432\r\n"
	    "250-8BITMIME\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-STARTTLS\r\n"
	    "250 HELP\r\n";
	const size_t		 wantlen = sizeof(want) - 1;
	char			 out[sizeof(want) + 16];

	/* exactly enough room */
	memset(out, 0xa5, sizeof(out));
	assert_int_equal(smtp_ehlo_rewrite(AIOSMTPD_EHLO, strlen(AIOSMTPD_EHLO),
	    SMTP_EHLO_ADD_STARTTLS, out, wantlen), (ssize_t)wantlen);
	assert_memory_equal(out, want, wantlen);
	for (size_t j = wantlen; j < sizeof(out); j++)
		assert_int_equal((unsigned char)out[j], 0xa5);

	/* every shorter buffer */
	for (size_t outlen = 0; outlen < wantlen; outlen++) {
		memset(out, 0xa5, sizeof(out));
		if (smtp_ehlo_rewrite(AIOSMTPD_EHLO, strlen(AIOSMTPD_EHLO),
		    SMTP_EHLO_ADD_STARTTLS, out, outlen) != -1)
			fail_msg("succeeded with outlen %zu < %zu", outlen, wantlen);
		for (size_t j = outlen; j < sizeof(out); j++)
			assert_int_equal((unsigned char)out[j], 0xa5);
	}
}

/*
 * The extensions an EHLO reply offers, by keyword on the lines after the
 * first: the greeting line names the server, whatever its first word.
 */
static void
test_ehlo_offers(void **state)
{
	static const char	 first_only[] = "250-CHUNKING\r\n250 SIZE 100\r\n";
	static const char	 longer[] = "250-mx\r\n250-CHUNKINGX\r\n250 XCHUNKING\r\n";
	static const char	 args[] = "250-mx\r\n250-chunking now\r\n250 HELP\r\n";
	static const char	 negative[] = "550-mx\r\n550 CHUNKING\r\n";
	static const char	 mixed[] = "250-mx\r\n550 CHUNKING\r\n";

	assert_true(smtp_ehlo_offers(POSTFIX_EHLO, strlen(POSTFIX_EHLO), "CHUNKING"));
	assert_true(smtp_ehlo_offers(POSTFIX_EHLO, strlen(POSTFIX_EHLO), "PIPELINING"));
	assert_false(smtp_ehlo_offers(AIOSMTPD_EHLO, strlen(AIOSMTPD_EHLO), "CHUNKING"));
	assert_false(smtp_ehlo_offers(first_only, sizeof(first_only) - 1, "CHUNKING"));
	assert_false(smtp_ehlo_offers(longer, sizeof(longer) - 1, "CHUNKING"));
	assert_true(smtp_ehlo_offers(args, sizeof(args) - 1, "CHUNKING"));
	assert_false(smtp_ehlo_offers(negative, sizeof(negative) - 1, "CHUNKING"));
	assert_false(smtp_ehlo_offers(mixed, sizeof(mixed) - 1, "CHUNKING"));
	assert_false(smtp_ehlo_offers("", 0, "CHUNKING"));
}

/*
 * Feed p[0..len) from the start of DATA content, as inside TLS (bare line
 * endings are content); true when the end is found.
 */
static bool
data_once(const char *p, size_t len, size_t *used)
{
	struct smtp_data	 d;
	enum parse_result	 r;

	smtp_data_begin(&d, false);
	r = smtp_data_end(&d, p, len, used);
	assert_int_not_equal(r, PARSE_MALFORMED);
	return r == PARSE_OK;
}

/* smtp_data_end, true when it found the end (never malformed here). */
static bool
data_end(struct smtp_data *d, const char *p, size_t len, size_t *used)
{
	enum parse_result	 r = smtp_data_end(d, p, len, used);

	assert_int_not_equal(r, PARSE_MALFORMED);
	return r == PARSE_OK;
}

/* CRLF.CRLF in one chunk: *used ends right after it. */
static void
test_data_end_one_chunk(void **state)
{
	static const char	 msg[] = "Subject: hi\r\n\r\nhello\r\n.\r\n";
	size_t			 used = 0;

	assert_true(data_once(msg, sizeof(msg) - 1, &used));
	assert_int_equal(used, sizeof(msg) - 1);
	/* an empty line before the terminator */
	assert_true(data_once("\r\n.\r\n", 5, &used));
	assert_int_equal(used, 5);
	/* not there yet */
	assert_false(data_once("hello\r\n.\r", 9, &used));
	assert_false(data_once("hello\r\n.", 8, &used));
	assert_false(data_once("hello\r\n", 7, &used));
	assert_false(data_once("hello", 5, &used));
	assert_false(data_once("", 0, &used));
}

/* Bytes after the terminator (the next pipelined command) are not used. */
static void
test_data_end_trailing(void **state)
{
	static const char	 msg[] = "hello\r\n.\r\nQUIT\r\n";
	size_t			 used = 0;

	assert_true(data_once(msg, sizeof(msg) - 1, &used));
	assert_int_equal(used, 10);
	assert_true(data_once(".\r\nMAIL FROM:<>\r\n", 17, &used));
	assert_int_equal(used, 3);
	/* the first of two terminators */
	assert_true(data_once("a\r\n.\r\n.\r\n", 9, &used));
	assert_int_equal(used, 6);
}

/*
 * Split msg in two at every byte position; the end, at msg[0..end), must
 * be found in whichever call holds its last byte, with *used counting
 * only that call's bytes up to it.
 */
static void
check_every_split(const char *msg, size_t len, size_t end)
{
	struct smtp_data	 d;
	size_t			 used;

	for (size_t k = 0; k <= len; k++) {
		smtp_data_begin(&d, false);
		used = (size_t)-1;
		if (k >= end) {
			if (!data_end(&d, msg, k, &used))
				fail_msg("split %zu: no end in the first %zu bytes", k, k);
			assert_int_equal(used, end);
			continue;
		}
		if (data_end(&d, msg, k, &used))
			fail_msg("split %zu: an end in the first part, used %zu", k, used);
		if (!data_end(&d, msg + k, len - k, &used))
			fail_msg("split %zu: no end in the second part", k);
		assert_int_equal(used, end - k);
	}
}

/* The terminator split across two calls at every byte position. */
static void
test_data_end_split(void **state)
{
	static const char	 a[] = "hello\r\n.\r\n";
	static const char	 b[] = "hello\r\n.\r\nQUIT\r\n";
	static const char	 c[] = ".\r\nQUIT\r\n";
	static const char	 e[] = "x\r\n..\r\n.foo\r\n\r\n.\r\nRSET\r\n";

	check_every_split(a, sizeof(a) - 1, 10);
	check_every_split(b, sizeof(b) - 1, 10);
	check_every_split(c, sizeof(c) - 1, 3);
	check_every_split(e, sizeof(e) - 1, 18);
}

/* One byte per call: the end is found on its last byte. */
static void
test_data_end_byte_by_byte(void **state)
{
	static const char	 msg[] = "To: a@b\r\n\r\n..dot\r\nbody\r\n.\r\n";
	struct smtp_data	 d;
	size_t			 used = 0;

	smtp_data_begin(&d, false);
	for (size_t i = 0; i + 1 < sizeof(msg) - 1; i++)
		if (data_end(&d, msg + i, 1, &used))
			fail_msg("an end at byte %zu", i);
	assert_true(data_end(&d, msg + sizeof(msg) - 2, 1, &used));
	assert_int_equal(used, 1);
}

/* "." alone as the very first line ends the data (an empty message). */
static void
test_data_end_first_line(void **state)
{
	size_t	 used = 0;

	assert_true(data_once(".\r\n", 3, &used));
	assert_int_equal(used, 3);
}

/* A dot-stuffed line does not end the data. */
static void
test_data_end_dot_stuffed(void **state)
{
	struct smtp_data	 d;
	size_t			 used = 0;

	assert_false(data_once("..foo\r\n", 7, &used));
	assert_false(data_once("..\r\n", 4, &used));
	assert_false(data_once(".foo\r\n", 6, &used));
	assert_false(data_once("hello\r\n..foo\r\n", 14, &used));
	assert_false(data_once("hello\r\n..\r\n", 11, &used));
	assert_false(data_once("hello\r\n. \r\n", 11, &used));

	/* and the real terminator after it still does */
	smtp_data_begin(&d, false);
	assert_false(data_end(&d, "..\r\n", 4, &used));
	assert_true(data_end(&d, ".\r\n", 3, &used));
	assert_int_equal(used, 3);
}

/*
 * Only CRLF "." CRLF ends the data: no bare LF or bare CR on either side
 * of the dot (SMTP smuggling).
 */
static void
test_data_end_strict(void **state)
{
	static const char *smuggle[] = {
		"\n.\n",
		"hello\n.\n",
		"hello\r\n.\n",
		"hello\n.\r\n",
		"hello\r.\r\n",
		"hello\r\n.\r",
		"hello\r\n.\rMAIL FROM:<x>\r\n",
		"hello\r\n.\r\r\n",
		"hello\n.\nMAIL FROM:<evil@example.org>\r\n",
		"hello\r\n.\nMAIL FROM:<evil@example.org>\r\n",
		"hello\n.\r\nMAIL FROM:<evil@example.org>\r\n",
		".\n",
		".\r\r\n",
		"\r.\r\n",
	};
	struct smtp_data	 d;
	size_t			 used;

	for (size_t i = 0; i < sizeof(smuggle) / sizeof(smuggle[0]); i++) {
		used = 12345;
		if (data_once(smuggle[i], strlen(smuggle[i]), &used))
			fail_msg("case %zu ended the data, used %zu", i, used);
	}
	/* the same, fed in one stream, and then a real end */
	smtp_data_begin(&d, false);
	for (size_t i = 0; i < sizeof(smuggle) / sizeof(smuggle[0]); i++)
		assert_false(data_end(&d, smuggle[i], strlen(smuggle[i]), &used));
	assert_true(data_end(&d, "\r\n.\r\nQUIT\r\n", 11, &used));
	assert_int_equal(used, 5);
}

/* Every end-of-data look-alike written with a bare CR or LF (SMTP smuggling). */
static const char *const smuggled[] = {
	"\n.\n",
	"hello\n.\n",
	"hello\r\n.\n",
	"hello\n.\r\n",
	"hello\r.\r\n",
	"hello\r\n.\rX",
	"hello\r\n.\rMAIL FROM:<x>\r\n",
	"hello\r\n.\r\r\n",
	"hello\n.\nMAIL FROM:<evil@example.org>\r\n",
	"hello\r\n.\nMAIL FROM:<evil@example.org>\r\n",
	"hello\n.\r\nMAIL FROM:<evil@example.org>\r\n",
	"hello\r.\rMAIL FROM:<evil@example.org>\r\n",
	".\n",
	".\r\r\n",
	"\r.\r\n",
	"\n",
	"a bare LF\nin a line\r\n.\r\n",
	"a bare CR\rin a line\r\n.\r\n",
	"CR CR LF\r\r\n.\r\n",
};

/* Where the scanner must stop in each case: the byte that shows the fault. */
static size_t
smuggled_at(const char *s)
{
	for (size_t i = 0; s[i] != '\0'; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return i;
		if (s[i] == '\r' && s[i + 1] != '\n')
			return i + 1;
	}
	fail_msg("no bare line ending in %s", s);
	return 0;
}

/*
 * Before TLS, a bare LF or CR anywhere in the content is refused, at the
 * byte that shows it, whatever the split, and never taken for the end.
 */
static void
test_data_end_strict_refuses(void **state)
{
	struct smtp_data	 d;
	enum parse_result	 r;
	size_t			 used, at, len;

	for (size_t i = 0; i < sizeof(smuggled) / sizeof(smuggled[0]); i++) {
		len = strlen(smuggled[i]);
		at = smuggled_at(smuggled[i]);
		smtp_data_begin(&d, true);
		used = 12345;
		r = smtp_data_end(&d, smuggled[i], len, &used);
		if (r != PARSE_MALFORMED || used != at)
			fail_msg("case %zu: result %d, used %zu, want %d at %zu",
			    i, r, used, PARSE_MALFORMED, at);
		/* split in two at every byte */
		for (size_t k = 0; k <= len; k++) {
			smtp_data_begin(&d, true);
			used = 12345;
			r = smtp_data_end(&d, smuggled[i], k, &used);
			if (k <= at) {
				if (r != PARSE_NEED_MORE || used != 12345)
					fail_msg("case %zu split %zu: %d before the fault", i, k, r);
				r = smtp_data_end(&d, smuggled[i] + k, len - k, &used);
				if (r != PARSE_MALFORMED || used != at - k)
					fail_msg("case %zu split %zu: result %d used %zu", i, k, r, used);
			} else if (r != PARSE_MALFORMED || used != at)
				fail_msg("case %zu split %zu: result %d used %zu", i, k, r, used);
		}
	}
}

/* Strict content with only CRLF line endings ends where lax content does. */
static void
test_data_end_strict_accepts(void **state)
{
	static const char	 msg[] = "Subject: hi\r\n\r\n..stuffed\r\n.x\r\n"
				     "8bit \xc3\xa9\r\n.\r\nQUIT\r\n";
	struct smtp_data	 d;
	size_t			 used, end = sizeof(msg) - 1 - 6;

	for (size_t k = 0; k <= sizeof(msg) - 1; k++) {
		smtp_data_begin(&d, true);
		used = 12345;
		if (k >= end) {
			assert_int_equal(smtp_data_end(&d, msg, k, &used), PARSE_OK);
			assert_int_equal(used, end);
			continue;
		}
		assert_int_equal(smtp_data_end(&d, msg, k, &used), PARSE_NEED_MORE);
		assert_int_equal(used, 12345);	/* not written */
		assert_int_equal(smtp_data_end(&d, msg + k, sizeof(msg) - 1 - k, &used), PARSE_OK);
		assert_int_equal(used, end - k);
	}
	/* a message of one empty line, and an empty one */
	smtp_data_begin(&d, true);
	assert_int_equal(smtp_data_end(&d, "\r\n.\r\n", 5, &used), PARSE_OK);
	assert_int_equal(used, 5);
	smtp_data_begin(&d, true);
	assert_int_equal(smtp_data_end(&d, ".\r\n", 3, &used), PARSE_OK);
	assert_int_equal(used, 3);
}

/* The terminator after a lot of content, with look-alikes on the way. */
static void
test_data_end_large(void **state)
{
	static const char	 lines[][24] = {
		"Lorem ipsum dolor\r\n",
		"..stuffed\r\n",
		"bare\n.\nlf\r\n",
		"\r\n",
		"cr\r.\r\n",
		"..\r\n",
	};
	const size_t		 size = 1 << 20;
	char			*buf = malloc(size + 64);
	size_t			 off = 0, used = 0, end, nl = sizeof(lines) / sizeof(lines[0]);
	struct smtp_data	 d;

	assert_non_null(buf);
	for (size_t i = 0; off + 32 < size; i++) {
		size_t n = strlen(lines[i % nl]);

		memcpy(buf + off, lines[i % nl], n);
		off += n;
	}
	memcpy(buf + off, "last\r\n.\r\nQUIT\r\n", 15);
	end = off + 9;
	off += 15;

	assert_true(data_once(buf, off, &used));
	assert_int_equal(used, end);

	/* in chunks of an awkward size */
	smtp_data_begin(&d, false);
	for (size_t pos = 0;; pos += 4093) {
		size_t n = off - pos < 4093 ? off - pos : 4093;

		assert_true(pos < off);
		if (data_end(&d, buf + pos, n, &used)) {
			assert_int_equal(pos + used, end);
			break;
		}
	}
	free(buf);
}

/*
 * Lax scan against the definition: the data ends after the first
 * CRLF "." CRLF, the content starting on a line of its own.  Random
 * streams of dots, CRs, LFs and letters, cut at random places, so that
 * every state meets every chunk boundary.
 */
static void
test_data_end_lax_random(void **state)
{
	static const char	 alphabet[] = ".\r\n\r\n.a";
	char			 buf[256], ref[260];
	struct smtp_data	 d;
	unsigned		 seed = 12345;

	(void)state;
	for (int round = 0; round < 20000; round++) {
		size_t	 len = 1 + (seed = seed * 1103515245 + 12345) % sizeof(buf);
		size_t	 want = SIZE_MAX, used = 0, pos = 0;
		char	*hit;
		bool	 found = false;

		for (size_t i = 0; i < len; i++)
			buf[i] = alphabet[((seed = seed * 1103515245 + 12345) >> 16) % 7];
		memcpy(ref, "\r\n", 2);
		memcpy(ref + 2, buf, len);
		if ((hit = memmem(ref, len + 2, "\r\n.\r\n", 5)) != NULL)
			want = (size_t)(hit - ref) + 3;
		smtp_data_begin(&d, false);
		while (pos < len && !found) {
			size_t n = 1 + ((seed = seed * 1103515245 + 12345) >> 16) % 40;

			if (n > len - pos)
				n = len - pos;
			found = data_end(&d, buf + pos, n, &used);
			if (found)
				used += pos;
			pos += n;
		}
		if (want == SIZE_MAX)
			assert_false(found);
		else {
			assert_true(found);
			assert_int_equal(used, want);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_verbs),
		cmocka_unit_test(test_command_args),
		cmocka_unit_test(test_command_other),
		cmocka_unit_test(test_command_len),
		cmocka_unit_test(test_line_crlf),
		cmocka_unit_test(test_allowed_before_tls),
		cmocka_unit_test(test_bdat_valid),
		cmocka_unit_test(test_bdat_malformed),
		cmocka_unit_test(test_reply_valid),
		cmocka_unit_test(test_reply_malformed),
		cmocka_unit_test(test_ehlo_unchanged),
		cmocka_unit_test(test_ehlo_add_starttls),
		cmocka_unit_test(test_ehlo_add_no_duplicate),
		cmocka_unit_test(test_ehlo_drop_starttls),
		cmocka_unit_test(test_ehlo_drop_auth),
		cmocka_unit_test(test_ehlo_single_line),
		cmocka_unit_test(test_ehlo_bare_lf),
		cmocka_unit_test(test_ehlo_malformed),
		cmocka_unit_test(test_ehlo_out_too_small),
		cmocka_unit_test(test_ehlo_offers),
		cmocka_unit_test(test_data_end_one_chunk),
		cmocka_unit_test(test_data_end_trailing),
		cmocka_unit_test(test_data_end_split),
		cmocka_unit_test(test_data_end_byte_by_byte),
		cmocka_unit_test(test_data_end_first_line),
		cmocka_unit_test(test_data_end_dot_stuffed),
		cmocka_unit_test(test_data_end_strict),
		cmocka_unit_test(test_data_end_strict_refuses),
		cmocka_unit_test(test_data_end_strict_accepts),
		cmocka_unit_test(test_data_end_large),
		cmocka_unit_test(test_data_end_lax_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
