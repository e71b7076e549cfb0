/*
 * Sessions: the policy.  A session is one client side (side.c), at most
 * one backend (backend.c) and the protocol module between them; it owns
 * every decision: what is read from whom (watermarks, the module's hold,
 * the client's own replies), what is forwarded, when an EOF is passed
 * on, when the client side upgrades to TLS, timeouts, and the one way a
 * session ends, session_close(), with its log line.  The layers below
 * report events to session_side_cb() and session_backend_cb() and never
 * decide.
 *
 * The order of an upgrade (RFC 3207 section 4.2, CVE-2011-0411):
 * the module answers the verb; reading stops on both sides; whatever the
 * client sent behind the verb, up to the first byte that can start a TLS
 * record, is discarded and counted; the answer is flushed; only then is
 * the client's socket wrapped in TLS, so that no cleartext byte ever
 * reaches the TLS layer or the backend after the verb.
 *
 * Structural changes (the TLS wrap, half-closes, the close, the free)
 * run from the session's own timer event (session_tick), outside any
 * I/O callback; the memory is freed from there too, so that no libevent
 * callback ever runs on a freed session.
 */
#include "autoconfig.h"

#include <sys/queue.h>
#include <sys/socket.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <openssl/err.h>

#include "backend.h"
#include "cidr.h"
#include "clienttab.h"
#include "config.h"
#include "end.h"
#include "log.h"
#include "proto.h"
#include "proxy_proto.h"
#include "runtime.h"
#include "server.h"
#include "session.h"
#include "side.h"
#include "stats.h"
#include "tlsctx.h"

#define SESSION_MAGIC		0x53545031u	/* "STP1" */
#define SESSION_LINGER_MS	5000		/* flushing a last reply */

enum session_state {
	SESSION_PROXY_HEADER,	/* waiting for the PROXY protocol header */
	SESSION_CLEARTEXT,	/* the protocol module parses, before any TLS */
	SESSION_UPGRADING,	/* the verb was answered; flushing the answer */
	SESSION_HANDSHAKE,	/* client TLS handshake */
	SESSION_TLS,		/* in TLS, the protocol module still parses */
	SESSION_RELAY,		/* transparent relay both ways */
	SESSION_CLOSING,	/* flushing a last reply to the client */
};

/* Things to do from the session's timer event, outside I/O callbacks. */
#define SESSION_WORK_WRAP	0x01	/* start the client TLS handshake */
#define SESSION_WORK_RESUME	0x02	/* a destination drained: resume its source */
#define SESSION_WORK_SHUT	0x04	/* an output drained: pass an EOF on */
#define SESSION_WORK_CLOSE	0x08	/* the last reply is out: close */

/* The client's address and the one it connected to, as the PROXY protocol carries them. */
struct session_addrs {
	struct sockaddr_storage	 src;
	struct sockaddr_storage	 dst;
	socklen_t		 srclen;
	socklen_t		 dstlen;
};

struct session {
	uint32_t		 magic;
	uint64_t		 id;
	struct worker		*w;
	struct runtime		*rt;		/* a reference: what it runs on */
	const struct listener_rt *lr;		/* its listener's, in rt */
	const struct listener_conf *lc;
	struct listener_counters *counters;	/* its listener's, in its worker */
	TAILQ_ENTRY(session)	 entry;

	enum session_state	 state;
	enum proto_refusal	 refusal;	/* kept only to refuse the client */
	bool			 counted;	/* in max_connections (else refused at accept) */
	bool			 refusing;	/* in w->nrefusing */
	char			*refusal_why;	/* access or client_limits: the log's reason */
	struct cidr_addr	 peer;		/* the client's address, for access and limits */
	struct clienttab_hold	 hold;		/* what it counts in the client table */
	const struct proto	*proto;
	void			*proto_state;
	bool			 held;		/* client reading held by the module */
	bool			 unparsed;	/* the module stopped at the client's
						   watermark with input left (proto_client_full) */
	bool			 dead;
	bool			 client_full;	/* output towards the client above the
						   high watermark: its sources are paused */
	bool			 backend_full;	/* likewise towards the backend */
	bool			 have_first_eof;
	bool			 direct_tls;	/* the upgrade has no verb: see proto_io */
	unsigned		 work;

	struct side		 client;
	struct backend		 backend;
	struct evbuffer		*pending;	/* for the backend, until it is up */
	const struct addr	*target;	/* the module's backend, or NULL */
	struct session_addrs	*addrs;		/* for the PROXY protocol, or NULL */

	struct event		*timer;
	uint64_t		 start_ms;
	uint64_t		 last_ms;	/* last byte either way */
	uint64_t		 phase_deadline;	/* cleartext, handshake or closing */
	uint64_t		 connect_deadline;

	uint64_t		 bytes_in;
	uint64_t		 bytes_out;
	uint64_t		 discarded;
	const char		*upgraded;	/* "starttls", "implicit", "none" */
	enum session_end	 first_eof;	/* client-closed or backend-closed */
	enum session_end	 close_end;	/* while SESSION_CLOSING */
	char			*close_reason;
	char			 client_addr[SESSION_PEER_MAX];
};

static void	session_tick(evutil_socket_t, short, void *);
static void	session_side_cb(struct side *, enum side_event, void *);
static void	session_backend_cb(struct backend *, enum backend_result, enum session_end,
		    const char *, void *);
static void	session_client_tls(struct session *);
static void	session_connect_backend(struct session *);
static void	session_backend_failed(struct session *, enum session_end, const char *);
static void	session_finish(struct session *, enum session_end, const char *);
static void	session_flush_replies(struct session *);
static void	session_close(struct session *, enum session_end, const char *, ...)
		    PRINTFLIKE(3, 4);
static void	session_free(struct session *);
static void	session_parse(struct session *, struct side *);
static void	session_start(struct session *);
static void	session_update_reading(struct session *);
static void	session_arm(struct session *);

uint64_t
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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

/* The module still parses: before TLS, or inside it until it is transparent. */
static bool
session_parsing(const struct session *s)
{
	return s->state == SESSION_CLEARTEXT || s->state == SESSION_TLS;
}

static bool
backend_up(const struct session *s)
{
	return s->backend.state == BACKEND_UP;
}

static struct side *
other_side(struct session *s, struct side *sd)
{
	return sd == &s->client ? &s->backend.side : &s->client;
}

