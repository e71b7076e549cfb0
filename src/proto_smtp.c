/*
 * smtp: STARTTLS in front of an SMTP server (RFC 5321, RFC 3207).
 *
 * The proxy answers STARTTLS itself and never relays it; it adds STARTTLS
 * to the cleartext EHLO reply and removes it inside TLS; under
 * require_tls it answers 530 to every command but EHLO, HELO, NOOP, RSET,
 * QUIT and STARTTLS, and hides AUTH from the cleartext EHLO reply.
 *
 * Order (RFC 2920): every relayed command expects one reply, kept in a
 * queue.  A reply the proxy makes itself (STARTTLS, 530, 503, ...) must
 * not overtake the backend's replies to earlier commands, so the module
 * holds the client's input until that queue is empty.  DATA content and
 * BDAT chunks are relayed as content, never read as commands.
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
	EXPECT_DATA,		/* 354, or a refusal */
	EXPECT_HIDDEN,		/* to our own RSET: not relayed */
	EXPECT_OTHER,
};

enum smtp_client_mode {
	CLIENT_COMMAND,
	CLIENT_DATA_WAIT,	/* DATA relayed, its 354 not yet seen */
	CLIENT_DATA,		/* message content up to CRLF.CRLF */
	CLIENT_BDAT,		/* a BDAT chunk */
};

struct smtp {
	const struct listener_conf *conf;
	uint8_t			 expect[SMTP_PIPELINE_MAX];
	unsigned		 head;
	unsigned		 count;
	enum smtp_client_mode	 mode;
	uint64_t		 bdat_left;
	struct smtp_data	 data;
	bool			 cleartext_txn;	/* MAIL, RCPT, DATA or BDAT before TLS */
	bool			 tls_quiet;	/* in TLS, no command from the client yet */
	struct evbuffer		*ehlo;		/* a multiline EHLO reply, whole */

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
#define REPLY_UNAVAILABLE	"421 4.3.2 Service not available\r\n"
#define REPLY_BUSY		"421 4.3.2 Too many connections, try again later\r\n"
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
	m->conf = conf;
	expect_push(m, EXPECT_GREETING);
	return m;
}

