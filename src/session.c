/*
 * Sessions: accept, the protocol module's verdicts, the client-side TLS
 * upgrade, timeouts, and the single close path with its log line.
 *
 * The order of an upgrade (RFC 3207 section 4.2, CVE-2011-0411):
 * the module answers the verb; reading stops on both sides; whatever the
 * client sent behind the verb, up to the first byte that can start a TLS
 * record, is discarded and counted; the answer is flushed; only then is
 * the client's socket bufferevent wrapped in a TLS filter, so that no
 * cleartext byte ever reaches the TLS layer or the backend after the verb.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>	/* ev_read: see side_set_reading() */
#include <event2/event.h>

#include <openssl/err.h>

#include "config.h"
#include "log.h"
#include "proto.h"
#include "proxy_proto.h"
#include "server.h"
#include "session.h"
#include "stats.h"
#include "tlsctx.h"

static void	session_tick(evutil_socket_t, short, void *);
static void	session_proxy_header(struct session *);
static void	session_client_readcb(struct bufferevent *, void *);
static void	session_client_eventcb(struct bufferevent *, short, void *);
static void	session_client_tls(struct session *);
static void	session_free(struct session *);
static void	session_parse(struct session *, struct side *);
static void	session_start(struct session *);

uint64_t
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
set_nodelay(int fd)
{
	int	 one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static const char *
state_name(enum session_state st)
{
	switch (st) {
	case SESSION_CLEARTEXT:	return "cleartext";
	case SESSION_PROXY_HEADER: return "proxy-header";
	case SESSION_UPGRADING:	return "upgrading";
	case SESSION_HANDSHAKE:	return "handshake";
	case SESSION_TLS:	return "tls";
	case SESSION_RELAY:	return "relay";
	case SESSION_CLOSING:	return "closing";
	}
	return "?";
}

static void
session_enter(struct session *s, enum session_state st)
{
	if (log_debug_enabled())
		log_debug("session %llu: %s -> %s", (unsigned long long)s->id,
		    state_name(s->state), state_name(st));
	s->state = st;
}

/*
 * The client's address as every log line shows it.  A PROXY header may
 * carry a unix path of any bytes: it is escaped once, here (Guarantee 4).
 */
static void
session_set_client_addr(struct session *s, const struct sockaddr *sa, socklen_t len)
{
	char	 raw[sizeof(s->client_addr)];

	addr_format(sa, len, raw, sizeof(raw));
	log_escape(raw, false, s->client_addr, sizeof(s->client_addr));
}

void
session_accept(struct worker *w, struct listen_sock *ls, int fd,
    const struct sockaddr *sa, socklen_t salen)
{
	const struct listener_conf	*lc = ls->lc;
	struct session			*s;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_warn("listener %s: cannot allocate a session", lc->name);
		close(fd);
		return;
	}
	s->magic = SESSION_MAGIC;
	s->id = atomic_fetch_add_explicit(&w->d->next_id, 1, memory_order_relaxed) + 1;
	s->w = w;
	s->cfg = config_ref(w->cfg);
	s->lc = lc;
	s->counters = &lc->stats->workers[w->index];
	s->proto = lc->proto;
	s->client.s = s;
	s->backend.s = s;
	s->upgraded = "none";
	s->start_ms = s->last_ms = now_ms();
	session_set_client_addr(s, sa, salen);
	snprintf(s->backend_addr, sizeof(s->backend_addr), "-");
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	w->nsessions++;
	atomic_fetch_add_explicit(&w->d->nsessions, 1, memory_order_relaxed);
	STAT_INC(s->counters, accepted);

	if (sa->sa_family != AF_UNIX)
		set_nodelay(fd);
	s->timer = event_new(w->base, -1, 0, session_tick, s);
	if (lc->client_tls == CLIENT_TLS_IMPLICIT && !lc->accept_proxy_protocol) {
		/*
		 * TLS from the first byte, with nothing to read before it:
		 * OpenSSL reads and writes the socket itself, whole records
		 * at a time, with no bufferevent between it and the socket
		 * (libevent 2.1 reads a socket bufferevent 4 KiB at a time).
		 */
		SSL *ssl = tls_server_ssl(lc->tls_server);

		s->client.sock = ssl == NULL ? NULL : bufferevent_openssl_socket_new(w->base, fd,
		    ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		/* on failure libevent has freed the SSL (BEV_OPT_CLOSE_ON_FREE) */
		if (s->client.sock != NULL) {
			s->client.ssl = ssl;
			bufferevent_openssl_set_allow_dirty_shutdown(s->client.sock, 1);
			bufferevent_enable(s->client.sock, EV_WRITE);
		}
	} else
		s->client.sock = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->client.sock == NULL)
		close(fd);
	s->client.bev = s->client.sock;	/* freed with the session from here on */
	if (s->timer == NULL || s->client.sock == NULL ||
	    (s->proto->session_new != NULL &&
	    (s->proto_state = s->proto->session_new(lc)) == NULL)) {
		session_close(s, "internal", "out of memory");
		return;
	}
	relay_attach(&s->client);
	bufferevent_setcb(s->client.sock, session_client_readcb, NULL,
	    session_client_eventcb, s);
	/* plaintext sockets are written directly; libevent only when they block */

	log_debug("session %llu: listener %s accepted %s in worker %u",
	    (unsigned long long)s->id, lc->name, s->client_addr, w->index);

	if (lc->accept_proxy_protocol || lc->backend.proxy_protocol != PROXY_PROTO_NONE) {
		if ((s->addrs = calloc(1, sizeof(*s->addrs))) == NULL) {
			session_close(s, "internal", "out of memory");
			return;
		}
		memcpy(&s->addrs->src, sa, salen);
		s->addrs->srclen = salen;
		s->addrs->dstlen = sizeof(s->addrs->dst);
		if (getsockname(fd, (struct sockaddr *)&s->addrs->dst, &s->addrs->dstlen) == -1)
			s->addrs->dstlen = 0;
	}
	if (lc->accept_proxy_protocol) {
		/* nothing else happens before the balancer's header */
		s->state = SESSION_PROXY_HEADER;
		s->phase_deadline = s->start_ms + lc->timeouts.handshake * 1000ULL;
		session_update_reading(s);
		session_arm(s);
		return;
	}
	session_start(s);
}

