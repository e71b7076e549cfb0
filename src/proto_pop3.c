/*
 * pop3: STLS in front of a POP3 server (RFC 1939, RFC 2449, RFC 2595
 * section 4, RFC 3206, RFC 5034).
 *
 * The proxy answers STLS itself and never relays it; it adds STLS to the
 * cleartext CAPA reply (or answers CAPA with a list of its own when the
 * backend knows no CAPA) and removes it inside TLS; under require_tls it
 * answers USER, PASS, APOP and AUTH with -ERR [AUTH], every other command
 * but CAPA, QUIT and STLS with -ERR, and hides USER and SASL from the
 * cleartext CAPA reply.  Once the client has authenticated (+OK to PASS,
 * APOP or AUTH) there is nothing left to enforce: the session is relayed
 * transparently.  A listener with client_tls = "none" is relayed
 * transparently from the start.
 *
 * Order (RFC 2449 PIPELINING): every relayed command is open until its
 * reply, kept in a queue, and a reply the proxy makes itself must not
 * overtake the backend's replies to earlier commands, so the module holds
 * the client's input until that queue is empty.  Guarantee 2 rests on the
 * same queue: STLS is answered only when every command is answered and no
 * dialogue is open, so that nothing the backend owes the cleartext phase
 * can follow the +OK.
 *
 * The proxy must find every reply where the backend ends it, or the
 * content of a message (which anyone who mails the user writes) is read
 * as replies, across the upgrade:
 *   - a reply is multi-line only when it is +OK and its command takes one
 *     (pop3_reply_shape: CAPA, RETR, TOP, LIST and UIDL without an
 *     argument, ...); a -ERR is always one line;
 *   - the body of a multi-line reply ends at CRLF "." CRLF and nowhere
 *     else: dot-stuffed lines (".."), a "+OK" line in a message, a dot
 *     after a bare LF are content, streamed to the client as they come;
 *   - AUTH with a mechanism opens a SASL dialogue (RFC 5034): after a "+"
 *     challenge the client's next line is its response, relayed whatever
 *     it says, "STLS" and "*" included, until the backend's +OK or -ERR;
 *   - a verb the proxy does not know may have a multi-line reply it cannot
 *     see: once one has been relayed before TLS, no count is trusted and
 *     STLS is refused for the rest of the session;
 *   - before TLS a command line with a CR or a NUL inside is refused:
 *     Dovecot's pop3-login skips CRs in a command name ("ST\rLS" is STLS
 *     there), so the proxy and the backend would not agree on the verb.
 *
 * XCLIENT and XOIP are refused, before TLS and inside it: with them a
 * proxy that the backend trusts (Dovecot's login_trusted_networks) tells
 * it the client's address, and a client must not speak with the proxy's
 * voice.  backend.proxy_protocol is the way to pass the address on.
 *
 * With backend.tls = "starttls" the proxy upgrades its own connection to
 * the backend before any client command reaches it: it reads the greeting
 * (kept, and shown to the client once the backend is in TLS), sends STLS
 * and starts TLS after the +OK.  It does not ask CAPA first (SPEC): a
 * backend that does not offer STLS answers -ERR, and the attempt fails.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "line_parse.h"
#include "pop3_parse.h"
#include "proto.h"

enum pop3_expect {
	EXPECT_GREETING,
	EXPECT_SINGLE,
	EXPECT_MULTI,		/* a body follows a +OK */
	EXPECT_CAPA,		/* likewise, held whole and rewritten */
	EXPECT_LOGIN,		/* PASS, APOP: +OK means authenticated */
	EXPECT_SASL,		/* AUTH with a mechanism: "+" goes on with the dialogue */
};

enum pop3_client_mode {
	CLIENT_COMMAND,
	CLIENT_WAIT,		/* AUTH or a SASL response relayed, the backend's answer not yet seen */
	CLIENT_SASL,		/* after a "+" challenge: the next line is a SASL response */
};

enum pop3_backend_mode {
	BACKEND_STATUS,		/* between replies, or inside a SASL dialogue */
	BACKEND_BODY,		/* a multi-line reply's body, streamed */
	BACKEND_CAPA,		/* a CAPA reply's body, held to be rewritten */
};

