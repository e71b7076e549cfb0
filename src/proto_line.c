/*
 * line: the upgradeable line protocol (PING, PONG, STARTTLS, QUIT).
 *
 * Lines end in LF or CRLF.  A line equal to line.command (ignoring case)
 * is answered with line.reply, if not empty, in the line ending the client
 * used, and the client side is upgraded; it never reaches the backend.
 * Under require_tls every other line before the upgrade gets
 * line.refusal.  Each relayed line is taken to expect one reply line, so
 * that an upgrade pipelined behind a line waits for that line's reply.
 * After the upgrade the client speaks first: backend bytes that come
 * before the client's first bytes inside TLS answer nothing asked inside
 * TLS, so they are dropped, never delivered as if they came after the
 * upgrade.  From the client's first bytes on, the relay is transparent.
 *
 * With backend.tls = "starttls" the proxy upgrades its connection to the
 * backend the same way, as the client: line.command, line.reply back when
 * it is set, then TLS.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "line_parse.h"
#include "proto.h"

#define LINE_TEXT_MAX	512	/* line.command, reply and refusal */

/* The listener's line = { ... } block. */
struct line_conf {
	char		*command;
	char		*reply;			/* "" means no reply */
	char		*refusal;
};

static const char *const line_keys[] = { "command", "reply", "refusal", NULL };

struct line {
	const struct listener_conf *conf;
	const struct line_conf	*lc;
	size_t			 outstanding;	/* relayed lines not answered yet */
	bool			 bup_sent;	/* backend.tls = "starttls": command sent */
	char			 bup_why[160];
};

static void *
line_new(const struct listener_conf *conf)
{
	struct line	*m = calloc(1, sizeof(*m));

	if (m != NULL) {
		m->conf = conf;
		m->lc = conf->proto_conf;
	}
	return m;
}

static void
line_free(void *m)
{
	free(m);
}

static void
line_reply(struct proto_io *io, const char *text, bool crlf)
{
	evbuffer_add(io->to_client, text, strlen(text));
	evbuffer_add(io->to_client, crlf ? "\r\n" : "\n", crlf ? 2 : 1);
	io->refused++;
}

/* The next line of in, before TLS: the line_next of its first bytes. */
static enum parse_result
line_next_in(struct evbuffer *in, const char **p, size_t *linelen, size_t *textlen)
{
	size_t	 len = evbuffer_get_length(in);

	*p = (const char *)evbuffer_pullup(in,
	    (ssize_t)(len < LINE_MAX_PRE_TLS ? len : LINE_MAX_PRE_TLS));
	return line_next(*p, len, LINE_MAX_PRE_TLS, linelen, textlen);
}

static enum proto_verdict
line_client_input(struct proto_io *io)
{
	struct line		*m = io->state;
	const struct line_conf	*lc = m->lc;
	size_t			 len, linelen, textlen;
	const char		*p;

	if (m->conf->client_tls != CLIENT_TLS_STARTTLS || io->client_tls)
		return PROTO_TRANSPARENT;	/* bytes inside TLS: nothing left to enforce */
	while ((len = evbuffer_get_length(io->in)) > 0) {
		if (proto_client_full(io))
			return PROTO_CONTINUE;	/* the client reads its replies first */
		switch (line_next_in(io->in, &p, &linelen, &textlen)) {
		case PARSE_NEED_MORE:
			return PROTO_CONTINUE;
		case PARSE_OK:
			break;
		default:
			evbuffer_drain(io->in, len);
			io->end = END_PROTOCOL_ERROR;
			io->reason = "a line longer than 8 KiB before TLS";
			return PROTO_CLOSE;
		}
		if (line_equals(p, textlen, lc->command)) {
			bool crlf = linelen > textlen + 1;

			if (m->outstanding > 0)
				return PROTO_HOLD;	/* answer in order */
			evbuffer_drain(io->in, linelen);
			if (lc->reply[0] != '\0')
				line_reply(io, lc->reply, crlf);
			return PROTO_UPGRADE;
		}
		if (m->conf->require_tls) {
			bool crlf = linelen > textlen + 1;

			evbuffer_drain(io->in, linelen);
			line_reply(io, lc->refusal, crlf);
			continue;
		}
		evbuffer_remove_buffer(io->in, io->to_backend, linelen);
		m->outstanding++;
	}
	return PROTO_CONTINUE;
}

static enum proto_verdict
line_backend_input(struct proto_io *io)
{
	struct line		*m = io->state;
	struct evbuffer_iovec	 v[16];
	struct evbuffer_ptr	 pos;
	size_t			 lines = 0;
	int			 n;

	if (io->client_tls) {
		/* inside TLS, before the client said anything: not an answer */
		io->dropped += evbuffer_get_length(io->in);
		evbuffer_drain(io->in, evbuffer_get_length(io->in));
		return PROTO_CONTINUE;
	}
	/* count the reply lines, sixteen chunks at a time; the bytes pass as they are */
	evbuffer_ptr_set(io->in, &pos, 0, EVBUFFER_PTR_SET);
	while ((n = evbuffer_peek(io->in, -1, &pos, v, 16)) > 0) {
		size_t seen = 0;

		for (int i = 0; i < n && i < 16; i++) {
			lines += line_count(v[i].iov_base, v[i].iov_len);
			seen += v[i].iov_len;
		}
		if (n < 16 || evbuffer_ptr_set(io->in, &pos, seen, EVBUFFER_PTR_ADD) != 0)
			break;
	}
	m->outstanding -= lines < m->outstanding ? lines : m->outstanding;
	evbuffer_add_buffer(io->to_client, io->in);
	return PROTO_CONTINUE;
}

