/*
 * ldap: the StartTLS extended operation in front of an LDAP server
 * (RFC 4511 section 4.14, RFC 4513 section 3).
 *
 * Both directions are framed message by message with the bounded BER
 * reader; a message is classified from its first bytes and then streamed.
 * Only a StartTLS the proxy may honour (before TLS on a STARTTLS
 * listener) is held whole, and that is at most the 64 KiB a message may
 * have before TLS; of an ExtendedRequest or an AbandonRequest the module
 * holds at most LDAP_CLASSIFY_MAX bytes to tell what it is, whatever
 * length it announces (Guarantee 1).
 *
 * The proxy answers StartTLS itself, in any encoding a directory would
 * take as one (ber.h): success, then the upgrade; operationsError while
 * requests relayed earlier still await their final response, or inside
 * TLS (decided from the first bytes, the rest dropped unread);
 * protocolError when malformed, and for an ExtendedRequest whose name it
 * cannot read.  Under require_tls every other request before TLS but
 * Unbind and Abandon is answered with the matching response and
 * confidentialityRequired, and never relayed: no bind password crosses to
 * the backend in cleartext.  A response the proxy writes goes to the
 * client only between two backend messages.
 *
 * Guarantee 2.  A request relayed before TLS is outstanding until its
 * final response has been relayed, abandoned or not: RFC 4511 section
 * 4.11 lets a server answer an abandoned request, and that answer must
 * never arrive inside TLS as the answer to the client's own request with
 * the same messageID.  StartTLS needs nothing outstanding, so at the
 * upgrade no cleartext request can still be answered; the outstanding set
 * then starts again empty, and inside TLS only responses to requests made
 * inside TLS (and unsolicited notifications, messageID 0) reach the
 * client.  A server that never answers abandoned requests (slapd) thus
 * leaves StartTLS refused on that connection: the client may open a new
 * one.
 *
 * With backend.tls = "starttls" the proxy sends its own StartTLS to the
 * backend first (messageID 1) and starts TLS on a success.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "ber.h"
#include "proto.h"

#define LDAP_OUTSTANDING_MAX	256	/* requests awaiting a final response */

struct ldap_request {
	int32_t			 msgid;
	bool			 abandoned;	/* the client sent an Abandon for it */
};

struct ldap {
	const struct listener_conf *conf;
	struct ldap_request	 outstanding[LDAP_OUTSTANDING_MAX];
	unsigned		 noutstanding;
	bool			 forgot;	/* an abandoned cleartext request was
						   dropped from the set: no StartTLS */
	uint64_t		 client_left;	/* bytes of the current client message */
	bool			 client_drop;	/* ... to drop rather than relay */
	uint64_t		 backend_left;	/* bytes of the current backend message */
	bool			 backend_drop;	/* ... to drop rather than relay */
	bool			 bup_sent;	/* backend.tls = "starttls": request sent */
	char			 bup_why[160];
};

/* The proxy's own StartTLS towards the backend: messageID 1, no controls. */
static const uint8_t ldap_starttls_request[] = {
	0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16,
	'1', '.', '3', '.', '6', '.', '1', '.', '4', '.', '1', '.',
	'1', '4', '6', '6', '.', '2', '0', '0', '3', '7',
};

static void *
ldap_new(const struct listener_conf *conf)
{
	struct ldap	*m = calloc(1, sizeof(*m));

	if (m != NULL)
		m->conf = conf;
	return m;
}

static void
ldap_free(void *m)
{
	free(m);
}

static bool
outstanding_has(const struct ldap *m, int32_t msgid)
{
	for (unsigned i = 0; i < m->noutstanding; i++)
		if (m->outstanding[i].msgid == msgid)
			return true;
	return false;
}

static void
outstanding_drop(struct ldap *m, unsigned i)
{
	m->outstanding[i] = m->outstanding[--m->noutstanding];
}

/*
 * A final response to msgid.  When the client reused the messageID of a
 * request it had abandoned, the answer is taken for the abandoned one:
 * the live one stays, and is never forgotten (outstanding_add).
 */