struct pop3 {
	const struct listener_conf *conf;
	uint8_t			 expect[POP3_PIPELINE_MAX];
	unsigned		 head;
	unsigned		 count;
	enum pop3_client_mode	 mode;
	enum pop3_backend_mode	 bmode;
	struct pop3_body	 body;
	struct evbuffer		*capa;		/* the CAPA reply being read */
	bool			 unsure;	/* a verb it does not know went out before TLS */
	bool			 upgraded;	/* by STLS: inside TLS, what answers nothing is dropped */

	/* backend.tls = "starttls": the proxy's own dialogue with the backend */
	enum {
		BUP_GREETING,		/* nothing read yet */
		BUP_STLS,		/* our STLS sent */
		BUP_DONE,
	}			 bup;
	struct evbuffer		*greeting;	/* for the client, once the backend is in TLS */
	char			 bup_why[160];
};

#define REPLY_STLS		"+OK Begin TLS negotiation\r\n"
#define REPLY_TLS_ACTIVE	"-ERR TLS already active\r\n"
#define REPLY_STLS_ARGS		"-ERR STLS takes no argument\r\n"
#define REPLY_STLS_UNSURE	"-ERR TLS not available after a command the proxy does not know\r\n"
#define REPLY_AUTH_NEED_TLS	"-ERR [AUTH] Authentication requires TLS: issue STLS first\r\n"
#define REPLY_NEED_TLS		"-ERR TLS required: issue STLS first\r\n"
#define REPLY_BAD_LINE		"-ERR Command line with a CR or NUL refused\r\n"
#define REPLY_XCLIENT		"-ERR XCLIENT is not allowed through the proxy\r\n"
#define REPLY_TOO_LONG		"-ERR Line too long\r\n"
#define REPLY_UNAVAILABLE	"-ERR [SYS/TEMP] Service not available\r\n"
#define REPLY_BUSY		"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
#define REPLY_CLIENT_LIMIT	"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"
#define REPLY_DENIED		"-ERR Access denied\r\n"
#define REPLY_BACKEND_ERROR	"-ERR [SYS/TEMP] Service not available: backend protocol error\r\n"

static void
expect_push(struct pop3 *m, enum pop3_expect e)
{
	m->expect[(m->head + m->count) % POP3_PIPELINE_MAX] = (uint8_t)e;
	m->count++;
}

static void
expect_pop(struct pop3 *m)
{
	m->head = (m->head + 1) % POP3_PIPELINE_MAX;
	m->count--;
}

static void *
pop3_new(const struct listener_conf *conf)
{
	struct pop3	*m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	if ((m->capa = evbuffer_new()) == NULL) {
		free(m);
		return NULL;
	}
	m->conf = conf;
	expect_push(m, EXPECT_GREETING);
	return m;
}

static void
pop3_free(void *arg)
{
	struct pop3	*m = arg;

	evbuffer_free(m->capa);
	if (m->greeting != NULL)
		evbuffer_free(m->greeting);
	free(m);
}

static void
reply(struct proto_io *io, const char *text)
{
	evbuffer_add(io->to_client, text, strlen(text));
	io->refused++;
}

/*
 * Input the proxy does not accept: its error reply, in order after the
 * replies already due, then a close.  Inside a SASL dialogue nothing else
 * is due, and the backend's next line waits for the bytes refused here.
 */
static enum proto_verdict
pop3_client_error(struct pop3 *m, struct proto_io *io, const char *text, const char *why)
{
	if (m->mode == CLIENT_COMMAND && m->count > 0)
		return PROTO_HOLD;
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	reply(io, text);
	io->end = END_PROTOCOL_ERROR;
	io->reason = why;
	return PROTO_CLOSE;
}

