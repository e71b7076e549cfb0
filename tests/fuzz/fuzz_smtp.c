/*
 * libFuzzer target: SMTP commands and replies, the EHLO rewrite, BDAT
 * arguments and the end of DATA content (src/smtp_parse.c), fed the way
 * the proxy feeds them: line by line from an arbitrary stream.  The
 * strict end-of-data scanner must agree with the lax one wherever it
 * does not refuse the content, and refuse it only for a bare CR or LF.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "line_parse.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char		*p = (const char *)data;
	size_t			 off = 0, linelen, textlen, used;
	struct smtp_command	 c;
	struct smtp_reply	 r;
	struct smtp_data	 d, strict;
	char			 out[SMTP_EHLO_REPLY_MAX + 64];
	uint64_t		 n;
	bool			 last;
	enum parse_result	 lax_r, strict_r;
	size_t			 lax_used = 0, strict_used = 0;

	while (off < size && line_next(p + off, size - off, SMTP_LINE_MAX_PRE_TLS,
	    &linelen, &textlen) == PARSE_OK) {
		smtp_command_parse(p + off, textlen, &c);
		if (c.verb == SMTP_BDAT)
			(void)smtp_bdat_args(c.args, c.argslen, &n, &last);
		(void)smtp_allowed_before_tls(c.verb);
		(void)smtp_reply_parse(p + off, textlen, &r);
		/* a line passes only if it ends in CRLF and holds no other CR */
		if (smtp_line_crlf(p + off, linelen) &&
		    (textlen + 2 != linelen || memchr(p + off, '\r', textlen) != NULL))
			__builtin_trap();
		off += linelen;
	}
	for (unsigned flags = 0; flags < 8; flags++)
		(void)smtp_ehlo_rewrite(p, size, flags, out, sizeof(out));
	(void)smtp_ehlo_offers(p, size, "CHUNKING");
	/* the whole input as DATA content, in one piece and split in two */
	smtp_data_begin(&d, false);
	lax_r = smtp_data_end(&d, p, size, &lax_used);
	if (lax_r == PARSE_MALFORMED)
		__builtin_trap();	/* the lax scanner refuses nothing */
	smtp_data_begin(&strict, true);
	strict_r = smtp_data_end(&strict, p, size, &strict_used);
	if (strict_r == PARSE_OK && (lax_r != PARSE_OK || strict_used != lax_used))
		__builtin_trap();	/* the two disagree on the end */
	if (strict_r == PARSE_MALFORMED) {
		/* the byte refused is a bare LF, or the one after a bare CR */
		if (strict_used >= size || (p[strict_used] != '\n' &&
		    (strict_used == 0 || p[strict_used - 1] != '\r')))
			__builtin_trap();
		/* and before it, nothing of the kind */
		smtp_data_begin(&strict, true);
		if (smtp_data_end(&strict, p, strict_used, &used) == PARSE_MALFORMED)
			__builtin_trap();
	}
	if (strict_r == PARSE_NEED_MORE && lax_r == PARSE_OK)
		__builtin_trap();	/* no bare line ending, so the same end */
	smtp_data_begin(&d, false);
	if (smtp_data_end(&d, p, size / 2, &used) == PARSE_NEED_MORE)
		(void)smtp_data_end(&d, p + size / 2, size - size / 2, &used);
	smtp_data_begin(&strict, true);
	if (smtp_data_end(&strict, p, size / 2, &used) == PARSE_NEED_MORE)
		(void)smtp_data_end(&strict, p + size / 2, size - size / 2, &used);
	return 0;
}
