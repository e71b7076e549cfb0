/*
 * imap: STARTTLS in front of an IMAP server (RFC 9051, RFC 3501,
 * RFC 2595 section 3.1, RFC 5530 response codes, RFC 7888 literals).
 *
 * The backend's greeting and responses are relayed; the proxy answers
 * STARTTLS itself ("OK Begin TLS negotiation now") and never relays it.
 * Every capability list the client sees is rewritten where it appears
 * (the greeting's [CAPABILITY] code, "* CAPABILITY", and [CAPABILITY] in
 * a tagged OK): before TLS the proxy adds STARTTLS, and under require_tls
 * LOGINDISABLED, and removes AUTH=; inside TLS it removes STARTTLS and
 * LOGINDISABLED.  Under require_tls, LOGIN and AUTHENTICATE before TLS get
 * "NO [PRIVACYREQUIRED]", every other command but CAPABILITY, NOOP,
 * LOGOUT, ID and STARTTLS "BAD [PRIVACYREQUIRED]", and none reaches the
 * backend.  Once the client has authenticated (a tagged OK to LOGIN or
 * AUTHENTICATE, or a PREAUTH greeting where no upgrade is to come),
 * nothing is left to enforce and the session is relayed transparently:
 * STARTTLS is a command of the not-authenticated state (RFC 9051 section
 * 6.2.1).
 *
 * Framing.  The proxy and the backend must agree on every byte: what is a
 * command, what is literal data, and where each ends, or bytes the proxy
 * takes for data run as commands at the backend (past require_tls, and
 * across the upgrade).  So:
 *   - a literal is announced only at the end of a line; its bytes are
 *     data, never parsed, and the command goes on with the next line
 *     (imap_parse.h); a line the proxy cannot frame (a '{' elsewhere than
 *     that final marker, an unterminated quoted string, before TLS a bare
 *     CR or LF or a NUL) is answered BAD by the proxy and never relayed;
 *   - a synchronizing literal "{n}" on a relayed command waits for the
 *     backend: after its "+" continuation (relayed to the client) n bytes
 *     of the client's pass unparsed; after a tagged completion instead
 *     the command is over and what follows is commands again, which is
 *     how every server reads it.  On a command the proxy refuses it is
 *     refused at once, before the client sends the data (no "+");
 *   - a non-synchronizing literal "{n+}" is data that follows at once: on
 *     a refused command it is skipped with the command; on a relayed one
 *     it is relayed only when the backend offers LITERAL+ (or LITERAL-
 *     and n <= 4096), since a server without it reads those bytes as
 *     commands; otherwise the proxy refuses the command;
 *   - AUTHENTICATE opens a SASL dialogue: after each "+" of the backend
 *     the client's next line is a SASL response, relayed whatever it
 *     says ("STARTTLS" and "*" included), until the tagged completion;
 *   - a relayed command is open until its tagged completion; a command
 *     whose tag is open waits for that completion, so that every
 *     completion names one command.  A "+" from the backend when none is
 *     due ends the session.
 *
 * Guarantee 2.  STARTTLS is honoured only when no relayed command is open,
 * the greeting has been relayed and the backend is between two
 * responses; then nothing the backend owes the cleartext phase is left,
 * and nothing of it is half relayed.  Inside TLS, until the client's
 * first relayed command, every backend response is dropped; then tagged
 * responses are relayed only for commands sent inside TLS, untagged ones
 * only while such a command is open (and "* BYE"), since anything else
 * answers nothing asked inside TLS.
 *
 * Guarantee 1.  Before TLS a command, literals included, holds at most 8
 * KiB; inside TLS a line at most 64 KiB and literal data is streamed; a
 * backend response line at most 64 KiB; the proxy's own replies wait
 * while the client does not read them (proto_client_full).
 *
 * With backend.tls = "starttls" the proxy upgrades its own connection to
 * the backend first: the greeting (kept, and shown to the client once the
 * backend is in TLS), "A1 CAPABILITY" when the greeting has no list,
 * "A2 STARTTLS" when STARTTLS is offered, its "A2 OK", then TLS.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "imap_parse.h"
#include "proto.h"

enum imap_kind {
	KIND_OTHER,
	KIND_CAPABILITY,
	KIND_LOGIN,		/* a tagged OK authenticates */
	KIND_AUTHENTICATE,	/* likewise, after a SASL dialogue */
};

enum imap_client_mode {
	CLIENT_COMMAND,		/* the first line of a command */
	CLIENT_CONTINUE,	/* the line after a literal: the command goes on */
	CLIENT_LITERAL,		/* literal data, literal_left bytes of it */
	CLIENT_WAIT_LITERAL,	/* {n} relayed: the backend's "+" or completion */
	CLIENT_WAIT_SASL,	/* AUTHENTICATE or a SASL response relayed: likewise */
	CLIENT_SASL,		/* after a "+": the next line is a SASL response */
};

/* What the proxy answers to the command being read; IMAP_RELAY: nothing. */
enum imap_answer {
	IMAP_RELAY,
	IMAP_UPGRADE,		/* STARTTLS, honoured */
	IMAP_PRIVACY_NO,
	IMAP_PRIVACY_BAD,
	IMAP_TLS_ACTIVE,
	IMAP_NO_TLS,
	IMAP_STARTTLS_ARGS,
	IMAP_SYNTAX,
	IMAP_LITERAL_PLUS,
	IMAP_BARE_NEWLINE,
};