/* The reply the proxy itself gives to this command line, or NULL to relay it. */
static const char *
pop3_local_reply(struct pop3 *m, const struct proto_io *io, const struct pop3_command *c,
    const char *text, size_t textlen)
{
	if (c->verb == POP3_STLS) {
		if (io->client_tls)
			return REPLY_TLS_ACTIVE;
		if (!pop3_no_argument(c))
			return REPLY_STLS_ARGS;
		if (m->unsure)
			return REPLY_STLS_UNSURE;
		return REPLY_STLS;
	}
	if (c->verb == POP3_XCLIENT || c->verb == POP3_XOIP)
		return REPLY_XCLIENT;
	if (io->client_tls)
		return NULL;
	if (memchr(text, '\r', textlen) != NULL || memchr(text, '\0', textlen) != NULL)
		return REPLY_BAD_LINE;
	if (m->conf->require_tls && !pop3_allowed_before_tls(c->verb))
		return pop3_is_login(c->verb) ? REPLY_AUTH_NEED_TLS : REPLY_NEED_TLS;
	return NULL;
}

/* One line from the client: a command, or in a SASL dialogue the client's response. */
static enum proto_verdict
pop3_line(struct pop3 *m, struct proto_io *io)
{
	size_t			 max = io->client_tls ? POP3_LINE_MAX : POP3_LINE_MAX_PRE_TLS;
	size_t			 len = evbuffer_get_length(io->in), linelen, textlen;
	const char		*p, *local;
	struct pop3_command	 c;

	if (m->mode == CLIENT_COMMAND && m->count == POP3_PIPELINE_MAX)
		return PROTO_HOLD;	/* enough in flight: let the replies come back */
	p = (const char *)evbuffer_pullup(io->in, (ssize_t)(len < max ? len : max));
	switch (line_next(p, len, max, &linelen, &textlen)) {
	case PARSE_NEED_MORE:
		return PROTO_CONTINUE;
	case PARSE_OK:
		break;
	default:
		return pop3_client_error(m, io, REPLY_TOO_LONG, io->client_tls ?
		    "a command line longer than 16 KiB inside TLS before authentication" :
		    "a command line longer than 4 KiB before TLS");
	}

	if (m->mode == CLIENT_SASL) {
		/* a response, whatever it says; "*" cancels (RFC 5034 section 4) */
		evbuffer_remove_buffer(io->in, io->to_backend, linelen);
		m->mode = CLIENT_WAIT;
		return PROTO_CONTINUE;
	}

	pop3_command_parse(p, textlen, &c);
	if ((local = pop3_local_reply(m, io, &c, p, textlen)) != NULL) {
		if (m->count > 0)
			return PROTO_HOLD;	/* after the replies already due */
		evbuffer_drain(io->in, linelen);
		reply(io, local);
		return strcmp(local, REPLY_STLS) == 0 ? PROTO_UPGRADE : PROTO_CONTINUE;
	}

	evbuffer_remove_buffer(io->in, io->to_backend, linelen);
	switch (c.verb) {
	case POP3_PASS:
	case POP3_APOP:
		expect_push(m, EXPECT_LOGIN);
		break;
	case POP3_CAPA:
		expect_push(m, EXPECT_CAPA);
		break;
	default:
		switch (pop3_reply_shape(&c)) {
		case POP3_MULTI:
			expect_push(m, EXPECT_MULTI);
			break;
		case POP3_SASL:
			expect_push(m, EXPECT_SASL);
			m->mode = CLIENT_WAIT;
			break;
		default:
			expect_push(m, EXPECT_SINGLE);
			break;
		}
		break;
	}
	if (c.verb == POP3_UNKNOWN && !io->client_tls)
		m->unsure = true;
	return PROTO_CONTINUE;
}

static enum proto_verdict
pop3_client_input(struct proto_io *io)
{
	struct pop3		*m = io->state;
	enum proto_verdict	 v;
	size_t			 len;

	if (m->conf->client_tls == CLIENT_TLS_NONE)
		return PROTO_TRANSPARENT;	/* no TLS to offer: a plain relay */
	while ((len = evbuffer_get_length(io->in)) > 0) {
		if (proto_client_full(io))
			return PROTO_CONTINUE;	/* the client reads its replies first */
		if (m->mode == CLIENT_WAIT)
			return PROTO_HOLD;
		if ((v = pop3_line(m, io)) != PROTO_CONTINUE)
			return v;
		if (evbuffer_get_length(io->in) == len)
			return PROTO_CONTINUE;	/* an incomplete line */
	}
	return PROTO_CONTINUE;
}

