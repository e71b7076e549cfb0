/*
 * The PostgreSQL frontend/backend protocol 3.0 as pure functions over
 * bytes, as far as the proxy reads and writes it: the startup packets a
 * client sends before its first message proper (PostgreSQL
 * documentation, "Frontend/Backend Protocol": "Message Flow", "SSL
 * Session Encryption", "GSSAPI Session Encryption", "Canceling Requests
 * in Progress"; "Message Formats": StartupMessage, SSLRequest,
 * GSSENCRequest, CancelRequest), and the ErrorResponse the proxy writes
 * ("Error and Notice Message Fields").  No libevent, no logging.
 *
 * A startup packet has no type byte: an Int32 length that counts itself,
 * then an Int32 code, which is a request code or, for a StartupMessage,
 * the protocol version (major in the high 16 bits).
 */
#ifndef STP_PG_PARSE_H
#define STP_PG_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "parse.h"

#define PG_PACKET_HEADER	8	/* the length and the code */
#define PG_PACKET_MIN		8
#define PG_PACKET_MAX		10000	/* the server's MAX_STARTUP_PACKET_LENGTH */
#define PG_REQUEST_LEN		8	/* SSLRequest, GSSENCRequest: nothing else */
#define PG_CANCEL_LEN		16	/* CancelRequest: process ID and secret key */
#define PG_CODE_CANCEL		80877102u	/* 1234 << 16 | 5678 */
#define PG_CODE_SSL		80877103u	/* 1234 << 16 | 5679 */
#define PG_CODE_GSSENC		80877104u	/* 1234 << 16 | 5680 */
#define PG_PROTO_MAJOR		3	/* a StartupMessage: the server negotiates the minor */
#define PG_ERROR_MAX		512	/* an ErrorResponse the proxy writes */

enum pg_packet_kind {
	PG_PACKET_SSL_REQUEST,
	PG_PACKET_GSSENC_REQUEST,
	PG_PACKET_CANCEL_REQUEST,
	PG_PACKET_STARTUP,
};

/* Why a startup packet is refused: the text of the proxy's 08P01. */
enum pg_packet_error {
	PG_ERROR_LENGTH,	/* under PG_PACKET_MIN or over PG_PACKET_MAX */
	PG_ERROR_REQUEST_LENGTH, /* an SSLRequest or GSSENCRequest of another length */
	PG_ERROR_CANCEL_LENGTH,	/* a CancelRequest of another length */
	PG_ERROR_CODE,		/* no request code, and not protocol version 3 */
};

struct pg_packet {
	enum pg_packet_kind	 kind;
	uint32_t		 len;	/* the whole packet, its length field included */
	uint32_t		 code;
};

/*
 * The startup packet at the head of p[0..len), from its first 8 bytes:
 * the rest of it is not read, nor needed (the caller waits for out->len
 * bytes when it wants the packet whole).  PARSE_NEED_MORE: fewer than 8
 * bytes, and the length so far is not wrong.  PARSE_TOO_LONG: a length
 * over PG_PACKET_MAX.  PARSE_MALFORMED: *err says why.  out is written
 * only with PARSE_OK, err only with PARSE_MALFORMED and PARSE_TOO_LONG.
 */
enum parse_result pg_packet_parse(const uint8_t *p, size_t len, struct pg_packet *out,
		    enum pg_packet_error *err);

/* What an error says, in words, for the ErrorResponse and the log. */
const char	*pg_packet_error_words(enum pg_packet_error);

/*
 * An ErrorResponse ('E'): severity (the localized S field and the V
 * field alike), sqlstate (C, five characters), message (M), then the
 * terminator.  The bytes into buf[0..size); its length, or -1 when it
 * does not fit or sqlstate is not five characters.  A field cannot hold
 * a NUL: a message is cut at the first one, by its C string.
 */
ssize_t		 pg_build_error(const char *severity, const char *sqlstate,
		    const char *message, uint8_t *buf, size_t size);

#endif
