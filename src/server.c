/*
 * The daemon's threads: the main thread (signals, configuration, bind)
 * and the workers (event loops with their sessions).
 *
 * SIGHUP builds a whole new configuration (file, certificates, keys,
 * listening sockets for every worker) beside the running one and hands it
 * to the workers only when every part succeeded; sessions keep the
 * configuration they started with.  SIGTERM and SIGINT close the
 * listening sockets at once and give open sessions shutdown_timeout
 * seconds to end by themselves; a second one closes them at once.
 */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "clienttab.h"
#include "config.h"
#include "log.h"
#include "sdnotify.h"
#include "server.h"
#include "session.h"
#include "tlsctx.h"

#define WORKERS_MAX	1024

static void	server_signal_cb(evutil_socket_t, short, void *);
static void	worker_cmd_cb(evutil_socket_t, short, void *);
static void	worker_exit_cb(evutil_socket_t, short, void *);

unsigned
server_workers_wanted(const struct config *cfg)
{
	long	 n;

	if (cfg->workers != 0)
		return cfg->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
}

/* Log settings as the configuration and the command line say. */
void
server_apply_log(const struct daemon *d, const struct config *cfg)
{
	enum log_target	 target = LOG_TARGET_SYSLOG;

	if (d->foreground)
		target = LOG_TARGET_STDERR;
	else if (cfg->log_target_set)
		target = cfg->log_target;
	log_set(target, d->debug ? LOG_LEVEL_DEBUG : cfg->log_level);
}

/* Say which listeners run on the self-signed default certificate. */
void
server_warn_selfsigned(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct listener_conf *lc = &cfg->listeners[i];

		if (lc->client_tls != CLIENT_TLS_NONE && lc->tls.ncerts == 0)
			log_warnx("listener %s: no certificate configured: using a self-signed "
			    "certificate made at start-up, SHA-256 fingerprint %s",
			    lc->name, tlsctx_selfsigned_fingerprint());
	}
}

/* Point every listener of rt at its figures, made once per name. */
static int
server_attach_stats(struct daemon *d, struct runtime *rt)
{
	for (size_t i = 0; i < rt->cfg->nlisteners; i++) {
		const struct listener_conf *lc = rt->listeners[i].lc;
		struct listener_stats	*st;

		for (st = d->stats; st != NULL; st = st->next)
			if (strcmp(st->name, lc->name) == 0)
				break;
		if (st == NULL) {
			if ((st = calloc(1, sizeof(*st))) == NULL)
				return -1;
			st->workers = aligned_alloc(_Alignof(struct listener_counters),
			    d->nworkers * sizeof(*st->workers));
			if (st->workers == NULL) {
				free(st);
				return -1;
			}
			memset(st->workers, 0, d->nworkers * sizeof(*st->workers));
			snprintf(st->name, sizeof(st->name), "%s", lc->name);
			st->next = d->stats;
			d->stats = st;
		}
		rt->listeners[i].stats = st;
		if (!lc->client_limits.active)
			continue;
		if (st->clients == NULL) {
			if ((st->clients = clienttab_new(lc->client_limits.table_size)) == NULL)
				return -1;
		} else if (clienttab_size(st->clients) != lc->client_limits.table_size)
			log_warnx("%s.table_size: %zu takes effect at the next restart; "
			    "listener %s keeps its table of %zu entries and the sessions it counts",
			    lc->client_limits.where, lc->client_limits.table_size, lc->name,
			    clienttab_size(st->clients));
	}
	return 0;
}

/*
 * An event loop whose epoll changes are batched: an event added and
 * removed within one pass costs no system call (bulk relaying toggles
 * write interest once per write).  It polls again after at most
 * SERVER_DISPATCH_MAX callbacks: a side that ends a pass on its budget
 * with records OpenSSL holds makes itself active again, and libevent
 * would otherwise run it again and again before it looks at any other
 * socket.
 */