/* The CAPA rewrite that applies now: before TLS, and inside it until authentication. */
static unsigned
pop3_capa_flags(const struct pop3 *m, const struct proto_io *io)
{
	if (!io->client_tls)
		return POP3_CAPA_ADD_STLS | (m->conf->require_tls ? POP3_CAPA_DROP_LOGIN : 0);
	return POP3_CAPA_DROP_STLS;
}

static enum proto_verdict
pop3_backend_error(struct pop3 *m, struct proto_io *io, const char *why)
{
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	evbuffer_drain(m->capa, evbuffer_get_length(m->capa));
	evbuffer_add(io->to_client, REPLY_BACKEND_ERROR, strlen(REPLY_BACKEND_ERROR));
	io->end = END_BACKEND_ERROR;
	io->reason = why;
	return PROTO_CLOSE;
}

/* A whole positive CAPA reply is in m->capa: rewrite it for the client. */
static bool
pop3_capa_done(struct pop3 *m, struct proto_io *io)
{
	char		 out[POP3_CAPA_MAX + 64];
	size_t		 len = evbuffer_get_length(m->capa);
	const char	*p = (const char *)evbuffer_pullup(m->capa, -1);
	ssize_t		 n;

	n = pop3_capa_rewrite(p, len, pop3_capa_flags(m, io), out, sizeof(out));
	evbuffer_drain(m->capa, len);
	if (n < 0)
		return false;
	evbuffer_add(io->to_client, out, (size_t)n);
	return true;
}

/*
 * A multi-line reply's body, up to and including its end, or all of it:
 * to the client as it comes, or into m->capa.  The input may hold many
 * chunks (a large read under TLS): look at them sixteen at a time until
 * the end is found or nothing is left.
 */
static enum proto_verdict
pop3_body(struct pop3 *m, struct proto_io *io)
{
	struct evbuffer_iovec	 v[16];
	struct evbuffer		*to = m->bmode == BACKEND_CAPA ? m->capa : io->to_client;
	size_t			 total, used;
	int			 n;

	while (evbuffer_get_length(io->in) > 0) {
		bool	 end = false;

		n = evbuffer_peek(io->in, -1, NULL, v, 16);
		total = 0;
		for (int i = 0; i < n && i < 16 && !end; i++) {
			if (pop3_body_end(&m->body, v[i].iov_base, v[i].iov_len, &used) == PARSE_OK) {
				total += used;
				end = true;
			} else
				total += v[i].iov_len;
		}
		if (to == m->capa && evbuffer_get_length(m->capa) + total > POP3_CAPA_MAX)
			return pop3_backend_error(m, io, "a CAPA reply from the backend longer than 16 KiB");
		evbuffer_remove_buffer(io->in, to, total);
		if (!end)
			continue;
		if (m->bmode == BACKEND_CAPA && !pop3_capa_done(m, io))
			return pop3_backend_error(m, io, "a malformed CAPA reply from the backend");
		m->bmode = BACKEND_STATUS;
		expect_pop(m);
		break;
	}
	return PROTO_CONTINUE;
}

/*
 * One status line from the backend (or a "+" challenge in a SASL
 * dialogue), whole in io->in: the answer to the oldest open command, or
 * to none.
 */
