/*
 * Reaching the backend: a name resolved with evdns (never blocking the
 * loop), a non-blocking connect, and for tls = "implicit" a TLS filter
 * over the connected socket, verified against the CA, the host name and
 * the pins before the backend sees a byte of the client's data.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "log.h"
#include "proxy_proto.h"
#include "server.h"
#include "session.h"
#include "tlsctx.h"

static void	backend_eventcb(struct bufferevent *, short, void *);

/* backend.tls = "starttls": the backend's replies to the module's dialogue. */
static void
backend_starttls_readcb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	(void)bev;
	if (s->dead || s->bstate != BACKEND_STARTTLS)
		return;
	s->last_ms = now_ms();
	session_backend_starttls(s);
}

static void
backend_start(struct session *s, const struct sockaddr *sa, socklen_t len)
{
	struct bufferevent	*sock;
	char			 why[128];

	addr_format(sa, len, s->backend_addr, sizeof(s->backend_addr));
	if ((sock = bufferevent_socket_new(s->w->base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		session_backend_failed(s, "internal", "cannot allocate the backend connection");
		return;
	}
	s->backend.sock = s->backend.bev = sock;
	relay_attach(&s->backend);
	bufferevent_setcb(sock, session_backend_readcb, NULL, backend_eventcb, s);
	s->bstate = BACKEND_CONNECTING;
	log_debug("session %llu: connecting to %s", (unsigned long long)s->id, s->backend_addr);
	if (bufferevent_socket_connect(sock, sa, (int)len) == -1) {
		snprintf(why, sizeof(why), "cannot connect to %s: %s", s->backend_addr,
		    strerror(errno));
		session_backend_failed(s, "backend-unreachable", why);
	}
}

static void
backend_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
	struct session	*s = arg;
	char		 why[ADDR_HOST_MAX + 96];

	if (err == EVUTIL_EAI_CANCEL)
		return;
	s->dns = NULL;
	if (s->dead) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	if (err != 0 || res == NULL) {
		snprintf(why, sizeof(why), "cannot resolve %s: %s",
		    s->target ? s->target->host : s->lc->backend.address.host,
		    evutil_gai_strerror(err));
		session_backend_failed(s, "backend-unreachable", why);
		return;
	}
	backend_start(s, res->ai_addr, res->ai_addrlen);
	evutil_freeaddrinfo(res);
}

void
backend_connect(struct session *s)
{
	const struct addr		*a = s->target ? s->target : &s->lc->backend.address;
	struct evutil_addrinfo		 hints;
	struct evdns_getaddrinfo_request *req;
	char				 port[8], host[ADDR_HOST_MAX + 1];

	if (s->bstate != BACKEND_IDLE)
		return;
	if (s->target == NULL && !s->lc->backend.has_address) {
		session_backend_failed(s, "backend-unreachable", "no backend for this request (backend.address is not set)");
		return;
	}
	s->connect_deadline = now_ms() + s->lc->timeouts.connect * 1000ULL;
	session_arm(s);
	if (a->kind != ADDR_NAME) {
		backend_start(s, (const struct sockaddr *)&a->ss, a->sslen);
		return;
	}
	/* a CONNECT target is the client's choice: escaped for the log */
	log_escape(a->host, false, host, sizeof(host));
	snprintf(s->backend_addr, sizeof(s->backend_addr), "%s:%u", host, a->port);
	snprintf(port, sizeof(port), "%u", a->port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	s->bstate = BACKEND_RESOLVING;
	/* may answer at once (from /etc/hosts), calling backend_resolved first */
	req = evdns_getaddrinfo(s->target != NULL ? s->w->dns_exact : s->w->dns,
	    a->host, port, &hints, backend_resolved, s);
	if (req != NULL && s->bstate == BACKEND_RESOLVING && !s->dead)
		s->dns = req;
}

void
backend_cancel(struct session *s)
{
	struct evdns_getaddrinfo_request *req = s->dns;

	if (req != NULL) {
		s->dns = NULL;
		evdns_getaddrinfo_cancel(req);
	}
}

void
backend_tls_start(struct session *s)
{
	const struct backend_conf	*b = &s->lc->backend;
	struct bufferevent		*f;
	SSL				*ssl;

	const struct addr		*a = s->target ? s->target : &b->address;

	ssl = tls_client_ssl(s->lc->tls_backend, a->kind == ADDR_UNIX ? NULL : a->host);
	if (ssl == NULL) {
		session_backend_failed(s, "internal", "cannot create a TLS session for the backend");
		return;
	}
	f = bufferevent_openssl_filter_new(s->w->base, s->backend.sock, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (f == NULL) {
		s->backend.sock = s->backend.bev = NULL;
		session_backend_failed(s, "internal", "cannot create a TLS filter for the backend");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	s->backend.bev = f;
	s->backend.ssl = ssl;
	s->bstate = BACKEND_HANDSHAKE;
	bufferevent_setcb(f, session_backend_readcb, NULL, backend_eventcb, s);
	/* reading stays off until the backend is verified; the handshake runs below us */
	bufferevent_enable(f, EV_WRITE);
	/*
	 * The filter sends its ClientHello from the socket's write callback,
	 * which a connected socket with nothing to write never calls: kick it.
	 */
	bufferevent_trigger(s->backend.sock, EV_WRITE,
	    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	if (relay_readahead_start(&s->backend) == -1)
		relay_readahead_stop(&s->backend);
}

static void
backend_tls_failed(struct session *s)
{
	long	 v = SSL_get_verify_result(s->backend.ssl);
	char	 why[320], words[256];

	if (v != X509_V_OK) {
		snprintf(why, sizeof(why), "backend %s certificate rejected: %s",
		    s->backend_addr, X509_verify_cert_error_string(v));
		session_backend_failed(s, "backend-verify-failed", why);
		return;
	}
	relay_error_words(&s->backend, "backend", true, words, sizeof(words));
	snprintf(why, sizeof(why), "TLS with backend %s failed: %s", s->backend_addr, words);
	session_backend_failed(s, "backend-tls-failed", why);
}

/*
 * The PROXY protocol header, before any other byte, TLS included: the
 * client's address and, for v2, how its side reached TLS.
 */
static int
backend_proxy_header(struct session *s)
{
	const struct session_addrs	*a = s->addrs;
	uint8_t				 buf[PROXY_V2_MAX];
	struct proxy_tls_info		 tls = {
		.tls = s->client.tls_up,
		.version = s->client.tls_up ? tls_version_name(s->client.ssl) : NULL,
		.cipher = s->client.tls_up ? tls_cipher_name(s->client.ssl) : NULL,
		.sni = s->client.tls_up && strcmp(tls_sni_name(s->client.ssl), "-") != 0 ?
		    tls_sni_name(s->client.ssl) : NULL,
		.upgrade = client_tls_name(s->lc->client_tls),
	};
	const struct sockaddr		*src = a->srclen ? (const struct sockaddr *)&a->src : NULL;
	const struct sockaddr		*dst = a->dstlen ? (const struct sockaddr *)&a->dst : NULL;
	ssize_t				 n;

	if (s->lc->backend.proxy_protocol == PROXY_PROTO_V1)
		n = proxy_build_v1(src, dst, buf, sizeof(buf));
	else
		n = proxy_build_v2(src, dst, &tls, buf, sizeof(buf));
	if (n < 0) {
		session_backend_failed(s, "internal", "cannot write the PROXY protocol header");
		return -1;
	}
	evbuffer_add(bufferevent_get_output(s->backend.sock), buf, (size_t)n);
	return 0;
}

static void
backend_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;
	char		 why[320];

	if (s->dead || s->bstate == BACKEND_FAILED)
		return;
	if (s->bstate == BACKEND_UP) {
		session_backend_event(s, what);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		if (s->bstate == BACKEND_CONNECTING) {
			if (bufferevent_getfd(s->backend.sock) >= 0) {
				int one = 1;

				(void)setsockopt(bufferevent_getfd(s->backend.sock),
				    IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			}
			if (s->lc->backend.proxy_protocol != PROXY_PROTO_NONE &&
			    backend_proxy_header(s) == -1)
				return;
			if (s->lc->backend.tls == BACKEND_TLS_STARTTLS) {
				s->bstate = BACKEND_STARTTLS;
				bufferevent_setcb(s->backend.sock, backend_starttls_readcb, NULL,
				    backend_eventcb, s);
				session_backend_starttls(s);
				return;
			}
			if (s->lc->backend.tls == BACKEND_TLS_IMPLICIT) {
				backend_tls_start(s);
				return;
			}
		} else if (s->bstate == BACKEND_HANDSHAKE) {
			char pinwhy[256];

			if (tls_client_check_pins(s->lc->tls_backend, s->backend.ssl,
			    pinwhy, sizeof(pinwhy)) == -1) {
				snprintf(why, sizeof(why), "backend %s refused: %s",
				    s->backend_addr, pinwhy);
				session_backend_failed(s, "backend-verify-failed", why);
				return;
			}
			s->backend.tls_up = true;
			log_debug("session %llu: backend TLS %s %s", (unsigned long long)s->id,
			    tls_version_name(s->backend.ssl), tls_cipher_name(s->backend.ssl));
		}
		session_backend_up(s);
		return;
	}
	if (s->bstate == BACKEND_HANDSHAKE) {
		backend_tls_failed(s);
		return;
	}
	if (s->bstate == BACKEND_STARTTLS) {
		snprintf(why, sizeof(why), "STARTTLS with the backend %s: %s", s->backend_addr,
		    (what & BEV_EVENT_EOF) ? "it closed the connection" :
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		session_backend_failed(s, "backend-tls-failed", why);
		return;
	}
	snprintf(why, sizeof(why), "cannot connect to %s: %s", s->backend_addr,
	    (what & BEV_EVENT_EOF) ? "connection closed" :
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	session_backend_failed(s, "backend-unreachable", why);
}
