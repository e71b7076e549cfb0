/*
 * libFuzzer target: the protocol modules (smtp, ldap, http, line, pop3,
 * imap, postgres) driven as the session drives them, with a hostile client
 * and a hostile backend taking turns, so that their state machines are
 * fuzzed, not only the pure parsers under them.
 *
 * Input: byte 0 picks the protocol (smtp, ldap, http, line, pop3, imap,
 * postgres), byte 1 the listener's flags (bit 0 require_tls, bit 1
 * implicit client TLS, bit 2 the proxy's own STARTTLS towards the backend
 * first, bit 3 line.reply, bit 4 a client that does not read, bit 5 no
 * client TLS, bit 6 a session that only refuses the client as busy).
 * Then records: an op byte (0 client bytes, 1 backend bytes, 2 "the
 * backend came up"), a length byte, the bytes.
 * Bytes a module leaves in an input stay there for the next turn, as in
 * a session.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "config.h"
#include "harness.h"
#include "imap_parse.h"
#include "pg_parse.h"
#include "proto.h"

/* The module and what the session knows of it. */
struct run {
	struct harness		 h;
	bool			 held;
	bool			 bup;		/* backend STARTTLS dialogue still on */
	bool			 over;
};

/* One reply past the client's room is all a module may write (Guarantee 1). */
#define REPLY_MAX	1024

static enum proto_verdict
call(struct run *r, enum harness_hook hook)
{
	enum proto_verdict	 v = harness_call(&r->h, hook);

	if (hook == HARNESS_CLIENT &&
	    evbuffer_get_length(r->h.to_client) > r->h.client_room + REPLY_MAX)
		__builtin_trap();	/* replies past the watermark */
	return v;
}

/* What the session does with a verdict, as far as the module can tell. */
static void
verdict(struct run *r, enum proto_verdict v)
{
	switch (v) {
	case PROTO_CONTINUE:
		r->held = false;
		break;
	case PROTO_HOLD:
		r->held = true;
		break;
	case PROTO_UPGRADE:
		r->held = false;
		r->h.client_tls = true;
		/* bytes behind the verb are discarded by the session */
		evbuffer_drain(r->h.from_client, evbuffer_get_length(r->h.from_client));
		verdict(r, call(r, HARNESS_TLS_READY));
		break;
	case PROTO_CONNECT:
		r->held = true;
		verdict(r, call(r, HARNESS_BACKEND_READY));
		break;
	case PROTO_TRANSPARENT:
	case PROTO_CLOSE:
		r->over = true;
		break;
	}
}

/*
 * SMTP under require_tls, before the client's TLS: nothing that carries a
 * transaction or a credential may reach the backend (a trap otherwise).
 */
static void
check_smtp_cleartext(struct evbuffer *to_backend)
{
	static const char *const forbidden[] = {
		"MAIL", "RCPT", "DATA", "BDAT", "AUTH", "VRFY", "EXPN",
	};
	size_t		 len = evbuffer_get_length(to_backend);
	const char	*p = (const char *)evbuffer_pullup(to_backend, -1);
	size_t		 bol = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && p[i] != '\n')
			continue;
		for (size_t k = 0; k < sizeof(forbidden) / sizeof(forbidden[0]); k++)
			if (i - bol >= 4 && strncasecmp(p + bol, forbidden[k], 4) == 0)
				__builtin_trap();
		bol = i + 1;
	}
}

/*
 * POP3 under require_tls, before the client's TLS: only CAPA, QUIT and the
 * proxy's own STLS (backend.tls = "starttls") may reach the backend, each
 * as a whole line (a trap otherwise).
 */
