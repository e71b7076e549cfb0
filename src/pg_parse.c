/*
 * PostgreSQL startup packets and ErrorResponse: see pg_parse.h.
 */
#include "autoconfig.h"

#include <string.h>

#include "pg_parse.h"

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * The length is checked as soon as its four bytes are there, so that a
 * client that announces 2 GiB is refused at once rather than waited for.
 * The server reads an SSLRequest or a GSSENCRequest of any length and
 * ignores the rest; the proxy takes exactly 8, since whatever else such
 * a packet carried would be cleartext the client sent before TLS.
 */
enum parse_result
pg_packet_parse(const uint8_t *p, size_t len, struct pg_packet *out,
    enum pg_packet_error *err)
{
	uint32_t	 plen, code;
	enum pg_packet_kind kind;

	if (len < 4)
		return PARSE_NEED_MORE;
	plen = get32(p);
	if (plen > PG_PACKET_MAX) {
		*err = PG_ERROR_LENGTH;
		return PARSE_TOO_LONG;
	}
	if (plen < PG_PACKET_MIN) {
		*err = PG_ERROR_LENGTH;
		return PARSE_MALFORMED;
	}
	if (len < PG_PACKET_HEADER)
		return PARSE_NEED_MORE;
	code = get32(p + 4);
	switch (code) {
	case PG_CODE_SSL:
	case PG_CODE_GSSENC:
		if (plen != PG_REQUEST_LEN) {
			*err = PG_ERROR_REQUEST_LENGTH;
			return PARSE_MALFORMED;
		}
		kind = code == PG_CODE_SSL ? PG_PACKET_SSL_REQUEST : PG_PACKET_GSSENC_REQUEST;
		break;
	case PG_CODE_CANCEL:
		if (plen != PG_CANCEL_LEN) {
			*err = PG_ERROR_CANCEL_LENGTH;
			return PARSE_MALFORMED;
		}
		kind = PG_PACKET_CANCEL_REQUEST;
		break;
	default:
		if (code >> 16 != PG_PROTO_MAJOR) {
			*err = PG_ERROR_CODE;
			return PARSE_MALFORMED;
		}
		kind = PG_PACKET_STARTUP;
		break;
	}
	out->kind = kind;
	out->len = plen;
	out->code = code;
	return PARSE_OK;
}

const char *
pg_packet_error_words(enum pg_packet_error e)
{
	switch (e) {
	case PG_ERROR_LENGTH:
		return "invalid length of startup packet";
	case PG_ERROR_REQUEST_LENGTH:
		return "invalid length of SSLRequest or GSSENCRequest";
	case PG_ERROR_CANCEL_LENGTH:
		return "invalid length of CancelRequest";
	case PG_ERROR_CODE:
		return "unsupported frontend protocol: the server supports 3.0";
	}
	return "invalid startup packet";
}

/* One field: its type byte, its text and the NUL that ends it. */
static size_t
put_field(uint8_t *buf, size_t off, size_t size, char type, const char *text)
{
	size_t	 n = strlen(text);

	if (off == 0 || n + 2 > size - off)
		return 0;
	buf[off] = (uint8_t)type;
	memcpy(buf + off + 1, text, n);
	buf[off + 1 + n] = '\0';
	return off + 2 + n;
}

ssize_t
pg_build_error(const char *severity, const char *sqlstate, const char *message,
    uint8_t *buf, size_t size)
{
	size_t	 off = 5;

	if (strlen(sqlstate) != 5 || size < off + 1 || size > INT32_MAX)
		return -1;
	off = put_field(buf, off, size, 'S', severity);
	off = put_field(buf, off, size, 'V', severity);
	off = put_field(buf, off, size, 'C', sqlstate);
	off = put_field(buf, off, size, 'M', message);
	if (off == 0 || off >= size)
		return -1;
	buf[off++] = '\0';
	buf[0] = 'E';
	put32(buf + 1, (uint32_t)(off - 1));	/* the length counts itself, not the type */
	return (ssize_t)off;
}
