/*
 * libFuzzer target: the LDAP BER reader and StartTLS detection
 * (src/ber.c), message after message as the proxy frames a stream, and
 * the response builders round-tripped through the reader.
 *
 * Besides memory errors it traps on what the ldap module relies on: a
 * classification made from the first min(total, LDAP_CLASSIFY_MAX) bytes
 * is the one the whole message gets (so the module never needs more of a
 * message to tell what it is), and whatever ldap_starttls_check takes as
 * a StartTLS, ldap_extended_kind took as one first (so nothing the
 * proxy would answer as a StartTLS is ever relayed).
 */
#include <stddef.h>
#include <stdint.h>

#include "ber.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_message(const uint8_t *p, size_t len, const struct ldap_peek *pk)
{
	size_t			 pre = len < LDAP_CLASSIFY_MAX ? len : LDAP_CLASSIFY_MAX;
	enum ldap_extended	 kind = ldap_extended_kind(p, pre);
	enum ldap_starttls	 st = ldap_starttls_check(p, len);
	int32_t			 target = ldap_abandon_target(p, pre);

	if (pk->op == LDAP_OP_EXTENDED_REQUEST && kind == LDAP_EXT_NEED_MORE)
		__builtin_trap();		/* the bound was not enough */
	if (kind != ldap_extended_kind(p, len))
		__builtin_trap();		/* the first bytes told another story */
	if (st != LDAP_NOT_STARTTLS && kind != LDAP_EXT_STARTTLS)
		__builtin_trap();		/* a StartTLS the module would relay */
	if (target != ldap_abandon_target(p, len))
		__builtin_trap();
	if (target >= 0 && pk->op_tag != 0x50)
		__builtin_trap();
	/* every shorter prefix: undecided, or the same answer */
	for (size_t n = 0; n < pre; n += 1 + n / 8) {
		enum ldap_extended k = ldap_extended_kind(p, n);

		if (k != LDAP_EXT_NEED_MORE && k != kind)
			__builtin_trap();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ldap_peek	 pk;
	struct ber_tlv		 t;
	uint8_t			 out[LDAP_RESPONSE_MAX];
	size_t			 off = 0;

	(void)ber_tlv_header(data, size, &t);
	(void)ldap_extended_kind(data, size);
	(void)ldap_abandon_target(data, size);
	while (off < size) {
		size_t avail = size - off < LDAP_PEEK_MAX ? size - off : LDAP_PEEK_MAX;

		if (ldap_peek(data + off, avail, LDAP_MSG_MAX, &pk) != PARSE_OK ||
		    pk.total > size - off)
			break;
		if (pk.op_off > pk.total || pk.op_len > pk.total - pk.op_off)
			__builtin_trap();
		check_message(data + off, (size_t)pk.total, &pk);
		{
			enum ldap_op op;

			(void)ldap_result_code(data + off, (size_t)pk.total, &op);
		}
		(void)ldap_op_is_final_response(pk.op);
		if (ldap_response_for(pk.op) != -1) {
			ssize_t n = ldap_build_result(pk.msgid, (enum ldap_op)ldap_response_for(pk.op),
			    LDAP_CONFIDENTIALITY_REQUIRED, "fuzz", NULL, out, sizeof(out));
			struct ldap_peek back;

			if (n <= 0 || ldap_peek(out, (size_t)n, LDAP_MSG_MAX, &back) != PARSE_OK ||
			    back.msgid != pk.msgid || back.total != (uint64_t)n)
				__builtin_trap();
		}
		off += (size_t)pk.total;
	}
	return 0;
}