static enum proto_verdict
pop3_status(struct pop3 *m, struct proto_io *io, const char *p, size_t linelen, size_t textlen)
{
	struct pop3_status	 st;
	enum pop3_expect	 kind;

	if (m->count == 0) {
		if (m->upgraded) {
			/*
			 * Inside TLS a line that answers nothing asked there
			 * belongs to the cleartext phase: it must not look as
			 * if it came after the upgrade.
			 */
			io->dropped += linelen;
			evbuffer_drain(io->in, linelen);
			return PROTO_CONTINUE;
		}
		/* unsolicited: a -ERR before the backend closes, say */
		if (pop3_status_parse(p, textlen, false, &st) != PARSE_OK)
			return pop3_backend_error(m, io, "the backend sent something that is not a POP3 reply");
		evbuffer_remove_buffer(io->in, io->to_client, linelen);
		return PROTO_CONTINUE;
	}
	kind = m->expect[m->head];
	if (pop3_status_parse(p, textlen, kind == EXPECT_SASL, &st) != PARSE_OK)
		return pop3_backend_error(m, io, "the backend sent something that is not a POP3 reply");

	switch (kind) {
	case EXPECT_SASL:
		if (st.kind == POP3_CONTINUE) {
			if (m->mode != CLIENT_WAIT)
				return pop3_backend_error(m, io,
				    "a SASL challenge from the backend before the client's response");
			evbuffer_remove_buffer(io->in, io->to_client, linelen);
			m->mode = CLIENT_SASL;
			return PROTO_CONTINUE;
		}
		m->mode = CLIENT_COMMAND;	/* the dialogue is over */
		/* FALLTHROUGH */
	case EXPECT_LOGIN:
		evbuffer_remove_buffer(io->in, io->to_client, linelen);
		expect_pop(m);
		/* authenticated: nothing left to enforce (RFC 2595: no STLS after it) */
		return st.kind == POP3_OK ? PROTO_TRANSPARENT : PROTO_CONTINUE;
	case EXPECT_CAPA:
		if (st.kind == POP3_OK) {
			evbuffer_remove_buffer(io->in, m->capa, linelen);
			m->bmode = BACKEND_CAPA;
			pop3_body_begin(&m->body);
			return PROTO_CONTINUE;
		}
		if (!io->client_tls) {
			/* a server without CAPA (RFC 1939): the proxy's own list */
			evbuffer_drain(io->in, linelen);
			evbuffer_add(io->to_client, POP3_CAPA_OWN, strlen(POP3_CAPA_OWN));
			expect_pop(m);
			return PROTO_CONTINUE;
		}
		break;
	case EXPECT_MULTI:
		if (st.kind == POP3_OK) {
			evbuffer_remove_buffer(io->in, io->to_client, linelen);
			m->bmode = BACKEND_BODY;
			pop3_body_begin(&m->body);
			return PROTO_CONTINUE;
		}
		break;
	default:
		break;
	}
	evbuffer_remove_buffer(io->in, io->to_client, linelen);
	expect_pop(m);
	return PROTO_CONTINUE;
}

static enum proto_verdict
pop3_backend_input(struct proto_io *io)
{
	struct pop3		*m = io->state;
	enum proto_verdict	 v = PROTO_CONTINUE;
	size_t			 len, linelen, textlen;
	const char		*p;

	if (m->conf->client_tls == CLIENT_TLS_NONE)
		return PROTO_TRANSPARENT;
	if (m->greeting != NULL) {
		/* backend.tls = "starttls": its greeting, read before TLS */
		evbuffer_prepend_buffer(io->in, m->greeting);
		evbuffer_free(m->greeting);
		m->greeting = NULL;
	}
	while (v == PROTO_CONTINUE && (len = evbuffer_get_length(io->in)) > 0) {
		if (m->bmode != BACKEND_STATUS) {
			v = pop3_body(m, io);
			continue;
		}
		p = (const char *)evbuffer_pullup(io->in,
		    (ssize_t)(len < POP3_REPLY_LINE_MAX ? len : POP3_REPLY_LINE_MAX));
		switch (line_next(p, len, POP3_REPLY_LINE_MAX, &linelen, &textlen)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_OK:
			break;
		default:
			return pop3_backend_error(m, io, "a reply line from the backend longer than 16 KiB");
		}
		v = pop3_status(m, io, p, linelen, textlen);
	}
	return v;
}

/*
 * Inside TLS nothing from the cleartext phase is trusted (RFC 2595
 * section 4): the client asks CAPA again.  The upgrade came with no
 * command open, so no reply is due; a line the backend had half sent was
 * dropped with its input, and what it sends now answers nothing.
 */
