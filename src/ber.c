/*
 * BER for LDAP: see ber.h.
 */
#include "autoconfig.h"

#include <string.h>

#include "ber.h"

#define BER_SEQUENCE		0x30
#define BER_BOOLEAN		0x01
#define BER_INTEGER		0x02
#define BER_ENUMERATED		0x0a
#define BER_OCTET_STRING	0x04
#define BER_CLASS_MASK		0xc0
#define BER_CLASS_APPLICATION	0x40
#define BER_CLASS_CONTEXT	0x80
#define BER_CONSTRUCTED		0x20
#define BER_TAG_NUMBER		0x1f

/*
 * One TLV header; big_tags: a multi-octet tag (X.690 8.1.2.4) is read
 * too, up to BER_TAG_OCTETS_MAX octets, and out->tag is its first octet
 * (class and primitive/constructed bit, then 0x1f).
 */
static enum parse_result
ber_header(const uint8_t *p, size_t avail, bool big_tags, struct ber_tlv *out)
{
	uint64_t	 len = 0;
	size_t		 t = 1, n;

	if (avail < 1)
		return PARSE_NEED_MORE;
	if ((p[0] & BER_TAG_NUMBER) == BER_TAG_NUMBER) {
		if (!big_tags)
			return PARSE_MALFORMED;	/* not in the envelope */
		do {
			if (t == BER_TAG_OCTETS_MAX)
				return PARSE_MALFORMED;
			if (avail <= t)
				return PARSE_NEED_MORE;
		} while (p[t++] & 0x80);
	}
	if (avail <= t)
		return PARSE_NEED_MORE;
	if (p[t] < 0x80) {
		*out = (struct ber_tlv){ .tag = p[0], .hdrlen = t + 1, .len = p[t] };
		return PARSE_OK;
	}
	n = p[t] & 0x7f;
	if (n == 0 || n == 0x7f)
		return PARSE_MALFORMED;		/* indefinite (RFC 4511 5.1), or reserved */
	if (avail < t + 1 + n)
		return PARSE_NEED_MORE;
	for (size_t i = 0; i < n; i++) {
		if (len >= BER_LEN_HUGE >> 8) {
			len = BER_LEN_HUGE;	/* too large for anything: saturate */
			break;
		}
		len = len << 8 | p[t + 1 + i];
	}
	*out = (struct ber_tlv){ .tag = p[0], .hdrlen = t + 1 + n, .len = len };
	return PARSE_OK;
}

enum parse_result
ber_tlv_header(const uint8_t *p, size_t avail, struct ber_tlv *out)
{
	return ber_header(p, avail, false, out);
}

/* A non-negative INTEGER of at most four content octets. */
static int
ber_int_value(const uint8_t *p, uint64_t len, int32_t *out)
{
	uint32_t	 v = 0;

	if (len == 0 || len > 4 || (p[0] & 0x80))
		return -1;
	for (uint64_t i = 0; i < len; i++)
		v = v << 8 | p[i];
	if (v > INT32_MAX)
		return -1;
	*out = (int32_t)v;
	return 0;
}

enum parse_result
ldap_peek(const uint8_t *p, size_t avail, uint64_t max, struct ldap_peek *out)
{
	struct ber_tlv		 seq, id, op;
	enum parse_result	 r;
	uint64_t		 total;
	int32_t			 msgid;
	size_t			 off;

	if ((r = ber_tlv_header(p, avail, &seq)) != PARSE_OK)
		return r;
	if (seq.tag != BER_SEQUENCE)
		return PARSE_MALFORMED;
	total = seq.hdrlen + seq.len;
	if (total > max)
		return PARSE_TOO_LONG;
	off = seq.hdrlen;
	if ((r = ber_tlv_header(p + off, avail - off, &id)) != PARSE_OK)
		return r;
	if (id.tag != BER_INTEGER || id.len == 0 || id.len > 4 ||
	    id.hdrlen + id.len > seq.len)
		return PARSE_MALFORMED;
	if (avail < off + id.hdrlen + id.len)
		return PARSE_NEED_MORE;
	if (ber_int_value(p + off + id.hdrlen, id.len, &msgid) == -1)
		return PARSE_MALFORMED;
	off += id.hdrlen + (size_t)id.len;
	if ((r = ber_tlv_header(p + off, avail - off, &op)) != PARSE_OK)
		return r;
	if ((op.tag & BER_CLASS_MASK) != BER_CLASS_APPLICATION ||
	    off + op.hdrlen + op.len > total)
		return PARSE_MALFORMED;
	*out = (struct ldap_peek){
		.total = total,
		.msgid = msgid,
		.op_tag = op.tag,
		.op = (enum ldap_op)(op.tag & BER_TAG_NUMBER),
		.op_off = off + op.hdrlen,
		.op_len = op.len,
	};
	return PARSE_OK;
}