static const char *const imap_answer_text[] = {
	[IMAP_UPGRADE] =	"OK Begin TLS negotiation now",
	[IMAP_PRIVACY_NO] =	"NO [PRIVACYREQUIRED] Use STARTTLS before authenticating",
	[IMAP_PRIVACY_BAD] =	"BAD [PRIVACYREQUIRED] Use STARTTLS first",
	[IMAP_TLS_ACTIVE] =	"BAD TLS already active",
	[IMAP_NO_TLS] =		"BAD STARTTLS is not available here",
	[IMAP_STARTTLS_ARGS] =	"BAD STARTTLS takes no arguments",
	[IMAP_SYNTAX] =		"BAD Error in IMAP command",
	[IMAP_LITERAL_PLUS] =	"BAD Non-synchronizing literal not supported here",
	[IMAP_BARE_NEWLINE] =	"BAD Bare CR, LF or NUL not allowed before TLS",
};

#define REPLY_TOOBIG		"* BAD [TOOBIG] Line too long\r\n"
#define REPLY_MALFORMED		"* BAD Malformed command line\r\n"
#define REPLY_UNAVAILABLE	"* BYE [UNAVAILABLE] Service not available\r\n"
#define REPLY_BUSY		"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
#define REPLY_CLIENT_LIMIT	"* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
#define REPLY_DENIED		"* BYE Access denied\r\n"
#define REPLY_BACKEND_ERROR	"* BYE [UNAVAILABLE] Service not available: backend protocol error\r\n"

struct imap_open {
	uint8_t			 kind;
	uint8_t			 taglen;
	char			 tag[IMAP_TAG_MAX];
};

struct imap {
	const struct listener_conf *conf;
	struct imap_open	 open[IMAP_PIPELINE_MAX];	/* relayed, not completed */
	unsigned		 nopen;
	bool			 greeted;	/* the greeting has been relayed */
	bool			 upgraded;	/* in TLS after STARTTLS */
	bool			 tls_quiet;	/* ... and nothing relayed there yet */
	bool			 literal_plus;	/* the backend offers LITERAL+ */
	bool			 literal_minus;	/* ... LITERAL- */

	/* the client's command being read */
	enum imap_client_mode	 mode;
	enum imap_answer	 answer;	/* IMAP_RELAY or the proxy's answer */
	uint8_t			 kind;
	uint8_t			 taglen;	/* 0: answered untagged */
	char			 tag[IMAP_TAG_MAX];
	uint64_t		 cmd_bytes;	/* of it so far, literals included */
	uint64_t		 literal_left;
	size_t			 client_seen;	/* bytes of the next line without an LF */

	/* the backend's response being read */
	uint64_t		 backend_left;	/* literal bytes of it */
	bool			 backend_cont;	/* a line of it follows its literal */
	bool			 backend_drop;	/* it is dropped, not relayed */
	bool			 backend_mid;	/* part of a response relayed, or a line partly read */
	size_t			 backend_seen;

	/* backend.tls = "starttls": the proxy's own dialogue with the backend */
	enum {
		BUP_GREETING,
		BUP_CAPABILITY,		/* A1 CAPABILITY sent */
		BUP_STARTTLS,		/* A2 STARTTLS sent */
		BUP_DONE,
	}			 bup;
	bool			 bup_offered;	/* STARTTLS is in its capabilities */
	struct evbuffer		*greeting;	/* for the client, once the backend is in TLS */
	char			 bup_why[160];
};

static void *
imap_new(const struct listener_conf *conf)
{
	struct imap	*m = calloc(1, sizeof(*m));

	if (m != NULL)
		m->conf = conf;
	return m;
}

static void
imap_free(void *arg)
{
	struct imap	*m = arg;

	if (m->greeting != NULL)
		evbuffer_free(m->greeting);
	free(m);
}

/*
 * The first line of in, made linear; NULL until its LF has come (with
 * *too_long once max bytes hold none).  What earlier calls found without
 * an LF (*seen) is not scanned again: a long line sent a byte at a time
 * costs its length, not its square.  *seen goes back to 0 whenever the
 * head of in is consumed.
 */
static const char *
imap_pull_line(struct evbuffer *in, size_t *seen, size_t max, size_t *n, bool *too_long)
{
	size_t			 len = evbuffer_get_length(in);
	struct evbuffer_ptr	 from, lf;

	*too_long = false;
	if (*seen > len)
		*seen = 0;
	if (evbuffer_ptr_set(in, &from, *seen, EVBUFFER_PTR_SET) == -1)
		return NULL;
	lf = evbuffer_search(in, "\n", 1, &from);
	if (lf.pos < 0 || (size_t)lf.pos >= max) {
		*seen = len < max ? len : max;
		*too_long = len >= max;
		return NULL;
	}
	*n = (size_t)lf.pos + 1;
	return (const char *)evbuffer_pullup(in, (ssize_t)*n);
}

