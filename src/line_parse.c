/*
 * Bounded line framing, shared by the line protocol and SMTP.
 */
#include "autoconfig.h"

#include <string.h>
#include <strings.h>

#include "line_parse.h"

enum parse_result
line_next(const char *p, size_t len, size_t max, size_t *linelen, size_t *textlen)
{
	size_t		 scan = len < max ? len : max;
	const char	*lf = memchr(p, '\n', scan);
	size_t		 n;

	if (lf == NULL)
		return len < max ? PARSE_NEED_MORE : PARSE_TOO_LONG;
	n = (size_t)(lf - p);
	*linelen = n + 1;
	*textlen = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
	return PARSE_OK;
}

bool
line_equals(const char *text, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(text, word, len) == 0;
}

size_t
line_count(const char *p, size_t len)
{
	size_t		 n = 0;
	const char	*end = p + len, *lf;

	while (p < end && (lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		n++;
		p = lf + 1;
	}
	return n;
}