/* The session proper, once the client's address is known. */
static void
session_start(struct session *s)
{
	const struct listener_conf *lc = s->lc;

	s->phase_deadline = 0;
	switch (lc->client_tls) {
	case CLIENT_TLS_IMPLICIT:
		if (s->client.ssl == NULL) {
			session_client_tls(s);	/* after a PROXY header: a filter */
			break;
		}
		session_enter(s, SESSION_HANDSHAKE);
		s->phase_deadline = now_ms() + lc->timeouts.handshake * 1000ULL;
		break;
	case CLIENT_TLS_STARTTLS:
		s->state = SESSION_CLEARTEXT;
		if (lc->require_tls)
			s->phase_deadline = s->start_ms + lc->timeouts.cleartext * 1000ULL;
		break;
	case CLIENT_TLS_NONE:
		s->state = s->proto->client_input ? SESSION_CLEARTEXT : SESSION_RELAY;
		break;
	}
	if (s->dead)
		return;
	if (s->proto->connect_early || lc->client_tls == CLIENT_TLS_NONE)
		backend_connect(s);
	if (s->dead)
		return;
	session_update_reading(s);
	session_arm(s);
}

/* The module still parses: before TLS, or inside it until it is transparent. */
static bool
session_parsing(const struct session *s)
{
	return s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS;
}

static void
side_set_reading(struct side *sd, bool on)
{
	if (sd->bev == NULL || sd->reading == on)
		return;
	sd->reading = on;
	if (!on) {
		bufferevent_disable(sd->bev, EV_READ);
		return;
	}
	bufferevent_enable(sd->bev, EV_READ);
	if (sd->readahead != NULL)
		event_add(sd->readahead, NULL);
	/*
	 * libevent issue #690: a TLS bufferevent on a socket does not look
	 * again at records OpenSSL already holds when reading resumes; they
	 * would wait for the next byte from the network, which may never
	 * come.  Make it look.
	 */
	if (sd->ssl != NULL && sd->bev == sd->sock && SSL_has_pending(sd->ssl))
		event_active(&sd->bev->ev_read, EV_READ, 1);
}

/*
 * Which side may read now.  The one place that decides it, from the
 * state: the module's hold, the watermarks and EOFs.
 */
void
session_update_reading(struct session *s)
{
	struct side	*c = &s->client, *b = &s->backend;
	bool		 parsing = s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS;
	bool		 cr, br;

	if (s->dead)
		return;
	cr = (parsing || s->state == SESSION_RELAY || s->state == SESSION_HANDSHAKE) &&
	    !s->held && !b->full && !c->eof;
	/*
	 * While the module parses, what goes to the client may be the
	 * proxy's own replies to what the client sends: a client that does
	 * not read them is paused like any source whose destination is full.
	 */
	if (parsing && (c->full || s->unparsed))
		cr = false;
	if (s->state == SESSION_CLOSING || s->state == SESSION_PROXY_HEADER)
		cr = !c->eof;	/* lingering, or the PROXY header */
	if (cr && s->bstate != BACKEND_UP && s->state != SESSION_CLOSING) {
		size_t queued = s->pending ? evbuffer_get_length(s->pending) : 0;

		if (c->bev != NULL)
			queued += evbuffer_get_length(bufferevent_get_input(c->bev));
		if (queued >= s->lc->high_watermark)
			cr = false;
	}
	br = s->bstate == BACKEND_UP && (parsing || s->state == SESSION_RELAY) &&
	    !c->full && !b->eof;

	side_set_reading(c, cr);
	side_set_reading(b, br);
}