static bool *
full_flag(struct session *s, struct side *sd)
{
	return sd == &s->client ? &s->client_full : &s->backend_full;
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
    const struct sockaddr *sa, socklen_t salen, enum proto_refusal refusal)
{
	const struct listener_conf	*lc = ls->lr->lc;
	struct session			*s;
	int				 rc;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_warn("listener %s: cannot allocate a session", lc->name);
		close(fd);
		return;
	}
	s->magic = SESSION_MAGIC;
	s->id = atomic_fetch_add_explicit(&w->d->next_id, 1, memory_order_relaxed) + 1;
	s->w = w;
	s->rt = runtime_ref(w->rt);
	s->lr = ls->lr;
	s->lc = lc;
	s->counters = &ls->lr->stats->workers[w->index];
	s->proto = lc->proto;
	s->refusal = refusal;
	s->upgraded = "none";
	s->start_ms = s->last_ms = now_ms();
	side_init(&s->client, session_side_cb, s);
	backend_init(&s->backend, session_backend_cb, s);
	session_set_client_addr(s, sa, salen);
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	w->nsessions++;
	cidr_addr_from_sockaddr(sa, salen, &s->peer);
	if (refusal != PROTO_REFUSAL_NONE) {
		w->nrefusing++;		/* counted refused by the listener */
		s->refusing = true;
	} else {
		atomic_fetch_add_explicit(&w->d->nsessions, 1, memory_order_relaxed);
		STAT_INC(s->counters, accepted);
		s->counted = true;
	}

	s->timer = event_new(w->base, -1, 0, session_tick, s);
	if (lc->client_tls == CLIENT_TLS_IMPLICIT && !lc->accept_proxy_protocol) {
		SSL *ssl = tls_server_ssl(s->lr->tls_server);

		if (ssl == NULL) {
			close(fd);
			rc = -1;
		} else
			rc = side_accept_tls(&s->client, w->base, fd, sa->sa_family, ssl);
	} else
		rc = side_accept(&s->client, w->base, fd, sa->sa_family);
	if (s->timer == NULL || rc == -1 ||
	    (s->proto->session_new != NULL &&
	    (s->proto_state = s->proto->session_new(lc)) == NULL)) {
		session_close(s, END_INTERNAL, "out of memory");
		return;
	}
	log_debug("session %llu: listener %s accepted %s in worker %u",
	    (unsigned long long)s->id, lc->name, s->client_addr, w->index);

	if (lc->accept_proxy_protocol || lc->backend.proxy_protocol != PROXY_PROTO_NONE ||
	    lc->routes_proxy_protocol) {
		if ((s->addrs = calloc(1, sizeof(*s->addrs))) == NULL) {
			session_close(s, END_INTERNAL, "out of memory");
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

/*
 * The session reaches the backend at the start or at the end of the
 * client's handshake, unless the module decides when (or the client is
 * only refused).  With routes, never before the handshake: the server
 * name it chose names the backend.
 */
static bool
session_connects_itself(const struct session *s)
{
	return !s->proto->connect_on_verdict && s->refusal == PROTO_REFUSAL_NONE;
}

/*
 * A client the listener's policy refuses (r, why in words).  A protocol
 * whose client speaks first keeps the session to answer its first
 * message (refuse_in_session), at most LISTENER_REFUSING_MAX of them per
 * worker, except on an implicit-TLS listener: a refused client costs no
 * handshake; every other one gets the protocol's reply, if it has one
 * before TLS, and a close at once.  True when the session goes on, to
 * refuse.
 */
static bool
session_refuse(struct session *s, enum proto_refusal r, const char *why)
{
	const struct listener_conf *lc = s->lc;
	enum session_end	 end = proto_refusal_end(r);

	STAT_INC(s->counters, refused[r == PROTO_REFUSAL_DENIED ? REFUSED_DENIED :
	    REFUSED_CLIENT_LIMIT]);
	if (s->proto->refuse_in_session && lc->client_tls != CLIENT_TLS_IMPLICIT) {
		if (s->w->nrefusing >= LISTENER_REFUSING_MAX) {
			session_close(s, end, "%s; closed: %u refusals under way in this worker",
			    why, s->w->nrefusing);
			return false;
		}
		if ((s->refusal_why = strdup(why)) == NULL) {
			session_close(s, end, "%s", why);
			return false;
		}
		s->refusal = r;
		s->refusing = true;
		s->w->nrefusing++;
		/* a refused client takes no place of max_connections (w->nrefusing bounds it) */
		if (s->counted) {
			atomic_fetch_sub_explicit(&s->w->d->nsessions, 1, memory_order_relaxed);
			STAT_INC(s->counters, closed);
			s->counted = false;
		}
		return true;
	}
	if (lc->client_tls == CLIENT_TLS_IMPLICIT || s->proto->refuse == NULL) {
		session_close(s, end, "%s", why);
		return false;
	}
	/*
	 * The reply, written once as the session closes (side_flush_final),
	 * never lingering: a storm of refused clients that do not read holds
	 * nothing.  What the client sent already is read away first, so that
	 * the close is not a reset that destroys the reply in flight.
	 */
	s->proto->refuse(s->w->to_client, r);
	session_flush_replies(s);
	for (int i = 0; i < 4 && !s->dead; i++) {
		char	 junk[4096];
		ssize_t	 n = recv(s->client.fd, junk, sizeof(junk), MSG_DONTWAIT);

		if (n <= 0)
			break;
		s->bytes_in += (uint64_t)n;
	}
	session_close(s, end, "%s", why);
	return false;
}

/*
 * The listener's policy on the client's real address (after a PROXY
 * header): access first, then client_limits, which takes the session's
 * place in the client table.  True when the session goes on.
 */
static bool
session_admit(struct session *s)
{
	const struct listener_conf *lc = s->lc;
	const struct client_limits_conf *cl = &lc->client_limits;
	struct clienttab	*t;
	enum clienttab_verdict	 v;
	char			 why[160], rule[CIDR_FORMAT_MAX];
	size_t			 which;
	unsigned		 limit;

	if (s->refusal != PROTO_REFUSAL_NONE)
		return true;		/* refused already, past max_connections */
	if (lc->naccess > 0 && !cidr_allowed(lc->access, lc->naccess, &s->peer, &which)) {
		cidr_rule_format(&lc->access[which], rule, sizeof(rule));
		snprintf(why, sizeof(why), "denied by access rule %zu, \"%s\"", which + 1, rule);
		return session_refuse(s, PROTO_REFUSAL_DENIED, why);
	}
	/*
	 * Only now the table: a reload sets it (from the main thread, before
	 * any worker runs a configuration with limits), never for a listener
	 * without them, and never changes it afterwards.
	 */
	if (!cl->active || s->lr->stats == NULL || (t = s->lr->stats->clients) == NULL)
		return true;
	v = clienttab_admit(t, &cl->limits, &s->peer, now_ms(), &s->hold);
	if (v == CLIENTTAB_OK)
		return true;
	switch (v) {
	case CLIENTTAB_ADDRESS:
		limit = cl->limits.per_address;
		break;
	case CLIENTTAB_PREFIX:
		limit = cl->limits.per_prefix;
		break;
	case CLIENTTAB_RATE:
		limit = cl->limits.rate;
		break;
	default:
		limit = (unsigned)clienttab_size(t);
		break;
	}
	if (v == CLIENTTAB_FULL)
		snprintf(why, sizeof(why), "over client_limits: every entry of the table "
		    "(%u) holds sessions", limit);
	else if (v == CLIENTTAB_PREFIX)
		snprintf(why, sizeof(why), "over client_limits.sessions_per_prefix (%u, /%u)",
		    limit, s->peer.family == AF_INET ? cl->limits.prefix4 : cl->limits.prefix6);
	else
		snprintf(why, sizeof(why), "over client_limits.%s (%u)",
		    clienttab_verdict_name(v), limit);
	return session_refuse(s, PROTO_REFUSAL_CLIENT_LIMIT, why);
}

/* The session proper, once the client's address is known. */
static void
session_start(struct session *s)
{
	const struct listener_conf *lc = s->lc;

	if (!session_admit(s))
		return;
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
	if (s->refusal != PROTO_REFUSAL_NONE && s->phase_deadline == 0)
		s->phase_deadline = s->start_ms + lc->timeouts.cleartext * 1000ULL;
	if (session_connects_itself(s) && lc->nroutes == 0 &&
	    (s->proto->connect_early || lc->client_tls == CLIENT_TLS_NONE))
		session_connect_backend(s);
	if (s->dead)
		return;
	session_update_reading(s);
	session_arm(s);
}

/*
 * Which side may read now.  The one place that decides it, from the
 * state: the module's hold, the watermarks and EOFs.
 */
static void
session_update_reading(struct session *s)
{
	struct side	*c = &s->client, *b = &s->backend.side;
	bool		 parsing = session_parsing(s);
	bool		 cr, br;

	if (s->dead)
		return;
	cr = (parsing || s->state == SESSION_RELAY || s->state == SESSION_HANDSHAKE) &&
	    !s->held && !s->backend_full && !c->eof;
	/*
	 * While the module parses, what goes to the client may be the
	 * proxy's own replies to what the client sends: a client that does
	 * not read them is paused like any source whose destination is full.
	 */
	if (parsing && (s->client_full || s->unparsed))
		cr = false;
	if (s->state == SESSION_CLOSING || s->state == SESSION_PROXY_HEADER)
		cr = !c->eof;	/* lingering, or the PROXY header */
	if (cr && !backend_up(s) && s->state != SESSION_CLOSING) {
		/* held for a backend not up yet: up to the watermark */
		size_t queued = s->pending ? evbuffer_get_length(s->pending) : 0;

		if (side_open(c))
			queued += evbuffer_get_length(side_input(c));
		if (queued >= s->lc->high_watermark)
			cr = false;
	}
	side_set_reading(c, cr);
	/* until it is up, the backend's connection is backend.c's */
	if (backend_up(s)) {
		br = (parsing || s->state == SESSION_RELAY) && !s->client_full && !b->eof;
		side_set_reading(b, br);
	}
}

/* Run deferred work from the timer event, outside any I/O callback. */
static void
session_schedule(struct session *s, unsigned work)
{
	s->work |= work;
	event_active(s->timer, EV_TIMEOUT, 1);
}

static void
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

/*
 * Half-close towards a side once its output has drained; the session
 * ends when both directions have ended and been passed on.
 */
static void
session_shut_progress(struct session *s, struct side *sd)
{
	if (s->dead || !side_open(sd))
		return;
	/*
	 * Not while the backend is still being reached: its TLS handshake
	 * or STARTTLS dialogue needs the connection both ways, and what the
	 * client sent is not there yet.  session_backend_up applies it.
	 */
	if (sd == &s->backend.side && !backend_up(s))
		return;
	side_shut_progress(sd);
	if (s->client.eof && s->backend.side.eof && side_done_writing(&s->client) &&
	    side_done_writing(&s->backend.side))
		session_close(s, s->first_eof, NULL);
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
			session_close(s, END_TIMEOUT_HANDSHAKE,
			    "no PROXY protocol header within %u s", t->handshake);
			return;
		case SESSION_HANDSHAKE:
		case SESSION_UPGRADING:
			STAT_INC(s->counters, handshake_failures[HS_FAIL_TIMEOUT]);
			session_close(s, END_TIMEOUT_HANDSHAKE,
			    "no TLS handshake from the client within %u s", t->handshake);
			return;
		default:
			if (s->refusal != PROTO_REFUSAL_NONE)
				session_close(s, END_TIMEOUT_CLEARTEXT,
				    "a client refused for %s sent nothing to refuse within %u s",
				    proto_refusal_name(s->refusal), t->cleartext);
			else
				session_close(s, END_TIMEOUT_CLEARTEXT,
				    "the client did not upgrade to TLS within %u s", t->cleartext);
			return;
		}
	}
	if (s->connect_deadline != 0 && now >= s->connect_deadline && !backend_up(s)) {
		char why[96];

		snprintf(why, sizeof(why), "no connection to the backend within %u s", t->connect);
		session_backend_failed(s, END_BACKEND_TIMEOUT, why);
		return;
	}
	if (now >= s->last_ms + t->idle * 1000ULL)
		session_close(s, END_TIMEOUT_IDLE, "no data either way for %u s", t->idle);
}

