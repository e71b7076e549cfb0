/*
 * A bounded BER reader for LDAP (RFC 4511 section 5.1, appendix B): the
 * LDAPMessage envelope, the StartTLS extended request (section 4.14), and
 * the few responses the proxy writes itself.  No libevent, no logging.
 *
 * What it reads is BER as RFC 4511 section 5.1 restricts it: definite
 * lengths only, but in any of their valid forms (X.690 8.1.3): the short
 * form, or the long form with 1 to 126 length octets, leading zero octets
 * included (0x81 0x05 and 0x84 0x00 0x00 0x00 0x05 both say 5).  OpenLDAP's
 * liblber takes such lengths, so the proxy must too.  Tags of the
 * envelope are single octets (the LDAPMessage, messageID and protocolOp
 * tags are, and liblber compares a multi-octet one whole, so it never
 * matches them); the requestName of an ExtendedRequest may have any tag.
 */
#ifndef STP_BER_H
#define STP_BER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "parse.h"

#define LDAP_MSG_MAX_PRE_TLS	65536	/* SPEC: a message before TLS */
#define LDAP_MSG_MAX		((uint64_t)UINT32_MAX)	/* what liblber reads, at most */
/*
 * The envelope in its longest valid encoding: the SEQUENCE header (one
 * tag octet, 127 length octets), the messageID (128, and at most four
 * content octets) and the protocolOp header (128).
 */
#define LDAP_PEEK_MAX		400
/*
 * What the ldap module holds of a message to tell what it is, at most:
 * the envelope, then the requestName header of an ExtendedRequest (up to
 * BER_TAG_OCTETS_MAX tag octets and 127 length octets) and the 22 octets
 * of the StartTLS OID and one more, or the target of an AbandonRequest
 * (at most 4 octets): 546 in all.  Nothing else of either is ever held:
 * the rest streams, or is dropped.
 */
#define LDAP_CLASSIFY_MAX	600
#define BER_TAG_OCTETS_MAX	8	/* liblber's widest tag */
/* A length too large for any use reads as this; every bound is far below. */
#define BER_LEN_HUGE		((uint64_t)1 << 56)
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
	LDAP_UNAVAILABLE_CRITICAL_EXTENSION = 12,
	LDAP_CONFIDENTIALITY_REQUIRED = 13,
	LDAP_INSUFFICIENT_ACCESS_RIGHTS = 50,
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
 * length or the reserved length octet 0xff.  A length over 2^56 reads as
 * BER_LEN_HUGE.  The content need not be there.  *out is written only
 * with PARSE_OK.
 */
enum parse_result ber_tlv_header(const uint8_t *p, size_t avail, struct ber_tlv *out);

/* What the first bytes of an LDAPMessage say. */
struct ldap_peek {
	uint64_t	 total;		/* the whole message, header included */
	int32_t		 msgid;
	uint8_t		 op_tag;	/* the protocolOp's BER tag */
	enum ldap_op	 op;
	size_t		 op_off;	/* where the protocolOp's content starts */
	uint64_t	 op_len;	/* and its length */
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

/*
 * The messageID an AbandonRequest names, or -1 (not an AbandonRequest
 * with a valid target there).  p[0..avail) is the start of the message:
 * the target comes before any control, so min(total, LDAP_CLASSIFY_MAX)
 * bytes always hold it.
 */
int32_t	ldap_abandon_target(const uint8_t *p, size_t avail);

enum ldap_extended {
	LDAP_EXT_NEED_MORE,	/* fewer than min(total, LDAP_CLASSIFY_MAX) bytes */
	LDAP_EXT_NOT_STARTTLS,	/* another extended operation, or not one */
	LDAP_EXT_STARTTLS,	/* its requestName is the StartTLS OID */
	LDAP_EXT_UNREADABLE,	/* an ExtendedRequest with no requestName a
				   strict reader finds: it may be a StartTLS
				   to a lenient one (below) */
};

/*
 * What an ExtendedRequest is ([APPLICATION 23], primitive or constructed),
 * from the first min(total, LDAP_CLASSIFY_MAX) bytes of the message at
 * p: its first element is the requestName, whatever its tag, since
 * slapd takes the first element's content as the OID without looking at
 * its tag.  The proxy must take as a StartTLS whatever a directory would
 * (OpenLDAP's liblber does not even check that the element lies inside
 * the ExtendedRequest), so an ExtendedRequest whose first element is not
 * a primitive TLV inside it (empty, running past it, constructed, a
 * header the reader cannot read) is LDAP_EXT_UNREADABLE, never relayed.
 */
enum ldap_extended ldap_extended_kind(const uint8_t *p, size_t avail);

enum ldap_starttls {
	LDAP_NOT_STARTTLS,
	LDAP_STARTTLS_VALID,
	LDAP_STARTTLS_MALFORMED,	/* the StartTLS OID, but not a valid request */
	LDAP_STARTTLS_CRITICAL,		/* valid, with a critical control (4.1.11) */
};

/*
 * Is the whole message p[0..len) a StartTLS request, and a valid one
 * (section 4.14.1: [APPLICATION 23] constructed holding only requestName
 * [0] 1.3.6.1.4.1.1466.20037, a non-zero messageID, then nothing or
 * well-formed Controls)?  LDAP_NOT_STARTTLS unless ldap_extended_kind()
 * says LDAP_EXT_STARTTLS; any other element or encoding around the OID
 * is LDAP_STARTTLS_MALFORMED; a critical control, which the proxy does
 * not know, is LDAP_STARTTLS_CRITICAL.
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
