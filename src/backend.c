/*
 * Reaching the backend: see backend.h.  The states go IDLE, RESOLVING
 * (a name), CONNECTING, then STARTTLS (the owner's dialogue) and
 * HANDSHAKE as the settings ask, and end in UP or FAILED; each failure
 * says why in words, for the session's log line.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "tlsctx.h"

static void	backend_side_cb(struct side *, enum side_event, void *);

void
backend_init(struct backend *b, backend_cb cb, void *arg)
{
	memset(b, 0, sizeof(*b));
	b->cb = cb;
	b->arg = arg;
	snprintf(b->name, sizeof(b->name), "-");
	side_init(&b->side, backend_side_cb, b);
}

static void
backend_fail(struct backend *b, enum session_end end, const char *why)
{
	backend_cancel(b);
	b->cb(b, BACKEND_RESULT_FAILED, end, why, b->arg);
}

static void
backend_up(struct backend *b)
{
	b->state = BACKEND_UP;
	b->cb(b, BACKEND_RESULT_UP, END_INTERNAL, NULL, b->arg);
}

static void
backend_start(struct backend *b, struct event_base *base, const struct sockaddr *sa,
    socklen_t len)
{
	char	 why[BACKEND_NAME_MAX + 96];

	addr_format(sa, len, b->name, sizeof(b->name));
	b->state = BACKEND_CONNECTING;
	if (side_connect(&b->side, base, sa, len) == -1) {
		if (errno == ENOMEM || errno == ENOBUFS) {
			backend_fail(b, END_INTERNAL, "cannot allocate the backend connection");
			return;
		}
		snprintf(why, sizeof(why), "cannot connect to %s: %s", b->name, strerror(errno));
		backend_fail(b, END_BACKEND_UNREACHABLE, why);
	}
}

static void
backend_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
	struct backend	*b = arg;
	char		 why[ADDR_HOST_MAX + 96], host[ADDR_HOST_MAX + 1];

	if (err == EVUTIL_EAI_CANCEL)
		return;
	b->dns = NULL;
	if (err != 0 || res == NULL) {
		snprintf(why, sizeof(why), "cannot resolve %s: %s",
		    log_escape(b->addr->host, false, host, sizeof(host)), evutil_gai_strerror(err));
		backend_fail(b, END_BACKEND_UNREACHABLE, why);
		return;
	}
	backend_start(b, b->base, res->ai_addr, res->ai_addrlen);
	evutil_freeaddrinfo(res);
}

void
backend_connect(struct backend *b, struct event_base *base, struct evdns_base *dns,
    const struct backend_conf *conf, struct tls_client *tls, const struct addr *addr,
    const struct backend_client *client)
{
	struct evutil_addrinfo		 hints;
	struct evdns_getaddrinfo_request *req;
	char				 port[8], host[ADDR_HOST_MAX + 1];

	if (b->state != BACKEND_IDLE)
		return;
	b->conf = conf;
	b->tls = tls;
	b->addr = addr;
	b->base = base;
	if (client != NULL)
		b->client = *client;
	if (addr->kind != ADDR_NAME) {
		backend_start(b, base, (const struct sockaddr *)&addr->ss, addr->sslen);
		return;
	}
	/* a CONNECT target is the client's choice: escaped for the log */
	snprintf(b->name, sizeof(b->name), "%s:%u",
	    log_escape(addr->host, false, host, sizeof(host)), addr->port);
	snprintf(port, sizeof(port), "%u", addr->port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	b->state = BACKEND_RESOLVING;
	/* may answer at once (from /etc/hosts), calling backend_resolved first */
	req = evdns_getaddrinfo(dns, addr->host, port, &hints, backend_resolved, b);
	if (req != NULL && b->state == BACKEND_RESOLVING)
		b->dns = req;
}

void
backend_cancel(struct backend *b)
{
	struct evdns_getaddrinfo_request *req = b->dns;

	if (req != NULL) {
		b->dns = NULL;
		evdns_getaddrinfo_cancel(req);
	}
	/*
	 * Given up for good: a connect that completes later must not deliver
	 * the client's bytes after the client was told it failed.
	 */
	if (b->state != BACKEND_UP) {
		b->state = BACKEND_FAILED;
		side_quiesce(&b->side);
	}
}

void
backend_free(struct backend *b)
{
	backend_cancel(b);
	side_free(&b->side);
}

/*
 * The PROXY protocol header, before any other byte, TLS included: the
 * client's address and, for v2, how its side reached TLS.
 */
