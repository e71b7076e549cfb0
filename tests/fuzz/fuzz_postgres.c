/*
 * libFuzzer target: PostgreSQL startup packets (src/pg_parse.c) framed as
 * the postgres module frames them, packet after packet, and the
 * ErrorResponse the proxy writes.
 *
 * Traps when what the module relies on fails: a packet taken is within
 * 8 to 10,000 bytes and of the kind its code says (an SSLRequest or
 * GSSENCRequest of 8 bytes, a CancelRequest of 16, else protocol 3); a
 * verdict is final (every shorter prefix of 8 bytes or more says the same,
 * and every prefix under 8 says NEED_MORE or, from the length alone, the
 * same refusal); and an ErrorResponse built from the input's bytes reads
 * back as the fields it was built from, its length field counting all
 * but the type byte.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pg_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_packet(const uint8_t *p, size_t len)
{
	struct pg_packet	 pk, again;
	enum pg_packet_error	 err = PG_ERROR_LENGTH, err2 = PG_ERROR_LENGTH;
	size_t			 n = len < PG_PACKET_HEADER ? len : PG_PACKET_HEADER;
	enum parse_result	 r = pg_packet_parse(p, n, &pk, &err);

	/* what the prefixes say */
	for (size_t k = 0; k < n; k++) {
		enum parse_result rk = pg_packet_parse(p, k, &again, &err2);

		if (rk == PARSE_NEED_MORE)
			continue;
		if (k < 4 || rk == PARSE_OK || rk != r || err2 != err)
			__builtin_trap();
	}
	switch (r) {
	case PARSE_NEED_MORE:
		if (n >= PG_PACKET_HEADER)
			__builtin_trap();
		return;
	case PARSE_TOO_LONG:
		if (err != PG_ERROR_LENGTH)
			__builtin_trap();
		return;
	case PARSE_MALFORMED:
		return;
	case PARSE_OK:
		break;
	}
	if (n < PG_PACKET_HEADER || pk.len < PG_PACKET_MIN || pk.len > PG_PACKET_MAX)
		__builtin_trap();
	switch (pk.kind) {
	case PG_PACKET_SSL_REQUEST:
		if (pk.code != PG_CODE_SSL || pk.len != PG_REQUEST_LEN)
			__builtin_trap();
		break;
	case PG_PACKET_GSSENC_REQUEST:
		if (pk.code != PG_CODE_GSSENC || pk.len != PG_REQUEST_LEN)
			__builtin_trap();
		break;
	case PG_PACKET_CANCEL_REQUEST:
		if (pk.code != PG_CODE_CANCEL || pk.len != PG_CANCEL_LEN)
			__builtin_trap();
		break;
	case PG_PACKET_STARTUP:
		if (pk.code >> 16 != PG_PROTO_MAJOR)
			__builtin_trap();
		break;
	default:
		__builtin_trap();
	}
}

/* The field of type t in an ErrorResponse body, or NULL. */
static const char *
field(const uint8_t *body, size_t len, char t)
{
	size_t	 off = 0;

	while (off < len && body[off] != '\0') {
		const uint8_t *end = memchr(body + off + 1, '\0', len - off - 1);

		if (end == NULL)
			return NULL;
		if (body[off] == (uint8_t)t)
			return (const char *)body + off + 1;
		off = (size_t)(end - body) + 1;
	}
	return NULL;
}

static void
check_error(const uint8_t *data, size_t size)
{
	char		 msg[PG_ERROR_MAX], state[8];
	uint8_t		 buf[PG_ERROR_MAX];
	size_t		 n = size < sizeof(msg) - 1 ? size : sizeof(msg) - 1;
	const char	*f;
	ssize_t		 len;

	memcpy(msg, data, n);
	msg[n] = '\0';		/* cut at its first NUL, as a C string */
	memcpy(state, size >= 5 ? (const char *)data : "08P01", 5);
	state[5] = '\0';
	len = pg_build_error("FATAL", state, msg, buf, sizeof(buf));
	if (len < 0) {
		/* only a message too long for the buffer, or a short SQLSTATE */
		if (strlen(state) == 5 && 5 + 7 + 7 + 2 + strlen(state) + 2 + strlen(msg) + 1 <=
		    sizeof(buf))
			__builtin_trap();
		return;
	}
	if (buf[0] != 'E' || buf[len - 1] != '\0' ||
	    ((uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4]) !=
	    (uint32_t)len - 1)
		__builtin_trap();
	if ((f = field(buf + 5, (size_t)len - 5, 'S')) == NULL || strcmp(f, "FATAL") != 0 ||
	    (f = field(buf + 5, (size_t)len - 5, 'V')) == NULL || strcmp(f, "FATAL") != 0 ||
	    (f = field(buf + 5, (size_t)len - 5, 'C')) == NULL || strcmp(f, state) != 0 ||
	    (f = field(buf + 5, (size_t)len - 5, 'M')) == NULL || strcmp(f, msg) != 0)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t	 off = 0;

	check_error(data, size);
	while (off < size) {
		struct pg_packet	 pk;
		enum pg_packet_error	 err;
		size_t			 left = size - off;
		size_t			 n = left < PG_PACKET_HEADER ? left : PG_PACKET_HEADER;

		check_packet(data + off, left);
		if (pg_packet_parse(data + off, n, &pk, &err) != PARSE_OK)
			break;
		/* the module takes a packet whole, then the next one */
		off += pk.len < left ? pk.len : left;
	}
	return 0;
}