#define SERVER_DISPATCH_MAX	32
static struct event_base *
server_base_new(void)
{
	struct event_config	*ec = event_config_new();
	struct event_base	*base;

	if (ec == NULL)
		return NULL;
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	(void)event_config_set_max_dispatch_interval(ec, NULL, SERVER_DISPATCH_MAX, 0);
	base = event_base_new_with_config(ec);
	event_config_free(ec);
	return base;
}

/* Workers */

/* A resolver for a worker; without a usable resolv.conf, /etc/hosts only. */
static struct evdns_base *
worker_dns_new(struct event_base *base)
{
	struct evdns_base	*dns;

	dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (dns == NULL) {
		dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (dns != NULL)
			evdns_base_load_hosts(dns, NULL);
	}
	return dns;
}

static struct worker *
worker_new(struct daemon *d, unsigned index)
{
	struct worker	*w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->d = d;
	w->index = index;
	TAILQ_INIT(&w->sessions);
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->done_cv, NULL);
	if ((w->base = server_base_new()) == NULL)
		return w;	/* the caller sees w->base == NULL */
	w->dns = worker_dns_new(w->base);
	/*
	 * Names a client chose (an HTTP CONNECT target) are looked up as
	 * they are: with resolv.conf's search list, a name that does not
	 * exist would be tried again under the local domains, and an allowed
	 * "nosuch.example.com" could reach "nosuch.example.com.corp.internal".
	 */
	if ((w->dns_exact = worker_dns_new(w->base)) != NULL)
		evdns_base_search_clear(w->dns_exact);
	w->to_client = evbuffer_new();
	w->to_backend = evbuffer_new();
	w->cmd_ev = event_new(w->base, -1, 0, worker_cmd_cb, w);
	if (w->dns == NULL || w->dns_exact == NULL || w->to_client == NULL || w->to_backend == NULL ||
	    w->cmd_ev == NULL || listener_init(w) == -1) {
		event_base_free(w->base);
		w->base = NULL;
	}
	return w;
}

static void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->base != NULL) {
		listener_close_all(w);
		if (w->accept_resume)
			event_free(w->accept_resume);
		if (w->drain_timer)
			event_free(w->drain_timer);
		if (w->cmd_ev)
			event_free(w->cmd_ev);
		evbuffer_free(w->to_client);
		evbuffer_free(w->to_backend);
		evdns_base_free(w->dns, 0);
		evdns_base_free(w->dns_exact, 0);
		event_base_free(w->base);
	}
	runtime_unref(w->rt);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->done_cv);
	free(w);
}

static void
worker_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;

	if (w->index == 0 || log_debug_enabled())
		log_info("shutdown_timeout reached: closing %u open session%s%s",
		    w->nsessions, w->nsessions == 1 ? "" : "s",
		    w->d->nworkers > 1 ? " of a worker" : "");
	session_shutdown_all(w, "still open when shutdown_timeout ran out");
	/* the sessions are freed from their own events, on the next pass */
}

static void
worker_stop_loop(struct worker *w)
{
	event_base_loopbreak(w->base);
}

static void
worker_drain(struct worker *w)
{
	struct timeval	 tv = { .tv_sec = w->rt->cfg->shutdown_timeout };

	w->draining = true;
	listener_close_all(w);
	event_del(w->accept_resume);
	if (w->nsessions == 0) {
		worker_stop_loop(w);
		return;
	}
	w->drain_timer = evtimer_new(w->base, worker_drain_timeout, w);
	if (w->drain_timer == NULL || w->rt->cfg->shutdown_timeout == 0)
		session_shutdown_all(w, "shutdown_timeout is 0");
	else
		evtimer_add(w->drain_timer, &tv);
}