static void
session_tick(evutil_socket_t fd, short what, void *arg)
{
	struct session	*s = arg;
	unsigned	 work = s->work;

	(void)fd;
	(void)what;
	if (s->dead) {
		session_free(s);
		return;
	}
	s->work = 0;
	if ((work & SESSION_WORK_WRAP) && s->state == SESSION_UPGRADING &&
	    side_pending(&s->client) == 0)
		session_client_tls(s);
	if (!s->dead && (work & SESSION_WORK_RESUME)) {
		if (s->client_full && side_pending(&s->client) <= s->lc->low_watermark)
			s->client_full = false;
		if (s->backend_full && side_pending(&s->backend.side) <= s->lc->low_watermark)
			s->backend_full = false;
		session_update_reading(s);
		/* the client has read its replies: the rest of its input, now */
		if (!s->dead && s->unparsed && !s->held && !s->client_full && session_parsing(s))
			session_parse(s, &s->client);
	}
	if (!s->dead && (work & SESSION_WORK_SHUT)) {
		session_shut_progress(s, &s->client);
		session_shut_progress(s, &s->backend.side);
	}
	if (!s->dead && (work & SESSION_WORK_CLOSE) && s->state == SESSION_CLOSING &&
	    side_pending(&s->client) == 0) {
		/*
		 * The last reply is out: half-close, and read (and drop) until
		 * the client closes too, so that its unread bytes do not turn
		 * our close into a reset that destroys the reply in flight.
		 */
		side_want_shut(&s->client);
		session_shut_progress(s, &s->client);
	}
	if (!s->dead)
		session_deadlines(s);
	if (!s->dead)
		session_arm(s);
}