static enum proto_verdict
pop3_tls_ready(struct proto_io *io)
{
	struct pop3	*m = io->state;

	if (m->conf->client_tls == CLIENT_TLS_STARTTLS) {
		m->upgraded = true;
		m->mode = CLIENT_COMMAND;
		m->bmode = BACKEND_STATUS;
		evbuffer_drain(m->capa, evbuffer_get_length(m->capa));
	}
	return PROTO_CONTINUE;
}

static enum proto_verdict
pop3_bup_fail(struct pop3 *m, struct proto_io *io, const char *why, const char *text, size_t len)
{
	if (text != NULL)
		return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
		    "STLS with the backend: %s: %.*s", why, (int)(len < 80 ? len : 80), text);
	return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
	    "STLS with the backend: %s", why);
}

/*
 * backend.tls = "starttls": the greeting (kept for the client), STLS,
 * +OK, and nothing after it: bytes that follow the +OK before TLS would
 * be taken for the server's side of the handshake, or worse, for replies
 * inside TLS (CVE-2011-0411 the other way round), so they end the
 * attempt.  A backend that does not offer STLS answers -ERR to it, and
 * the client gets -ERR [SYS/TEMP].
 */
static enum proto_verdict
pop3_backend_starttls(struct proto_io *io)
{
	struct pop3		*m = io->state;
	struct pop3_status	 st;
	size_t			 len, linelen, textlen;
	const char		*p;

	while ((len = evbuffer_get_length(io->in)) > 0) {
		p = (const char *)evbuffer_pullup(io->in,
		    (ssize_t)(len < POP3_REPLY_LINE_MAX ? len : POP3_REPLY_LINE_MAX));
		switch (line_next(p, len, POP3_REPLY_LINE_MAX, &linelen, &textlen)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_OK:
			break;
		default:
			return pop3_bup_fail(m, io, "a reply line longer than 16 KiB", NULL, 0);
		}
		if (pop3_status_parse(p, textlen, false, &st) != PARSE_OK)
			return pop3_bup_fail(m, io, "not a POP3 reply", p, textlen);
		switch (m->bup) {
		case BUP_GREETING:
			if (st.kind != POP3_OK)
				return pop3_bup_fail(m, io, "the greeting is not +OK", p, textlen);
			if ((m->greeting = evbuffer_new()) == NULL)
				return pop3_bup_fail(m, io, "out of memory", NULL, 0);
			evbuffer_remove_buffer(io->in, m->greeting, linelen);
			evbuffer_add(io->to_backend, "STLS\r\n", 6);
			m->bup = BUP_STLS;
			break;
		case BUP_STLS:
			if (st.kind != POP3_OK)
				return pop3_bup_fail(m, io, "STLS refused", p, textlen);
			evbuffer_drain(io->in, linelen);
			if (evbuffer_get_length(io->in) > 0)
				return pop3_bup_fail(m, io,
				    "the backend sent bytes after its +OK reply, before TLS", NULL, 0);
			m->bup = BUP_DONE;
			return PROTO_UPGRADE;
		case BUP_DONE:
			return pop3_bup_fail(m, io, "bytes after the upgrade", NULL, 0);
		}
	}
	return PROTO_CONTINUE;
}

static void
pop3_backend_failed(struct proto_io *io)
{
	evbuffer_add(io->to_client, REPLY_UNAVAILABLE, strlen(REPLY_UNAVAILABLE));
}

static void
pop3_refuse(struct evbuffer *to_client, enum proto_refusal r)
{
	const char *reply = r == PROTO_REFUSAL_DENIED ? REPLY_DENIED :
	    r == PROTO_REFUSAL_CLIENT_LIMIT ? REPLY_CLIENT_LIMIT : REPLY_BUSY;

	evbuffer_add(to_client, reply, strlen(reply));
}

const struct proto proto_pop3 = {
	.name = "pop3",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.connect_early = true,
	.backend_before_upgrade = "the backend's greeting and replies are relayed before the upgrade",
	.session_new = pop3_new,
	.session_free = pop3_free,
	.client_input = pop3_client_input,
	.backend_input = pop3_backend_input,
	.tls_ready = pop3_tls_ready,
	.backend_failed = pop3_backend_failed,
	.refuse = pop3_refuse,
	.backend_starttls = pop3_backend_starttls,
};