/* A command from the main thread, run in the worker's own loop. */
static void
worker_cmd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker		*w = arg;
	struct worker_cmd	 cmd;

	pthread_mutex_lock(&w->lock);
	cmd = w->cmd;
	w->cmd.kind = WORKER_CMD_NONE;
	pthread_mutex_unlock(&w->lock);

	switch (cmd.kind) {
	case WORKER_CMD_CONFIGURE: {
		struct runtime *old = w->rt;

		w->rt = cmd.rt;
		listener_commit(w, cmd.socks, cmd.nsocks);
		runtime_unref(old);
		break;
	}
	case WORKER_CMD_DRAIN:
		worker_drain(w);
		break;
	case WORKER_CMD_STOP:
		session_shutdown_all(w, "a second signal asked to stop at once");
		break;
	case WORKER_CMD_NONE:
		break;
	}
	pthread_mutex_lock(&w->lock);
	w->cmd_done = true;
	pthread_cond_signal(&w->done_cv);
	pthread_mutex_unlock(&w->lock);
}

/*
 * Hand a command to a worker.  With wait, return once the worker has run
 * it (the main thread plans the next reload from what the worker holds).
 */
static void
worker_post(struct worker *w, struct worker_cmd cmd, bool wait)
{
	pthread_mutex_lock(&w->lock);
	w->cmd = cmd;
	w->cmd_done = false;
	pthread_mutex_unlock(&w->lock);
	if (!w->started) {
		worker_cmd_cb(-1, 0, w);	/* not running yet: this thread owns it */
		return;
	}
	event_active(w->cmd_ev, EV_TIMEOUT, 1);
	if (!wait)
		return;
	pthread_mutex_lock(&w->lock);
	while (!w->cmd_done)
		pthread_cond_wait(&w->done_cv, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

static void *
worker_main(void *arg)
{
	struct worker	*w = arg;

	if (event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY) == -1)
		log_errorx("worker %u: the event loop failed", w->index);
	/* tell the main thread; it joins us */
	atomic_fetch_sub(&w->d->running, 1);
	event_active(w->d->worker_exit, EV_TIMEOUT, 1);
	return NULL;
}

void
server_session_gone(struct worker *w)
{
	if (w->draining && w->nsessions == 0)
		worker_stop_loop(w);
	else if (w->accept_paused)
		listener_resume(w);
}

/* The daemon */

struct daemon *
server_new(struct runtime *rt, bool foreground, bool debug)
{
	struct daemon	*d;
	unsigned	 n = server_workers_wanted(rt->cfg);

	if (evthread_use_pthreads() == -1)
		return NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->rt = runtime_ref(rt);
	d->foreground = foreground;
	d->debug = debug;
	if ((d->base = event_base_new()) == NULL ||
	    (d->workers = calloc(n, sizeof(*d->workers))) == NULL)
		goto fail;
	for (d->nworkers = 0; d->nworkers < n; d->nworkers++) {
		struct worker *w = worker_new(d, d->nworkers);

		if (w == NULL)
			goto fail;
		d->workers[d->nworkers] = w;
		if (w->base == NULL) {
			d->nworkers++;
			goto fail;
		}
	}
	d->sig_hup = evsignal_new(d->base, SIGHUP, server_signal_cb, d);
	d->sig_term = evsignal_new(d->base, SIGTERM, server_signal_cb, d);
	d->sig_int = evsignal_new(d->base, SIGINT, server_signal_cb, d);
	d->worker_exit = event_new(d->base, -1, 0, worker_exit_cb, d);
	if (d->sig_hup == NULL || d->sig_term == NULL || d->sig_int == NULL ||
	    d->worker_exit == NULL || server_attach_stats(d, rt) == -1)
		goto fail;
	return d;
fail:
	server_free(d);
	return NULL;
}

void
server_free(struct daemon *d)
{
	struct listener_stats	*st, *next;

	if (d == NULL)
		return;
	for (unsigned i = 0; i < d->nworkers; i++)
		worker_free(d->workers[i]);
	free(d->workers);
	stats_close(d);		/* its events are on the main loop: before it goes */
	if (d->sig_hup)
		event_free(d->sig_hup);
	if (d->sig_term)
		event_free(d->sig_term);
	if (d->sig_int)
		event_free(d->sig_int);
	if (d->worker_exit)
		event_free(d->worker_exit);
	if (d->base)
		event_base_free(d->base);
	for (st = d->stats; st != NULL; st = next) {
		next = st->next;
		free(st->workers);
		clienttab_free(st->clients);
		free(st);
	}
	runtime_unref(d->rt);
	free(d);
}

/*
 * Plan every worker's sockets for rt and hand them over.  If one cannot
 * be bound, undo the plans made so far and change nothing.
 */
static int
server_configure(struct daemon *d, struct runtime *rt, struct config_errors *errs)
{
	struct listen_sock	**plans[WORKERS_MAX];
	size_t			 nplans[WORKERS_MAX];
	unsigned		 i;

	if (server_attach_stats(d, rt) == -1) {
		config_errors_add(errs, "out of memory");
		return -1;
	}
	for (i = 0; i < d->nworkers; i++) {
		if (listener_plan(d->workers[i], rt, &plans[i], &nplans[i], errs) == -1) {
			while (i-- > 0)
				listener_unplan(d->workers[i], plans[i], nplans[i]);
			return -1;
		}
	}
	for (i = 0; i < d->nworkers; i++)
		worker_post(d->workers[i], (struct worker_cmd){
			.kind = WORKER_CMD_CONFIGURE, .rt = runtime_ref(rt),
			.socks = plans[i], .nsocks = nplans[i] }, true);
	return 0;
}

/* Bind everything for the first configuration, before any thread runs. */
int
server_listen(struct daemon *d, struct config_errors *errs)
{
	char	 why[256];

	if (stats_listen(d, why, sizeof(why)) == -1) {
		config_errors_add(errs, "%s: %s", d->rt->cfg->path, why);
		return -1;
	}
	sdnotify_collect_sockets();
	if (server_configure(d, d->rt, errs) == -1)
		return -1;
	sdnotify_unclaimed();
	return 0;
}

/* After daemon(3): the event loops were made in the parent. */
int
server_after_fork(struct daemon *d)
{
	if (event_reinit(d->base) == -1)
		return -1;
	for (unsigned i = 0; i < d->nworkers; i++)
		if (event_reinit(d->workers[i]->base) == -1)
			return -1;
	return 0;
}

static void
server_reload(struct daemon *d)
{
	struct config_errors	 errs = { 0 };
	struct config		*cfg, *old = d->rt->cfg;
	struct runtime		*rt = NULL, *oldrt = d->rt;

	log_info("reloading %s", old->path);
	sdnotify("RELOADING=1");
	if ((cfg = config_load_file(old->path, &errs)) != NULL)
		rt = runtime_new(cfg, &errs);
	config_unref(cfg);	/* rt holds its own */
	if (rt == NULL || server_configure(d, rt, &errs) == -1) {
		for (size_t i = 0; i < errs.count; i++)
			log_errorx("%s", errs.lines[i]);
		log_errorx("reload of %s failed: the running configuration is kept",
		    old->path);
		config_errors_clear(&errs);
		runtime_unref(rt);
		sdnotify("READY=1\nSTATUS=reload failed: the running configuration is kept");
		return;
	}
	if ((cfg->user == NULL) != (old->user == NULL) ||
	    (cfg->user && strcmp(cfg->user, old->user) != 0) ||
	    (cfg->group == NULL) != (old->group == NULL) ||
	    (cfg->group && strcmp(cfg->group, old->group) != 0) ||
	    (cfg->pidfile == NULL) != (old->pidfile == NULL) ||
	    (cfg->pidfile && strcmp(cfg->pidfile, old->pidfile) != 0))
		log_warnx("user, group and pidfile changes take effect at the next start");
	if (cfg->has_stats != old->has_stats || (cfg->has_stats &&
	    !addr_sockaddr_equal((const struct sockaddr *)&cfg->stats_listen.ss,
	    cfg->stats_listen.sslen, (const struct sockaddr *)&old->stats_listen.ss,
	    old->stats_listen.sslen)))
		log_warnx("stats: a change of stats.listen takes effect at the next start");
	if (server_workers_wanted(cfg) != d->nworkers)
		log_warnx("workers: %u running; a change takes effect at the next start",
		    d->nworkers);
	d->rt = rt;
	server_apply_log(d, cfg);
	server_warn_selfsigned(cfg);
	sdnotify("READY=1\nSTATUS=running; reloaded");
	log_info("reloaded %s: %zu listener%s; %u open session%s keep their settings",
	    cfg->path, cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s",
	    atomic_load(&d->nsessions), atomic_load(&d->nsessions) == 1 ? "" : "s");
	runtime_unref(oldrt);
}

static void
server_drain(struct daemon *d)
{
	if (d->draining) {
		log_info("second signal: closing every session now");
		for (unsigned i = 0; i < d->nworkers; i++)
			worker_post(d->workers[i], (struct worker_cmd){ .kind = WORKER_CMD_STOP },
			    false);
		return;
	}
	d->draining = true;
	sdnotify("STOPPING=1\nSTATUS=draining open sessions");
	for (unsigned i = 0; i < d->nworkers; i++)
		worker_post(d->workers[i], (struct worker_cmd){ .kind = WORKER_CMD_DRAIN }, true);
	log_info("shutting down: listeners closed, %u open session%s, waiting up to %u s",
	    atomic_load(&d->nsessions), atomic_load(&d->nsessions) == 1 ? "" : "s",
	    d->rt->cfg->shutdown_timeout);
}

static void
server_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon	*d = arg;

	switch (sig) {
	case SIGHUP:
		if (!d->draining)
			server_reload(d);
		break;
	case SIGTERM:
	case SIGINT:
		server_drain(d);
		break;
	}
}

