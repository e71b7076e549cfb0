/*
 * http: CONNECT (RFC 9110 section 9.3.6) and Upgrade: TLS/1.0 (RFC 2817).
 *
 * CONNECT host:port is allowed only when it matches http.connect_allow;
 * nothing matches by default, so the proxy is never an open proxy.  An
 * allowed CONNECT reaches its backend first (backend.address if set, else
 * the CONNECT target, resolved without blocking), so that a backend that
 * cannot be reached gets 502 (or 504) rather than a tunnel to nowhere;
 * then "200 Connection established", and the proxy is the TLS server
 * inside the tunnel.  A request whose Upgrade lists a TLS/1.x protocol
 * (TLS/1.0 in RFC 2817; CUPS sends "TLS/1.2,TLS/1.1,TLS/1.0") and whose
 * Connection lists upgrade gets 101, TLS, and is relayed to the backend
 * inside TLS without its hop-by-hop fields.  Any other request gets 426
 * under require_tls, and is relayed otherwise.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http_parse.h"
#include "proto.h"

/* The listener's http = { ... } block. */
struct http_conf {
	char		**connect_allow;
	size_t		 nconnect_allow;
};

static const char *const http_keys[] = { "connect_allow", NULL };

struct http {
	const struct listener_conf *conf;
	const struct http_conf	*hc;
	struct addr		 target;	/* of the CONNECT */
	struct evbuffer		*upgraded;	/* the request that asked for TLS */
	bool			 tunnel;	/* a CONNECT is being set up */
};

static void *
http_new(const struct listener_conf *conf)
{
	struct http	*m = calloc(1, sizeof(*m));

	if (m != NULL) {
		m->conf = conf;
		m->hc = conf->proto_conf;
	}
	return m;
}

static void
http_free(void *arg)
{
	struct http	*m = arg;

	if (m->upgraded != NULL)
		evbuffer_free(m->upgraded);
	free(m);
}

/* A complete response; with a body, the connection is then closed. */
static void
http_respond(struct evbuffer *out, int status, const char *extra, const char *body)
{
	if (body == NULL) {
		evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n%s\r\n", status,
		    http_reason(status), extra ? extra : "");
		return;
	}
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
	    http_reason(status), extra ? extra : "", strlen(body), body);
}

static enum proto_verdict
http_refuse(struct proto_io *io, int status, const char *extra, const char *body,
    const char *reason)
{
	evbuffer_drain(io->in, evbuffer_get_length(io->in));
	http_respond(io->to_client, status, extra, body);
	io->refused++;
	io->end = END_PROTOCOL_ERROR;
	io->reason = reason;
	return PROTO_CLOSE;
}

static enum proto_verdict
http_connect(struct http *m, struct proto_io *io, const struct http_request *r)
{
	if (r->has_body)
		return http_refuse(io, 400, NULL, "A CONNECT request has no body.\n",
		    "a CONNECT request with a body");
	if (http_authority_parse(r->target, r->target_len, &m->target) == -1)
		return http_refuse(io, 400, NULL, "CONNECT needs host:port.\n",
		    "a CONNECT target that is not host:port");
	if (!http_connect_allowed(m->hc->connect_allow, m->hc->nconnect_allow,
	    &m->target))
		return http_refuse(io, 403, NULL, "This target is not allowed.\n",
		    "a CONNECT target that http.connect_allow does not allow");
	if (m->conf->client_tls != CLIENT_TLS_STARTTLS)
		return http_refuse(io, 403, NULL, "CONNECT is not offered here.\n",
		    "a CONNECT on a listener without client_tls = \"starttls\"");
	/*
	 * Only the head is consumed: whatever follows it before the TLS
	 * handshake is dropped as injected at the upgrade.
	 */
	evbuffer_drain(io->in, r->head_len);
	m->tunnel = true;
	io->connect_to = m->conf->backend.has_address ? NULL : &m->target;
	return PROTO_CONNECT;
}

