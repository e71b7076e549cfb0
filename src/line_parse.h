/*
 * Lines for the line protocol and SMTP: LF or CRLF, bounded.
 */
#ifndef STP_LINE_PARSE_H
#define STP_LINE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "parse.h"

#define LINE_MAX_PRE_TLS	8192	/* the line protocol before the upgrade */

/*
 * The first line of p[0..len), at most max bytes with its line ending.
 * PARSE_OK: *linelen is the length with the ending, *textlen without it
 * (a CR before the LF is not part of the text).  PARSE_NEED_MORE: no LF
 * yet and fewer than max bytes.  PARSE_TOO_LONG: no LF within max bytes.
 * The out-parameters are written only with PARSE_OK.
 */
enum parse_result line_next(const char *p, size_t len, size_t max,
		    size_t *linelen, size_t *textlen);

/* The text equals word, ignoring ASCII case. */
bool		 line_equals(const char *text, size_t len, const char *word);

/* How many LF bytes p[0..len) holds. */
size_t		 line_count(const char *p, size_t len);

#endif
