/*
 * smtp: STARTTLS in front of an SMTP server (RFC 5321, RFC 3207).
 *
 * The proxy answers STARTTLS itself and never relays it; it adds STARTTLS
 * to the cleartext EHLO reply and removes it inside TLS; under
 * require_tls it answers 530 to every command but EHLO, HELO, NOOP, RSET,
 * QUIT and STARTTLS, and hides AUTH from the cleartext EHLO reply.
 *
 * Order (RFC 2920): every relayed command is open until its final reply,
 * kept in a queue.  A reply the proxy makes itself (STARTTLS, 530, 503,
 * ...) must not overtake the backend's replies to earlier commands, so
 * the module holds the client's input until that queue is empty and no
 * reply is half read.  Guarantee 2 rests on the same queue: STARTTLS is
 * answered only when every command is answered, no dialogue is open and
 * the backend is between two replies, so that nothing the backend still
 * owes the cleartext phase can follow the 220.
 *
 * The proxy and the backend must agree, byte for byte, on what is a
 * command, what is content and where each ends, or bytes the proxy takes
 * for content run as commands at the backend, past require_tls and
 * across the upgrade:
 *   - a 354 leaves DATA open, and the content up to CRLF.CRLF is never
 *     read as commands; before TLS a bare CR or LF in it ends the session
 *     (SMTP smuggling), as does one in a command line;
 *   - a 334 leaves AUTH open: the client's next line is a SASL response
 *     (RFC 4954), relayed whatever it says, "STARTTLS" and "*" included,
 *     and the dialogue goes on until the backend's final reply;
 *   - BDAT is a chunk only when the backend's latest EHLO reply offered
 *     CHUNKING; otherwise it is a command like any other, as the backend
 *     takes it, and what follows it is more commands;
 *   - a reply is one unit: the lines of a multiline reply carry one code
 *     (RFC 5321 section 4.2.1) and are held until the last one, then
 *     relayed, rewritten (EHLO) or dropped whole.  A backend that breaks
 *     that, or sends a 3xx where no dialogue takes one, gets 421 to the
 *     client and the session is closed.
 *
 * With backend.tls = "starttls" the proxy also upgrades its own connection
 * to the backend before any client command reaches it: it reads the
 * greeting (kept, and shown to the client once the backend is in TLS),
 * sends EHLO and STARTTLS itself, and starts TLS after the 220.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "line_parse.h"
#include "proto.h"
#include "smtp_parse.h"
#include "util.h"

enum smtp_expect {
	EXPECT_GREETING,
	EXPECT_EHLO,
	EXPECT_HELO,
	EXPECT_DATA,		/* 354, or a refusal */
	EXPECT_MESSAGE,		/* after the 354: the reply to the content */
	EXPECT_AUTH,		/* 334 goes on with the SASL dialogue */
	EXPECT_HIDDEN,		/* to our own RSET: not relayed */
	EXPECT_OTHER,
};

enum smtp_client_mode {
	CLIENT_COMMAND,
	CLIENT_WAIT,		/* DATA, AUTH or a SASL response relayed, its reply not yet seen */
	CLIENT_DATA,		/* message content up to CRLF.CRLF */
	CLIENT_BDAT,		/* a BDAT chunk */
	CLIENT_SASL,		/* after a 334: the next line is a SASL response */
};

struct smtp {
	const struct listener_conf *conf;
	uint8_t			 expect[SMTP_PIPELINE_MAX];
	unsigned		 head;
	unsigned		 count;
	enum smtp_client_mode	 mode;
	uint64_t		 bdat_left;
	struct smtp_data	 data;
	unsigned		 hellos;	/* EHLO and HELO awaiting their reply */
	bool			 chunking;	/* the backend's last EHLO reply offers CHUNKING */
	bool			 cleartext_txn;	/* MAIL, RCPT, DATA or BDAT before TLS */
	bool			 tls_quiet;	/* in TLS, no command from the client yet */
	struct evbuffer		*reply;		/* the lines of the reply being read */
	unsigned		 reply_lines;
	int			 reply_code;	/* the code of its first line */
	bool			 backend_mid;	/* a reply, or a line, partly read */