static void
outstanding_remove(struct ldap *m, int32_t msgid)
{
	unsigned	 found = m->noutstanding;

	for (unsigned i = 0; i < m->noutstanding; i++) {
		if (m->outstanding[i].msgid != msgid)
			continue;
		found = i;
		if (m->outstanding[i].abandoned)
			break;
	}
	if (found < m->noutstanding)
		outstanding_drop(m, found);
}

static void
outstanding_abandon(struct ldap *m, int32_t msgid)
{
	for (unsigned i = 0; i < m->noutstanding; i++)
		if (m->outstanding[i].msgid == msgid)
			m->outstanding[i].abandoned = true;
}

/*
 * A request relayed: outstanding until its final response.  When the set
 * is full, an abandoned request that the server may never answer (slapd
 * does not) makes room: inside TLS nothing is lost but a late answer to
 * it, dropped as an answer to nothing; before TLS the module also stops
 * trusting the set, and StartTLS is refused on this connection from then
 * on.  Without an abandoned request to forget, false: the client waits
 * for an answer.
 */
static bool
outstanding_add(struct ldap *m, int32_t msgid, bool client_tls)
{
	if (m->noutstanding == LDAP_OUTSTANDING_MAX) {
		unsigned i;

		for (i = 0; i < m->noutstanding && !m->outstanding[i].abandoned; i++)
			;
		if (i == m->noutstanding)
			return false;
		outstanding_drop(m, i);
		if (!client_tls)
			m->forgot = true;
	}
	m->outstanding[m->noutstanding++] = (struct ldap_request){ .msgid = msgid };
	return true;
}

static void
respond(struct proto_io *io, int32_t msgid, enum ldap_op op, enum ldap_result code,
    const char *diagnostic, const char *name)
{
	uint8_t	 buf[LDAP_RESPONSE_MAX];
	ssize_t	 n = ldap_build_result(msgid, op, code, diagnostic, name, buf, sizeof(buf));

	if (n > 0)
		evbuffer_add(io->to_client, buf, (size_t)n);
	io->refused++;
}

/* A Notice of Disconnection, then close. */
static enum proto_verdict
disconnect(struct proto_io *io, enum ldap_result code, const char *diagnostic,
    enum session_end end, const char *why)
{
	uint8_t	 buf[LDAP_RESPONSE_MAX];
	ssize_t	 n = ldap_build_notice(code, diagnostic, buf, sizeof(buf));

	if (n > 0)
		evbuffer_add(io->to_client, buf, (size_t)n);
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	io->end = end;
	io->reason = why;
	return PROTO_CLOSE;
}

/* Answer the message at the head of in with code, and drop it as it comes. */
static void
refuse_extended(struct ldap *m, struct proto_io *io, const struct ldap_peek *pk,
    enum ldap_result code, const char *diagnostic, const char *name)
{
	respond(io, pk->msgid, LDAP_OP_EXTENDED_RESPONSE, code, diagnostic, name);
	m->client_left = pk->total;
	m->client_drop = true;
}

/*
 * An ExtendedRequest that is, or may be, a StartTLS (kind, from its first
 * bytes): never relayed.  Only where the proxy may honour it is it held
 * whole, to be checked; before TLS that is at most LDAP_MSG_MAX_PRE_TLS.
 * PROTO_CONTINUE with m->client_left set: answered, the rest to drop.
 */
static enum proto_verdict
ldap_starttls(struct ldap *m, struct proto_io *io, const struct ldap_peek *pk,
    enum ldap_extended kind)
{
	const char		*oid = LDAP_STARTTLS_OID;
	enum ldap_starttls	 check;

