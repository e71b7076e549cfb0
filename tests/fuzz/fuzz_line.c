/*
 * libFuzzer target: line framing (src/line_parse.c) as the line protocol
 * uses it before the upgrade.
 */
#include <stddef.h>
#include <stdint.h>

#include "line_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*p = (const char *)data;
	size_t		 off = 0, linelen, textlen;

	(void)line_count(p, size);
	while (off < size) {
		enum parse_result r = line_next(p + off, size - off, LINE_MAX_PRE_TLS,
		    &linelen, &textlen);

		if (r != PARSE_OK)
			break;
		if (textlen > linelen)
			__builtin_trap();
		(void)line_equals(p + off, textlen, "STARTTLS");
		off += linelen;
	}
	return 0;
}
