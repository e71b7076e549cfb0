/*
 * Listening sockets: bind, accept, the connection limits, and pausing the
 * accept loop when descriptors run out, so that it never spins.
 *
 * A reload keeps every socket whose address is still configured (so that
 * no connection is refused while it happens, and so that a daemon that
 * dropped its privileges keeps its low ports), binds the new ones, and
 * closes the others; if a new one cannot be bound, nothing changes.  The
 * main thread plans (binds) for every worker first; each worker then
 * commits the plan in its own thread.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "log.h"
#include "proto.h"
#include "sdnotify.h"
#include "server.h"
#include "session.h"

#define LISTEN_BACKLOG		1024
#define ACCEPT_PAUSE_MS		250	/* after EMFILE/ENFILE/ENOBUFS/ENOMEM */

/*
 * Past max_connections: the protocol's busy reply, if it has one and the
 * client speaks cleartext first, then close.  One write, never blocking.
 *
 * A protocol whose client speaks first, perhaps TLS, cannot be answered
 * so (refuse_in_session): the client is accepted as a session that only
 * refuses it, at its first message, and never reaches the backend.  At
 * most LISTENER_REFUSING_MAX such sessions per worker, each bounded by
 * the timeouts; past that a plain close.
 */
static void
listener_refuse(struct worker *w, struct listen_sock *ls, int fd,
    const struct sockaddr *sa, socklen_t salen, const char *what, unsigned limit)
{
	const struct listener_rt *lr = ls->lr;
	const struct listener_conf *lc = lr->lc;
	unsigned long	 suppressed;
	char		 peer[SESSION_PEER_MAX];

	STAT_INC(&lr->stats->workers[w->index], refused[REFUSED_MAX_CONNECTIONS]);
	if (log_ratelimit_pass(&w->rl_busy, time(NULL), &suppressed)) {
		addr_format(sa, salen, peer, sizeof(peer));
		log_warnx("listener %s: refused %s: %s max_connections (%u) reached%s",
		    lc->name, peer, what, limit,
		    suppressed ? " (more refusals not logged)" : "");
	}
	if (lc->proto->refuse_in_session) {
		if (w->nrefusing < LISTENER_REFUSING_MAX)
			session_accept(w, ls, fd, sa, salen, PROTO_REFUSAL_BUSY);
		else
			close(fd);
		return;
	}
	if (lc->client_tls != CLIENT_TLS_IMPLICIT && lc->proto->refuse != NULL) {
		struct evbuffer	*reply = w->to_client;
		size_t		 n;

		lc->proto->refuse(reply, PROTO_REFUSAL_BUSY);
		n = evbuffer_get_length(reply);
		(void)send(fd, evbuffer_pullup(reply, -1), n, MSG_DONTWAIT | MSG_NOSIGNAL);
		evbuffer_drain(reply, n);
	}
	close(fd);
}

static void
listener_accept_cb(struct evconnlistener *ev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listen_sock	*ls = arg;
	struct worker		*w = ls->w;
	const struct listener_conf *lc = ls->lr->lc;
	unsigned		 all = atomic_load_explicit(&w->d->nsessions, memory_order_relaxed);

	if (all >= w->rt->cfg->max_connections ||
	    stats_active(ls->lr->stats->workers, w->d->nworkers) >= lc->max_connections) {
		bool global = all >= w->rt->cfg->max_connections;

		listener_refuse(w, ls, fd, sa, (socklen_t)salen,
		    global ? "the global" : "the listener's",
		    global ? w->rt->cfg->max_connections : lc->max_connections);
		return;
	}
	session_accept(w, ls, fd, sa, (socklen_t)salen, PROTO_REFUSAL_NONE);
}

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	listener_resume(arg);
}

int
listener_init(struct worker *w)
{
	w->accept_resume = evtimer_new(w->base, listener_resume_cb, w);
	return w->accept_resume == NULL ? -1 : 0;
}

/* Accepting again, after descriptors ran out. */
void
listener_resume(struct worker *w)
{
	if (!w->accept_paused || w->draining)
		return;
	w->accept_paused = false;
	event_del(w->accept_resume);
	for (size_t i = 0; i < w->nsocks; i++)
		if (w->socks[i]->ev != NULL)
			evconnlistener_enable(w->socks[i]->ev);
}

/*
 * accept() failed for want of a resource (EMFILE above all).  The pending
 * connection keeps the socket readable, so accepting again at once would
 * spin: stop every listener for a moment, and say so at most once a second.
 */
static void
listener_error_cb(struct evconnlistener *ev, void *arg)
{
	struct listen_sock	*ls = arg;
	struct worker		*w = ls->w;
	int			 err = EVUTIL_SOCKET_ERROR();
	unsigned long		 suppressed;
	struct timeval		 tv = { 0, ACCEPT_PAUSE_MS * 1000 };

	if (log_ratelimit_pass(&w->rl_accept, time(NULL), &suppressed))
		log_warnx("listener %s: cannot accept: %s; open sessions go on, accepting paused%s",
		    ls->lr->lc->name, strerror(err),
		    suppressed ? " (repeated)" : "");
	w->accept_paused = true;
	for (size_t i = 0; i < w->nsocks; i++)
		if (w->socks[i]->ev != NULL)
			evconnlistener_disable(w->socks[i]->ev);
	event_add(w->accept_resume, &tv);
}