	if (kind == LDAP_EXT_UNREADABLE) {
		refuse_extended(m, io, pk, LDAP_PROTOCOL_ERROR, "malformed ExtendedRequest", NULL);
		return PROTO_CONTINUE;
	}
	if (io->client_tls) {	/* RFC 4511 4.14.2, on an implicit listener too */
		refuse_extended(m, io, pk, LDAP_OPERATIONS_ERROR, "TLS already established", oid);
		return PROTO_CONTINUE;
	}
	if (m->conf->client_tls != CLIENT_TLS_STARTTLS) {
		refuse_extended(m, io, pk, LDAP_PROTOCOL_ERROR, "StartTLS is not offered here", oid);
		return PROTO_CONTINUE;
	}
	if (evbuffer_get_length(io->in) < pk->total)
		return PROTO_CONTINUE;	/* held whole: within the pre-TLS limit */
	check = ldap_starttls_check(evbuffer_pullup(io->in, (ssize_t)pk->total),
	    (size_t)pk->total);
	switch (check) {
	case LDAP_STARTTLS_VALID:
		break;
	case LDAP_STARTTLS_CRITICAL:	/* RFC 4511 4.1.11: not performed */
		refuse_extended(m, io, pk, LDAP_UNAVAILABLE_CRITICAL_EXTENSION,
		    "critical control not supported with StartTLS", oid);
		return PROTO_CONTINUE;
	default:
		refuse_extended(m, io, pk, LDAP_PROTOCOL_ERROR, "malformed StartTLS request", oid);
		return PROTO_CONTINUE;
	}
	if (m->noutstanding > 0 || m->forgot) {
		refuse_extended(m, io, pk, LDAP_OPERATIONS_ERROR,
		    "StartTLS while other operations are outstanding", oid);
		return PROTO_CONTINUE;
	}
	evbuffer_drain(io->in, (size_t)pk->total);
	respond(io, pk->msgid, LDAP_OP_EXTENDED_RESPONSE, LDAP_SUCCESS, "", oid);
	io->refused--;	/* a success, not a refusal */
	return PROTO_UPGRADE;
}

/*
 * The envelope of the next message in in: ldap_peek over its first bytes.
 * A header that does not fit in LDAP_PEEK_MAX bytes is malformed, not
 * incomplete.
 */
static enum parse_result
ldap_peek_in(struct evbuffer *in, uint64_t max, struct ldap_peek *pk)
{
	size_t			 len = evbuffer_get_length(in);
	size_t			 n = len < LDAP_PEEK_MAX ? len : LDAP_PEEK_MAX;
	enum parse_result	 r = ldap_peek(evbuffer_pullup(in, (ssize_t)n), n, max, pk);

	return r == PARSE_NEED_MORE && len >= LDAP_PEEK_MAX ? PARSE_MALFORMED : r;
}

/*
 * What may reach the backend before TLS under require_tls: UnbindRequest
 * ([APPLICATION 2] NULL) and AbandonRequest ([APPLICATION 16] MessageID),
 * both primitive, so their tags are exactly 0x42 and 0x50.  A constructed
 * look-alike is not one of them.
 */
static bool
ldap_passes_before_tls(const struct ldap_peek *pk)
{
	return pk->op_tag == (0x40 | LDAP_OP_UNBIND_REQUEST) ||
	    pk->op_tag == (0x40 | LDAP_OP_ABANDON_REQUEST);
}

/* Bytes of the message at the head of in that the module reads to classify it. */
static size_t
classify_len(const struct ldap_peek *pk)
{
	return pk->total < LDAP_CLASSIFY_MAX ? (size_t)pk->total : LDAP_CLASSIFY_MAX;
}