	/* backend.tls = "starttls": the proxy's own dialogue with the backend */
	enum {
		BUP_CONNECTED,		/* nothing read yet */
		BUP_GREETING,		/* inside the greeting */
		BUP_EHLO,		/* our EHLO sent */
		BUP_STARTTLS,		/* our STARTTLS sent */
		BUP_DONE,
	}			 bup;
	unsigned		 bup_lines;	/* lines of the reply read so far */
	bool			 bup_offered;	/* the EHLO reply lists STARTTLS */
	struct evbuffer		*greeting;	/* for the client, once the backend is in TLS */
	char			 bup_why[160];
};

#define REPLY_STARTTLS		"220 2.0.0 Ready to start TLS\r\n"
#define REPLY_NEED_TLS		"530 5.7.0 Must issue a STARTTLS command first\r\n"
#define REPLY_TLS_ACTIVE	"503 5.5.1 TLS already active\r\n"
#define REPLY_NO_TLS		"454 4.7.0 TLS not available\r\n"
#define REPLY_STARTTLS_ARGS	"501 5.5.4 Syntax error (no parameters allowed)\r\n"
#define REPLY_BDAT_ARGS		"501 5.5.4 Syntax error in BDAT parameters\r\n"
#define REPLY_TOO_LONG		"500 5.5.2 Line too long\r\n"
#define REPLY_BARE_NEWLINE	"500 5.5.2 Bare CR or LF not allowed\r\n"
#define REPLY_UNAVAILABLE	"421 4.3.2 Service not available\r\n"
#define REPLY_BUSY		"421 4.3.2 Too many connections, try again later\r\n"
#define REPLY_CLIENT_LIMIT	"421 4.7.0 Too many connections from your address, try again later\r\n"
#define REPLY_DENIED		"554 5.7.1 Access denied\r\n"
#define REPLY_BACKEND_ERROR	"421 4.3.0 Service not available: backend protocol error\r\n"

static void
expect_push(struct smtp *m, enum smtp_expect e)
{
	m->expect[(m->head + m->count) % SMTP_PIPELINE_MAX] = (uint8_t)e;
	m->count++;
}

static void
expect_pop(struct smtp *m)
{
	m->head = (m->head + 1) % SMTP_PIPELINE_MAX;
	m->count--;
}

static void *
smtp_new(const struct listener_conf *conf)
{
	struct smtp	*m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	if ((m->reply = evbuffer_new()) == NULL) {
		free(m);
		return NULL;
	}
	m->conf = conf;
	expect_push(m, EXPECT_GREETING);
	return m;
}