static enum proto_verdict
http_client_input(struct proto_io *io)
{
	struct http		*m = io->state;
	struct http_request	 r;
	size_t			 len = evbuffer_get_length(io->in);
	const char		*p;
	int			 status = 0;

	if (io->client_tls) {
		/* inside TLS, until the backend is up: it is all for the backend */
		evbuffer_add_buffer(io->to_backend, io->in);
		return PROTO_CONTINUE;
	}
	if (m->tunnel)
		return PROTO_HOLD;
	p = (const char *)evbuffer_pullup(io->in,
	    (ssize_t)(len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX));
	switch (http_parse_request(p, len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX, &r, &status)) {
	case PARSE_NEED_MORE:
		if (len >= HTTP_HEAD_MAX)
			return http_refuse(io, 431, NULL, "The request head is over 16 KiB.\n",
			    "a request head larger than 16 KiB");
		return PROTO_CONTINUE;
	case PARSE_OK:
		break;
	default:
		return http_refuse(io, status, NULL, "The request could not be read.\n",
		    status == 414 ? "a request line longer than 8 KiB" :
		    status == 431 ? "a request head larger than 16 KiB or with too many fields" :
		    status == 505 ? "a request in an HTTP version other than 1.x" :
		    "a malformed HTTP request");
	}

	if (http_is_connect(&r))
		return http_connect(m, io, &r);
	if (r.upgrade_tls && m->conf->client_tls == CLIENT_TLS_STARTTLS) {
		char	 head[HTTP_HEAD_MAX], extra[64 + HTTP_TLS_TOKEN_MAX];
		size_t	 hlen;

		if (r.has_body)
			return http_refuse(io, 400, NULL,
			    "A request with a body cannot be upgraded.\n",
			    "an Upgrade: TLS request with a body");
		/*
		 * Relayed inside TLS (RFC 2817 section 3.3), but without
		 * Connection, Upgrade and what Connection names: they were
		 * for this hop, and a backend that knows RFC 2817 would
		 * answer a second 101 inside TLS.
		 */
		if (http_strip_hop_by_hop(p, r.head_len, head, sizeof(head), &hlen) != PARSE_OK)
			return http_refuse(io, 400, NULL,
			    "The Connection field could not be read.\n",
			    "an Upgrade: TLS request whose Connection field is not a list of tokens");
		if ((m->upgraded == NULL && (m->upgraded = evbuffer_new()) == NULL) ||
		    evbuffer_add(m->upgraded, head, hlen) == -1)
			return http_refuse(io, 503, NULL, "Out of memory.\n", "out of memory");
		evbuffer_drain(io->in, r.head_len);
		/* the protocol the client offered first (RFC 9110 section 7.8) */
		snprintf(extra, sizeof(extra), "Upgrade: %s, HTTP/1.1\r\nConnection: Upgrade\r\n",
		    r.tls_token);
		http_respond(io->to_client, 101, extra, NULL);
		return PROTO_UPGRADE;
	}
	if (!m->conf->require_tls || m->conf->client_tls != CLIENT_TLS_STARTTLS) {
		if (!m->conf->backend.has_address)
			return http_refuse(io, 502, NULL, "No backend for this request.\n",
			    "a request other than CONNECT on a listener without backend.address");
		/* reach the backend first, so that failing to gets a 502 */
		io->connect_to = NULL;
		return PROTO_CONNECT;
	}
	return http_refuse(io, 426, "Upgrade: TLS/1.0, HTTP/1.1\r\nConnection: Upgrade\r\n",
	    "This service requires TLS: use CONNECT or Upgrade: TLS/1.0.\n",
	    "a request without TLS under require_tls");
}

static enum proto_verdict
http_backend_ready(struct proto_io *io)
{
	struct http	*m = io->state;

	if (m->tunnel && !io->client_tls) {
		http_respond(io->to_client, 200, NULL, NULL);
		return PROTO_UPGRADE;
	}
	return PROTO_TRANSPARENT;
}

static enum proto_verdict
http_backend_input(struct proto_io *io)
{
	/* only reached in the short time before the module turns transparent */
	evbuffer_add_buffer(io->to_client, io->in);
	return PROTO_CONTINUE;
}

static enum proto_verdict
http_tls_ready(struct proto_io *io)
{
	struct http	*m = io->state;

	if (m->tunnel)
		return PROTO_TRANSPARENT;	/* a CONNECT tunnel: the backend is up */
	if (m->upgraded != NULL)
		evbuffer_add_buffer(io->to_backend, m->upgraded);
	return PROTO_CONTINUE;	/* transparent once the backend is up (or 502) */
}

static void
http_backend_failed(struct proto_io *io)
{
	if (io->timed_out)
		http_respond(io->to_client, 504, NULL, "The backend did not answer in time.\n");
	else
		http_respond(io->to_client, 502, NULL, "The backend cannot be reached.\n");
}

