/*
 * What every pure parser returns: it needs more bytes, it found a complete
 * element (and says how many bytes it used), or the input is malformed or
 * over a limit.  Pure parsers take bytes and a length, never an evbuffer.
 */
#ifndef STP_PARSE_H
#define STP_PARSE_H

enum parse_result {
	PARSE_NEED_MORE,
	PARSE_OK,
	PARSE_TOO_LONG,
	PARSE_MALFORMED,
};

#endif