/* Run deferred work from the timer event, outside any I/O callback. */
void
session_schedule(struct session *s, unsigned work)
{
	s->work |= work;
	event_active(s->timer, EV_TIMEOUT, 1);
}

void
session_arm(struct session *s)
{
	uint64_t	 now = now_ms(), next, d;
	struct timeval	 tv;

	/*
	 * Work is scheduled: the timer event is active and runs at once, and
	 * arms itself when it is done.  Adding it with a timeout now would
	 * take it off libevent's active queue (event_add does that to an
	 * event made active with EV_TIMEOUT), and the work would wait for
	 * the next deadline.
	 */
	if (s->dead || s->work != 0)
		return;
	next = s->last_ms + s->lc->timeouts.idle * 1000ULL;
	if (s->phase_deadline != 0 && s->phase_deadline < next)
		next = s->phase_deadline;
	if (s->connect_deadline != 0 && s->connect_deadline < next)
		next = s->connect_deadline;
	d = next > now ? next - now : 0;
	/* a coarse clock: never sleep less than its resolution */
	if (d < 5)
		d = 5;
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
	event_add(s->timer, &tv);
}

static void
session_deadlines(struct session *s)
{
	const struct timeouts_conf	*t = &s->lc->timeouts;
	uint64_t			 now = now_ms();

	if (s->phase_deadline != 0 && now >= s->phase_deadline) {
		switch (s->state) {
		case SESSION_CLOSING:
			session_close(s, s->close_end, "%s%sthe client did not read the last reply",
			    s->close_reason ? s->close_reason : "",
			    s->close_reason ? "; " : "");
			return;
		case SESSION_PROXY_HEADER:
			session_close(s, "timeout-handshake",
			    "no PROXY protocol header within %u s", t->handshake);
			return;
		case SESSION_HANDSHAKE:
		case SESSION_UPGRADING:
			STAT_INC(s->counters, handshake_failures[HS_FAIL_TIMEOUT]);
			session_close(s, "timeout-handshake",
			    "no TLS handshake from the client within %u s", t->handshake);
			return;
		default:
			session_close(s, "timeout-cleartext",
			    "the client did not upgrade to TLS within %u s", t->cleartext);
			return;
		}
	}
	if (s->connect_deadline != 0 && now >= s->connect_deadline &&
	    s->bstate != BACKEND_UP) {
		char why[96];

		snprintf(why, sizeof(why), "no connection to the backend within %u s", t->connect);
		session_backend_failed(s, "backend-timeout", why);
		return;
	}
	if (now >= s->last_ms + t->idle * 1000ULL)
		session_close(s, "timeout-idle", "no data either way for %u s", t->idle);
}

static void
session_tick(evutil_socket_t fd, short what, void *arg)
{
	struct session	*s = arg;
	unsigned	 work = s->work;

	if (s->dead) {
		session_free(s);
		return;
	}
	s->work = 0;
	if ((work & SESSION_WORK_REWRITE) && s->client.ssl != NULL &&
	    s->client.bev == s->client.sock) {
		bufferevent_enable(s->client.bev, EV_WRITE);
		relay_try_shut(s, &s->client);
	}
	if (!s->dead && (work & SESSION_WORK_WRAP) && s->state == SESSION_UPGRADING &&
	    relay_pending(&s->client) == 0)
		session_client_tls(s);
	if (!s->dead && (work & SESSION_WORK_RESUME)) {
		for (struct side *sd = &s->client; sd != NULL;
		    sd = sd == &s->client ? &s->backend : NULL)
			if (sd->full && relay_pending(sd) <= s->lc->low_watermark)
				sd->full = false;
		session_update_reading(s);
		/* the client has read its replies: the rest of its input, now */
		if (!s->dead && s->unparsed && !s->held && !s->client.full &&
		    session_parsing(s))
			session_parse(s, &s->client);
	}
	if (!s->dead && (work & SESSION_WORK_SHUT)) {
		relay_try_shut(s, &s->client);
		if (!s->dead)
			relay_try_shut(s, &s->backend);
	}
	if (!s->dead && (work & SESSION_WORK_CLOSE) && s->state == SESSION_CLOSING &&
	    relay_pending(&s->client) == 0) {
		/*
		 * The last reply is out: half-close, and read (and drop) until
		 * the client closes too, so that its unread bytes do not turn
		 * our close into a reset that destroys the reply in flight.
		 */
		s->client.want_shut = true;
		relay_try_shut(s, &s->client);
	}
	if (!s->dead)
		session_deadlines(s);
	if (!s->dead)
		session_arm(s);
}

