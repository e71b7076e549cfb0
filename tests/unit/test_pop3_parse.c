/*
 * Unit tests for src/pop3_parse.c: command verbs and arguments, the
 * pre-TLS sets, which replies are multi-line, status lines, the end of a
 * multi-line body across any split of the stream, and the CAPA rewrite.
 * The fixtures are bytes Python's poplib, curl and Dovecot 2.3.19 (Debian
 * 12) sent through a recording tap.
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
#include "pop3_parse.h"

/* Dovecot's pre-login CAPA reply, with ssl = yes and without */
#define DOVECOT_CAPA_TLS \
	"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n" \
	"STLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"
#define DOVECOT_CAPA \
	"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n" \
	"USER\r\nSASL PLAIN LOGIN\r\n.\r\n"
/* and after login */
#define DOVECOT_CAPA_LOGGED_IN \
	"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n.\r\n"

/*
 * Dovecot's body for RETR 2 (tests/fuzz/corpus/pop3/dovecot-server-stream),
 * whose maildir file has bare LFs, a line that is a dot alone, one that is
 * "+OK fake", one that starts with two dots: Dovecot ends every line in
 * CRLF and doubles every leading dot.
 */
static const char retr_body[] =
    "From: Bob <bob@example.test>\r\n"
    "To: Alice <alice@example.test>\r\n"
    "Subject: dots\r\n"
    "\r\n"
    "..\r\n"
    "+OK fake\r\n"
    "...two dots\r\n"
    "..a dot\r\n"
    "-ERR fake\r\n"
    "last\r\n"
    ".\r\n";

static struct pop3_command
command(const char *s)
{
	struct pop3_command	 c;

	memset(&c, 0xa5, sizeof(c));
	pop3_command_parse(s, strlen(s), &c);
	return c;
}

/* Every verb is recognized, in any case; anything else is unknown. */
static void
test_command_verbs(void **state)
{
	static const struct {
		const char	*text;
		enum pop3_verb	 verb;
	} verbs[] = {
		{ "USER", POP3_USER },	{ "PASS", POP3_PASS },	{ "APOP", POP3_APOP },
		{ "AUTH", POP3_AUTH },	{ "STLS", POP3_STLS },	{ "CAPA", POP3_CAPA },
		{ "QUIT", POP3_QUIT },	{ "STAT", POP3_STAT },	{ "LIST", POP3_LIST },
		{ "RETR", POP3_RETR },	{ "DELE", POP3_DELE },	{ "NOOP", POP3_NOOP },
		{ "RSET", POP3_RSET },	{ "TOP", POP3_TOP },	{ "UIDL", POP3_UIDL },
		{ "LAST", POP3_LAST },	{ "UTF8", POP3_UTF8 },	{ "LANG", POP3_LANG },
		{ "XCLIENT", POP3_XCLIENT },	{ "xoip", POP3_XOIP },
		{ "stls", POP3_STLS },	{ "StLs", POP3_STLS },	{ "user", POP3_USER },
		{ "capa", POP3_CAPA },	{ "top", POP3_TOP },	{ "Retr", POP3_RETR },
		/* what Dovecot reads otherwise is not the proxy's verb */
		{ "ST\rLS", POP3_UNKNOWN },	{ "STLS\t", POP3_UNKNOWN },
		{ "\tSTLS", POP3_UNKNOWN },	{ "STL", POP3_UNKNOWN },
		{ "STLSX", POP3_UNKNOWN },	{ "", POP3_UNKNOWN },
		{ "XTND", POP3_UNKNOWN },	{ "STARTTLS", POP3_UNKNOWN },
	};
	struct pop3_command	 c;

	(void)state;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		c = command(verbs[i].text);
		assert_int_equal(c.verb, verbs[i].verb);
		assert_int_equal(c.argslen, 0);
		assert_ptr_equal(c.args, verbs[i].text + strlen(verbs[i].text));
	}
	/* a NUL ends nothing: "STLS\0" is not STLS */
	pop3_command_parse("STLS\0", 5, &c);
	assert_int_equal(c.verb, POP3_UNKNOWN);
}