static void
http_refuse_client(struct evbuffer *to_client, enum proto_refusal r)
{
	if (r == PROTO_REFUSAL_DENIED)
		http_respond(to_client, 403, NULL, "Access denied.\n");
	else
		http_respond(to_client, 503, NULL, r == PROTO_REFUSAL_CLIENT_LIMIT ?
		    "Too many connections from your address, try again later.\n" :
		    "Too many connections, try again later.\n");
}

static void
http_conf_free(void *arg)
{
	struct http_conf	*h = arg;

	if (h == NULL)
		return;
	for (size_t i = 0; i < h->nconnect_allow; i++)
		free(h->connect_allow[i]);
	free(h->connect_allow);
	free(h);
}

static bool
connect_rule_valid(const char *rule)
{
	struct addr	 a;
	const char	*why;

	if (strncmp(rule, "*.", 2) == 0)
		rule += 2;
	return addr_parse(rule, ADDR_ALLOW_NAME, &a, &why) == 0;
}

/* http = { connect_allow = [ "host:port", "*.domain:port" ]; } */
static void *
http_conf_parse(struct cfg_walk *w, const config_setting_t *g, const char *path)
{
	struct http_conf	*h = cfg_calloc(w, 1, sizeof(*h));
	const char		**rules;
	const config_setting_t	**where;
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX];
	size_t			 n;

	if (h == NULL || g == NULL)
		return h;
	cfg_check_members(w, g, path, http_keys);
	if (cfg_get_string_list(w, g, path, "connect_allow", &rules, &where, &n) != 1)
		return h;
	cfg_child_path(p, sizeof(p), path, "connect_allow");
	if ((h->connect_allow = cfg_calloc(w, n, sizeof(*h->connect_allow))) == NULL)
		n = 0;
	for (size_t i = 0; i < n; i++) {
		if (!connect_rule_valid(rules[i])) {
			cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
			cfg_problem(w, where[i], ep,
			    "\"%s\" is not a rule (expected host:port, [v6]:port or *.domain:port)",
			    rules[i]);
			continue;
		}
		if ((h->connect_allow[h->nconnect_allow] = cfg_strdup(w, rules[i])) == NULL)
			break;
		h->nconnect_allow++;
	}
	free(rules);
	free(where);
	return h;
}

/*
 * An http listener needs somewhere to send requests: backend.address, or
 * the targets of CONNECT, which only a STARTTLS listener accepts.
 */
static void
http_conf_check(struct cfg_walk *w, const config_setting_t *g, const char *path,
    const struct listener_conf *lc)
{
	const config_setting_t	*b = config_setting_get_member(g, "backend");
	const config_setting_t	*hg = config_setting_get_member(g, "http");
	const struct http_conf	*h = lc->proto_conf;

	if (lc->backend.has_address || (b != NULL && config_setting_get_member(b, "address")))
		return;		/* has one, or a bad one already reported */
	if (config_setting_get_member(g, "routes") != NULL)
		return;		/* backends by SNI (config.c checks the listener) */
	if (lc->client_tls != CLIENT_TLS_STARTTLS)
		cfg_problem(w, g, path, "an http listener without client_tls = \"starttls\" (so without CONNECT) needs backend.address");
	else if ((h == NULL || h->nconnect_allow == 0) &&
	    (hg == NULL || config_setting_get_member(hg, "connect_allow") == NULL))
		cfg_problem(w, g, path, "an http listener needs backend.address, http.connect_allow or both");
}

const struct proto proto_http = {
	.name = "http",
	.default_client_tls = CLIENT_TLS_STARTTLS,
	.default_require_tls = true,
	.has_upgrade = true,
	.connect_early = false,
	.backend_before_upgrade = "a CONNECT is answered once its backend is connected, before the upgrade",
	.keep_backend_at_upgrade = true,
	.backend_optional = true,
	.block = "http",
	.block_keys = http_keys,
	.conf_parse = http_conf_parse,
	.conf_free = http_conf_free,
	.conf_check = http_conf_check,
	.session_new = http_new,
	.session_free = http_free,
	.client_input = http_client_input,
	.backend_input = http_backend_input,
	.tls_ready = http_tls_ready,
	.backend_ready = http_backend_ready,
	.backend_failed = http_backend_failed,
	.refuse = http_refuse_client,
};