/* Move what a protocol module queued into the session's outputs. */
static void
session_flush_replies(struct session *s)
{
	struct worker	*w = s->w;
	size_t		 n;

	if ((n = evbuffer_get_length(w->to_client)) > 0) {
		if (s->client.bev != NULL) {
			s->bytes_out += n;
			evbuffer_add_buffer(bufferevent_get_output(s->client.bev), w->to_client);
			relay_output_added(&s->client);
		} else
			evbuffer_drain(w->to_client, n);
	}
	if ((n = evbuffer_get_length(w->to_backend)) > 0) {
		if (s->bstate == BACKEND_UP) {
			evbuffer_add_buffer(bufferevent_get_output(s->backend.bev), w->to_backend);
			relay_output_added(&s->backend);
		} else {
			if (s->pending == NULL && (s->pending = evbuffer_new()) == NULL) {
				evbuffer_drain(w->to_backend, n);
				session_close(s, "internal", "out of memory");
				return;
			}
			evbuffer_add_buffer(s->pending, w->to_backend);
		}
	}
}

static void
session_io(struct session *s, struct proto_io *io, struct evbuffer *in)
{
	size_t	 pending = relay_pending(&s->client);

	*io = (struct proto_io){
		.client_room = pending < s->lc->high_watermark ?
		    s->lc->high_watermark - pending : 0,
		.state = s->proto_state,
		.conf = s->lc,
		.client_tls = s->client.tls_up,
		.in = in,
		.to_client = s->w->to_client,
		.to_backend = s->w->to_backend,
	};
}

/*
 * Discard what the client sent behind the upgrade verb, up to the first
 * byte that may start a TLS record: a ClientHello sent at once is kept.
 */
static void
session_discard_injection(struct session *s)
{
	struct evbuffer	*in = bufferevent_get_input(s->client.sock);
	size_t		 len = evbuffer_get_length(in), keep_from;
	unsigned long	 suppressed;

	if (len == 0)
		return;
	keep_from = tls_record_start(evbuffer_pullup(in, -1), len);
	if (keep_from == 0)
		return;
	evbuffer_drain(in, keep_from);
	s->discarded += keep_from;
	s->bytes_in += keep_from;
	STAT_INC(s->counters, injections);
	STAT_ADD(s->counters, injected_bytes, keep_from);
	if (log_ratelimit_pass(&s->w->rl_inject, time(NULL), &suppressed))
		log_warnx("listener %s client %s: discarded %zu bytes sent after the upgrade verb (STARTTLS command injection attempt)%s",
		    s->lc->name, s->client_addr, keep_from,
		    suppressed ? " (and others not logged)" : "");
}

static void
session_upgrade(struct session *s)
{
	struct evbuffer	*bin;
	size_t		 n;

	if (s->lc->client_tls != CLIENT_TLS_STARTTLS || s->client.tls_up) {
		session_close(s, "internal", "protocol module asked for a second upgrade");
		return;
	}
	session_enter(s, SESSION_UPGRADING);
	session_update_reading(s);
	session_discard_injection(s);
	/*
	 * Backend bytes not yet delivered came before the upgrade: they must
	 * never reach the client inside TLS as if they came after it.
	 */
	if (s->bstate == BACKEND_UP && !s->proto->keep_backend_at_upgrade &&
	    (n = evbuffer_get_length(bin = bufferevent_get_input(s->backend.bev))) > 0) {
		evbuffer_drain(bin, n);
		log_warnx("listener %s client %s: discarded %zu bytes the backend %s sent before the upgrade",
		    s->lc->name, s->client_addr, n, s->backend_addr);
	}
	s->phase_deadline = now_ms() + s->lc->timeouts.handshake * 1000ULL;
	session_schedule(s, SESSION_WORK_WRAP);
}

/* Act on a module's verdict. */
static void
session_verdict(struct session *s, enum proto_verdict v, struct proto_io *io)
{
	if (io->dropped > 0)
		log_warnx("listener %s client %s: discarded %zu bytes from the backend %s that "
		    "answered nothing the client asked inside TLS",
		    s->lc->name, s->client_addr, io->dropped, s->backend_addr);
	session_flush_replies(s);
	if (s->dead)
		return;
	switch (v) {
	case PROTO_CONTINUE:
		s->held = false;
		break;
	case PROTO_HOLD:
		s->held = true;
		break;
	case PROTO_UPGRADE:
		s->held = false;
		session_upgrade(s);
		return;
	case PROTO_TRANSPARENT:
		s->held = false;
		session_enter(s, SESSION_RELAY);
		if (s->bstate == BACKEND_IDLE) {
			backend_connect(s);
			if (s->dead)
				return;
		}
		relay_forward(s, &s->client, &s->backend);
		if (s->bstate == BACKEND_UP)
			relay_forward(s, &s->backend, &s->client);
		break;
	case PROTO_CONNECT:
		s->held = true;
		s->target = io->connect_to;
		backend_connect(s);
		if (s->dead)
			return;
		break;
	case PROTO_CLOSE:
		session_finish(s, io->end ? io->end : "protocol-error", io->reason);
		return;
	}
	if (s->dead)
		return;
	if (!s->backend.full && s->bstate == BACKEND_UP &&
	    relay_pending(&s->backend) >= s->lc->high_watermark)
		s->backend.full = true;
	if (!s->client.full && relay_pending(&s->client) >= s->lc->high_watermark)
		s->client.full = true;
	session_update_reading(s);
}