static void
worker_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon	*d = arg;

	if (atomic_load(&d->running) == 0)
		event_base_loopbreak(d->base);
}

int
server_run(struct daemon *d)
{
	sigset_t	 all, old;
	int		 rc = 0;

	/* signals go to the main thread only: workers block them all */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	atomic_store(&d->running, d->nworkers);
	d->started = time(NULL);
	for (unsigned i = 0; i < d->nworkers; i++) {
		struct worker *w = d->workers[i];

		if ((errno = pthread_create(&w->thread, NULL, worker_main, w)) != 0) {
			log_errorx("cannot start worker %u: %s", i, strerror(errno));
			atomic_fetch_sub(&d->running, d->nworkers - i);
			rc = -1;
			break;
		}
		w->started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	evsignal_add(d->sig_hup, NULL);
	evsignal_add(d->sig_term, NULL);
	evsignal_add(d->sig_int, NULL);
	if (rc == 0) {
		log_info("starttls-proxy %s started: %zu listener%s, %u worker%s", PACKAGE_VERSION,
		    d->rt->cfg->nlisteners, d->rt->cfg->nlisteners == 1 ? "" : "s",
		    d->nworkers, d->nworkers == 1 ? "" : "s");
		sdnotify("READY=1\nSTATUS=running");
		if (event_base_loop(d->base, EVLOOP_NO_EXIT_ON_EMPTY) == -1) {
			log_errorx("the event loop failed");
			rc = -1;
		}
	} else
		server_drain(d);
	for (unsigned i = 0; i < d->nworkers; i++)
		if (d->workers[i]->started) {
			pthread_join(d->workers[i]->thread, NULL);
			d->workers[i]->started = false;
		}
	log_info("starttls-proxy stopped");
	return rc;
}