static enum proto_verdict
ldap_client_input(struct proto_io *io)
{
	struct ldap		*m = io->state;
	uint64_t		 max = io->client_tls ? LDAP_MSG_MAX : LDAP_MSG_MAX_PRE_TLS;
	struct ldap_peek	 pk;
	size_t			 len;

	while ((len = evbuffer_get_length(io->in)) > 0) {
		if (m->client_left > 0) {	/* the rest of a message */
			size_t n = len < m->client_left ? len : (size_t)m->client_left;

			if (m->client_drop)
				evbuffer_drain(io->in, n);
			else
				evbuffer_remove_buffer(io->in, io->to_backend, n);
			m->client_left -= n;
			continue;
		}
		if (proto_client_full(io))
			return PROTO_CONTINUE;	/* the client reads its replies first */
		switch (ldap_peek_in(io->in, max, &pk)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_TOO_LONG:
			if (io->client_tls)
				return disconnect(io, LDAP_PROTOCOL_ERROR, "message too large",
				    END_PROTOCOL_ERROR, "an LDAP message larger than 4 GiB");
			return disconnect(io, LDAP_PROTOCOL_ERROR, "message too large before TLS",
			    END_PROTOCOL_ERROR, "an LDAP message larger than 64 KiB before TLS");
		case PARSE_MALFORMED:
			return disconnect(io, LDAP_PROTOCOL_ERROR, "malformed LDAP message",
			    END_PROTOCOL_ERROR, "a malformed LDAP message from the client (BER)");
		case PARSE_OK:
			break;
		}

		/* what may be a StartTLS is answered by the proxy, in TLS too */
		if (pk.op == LDAP_OP_EXTENDED_REQUEST) {
			enum ldap_extended kind;

			if (len < classify_len(&pk))
				return PROTO_CONTINUE;
			kind = ldap_extended_kind(evbuffer_pullup(io->in, (ssize_t)classify_len(&pk)),
			    classify_len(&pk));
			if (kind == LDAP_EXT_STARTTLS || kind == LDAP_EXT_UNREADABLE) {
				enum proto_verdict v;

				if (m->backend_left > 0)
					return PROTO_HOLD;	/* between backend messages */
				/*
				 * A refusal leaves the rest of the message to
				 * drop (client_left), and what was pipelined
				 * behind it is parsed too; without one, the
				 * StartTLS is not whole yet, or TLS starts.
				 */
				if ((v = ldap_starttls(m, io, &pk, kind)) != PROTO_CONTINUE ||
				    m->client_left == 0)
					return v;
				continue;
			}
		}

		if (!io->client_tls && m->conf->require_tls && !ldap_passes_before_tls(&pk)) {
			int resp = ldap_response_for(pk.op);

			if (resp == -1)
				return disconnect(io, LDAP_PROTOCOL_ERROR, "not an LDAP request",
				    END_PROTOCOL_ERROR, "the client sent something that is not an LDAP request");
			if (m->backend_left > 0)
				return PROTO_HOLD;
			respond(io, pk.msgid, (enum ldap_op)resp, LDAP_CONFIDENTIALITY_REQUIRED,
			    "StartTLS is required before this operation", NULL);
			m->client_left = pk.total;
			m->client_drop = true;
			continue;
		}

		/*
		 * Relayed: track what will get a final response.  An Abandon
		 * gets none and leaves its target outstanding (see the top);
		 * its target comes before any control, and the rest streams.
		 */
		if (pk.op_tag == (0x40 | LDAP_OP_ABANDON_REQUEST)) {
			if (len < classify_len(&pk))
				return PROTO_CONTINUE;
			outstanding_abandon(m, ldap_abandon_target(
			    evbuffer_pullup(io->in, (ssize_t)classify_len(&pk)), classify_len(&pk)));
		} else if (pk.op_tag != (0x40 | LDAP_OP_UNBIND_REQUEST)) {
			if (!outstanding_add(m, pk.msgid, io->client_tls))
				return PROTO_HOLD;
		}
		m->client_left = pk.total;
		m->client_drop = false;
	}
	return PROTO_CONTINUE;
}

static enum proto_verdict
ldap_backend_input(struct proto_io *io)
{
	struct ldap		*m = io->state;
	struct ldap_peek	 pk;
	size_t			 len;

	while ((len = evbuffer_get_length(io->in)) > 0) {
		if (m->backend_left > 0) {
			size_t n = len < m->backend_left ? len : (size_t)m->backend_left;

			if (m->backend_drop) {
				evbuffer_drain(io->in, n);
				io->dropped += n;
			} else
				evbuffer_remove_buffer(io->in, io->to_client, n);
			m->backend_left -= n;
			continue;
		}
		switch (ldap_peek_in(io->in, LDAP_MSG_MAX, &pk)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		default:
			return disconnect(io, LDAP_UNAVAILABLE, "the directory server misbehaved",
			    END_BACKEND_ERROR, "the backend sent a malformed LDAP message");
		case PARSE_OK:
			break;
		}
		if (io->client_tls && pk.msgid != 0 && !outstanding_has(m, pk.msgid)) {
			/*
			 * Inside TLS, a response to nothing asked inside TLS
			 * answers the cleartext phase: never delivered as if it
			 * came after the upgrade.
			 */
			m->backend_left = pk.total;
			m->backend_drop = true;
			continue;
		}
		if (ldap_op_is_final_response(pk.op) && pk.msgid != 0)
			outstanding_remove(m, pk.msgid);
		m->backend_left = pk.total;
		m->backend_drop = false;
	}
	return PROTO_CONTINUE;
}