/* A side's output drained (from libevent's write path): what it makes due. */
static void
session_drained(struct session *s, struct side *sd)
{
	size_t		 left = side_pending(sd);
	unsigned	 work = 0;

	/* bytes leaving for a slow reader are activity too: not idle */
	s->last_ms = now_ms();
	if (*full_flag(s, sd) && left <= s->lc->low_watermark)
		work |= SESSION_WORK_RESUME;
	if (left == 0) {
		if (sd == &s->client && s->state == SESSION_UPGRADING)
			work |= SESSION_WORK_WRAP;
		if (sd == &s->client && s->state == SESSION_CLOSING)
			work |= SESSION_WORK_CLOSE;
		if ((sd->want_shut && !sd->shut) || (sd->shut && !sd->fin_sent))
			work |= SESSION_WORK_SHUT;
	}
	if (work != 0)
		session_schedule(s, work);
}

/* Bytes were queued towards a side: write them, and mind its watermark. */
static void
session_queued(struct session *s, struct side *to)
{
	bool	*full = full_flag(s, to);

	side_flush(to);
	if (!*full && side_pending(to) >= s->lc->high_watermark) {
		*full = true;
		session_update_reading(s);
	}
}

static void
session_forward(struct session *s, struct side *from, struct side *to)
{
	struct evbuffer	*in;
	size_t		 n;

	if (!side_open(from) || s->dead)
		return;
	in = side_input(from);
	if ((n = evbuffer_get_length(in)) == 0)
		return;
	if (to == &s->backend.side && !backend_up(s)) {
		/* kept in the client's input until the backend is up */
		session_update_reading(s);
		return;
	}
	if (!side_open(to) || to->shut)
		return;
	evbuffer_add_buffer(side_output(to), in);
	if (from == &s->client)
		s->bytes_in += n;
	else
		s->bytes_out += n;
	session_queued(s, to);
}

/* Move what a protocol module queued into the session's outputs. */
static void
session_flush_replies(struct session *s)
{
	struct worker	*w = s->w;
	size_t		 n;

	if ((n = evbuffer_get_length(w->to_client)) > 0) {
		if (side_open(&s->client)) {
			s->bytes_out += n;
			evbuffer_add_buffer(side_output(&s->client), w->to_client);
			side_flush(&s->client);
		} else
			evbuffer_drain(w->to_client, n);
	}
	if ((n = evbuffer_get_length(w->to_backend)) > 0) {
		if (backend_up(s)) {
			evbuffer_add_buffer(side_output(&s->backend.side), w->to_backend);
			side_flush(&s->backend.side);
		} else {
			if (s->pending == NULL && (s->pending = evbuffer_new()) == NULL) {
				evbuffer_drain(w->to_backend, n);
				session_close(s, END_INTERNAL, "out of memory");
				return;
			}
			evbuffer_add_buffer(s->pending, w->to_backend);
		}
	}
}

static void
session_io(struct session *s, struct proto_io *io, struct evbuffer *in)
{
	size_t	 pending = side_pending(&s->client);

	*io = (struct proto_io){
		.client_room = pending < s->lc->high_watermark ?
		    s->lc->high_watermark - pending : 0,
		.state = s->proto_state,
		.conf = s->lc,
		.client_tls = s->client.tls_up,
		.in = in,
		.to_client = s->w->to_client,
		.to_backend = s->w->to_backend,
		.end = END_PROTOCOL_ERROR,
		.refusal = s->refusal,
	};
}

/* The EOF of one side is passed on to the other. */
static void
session_pass_eof(struct session *s, struct side *to)
{
	side_want_shut(to);
	session_update_reading(s);
	if (to == &s->backend.side && !backend_up(s)) {
		if (s->backend.state == BACKEND_IDLE)
			session_close(s, END_CLIENT_CLOSED, NULL);
		return;		/* applied by session_backend_up() */
	}
	session_shut_progress(s, to);
}

/* The client's EOF waited for input the module held: pass it on now if it is due. */
static void
session_eof_released(struct session *s)
{
	if (s->dead || !s->client.eof || s->held || s->unparsed || s->backend.side.want_shut)
		return;
	session_pass_eof(s, &s->backend.side);
}

/* One side's input ended: pass the EOF on once what it sent is delivered. */
static void
session_eof(struct session *s, struct side *sd)
{
	if (!s->have_first_eof) {
		s->have_first_eof = true;
		s->first_eof = sd == &s->client ? END_CLIENT_CLOSED : END_BACKEND_CLOSED;
	}
	log_debug("session %llu: EOF from the %s", (unsigned long long)s->id,
	    sd == &s->client ? "client" : "backend");

	if (sd == &s->backend.side && s->state != SESSION_RELAY) {
		/* the backend left before the protocol was done: say goodbye */
		session_finish(s, END_BACKEND_CLOSED, NULL);
		return;
	}
	if (s->state == SESSION_RELAY)
		session_forward(s, sd, other_side(s, sd));
	if (s->dead)
		return;
	if (sd == &s->client && (s->held || s->unparsed) &&
	    evbuffer_get_length(side_input(sd)) > 0) {
		/*
		 * The module holds commands the client pipelined before its
		 * EOF (an upgrade or a refusal waits for earlier replies, or
		 * the client has not read its replies yet): they reach the
		 * backend before the EOF does, once the module has had them
		 * (session_eof_released).
		 */
		session_update_reading(s);
		return;
	}
	session_pass_eof(s, other_side(s, sd));
}