/* "tag text" or "* text", with CRLF. */
static void
imap_reply(struct imap *m, struct proto_io *io, enum imap_answer a)
{
	if (m->taglen > 0)
		evbuffer_add(io->to_client, m->tag, m->taglen);
	else
		evbuffer_add(io->to_client, "*", 1);
	evbuffer_add_printf(io->to_client, " %s\r\n", imap_answer_text[a]);
	if (a != IMAP_UPGRADE)
		io->refused++;
}

static int
imap_open_find(const struct imap *m, const char *tag, size_t taglen)
{
	for (unsigned i = 0; i < m->nopen; i++)
		if (m->open[i].taglen == taglen && memcmp(m->open[i].tag, tag, taglen) == 0)
			return (int)i;
	return -1;
}

static void
imap_open_drop(struct imap *m, unsigned i)
{
	memmove(&m->open[i], &m->open[i + 1], (m->nopen - i - 1) * sizeof(m->open[0]));
	m->nopen--;
}

/*
 * May the proxy answer now?  Only when what it writes comes after every
 * answer the backend owes (the greeting too) and between two of the
 * backend's responses.
 */
static bool
imap_answerable(const struct imap *m)
{
	return m->nopen == 0 && m->greeted && !m->backend_mid;
}

/*
 * Input the proxy does not accept at all: its error, then a close.  Not
 * in the middle of a response that is partly relayed.
 */
static enum proto_verdict
imap_client_error(struct imap *m, struct proto_io *io, const char *reply, const char *why)
{
	if (m->backend_mid)
		return PROTO_HOLD;
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	evbuffer_add(io->to_client, reply, strlen(reply));
	io->end = END_PROTOCOL_ERROR;
	io->reason = why;
	return PROTO_CLOSE;
}

static enum proto_verdict
imap_too_long(struct imap *m, struct proto_io *io)
{
	return imap_client_error(m, io, REPLY_TOOBIG, io->client_tls ?
	    "a command line longer than 64 KiB inside TLS before authentication" :
	    "a command longer than 8 KiB before TLS (literals included)");
}

/* Can a relayed command carry this {n+}?  Only as the backend reads it. */
static bool
imap_nonsync_ok(const struct imap *m, const struct imap_line *l)
{
	if (l->literal8)
		return false;	/* BINARY (RFC 3516) is for the authenticated state */
	return m->literal_plus || (m->literal_minus && l->literal_size <= IMAP_LITERAL_MINUS_MAX);
}

/* What the proxy answers to a command's first line, or IMAP_RELAY. */
static enum imap_answer
imap_decide(const struct imap *m, const struct proto_io *io, const struct imap_line *l,
    enum parse_result parsed, const struct imap_command *c)
{
	const struct listener_conf *conf = m->conf;

	if (!io->client_tls && !l->clean)
		return IMAP_BARE_NEWLINE;
	if (parsed != PARSE_OK || l->malformed)
		return IMAP_SYNTAX;
	if (c->verb == IMAP_STARTTLS) {
		if (conf->client_tls == CLIENT_TLS_NONE)
			return IMAP_NO_TLS;
		if (io->client_tls)
			return IMAP_TLS_ACTIVE;
		if (c->args != NULL || l->literal != IMAP_LITERAL_NONE)
			return IMAP_STARTTLS_ARGS;
		return IMAP_UPGRADE;
	}
	if (!io->client_tls && conf->require_tls && !imap_allowed_before_tls(c->verb))
		return c->verb == IMAP_LOGIN || c->verb == IMAP_AUTHENTICATE ?
		    IMAP_PRIVACY_NO : IMAP_PRIVACY_BAD;
	if (l->literal == IMAP_LITERAL_NONSYNC && !imap_nonsync_ok(m, l))
		return IMAP_LITERAL_PLUS;
	return IMAP_RELAY;
}

/*
 * A line of the command, read (l), is taken: relayed or dropped, and what
 * its end says is done.  The proxy's answer, when the command ends here.
 */
static enum proto_verdict
imap_command_line(struct imap *m, struct proto_io *io, const struct imap_line *l)
{
	bool	 relayed = m->answer == IMAP_RELAY;

	if (relayed)
		evbuffer_remove_buffer(io->in, io->to_backend, l->len);
	else
		evbuffer_drain(io->in, l->len);
	m->client_seen = 0;
	m->cmd_bytes += l->len;
	switch (l->literal) {
	case IMAP_LITERAL_NONSYNC:
		m->literal_left = l->literal_size;
		m->cmd_bytes += l->literal_size;
		m->mode = l->literal_size > 0 ? CLIENT_LITERAL : CLIENT_CONTINUE;
		return PROTO_CONTINUE;
	case IMAP_LITERAL_SYNC:
		if (relayed) {
			m->literal_left = l->literal_size;
			m->cmd_bytes += l->literal_size;
			m->mode = CLIENT_WAIT_LITERAL;
			return PROTO_CONTINUE;
		}
		break;	/* refused before the client sends it: no "+" */
	case IMAP_LITERAL_NONE:
		break;
	}
	/* the command ends here */
	if (relayed) {
		m->mode = m->kind == KIND_AUTHENTICATE ? CLIENT_WAIT_SASL : CLIENT_COMMAND;
		return PROTO_CONTINUE;
	}
	m->mode = CLIENT_COMMAND;
	imap_reply(m, io, m->answer);
	return m->answer == IMAP_UPGRADE ? PROTO_UPGRADE : PROTO_CONTINUE;
}