bool
ldap_op_is_final_response(enum ldap_op op)
{
	switch (op) {
	case LDAP_OP_BIND_RESPONSE:
	case LDAP_OP_SEARCH_DONE:
	case LDAP_OP_MODIFY_RESPONSE:
	case LDAP_OP_ADD_RESPONSE:
	case LDAP_OP_DEL_RESPONSE:
	case LDAP_OP_MODDN_RESPONSE:
	case LDAP_OP_COMPARE_RESPONSE:
	case LDAP_OP_EXTENDED_RESPONSE:
		return true;
	default:
		return false;
	}
}

int
ldap_response_for(enum ldap_op request)
{
	switch (request) {
	case LDAP_OP_BIND_REQUEST:	return LDAP_OP_BIND_RESPONSE;
	case LDAP_OP_SEARCH_REQUEST:	return LDAP_OP_SEARCH_DONE;
	case LDAP_OP_MODIFY_REQUEST:	return LDAP_OP_MODIFY_RESPONSE;
	case LDAP_OP_ADD_REQUEST:	return LDAP_OP_ADD_RESPONSE;
	case LDAP_OP_DEL_REQUEST:	return LDAP_OP_DEL_RESPONSE;
	case LDAP_OP_MODDN_REQUEST:	return LDAP_OP_MODDN_RESPONSE;
	case LDAP_OP_COMPARE_REQUEST:	return LDAP_OP_COMPARE_RESPONSE;
	case LDAP_OP_EXTENDED_REQUEST:	return LDAP_OP_EXTENDED_RESPONSE;
	default:			return -1;
	}
}

/* The protocolOp TLV of a whole message: its header and where it starts. */
static int
ldap_op_tlv(const uint8_t *p, size_t len, struct ber_tlv *op, size_t *off)
{
	struct ber_tlv	 seq, id;
	size_t		 o;

	if (ber_tlv_header(p, len, &seq) != PARSE_OK || seq.tag != BER_SEQUENCE ||
	    seq.hdrlen + seq.len != len)
		return -1;
	o = seq.hdrlen;
	if (ber_tlv_header(p + o, len - o, &id) != PARSE_OK || id.tag != BER_INTEGER ||
	    id.hdrlen + id.len > len - o)
		return -1;
	o += id.hdrlen + (size_t)id.len;
	if (ber_tlv_header(p + o, len - o, op) != PARSE_OK || op->hdrlen + op->len > len - o)
		return -1;
	*off = o;
	return 0;
}

int
ldap_result_code(const uint8_t *p, size_t len, enum ldap_op *op_out)
{
	struct ber_tlv	 op, rc;
	size_t		 off;
	int32_t		 code;

	if (ldap_op_tlv(p, len, &op, &off) == -1 ||
	    (op.tag & (BER_CLASS_MASK | BER_CONSTRUCTED)) != (BER_CLASS_APPLICATION | BER_CONSTRUCTED))
		return -1;
	off += op.hdrlen;
	if (ber_tlv_header(p + off, len - off, &rc) != PARSE_OK || rc.tag != BER_ENUMERATED ||
	    rc.hdrlen + rc.len > len - off ||
	    ber_int_value(p + off + rc.hdrlen, rc.len, &code) == -1)
		return -1;
	*op_out = (enum ldap_op)(op.tag & BER_TAG_NUMBER);
	return code;
}

int32_t
ldap_abandon_target(const uint8_t *p, size_t avail)
{
	struct ldap_peek	 pk;
	int32_t			 id;

	if (ldap_peek(p, avail, UINT64_MAX, &pk) != PARSE_OK ||
	    pk.op_tag != (BER_CLASS_APPLICATION | LDAP_OP_ABANDON_REQUEST) ||
	    pk.op_len > avail - pk.op_off ||
	    ber_int_value(p + pk.op_off, pk.op_len, &id) == -1)
		return -1;
	return id;
}