/* Bytes the client sent behind the upgrade verb were dropped: count and say so. */
static void
session_count_injection(struct session *s, size_t n)
{
	unsigned long	 suppressed;

	s->discarded += n;
	s->bytes_in += n;
	STAT_INC(s->counters, injections);
	STAT_ADD(s->counters, injected_bytes, n);
	if (log_ratelimit_pass(&s->w->rl_inject, time(NULL), &suppressed))
		log_warnx("listener %s client %s: discarded %zu bytes sent after the upgrade verb (STARTTLS command injection attempt)%s",
		    s->lc->name, s->client_addr, n,
		    suppressed ? " (and others not logged)" : "");
}

/* What the client side dropped before its ClientHello (side_skip_to_record), counted once. */
static void
session_count_skipped(struct session *s)
{
	if (s->client.skipped == 0)
		return;
	session_count_injection(s, s->client.skipped);
	s->client.skipped = 0;
}

/*
 * Discard what the client sent behind the upgrade verb, up to the first
 * byte that may start a TLS record: a ClientHello sent at once is kept.
 */
static void
session_discard_injection(struct session *s)
{
	struct evbuffer	*in = side_input(&s->client);
	size_t		 len = evbuffer_get_length(in), keep_from;

	if (len == 0)
		return;
	keep_from = tls_record_start(evbuffer_pullup(in, -1), len);
	if (keep_from == 0)
		return;
	evbuffer_drain(in, keep_from);
	session_count_injection(s, keep_from);
}

static void
session_upgrade(struct session *s)
{
	struct evbuffer	*bin;
	size_t		 n;

	if (s->lc->client_tls != CLIENT_TLS_STARTTLS || s->client.tls_up) {
		session_close(s, END_INTERNAL, "protocol module asked for a second upgrade");
		return;
	}
	session_enter(s, SESSION_UPGRADING);
	session_update_reading(s);
	session_discard_injection(s);
	/*
	 * Backend bytes not yet delivered came before the upgrade: they must
	 * never reach the client inside TLS as if they came after it.
	 */
	if (backend_up(s) && !s->proto->keep_backend_at_upgrade &&
	    (n = evbuffer_get_length(bin = side_input(&s->backend.side))) > 0) {
		evbuffer_drain(bin, n);
		log_warnx("listener %s client %s: discarded %zu bytes the backend %s sent before the upgrade",
		    s->lc->name, s->client_addr, n, s->backend.name);
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
		    s->lc->name, s->client_addr, io->dropped, s->backend.name);
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
		s->direct_tls = io->direct_tls;
		session_upgrade(s);
		return;
	case PROTO_TRANSPARENT:
		s->held = false;
		session_enter(s, SESSION_RELAY);
		if (s->backend.state == BACKEND_IDLE) {
			session_connect_backend(s);
			if (s->dead)
				return;
		}
		session_forward(s, &s->client, &s->backend.side);
		if (backend_up(s))
			session_forward(s, &s->backend.side, &s->client);
		break;
	case PROTO_CONNECT:
		s->held = true;
		s->target = io->connect_to;
		session_connect_backend(s);
		if (s->dead)
			return;
		break;
	case PROTO_CLOSE:
		/* a refusal by policy says which rule or limit it was */
		session_finish(s, io->end, s->refusal_why != NULL &&
		    io->end == proto_refusal_end(s->refusal) ? s->refusal_why : io->reason);
		return;
	}
	if (s->dead)
		return;
	if (!s->backend_full && backend_up(s) &&
	    side_pending(&s->backend.side) >= s->lc->high_watermark)
		s->backend_full = true;
	if (!s->client_full && side_pending(&s->client) >= s->lc->high_watermark)
		s->client_full = true;
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
	struct evbuffer		*in = side_input(&s->client);
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
	} while (!s->dead && s->unparsed && !s->client_full && session_parsing(s) &&
	    evbuffer_get_length(in) > 0);
	return v;
}

/* Hand the buffered input of one side to the protocol module. */
static void
session_parse(struct session *s, struct side *from)
{
	struct proto_io		 io;
	enum proto_verdict	 v;

	if (from == &s->client) {
		v = session_parse_client(s);
	} else {
		s->held = false;	/* the answer the module waited for may be here */
		session_io(s, &io, side_input(from));
		v = s->proto->backend_input(&io);
		session_verdict(s, v, &io);
	}
	/* a backend answer may release client input the module held */
	if (!s->dead && from == &s->backend.side && v == PROTO_CONTINUE &&
	    session_parsing(s) && evbuffer_get_length(side_input(&s->client)) > 0)
		session_parse(s, &s->client);
	/* and the client's EOF may have waited for that input */
	if (!s->dead && from == &s->client)
		session_eof_released(s);
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
	struct evbuffer		*in = side_input(&s->client);
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
		session_close(s, END_PROXY_HEADER_INVALID,
		    "the connection did not start with a valid PROXY protocol header");
		return;
	case PARSE_OK:
		break;
	}
	evbuffer_drain(in, h.len);
	if (!h.local) {
		session_set_client_addr(s, (struct sockaddr *)&h.src, h.srclen);
		cidr_addr_from_sockaddr((struct sockaddr *)&h.src, h.srclen, &s->peer);
		memcpy(&s->addrs->src, &h.src, h.srclen);
		s->addrs->srclen = h.srclen;
		memcpy(&s->addrs->dst, &h.dst, h.dstlen);
		s->addrs->dstlen = h.dstlen;
	}
	log_debug("session %llu: PROXY v%d header: client %s", (unsigned long long)s->id,
	    h.version, s->client_addr);
	session_start(s);
}

/* Bytes from the client. */
static void
session_client_read(struct session *s)
{
	struct evbuffer	*in;

	s->last_ms = now_ms();
	switch (s->state) {
	case SESSION_RELAY:
		session_forward(s, &s->client, &s->backend.side);
		break;
	case SESSION_CLEARTEXT:
	case SESSION_TLS:
		if (!s->held)
			session_parse(s, &s->client);
		break;
	case SESSION_PROXY_HEADER:
		session_proxy_header(s);
		/* what came with the header is the client's */
		if (!s->dead && s->state != SESSION_PROXY_HEADER && s->state != SESSION_HANDSHAKE &&
		    evbuffer_get_length(side_input(&s->client)) > 0)
			session_client_read(s);
		break;
	case SESSION_CLOSING:
		in = side_input(&s->client);
		s->bytes_in += evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	case SESSION_UPGRADING:
	case SESSION_HANDSHAKE:
		break;	/* kept until the state allows it */
	}
}

