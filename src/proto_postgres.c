/*
 * postgres: the PostgreSQL frontend/backend protocol 3.0 ("SSL Session
 * Encryption").  The client speaks first, in startup packets that have
 * no type byte (pg_parse.h); the proxy frames them within 8 to 10,000
 * bytes and reads nothing after the first message proper.
 *
 * Before TLS: an SSLRequest is answered 'S' and TLS starts (the session
 * discards what the client sent behind it: the server's own
 * CVE-2021-23214); a GSSENCRequest is answered 'N' once, and the client
 * goes on with an SSLRequest or a StartupMessage on the same connection;
 * a connection whose first byte starts a TLS handshake record (0x16) is
 * PostgreSQL 17's direct TLS, with no verb, whose ClientHello must offer
 * ALPN "postgresql" (tlsctx.c refuses it otherwise).  A StartupMessage in
 * cleartext is refused with 28000 under require_tls and never reaches
 * the backend; without require_tls it is relayed, and the session with
 * it.
 *
 * Inside TLS the first message is a StartupMessage or a CancelRequest.
 * The backend is reached only then (connect_on_verdict), so that an
 * unreachable backend is answered FATAL 08006 after the StartupMessage,
 * inside TLS, as the server answers its own failures; the StartupMessage
 * waits in the client's input and is relayed once the backend is up,
 * and from there the session is relayed without parsing.
 *
 * A CancelRequest (in cleartext, as libpq before 17 sends it, or as the
 * first message inside TLS) is queued for the backend, which the session
 * writes first once it is up, over the backend leg's TLS when it has
 * one; nothing else the client sends on that connection is relayed, and
 * the session ends when the backend closes, which the server does at
 * once, or when the client does.
 *
 * A client refused past max_connections or client_limits
 * (refuse_in_session) gets 53300, "too many clients", at its
 * StartupMessage, inside TLS when it asked for TLS, as the server answers
 * it.  One the access list denies gets 28000 at its first message, in
 * cleartext: no TLS handshake is spent on it.
 *
 * With backend.tls = "starttls" the proxy sends its own SSLRequest: 'S'
 * and nothing after it, then TLS; 'N', an error or any byte after the
 * 'S' (the client-side CVE-2021-23222) fails the backend closed.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pg_parse.h"
#include "proto.h"

#define PG_TLS_RECORD_HANDSHAKE	0x16	/* the first byte of a ClientHello */

enum pg_state {
	PG_STARTUP,		/* the next client bytes are a startup packet */
	PG_CONNECTING,		/* a StartupMessage waits in the input for the backend */
	PG_CANCEL,		/* a CancelRequest is queued: the rest is dropped */
};

struct pg {
	const struct listener_conf *conf;
	enum pg_state		 state;
	bool			 spoke;		/* a byte came that was no direct TLS */
	bool			 gss_refused;	/* a GSSENCRequest was answered 'N' */
	bool			 ssl_refused;	/* an SSLRequest was (client_tls = "none") */
	bool			 bup_sent;	/* backend.tls = "starttls": SSLRequest sent */
	char			 why[160];
};

static const uint8_t pg_ssl_request[PG_REQUEST_LEN] = {
	0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f,		/* 8, 80877103 */
};

static void *
pg_new(const struct listener_conf *conf)
{
	struct pg	*m = calloc(1, sizeof(*m));

	if (m != NULL)
		m->conf = conf;
	return m;
}

static void
pg_free(void *m)
{
	free(m);
}

static void
pg_error(struct evbuffer *to, const char *sqlstate, const char *message)
{
	uint8_t	 buf[PG_ERROR_MAX];
	ssize_t	 n = pg_build_error("FATAL", sqlstate, message, buf, sizeof(buf));

	if (n > 0)
		evbuffer_add(to, buf, (size_t)n);
}

/* An ErrorResponse, then close; what the client sent is not read further. */
static enum proto_verdict
pg_refuse(struct proto_io *io, const char *sqlstate, const char *message,
    enum session_end end, const char *why)
{
	pg_error(io->to_client, sqlstate, message);
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	io->refused++;
	io->end = end;
	io->reason = why;
	return PROTO_CLOSE;
}

/* A client the session only refuses, at its first message proper. */
static enum proto_verdict
pg_refusal(struct pg *m, struct proto_io *io, bool startup)
{
	snprintf(m->why, sizeof(m->why), "refused (%s reached)%s",
	    proto_refusal_name(io->refusal), startup ? "" : "; its CancelRequest was not relayed");
	if (!startup) {
		evbuffer_drain(io->in, evbuffer_get_length(io->in));
		io->end = proto_refusal_end(io->refusal);
		io->reason = m->why;
		return PROTO_CLOSE;
	}
	/* past max_connections: a policy refusal was answered before TLS */
	return pg_refuse(io, "53300", "sorry, too many clients already",
	    proto_refusal_end(io->refusal), m->why);
}