enum ldap_extended
ldap_extended_kind(const uint8_t *p, size_t avail)
{
	static const char	 oid[] = LDAP_STARTTLS_OID;
	struct ldap_peek	 pk;
	struct ber_tlv		 name;
	const uint8_t		*q;
	size_t			 cmp;

	switch (ldap_peek(p, avail, UINT64_MAX, &pk)) {
	case PARSE_OK:
		break;
	case PARSE_NEED_MORE:
		if (avail < LDAP_PEEK_MAX)
			return LDAP_EXT_NEED_MORE;
		/* FALLTHROUGH */
	default:
		return LDAP_EXT_NOT_STARTTLS;	/* not an LDAPMessage at all */
	}
	if ((pk.op_tag & ~BER_CONSTRUCTED) != (BER_CLASS_APPLICATION | LDAP_OP_EXTENDED_REQUEST))
		return LDAP_EXT_NOT_STARTTLS;
	if (avail < pk.total && avail < LDAP_CLASSIFY_MAX)
		return LDAP_EXT_NEED_MORE;
	/*
	 * From here avail covers the requestName's header and the length of
	 * the OID whenever they are valid: a header the bytes here do not
	 * hold runs past the message, or past anything liblber reads.
	 */
	if (pk.op_len == 0 ||
	    ber_header(p + pk.op_off, avail - pk.op_off, true, &name) != PARSE_OK ||
	    name.hdrlen + name.len > pk.op_len || (name.tag & BER_CONSTRUCTED))
		return LDAP_EXT_UNREADABLE;
	/*
	 * The OID, or the OID and a NUL, which a directory that reads the
	 * name as a C string would take for it.
	 */
	if (name.len < sizeof(oid) - 1)
		return LDAP_EXT_NOT_STARTTLS;
	cmp = name.len > sizeof(oid) - 1 ? sizeof(oid) : sizeof(oid) - 1;
	if (name.hdrlen + cmp > avail - pk.op_off)
		return LDAP_EXT_UNREADABLE;	/* cannot be: LDAP_CLASSIFY_MAX covers it */
	q = p + pk.op_off + name.hdrlen;
	if (memcmp(q, oid, sizeof(oid) - 1) != 0 || (cmp == sizeof(oid) && q[cmp - 1] != '\0'))
		return LDAP_EXT_NOT_STARTTLS;
	return LDAP_EXT_STARTTLS;
}

/*
 * Controls ::= SEQUENCE OF Control, Control ::= SEQUENCE { controlType
 * LDAPOID, criticality BOOLEAN DEFAULT FALSE, controlValue OCTET STRING
 * OPTIONAL } (section 4.1.11): the content of the [0] at p[0..len).
 */
static enum ldap_starttls
ldap_controls_check(const uint8_t *p, uint64_t len)
{
	struct ber_tlv	 c, e;
	bool		 critical = false;
	uint64_t	 off = 0, o, end;

	while (off < len) {
		if (ber_tlv_header(p + off, (size_t)(len - off), &c) != PARSE_OK ||
		    c.tag != BER_SEQUENCE || c.len > len - off - c.hdrlen)
			return LDAP_STARTTLS_MALFORMED;
		o = off + c.hdrlen;
		end = o + c.len;
		/* controlType */
		if (ber_tlv_header(p + o, (size_t)(end - o), &e) != PARSE_OK ||
		    e.tag != BER_OCTET_STRING || e.len > end - o - e.hdrlen)
			return LDAP_STARTTLS_MALFORMED;
		o += e.hdrlen + e.len;
		/* criticality: any non-zero octet is TRUE in BER (5.1 asks for 0xff) */
		if (o < end && p[o] == BER_BOOLEAN) {
			if (ber_tlv_header(p + o, (size_t)(end - o), &e) != PARSE_OK ||
			    e.len != 1 || e.hdrlen + 1 > end - o)
				return LDAP_STARTTLS_MALFORMED;
			if (p[o + e.hdrlen] != 0)
				critical = true;
			o += e.hdrlen + 1;
		}
		/* controlValue */
		if (o < end) {
			if (ber_tlv_header(p + o, (size_t)(end - o), &e) != PARSE_OK ||
			    e.tag != BER_OCTET_STRING || e.hdrlen + e.len != end - o)
				return LDAP_STARTTLS_MALFORMED;
			o = end;
		}
		off = end;
	}
	return critical ? LDAP_STARTTLS_CRITICAL : LDAP_STARTTLS_VALID;
}

