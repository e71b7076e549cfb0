/*
 * A bounded BER reader for LDAP (RFC 4511 section 5.1, appendix B): the
 * LDAPMessage envelope, the StartTLS extended request (section 4.14), and
 * the few responses the proxy writes itself.  Definite lengths only, at
 * most four length octets, single-octet tags.  No libevent, no logging.
 */
#ifndef STP_BER_H
#define STP_BER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "parse.h"

#define LDAP_MSG_MAX_PRE_TLS	65536	/* SPEC: a message before TLS */
#define LDAP_MSG_MAX		((uint64_t)UINT32_MAX)	/* four length octets */
#define LDAP_PEEK_MAX		32	/* enough for header, messageID, op header */
#define LDAP_STARTTLS_OID	"1.3.6.1.4.1.1466.20037"
#define LDAP_NOTICE_OID		"1.3.6.1.4.1.1466.20036"
#define LDAP_RESPONSE_MAX	512	/* what the builders write, at most */

/* protocolOp numbers: [APPLICATION n] */
enum ldap_op {
	LDAP_OP_BIND_REQUEST = 0,
	LDAP_OP_BIND_RESPONSE = 1,
	LDAP_OP_UNBIND_REQUEST = 2,
	LDAP_OP_SEARCH_REQUEST = 3,
	LDAP_OP_SEARCH_ENTRY = 4,
	LDAP_OP_SEARCH_DONE = 5,
	LDAP_OP_MODIFY_REQUEST = 6,
	LDAP_OP_MODIFY_RESPONSE = 7,
	LDAP_OP_ADD_REQUEST = 8,
	LDAP_OP_ADD_RESPONSE = 9,
	LDAP_OP_DEL_REQUEST = 10,
	LDAP_OP_DEL_RESPONSE = 11,
	LDAP_OP_MODDN_REQUEST = 12,
	LDAP_OP_MODDN_RESPONSE = 13,
	LDAP_OP_COMPARE_REQUEST = 14,
	LDAP_OP_COMPARE_RESPONSE = 15,
	LDAP_OP_ABANDON_REQUEST = 16,
	LDAP_OP_SEARCH_REFERENCE = 19,
	LDAP_OP_EXTENDED_REQUEST = 23,
	LDAP_OP_EXTENDED_RESPONSE = 24,
	LDAP_OP_INTERMEDIATE = 25,
};

enum ldap_result {
	LDAP_SUCCESS = 0,
	LDAP_OPERATIONS_ERROR = 1,
	LDAP_PROTOCOL_ERROR = 2,
	LDAP_CONFIDENTIALITY_REQUIRED = 13,
	LDAP_BUSY = 51,
	LDAP_UNAVAILABLE = 52,
};

/* One TLV header. */
struct ber_tlv {
	uint8_t		 tag;
	size_t		 hdrlen;	/* tag and length octets */
	uint64_t	 len;		/* content octets */
};

/*
 * The header of the TLV at p[0..avail).  PARSE_NEED_MORE when the header
 * is not all there; PARSE_MALFORMED for a multi-octet tag, an indefinite
 * length or more than four length octets.  The content need not be there.
 * *out is written only with PARSE_OK.
 */
enum parse_result ber_tlv_header(const uint8_t *p, size_t avail, struct ber_tlv *out);

/* What the first bytes of an LDAPMessage say. */
struct ldap_peek {
	uint64_t	 total;		/* the whole message, header included */
	int32_t		 msgid;
	uint8_t		 op_tag;	/* the protocolOp's BER tag */
	enum ldap_op	 op;
};

/*
 * Read the envelope of the LDAPMessage that starts at p (avail bytes of
 * it are here): SEQUENCE, messageID, protocolOp tag.  PARSE_NEED_MORE if
 * fewer than those bytes are here, PARSE_TOO_LONG if the message is over
 * max, PARSE_MALFORMED if it is not an LDAPMessage.  *out is written only
 * with PARSE_OK.
 */
enum parse_result ldap_peek(const uint8_t *p, size_t avail, uint64_t max,
		    struct ldap_peek *out);

/* True for the responses that end an operation. */
bool	ldap_op_is_final_response(enum ldap_op);

/*
 * The response that answers a request, for a refusal; -1 for Unbind,
 * Abandon and anything that is not a request.
 */
int	ldap_response_for(enum ldap_op request);

/*
 * The resultCode of a response that carries an LDAPResult (whole message
 * in p: BindResponse, ExtendedResponse, ...), with its operation in
 * *op; -1 if it is not one.
 */
int	ldap_result_code(const uint8_t *p, size_t len, enum ldap_op *op);

/* The messageID an AbandonRequest names (whole message in p), or -1. */
int32_t	ldap_abandon_target(const uint8_t *p, size_t len);

enum ldap_starttls {
	LDAP_NOT_STARTTLS,
	LDAP_STARTTLS_VALID,
	LDAP_STARTTLS_MALFORMED,	/* the StartTLS OID, but not a valid request */
};

/*
 * Is the whole ExtendedRequest message p[0..len) a StartTLS (section
 * 4.14.1: requestName 1.3.6.1.4.1.1466.20037, no requestValue)?  Controls
 * may follow.  Garbage around a StartTLS OID is LDAP_STARTTLS_MALFORMED.
 */
enum ldap_starttls ldap_starttls_check(const uint8_t *p, size_t len);

/*
 * Write an LDAPMessage with an LDAPResult: resultCode, empty matchedDN,
 * the diagnostic message; for an ExtendedResponse (op 24), responseName
 * when not NULL.  Returns its length, or -1 if out is too small.
 */
ssize_t	ldap_build_result(int32_t msgid, enum ldap_op op, enum ldap_result code,
	    const char *diagnostic, const char *response_name, uint8_t *out, size_t outlen);

/* A Notice of Disconnection (section 4.4.1): messageID 0. */
ssize_t	ldap_build_notice(enum ldap_result code, const char *diagnostic,
	    uint8_t *out, size_t outlen);

#endif