static void
smtp_free(void *arg)
{
	struct smtp	*m = arg;

	evbuffer_free(m->reply);
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
 * replies already due, then a close.  Inside message content or a SASL
 * dialogue nothing else is due, and the backend's next reply waits for
 * the bytes refused here.
 */
static enum proto_verdict
smtp_client_error(struct smtp *m, struct proto_io *io, const char *text, const char *why)
{
	if (m->mode == CLIENT_COMMAND && (m->count > 0 || m->backend_mid))
		return PROTO_HOLD;
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	reply(io, text);
	io->end = END_PROTOCOL_ERROR;
	io->reason = why;
	return PROTO_CLOSE;
}

/*
 * Relay DATA content up to and including its end, or all of it.  The
 * input may hold many chunks (a large read under TLS): look at them
 * sixteen at a time until the end is found or nothing is left, since
 * what stays here is not looked at again until the client sends more,
 * and a client that has sent its whole message sends nothing more until
 * it is answered.  Before TLS a bare line ending ends the session; what
 * has not been relayed of the content is not, so that no backend can
 * find an end of data where the proxy found none.
 */
static enum proto_verdict
smtp_relay_data(struct smtp *m, struct proto_io *io)
{
	struct evbuffer_iovec	 v[16];
	size_t			 total, used;
	int			 n;

	while (evbuffer_get_length(io->in) > 0) {
		n = evbuffer_peek(io->in, -1, NULL, v, 16);
		total = 0;
		for (int i = 0; i < n && i < 16; i++) {
			switch (smtp_data_end(&m->data, v[i].iov_base, v[i].iov_len, &used)) {
			case PARSE_OK:
				evbuffer_remove_buffer(io->in, io->to_backend, total + used);
				m->mode = CLIENT_COMMAND;	/* the DATA command awaits its reply */
				return PROTO_CONTINUE;
			case PARSE_MALFORMED:
				return smtp_client_error(m, io, REPLY_BARE_NEWLINE,
				    "a bare CR or LF in message content before TLS");
			default:
				break;
			}
			total += v[i].iov_len;
		}
		evbuffer_remove_buffer(io->in, io->to_backend, total);
	}
	return PROTO_CONTINUE;
}

/* The reply the proxy itself gives to this command, or NULL to relay it. */
static const char *
smtp_local_reply(struct smtp *m, const struct proto_io *io, const struct smtp_command *c)
{
	const struct listener_conf *conf = m->conf;

	if (c->verb == SMTP_STARTTLS) {
		if (conf->client_tls == CLIENT_TLS_NONE)
			return REPLY_NO_TLS;
		if (io->client_tls)
			return REPLY_TLS_ACTIVE;
		if (c->argslen > 0)
			return REPLY_STARTTLS_ARGS;
		return REPLY_STARTTLS;
	}
	if (!io->client_tls && conf->require_tls && !smtp_allowed_before_tls(c->verb))
		return REPLY_NEED_TLS;
	return NULL;
}

/*
 * One line from the client: a command, or in a SASL dialogue the
 * client's response.
 */
static enum proto_verdict
smtp_command(struct smtp *m, struct proto_io *io)
{
	size_t			 max = io->client_tls ? SMTP_LINE_MAX : SMTP_LINE_MAX_PRE_TLS;
	size_t			 len = evbuffer_get_length(io->in), linelen, textlen;
	const char		*p, *local;
	struct smtp_command	 c;
	uint64_t		 size = 0;
	bool			 last;

	if (m->mode == CLIENT_COMMAND && m->count == SMTP_PIPELINE_MAX)
		return PROTO_HOLD;	/* enough in flight: let the replies come back */
	p = (const char *)evbuffer_pullup(io->in, (ssize_t)(len < max ? len : max));
	switch (line_next(p, len, max, &linelen, &textlen)) {
	case PARSE_NEED_MORE:
		return PROTO_CONTINUE;
	case PARSE_OK:
		break;
	default:
		return smtp_client_error(m, io, REPLY_TOO_LONG, io->client_tls ?
		    "a command line longer than 64 KiB" :
		    "a command line longer than 4 KiB before TLS");
	}
	if (!io->client_tls && !smtp_line_crlf(p, linelen))
		return smtp_client_error(m, io, REPLY_BARE_NEWLINE,
		    "a bare CR or LF in a command line before TLS");

	if (m->mode == CLIENT_SASL) {
		/* a response, whatever it says; "*" cancels (RFC 4954) */
		evbuffer_remove_buffer(io->in, io->to_backend, linelen);
		m->mode = CLIENT_WAIT;
		return PROTO_CONTINUE;
	}

	smtp_command_parse(p, textlen, &c);
	if (c.verb == SMTP_BDAT && m->hellos > 0)
		return PROTO_HOLD;	/* a chunk or not: the EHLO reply decides */
	if (c.verb == SMTP_BDAT && m->chunking &&
	    smtp_bdat_args(c.args, c.argslen, &size, &last) == -1 &&
	    smtp_local_reply(m, io, &c) == NULL)
		local = REPLY_BDAT_ARGS;
	else
		local = smtp_local_reply(m, io, &c);

	if (local != NULL) {
		if (m->count > 0 || m->backend_mid)
			return PROTO_HOLD;	/* after the replies already due */
		evbuffer_drain(io->in, linelen);
		reply(io, local);
		return strcmp(local, REPLY_STARTTLS) == 0 ? PROTO_UPGRADE : PROTO_CONTINUE;
	}

	evbuffer_remove_buffer(io->in, io->to_backend, linelen);
	m->tls_quiet = false;
	switch (c.verb) {
	case SMTP_EHLO:
	case SMTP_HELO:
		expect_push(m, c.verb == SMTP_EHLO ? EXPECT_EHLO : EXPECT_HELO);
		m->hellos++;
		m->chunking = false;	/* until an EHLO reply offers it */
		break;
	case SMTP_DATA:
		expect_push(m, EXPECT_DATA);
		m->mode = CLIENT_WAIT;
		break;
	case SMTP_AUTH:
		expect_push(m, EXPECT_AUTH);
		m->mode = CLIENT_WAIT;
		break;
	case SMTP_BDAT:
		expect_push(m, EXPECT_OTHER);
		if (m->chunking) {
			m->mode = size > 0 ? CLIENT_BDAT : CLIENT_COMMAND;
			m->bdat_left = size;
		}
		break;
	default:
		expect_push(m, EXPECT_OTHER);
		break;
	}
	if (!io->client_tls && (c.verb == SMTP_MAIL || c.verb == SMTP_RCPT ||
	    c.verb == SMTP_DATA || c.verb == SMTP_BDAT))
		m->cleartext_txn = true;
	return PROTO_CONTINUE;
}

static enum proto_verdict
smtp_client_input(struct proto_io *io)
{
	struct smtp		*m = io->state;
	enum proto_verdict	 v;
	size_t			 len;

	while ((len = evbuffer_get_length(io->in)) > 0) {
		if (proto_client_full(io))
			return PROTO_CONTINUE;	/* the client reads its replies first */
		switch (m->mode) {
		case CLIENT_DATA:
			if ((v = smtp_relay_data(m, io)) != PROTO_CONTINUE)
				return v;
			if (m->mode == CLIENT_DATA)
				return PROTO_CONTINUE;	/* all of it was content */
			break;
		case CLIENT_BDAT:
			if (len > m->bdat_left)
				len = (size_t)m->bdat_left;
			evbuffer_remove_buffer(io->in, io->to_backend, len);
			if ((m->bdat_left -= len) == 0)
				m->mode = CLIENT_COMMAND;
			break;
		case CLIENT_WAIT:
			return PROTO_HOLD;
		case CLIENT_COMMAND:
		case CLIENT_SASL:
			v = smtp_command(m, io);
			if (v != PROTO_CONTINUE)
				return v;
			if (evbuffer_get_length(io->in) == len)
				return PROTO_CONTINUE;	/* an incomplete line */
			break;
		}
	}
	return PROTO_CONTINUE;
}

static unsigned
smtp_ehlo_flags(const struct smtp *m, const struct proto_io *io)
{
	if (m->conf->client_tls == CLIENT_TLS_STARTTLS && !io->client_tls)
		return SMTP_EHLO_ADD_STARTTLS |
		    (m->conf->require_tls ? SMTP_EHLO_DROP_AUTH : 0);
	return SMTP_EHLO_DROP_STARTTLS;
}

/* A whole positive EHLO reply is in m->reply: rewrite it for the client. */
static bool
smtp_ehlo_done(struct smtp *m, struct proto_io *io)
{
	char		 out[SMTP_EHLO_REPLY_MAX + 64];
	size_t		 len = evbuffer_get_length(m->reply);
	const char	*p = (const char *)evbuffer_pullup(m->reply, -1);
	ssize_t		 n;

	m->chunking = smtp_ehlo_offers(p, len, "CHUNKING");
	n = smtp_ehlo_rewrite(p, len, smtp_ehlo_flags(m, io), out, sizeof(out));
	evbuffer_drain(m->reply, len);
	if (n < 0)
		return false;
	evbuffer_add(io->to_client, out, (size_t)n);
	return true;
}

static enum proto_verdict
smtp_backend_error(struct smtp *m, struct proto_io *io, const char *why)
{
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
	m->reply_lines = 0;
	evbuffer_add(io->to_client, REPLY_BACKEND_ERROR, strlen(REPLY_BACKEND_ERROR));
	io->end = END_BACKEND_ERROR;
	io->reason = why;
	return PROTO_CLOSE;
}

/*
 * The backend's next reply line, parsed into r, with *linelen its length
 * with the line ending.  PARSE_NEED_MORE until the line is all here;
 * PARSE_TOO_LONG past the 8 KiB line limit; PARSE_MALFORMED when it is
 * not an SMTP reply.
 */
static enum parse_result
smtp_next_reply(struct evbuffer *in, struct smtp_reply *r, size_t *linelen)
{
	size_t		 len = evbuffer_get_length(in), textlen;
	const char	*p = (const char *)evbuffer_pullup(in,
			    (ssize_t)(len < SMTP_REPLY_LINE_MAX ? len : SMTP_REPLY_LINE_MAX));

	switch (line_next(p, len, SMTP_REPLY_LINE_MAX, linelen, &textlen)) {
	case PARSE_NEED_MORE:
		return PARSE_NEED_MORE;
	case PARSE_OK:
		break;
	default:
		return PARSE_TOO_LONG;
	}
	return smtp_reply_parse(p, textlen, r) == PARSE_OK ? PARSE_OK : PARSE_MALFORMED;
}

/*
 * A whole reply is in m->reply: it answers the oldest open command, or
 * none.  A 354 to DATA and a 334 to AUTH leave their command open; any
 * other reply is final and closes it.
 */
static enum proto_verdict
smtp_reply_done(struct smtp *m, struct proto_io *io)
{
	size_t			 len = evbuffer_get_length(m->reply);
	int			 code = m->reply_code;
	enum smtp_expect	 kind;

	if (m->count == 0) {
		/* unsolicited: a 421 before the backend closes, say */
		if (code / 100 == 3)
			return smtp_backend_error(m, io, "a 3xx reply from the backend to no command");
		if (m->tls_quiet) {
			/*
			 * A reply inside TLS before the client asked anything
			 * there answers something from the cleartext phase: it
			 * must not look as if it came after the upgrade.
			 */
			io->dropped += len;
			evbuffer_drain(m->reply, len);
		} else
			evbuffer_add_buffer(io->to_client, m->reply);
		return PROTO_CONTINUE;
	}
	if (m->mode == CLIENT_DATA)
		return smtp_backend_error(m, io,
		    "a reply from the backend before the end of the message content");
	kind = m->expect[m->head];
	if (code / 100 == 3) {
		if (m->mode == CLIENT_WAIT && kind == EXPECT_DATA && code == 354) {
			evbuffer_add_buffer(io->to_client, m->reply);
			m->expect[m->head] = EXPECT_MESSAGE;
			m->mode = CLIENT_DATA;
			smtp_data_begin(&m->data, !io->client_tls);
			return PROTO_CONTINUE;
		}
		if (m->mode == CLIENT_WAIT && kind == EXPECT_AUTH && code == 334) {
			evbuffer_add_buffer(io->to_client, m->reply);
			m->mode = CLIENT_SASL;
			return PROTO_CONTINUE;
		}
		return smtp_backend_error(m, io,
		    "a 3xx reply from the backend to a command that takes none");
	}
	switch (kind) {
	case EXPECT_EHLO:
		m->hellos--;
		if (code == 250) {
			if (!smtp_ehlo_done(m, io))
				return smtp_backend_error(m, io, "a malformed EHLO reply");
		} else
			evbuffer_add_buffer(io->to_client, m->reply);
		break;
	case EXPECT_HELO:
		m->hellos--;
		evbuffer_add_buffer(io->to_client, m->reply);
		break;
	case EXPECT_HIDDEN:
		evbuffer_drain(m->reply, len);
		break;
	case EXPECT_DATA:
	case EXPECT_AUTH:
		m->mode = CLIENT_COMMAND;	/* refused, or the dialogue is over */
		evbuffer_add_buffer(io->to_client, m->reply);
		break;
	default:
		evbuffer_add_buffer(io->to_client, m->reply);
		break;
	}
	expect_pop(m);
	return PROTO_CONTINUE;
}

static enum proto_verdict
smtp_backend_input(struct proto_io *io)
{
	struct smtp		*m = io->state;
	struct smtp_reply	 r;
	size_t			 linelen;
	enum proto_verdict	 v = PROTO_CONTINUE;

	if (m->greeting != NULL) {
		/* backend.tls = "starttls": its greeting, read before TLS */
		evbuffer_prepend_buffer(io->in, m->greeting);
		evbuffer_free(m->greeting);
		m->greeting = NULL;
	}
	while (v == PROTO_CONTINUE && evbuffer_get_length(io->in) > 0) {
		switch (smtp_next_reply(io->in, &r, &linelen)) {
		case PARSE_NEED_MORE:
			goto out;
		case PARSE_OK:
			break;
		case PARSE_TOO_LONG:
			return smtp_backend_error(m, io, "a reply line from the backend longer than 8 KiB");
		default:
			return smtp_backend_error(m, io, "the backend sent something that is not an SMTP reply");
		}
		if (m->reply_lines > 0 && r.code != m->reply_code)
			return smtp_backend_error(m, io,
			    "a multiline reply from the backend with different codes on its lines");
		m->reply_code = r.code;
		m->reply_lines++;
		evbuffer_remove_buffer(io->in, m->reply, linelen);
		if (evbuffer_get_length(m->reply) > SMTP_REPLY_MAX)
			return smtp_backend_error(m, io, "a reply from the backend longer than 16 KiB");
		if (!r.final)
			continue;
		v = smtp_reply_done(m, io);
		m->reply_lines = 0;
	}
out:
	m->backend_mid = m->reply_lines > 0 || evbuffer_get_length(io->in) > 0;
	return v;
}

/*
 * Inside TLS nothing from the cleartext phase is trusted (RFC 3207
 * section 4.2): the client starts over with EHLO, and if it began a mail
 * transaction in cleartext, the backend forgets it through an RSET whose
 * reply the client never sees.  The upgrade came with no command open
 * and no reply half read, so no cleartext reply is left to drop here.
 * What CHUNKING the backend offered is kept: the backend never sees the
 * client's upgrade, and frames BDAT by its last EHLO until the next one.
 */
static enum proto_verdict
smtp_tls_ready(struct proto_io *io)
{
	struct smtp	*m = io->state;

	m->mode = CLIENT_COMMAND;
	m->tls_quiet = true;
	if (m->cleartext_txn) {
		evbuffer_add(io->to_backend, "RSET\r\n", 6);
		expect_push(m, EXPECT_HIDDEN);
		m->cleartext_txn = false;
	}
	return PROTO_CONTINUE;
}

static enum proto_verdict
smtp_bup_fail(struct smtp *m, struct proto_io *io, const char *why, const struct smtp_reply *r)
{
	if (r != NULL)
		return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
		    "STARTTLS with the backend: %s: %d %.*s",
		    why, r->code, (int)(r->textlen < 80 ? r->textlen : 80), r->text);
	return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
	    "STARTTLS with the backend: %s", why);
}