/* Bytes from the backend, once it is up. */
static void
session_backend_read(struct session *s)
{
	s->last_ms = now_ms();
	switch (s->state) {
	case SESSION_RELAY:
		session_forward(s, &s->backend.side, &s->client);
		break;
	case SESSION_CLEARTEXT:
	case SESSION_TLS:
		session_parse(s, &s->backend.side);
		break;
	default:
		break;
	}
}

/* Wrap the client's socket in server-side TLS. */
static void
session_client_tls(struct session *s)
{
	SSL	*ssl;

	if ((ssl = tls_server_ssl(s->lr->tls_server)) == NULL) {
		session_close(s, END_INTERNAL, "cannot create a TLS session");
		return;
	}
	if (s->direct_tls)
		tls_server_set_direct(ssl);
	else if (s->state == SESSION_UPGRADING)
		side_skip_to_record(&s->client);	/* injected behind the verb, later */
	if (side_start_tls(&s->client, ssl, true) == -1) {
		session_close(s, END_INTERNAL, "cannot create a TLS filter");
		return;
	}
	session_enter(s, SESSION_HANDSHAKE);
	s->phase_deadline = now_ms() + s->lc->timeouts.handshake * 1000ULL;
	session_update_reading(s);
}

/*
 * After a STARTTLS, what the backend sent while the client's handshake
 * ran was sent before anything the client says inside TLS reached it: a
 * late answer to a cleartext command, or bytes nobody asked for.  Read
 * away what has come so far before the client's first command inside
 * TLS goes to the module, which would take it for that command's answer.
 */
static void
session_discard_late_backend(struct session *s)
{
	size_t	 n;
	bool	 more;

	if (s->lc->client_tls != CLIENT_TLS_STARTTLS || s->direct_tls || !backend_up(s) ||
	    s->proto->keep_backend_at_upgrade)
		return;
	if ((n = side_discard_input(&s->backend.side, s->lc->high_watermark, &more)) == 0)
		return;
	log_warnx("listener %s client %s: discarded %zu bytes the backend %s sent during the client's TLS handshake",
	    s->lc->name, s->client_addr, n, s->backend.name);
	if (more)
		session_finish(s, END_BACKEND_ERROR, "the backend sent more than high_watermark "
		    "bytes nobody asked for during the client's TLS handshake");
}

static void
session_client_tls_ready(struct session *s)
{
	struct proto_io	 io;

	/* a refused client has as long again to send what it is refused for */
	s->phase_deadline = s->refusal == PROTO_REFUSAL_NONE ? 0 :
	    now_ms() + s->lc->timeouts.cleartext * 1000ULL;
	if (s->phase_deadline != 0)
		session_arm(s);		/* it may come before the handshake's */
	/* TLS from the first byte, on a STARTTLS listener too (direct_tls) */
	s->upgraded = s->lc->client_tls == CLIENT_TLS_IMPLICIT || s->direct_tls ?
	    "implicit" : "starttls";
	if (s->lc->client_tls == CLIENT_TLS_IMPLICIT || s->direct_tls)
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
	session_count_skipped(s);
	session_discard_late_backend(s);
	if (s->dead)
		return;
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
	if (s->lc->nroutes > 0 && s->backend.state == BACKEND_IDLE && s->pending != NULL &&
	    evbuffer_get_length(s->pending) > 0) {
		/*
		 * What the module let through before TLS (an LDAP Abandon) was
		 * for no backend yet: the route's must see nothing of the
		 * cleartext phase.
		 */
		log_debug("session %llu: dropped %zu bytes sent before TLS, before any route",
		    (unsigned long long)s->id, evbuffer_get_length(s->pending));
		evbuffer_drain(s->pending, evbuffer_get_length(s->pending));
	}
	if (s->backend.state == BACKEND_IDLE && session_connects_itself(s)) {
		session_connect_backend(s);
		return;
	}
	/* what either side sent during the handshake */
	if (evbuffer_get_length(side_input(&s->client)) > 0)
		session_client_read(s);
	/* (with backend.tls = "starttls", what the module kept: SMTP's greeting) */
	if (!s->dead && backend_up(s) &&
	    (evbuffer_get_length(side_input(&s->backend.side)) > 0 ||
	    s->backend.conf->tls == BACKEND_TLS_STARTTLS))
		session_backend_read(s);
}

/* The client's handshake failed (or it left during it). */
static void
session_handshake_failed(struct session *s, enum side_event ev)
{
	int	 kind = HS_FAIL_CLOSED;
	char	 why[256];

	if (ev == SIDE_EOF)
		snprintf(why, sizeof(why), "the client closed the connection during the TLS handshake");
	else if ((kind = side_error_words(&s->client, "client", true, why, sizeof(why))) < 0)
		kind = HS_FAIL_OTHER;
	STAT_INC(s->counters, handshake_failures[kind]);
	session_close(s, END_HANDSHAKE_FAILED, "%s", why);
}

static void
session_side_error(struct session *s, struct side *sd)
{
	char	 why[256];

	side_error_words(sd, sd == &s->client ? "client" : "backend", false, why, sizeof(why));
	if (sd == &s->client)
		session_close(s, END_CLIENT_ERROR, "%s", why);
	else	/* the client is fine: what it is owed still goes out */
		session_finish(s, END_BACKEND_ERROR, why);
}

/*
 * The one dispatcher over the events of both sides (the backend's once
 * it is up), by the session's state.
 */
