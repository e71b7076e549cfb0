/*
 * libFuzzer target: POP3 commands, status lines, reply shapes, the end of
 * a multi-line body and the CAPA rewrite (src/pop3_parse.c), fed the way
 * the proxy feeds them: line by line from an arbitrary stream, and the
 * whole stream as a body and as a CAPA reply.  It traps when what the
 * pop3 module relies on fails:
 *   - the body scanner must find the end where a plain search finds the
 *     first CRLF "." CRLF (the status line's CRLF counting as the first
 *     CRLF), in one piece, split anywhere in two, and a byte at a time;
 *   - a rewritten CAPA reply must be rewritten again to the same bytes,
 *     offer STLS exactly once when STLS is added and never when it is
 *     dropped, hold no USER or SASL line when those are dropped, and end
 *     its one body where the body scanner ends it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "line_parse.h"
#include "pop3_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The first CRLF "." CRLF in "\r\n" p[0..len): the offset after it in p, or 0. */
static size_t
naive_end(const char *p, size_t len)
{
	if (len >= 3 && memcmp(p, ".\r\n", 3) == 0)
		return 3;
	for (size_t i = 0; i + 5 <= len; i++)
		if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	return 0;
}

static size_t
scan_end(const char *p, size_t len, size_t split)
{
	struct pop3_body	 b;
	size_t			 used;

	pop3_body_begin(&b);
	if (pop3_body_end(&b, p, split, &used) == PARSE_OK)
		return used;
	if (pop3_body_end(&b, p + split, len - split, &used) == PARSE_OK)
		return split + used;
	return 0;
}

/* How many lines of the CRLF-lined text out[0..len) are the capability kw. */
static unsigned
capa_count(const char *out, size_t len, const char *kw)
{
	unsigned	 n = 0;
	size_t		 off = 0, linelen, textlen;

	while (off < len && line_next(out + off, len - off, len - off + 1, &linelen,
	    &textlen) == PARSE_OK) {
		const char *t = out + off;

		if (off > 0 && textlen > 0 && t[0] == '.' && textlen > 1) {
			t++;
			textlen--;
		}
		if (off > 0 && pop3_capa_is(t, textlen, kw))
			n++;
		off += linelen;
	}
	return n;
}

static void
check_capa(const char *p, size_t size)
{
	static char	 out[POP3_CAPA_MAX + 64], again[POP3_CAPA_MAX + 128];
	ssize_t		 n, m;
	size_t		 first, end;

	for (unsigned flags = 0; flags < 8; flags++) {
		if ((n = pop3_capa_rewrite(p, size, flags, out, sizeof(out))) < 0)
			continue;
		m = pop3_capa_rewrite(out, (size_t)n, flags, again, sizeof(again));
		if (m != n || memcmp(out, again, (size_t)n) != 0)
			__builtin_trap();	/* not the same a second time */
		if ((flags & POP3_CAPA_ADD_STLS) && capa_count(out, (size_t)n, "STLS") != 1)
			__builtin_trap();
		if ((flags & POP3_CAPA_DROP_STLS) && !(flags & POP3_CAPA_ADD_STLS) &&
		    capa_count(out, (size_t)n, "STLS") != 0)
			__builtin_trap();
		if ((flags & POP3_CAPA_DROP_LOGIN) && (capa_count(out, (size_t)n, "USER") != 0 ||
		    capa_count(out, (size_t)n, "SASL") != 0))
			__builtin_trap();
		/* one reply: its body ends at its last byte, as the module finds it */
		first = (size_t)((const char *)memchr(out, '\n', (size_t)n) - out) + 1;
		end = naive_end(out + first, (size_t)n - first);
		if (end == 0 || first + end != (size_t)n)
			__builtin_trap();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char		*p = (const char *)data;
	size_t			 off = 0, linelen, textlen, want;
	struct pop3_command	 c;
	struct pop3_status	 st;
	struct pop3_body	 b;

	while (off < size && line_next(p + off, size - off, POP3_LINE_MAX_PRE_TLS,
	    &linelen, &textlen) == PARSE_OK) {
		pop3_command_parse(p + off, textlen, &c);
		if (c.args < p + off || c.args + c.argslen > p + off + textlen)
			__builtin_trap();
		(void)pop3_no_argument(&c);
		(void)pop3_reply_shape(&c);
		(void)pop3_allowed_before_tls(c.verb);
		(void)pop3_is_login(c.verb);
		for (int sasl = 0; sasl <= 1; sasl++)
			if (pop3_status_parse(p + off, textlen, sasl, &st) == PARSE_OK &&
			    (st.text < p + off || st.text + st.textlen != p + off + textlen ||
			    (!sasl && st.kind == POP3_CONTINUE)))
				__builtin_trap();
		off += linelen;
	}

	/* the whole input as a body: the same end, however it arrives */
	want = naive_end(p, size);
	if (scan_end(p, size, 0) != want || scan_end(p, size, size / 2) != want ||
	    scan_end(p, size, size / 3) != want)
		__builtin_trap();
	if (size <= 4096) {
		size_t	 got = 0, used;

		pop3_body_begin(&b);
		for (size_t i = 0; i < size && got == 0; i++)
			if (pop3_body_end(&b, p + i, 1, &used) == PARSE_OK)
				got = i + 1;
		if (got != want)
			__builtin_trap();
	}
	if (size <= POP3_CAPA_MAX)
		check_capa(p, size);
	return 0;
}
