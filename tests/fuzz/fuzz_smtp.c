/*
 * libFuzzer target: SMTP commands and replies, the EHLO rewrite, BDAT
 * arguments and the end of DATA content (src/smtp_parse.c), fed the way
 * the proxy feeds them: line by line from an arbitrary stream.
 */
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
	struct smtp_data	 d;
	char			 out[SMTP_EHLO_REPLY_MAX + 64];
	uint64_t		 n;
	bool			 last;

	while (off < size && line_next(p + off, size - off, SMTP_LINE_MAX_PRE_TLS,
	    &linelen, &textlen) == PARSE_OK) {
		smtp_command_parse(p + off, textlen, &c);
		if (c.verb == SMTP_BDAT)
			(void)smtp_bdat_args(c.args, c.argslen, &n, &last);
		(void)smtp_allowed_before_tls(c.verb);
		(void)smtp_reply_parse(p + off, textlen, &r);
		off += linelen;
	}
	for (unsigned flags = 0; flags < 8; flags++)
		(void)smtp_ehlo_rewrite(p, size, flags, out, sizeof(out));
	/* the whole input as DATA content, in one piece and split in two */
	smtp_data_begin(&d);
	(void)smtp_data_end(&d, p, size, &used);
	smtp_data_begin(&d);
	if (!smtp_data_end(&d, p, size / 2, &used))
		(void)smtp_data_end(&d, p + size / 2, size - size / 2, &used);
	return 0;
}