/*
 * A client the listener's policy refuses (access, client_limits): 28000
 * or 53300 at once, before TLS, whatever it sent first (libpq reads an
 * ErrorResponse as the answer to its SSLRequest, as the server sends one
 * when it cannot start a backend), so that a refused client costs no
 * handshake; a ClientHello (direct TLS) gets a close.
 */
static enum proto_verdict
pg_policy_refusal(struct proto_io *io, const uint8_t *p)
{
	bool	 denied = io->refusal == PROTO_REFUSAL_DENIED;

	if (p[0] == PG_TLS_RECORD_HANDSHAKE) {
		evbuffer_drain(io->in, evbuffer_get_length(io->in));
		io->end = proto_refusal_end(io->refusal);
		io->reason = denied ? "denied by access (a direct TLS ClientHello: closed)" :
		    "over client_limits (a direct TLS ClientHello: closed)";
		return PROTO_CLOSE;
	}
	if (denied)
		return pg_refuse(io, "28000", "no access from this address", END_DENIED,
		    "denied by access");
	return pg_refuse(io, "53300", "sorry, too many connections from your address",
	    END_CLIENT_LIMIT, "over client_limits");
}

static enum proto_verdict
pg_client_input(struct proto_io *io)
{
	struct pg		*m = io->state;
	struct pg_packet	 pk;
	enum pg_packet_error	 err;
	const uint8_t		*p;
	size_t			 len, n;

	while ((len = evbuffer_get_length(io->in)) > 0) {
		switch (m->state) {
		case PG_CANCEL:
			evbuffer_drain(io->in, len);
			return PROTO_CONTINUE;
		case PG_CONNECTING:
			return PROTO_HOLD;	/* the StartupMessage waits for the backend */
		case PG_STARTUP:
			break;
		}
		n = len < PG_PACKET_HEADER ? len : PG_PACKET_HEADER;
		p = evbuffer_pullup(io->in, (ssize_t)n);
		if ((io->refusal == PROTO_REFUSAL_DENIED ||
		    io->refusal == PROTO_REFUSAL_CLIENT_LIMIT) && !io->client_tls)
			return pg_policy_refusal(io, p);
		/* PostgreSQL 17's direct TLS: a ClientHello as the very first byte */
		if (!io->client_tls && !m->spoke && p[0] == PG_TLS_RECORD_HANDSHAKE &&
		    m->conf->client_tls == CLIENT_TLS_STARTTLS) {
			io->direct_tls = true;
			return PROTO_UPGRADE;
		}
		m->spoke = true;
		if (proto_client_full(io))
			return PROTO_CONTINUE;	/* the client reads its 'N' first */
		switch (pg_packet_parse(p, n, &pk, &err)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_OK:
			break;
		default:
			snprintf(m->why, sizeof(m->why), "%s (%s)", pg_packet_error_words(err),
			    io->client_tls ? "inside TLS" : "before TLS");
			return pg_refuse(io, "08P01", pg_packet_error_words(err),
			    END_PROTOCOL_ERROR, m->why);
		}

		switch (pk.kind) {
		case PG_PACKET_SSL_REQUEST:
			if (io->client_tls)
				return pg_refuse(io, "08P01", "SSLRequest inside TLS",
				    END_PROTOCOL_ERROR, "an SSLRequest inside TLS");
			if (m->ssl_refused)
				return pg_refuse(io, "08P01", "unexpected SSLRequest",
				    END_PROTOCOL_ERROR, "a second SSLRequest");
			evbuffer_drain(io->in, PG_REQUEST_LEN);
			if (m->conf->client_tls != CLIENT_TLS_STARTTLS) {
				/* a server without SSL: once, as the server allows it */
				evbuffer_add(io->to_client, "N", 1);
				io->refused++;
				m->ssl_refused = true;
				continue;
			}
			evbuffer_add(io->to_client, "S", 1);
			return PROTO_UPGRADE;
		case PG_PACKET_GSSENC_REQUEST:
			if (io->client_tls || m->gss_refused)
				return pg_refuse(io, "08P01", "unexpected GSSENCRequest",
				    END_PROTOCOL_ERROR, io->client_tls ?
				    "a GSSENCRequest inside TLS" : "a second GSSENCRequest");
			evbuffer_drain(io->in, PG_REQUEST_LEN);
			evbuffer_add(io->to_client, "N", 1);
			io->refused++;
			m->gss_refused = true;
			continue;
		case PG_PACKET_CANCEL_REQUEST:
			if (len < PG_CANCEL_LEN)
				return PROTO_CONTINUE;
			if (io->refusal != PROTO_REFUSAL_NONE)
				return pg_refusal(m, io, false);
			/* written first once the backend is up; the rest is no one's */
			evbuffer_remove_buffer(io->in, io->to_backend, PG_CANCEL_LEN);
			evbuffer_drain(io->in, evbuffer_get_length(io->in));
			m->state = PG_CANCEL;
			return PROTO_CONNECT;
		case PG_PACKET_STARTUP:
			if (io->refusal != PROTO_REFUSAL_NONE)
				return pg_refusal(m, io, true);
			if (!io->client_tls && m->conf->require_tls)
				return pg_refuse(io, "28000",
				    "TLS is required: connect with sslmode=require",
				    END_PROTOCOL_ERROR, "a StartupMessage before TLS (require_tls)");
			if (len < pk.len)
				return PROTO_CONTINUE;
			m->state = PG_CONNECTING;
			return PROTO_CONNECT;
		}
	}
	return PROTO_CONTINUE;
}