static void
check_pop3_cleartext(struct evbuffer *to_backend)
{
	static const char *const allowed[] = { "CAPA", "QUIT", "STLS" };
	size_t		 len = evbuffer_get_length(to_backend);
	const char	*p = (const char *)evbuffer_pullup(to_backend, -1);
	size_t		 bol = 0;

	for (size_t i = 0; i < len; i++) {
		bool	 ok = false;

		if (p[i] != '\n')
			continue;
		for (size_t k = 0; k < sizeof(allowed) / sizeof(allowed[0]); k++)
			if (i - bol >= 4 && strncasecmp(p + bol, allowed[k], 4) == 0 &&
			    (p[bol + 4] == ' ' || p[bol + 4] == '\r' || p[bol + 4] == '\n'))
				ok = true;
		if (!ok)
			__builtin_trap();
		bol = i + 1;
	}
	if (bol != len)
		__builtin_trap();	/* a line relayed in part */
}

/*
 * IMAP under require_tls, before the client's TLS: only CAPABILITY, NOOP,
 * LOGOUT, ID (and the proxy's own STARTTLS towards the backend) may reach
 * the backend, a trap otherwise.  The commands are framed as any server
 * frames them, literal data skipped, across the turns (the module relays
 * whole lines, and literal data in pieces).  Whether the data of a
 * synchronizing literal follows depends on the backend's answer, which
 * this check does not follow: it stops at the first one.  Runs with the
 * proxy's own STARTTLS towards the backend are not checked, since its
 * lines share the one to_backend buffer with the client's here.
 */
struct imap_check {
	uint64_t	 literal_left;
	bool		 more;		/* the command goes on after a literal */
	bool		 lost;		/* after a {n}: the framing is the backend's */
};

static void
check_imap_cleartext(struct imap_check *k, struct evbuffer *to_backend)
{
	size_t			 len = evbuffer_get_length(to_backend), off = 0, n;
	const char		*p = (const char *)evbuffer_pullup(to_backend, -1);
	struct imap_line	 l;
	struct imap_command	 c;

	while (off < len && !k->lost) {
		if (k->literal_left > 0) {
			n = len - off < k->literal_left ? len - off : (size_t)k->literal_left;
			k->literal_left -= n;
			off += n;
			continue;
		}
		if (imap_line_next(p + off, len - off, IMAP_LINE_MAX_PRE_TLS, IMAP_LINE_COMMAND,
		    &l) != PARSE_OK)
			__builtin_trap();	/* a line relayed in part, or too long */
		if (!k->more && (imap_command_parse(p + off, l.textlen, &c) != PARSE_OK ||
		    !imap_allowed_before_tls(c.verb)))
			__builtin_trap();
		k->more = l.literal != IMAP_LITERAL_NONE;
		k->literal_left = l.literal_size;
		k->lost = l.literal == IMAP_LITERAL_SYNC;
		off += l.len;
	}
}

/*
 * postgres before the client's TLS under require_tls, or refusing the
 * client: nothing reaches the backend but one CancelRequest, and a
 * refused client not even that.
 */
static void
check_postgres(struct evbuffer *to_backend, bool refusing)
{
	size_t		 len = evbuffer_get_length(to_backend);
	const uint8_t	*p = evbuffer_pullup(to_backend, -1);

	if (len == 0)
		return;
	if (refusing || len != PG_CANCEL_LEN || p[3] != PG_CANCEL_LEN || p[4] != 0x04 ||
	    p[5] != 0xd2 || p[6] != 0x16 || p[7] != 0x2e)
		__builtin_trap();
}

