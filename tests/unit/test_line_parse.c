/* Unit tests for src/line_parse.c: bounded LF/CRLF framing, words, counts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "line_parse.h"

#define SENTINEL	((size_t)0xa5a5a5a5u)

/* Shorthand: line_next on a string literal. */
static enum parse_result
next(const char *s, size_t max, size_t *linelen, size_t *textlen)
{
	return line_next(s, strlen(s), max, linelen, textlen);
}

/* A line ending in LF: the LF counts in linelen, not in textlen. */
static void
test_next_lf(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("HELLO\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 6);
	assert_int_equal(textlen, 5);
}

/* A line ending in CRLF: both bytes count in linelen, neither in textlen. */
static void
test_next_crlf(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("EHLO client.example\r\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 21);
	assert_int_equal(textlen, 19);
}

/* Only the first line is reported; the bytes after it are left alone. */
static void
test_next_first_line_only(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("NOOP\r\nQUIT\r\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 6);
	assert_int_equal(textlen, 4);
	assert_int_equal(next("a\nb\r\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 2);
	assert_int_equal(textlen, 1);
}

/* An empty line, bare or CRLF, has no text. */
static void
test_next_empty_line(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 1);
	assert_int_equal(textlen, 0);
	linelen = textlen = SENTINEL;
	assert_int_equal(next("\r\nrest", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 2);
	assert_int_equal(textlen, 0);
}

/* A CR not followed by LF is text, not a line ending. */
static void
test_next_lone_cr(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("a\rb\r\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 5);
	assert_int_equal(textlen, 3);		/* "a\rb" */
	/* only the CR right before the LF is dropped */
	assert_int_equal(next("a\r\r\n", 100, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 4);
	assert_int_equal(textlen, 2);		/* "a\r" */
	/* a CR alone does not end a line */
	linelen = textlen = SENTINEL;
	assert_int_equal(next("QUIT\r", 100, &linelen, &textlen), PARSE_NEED_MORE);
	assert_int_equal(next("QUIT\rNOOP", 100, &linelen, &textlen), PARSE_NEED_MORE);
	assert_int_equal(linelen, SENTINEL);
	assert_int_equal(textlen, SENTINEL);
}

/* No LF yet and fewer than max bytes: need more; the outputs stay as they were. */
static void
test_next_need_more(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(line_next("", 0, 100, &linelen, &textlen), PARSE_NEED_MORE);
	assert_int_equal(next("EHLO partial", 100, &linelen, &textlen), PARSE_NEED_MORE);
	assert_int_equal(next("1234567", 8, &linelen, &textlen), PARSE_NEED_MORE);
	/* the LF is past len: it is not seen */
	assert_int_equal(line_next("NOOP\n", 4, 100, &linelen, &textlen), PARSE_NEED_MORE);
	assert_int_equal(linelen, SENTINEL);
	assert_int_equal(textlen, SENTINEL);
}

/* A line of exactly max bytes, with its ending, is fine. */
static void
test_next_at_limit(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("1234567\n", 8, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 8);
	assert_int_equal(textlen, 7);
	assert_int_equal(next("123456\r\n", 8, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 8);
	assert_int_equal(textlen, 6);
	/* more bytes after a line at the limit do not matter */
	assert_int_equal(next("1234567\nmore bytes", 8, &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, 8);
}

/* One byte past max, or max bytes and no LF: too long; the outputs stay as they were. */
static void
test_next_too_long(void **state)
{
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_int_equal(next("12345678\n", 8, &linelen, &textlen), PARSE_TOO_LONG);
	assert_int_equal(next("1234567\r\n", 8, &linelen, &textlen), PARSE_TOO_LONG);
	assert_int_equal(next("12345678", 8, &linelen, &textlen), PARSE_TOO_LONG);
	assert_int_equal(next("123456789abcdef", 8, &linelen, &textlen), PARSE_TOO_LONG);
	assert_int_equal(linelen, SENTINEL);
	assert_int_equal(textlen, SENTINEL);
}

/* The same boundary at the real pre-TLS limit. */
static void
test_next_pre_tls_limit(void **state)
{
	char	*buf = malloc(LINE_MAX_PRE_TLS + 2);
	size_t	 linelen = SENTINEL, textlen = SENTINEL;

	assert_non_null(buf);
	memset(buf, 'x', LINE_MAX_PRE_TLS + 2);
	buf[LINE_MAX_PRE_TLS - 2] = '\r';
	buf[LINE_MAX_PRE_TLS - 1] = '\n';
	assert_int_equal(line_next(buf, LINE_MAX_PRE_TLS + 2, LINE_MAX_PRE_TLS,
	    &linelen, &textlen), PARSE_OK);
	assert_int_equal(linelen, LINE_MAX_PRE_TLS);
	assert_int_equal(textlen, LINE_MAX_PRE_TLS - 2);

	memset(buf, 'x', LINE_MAX_PRE_TLS + 2);
	buf[LINE_MAX_PRE_TLS - 1] = '\r';
	buf[LINE_MAX_PRE_TLS] = '\n';
	linelen = textlen = SENTINEL;
	assert_int_equal(line_next(buf, LINE_MAX_PRE_TLS + 2, LINE_MAX_PRE_TLS,
	    &linelen, &textlen), PARSE_TOO_LONG);
	/* fewer than max bytes so far: still waiting */
	assert_int_equal(line_next(buf, LINE_MAX_PRE_TLS - 1, LINE_MAX_PRE_TLS,
	    &linelen, &textlen), PARSE_NEED_MORE);
	assert_int_equal(linelen, SENTINEL);
	assert_int_equal(textlen, SENTINEL);
	free(buf);
}

/* Comparison ignores ASCII case. */
static void
test_equals_case(void **state)
{
	assert_true(line_equals("STARTTLS", 8, "STARTTLS"));
	assert_true(line_equals("starttls", 8, "STARTTLS"));
	assert_true(line_equals("StartTls", 8, "STARTTLS"));
	assert_true(line_equals("a-b_1", 5, "A-B_1"));
	assert_false(line_equals("STARTTLZ", 8, "STARTTLS"));
}

/* The lengths must match: no prefix, no trailing space, no extra bytes. */
static void
test_equals_length(void **state)
{
	assert_false(line_equals("STARTTLS ", 9, "STARTTLS"));
	assert_false(line_equals(" STARTTLS", 9, "STARTTLS"));
	assert_false(line_equals("STARTTL", 7, "STARTTLS"));
	assert_false(line_equals("STARTTLSX", 9, "STARTTLS"));
	assert_false(line_equals("STAR\0TLS", 8, "STARTTLS"));
	assert_false(line_equals("", 0, "STARTTLS"));
	assert_true(line_equals("", 0, ""));
	/* only len bytes of text are looked at: text need not end in NUL */
	assert_true(line_equals("STARTTLS\r\n", 8, "STARTTLS"));
	assert_true(line_equals("STARTTLSX", 8, "STARTTLS"));
}

/* Every LF counts, bare or in CRLF; a lone CR does not. */
static void
test_count(void **state)
{
	assert_int_equal(line_count("", 0), 0);
	assert_int_equal(line_count("no newline", 10), 0);
	assert_int_equal(line_count("\n", 1), 1);
	assert_int_equal(line_count("\r\n", 2), 1);
	assert_int_equal(line_count("\r", 1), 0);
	assert_int_equal(line_count("\n\n\n", 3), 3);
	assert_int_equal(line_count("a\r\nb\nc", 6), 2);
	assert_int_equal(line_count("NOOP\r\nNOOP\r\nNOOP\r\n", 18), 3);
	/* a NUL is just a byte */
	assert_int_equal(line_count("a\0\nb\0\n", 6), 2);
	/* only len bytes are looked at */
	assert_int_equal(line_count("a\nb\n", 3), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_next_lf),
		cmocka_unit_test(test_next_crlf),
		cmocka_unit_test(test_next_first_line_only),
		cmocka_unit_test(test_next_empty_line),
		cmocka_unit_test(test_next_lone_cr),
		cmocka_unit_test(test_next_need_more),
		cmocka_unit_test(test_next_at_limit),
		cmocka_unit_test(test_next_too_long),
		cmocka_unit_test(test_next_pre_tls_limit),
		cmocka_unit_test(test_equals_case),
		cmocka_unit_test(test_equals_length),
		cmocka_unit_test(test_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