/*
 * The backend speaks only after the StartupMessage, when the session is
 * relayed already; a CancelRequest gets no answer.  What a backend sends
 * on a cancel connection is dropped; what it sends at once inside its
 * TLS waits for the relay.
 */
static enum proto_verdict
pg_backend_input(struct proto_io *io)
{
	struct pg	*m = io->state;
	size_t		 n = evbuffer_get_length(io->in);

	if (m->state == PG_CANCEL && n > 0) {
		evbuffer_drain(io->in, n);
		io->dropped += n;
	}
	return PROTO_CONTINUE;
}

static enum proto_verdict
pg_tls_ready(struct proto_io *io)
{
	struct pg	*m = io->state;

	m->state = PG_STARTUP;	/* the first message inside TLS comes next */
	return PROTO_CONTINUE;
}

static enum proto_verdict
pg_backend_ready(struct proto_io *io)
{
	struct pg	*m = io->state;

	if (m->state == PG_CONNECTING)
		return PROTO_TRANSPARENT;	/* the StartupMessage first, then the rest */
	return PROTO_CONTINUE;
}

static void
pg_backend_failed(struct proto_io *io)
{
	struct pg	*m = io->state;

	/* a CancelRequest has no answer, ever */
	if (m->state == PG_CONNECTING)
		pg_error(io->to_client, "08006", io->timed_out ?
		    "the database server did not answer in time" :
		    "could not connect to the database server");
}

/*
 * backend.tls = "starttls": the proxy's own SSLRequest, then one byte.
 * 'S' alone starts TLS; whatever came after it in cleartext (a response
 * injected before the handshake, CVE-2021-23222) fails the backend.
 */
static enum proto_verdict
pg_backend_starttls(struct proto_io *io)
{
	struct pg	*m = io->state;
	size_t		 len = evbuffer_get_length(io->in);
	uint8_t		 c;

	if (!m->bup_sent) {
		evbuffer_add(io->to_backend, pg_ssl_request, sizeof(pg_ssl_request));
		m->bup_sent = true;
		return PROTO_CONTINUE;
	}
	if (len == 0)
		return PROTO_CONTINUE;
	evbuffer_copyout(io->in, &c, 1);
	switch (c) {
	case 'S':
		if (len > 1)
			return proto_upgrade_failed(io, m->why, sizeof(m->why),
			    "SSLRequest to the backend: %zu bytes after its 'S', before TLS", len - 1);
		evbuffer_drain(io->in, 1);
		return PROTO_UPGRADE;
	case 'N':
		return proto_upgrade_failed(io, m->why, sizeof(m->why),
		    "SSLRequest to the backend: refused ('N': the server has ssl = off)");
	case 'E':
		return proto_upgrade_failed(io, m->why, sizeof(m->why),
		    "SSLRequest to the backend: answered with an ErrorResponse");
	default:
		return proto_upgrade_failed(io, m->why, sizeof(m->why),
		    "SSLRequest to the backend: answered 0x%02x, neither 'S' nor 'N'", c);
	}
}

const struct proto proto_postgres = {
	.name = "postgres",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.alpn = "postgresql",
	.refuse_in_session = true,
	.connect_on_verdict = true,
	.session_new = pg_new,
	.session_free = pg_free,
	.client_input = pg_client_input,
	.backend_input = pg_backend_input,
	.tls_ready = pg_tls_ready,
	.backend_ready = pg_backend_ready,
	.backend_failed = pg_backend_failed,
	.backend_starttls = pg_backend_starttls,
};