static void
session_side_cb(struct side *sd, enum side_event ev, void *arg)
{
	struct session	*s = arg;
	bool		 client = sd == &s->client;

	if (s->dead)
		return;
	if (!client && s->state == SESSION_CLOSING && ev != SIDE_DRAINED)
		return;		/* the client gets its last reply; the backend is done */
	switch (ev) {
	case SIDE_READ:
		if (client)
			session_client_read(s);
		else
			session_backend_read(s);
		break;
	case SIDE_DRAINED:
		session_drained(s, sd);
		break;
	case SIDE_TLS_READY:
		if (client && s->state == SESSION_HANDSHAKE)
			session_client_tls_ready(s);
		else
			session_close(s, END_INTERNAL, "a TLS handshake completed in state %s",
			    state_name(s->state));
		break;
	case SIDE_EOF:
	case SIDE_ERROR:
		if (client && (s->state == SESSION_HANDSHAKE || s->state == SESSION_UPGRADING))
			session_handshake_failed(s, ev);
		else if (client && s->state == SESSION_CLOSING)
			session_close(s, s->close_end, "%s", s->close_reason ? s->close_reason : "");
		else if (ev == SIDE_ERROR)
			session_side_error(s, sd);
		else
			session_eof(s, sd);
		break;
	default:
		fatalx("session %llu: unexpected event %d from the %s in state %s",
		    (unsigned long long)s->id, (int)ev, client ? "client" : "backend",
		    state_name(s->state));
	}
}

/*
 * The backend for this session: the module's target, or the route that
 * the client's server name picks, or backend.address.  NULL, with why
 * filled and *end set, when there is none.
 */
static const struct backend_conf *
session_pick_backend(struct session *s, struct tls_client **tls, enum session_end *end,
    char *why, size_t len)
{
	const struct listener_conf	*lc = s->lc;
	const struct route_conf		*r;
	const char			*sni = NULL;
	char				 esc[256];

	*tls = s->lr->tls_backend;
	if (s->target != NULL || lc->nroutes == 0) {
		if (s->target == NULL && !lc->backend.has_address) {
			*end = END_BACKEND_UNREACHABLE;
			snprintf(why, len, "no backend for this request (backend.address is not set)");
			return NULL;
		}
		return &lc->backend;
	}
	if (s->client.tls_up)
		sni = SSL_get_servername(s->client.ssl, TLSEXT_NAMETYPE_host_name);
	if ((r = listener_route(lc, sni)) != NULL) {
		*tls = s->lr->tls_routes[r - lc->routes];
		if (log_debug_enabled())
			log_debug("session %llu: server name %s: the route of %s",
			    (unsigned long long)s->id, log_escape(sni, false, esc, sizeof(esc)),
			    r->where);
		return &r->backend;
	}
	if (lc->backend.has_address)
		return &lc->backend;	/* the default */
	*end = END_NO_ROUTE;
	if (sni == NULL)
		snprintf(why, len, "the client sent no server name, and the listener has no "
		    "default backend");
	else	/* the client's bytes: session_log escapes the reason */
		snprintf(why, len, "no route for the server name \"%.*s\", and the listener "
		    "has no default backend", 253, sni);
	return NULL;
}

/* Reach the backend: the module's target, a route's, or backend.address. */
static void
session_connect_backend(struct session *s)
{
	const struct listener_conf	*lc = s->lc;
	const struct backend_conf	*bc;
	struct tls_client		*tls;
	struct backend_client		 c;
	enum session_end		 end = END_BACKEND_UNREACHABLE;
	char				 why[384];

	if (s->backend.state != BACKEND_IDLE)
		return;
	if (s->refusal != PROTO_REFUSAL_NONE) {
		session_close(s, END_INTERNAL, "the module of a client refused for %s "
		    "asked for the backend", proto_refusal_name(s->refusal));
		return;
	}
	if ((bc = session_pick_backend(s, &tls, &end, why, sizeof(why))) == NULL) {
		session_backend_failed(s, end, why);
		return;
	}
	memset(&c, 0, sizeof(c));
	if (s->addrs != NULL) {
		c.src = s->addrs->srclen ? (const struct sockaddr *)&s->addrs->src : NULL;
		c.dst = s->addrs->dstlen ? (const struct sockaddr *)&s->addrs->dst : NULL;
	}
	c.tls = (struct proxy_tls_info){
		.tls = s->client.tls_up,
		.version = s->client.tls_up ? tls_version_name(s->client.ssl) : NULL,
		.cipher = s->client.tls_up ? tls_cipher_name(s->client.ssl) : NULL,
		.sni = s->client.tls_up && strcmp(tls_sni_name(s->client.ssl), "-") != 0 ?
		    tls_sni_name(s->client.ssl) : NULL,
		.upgrade = client_tls_name(lc->client_tls),
	};
	s->connect_deadline = now_ms() + lc->timeouts.connect * 1000ULL;
	session_arm(s);
	log_debug("session %llu: connecting to the backend", (unsigned long long)s->id);
	/* a name the client chose is looked up without the search list */
	backend_connect(&s->backend, s->w->base, s->target != NULL ? s->w->dns_exact : s->w->dns,
	    bc, tls, s->target != NULL ? s->target : &bc->address, &c);
}