static enum proto_verdict
ldap_tls_ready(struct proto_io *io)
{
	struct ldap	*m = io->state;

	m->noutstanding = 0;	/* nothing was outstanding at the upgrade */
	m->forgot = false;
	return PROTO_CONTINUE;
}

static void
ldap_backend_failed(struct proto_io *io)
{
	uint8_t	 buf[LDAP_RESPONSE_MAX];
	ssize_t	 n = ldap_build_notice(LDAP_UNAVAILABLE, "the directory server is unavailable",
	    buf, sizeof(buf));

	if (n > 0)
		evbuffer_add(io->to_client, buf, (size_t)n);
}

static void
ldap_refuse(struct evbuffer *to_client, enum proto_refusal r)
{
	uint8_t	 buf[LDAP_RESPONSE_MAX];
	ssize_t	 n;

	if (r == PROTO_REFUSAL_DENIED)
		n = ldap_build_notice(LDAP_INSUFFICIENT_ACCESS_RIGHTS, "access denied",
		    buf, sizeof(buf));
	else
		n = ldap_build_notice(LDAP_BUSY, r == PROTO_REFUSAL_CLIENT_LIMIT ?
		    "too many connections from your address, try again later" :
		    "too many connections, try again later", buf, sizeof(buf));

	if (n > 0)
		evbuffer_add(to_client, buf, (size_t)n);
}

static enum proto_verdict
ldap_bup_fail(struct ldap *m, struct proto_io *io, const char *why, int code)
{
	if (code >= 0)
		return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
		    "StartTLS with the backend: %s: resultCode %d", why, code);
	return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
	    "StartTLS with the backend: %s", why);
}

/*
 * backend.tls = "starttls": the proxy's own StartTLS request, then one
 * ExtendedResponse to it with success, and nothing after it before TLS.
 */
static enum proto_verdict
ldap_backend_starttls(struct proto_io *io)
{
	struct ldap		*m = io->state;
	struct ldap_peek	 pk;
	size_t			 len = evbuffer_get_length(io->in);
	const uint8_t		*p;
	enum ldap_op		 op;
	int			 code;

	if (!m->bup_sent) {
		evbuffer_add(io->to_backend, ldap_starttls_request, sizeof(ldap_starttls_request));
		m->bup_sent = true;
		return PROTO_CONTINUE;
	}
	if (len == 0)
		return PROTO_CONTINUE;
	switch (ldap_peek_in(io->in, LDAP_MSG_MAX_PRE_TLS, &pk)) {
	case PARSE_NEED_MORE:
		return PROTO_CONTINUE;
	case PARSE_OK:
		break;
	default:
		return ldap_bup_fail(m, io, "a malformed or oversized LDAP message", -1);
	}
	if (len < pk.total)
		return PROTO_CONTINUE;
	p = evbuffer_pullup(io->in, (ssize_t)pk.total);
	code = ldap_result_code(p, (size_t)pk.total, &op);
	if (code < 0 || op != LDAP_OP_EXTENDED_RESPONSE)
		return ldap_bup_fail(m, io, "an answer that is not an ExtendedResponse", -1);
	if (pk.msgid == 0)
		return ldap_bup_fail(m, io, "a Notice of Disconnection", code);
	if (pk.msgid != 1)
		return ldap_bup_fail(m, io, "a response to another request", -1);
	if (code != LDAP_SUCCESS)
		return ldap_bup_fail(m, io, "StartTLS refused", code);
	evbuffer_drain(io->in, (size_t)pk.total);
	if (evbuffer_get_length(io->in) > 0)
		return ldap_bup_fail(m, io, "the backend sent bytes after its response, before TLS", -1);
	return PROTO_UPGRADE;
}

const struct proto proto_ldap = {
	.name = "ldap",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.connect_early = true,
	.backend_before_upgrade = "cleartext operations are relayed before the upgrade when require_tls = false",
	.waits_with_require_tls = true,
	.session_new = ldap_new,
	.session_free = ldap_free,
	.client_input = ldap_client_input,
	.backend_input = ldap_backend_input,
	.tls_ready = ldap_tls_ready,
	.backend_failed = ldap_backend_failed,
	.refuse = ldap_refuse,
	.backend_starttls = ldap_backend_starttls,
};