/* Would taking this line end the command with an answer of the proxy's? */
static bool
imap_answers_here(const struct imap *m, const struct imap_line *l)
{
	return m->answer != IMAP_RELAY && l->literal != IMAP_LITERAL_NONSYNC;
}

static uint64_t
imap_line_cost(const struct imap *m, const struct imap_line *l)
{
	uint64_t n = l->len;

	if (l->literal == IMAP_LITERAL_NONSYNC ||
	    (l->literal == IMAP_LITERAL_SYNC && m->answer == IMAP_RELAY))
		n += l->literal_size;
	return n;
}

/* The first line of a command. */
static enum proto_verdict
imap_command(struct imap *m, struct proto_io *io)
{
	size_t			 max = io->client_tls ? IMAP_LINE_MAX : IMAP_LINE_MAX_PRE_TLS;
	struct imap_line	 l;
	struct imap_command	 c;
	enum parse_result	 parsed;
	enum imap_answer	 a;
	const char		*p;
	size_t			 n;
	bool			 too_long;

	if (m->nopen == IMAP_PIPELINE_MAX)
		return PROTO_HOLD;	/* enough in flight: let the completions come back */
	if ((p = imap_pull_line(io->in, &m->client_seen, max, &n, &too_long)) == NULL)
		return too_long ? imap_too_long(m, io) : PROTO_CONTINUE;
	(void)imap_line_next(p, n, max, IMAP_LINE_COMMAND, &l);
	parsed = imap_command_parse(p, l.textlen, &c);
	a = imap_decide(m, io, &l, parsed, &c);
	m->answer = a;
	if (!io->client_tls && imap_line_cost(m, &l) > IMAP_LINE_MAX_PRE_TLS)
		return imap_too_long(m, io);
	if (a != IMAP_RELAY && !imap_answerable(m))
		return PROTO_HOLD;	/* after the answers already due */
	if (a == IMAP_RELAY && imap_open_find(m, c.tag, c.taglen) >= 0)
		return PROTO_HOLD;	/* its tag is open: one command per completion */

	m->cmd_bytes = 0;
	m->taglen = 0;
	if (c.tag != NULL) {	/* without one, the answer is untagged */
		m->taglen = (uint8_t)c.taglen;
		memcpy(m->tag, c.tag, c.taglen);
	}
	m->kind = c.verb == IMAP_LOGIN ? KIND_LOGIN :
	    c.verb == IMAP_AUTHENTICATE ? KIND_AUTHENTICATE :
	    c.verb == IMAP_CAPABILITY ? KIND_CAPABILITY : KIND_OTHER;
	if (a == IMAP_RELAY) {
		struct imap_open *o = &m->open[m->nopen++];

		o->kind = m->kind;
		o->taglen = m->taglen;
		memcpy(o->tag, m->tag, m->taglen);
		m->tls_quiet = false;
	}
	return imap_command_line(m, io, &l);
}

/* The line after a literal: the same command goes on. */
static enum proto_verdict
imap_continue(struct imap *m, struct proto_io *io)
{
	size_t			 max = io->client_tls ? IMAP_LINE_MAX : IMAP_LINE_MAX_PRE_TLS;
	struct imap_line	 l;
	const char		*p;
	size_t			 n;
	bool			 too_long, bad;

	if ((p = imap_pull_line(io->in, &m->client_seen, max, &n, &too_long)) == NULL)
		return too_long ? imap_too_long(m, io) : PROTO_CONTINUE;
	(void)imap_line_next(p, n, max, IMAP_LINE_COMMAND, &l);
	bad = l.malformed || (!io->client_tls && !l.clean);
	if (!bad && l.literal == IMAP_LITERAL_NONSYNC && m->answer == IMAP_RELAY &&
	    !imap_nonsync_ok(m, &l))
		bad = true;
	if (bad && m->answer == IMAP_RELAY)
		/* part of the command is at the backend already: no way back */
		return imap_client_error(m, io, REPLY_MALFORMED,
		    "a command line after a literal that the proxy cannot frame");
	if (!io->client_tls && m->cmd_bytes + imap_line_cost(m, &l) > IMAP_LINE_MAX_PRE_TLS)
		return imap_too_long(m, io);
	if (imap_answers_here(m, &l) && !imap_answerable(m))
		return PROTO_HOLD;
	return imap_command_line(m, io, &l);
}

/* After a "+" in a SASL dialogue: the client's response, one line. */
static enum proto_verdict
imap_sasl_response(struct imap *m, struct proto_io *io)
{
	size_t			 max = io->client_tls ? IMAP_LINE_MAX : IMAP_LINE_MAX_PRE_TLS;
	struct imap_line	 l;
	const char		*p;
	size_t			 n;
	bool			 too_long;

	if ((p = imap_pull_line(io->in, &m->client_seen, max, &n, &too_long)) == NULL)
		return too_long ? imap_too_long(m, io) : PROTO_CONTINUE;
	(void)imap_line_next(p, n, max, IMAP_LINE_RESPONSE, &l);
	if (!io->client_tls && !l.clean)
		return imap_client_error(m, io, REPLY_MALFORMED,
		    "a bare CR, LF or NUL in a SASL response before TLS");
	/* whatever it says: "*" cancels (RFC 9051 section 6.2.2) */
	evbuffer_remove_buffer(io->in, io->to_backend, l.len);
	m->client_seen = 0;
	m->mode = CLIENT_WAIT_SASL;
	return PROTO_CONTINUE;
}