/* The arguments are what follows the first space, spaces and all. */
static void
test_command_args(void **state)
{
	const char		*retr = "RETR 1";
	const char		*top = "top 1 0";
	const char		*list = "LIST  1";
	const char		*auth = "AUTH PLAIN AGFsaWNlAHNlY3JldA==";
	struct pop3_command	 c;

	(void)state;
	c = command(retr);
	assert_int_equal(c.verb, POP3_RETR);
	assert_ptr_equal(c.args, retr + 5);
	assert_int_equal(c.argslen, 1);
	assert_false(pop3_no_argument(&c));

	c = command(top);
	assert_int_equal(c.verb, POP3_TOP);
	assert_int_equal(c.argslen, 3);

	c = command(list);
	assert_int_equal(c.verb, POP3_LIST);
	assert_ptr_equal(c.args, list + 5);
	assert_int_equal(c.argslen, 2);
	assert_false(pop3_no_argument(&c));

	c = command(auth);
	assert_int_equal(c.verb, POP3_AUTH);
	assert_int_equal(c.argslen, strlen("PLAIN AGFsaWNlAHNlY3JldA=="));

	/* "LIST " and "LIST   ": no argument, as Dovecot skips the spaces */
	c = command("LIST ");
	assert_int_equal(c.verb, POP3_LIST);
	assert_true(pop3_no_argument(&c));
	c = command("LIST   ");
	assert_true(pop3_no_argument(&c));
	c = command("LIST");
	assert_true(pop3_no_argument(&c));
	/* a tab is an argument, which Dovecot refuses with -ERR */
	c = command("LIST \t");
	assert_false(pop3_no_argument(&c));
}

static void
test_pre_tls_sets(void **state)
{
	(void)state;
	assert_true(pop3_allowed_before_tls(POP3_CAPA));
	assert_true(pop3_allowed_before_tls(POP3_QUIT));
	assert_true(pop3_allowed_before_tls(POP3_STLS));
	for (int v = POP3_UNKNOWN; v <= POP3_XOIP; v++) {
		if (v != POP3_CAPA && v != POP3_QUIT && v != POP3_STLS)
			assert_false(pop3_allowed_before_tls((enum pop3_verb)v));
		assert_int_equal(pop3_is_login((enum pop3_verb)v),
		    v == POP3_USER || v == POP3_PASS || v == POP3_APOP || v == POP3_AUTH);
	}
}

/* What poplib, curl and Dovecot's own replies say of each command's reply. */
static void
test_reply_shapes(void **state)
{
	static const struct {
		const char	*line;
		enum pop3_shape	 shape;
	} cases[] = {
		{ "CAPA", POP3_MULTI },		{ "CAPA x", POP3_MULTI },
		{ "RETR 1", POP3_MULTI },	{ "RETR", POP3_MULTI },
		{ "TOP 1 0", POP3_MULTI },	{ "top 1 10", POP3_MULTI },
		{ "LIST", POP3_MULTI },		{ "LIST ", POP3_MULTI },
		{ "LIST 1", POP3_SINGLE },	{ "LIST  1", POP3_SINGLE },
		{ "UIDL", POP3_MULTI },		{ "UIDL 1", POP3_SINGLE },
		{ "LANG", POP3_MULTI },		{ "LANG en", POP3_SINGLE },
		/* the mechanism list (Outlook's, Dovecot's) */
		{ "AUTH", POP3_MULTI },		{ "AUTH ", POP3_MULTI },
		/* Dovecot lists its mechanisms for these too */
		{ "AUTH  PLAIN", POP3_MULTI },	{ "AUTH \rPLAIN", POP3_MULTI },
		{ "AUTH PLAIN", POP3_SASL },	{ "AUTH LOGIN", POP3_SASL },
		{ "AUTH PLAIN AGFsaWNlAHNlY3JldA==", POP3_SASL },
		{ "USER alice", POP3_SINGLE },	{ "PASS x", POP3_SINGLE },
		{ "APOP alice 0123", POP3_SINGLE },
		{ "STAT", POP3_SINGLE },	{ "DELE 1", POP3_SINGLE },
		{ "NOOP", POP3_SINGLE },	{ "RSET", POP3_SINGLE },
		{ "QUIT", POP3_SINGLE },	{ "STLS", POP3_SINGLE },
		{ "LAST", POP3_SINGLE },	{ "UTF8", POP3_SINGLE },
		{ "XTND XLIST", POP3_SINGLE },	{ "", POP3_SINGLE },
	};
	struct pop3_command	 c;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = command(cases[i].line);
		if (pop3_reply_shape(&c) != cases[i].shape)
			fail_msg("\"%s\": shape %d, expected %d", cases[i].line,
			    pop3_reply_shape(&c), cases[i].shape);
	}
}