static int
backend_proxy_header(struct backend *b)
{
	uint8_t		 buf[PROXY_V2_MAX];
	ssize_t		 n;

	if (b->conf->proxy_protocol == PROXY_PROTO_V1)
		n = proxy_build_v1(b->client.src, b->client.dst, buf, sizeof(buf));
	else
		n = proxy_build_v2(b->client.src, b->client.dst, &b->client.tls, buf, sizeof(buf));
	if (n < 0 || evbuffer_add(side_output(&b->side), buf, (size_t)n) == -1) {
		backend_fail(b, END_INTERNAL, "cannot write the PROXY protocol header");
		return -1;
	}
	return 0;
}

static void
backend_tls_start(struct backend *b)
{
	SSL	*ssl;

	ssl = tls_client_ssl(b->tls, b->addr->kind == ADDR_UNIX ? NULL : b->addr->host);
	if (ssl == NULL) {
		backend_fail(b, END_INTERNAL, "cannot create a TLS session for the backend");
		return;
	}
	b->state = BACKEND_HANDSHAKE;
	/* reading stays off until the backend is verified; the handshake runs below */
	if (side_start_tls(&b->side, ssl, false) == -1)
		backend_fail(b, END_INTERNAL, "cannot create a TLS filter for the backend");
}

void
backend_dialogue_done(struct backend *b)
{
	if (b->state != BACKEND_STARTTLS)
		return;
	backend_tls_start(b);
}

static void
backend_connected(struct backend *b)
{
	if (b->conf->proxy_protocol != PROXY_PROTO_NONE && backend_proxy_header(b) == -1)
		return;
	switch (b->conf->tls) {
	case BACKEND_TLS_STARTTLS:
		b->state = BACKEND_STARTTLS;
		side_set_reading(&b->side, true);
		b->cb(b, BACKEND_RESULT_DIALOGUE, END_INTERNAL, NULL, b->arg);
		break;
	case BACKEND_TLS_IMPLICIT:
		backend_tls_start(b);
		break;
	case BACKEND_TLS_NONE:
		backend_up(b);
		break;
	}
}

static void
backend_verified(struct backend *b)
{
	char	 why[BACKEND_NAME_MAX + 320], pinwhy[256];

	if (tls_client_check_pins(b->tls, b->side.ssl, pinwhy, sizeof(pinwhy)) == -1) {
		snprintf(why, sizeof(why), "backend %s refused: %s", b->name, pinwhy);
		backend_fail(b, END_BACKEND_VERIFY_FAILED, why);
		return;
	}
	backend_up(b);
}

static void
backend_tls_failed(struct backend *b)
{
	long	 v = SSL_get_verify_result(b->side.ssl);
	char	 why[BACKEND_NAME_MAX + 320], words[256];

	if (v != X509_V_OK) {
		snprintf(why, sizeof(why), "backend %s certificate rejected: %s",
		    b->name, X509_verify_cert_error_string(v));
		backend_fail(b, END_BACKEND_VERIFY_FAILED, why);
		return;
	}
	side_error_words(&b->side, "backend", true, words, sizeof(words));
	snprintf(why, sizeof(why), "TLS with backend %s failed: %s", b->name, words);
	backend_fail(b, END_BACKEND_TLS_FAILED, why);
}

/* Events on the connection until it is up; the owner's from then on. */
static void
backend_side_cb(struct side *sd, enum side_event ev, void *arg)
{
	struct backend	*b = arg;
	char		 why[BACKEND_NAME_MAX + 96];
	const char	*err = strerror(sd->sys_errno ? sd->sys_errno : EIO);

	switch (ev) {
	case SIDE_CONNECTED:
		if (b->state == BACKEND_CONNECTING)
			backend_connected(b);
		return;
	case SIDE_TLS_READY:
		if (b->state == BACKEND_HANDSHAKE)
			backend_verified(b);
		return;
	case SIDE_READ:
		if (b->state == BACKEND_STARTTLS)
			b->cb(b, BACKEND_RESULT_DIALOGUE, END_INTERNAL, NULL, b->arg);
		return;		/* otherwise kept for the owner, once up */
	case SIDE_DRAINED:
		return;
	case SIDE_EOF:
	case SIDE_ERROR:
		break;
	}
	switch (b->state) {
	case BACKEND_HANDSHAKE:
		backend_tls_failed(b);
		break;
	case BACKEND_STARTTLS:
		snprintf(why, sizeof(why), "STARTTLS with the backend %s: %s", b->name,
		    ev == SIDE_EOF ? "it closed the connection" : err);
		backend_fail(b, END_BACKEND_TLS_FAILED, why);
		break;
	default:
		snprintf(why, sizeof(why), "cannot connect to %s: %s", b->name,
		    ev == SIDE_EOF ? "connection closed" : err);
		backend_fail(b, END_BACKEND_UNREACHABLE, why);
		break;
	}
}