static int
listener_socket(const struct addr *a, bool reuseport, char *why, size_t len)
{
	int	 fd, one = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(why, len, "socket: %s", strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* one socket per worker on the same address; the kernel spreads clients */
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) {
		snprintf(why, len, "SO_REUSEPORT: %s", strerror(errno));
		close(fd);
		return -1;
	}
	/* [::]:port must not also take 0.0.0.0:port, which may be listed too */
	if (a->ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->sslen) == -1) {
		snprintf(why, len, "cannot listen on %s:%u: %s", a->host, a->port,
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, LISTEN_BACKLOG) == -1) {
		snprintf(why, len, "listen on %s:%u: %s", a->host, a->port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static struct listen_sock *
listen_sock_new(struct worker *w, const struct addr *a, char *why, size_t len)
{
	struct listen_sock	*ls;
	int			 fd;

	/* a socket systemd passed for this address, if any, else our own */
	if ((fd = sdnotify_take_socket(a)) == -1 &&
	    (fd = listener_socket(a, w->d->nworkers > 1, why, len)) == -1)
		return NULL;
	if ((ls = calloc(1, sizeof(*ls))) == NULL) {
		snprintf(why, len, "out of memory");
		close(fd);
		return NULL;
	}
	ls->w = w;
	ls->addr = *a;
	ls->fd = fd;
	return ls;
}

static void
listen_sock_free(struct listen_sock *ls)
{
	if (ls->ev != NULL)
		evconnlistener_free(ls->ev);	/* closes the socket */
	else
		close(ls->fd);
	free(ls);
}

static struct listen_sock *
listen_sock_find(struct worker *w, const struct addr *a)
{
	for (size_t i = 0; i < w->nsocks; i++)
		if (addr_sockaddr_equal((const struct sockaddr *)&w->socks[i]->addr.ss,
		    w->socks[i]->addr.sslen, (const struct sockaddr *)&a->ss, a->sslen))
			return w->socks[i];
	return NULL;
}

/*
 * From the main thread: the listening sockets worker w needs for cfg,
 * reusing those it has and binding the others.  Either every address is
 * bound, or nothing was and errs says why.  w->socks is only read: the
 * worker changes it in listener_commit(), which the main thread waits for.
 */
int
listener_plan(struct worker *w, struct runtime *rt, struct listen_sock ***out,
    size_t *nout, struct config_errors *errs)
{
	const struct config	*cfg = rt->cfg;
	struct listen_sock	**socks;
	size_t			 total = 0, k = 0;
	char			 why[256];

	for (size_t i = 0; i < cfg->nlisteners; i++)
		total += cfg->listeners[i].nlisten;
	if ((socks = calloc(total ? total : 1, sizeof(*socks))) == NULL) {
		config_errors_add(errs, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct listener_conf *lc = &cfg->listeners[i];

		for (size_t j = 0; j < lc->nlisten; j++, k++) {
			if ((socks[k] = listen_sock_find(w, &lc->listen[j])) != NULL)
				continue;
			if ((socks[k] = listen_sock_new(w, &lc->listen[j], why, sizeof(why))) == NULL) {
				config_errors_add(errs, "%s.listen: %s", lc->where, why);
				listener_unplan(w, socks, total);
				return -1;
			}
		}
	}
	*out = socks;
	*nout = total;
	return 0;
}

/* Undo a plan that will not be committed: close what it bound. */
void
listener_unplan(struct worker *w, struct listen_sock **socks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		bool reused = false;

		if (socks[i] == NULL)
			continue;
		for (size_t j = 0; j < w->nsocks; j++)
			if (w->socks[j] == socks[i])
				reused = true;
		if (!reused)
			listen_sock_free(socks[i]);
	}
	free(socks);
}

/*
 * In the worker's thread: make the planned sockets its own.  Close what is
 * no longer configured, watch the new ones, and point each at its listener
 * in w->rt (which the caller has just set).
 */
void
listener_commit(struct worker *w, struct listen_sock **socks, size_t n)
{
	struct runtime	*rt = w->rt;
	size_t		 k = 0;

	for (size_t i = 0; i < w->nsocks; i++) {
		bool keep = false;

		for (size_t j = 0; j < n; j++)
			if (socks[j] == w->socks[i])
				keep = true;
		if (!keep) {
			if (w->index == 0)
				log_info("listener %s: no longer listening on %s:%u",
				    w->socks[i]->lr->lc->name, w->socks[i]->addr.host,
				    w->socks[i]->addr.port);
			listen_sock_free(w->socks[i]);
		}
	}
	for (size_t i = 0; i < rt->cfg->nlisteners; i++) {
		for (size_t j = 0; j < rt->cfg->listeners[i].nlisten; j++, k++) {
			struct listen_sock *ls = socks[k];

			ls->lr = &rt->listeners[i];
			if (ls->ev == NULL) {
				ls->ev = evconnlistener_new(w->base, listener_accept_cb, ls,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_DISABLED, 0, ls->fd);
				if (ls->ev == NULL) {
					log_warnx("listener %s: cannot watch %s:%u; not accepting there",
					    ls->lr->lc->name, ls->addr.host, ls->addr.port);
					continue;
				}
				evconnlistener_set_error_cb(ls->ev, listener_error_cb);
				if (w->index == 0)
					log_info("listener %s: listening on %s:%u (%s, client_tls %s)",
					    ls->lr->lc->name, ls->addr.host, ls->addr.port,
					    ls->lr->lc->proto->name, client_tls_name(ls->lr->lc->client_tls));
			}
			if (!w->accept_paused && !w->draining)
				evconnlistener_enable(ls->ev);
		}
	}
	free(w->socks);
	w->socks = socks;
	w->nsocks = n;
}

/* Stop accepting: every listening socket is closed. */
void
listener_close_all(struct worker *w)
{
	for (size_t i = 0; i < w->nsocks; i++)
		listen_sock_free(w->socks[i]);
	free(w->socks);
	w->socks = NULL;
	w->nsocks = 0;
}