enum ldap_starttls
ldap_starttls_check(const uint8_t *p, size_t len)
{
	struct ldap_peek	 pk;
	struct ber_tlv		 name, ctl;
	size_t			 off;

	if (ldap_peek(p, len, UINT64_MAX, &pk) != PARSE_OK || pk.total != len ||
	    ldap_extended_kind(p, len) != LDAP_EXT_STARTTLS)
		return LDAP_NOT_STARTTLS;
	/* section 4.1.1.1: messageID 0 is for unsolicited notifications */
	if (pk.op_tag != (BER_CLASS_APPLICATION | BER_CONSTRUCTED | LDAP_OP_EXTENDED_REQUEST) ||
	    pk.msgid == 0)
		return LDAP_STARTTLS_MALFORMED;
	/* requestName [0], the OID alone, and nothing else: no requestValue (4.14.1) */
	if (ber_tlv_header(p + pk.op_off, len - pk.op_off, &name) != PARSE_OK ||
	    name.tag != BER_CLASS_CONTEXT || name.len != sizeof(LDAP_STARTTLS_OID) - 1 ||
	    name.hdrlen + name.len != pk.op_len)
		return LDAP_STARTTLS_MALFORMED;
	off = pk.op_off + (size_t)pk.op_len;
	if (off == len)
		return LDAP_STARTTLS_VALID;
	/* controls [0], to the end of the message */
	if (ber_tlv_header(p + off, len - off, &ctl) != PARSE_OK ||
	    ctl.tag != (BER_CLASS_CONTEXT | BER_CONSTRUCTED) || ctl.hdrlen + ctl.len != len - off)
		return LDAP_STARTTLS_MALFORMED;
	return ldap_controls_check(p + off + ctl.hdrlen, ctl.len);
}

/* Writing BER */

struct ber_out {
	uint8_t		*p;
	size_t		 len;
	size_t		 off;
	bool		 overflow;
};

static void
put(struct ber_out *b, const void *data, size_t n)
{
	if (b->off + n > b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->off, data, n);
	b->off += n;
}

/* Definite lengths up to 65535: enough for what the proxy writes. */
static void
put_header(struct ber_out *b, uint8_t tag, size_t len)
{
	uint8_t	 h[4] = { tag };

	if (len < 0x80) {
		h[1] = (uint8_t)len;
		put(b, h, 2);
	} else if (len < 0x100) {
		h[1] = 0x81;
		h[2] = (uint8_t)len;
		put(b, h, 3);
	} else {
		h[1] = 0x82;
		h[2] = (uint8_t)(len >> 8);
		h[3] = (uint8_t)len;
		put(b, h, 4);
	}
}

static size_t
header_len(size_t len)
{
	return len < 0x80 ? 2 : len < 0x100 ? 3 : 4;
}

static size_t
int_len(uint32_t v)
{
	size_t	 n = 1;

	/* minimal two's complement of a non-negative value */
	while (n < 5 && (v >> (8 * n - 1)) != 0)
		n++;
	return n;
}

static void
put_int(struct ber_out *b, uint8_t tag, uint32_t v)
{
	size_t	 n = int_len(v);
	uint8_t	 buf[5];

	put_header(b, tag, n);
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(n - 1 - i >= 4 ? 0 : v >> (8 * (n - 1 - i)));
	put(b, buf, n);
}

ssize_t
ldap_build_result(int32_t msgid, enum ldap_op op, enum ldap_result code,
    const char *diagnostic, const char *response_name, uint8_t *out, size_t outlen)
{
	struct ber_out	 b = { .p = out, .len = outlen };
	size_t		 dlen = strlen(diagnostic);
	size_t		 nlen = response_name ? strlen(response_name) : 0;
	size_t		 result, body, idlen;

	if (msgid < 0 || dlen > 255 || nlen > 255)
		return -1;
	idlen = 2 + int_len((uint32_t)msgid);
	result = (2 + int_len(code)) + 2 + header_len(dlen) + dlen;
	if (response_name != NULL)
		result += header_len(nlen) + nlen;
	body = idlen + header_len(result) + result;

	put_header(&b, BER_SEQUENCE, body);
	put_int(&b, BER_INTEGER, (uint32_t)msgid);
	put_header(&b, BER_CLASS_APPLICATION | BER_CONSTRUCTED | op, result);
	put_int(&b, BER_ENUMERATED, code);
	put_header(&b, BER_OCTET_STRING, 0);		/* matchedDN */
	put_header(&b, BER_OCTET_STRING, dlen);		/* diagnosticMessage */
	put(&b, diagnostic, dlen);
	if (response_name != NULL) {
		put_header(&b, BER_CLASS_CONTEXT | 10, nlen);	/* responseName [10] */
		put(&b, response_name, nlen);
	}
	return b.overflow ? -1 : (ssize_t)b.off;
}

ssize_t
ldap_build_notice(enum ldap_result code, const char *diagnostic, uint8_t *out, size_t outlen)
{
	return ldap_build_result(0, LDAP_OP_EXTENDED_RESPONSE, code, diagnostic,
	    LDAP_NOTICE_OID, out, outlen);
}