/*
 * The client's input, to the module.  When the module stops because its
 * replies reached the client's watermark (proto_client_full) and the
 * direct write has already taken them, it goes on at once; otherwise the
 * client is paused with its input unparsed until it has read
 * (SESSION_WORK_RESUME).
 */
static enum proto_verdict
session_parse_client(struct session *s)
{
	struct evbuffer		*in = bufferevent_get_input(s->client.bev);
	struct proto_io		 io;
	enum proto_verdict	 v;
	size_t			 before;

	do {
		before = evbuffer_get_length(in);
		session_io(s, &io, in);
		v = s->proto->client_input(&io);
		s->bytes_in += before - evbuffer_get_length(in);
		s->unparsed = io.stopped && v == PROTO_CONTINUE;
		session_verdict(s, v, &io);
	} while (!s->dead && s->unparsed && !s->client.full && session_parsing(s) &&
	    evbuffer_get_length(in) > 0);
	return v;
}

/* Hand the buffered input of one side to the protocol module. */
static void
session_parse(struct session *s, struct side *from)
{
	struct proto_io		 io;
	struct evbuffer		*in = bufferevent_get_input(from->bev);
	enum proto_verdict	 v;

	if (from == &s->client) {
		v = session_parse_client(s);
	} else {
		if (s->held)
			s->held = false;	/* the answer the module waited for may be here */
		session_io(s, &io, in);
		v = s->proto->backend_input(&io);
		session_verdict(s, v, &io);
	}
	/* a backend answer may release client input the module held */
	if (!s->dead && from == &s->backend && v == PROTO_CONTINUE &&
	    (s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS) &&
	    evbuffer_get_length(bufferevent_get_input(s->client.bev)) > 0)
		session_parse(s, &s->client);
	/* and the client's EOF may have waited for that input */
	if (!s->dead && from == &s->client)
		relay_eof_released(s);
}

/*
 * The header a balancer puts before the client's first byte.  A
 * connection without a valid one is closed: the proxy must never
 * mistake a balancer's address for the client's, nor a client's bytes
 * for a header.
 */
static void
session_proxy_header(struct session *s)
{
	struct evbuffer		*in = bufferevent_get_input(s->client.sock);
	size_t			 len = evbuffer_get_length(in);
	size_t			 n = len < PROXY_V2_MAX ? len : PROXY_V2_MAX;
	struct proxy_header	 h;

	switch (proxy_parse(evbuffer_pullup(in, (ssize_t)n), n, &h)) {
	case PARSE_NEED_MORE:
		if (len < PROXY_V2_MAX)
			return;
		/* FALLTHROUGH */
	default:
		STAT_INC(s->counters, refused[REFUSED_PROXY_HEADER]);
		session_close(s, "proxy-header-invalid",
		    "the connection did not start with a valid PROXY protocol header");
		return;
	case PARSE_OK:
		break;
	}
	evbuffer_drain(in, h.len);
	if (!h.local) {
		session_set_client_addr(s, (struct sockaddr *)&h.src, h.srclen);
		memcpy(&s->addrs->src, &h.src, h.srclen);
		s->addrs->srclen = h.srclen;
		memcpy(&s->addrs->dst, &h.dst, h.dstlen);
		s->addrs->dstlen = h.dstlen;
	}
	log_debug("session %llu: PROXY v%d header: client %s", (unsigned long long)s->id,
	    h.version, s->client_addr);
	session_start(s);
	/* what came with the header is the client's */
	if (!s->dead && s->state != SESSION_HANDSHAKE &&
	    evbuffer_get_length(bufferevent_get_input(s->client.bev)) > 0)
		session_client_readcb(s->client.bev, s);
}

static void
session_client_readcb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->dead)
		return;
	s->last_ms = now_ms();
	switch (s->state) {
	case SESSION_RELAY:
		relay_forward(s, &s->client, &s->backend);
		break;
	case SESSION_CLEARTEXT:
	case SESSION_TLS:
		if (!s->held)
			session_parse(s, &s->client);
		break;
	case SESSION_PROXY_HEADER:
		session_proxy_header(s);
		break;
	case SESSION_CLOSING: {
		struct evbuffer *in = bufferevent_get_input(bev);

		s->bytes_in += evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	}
	default:
		break;	/* kept until the state allows it */
	}
}

void
session_backend_readcb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->dead)
		return;
	s->last_ms = now_ms();
	switch (s->state) {
	case SESSION_RELAY:
		relay_forward(s, &s->backend, &s->client);
		break;
	case SESSION_CLEARTEXT:
	case SESSION_TLS:
		session_parse(s, &s->backend);
		break;
	default:
		break;
	}
}