static enum proto_verdict
line_tls_ready(struct proto_io *io)
{
	struct line	*m = io->state;

	/* with TLS from the first byte there is no cleartext to guard against */
	return m->conf->client_tls == CLIENT_TLS_STARTTLS ? PROTO_CONTINUE : PROTO_TRANSPARENT;
}

static enum proto_verdict
line_bup_fail(struct line *m, struct proto_io *io, const char *why, const char *p, size_t n)
{
	return proto_upgrade_failed(io, m->bup_why, sizeof(m->bup_why),
	    "STARTTLS with the backend: %s%s%.*s%s",
	    why, p ? " '" : "", (int)(n < 60 ? n : 60), p ? p : "", p ? "'" : "");
}

/*
 * backend.tls = "starttls": the proxy sends line.command to the backend
 * and, when line.reply is set, waits for that line back; then TLS.  The
 * backend is taken to speak the protocol the listener speaks to clients.
 */
static enum proto_verdict
line_backend_starttls(struct proto_io *io)
{
	struct line		*m = io->state;
	const struct line_conf	*lc = m->lc;
	size_t			 len = evbuffer_get_length(io->in), linelen, textlen;
	const char		*p;

	if (!m->bup_sent) {
		if (len > 0)
			return line_bup_fail(m, io, "the backend spoke before the upgrade command", NULL, 0);
		evbuffer_add_printf(io->to_backend, "%s\r\n", lc->command);
		m->bup_sent = true;
		return lc->reply[0] == '\0' ? PROTO_UPGRADE : PROTO_CONTINUE;
	}
	if (len == 0)
		return PROTO_CONTINUE;
	switch (line_next_in(io->in, &p, &linelen, &textlen)) {
	case PARSE_NEED_MORE:
		return PROTO_CONTINUE;
	case PARSE_OK:
		break;
	default:
		return line_bup_fail(m, io, "a reply line longer than 8 KiB", NULL, 0);
	}
	if (!line_equals(p, textlen, lc->reply))
		return line_bup_fail(m, io, "the backend answered", p, textlen);
	evbuffer_drain(io->in, linelen);
	if (evbuffer_get_length(io->in) > 0)
		return line_bup_fail(m, io, "the backend sent bytes after its reply, before TLS", NULL, 0);
	return PROTO_UPGRADE;
}

static void
line_conf_free(void *arg)
{
	struct line_conf	*l = arg;

	if (l == NULL)
		return;
	free(l->command);
	free(l->reply);
	free(l->refusal);
	free(l);
}

static bool
printable(const char *s)
{
	for (; *s != '\0'; s++)
		if (!isprint((unsigned char)*s))
			return false;
	return true;
}

/* line = { command = "STARTTLS"; reply = ""; refusal = "ERR STARTTLS required"; } */
static void *
line_conf_parse(struct cfg_walk *w, const config_setting_t *g, const char *path)
{
	static const char *const defaults[] = { "STARTTLS", "", "ERR STARTTLS required" };
	struct line_conf	*l = cfg_calloc(w, 1, sizeof(*l));
	char			**fields[3];
	char			 p[CFG_PATH_MAX];
	const char		*v;

	if (l == NULL)
		return NULL;
	fields[0] = &l->command;
	fields[1] = &l->reply;
	fields[2] = &l->refusal;
	if (g != NULL)
		cfg_check_members(w, g, path, line_keys);
	for (size_t i = 0; i < 3; i++) {
		v = defaults[i];
		if (g != NULL && cfg_get_string(w, g, path, line_keys[i], &v) == 1) {
			cfg_child_path(p, sizeof(p), path, line_keys[i]);
			if (!printable(v) || strlen(v) > LINE_TEXT_MAX) {
				cfg_problem(w, config_setting_get_member(g, line_keys[i]), p,
				    "expected printable text of at most %d characters, without CR or LF",
				    LINE_TEXT_MAX);
				v = defaults[i];
			} else if (i == 0 && (v[0] == '\0' || strchr(v, ' ') != NULL)) {
				cfg_problem(w, config_setting_get_member(g, line_keys[i]), p,
				    "expected one word, such as \"STARTTLS\"");
				v = defaults[i];
			}
		}
		if ((*fields[i] = cfg_strdup(w, v)) == NULL) {
			line_conf_free(l);
			return NULL;
		}
	}
	return l;
}

const struct proto proto_line = {
	.name = "line",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = false,
	.has_upgrade = true,
	.connect_early = true,
	.backend_before_upgrade = "the backend's lines are relayed before the upgrade",
	.block = "line",
	.block_keys = line_keys,
	.conf_parse = line_conf_parse,
	.conf_free = line_conf_free,
	.session_new = line_new,
	.session_free = line_free,
	.client_input = line_client_input,
	.backend_input = line_backend_input,
	.tls_ready = line_tls_ready,
	.backend_starttls = line_backend_starttls,
};
