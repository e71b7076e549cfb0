/*
 * libFuzzer target: the protocol modules (smtp, ldap, http, line) driven
 * as the session drives them, with a hostile client and a hostile backend
 * taking turns, so that their state machines are fuzzed, not only the
 * pure parsers under them.
 *
 * Input: byte 0 picks the protocol, byte 1 the listener's flags (bit 0
 * require_tls, bit 1 implicit client TLS, bit 2 the proxy's own STARTTLS
 * towards the backend first).  Then records: an op byte (0 client bytes,
 * 1 backend bytes, 2 "the backend came up"), a length byte, the bytes.
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
#include "proto.h"

struct run {
	const struct proto	*proto;
	struct listener_conf	 conf;
	void			*state;
	struct evbuffer		*cin, *bin, *to_client, *to_backend;
	bool			 client_tls;
	bool			 held;
	bool			 bup;		/* backend STARTTLS dialogue still on */
	bool			 over;
	size_t			 room;		/* what the client may be sent per step */
	bool			 stopped;	/* the module stopped there */
};

/* One reply past the client's room is all a module may write (Guarantee 1). */
#define REPLY_MAX	1024

static enum proto_verdict
call(struct run *r, enum proto_verdict (*fn)(struct proto_io *), struct evbuffer *in)
{
	struct proto_io		 io;
	enum proto_verdict	 v;

	memset(&io, 0, sizeof(io));
	io.state = r->state;
	io.conf = &r->conf;
	io.client_tls = r->client_tls;
	io.in = in;
	io.to_client = r->to_client;
	io.to_backend = r->to_backend;
	io.client_room = r->room > evbuffer_get_length(r->to_client) ?
	    r->room - evbuffer_get_length(r->to_client) : 0;
	v = fn(&io);
	if (fn == r->proto->client_input) {
		r->stopped = io.stopped && v == PROTO_CONTINUE;
		if (evbuffer_get_length(r->to_client) > r->room + REPLY_MAX)
			__builtin_trap();	/* replies past the watermark */
	}
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
		r->client_tls = true;
		/* bytes behind the verb are discarded by the session */
		evbuffer_drain(r->cin, evbuffer_get_length(r->cin));
		if (r->proto->tls_ready != NULL)
			verdict(r, call(r, r->proto->tls_ready, NULL));
		break;
	case PROTO_CONNECT:
		r->held = true;
		if (r->proto->backend_ready != NULL)
			verdict(r, call(r, r->proto->backend_ready, NULL));
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
		&proto_smtp, &proto_ldap, &proto_http, &proto_line,
	};
	struct run	 r;
	size_t		 off = 2;
	unsigned	 steps = 0;

	if (size < 2)
		return 0;
	memset(&r, 0, sizeof(r));
	r.proto = protos[data[0] % 4];
	r.conf.proto = r.proto;
	r.conf.require_tls = data[1] & 1;
	r.conf.client_tls = (data[1] & 2) ? CLIENT_TLS_IMPLICIT : CLIENT_TLS_STARTTLS;
	r.client_tls = r.conf.client_tls == CLIENT_TLS_IMPLICIT;
	r.conf.proto_conf = proto_conf(r.proto, (data[1] & 8) != 0);
	r.bup = (data[1] & 4) && r.proto->backend_starttls != NULL;
	r.room = (data[1] & 16) ? 256 : SIZE_MAX / 2;	/* a client that does not read */
	if ((r.state = r.proto->session_new(&r.conf)) == NULL)
		return 0;
	r.cin = evbuffer_new();
	r.bin = evbuffer_new();
	r.to_client = evbuffer_new();
	r.to_backend = evbuffer_new();
	if (r.bup && call(&r, r.proto->backend_starttls, r.bin) != PROTO_CONTINUE)
		r.bup = false;
	if (r.client_tls && r.proto->tls_ready != NULL)
		verdict(&r, call(&r, r.proto->tls_ready, NULL));

	while (!r.over && off + 2 <= size && steps++ < 256) {
		uint8_t		 op = data[off] % 3;
		size_t		 n = data[off + 1];
		bool		 cleartext = !r.client_tls;

		off += 2;
		if (n > size - off)
			n = size - off;
		if (op == 0) {
			evbuffer_add(r.cin, data + off, n);
			if (!r.held && evbuffer_get_length(r.cin) > 0)
				verdict(&r, call(&r, r.proto->client_input, r.cin));
		} else if (op == 1 && r.bup) {
			enum proto_verdict v;

			evbuffer_add(r.bin, data + off, n);
			v = call(&r, r.proto->backend_starttls, r.bin);
			if (v == PROTO_CLOSE)
				r.over = true;
			else if (v == PROTO_UPGRADE) {
				r.bup = false;	/* up: the module's kept bytes come next */
				verdict(&r, call(&r, r.proto->backend_input, r.bin));
			}
		} else if (op == 1) {
			evbuffer_add(r.bin, data + off, n);
			verdict(&r, call(&r, r.proto->backend_input, r.bin));
			/* a backend answer may release held client input */
			if (!r.over && !r.held && evbuffer_get_length(r.cin) > 0)
				verdict(&r, call(&r, r.proto->client_input, r.cin));
		} else if (r.proto->backend_ready != NULL && !r.bup) {
			verdict(&r, call(&r, r.proto->backend_ready, NULL));
		}
		off += n;
		if (r.proto == &proto_smtp && r.conf.require_tls && cleartext)
			check_smtp_cleartext(r.to_backend);
		evbuffer_drain(r.to_client, evbuffer_get_length(r.to_client));
		evbuffer_drain(r.to_backend, evbuffer_get_length(r.to_backend));
		/* the client has read its replies: the session resumes the module */
		if (!r.over && r.stopped && !r.held && evbuffer_get_length(r.cin) > 0)
			verdict(&r, call(&r, r.proto->client_input, r.cin));
	}
	r.proto->session_free(r.state);
	evbuffer_free(r.cin);
	evbuffer_free(r.bin);
	evbuffer_free(r.to_client);
	evbuffer_free(r.to_backend);
	return 0;
}