/*
 * backend.tls = "starttls": greeting (kept for the client), EHLO, a reply
 * that must offer STARTTLS, STARTTLS, 220, and nothing after it: bytes
 * that follow the 220 before TLS would be taken for the server's side of
 * the handshake, or worse, for replies inside TLS (CVE-2011-0411 the
 * other way round), so they end the attempt.
 */
static enum proto_verdict
smtp_backend_starttls(struct proto_io *io)
{
	struct smtp		*m = io->state;
	struct smtp_reply	 r;
	size_t			 linelen;
	char			 host[256];

	while (evbuffer_get_length(io->in) > 0) {
		switch (smtp_next_reply(io->in, &r, &linelen)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_OK:
			break;
		case PARSE_TOO_LONG:
			return smtp_bup_fail(m, io, "a reply line longer than 8 KiB", NULL);
		default:
			return smtp_bup_fail(m, io, "not an SMTP reply", NULL);
		}
		m->bup_lines++;
		switch (m->bup) {
		case BUP_CONNECTED:
		case BUP_GREETING:
			if (r.code != 220)
				return smtp_bup_fail(m, io, "the greeting is not 220", &r);
			m->bup = BUP_GREETING;
			if (m->greeting == NULL && (m->greeting = evbuffer_new()) == NULL)
				return smtp_bup_fail(m, io, "out of memory", NULL);
			evbuffer_remove_buffer(io->in, m->greeting, linelen);
			if (evbuffer_get_length(m->greeting) > SMTP_EHLO_REPLY_MAX)
				return smtp_bup_fail(m, io, "a greeting longer than 16 KiB", NULL);
			if (!r.final)
				continue;
			/* a domain for EHLO (RFC 5321 section 4.1.2): no '_' there */
			if (gethostname(host, sizeof(host)) == -1 || !hostname_valid(host) ||
			    strchr(host, '_') != NULL)
				snprintf(host, sizeof(host), "localhost");
			evbuffer_add_printf(io->to_backend, "EHLO %s\r\n", host);
			m->bup = BUP_EHLO;
			m->bup_lines = 0;
			break;
		case BUP_EHLO:
			if (r.code != 250)
				return smtp_bup_fail(m, io, "EHLO refused", &r);
			/* the first line names the server: its first word is no keyword */
			if (m->bup_lines > 1 && smtp_ehlo_keyword_is(r.text, r.textlen, "STARTTLS"))
				m->bup_offered = true;
			evbuffer_drain(io->in, linelen);
			if (m->bup_lines > 128)
				return smtp_bup_fail(m, io, "an EHLO reply of more than 128 lines", NULL);
			if (!r.final)
				continue;
			if (!m->bup_offered)
				return smtp_bup_fail(m, io, "the backend does not offer STARTTLS", NULL);
			evbuffer_add(io->to_backend, "STARTTLS\r\n", 10);
			m->bup = BUP_STARTTLS;
			m->bup_lines = 0;
			break;
		case BUP_STARTTLS:
			if (r.code != 220)
				return smtp_bup_fail(m, io, "STARTTLS refused", &r);
			evbuffer_drain(io->in, linelen);
			if (!r.final)
				continue;
			if (evbuffer_get_length(io->in) > 0)
				return smtp_bup_fail(m, io,
				    "the backend sent bytes after its 220 reply, before TLS", NULL);
			m->bup = BUP_DONE;
			return PROTO_UPGRADE;
		case BUP_DONE:
			return smtp_bup_fail(m, io, "bytes after the upgrade", NULL);
		}
	}
	return PROTO_CONTINUE;
}

static void
smtp_backend_failed(struct proto_io *io)
{
	evbuffer_add(io->to_client, REPLY_UNAVAILABLE, strlen(REPLY_UNAVAILABLE));
}

static void
smtp_refuse(struct evbuffer *to_client, enum proto_refusal r)
{
	const char *reply = r == PROTO_REFUSAL_DENIED ? REPLY_DENIED :
	    r == PROTO_REFUSAL_CLIENT_LIMIT ? REPLY_CLIENT_LIMIT : REPLY_BUSY;

	evbuffer_add(to_client, reply, strlen(reply));
}

const struct proto proto_smtp = {
	.name = "smtp",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.connect_early = true,
	.backend_before_upgrade = "the backend's greeting and replies are relayed before the upgrade",
	.session_new = smtp_new,
	.session_free = smtp_free,
	.client_input = smtp_client_input,
	.backend_input = smtp_backend_input,
	.tls_ready = smtp_tls_ready,
	.backend_failed = smtp_backend_failed,
	.refuse = smtp_refuse,
	.backend_starttls = smtp_backend_starttls,
};