static enum proto_verdict
imap_client_input(struct proto_io *io)
{
	struct imap		*m = io->state;
	enum proto_verdict	 v;
	size_t			 len, n;

	while ((len = evbuffer_get_length(io->in)) > 0) {
		switch (m->mode) {
		case CLIENT_LITERAL:
			n = len < m->literal_left ? len : (size_t)m->literal_left;
			if (m->answer == IMAP_RELAY)
				evbuffer_remove_buffer(io->in, io->to_backend, n);
			else
				evbuffer_drain(io->in, n);
			m->client_seen = 0;
			if ((m->literal_left -= n) == 0)
				m->mode = CLIENT_CONTINUE;
			continue;
		case CLIENT_WAIT_LITERAL:
		case CLIENT_WAIT_SASL:
			return PROTO_HOLD;
		case CLIENT_SASL:
			v = imap_sasl_response(m, io);
			break;
		case CLIENT_COMMAND:
		case CLIENT_CONTINUE:
			if (proto_client_full(io))
				return PROTO_CONTINUE;	/* the client reads its replies first */
			v = m->mode == CLIENT_COMMAND ? imap_command(m, io) : imap_continue(m, io);
			break;
		default:
			return PROTO_CONTINUE;
		}
		if (v != PROTO_CONTINUE)
			return v;
		if (evbuffer_get_length(io->in) == len)
			return PROTO_CONTINUE;	/* an incomplete line */
	}
	/* nothing more to read until the backend has answered */
	return m->mode == CLIENT_WAIT_LITERAL || m->mode == CLIENT_WAIT_SASL ?
	    PROTO_HOLD : PROTO_CONTINUE;
}

/* The capability rewrite for where the session is. */
static unsigned
imap_caps_flags(const struct imap *m, const struct proto_io *io, bool authenticated)
{
	if (authenticated)	/* no STARTTLS in the authenticated state */
		return IMAP_CAPS_DROP_STARTTLS | (io->client_tls ? IMAP_CAPS_DROP_LOGINDISABLED : 0);
	if (io->client_tls)
		return IMAP_CAPS_DROP_STARTTLS | IMAP_CAPS_DROP_LOGINDISABLED;
	if (m->conf->client_tls != CLIENT_TLS_STARTTLS)
		return IMAP_CAPS_DROP_STARTTLS;	/* the proxy offers none */
	return IMAP_CAPS_ADD_STARTTLS | (m->conf->require_tls ?
	    IMAP_CAPS_ADD_LOGINDISABLED | IMAP_CAPS_DROP_AUTH : 0);
}

static enum proto_verdict
imap_backend_error(struct imap *m, struct proto_io *io, const char *why)
{
	(void)m;
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	evbuffer_add(io->to_client, REPLY_BACKEND_ERROR, strlen(REPLY_BACKEND_ERROR));
	io->end = END_BACKEND_ERROR;
	io->reason = why;
	return PROTO_CLOSE;
}

/* What the backend offers that framing depends on. */
static void
imap_backend_caps(struct imap *m, const char *text, size_t len)
{
	m->literal_plus = imap_capability_has(text, len, "LITERAL+");
	m->literal_minus = imap_capability_has(text, len, "LITERAL-");
}

/*
 * Relay one response line of the backend's (l, with text p), its
 * capability list rewritten when it carries one.
 */
static enum proto_verdict
imap_relay_line(struct imap *m, struct proto_io *io, const char *p, const struct imap_line *l,
    const struct imap_response *r, bool authenticated)
{
	struct evbuffer_iovec	 v;
	ssize_t			 n;

	if (!r->capability) {
		evbuffer_remove_buffer(io->in, io->to_client, l->len);
		return PROTO_CONTINUE;
	}
	if (l->literal != IMAP_LITERAL_NONE)
		return imap_backend_error(m, io, "a capability list from the backend with a literal");
	imap_backend_caps(m, p, l->textlen);
	if (evbuffer_reserve_space(io->to_client, (ssize_t)(l->textlen + IMAP_CAPABILITY_GROWTH + 2),
	    &v, 1) != 1)
		return imap_backend_error(m, io, "out of memory");
	n = imap_capability_rewrite(p, l->textlen, imap_caps_flags(m, io, authenticated),
	    v.iov_base, v.iov_len);
	if (n < 0)
		return imap_backend_error(m, io, "a capability list from the backend of more than 256 items");
	v.iov_len = (size_t)n;
	evbuffer_commit_space(io->to_client, &v, 1);
	evbuffer_drain(io->in, l->len);
	return PROTO_CONTINUE;
}

/*
 * Is an untagged capability list the one of the authenticated state?
 * Dovecot sends it just before its OK to LOGIN or AUTHENTICATE when the
 * client asked for the capabilities before (its
 * client_ignores_capability_resp_code workaround), so: with a login
 * open and no CAPABILITY command.
 */