/* Each protocol's settings, made once as the daemon makes them. */
static void *
proto_conf(const struct proto *p, bool with_reply)
{
	static void	*line_reply, *line_plain, *http;

	if (p == &proto_line) {
		if (line_reply == NULL) {
			line_reply = harness_proto_conf(p, "reply = \"OK\";");
			line_plain = harness_proto_conf(p, NULL);
		}
		return with_reply ? line_reply : line_plain;
	}
	if (p == &proto_http) {
		if (http == NULL)
			http = harness_proto_conf(p,
			    "connect_allow = [ \"a.test:443\", \"*.b.test:8443\" ];");
		return http;
	}
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto *const protos[] = {
		&proto_smtp, &proto_ldap, &proto_http, &proto_line, &proto_pop3, &proto_imap,
		&proto_postgres,
	};
	const struct proto *p;
	struct listener_conf lc;
	struct run	 r;
	struct imap_check imap = { 0 };
	struct harness	*h = &r.h;
	size_t		 off = 2;
	unsigned	 steps = 0;

	if (size < 2)
		return 0;
	memset(&r, 0, sizeof(r));
	memset(&lc, 0, sizeof(lc));
	p = protos[data[0] % (sizeof(protos) / sizeof(protos[0]))];
	lc.proto = p;
	lc.require_tls = data[1] & 1;
	lc.client_tls = (data[1] & 2) ? CLIENT_TLS_IMPLICIT :
	    (data[1] & 32) ? CLIENT_TLS_NONE : CLIENT_TLS_STARTTLS;
	if (lc.client_tls == CLIENT_TLS_NONE)
		lc.require_tls = false;
	lc.proto_conf = proto_conf(p, (data[1] & 8) != 0);
	harness_open_listener(h, &lc);
	h->client_tls = lc.client_tls == CLIENT_TLS_IMPLICIT;
	h->client_room = (data[1] & 16) ? 256 : SIZE_MAX / 2;	/* a client that does not read */
	if ((data[1] & 64) && p->refuse_in_session)
		h->refusal = PROTO_REFUSAL_BUSY;
	r.bup = (data[1] & 4) && p->backend_starttls != NULL;
	if (r.bup && call(&r, HARNESS_DIALOGUE) != PROTO_CONTINUE)
		r.bup = false;
	evbuffer_drain(h->to_backend, evbuffer_get_length(h->to_backend));	/* sent */
	if (h->client_tls)
		verdict(&r, call(&r, HARNESS_TLS_READY));

	while (!r.over && off + 2 <= size && steps++ < 256) {
		uint8_t		 op = data[off] % 3;
		size_t		 n = data[off + 1];
		bool		 cleartext = !h->client_tls;

		off += 2;
		if (n > size - off)
			n = size - off;
		if (op == 0) {
			evbuffer_add(h->from_client, data + off, n);
			if (!r.held && evbuffer_get_length(h->from_client) > 0)
				verdict(&r, call(&r, HARNESS_CLIENT));
		} else if (op == 1 && r.bup) {
			enum proto_verdict v;

			evbuffer_add(h->from_backend, data + off, n);
			v = call(&r, HARNESS_DIALOGUE);
			if (v == PROTO_CLOSE)
				r.over = true;
			else if (v == PROTO_UPGRADE) {
				r.bup = false;	/* up: the module's kept bytes come next */
				verdict(&r, call(&r, HARNESS_BACKEND));
			}
		} else if (op == 1) {
			evbuffer_add(h->from_backend, data + off, n);
			verdict(&r, call(&r, HARNESS_BACKEND));
			/* a backend answer may release held client input */
			if (!r.over && !r.held && evbuffer_get_length(h->from_client) > 0)
				verdict(&r, call(&r, HARNESS_CLIENT));
		} else if (p->backend_ready != NULL && !r.bup) {
			verdict(&r, call(&r, HARNESS_BACKEND_READY));
		}
		off += n;
		if (p == &proto_smtp && lc.require_tls && cleartext)
			check_smtp_cleartext(h->to_backend);
		if (p == &proto_imap && lc.require_tls && cleartext && !(data[1] & 4))
			check_imap_cleartext(&imap, h->to_backend);
		if (p == &proto_pop3 && lc.require_tls && cleartext)
			check_pop3_cleartext(h->to_backend);
		if (p == &proto_postgres && ((lc.require_tls && cleartext) ||
		    h->refusal != PROTO_REFUSAL_NONE))
			check_postgres(h->to_backend, h->refusal != PROTO_REFUSAL_NONE);
		evbuffer_drain(h->to_client, evbuffer_get_length(h->to_client));
		evbuffer_drain(h->to_backend, evbuffer_get_length(h->to_backend));
		/* the client has read its replies: the session resumes the module */
		if (!r.over && h->stopped && !r.held && evbuffer_get_length(h->from_client) > 0)
			verdict(&r, call(&r, HARNESS_CLIENT));
	}
	harness_close(h);
	return 0;
}