/* Wrap the client's socket bufferevent in a server-side TLS filter. */
static void
session_client_tls(struct session *s)
{
	struct bufferevent	*f;
	SSL			*ssl;

	if ((ssl = tls_server_ssl(s->lc->tls_server)) == NULL) {
		session_close(s, "internal", "cannot create a TLS session");
		return;
	}
	f = bufferevent_openssl_filter_new(s->w->base, s->client.sock, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (f == NULL) {
		/* libevent freed the SSL and may have freed the socket: forget both */
		s->client.sock = s->client.bev = NULL;
		session_close(s, "internal", "cannot create a TLS filter");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	s->client.bev = f;
	s->client.ssl = ssl;
	s->client.reading = false;
	bufferevent_setcb(f, session_client_readcb, NULL, session_client_eventcb, s);
	bufferevent_enable(f, EV_WRITE);
	session_enter(s, SESSION_HANDSHAKE);
	s->phase_deadline = now_ms() + s->lc->timeouts.handshake * 1000ULL;
	session_update_reading(s);
	/*
	 * A ClientHello that came in the same read as the verb is already in
	 * the socket's input: make the filter look at it now rather than on
	 * the next read from the network, which may never come.
	 */
	if (evbuffer_get_length(bufferevent_get_input(s->client.sock)) > 0)
		bufferevent_trigger(s->client.sock, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	if (relay_readahead_start(&s->client) == -1)
		relay_readahead_stop(&s->client);	/* libevent reads alone, slower */
}

static void
session_client_tls_ready(struct session *s)
{
	struct proto_io	 io;

	s->client.tls_up = true;
	s->phase_deadline = 0;
	s->upgraded = s->lc->client_tls == CLIENT_TLS_IMPLICIT ? "implicit" : "starttls";
	if (s->lc->client_tls == CLIENT_TLS_IMPLICIT)
		STAT_INC(s->counters, upgrades_implicit);
	else
		STAT_INC(s->counters, upgrades_starttls);
	stats_tls(s->counters, tls_version_name(s->client.ssl), tls_cipher_name(s->client.ssl));
	if (log_debug_enabled()) {
		char sni[256];

		log_debug("session %llu: client TLS %s %s sni=%s", (unsigned long long)s->id,
		    tls_version_name(s->client.ssl), tls_cipher_name(s->client.ssl),
		    log_escape(tls_sni_name(s->client.ssl), false, sni, sizeof(sni)));
	}
	if (s->proto->tls_ready != NULL) {
		session_enter(s, SESSION_TLS);
		session_io(s, &io, NULL);
		session_verdict(s, s->proto->tls_ready(&io), &io);
	} else {
		session_enter(s, SESSION_RELAY);
		session_update_reading(s);
	}
	if (s->dead)
		return;
	if (s->bstate == BACKEND_IDLE) {
		backend_connect(s);
		return;
	}
	/* what either side sent during the handshake */
	if (evbuffer_get_length(bufferevent_get_input(s->client.bev)) > 0)
		session_client_readcb(s->client.bev, s);
	/* (with backend.tls = "starttls", what the module kept: SMTP's greeting) */
	if (!s->dead && s->bstate == BACKEND_UP &&
	    (evbuffer_get_length(bufferevent_get_input(s->backend.bev)) > 0 ||
	    s->lc->backend.tls == BACKEND_TLS_STARTTLS))
		session_backend_readcb(s->backend.bev, s);
}

static void
session_side_event(struct session *s, struct side *sd, short what)
{
	const char	*peer = sd == &s->client ? "client" : "backend";
	char		 why[256];

	if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_WRITING)) {
		/*
		 * A TLS bufferevent on a socket reports a write to a peer that
		 * is gone (EPIPE) as an EOF when dirty shutdowns are allowed:
		 * nothing more can reach that side.
		 */
		what = BEV_EVENT_ERROR | BEV_EVENT_WRITING;
	}
	if (what & BEV_EVENT_ERROR) {
		/* after an EOF, a TLS filter may report the TCP FIN again */
		if (sd->eof && (what & BEV_EVENT_READING))
			return;
		relay_error_words(sd, peer, false, why, sizeof(why));
		if (sd == &s->client)
			session_close(s, "client-error", "%s", why);
		else	/* the client is fine: what it is owed still goes out */
			session_finish(s, "backend-error", why);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/*
		 * A TLS filter may report the peer's close_notify before the
		 * read callback has seen the bytes that came with it (a last
		 * "221 Bye"): deal with those first.
		 */
		if (evbuffer_get_length(bufferevent_get_input(sd->bev)) > 0) {
			if (sd == &s->client)
				session_client_readcb(sd->bev, s);
			else
				session_backend_readcb(sd->bev, s);
			if (s->dead)
				return;
		}
		relay_eof(s, sd);
		/*
		 * A TLS bufferevent on a socket stops writing once it has
		 * reported its peer's EOF, after this callback returns; the
		 * other direction may still owe that peer bytes (a TLS
		 * half-close), so have it write again afterwards.
		 */
		if (!s->dead && sd->ssl != NULL && sd->bev == sd->sock)
			session_schedule(s, SESSION_WORK_REWRITE);
	}
}

static void
session_client_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;
	char		 why[256];

	if (s->dead)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		session_client_tls_ready(s);
		return;
	}
	if (s->state == SESSION_HANDSHAKE || s->state == SESSION_UPGRADING) {
		enum stat_handshake_failure kind = HS_FAIL_CLOSED;

		if (what & BEV_EVENT_EOF)
			snprintf(why, sizeof(why), "the client closed the connection during the TLS handshake");
		else
			kind = relay_error_words(&s->client, "client", true, why, sizeof(why));
		STAT_INC(s->counters, handshake_failures[kind]);
		session_close(s, "handshake-failed", "%s", why);
		return;
	}
	if (s->state == SESSION_CLOSING) {
		session_close(s, s->close_end, "%s", s->close_reason ? s->close_reason : "");
		return;
	}
	session_side_event(s, &s->client, what);
}