static bool
imap_login_open(const struct imap *m)
{
	bool	 login = false;

	for (unsigned i = 0; i < m->nopen; i++) {
		if (m->open[i].kind == KIND_CAPABILITY)
			return false;
		if (m->open[i].kind == KIND_LOGIN || m->open[i].kind == KIND_AUTHENTICATE)
			login = true;
	}
	return login;
}

/* Drop the response that starts with this line, all of it. */
static void
imap_drop_response(struct imap *m, struct proto_io *io, const struct imap_line *l)
{
	evbuffer_drain(io->in, l->len);
	io->dropped += l->len;
	m->backend_drop = true;
}

/*
 * After the first line of a response: a literal it announces (but a "+"
 * line is one line, a "{n}" in its text announces nothing) makes the
 * response go on, dropped or relayed as its first line was.
 */
static void
imap_response_literal(struct imap *m, const struct imap_line *l, const struct imap_response *r)
{
	if (l->literal != IMAP_LITERAL_NONE && r->kind != IMAP_RESP_CONTINUATION) {
		m->backend_left = l->literal_size;
		m->backend_cont = true;
	} else
		m->backend_drop = false;
}

/* The backend's first response: its greeting. */
static enum proto_verdict
imap_greeting(struct imap *m, struct proto_io *io, const char *p, const struct imap_line *l,
    const struct imap_response *r)
{
	if (r->kind != IMAP_RESP_UNTAGGED || l->literal != IMAP_LITERAL_NONE ||
	    (r->status != IMAP_STATUS_OK && r->status != IMAP_STATUS_PREAUTH &&
	    r->status != IMAP_STATUS_BYE))
		return imap_backend_error(m, io, "a greeting from the backend that is not * OK, * PREAUTH or * BYE");
	m->greeted = true;
	if (r->status != IMAP_STATUS_PREAUTH)
		return imap_relay_line(m, io, p, l, r, false);
	if (m->conf->client_tls == CLIENT_TLS_STARTTLS) {
		/* already authenticated: the session can never be upgraded */
		evbuffer_drain(io->in, evbuffer_get_length(io->in));
		evbuffer_add(io->to_client, REPLY_UNAVAILABLE, strlen(REPLY_UNAVAILABLE));
		io->end = END_BACKEND_ERROR;
		io->reason = "the backend's greeting is PREAUTH: the session could not be upgraded to TLS";
		return PROTO_CLOSE;
	}
	if (imap_relay_line(m, io, p, l, r, true) != PROTO_CONTINUE)
		return PROTO_CLOSE;
	return PROTO_TRANSPARENT;
}

/* The first line of a response, parsed (r). */
static enum proto_verdict
imap_response(struct imap *m, struct proto_io *io, const char *p, const struct imap_line *l,
    const struct imap_response *r)
{
	const struct imap_open	*o;
	bool			 current, auth;
	int			 i;

	if (!m->greeted)
		return imap_greeting(m, io, p, l, r);
	if (m->tls_quiet) {
		/* inside TLS, the client has asked nothing there yet */
		imap_drop_response(m, io, l);
		imap_response_literal(m, l, r);
		return PROTO_CONTINUE;
	}
	switch (r->kind) {
	case IMAP_RESP_CONTINUATION:
		if (m->mode == CLIENT_WAIT_LITERAL)
			m->mode = m->literal_left > 0 ? CLIENT_LITERAL : CLIENT_CONTINUE;
		else if (m->mode == CLIENT_WAIT_SASL)
			m->mode = CLIENT_SASL;
		else
			return imap_backend_error(m, io,
			    "a continuation request from the backend when none was due");
		/* one line: a "{n}" in its text announces nothing */
		evbuffer_remove_buffer(io->in, io->to_client, l->len);
		return PROTO_CONTINUE;
	case IMAP_RESP_TAGGED:
		if (l->literal != IMAP_LITERAL_NONE)
			return imap_backend_error(m, io, "a tagged response from the backend with a literal");
		if ((i = imap_open_find(m, r->tag, r->taglen)) < 0) {
			if (m->upgraded) {	/* answers nothing asked inside TLS */
				imap_drop_response(m, io, l);
				m->backend_drop = false;
				return PROTO_CONTINUE;
			}
			return imap_relay_line(m, io, p, l, r, false);
		}
		o = &m->open[i];
		current = m->taglen == o->taglen && memcmp(m->tag, o->tag, o->taglen) == 0;
		auth = r->status == IMAP_STATUS_OK &&
		    (o->kind == KIND_LOGIN || o->kind == KIND_AUTHENTICATE);
		imap_open_drop(m, (unsigned)i);
		if (current && (m->mode == CLIENT_WAIT_LITERAL || m->mode == CLIENT_WAIT_SASL ||
		    m->mode == CLIENT_SASL))
			m->mode = CLIENT_COMMAND;	/* refused, or the dialogue is over */
		if (imap_relay_line(m, io, p, l, r, auth) != PROTO_CONTINUE)
			return PROTO_CLOSE;
		return auth ? PROTO_TRANSPARENT : PROTO_CONTINUE;
	case IMAP_RESP_UNTAGGED:
		if (r->status == IMAP_STATUS_PREAUTH)
			return imap_backend_error(m, io, "a PREAUTH response from the backend after its greeting");
		if (m->upgraded && m->nopen == 0 && r->status != IMAP_STATUS_BYE) {
			imap_drop_response(m, io, l);
			break;
		}
		if (imap_relay_line(m, io, p, l, r, imap_login_open(m)) != PROTO_CONTINUE)
			return PROTO_CLOSE;
		m->backend_drop = false;
		break;
	}
	imap_response_literal(m, l, r);
	return PROTO_CONTINUE;
}