static void
smtp_free(void *arg)
{
	struct smtp	*m = arg;

	if (m->ehlo != NULL)
		evbuffer_free(m->ehlo);
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
 * Relay DATA content up to and including its end, or all of it.  The
 * input may hold many chunks (a large read under TLS): look at them
 * sixteen at a time until the end is found or nothing is left, since
 * what stays here is not looked at again until the client sends more,
 * and a client that has sent its whole message sends nothing more until
 * it is answered.
 */
static bool
smtp_relay_data(struct smtp *m, struct proto_io *io)
{
	struct evbuffer_iovec	 v[16];
	size_t			 total, used;
	int			 n;

	while (evbuffer_get_length(io->in) > 0) {
		n = evbuffer_peek(io->in, -1, NULL, v, 16);
		total = 0;
		for (int i = 0; i < n && i < 16; i++) {
			if (smtp_data_end(&m->data, v[i].iov_base, v[i].iov_len, &used) == PARSE_OK) {
				evbuffer_remove_buffer(io->in, io->to_backend, total + used);
				expect_push(m, EXPECT_OTHER);	/* the reply to the message */
				m->mode = CLIENT_COMMAND;
				return true;
			}
			total += v[i].iov_len;
		}
		evbuffer_remove_buffer(io->in, io->to_backend, total);
	}
	return false;
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

static enum proto_verdict
smtp_command(struct smtp *m, struct proto_io *io)
{
	size_t			 max = io->client_tls ? SMTP_LINE_MAX : SMTP_LINE_MAX_PRE_TLS;
	size_t			 len = evbuffer_get_length(io->in), linelen, textlen;
	const char		*p, *local;
	struct smtp_command	 c;
	uint64_t		 size;
	bool			 last;

	if (m->count == SMTP_PIPELINE_MAX)
		return PROTO_HOLD;	/* enough in flight: let the replies come back */
	p = (const char *)evbuffer_pullup(io->in, (ssize_t)(len < max ? len : max));
	switch (line_next(p, len, max, &linelen, &textlen)) {
	case PARSE_NEED_MORE:
		return PROTO_CONTINUE;
	case PARSE_OK:
		break;
	default:
		if (m->count > 0)
			return PROTO_HOLD;	/* answer in order */
		evbuffer_drain(io->in, len);
		reply(io, REPLY_TOO_LONG);
		io->end = "protocol-error";
		io->reason = io->client_tls ? "a command line longer than 64 KiB" :
		    "a command line longer than 4 KiB before TLS";
		return PROTO_CLOSE;
	}
	smtp_command_parse(p, textlen, &c);
	if (c.verb == SMTP_BDAT && smtp_bdat_args(c.args, c.argslen, &size, &last) == -1 &&
	    smtp_local_reply(m, io, &c) == NULL)
		local = REPLY_BDAT_ARGS;
	else
		local = smtp_local_reply(m, io, &c);

	if (local != NULL) {
		if (m->count > 0)
			return PROTO_HOLD;	/* after the replies already due */
		evbuffer_drain(io->in, linelen);
		reply(io, local);
		return strcmp(local, REPLY_STARTTLS) == 0 ? PROTO_UPGRADE : PROTO_CONTINUE;
	}

	evbuffer_remove_buffer(io->in, io->to_backend, linelen);
	m->tls_quiet = false;
	switch (c.verb) {
	case SMTP_EHLO:
		expect_push(m, EXPECT_EHLO);
		break;
	case SMTP_DATA:
		expect_push(m, EXPECT_DATA);
		m->mode = CLIENT_DATA_WAIT;
		break;
	case SMTP_BDAT:
		expect_push(m, EXPECT_OTHER);
		m->mode = size > 0 ? CLIENT_BDAT : CLIENT_COMMAND;
		m->bdat_left = size;
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
			if (!smtp_relay_data(m, io))
				return PROTO_CONTINUE;
			break;
		case CLIENT_BDAT:
			if (len > m->bdat_left)
				len = (size_t)m->bdat_left;
			evbuffer_remove_buffer(io->in, io->to_backend, len);
			if ((m->bdat_left -= len) == 0)
				m->mode = CLIENT_COMMAND;
			break;
		case CLIENT_DATA_WAIT:
			return PROTO_HOLD;
		case CLIENT_COMMAND:
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

/* A whole positive EHLO reply is in m->ehlo: rewrite it for the client. */
static bool
smtp_ehlo_done(struct smtp *m, struct proto_io *io)
{
	char	 out[SMTP_EHLO_REPLY_MAX + 64];
	size_t	 len = evbuffer_get_length(m->ehlo);
	ssize_t	 n;

	n = smtp_ehlo_rewrite((const char *)evbuffer_pullup(m->ehlo, -1), len,
	    smtp_ehlo_flags(m, io), out, sizeof(out));
	evbuffer_drain(m->ehlo, len);
	if (n < 0)
		return false;
	evbuffer_add(io->to_client, out, (size_t)n);
	return true;
}

static enum proto_verdict
smtp_backend_error(struct proto_io *io, const char *why)
{
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	evbuffer_add(io->to_client, REPLY_BACKEND_ERROR, strlen(REPLY_BACKEND_ERROR));
	io->end = "backend-error";
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

static enum proto_verdict
smtp_backend_input(struct proto_io *io)
{
	struct smtp		*m = io->state;
	struct smtp_reply	 r;
	size_t			 linelen;

	if (m->greeting != NULL) {
		/* backend.tls = "starttls": its greeting, read before TLS */
		evbuffer_prepend_buffer(io->in, m->greeting);
		evbuffer_free(m->greeting);
		m->greeting = NULL;
	}
	while (evbuffer_get_length(io->in) > 0) {
		enum smtp_expect kind = m->count > 0 ? m->expect[m->head] : EXPECT_OTHER;

		switch (smtp_next_reply(io->in, &r, &linelen)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_OK:
			break;
		case PARSE_TOO_LONG:
			return smtp_backend_error(io, "a reply line from the backend longer than 8 KiB");
		default:
			return smtp_backend_error(io, "the backend sent something that is not an SMTP reply");
		}

		if (m->count == 0 && m->tls_quiet) {
			/*
			 * A reply inside TLS before the client asked anything
			 * there answers something from the cleartext phase: it
			 * must not look as if it came after the upgrade.
			 */
			io->dropped += linelen;
			evbuffer_drain(io->in, linelen);
			continue;
		}
		if (kind == EXPECT_EHLO && r.code == 250) {
			if (m->ehlo == NULL && (m->ehlo = evbuffer_new()) == NULL)
				return smtp_backend_error(io, "out of memory");
			evbuffer_remove_buffer(io->in, m->ehlo, linelen);
			if (evbuffer_get_length(m->ehlo) > SMTP_EHLO_REPLY_MAX)
				return smtp_backend_error(io, "an EHLO reply longer than 16 KiB");
			if (r.final && !smtp_ehlo_done(m, io))
				return smtp_backend_error(io, "a malformed EHLO reply");
		} else if (kind == EXPECT_HIDDEN) {
			evbuffer_drain(io->in, linelen);
		} else {
			evbuffer_remove_buffer(io->in, io->to_client, linelen);
		}
		if (!r.final || m->count == 0)
			continue;	/* more lines, or an unsolicited reply (421) */
		expect_pop(m);
		if (kind == EXPECT_DATA) {
			if (r.code == 354) {
				m->mode = CLIENT_DATA;
				smtp_data_begin(&m->data, false);
			} else
				m->mode = CLIENT_COMMAND;
		}
	}
	return PROTO_CONTINUE;
}

/*
 * Inside TLS nothing from the cleartext phase is trusted (RFC 3207
 * section 4.2): the client starts over with EHLO, and if it began a mail
 * transaction in cleartext, the backend forgets it through an RSET whose
 * reply the client never sees.
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
smtp_busy(struct evbuffer *to_client)
{
	evbuffer_add(to_client, REPLY_BUSY, strlen(REPLY_BUSY));
}

const struct proto proto_smtp = {
	.name = "smtp",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.connect_early = true,
	.session_new = smtp_new,
	.session_free = smtp_free,
	.client_input = smtp_client_input,
	.backend_input = smtp_backend_input,
	.tls_ready = smtp_tls_ready,
	.backend_failed = smtp_backend_failed,
	.busy = smtp_busy,
	.backend_starttls = smtp_backend_starttls,
};