void
session_backend_event(struct session *s, short what)
{
	if (s->dead)
		return;
	if (s->state == SESSION_CLOSING)
		return;
	session_side_event(s, &s->backend, what);
}

void
session_backend_up(struct session *s)
{
	s->bstate = BACKEND_UP;
	s->connect_deadline = 0;
	s->backend.reading = false;
	log_debug("session %llu: backend %s up", (unsigned long long)s->id, s->backend_addr);
	if (s->pending != NULL) {
		evbuffer_add_buffer(bufferevent_get_output(s->backend.bev), s->pending);
		evbuffer_free(s->pending);
		s->pending = NULL;
	}
	if (s->backend.ssl != NULL)
		bufferevent_enable(s->backend.bev, EV_WRITE);
	relay_output_added(&s->backend);
	if (s->lc->backend.tls == BACKEND_TLS_STARTTLS &&
	    (s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS)) {
		/* what the module kept from before TLS (SMTP's greeting) */
		session_parse(s, &s->backend);
		if (s->dead)
			return;
	}
	if (s->proto->backend_ready != NULL &&
	    (s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS)) {
		struct proto_io io;

		session_io(s, &io, NULL);
		session_verdict(s, s->proto->backend_ready(&io), &io);
		if (s->dead)
			return;
	}
	if (s->state == SESSION_RELAY)
		relay_forward(s, &s->client, &s->backend);
	if (s->dead)
		return;
	if (s->client.eof) {
		s->backend.want_shut = true;
		relay_try_shut(s, &s->backend);
		if (s->dead)
			return;
	}
	session_update_reading(s);
}

/*
 * backend.tls = "starttls": one step of the module's dialogue with the
 * backend, on the plaintext socket, before anything of the client's is
 * sent there.
 */
void
session_backend_starttls(struct session *s)
{
	struct bufferevent	*sock = s->backend.sock;
	struct proto_io		 io;
	enum proto_verdict	 v;

	session_io(s, &io, bufferevent_get_input(sock));
	io.to_backend = bufferevent_get_output(sock);
	v = s->proto->backend_starttls(&io);
	evbuffer_drain(s->w->to_client, evbuffer_get_length(s->w->to_client));
	if (evbuffer_get_length(io.to_backend) > 0)
		bufferevent_enable(sock, EV_WRITE);
	switch (v) {
	case PROTO_UPGRADE:
		log_debug("session %llu: backend %s upgraded, TLS handshake",
		    (unsigned long long)s->id, s->backend_addr);
		backend_tls_start(s);
		break;
	case PROTO_CLOSE:
		session_backend_failed(s, io.end ? io.end : "backend-tls-failed", io.reason);
		break;
	default:
		bufferevent_enable(sock, EV_READ);
		break;
	}
}

void
session_backend_failed(struct session *s, const char *end, const char *why)
{
	struct proto_io	 io;

	if (s->dead)
		return;
	backend_cancel(s);
	/*
	 * Give the backend up for good: the connect deadline must not fire
	 * again on the next tick, and a connect that completes later must
	 * not deliver the client's bytes after the client was told it failed.
	 */
	s->connect_deadline = 0;
	if (s->bstate != BACKEND_UP) {
		s->bstate = BACKEND_FAILED;
		if (s->backend.bev != NULL)
			bufferevent_disable(s->backend.bev, EV_READ | EV_WRITE);
	}
	if (strcmp(end, "internal") != 0)
		STAT_INC(s->counters, backend_failures[
		    strcmp(end, "backend-timeout") == 0 ? BACKEND_FAIL_TIMEOUT :
		    strcmp(end, "backend-verify-failed") == 0 ? BACKEND_FAIL_VERIFY :
		    strcmp(end, "backend-tls-failed") == 0 ? BACKEND_FAIL_TLS :
		    BACKEND_FAIL_UNREACHABLE]);
	if (s->proto->backend_failed != NULL &&
	    (s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS)) {
		session_io(s, &io, NULL);
		io.timed_out = strcmp(end, "backend-timeout") == 0;
		s->proto->backend_failed(&io);
		session_flush_replies(s);
	}
	session_finish(s, end, why);
}