static enum proto_verdict
imap_backend_input(struct proto_io *io)
{
	struct imap		*m = io->state;
	struct imap_line	 l;
	struct imap_response	 r;
	enum proto_verdict	 v = PROTO_CONTINUE;
	const char		*p;
	size_t			 len, n;
	bool			 too_long;

	if (m->greeting != NULL) {
		/* backend.tls = "starttls": its greeting, read before TLS */
		evbuffer_prepend_buffer(io->in, m->greeting);
		evbuffer_free(m->greeting);
		m->greeting = NULL;
		m->backend_seen = 0;
	}
	while (v == PROTO_CONTINUE && (len = evbuffer_get_length(io->in)) > 0) {
		if (m->backend_left > 0) {	/* literal data of a response */
			n = len < m->backend_left ? len : (size_t)m->backend_left;
			if (m->backend_drop) {
				evbuffer_drain(io->in, n);
				io->dropped += n;
			} else
				evbuffer_remove_buffer(io->in, io->to_client, n);
			m->backend_left -= n;
			m->backend_seen = 0;
			continue;
		}
		if ((p = imap_pull_line(io->in, &m->backend_seen, IMAP_RESPONSE_LINE_MAX, &n,
		    &too_long)) == NULL) {
			if (too_long)
				return imap_backend_error(m, io,
				    "a response line from the backend longer than 64 KiB");
			break;
		}
		(void)imap_line_next(p, n, IMAP_RESPONSE_LINE_MAX, IMAP_LINE_RESPONSE, &l);
		if (l.malformed)
			return imap_backend_error(m, io, "a literal from the backend that is too large");
		m->backend_seen = 0;
		if (m->backend_cont) {
			/* the response goes on after its literal */
			if (m->backend_drop) {
				evbuffer_drain(io->in, l.len);
				io->dropped += l.len;
			} else
				evbuffer_remove_buffer(io->in, io->to_client, l.len);
			if (l.literal != IMAP_LITERAL_NONE)
				m->backend_left = l.literal_size;
			else
				m->backend_cont = m->backend_drop = false;
			continue;
		}
		if (imap_response_parse(p, l.textlen, &r) != PARSE_OK)
			return imap_backend_error(m, io, "the backend sent something that is not an IMAP response");
		v = imap_response(m, io, p, &l, &r);
	}
	m->backend_mid = m->backend_cont || m->backend_left > 0 || evbuffer_get_length(io->in) > 0;
	return v;
}

/*
 * Inside TLS nothing from the cleartext phase is trusted (RFC 9051
 * section 11.1, RFC 2595 section 3.1): the client asks for the
 * capabilities again, and until it relays its first command there every
 * backend response answers the cleartext phase.  The upgrade came with
 * no command open and no response half read.
 */
static enum proto_verdict
imap_tls_ready(struct proto_io *io)
{
	struct imap	*m = io->state;

	if (m->conf->client_tls != CLIENT_TLS_STARTTLS)
		return PROTO_CONTINUE;	/* implicit TLS: no cleartext phase */
	m->upgraded = true;
	m->tls_quiet = true;
	m->mode = CLIENT_COMMAND;
	m->nopen = 0;
	m->client_seen = m->backend_seen = 0;
	m->backend_left = 0;
	m->backend_cont = m->backend_drop = m->backend_mid = false;
	return PROTO_CONTINUE;
}

static void
imap_backend_failed(struct proto_io *io)
{
	evbuffer_add(io->to_client, REPLY_UNAVAILABLE, strlen(REPLY_UNAVAILABLE));
}

static void
imap_refuse(struct evbuffer *to_client, enum proto_refusal r)
{
	const char *reply = r == PROTO_REFUSAL_DENIED ? REPLY_DENIED :
	    r == PROTO_REFUSAL_CLIENT_LIMIT ? REPLY_CLIENT_LIMIT : REPLY_BUSY;

	evbuffer_add(to_client, reply, strlen(reply));
}

static enum proto_verdict
imap_bup_fail(struct imap *m, struct proto_io *io, const char *why, const char *text, size_t len)
{
	if (text != NULL)
		return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
		    "STARTTLS with the backend: %s: %.*s", why, (int)(len < 80 ? len : 80), text);
	return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
	    "STARTTLS with the backend: %s", why);
}

static bool
imap_tag_is(const struct imap_response *r, const char *tag)
{
	return r->kind == IMAP_RESP_TAGGED && r->taglen == strlen(tag) &&
	    memcmp(r->tag, tag, r->taglen) == 0;
}

/*
 * backend.tls = "starttls": the greeting (kept for the client), "A1
 * CAPABILITY" unless the greeting lists the capabilities, "A2 STARTTLS"
 * when they hold STARTTLS, its "A2 OK", and nothing after it: bytes that
 * follow the OK before TLS would be taken for the server's side of the
 * handshake, or worse, for responses inside TLS (CVE-2011-0411 the other
 * way round), so they end the attempt.
 */
