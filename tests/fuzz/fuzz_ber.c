/*
 * libFuzzer target: the LDAP BER reader and StartTLS detection
 * (src/ber.c), message after message as the proxy frames a stream, and
 * the response builders round-tripped through the reader.
 */
#include <stddef.h>
#include <stdint.h>

#include "ber.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ldap_peek	 pk;
	struct ber_tlv		 t;
	uint8_t			 out[LDAP_RESPONSE_MAX];
	size_t			 off = 0;

	(void)ber_tlv_header(data, size, &t);
	while (off < size) {
		size_t avail = size - off < LDAP_PEEK_MAX ? size - off : LDAP_PEEK_MAX;

		if (ldap_peek(data + off, avail, LDAP_MSG_MAX_PRE_TLS, &pk) != PARSE_OK ||
		    pk.total > size - off)
			break;
		(void)ldap_starttls_check(data + off, (size_t)pk.total);
		(void)ldap_abandon_target(data + off, (size_t)pk.total);
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