static enum parse_result
status(const char *s, bool sasl, struct pop3_status *st)
{
	char			*copy = exact(s, strlen(s));
	enum parse_result	 r;

	memset(st, 0xa5, sizeof(*st));
	r = pop3_status_parse(copy, strlen(s), sasl, st);
	if (r == PARSE_OK) {
		/* make the text point into s, for the asserts */
		st->text = s + (st->text - copy);
	}
	free(copy);
	return r;
}

static void
test_status_lines(void **state)
{
	struct pop3_status	 st, sentinel;
	const char		*g = "+OK Dovecot (Debian) ready.";
	const char		*e = "-ERR [AUTH] Authentication failed.";

	(void)state;
	assert_int_equal(status(g, false, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_OK);
	assert_ptr_equal(st.text, g + 4);
	assert_int_equal(st.textlen, strlen("Dovecot (Debian) ready."));

	assert_int_equal(status("+OK", false, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_OK);
	assert_int_equal(st.textlen, 0);

	assert_int_equal(status(e, false, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_ERR);
	assert_ptr_equal(st.text, e + 5);

	assert_int_equal(status("-ERR", true, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_ERR);

	/* Dovecot's SASL challenge to AUTH PLAIN, and a base64 one */
	assert_int_equal(status("+ ", true, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_CONTINUE);
	assert_int_equal(st.textlen, 0);
	assert_int_equal(status("+ VXNlcm5hbWU6", true, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_CONTINUE);
	assert_int_equal(st.textlen, 12);
	assert_int_equal(status("+", true, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_CONTINUE);
	/* "+OK" is still +OK inside a dialogue */
	assert_int_equal(status("+OK Logged in.", true, &st), PARSE_OK);
	assert_int_equal(st.kind, POP3_OK);

	/* a continuation outside a dialogue, lower case (RFC 1939: MUST be upper), lookalikes */
	static const char *const bad[] = {
		"+ ", "+", "+ok", "-err", "+OKAY", "-ERROR", "+OK\t", "OK", "", " +OK",
		"*", ".", "OK fake",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(status(bad[i], false, &st), PARSE_MALFORMED);
		memset(&sentinel, 0xa5, sizeof(sentinel));
		assert_memory_equal(&st, &sentinel, sizeof(st));	/* untouched */
	}
	assert_int_equal(status("+x", true, &st), PARSE_MALFORMED);
	assert_int_equal(status("+OKx", true, &st), PARSE_MALFORMED);
}

/* One call on a buffer of exactly its bytes. */
static enum parse_result
body_end(struct pop3_body *b, const char *p, size_t len, size_t *used)
{
	char			*copy = exact(p, len);
	enum parse_result	 r = pop3_body_end(b, copy, len, used);

	free(copy);
	return r;
}

/*
 * Where a body ends, fed in pieces: at every split in two, and a byte at
 * a time.  Returns the offset after the end, or 0 when none was found.
 */
static size_t
body_end_at(const char *p, size_t len, size_t split)
{
	struct pop3_body	 b;
	size_t			 used = (size_t)-1;

	pop3_body_begin(&b);
	if (split > 0 && body_end(&b, p, split, &used) == PARSE_OK)
		return used;
	assert_int_equal(used, (size_t)-1);	/* not written on NEED_MORE */
	if (body_end(&b, p + split, len - split, &used) == PARSE_OK)
		return split + used;
	return 0;
}

static size_t
body_end_bytewise(const char *p, size_t len)
{
	struct pop3_body	 b;
	size_t			 used;

	pop3_body_begin(&b);
	for (size_t i = 0; i < len; i++)
		if (body_end(&b, p + i, 1, &used) == PARSE_OK) {
			assert_int_equal(used, 1);
			return i + 1;
		}
	return 0;
}

static void
check_body(const char *p, size_t len, size_t want)
{
	for (size_t split = 0; split <= len; split++)
		if (body_end_at(p, len, split) != want)
			fail_msg("split at %zu: end at %zu, expected %zu",
			    split, body_end_at(p, len, split), want);
	assert_int_equal(body_end_bytewise(p, len), want);
}

static void
test_body_end(void **state)
{
	/* what follows the end: the next reply, which the scan must not take */
	char	 stream[512];
	size_t	 n;

	(void)state;
	/* Dovecot's RETR body: dot-stuffed lines, a "+OK fake" line; the end is the last line */
	check_body(retr_body, strlen(retr_body), strlen(retr_body));
	n = (size_t)snprintf(stream, sizeof(stream), "%s+OK 1 317\r\n", retr_body);
	check_body(stream, n, strlen(retr_body));

	/* LIST's and UIDL's bodies from Dovecot */
	check_body("1 317\r\n.\r\n", 10, 10);
	check_body("1 000000016b0f503e\r\n.\r\n+OK\r\n", 28, 23);
	/* the CAPA body */
	check_body(DOVECOT_CAPA + 5, strlen(DOVECOT_CAPA) - 5, strlen(DOVECOT_CAPA) - 5);

	/* an empty body ends at once, the status line's CRLF being the first */
	check_body(".\r\n", 3, 3);
	check_body(".\r\n.\r\n", 6, 3);

	/* never the end: a dot after a bare LF, "." LF, ".." lines, ".x", ".\r\r\n" */
	static const char *const none[] = {
		"a\n.\r\n", ".\n", "a\r\n.\n", "..\r\n", "...\r\n", ".x\r\n", ".\r\r\n",
		"a\r.\r\n", "a\r\n. \r\n", "a\r\n.\r", "\n.\r\n", "\r.\r\n", "+OK\r\n",
		"a\r\n..\r\n", "a\r\n\n.\r\n",
	};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
		check_body(none[i], strlen(none[i]), 0);

	/* the first end only */
	check_body("a\r\n.\r\nb\r\n.\r\n", 12, 6);
	check_body("\r\n.\r\n", 5, 5);
	check_body("a\r\r\n.\r\n", 7, 7);
	check_body(".\r\r\n.\r\n", 7, 7);
	check_body("a\n\r\n.\r\n", 7, 7);
}

static ssize_t
rewrite(const char *reply, unsigned flags, char *out, size_t outlen)
{
	char	*copy = exact(reply, strlen(reply));
	ssize_t	 n = pop3_capa_rewrite(copy, strlen(reply), flags, out, outlen);

	free(copy);
	if (n >= 0 && (size_t)n < outlen)
		out[n] = '\0';
	return n;
}

static void
test_capa_rewrite(void **state)
{
	char	 out[1024];

	(void)state;
	/* before TLS: the proxy's STLS is the last capability */
	assert_true(rewrite(DOVECOT_CAPA, POP3_CAPA_ADD_STLS, out, sizeof(out)) > 0);
	assert_string_equal(out,
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "USER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n");
	/* and once only when the backend offers it too */
	assert_true(rewrite(DOVECOT_CAPA_TLS, POP3_CAPA_ADD_STLS, out, sizeof(out)) > 0);
	assert_string_equal(out,
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "USER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n");
	/* under require_tls: no USER, no SASL */
	assert_true(rewrite(DOVECOT_CAPA_TLS, POP3_CAPA_ADD_STLS | POP3_CAPA_DROP_LOGIN,
	    out, sizeof(out)) > 0);
	assert_string_equal(out,
	    "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	    "STLS\r\n.\r\n");
	/* inside TLS, or implicit: no STLS */
	assert_true(rewrite(DOVECOT_CAPA_TLS, POP3_CAPA_DROP_STLS, out, sizeof(out)) > 0);
	assert_string_equal(out, DOVECOT_CAPA);
	assert_true(rewrite(DOVECOT_CAPA_LOGGED_IN, POP3_CAPA_DROP_STLS, out, sizeof(out)) > 0);
	assert_string_equal(out, DOVECOT_CAPA_LOGGED_IN);
	/* the status text is kept; nothing but the status and the end */
	assert_true(rewrite("+OK Capability list follows\r\n.\r\n", POP3_CAPA_ADD_STLS,
	    out, sizeof(out)) > 0);
	assert_string_equal(out, POP3_CAPA_OWN);
	/* any case, a keyword with arguments, a dot-stuffed one; not a longer word */
	assert_true(rewrite("+OK\r\nstls\r\nSTLS x\r\n.STLS\r\nSTLSX\r\nuser\r\nsasl PLAIN\r\n"
	    "SASLX\r\nUSERS\r\n.\r\n", POP3_CAPA_DROP_STLS | POP3_CAPA_DROP_LOGIN,
	    out, sizeof(out)) > 0);
	assert_string_equal(out, "+OK\r\nSTLSX\r\nSASLX\r\nUSERS\r\n.\r\n");
	/* no flag: the same bytes */
	assert_int_equal(rewrite(DOVECOT_CAPA_TLS, 0, out, sizeof(out)),
	    (ssize_t)strlen(DOVECOT_CAPA_TLS));
	assert_string_equal(out, DOVECOT_CAPA_TLS);

	/* not a whole positive reply, with lines every client reads alike */
	static const char *const bad[] = {
		"-ERR Unknown command\r\n",	"+OK\r\nTOP\r\n",
		"+OK\r\nTOP\r\n.\r\nX",		"+OK\r\nTOP\r\n.\r\n.\r\n",
		"+OK\r\nTOP\n.\r\n",		"+OK\r\nTOP\r\n.\n",
		"+OK\nTOP\r\n.\r\n",		"+OK\r\nT\rOP\r\n.\r\n",
		"+ok\r\nTOP\r\n.\r\n",		"",
		"+OK\r\n\n.\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (rewrite(bad[i], POP3_CAPA_ADD_STLS, out, sizeof(out)) != -1)
			fail_msg("bad[%zu] was rewritten", i);
	/* too small a buffer, by one byte */
	assert_int_equal(rewrite(DOVECOT_CAPA, POP3_CAPA_ADD_STLS, out,
	    strlen(DOVECOT_CAPA) + 5), -1);
	assert_int_equal(rewrite(DOVECOT_CAPA, POP3_CAPA_ADD_STLS, out,
	    strlen(DOVECOT_CAPA) + 6), (ssize_t)strlen(DOVECOT_CAPA) + 6);
}

/* At most POP3_CAPA_LINES_MAX lines, the status and the end included. */
static void
test_capa_rewrite_lines(void **state)
{
	char	 in[POP3_CAPA_LINES_MAX * 8 + 64], out[sizeof(in) + 64];
	size_t	 off;

	(void)state;
	for (int extra = 0; extra <= 1; extra++) {
		off = (size_t)snprintf(in, sizeof(in), "+OK\r\n");
		for (int i = 0; i < POP3_CAPA_LINES_MAX - 2 + extra; i++)
			off += (size_t)snprintf(in + off, sizeof(in) - off, "X%d\r\n", i);
		snprintf(in + off, sizeof(in) - off, ".\r\n");
		if (extra)
			assert_int_equal(rewrite(in, 0, out, sizeof(out)), -1);
		else
			assert_true(rewrite(in, 0, out, sizeof(out)) > 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_verbs),
		cmocka_unit_test(test_command_args),
		cmocka_unit_test(test_pre_tls_sets),
		cmocka_unit_test(test_reply_shapes),
		cmocka_unit_test(test_status_lines),
		cmocka_unit_test(test_body_end),
		cmocka_unit_test(test_capa_rewrite),
		cmocka_unit_test(test_capa_rewrite_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