static enum proto_verdict
imap_backend_starttls(struct proto_io *io)
{
	struct imap		*m = io->state;
	struct imap_line	 l;
	struct imap_response	 r;
	const char		*p;
	size_t			 n;
	bool			 too_long;

	while (evbuffer_get_length(io->in) > 0) {
		if ((p = imap_pull_line(io->in, &m->backend_seen, IMAP_RESPONSE_LINE_MAX, &n,
		    &too_long)) == NULL)
			return too_long ? imap_bup_fail(m, io, "a response line longer than 64 KiB", NULL, 0) :
			    PROTO_CONTINUE;
		(void)imap_line_next(p, n, IMAP_RESPONSE_LINE_MAX, IMAP_LINE_RESPONSE, &l);
		m->backend_seen = 0;
		if (l.malformed || l.literal != IMAP_LITERAL_NONE)
			return imap_bup_fail(m, io, "a literal in a response", NULL, 0);
		if (imap_response_parse(p, l.textlen, &r) != PARSE_OK)
			return imap_bup_fail(m, io, "not an IMAP response", p, l.textlen);
		if (r.kind == IMAP_RESP_CONTINUATION)
			return imap_bup_fail(m, io, "a continuation request", p, l.textlen);
		if (r.kind == IMAP_RESP_UNTAGGED && r.status == IMAP_STATUS_BYE)
			return imap_bup_fail(m, io, "the backend said BYE", p, l.textlen);
		switch (m->bup) {
		case BUP_GREETING:
			if (r.kind != IMAP_RESP_UNTAGGED || r.status != IMAP_STATUS_OK)
				return imap_bup_fail(m, io, r.status == IMAP_STATUS_PREAUTH ?
				    "a PREAUTH greeting (no STARTTLS in the authenticated state)" :
				    "the greeting is not * OK", p, l.textlen);
			if ((m->greeting = evbuffer_new()) == NULL)
				return imap_bup_fail(m, io, "out of memory", NULL, 0);
			if (r.capability) {
				imap_backend_caps(m, p, l.textlen);
				m->bup_offered = imap_capability_has(p, l.textlen, "STARTTLS");
			}
			evbuffer_remove_buffer(io->in, m->greeting, l.len);
			if (!r.capability) {
				evbuffer_add(io->to_backend, "A1 CAPABILITY\r\n", 15);
				m->bup = BUP_CAPABILITY;
				break;
			}
			if (!m->bup_offered)
				return imap_bup_fail(m, io, "the backend does not offer STARTTLS", NULL, 0);
			evbuffer_add(io->to_backend, "A2 STARTTLS\r\n", 13);
			m->bup = BUP_STARTTLS;
			break;
		case BUP_CAPABILITY:
			if (r.kind == IMAP_RESP_UNTAGGED) {
				if (r.capability) {
					imap_backend_caps(m, p, l.textlen);
					if (imap_capability_has(p, l.textlen, "STARTTLS"))
						m->bup_offered = true;
				}
				evbuffer_drain(io->in, l.len);
				break;
			}
			if (!imap_tag_is(&r, "A1"))
				return imap_bup_fail(m, io, "a response to another command", p, l.textlen);
			if (r.status != IMAP_STATUS_OK)
				return imap_bup_fail(m, io, "CAPABILITY refused", p, l.textlen);
			if (r.capability && imap_capability_has(p, l.textlen, "STARTTLS"))
				m->bup_offered = true;
			evbuffer_drain(io->in, l.len);
			if (!m->bup_offered)
				return imap_bup_fail(m, io, "the backend does not offer STARTTLS", NULL, 0);
			evbuffer_add(io->to_backend, "A2 STARTTLS\r\n", 13);
			m->bup = BUP_STARTTLS;
			break;
		case BUP_STARTTLS:
			if (r.kind == IMAP_RESP_UNTAGGED) {
				evbuffer_drain(io->in, l.len);
				break;
			}
			if (!imap_tag_is(&r, "A2"))
				return imap_bup_fail(m, io, "a response to another command", p, l.textlen);
			if (r.status != IMAP_STATUS_OK)
				return imap_bup_fail(m, io, "STARTTLS refused", p, l.textlen);
			evbuffer_drain(io->in, l.len);
			if (evbuffer_get_length(io->in) > 0)
				return imap_bup_fail(m, io,
				    "the backend sent bytes after its OK to STARTTLS, before TLS", NULL, 0);
			m->bup = BUP_DONE;
			return PROTO_UPGRADE;
		case BUP_DONE:
			return imap_bup_fail(m, io, "bytes after the upgrade", NULL, 0);
		}
	}
	return PROTO_CONTINUE;
}

const struct proto proto_imap = {
	.name = "imap",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.connect_early = true,
	.backend_before_upgrade = "the backend's greeting and replies are relayed before the upgrade",
	.session_new = imap_new,
	.session_free = imap_free,
	.client_input = imap_client_input,
	.backend_input = imap_backend_input,
	.tls_ready = imap_tls_ready,
	.backend_failed = imap_backend_failed,
	.refuse = imap_refuse,
	.backend_starttls = imap_backend_starttls,
};
