/*
 * libFuzzer target: IMAP framing, commands, responses and capability
 * lists (src/imap_parse.c), fed the way the imap module feeds them: an
 * arbitrary stream framed line by line with the literals the lines
 * announce skipped, once as a client's commands and once as a server's
 * responses.  It traps when a line, a parse or a rewrite breaks the
 * contract that the module's framing rests on.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Does the rewritten line's list hold an AUTH= item? */
static bool
has_auth(const char *p, size_t len)
{
	struct imap_response	 r;
	size_t			 i, end;

	if (imap_response_parse(p, len, &r) != PARSE_OK || !r.capability)
		__builtin_trap();
	end = r.caps_off + r.caps_len;
	for (i = r.caps_off; i < end; i++)
		if ((i == r.caps_off || p[i - 1] == ' ') && end - i >= 5 &&
		    strncasecmp(p + i, "AUTH=", 5) == 0)
			return true;
	return false;
}

/* The capability rewrite of one response line, under every flag set. */
static void
check_rewrite(const char *p, size_t len)
{
	static char	 out[IMAP_LINE_MAX + IMAP_CAPABILITY_GROWTH + 2];
	static char	 again[sizeof(out) + IMAP_CAPABILITY_GROWTH + 2];
	struct imap_response r;
	ssize_t		 n, m;
	bool		 has;

	if (len > IMAP_LINE_MAX)
		return;
	for (unsigned flags = 0; flags < 32; flags++) {
		/* the module never adds and drops the same item */
		if (((flags & IMAP_CAPS_ADD_STARTTLS) && (flags & IMAP_CAPS_DROP_STARTTLS)) ||
		    ((flags & IMAP_CAPS_ADD_LOGINDISABLED) && (flags & IMAP_CAPS_DROP_LOGINDISABLED)))
			continue;
		n = imap_capability_rewrite(p, len, flags, out, sizeof(out));
		if (n < 0) {
			/* under 512 bytes, a list has at most 256 items: it fits */
			if (imap_response_parse(p, len, &r) == PARSE_OK && r.capability && len < 512)
				__builtin_trap();
			continue;
		}
		if ((size_t)n < 2 || (size_t)n > len + IMAP_CAPABILITY_GROWTH + 2 ||
		    out[n - 2] != '\r' || out[n - 1] != '\n')
			__builtin_trap();
		/* it is still a capability line, and says what it was asked to */
		has = imap_capability_has(out, (size_t)n - 2, "STARTTLS");
		if (((flags & IMAP_CAPS_ADD_STARTTLS) && !has) ||
		    ((flags & IMAP_CAPS_DROP_STARTTLS) && has))
			__builtin_trap();
		has = imap_capability_has(out, (size_t)n - 2, "LOGINDISABLED");
		if (((flags & IMAP_CAPS_ADD_LOGINDISABLED) && !has) ||
		    ((flags & IMAP_CAPS_DROP_LOGINDISABLED) && has))
			__builtin_trap();
		if ((flags & IMAP_CAPS_DROP_AUTH) && has_auth(out, (size_t)n - 2))
			__builtin_trap();
		/* and rewriting it again changes nothing */
		m = imap_capability_rewrite(out, (size_t)n - 2, flags, again, sizeof(again));
		if (m != n || memcmp(out, again, (size_t)n) != 0)
			__builtin_trap();
	}
}

static void
check_line(const char *p, size_t avail, size_t max, enum imap_line_mode mode,
    const struct imap_line *l)
{
	struct imap_line	 l2;

	if (l->len == 0 || l->len > avail || l->len > max || p[l->len - 1] != '\n' ||
	    memchr(p, '\n', l->len - 1) != NULL)
		__builtin_trap();
	if (l->textlen != l->len - 1 && !(l->textlen == l->len - 2 && p[l->textlen] == '\r'))
		__builtin_trap();
	if (l->clean && (l->textlen + 2 != l->len || memchr(p, '\r', l->textlen) != NULL ||
	    memchr(p, '\0', l->textlen) != NULL))
		__builtin_trap();
	if (l->malformed && (l->literal != IMAP_LITERAL_NONE || l->literal_size != 0))
		__builtin_trap();
	if (l->literal != IMAP_LITERAL_NONE && (l->textlen < 3 || p[l->textlen - 1] != '}'))
		__builtin_trap();
	if (mode == IMAP_LINE_RESPONSE && l->literal == IMAP_LITERAL_NONSYNC)
		__builtin_trap();
	/* any prefix without the LF needs more; the same line with more room */
	if (imap_line_next(p, l->len - 1, max, mode, &l2) != PARSE_NEED_MORE)
		__builtin_trap();
	if (imap_line_next(p, l->len, max + 1, mode, &l2) != PARSE_OK ||
	    memcmp(l, &l2, sizeof(l2)) != 0)
		__builtin_trap();
}

static void
check_command(const char *p, size_t len)
{
	struct imap_command	 c;

	if (imap_command_parse(p, len, &c) == PARSE_OK) {
		if (c.tag != p || c.taglen == 0 || c.taglen > IMAP_TAG_MAX || c.taglen >= len ||
		    p[c.taglen] != ' ' || memchr(p, '+', c.taglen) != NULL)
			__builtin_trap();
		if (c.args != NULL && (c.args < p || c.args + c.argslen != p + len))
			__builtin_trap();
	} else if (c.tag != NULL && (c.tag != p || c.taglen == 0 || c.taglen > IMAP_TAG_MAX))
		__builtin_trap();
	(void)imap_allowed_before_tls(c.verb);
}

static void
check_response(const char *p, size_t len)
{
	struct imap_response	 r;

	if (imap_response_parse(p, len, &r) != PARSE_OK)
		return;
	if (r.capability && (r.caps_off > len || r.caps_len > len - r.caps_off))
		__builtin_trap();
	if (r.kind == IMAP_RESP_TAGGED && (r.tag != p || r.taglen == 0 || r.taglen >= len ||
	    (r.status != IMAP_STATUS_OK && r.status != IMAP_STATUS_NO &&
	    r.status != IMAP_STATUS_BAD)))
		__builtin_trap();
	check_rewrite(p, len);
}

/* The stream framed as the module frames it, literals skipped. */
static void
frame(const char *p, size_t size, size_t max, enum imap_line_mode mode)
{
	struct imap_line	 l;
	size_t			 off = 0;
	bool			 first = true;	/* the first line of a command */

	while (off < size && imap_line_next(p + off, size - off, max, mode, &l) == PARSE_OK) {
		check_line(p + off, size - off, max, mode, &l);
		if (mode == IMAP_LINE_COMMAND && first)
			check_command(p + off, l.textlen);
		if (mode == IMAP_LINE_RESPONSE && first)
			check_response(p + off, l.textlen);
		off += l.len;
		if (l.literal != IMAP_LITERAL_NONE) {
			off += l.literal_size < size - off ? (size_t)l.literal_size : size - off;
			first = false;
		} else
			first = true;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*p = (const char *)data;

	frame(p, size, IMAP_LINE_MAX_PRE_TLS, IMAP_LINE_COMMAND);
	frame(p, size, IMAP_LINE_MAX, IMAP_LINE_COMMAND);
	frame(p, size, IMAP_RESPONSE_LINE_MAX, IMAP_LINE_RESPONSE);
	return 0;
}