/* Flush what is queued to the client, then close. */
void
session_finish(struct session *s, const char *end, const char *reason)
{
	if (s->dead)
		return;
	if (s->client.bev == NULL || s->client.fin_sent || s->state == SESSION_HANDSHAKE ||
	    s->state == SESSION_UPGRADING) {
		session_close(s, end, "%s", reason ? reason : "");
		return;
	}
	s->close_end = end;
	free(s->close_reason);
	s->close_reason = reason ? strdup(reason) : NULL;
	session_enter(s, SESSION_CLOSING);
	s->phase_deadline = now_ms() + SESSION_LINGER_MS;
	session_update_reading(s);
	if (relay_pending(&s->client) == 0)
		session_schedule(s, SESSION_WORK_CLOSE);
	else
		session_arm(s);
}

static void
session_log(struct session *s, const char *end, const char *reason)
{
	SSL	*ssl = s->client.tls_up ? s->client.ssl : NULL;
	char	 extra[64] = "", sni[256], why[512];

	if (s->discarded > 0)
		snprintf(extra, sizeof(extra), " discarded=%llu",
		    (unsigned long long)s->discarded);
	log_info("session listener=%s client=%s backend=%s tls=%s cipher=%s sni=%s "
	    "upgraded=%s in=%llu out=%llu ms=%llu end=%s%s id=%llu%s%s%s",
	    s->lc->name, s->client_addr, s->backend_addr,
	    ssl ? tls_version_name(ssl) : "-", tls_cipher_name(ssl),
	    log_escape(tls_sni_name(ssl), false, sni, sizeof(sni)), s->upgraded,
	    (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
	    (unsigned long long)(now_ms() - s->start_ms), end, extra,
	    (unsigned long long)s->id,
	    reason && *reason ? " reason=\"" : "",
	    reason && *reason ? log_escape(reason, true, why, sizeof(why)) : "",
	    reason && *reason ? "\"" : "");
}

/*
 * The one way a session ends: log it, stop every callback, and free it
 * from the timer event, outside whatever callback we are in.
 */
void
session_close(struct session *s, const char *end, const char *fmt, ...)
{
	char	 reason[512];
	va_list	 ap;

	if (s->dead)
		return;
	s->dead = true;
	reason[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(reason, sizeof(reason), fmt, ap);
		va_end(ap);
	}
	/* libevent's error queues are per bufferevent; the thread's must not leak into the next session */
	ERR_clear_error();
	session_log(s, end, reason);
	backend_cancel(s);
	relay_readahead_stop(&s->client);
	relay_readahead_stop(&s->backend);
	if (s->client.bev != NULL) {
		bufferevent_setcb(s->client.bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(s->client.bev, EV_READ | EV_WRITE);
		if (strcmp(end, "client-error") != 0)
			relay_flush_final(&s->client);
	}
	if (s->backend.bev != NULL) {
		bufferevent_setcb(s->backend.bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(s->backend.bev, EV_READ | EV_WRITE);
		if (s->backend.tls_up && strcmp(end, "backend-error") != 0)
			relay_flush_final(&s->backend);
	}
	if (s->timer != NULL)
		event_active(s->timer, EV_TIMEOUT, 1);
	else
		session_free(s);
}

static void
session_free(struct session *s)
{
	struct worker	*w = s->w;

	relay_readahead_stop(&s->client);
	relay_readahead_stop(&s->backend);
	if (s->proto_state != NULL)
		s->proto->session_free(s->proto_state);
	if (s->client.bev != NULL)
		bufferevent_free(s->client.bev);	/* a filter frees its socket */
	if (s->backend.bev != NULL)
		bufferevent_free(s->backend.bev);
	if (s->pending != NULL)
		evbuffer_free(s->pending);
	if (s->timer != NULL)
		event_free(s->timer);
	free(s->close_reason);
	free(s->addrs);
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	atomic_fetch_sub_explicit(&w->d->nsessions, 1, memory_order_relaxed);
	STAT_ADD(s->counters, bytes_in, s->bytes_in);
	STAT_ADD(s->counters, bytes_out, s->bytes_out);
	STAT_INC(s->counters, closed);
	config_unref(s->cfg);
	s->magic = 0;
	free(s);
	server_session_gone(w);
}

/* At the end of a graceful shutdown: whatever is still open is closed. */
void
session_shutdown_all(struct worker *w, const char *why)
{
	struct session	*s;

	TAILQ_FOREACH(s, &w->sessions, entry)
		session_close(s, "shutdown", "%s", why);
}