static void
session_backend_up(struct session *s)
{
	struct side	*b = &s->backend.side;

	side_set_cb(b, session_side_cb, s);
	s->connect_deadline = 0;
	if (log_debug_enabled())
		log_debug("session %llu: backend %s up%s%s%s%s", (unsigned long long)s->id,
		    s->backend.name, b->ssl ? ", TLS " : "", b->ssl ? tls_version_name(b->ssl) : "",
		    b->ssl ? " " : "", b->ssl ? tls_cipher_name(b->ssl) : "");
	if (s->pending != NULL) {
		evbuffer_add_buffer(side_output(b), s->pending);
		evbuffer_free(s->pending);
		s->pending = NULL;
	}
	session_queued(s, b);
	if (s->backend.conf->tls == BACKEND_TLS_STARTTLS && session_parsing(s)) {
		/* what the module kept from before TLS (SMTP's greeting) */
		session_parse(s, b);
		if (s->dead)
			return;
	}
	if (s->proto->backend_ready != NULL && session_parsing(s)) {
		struct proto_io io;

		session_io(s, &io, NULL);
		session_verdict(s, s->proto->backend_ready(&io), &io);
		if (s->dead)
			return;
	}
	if (s->state == SESSION_RELAY)
		session_forward(s, &s->client, b);
	if (s->dead)
		return;
	if (s->client.eof) {
		side_want_shut(b);
		session_shut_progress(s, b);
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
static void
session_backend_dialogue(struct session *s)
{
	struct side		*b = &s->backend.side;
	struct proto_io		 io;
	enum proto_verdict	 v;

	s->last_ms = now_ms();
	session_io(s, &io, side_input(b));
	io.to_backend = side_output(b);
	io.end = END_BACKEND_TLS_FAILED;
	v = s->proto->backend_starttls(&io);
	evbuffer_drain(s->w->to_client, evbuffer_get_length(s->w->to_client));
	side_flush(b);
	switch (v) {
	case PROTO_UPGRADE:
		log_debug("session %llu: backend %s upgraded, TLS handshake",
		    (unsigned long long)s->id, s->backend.name);
		backend_dialogue_done(&s->backend);
		break;
	case PROTO_CLOSE:
		session_backend_failed(s, io.end, io.reason);
		break;
	default:
		break;
	}
}

static void
session_backend_cb(struct backend *b, enum backend_result r, enum session_end end,
    const char *why, void *arg)
{
	struct session	*s = arg;

	(void)b;
	if (s->dead)
		return;
	switch (r) {
	case BACKEND_RESULT_UP:
		session_backend_up(s);
		break;
	case BACKEND_RESULT_DIALOGUE:
		session_backend_dialogue(s);
		break;
	case BACKEND_RESULT_FAILED:
		session_backend_failed(s, end, why);
		break;
	default:
		fatalx("session %llu: unexpected backend result %d", (unsigned long long)s->id, (int)r);
	}
}

static void
session_backend_failed(struct session *s, enum session_end end, const char *why)
{
	struct proto_io	 io;

	if (s->dead)
		return;
	/* given up for good: the connect deadline must not fire again */
	backend_cancel(&s->backend);
	s->connect_deadline = 0;
	switch (end) {
	case END_INTERNAL:
		break;
	case END_BACKEND_TIMEOUT:
		STAT_INC(s->counters, backend_failures[BACKEND_FAIL_TIMEOUT]);
		break;
	case END_BACKEND_VERIFY_FAILED:
		STAT_INC(s->counters, backend_failures[BACKEND_FAIL_VERIFY]);
		break;
	case END_BACKEND_TLS_FAILED:
		STAT_INC(s->counters, backend_failures[BACKEND_FAIL_TLS]);
		break;
	case END_NO_ROUTE:
		STAT_INC(s->counters, backend_failures[BACKEND_FAIL_NO_ROUTE]);
		break;
	default:
		STAT_INC(s->counters, backend_failures[BACKEND_FAIL_UNREACHABLE]);
		break;
	}
	if (s->proto->backend_failed != NULL && session_parsing(s)) {
		session_io(s, &io, NULL);
		io.timed_out = end == END_BACKEND_TIMEOUT;
		s->proto->backend_failed(&io);
		session_flush_replies(s);
	}
	session_finish(s, end, why);
}

/* Flush what is queued to the client, then close. */
static void
session_finish(struct session *s, enum session_end end, const char *reason)
{
	if (s->dead)
		return;
	if (!side_open(&s->client) || s->client.fin_sent || s->state == SESSION_HANDSHAKE ||
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
	if (side_pending(&s->client) == 0)
		session_schedule(s, SESSION_WORK_CLOSE);
	else
		session_arm(s);
}

static void
session_log(struct session *s, enum session_end end, const char *reason)
{
	SSL	*ssl = s->client.tls_up ? s->client.ssl : NULL;
	char	 extra[64] = "", sni[256], why[512];

	if (s->discarded > 0)
		snprintf(extra, sizeof(extra), " discarded=%llu",
		    (unsigned long long)s->discarded);
	log_info("session listener=%s client=%s backend=%s tls=%s cipher=%s sni=%s "
	    "upgraded=%s in=%llu out=%llu ms=%llu end=%s%s id=%llu%s%s%s",
	    s->lc->name, s->client_addr, s->backend.name,
	    ssl ? tls_version_name(ssl) : "-", tls_cipher_name(ssl),
	    log_escape(tls_sni_name(ssl), false, sni, sizeof(sni)), s->upgraded,
	    (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
	    (unsigned long long)(now_ms() - s->start_ms), end_name(end), extra,
	    (unsigned long long)s->id,
	    reason && *reason ? " reason=\"" : "",
	    reason && *reason ? log_escape(reason, true, why, sizeof(why)) : "",
	    reason && *reason ? "\"" : "");
}

/*
 * The one way a session ends: log it, stop every callback, and free it
 * from the timer event, outside whatever callback we are in.
 */
static void
session_close(struct session *s, enum session_end end, const char *fmt, ...)
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
	/* refused by policy: so it is logged, however the refusal ended */
	if (s->refusal_why != NULL && end != proto_refusal_end(s->refusal)) {
		char	 first[sizeof(reason)];

		snprintf(first, sizeof(first), "%s", reason);
		snprintf(reason, sizeof(reason), "%s; then %s%s%s", s->refusal_why, end_name(end),
		    first[0] ? ": " : "", first);
		end = proto_refusal_end(s->refusal);
	} else if (s->refusal_why != NULL && reason[0] == '\0')
		snprintf(reason, sizeof(reason), "%s", s->refusal_why);
	/* libevent's error queues are per bufferevent; the thread's must not leak into the next session */
	ERR_clear_error();
	session_count_skipped(s);	/* a handshake that failed or timed out after them */
	session_log(s, end, reason);
	backend_cancel(&s->backend);
	side_quiesce(&s->client);
	side_quiesce(&s->backend.side);
	if (end != END_CLIENT_ERROR)
		side_flush_final(&s->client);
	if (s->backend.side.tls_up && end != END_BACKEND_ERROR)
		side_flush_final(&s->backend.side);
	if (s->timer != NULL)
		event_active(s->timer, EV_TIMEOUT, 1);
	else
		session_free(s);
}

static void
session_free(struct session *s)
{
	struct worker	*w = s->w;

	if (s->proto_state != NULL)
		s->proto->session_free(s->proto_state);
	side_free(&s->client);
	backend_free(&s->backend);
	if (s->pending != NULL)
		evbuffer_free(s->pending);
	if (s->timer != NULL)
		event_free(s->timer);
	free(s->close_reason);
	free(s->refusal_why);
	free(s->addrs);
	clienttab_release(&s->hold);	/* once, whatever ended the session */
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	if (s->refusing)
		w->nrefusing--;
	if (s->counted) {
		atomic_fetch_sub_explicit(&w->d->nsessions, 1, memory_order_relaxed);
		STAT_INC(s->counters, closed);
	}
	STAT_ADD(s->counters, bytes_in, s->bytes_in);
	STAT_ADD(s->counters, bytes_out, s->bytes_out);
	runtime_unref(s->rt);
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
		session_close(s, END_SHUTDOWN, "%s", why);
}
