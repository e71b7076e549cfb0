/*
 * The event loop of the daemon: signals, reload and graceful shutdown.
 *
 * SIGHUP builds a whole new configuration (file, certificates, keys,
 * listening sockets) beside the running one and switches to it only when
 * every part succeeded; sessions keep the configuration they started
 * with.  SIGTERM and SIGINT close the listening sockets at once and give
 * open sessions shutdown_timeout seconds to end by themselves.
 */
#include "autoconfig.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "tlsctx.h"

static bool	server_foreground;
static bool	server_debug;

void
server_set_log(bool foreground, bool debug)
{
	server_foreground = foreground;
	server_debug = debug;
}

/* Log settings as the configuration and the command line say. */
void
server_apply_log(const struct config *cfg)
{
	enum log_target	 target = LOG_TARGET_SYSLOG;

	if (server_foreground)
		target = LOG_TARGET_STDERR;
	else if (cfg->log_target_set)
		target = cfg->log_target;
	log_set(target, server_debug ? LOG_LEVEL_DEBUG : cfg->log_level);
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

static void	server_signal_cb(evutil_socket_t, short, void *);

struct worker *
server_new(struct config *cfg)
{
	struct worker	*w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	TAILQ_INIT(&w->sessions);
	w->cfg = config_ref(cfg);
	if ((w->base = event_base_new()) == NULL)
		goto fail;
	w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (w->dns == NULL) {
		/* no usable resolv.conf: names from /etc/hosts still resolve */
		w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (w->dns != NULL)
			evdns_base_load_hosts(w->dns, NULL);
	}
	w->to_client = evbuffer_new();
	w->to_backend = evbuffer_new();
	w->sig_hup = evsignal_new(w->base, SIGHUP, server_signal_cb, w);
	w->sig_term = evsignal_new(w->base, SIGTERM, server_signal_cb, w);
	w->sig_int = evsignal_new(w->base, SIGINT, server_signal_cb, w);
	if (w->dns == NULL || w->to_client == NULL || w->to_backend == NULL ||
	    w->sig_hup == NULL || w->sig_term == NULL || w->sig_int == NULL ||
	    listener_init(w) == -1)
		goto fail;
	return w;
fail:
	server_free(w);
	return NULL;
}

void
server_free(struct worker *w)
{
	struct listener_stats	*st, *next;

	if (w == NULL)
		return;
	listener_close_all(w);
	if (w->sig_hup)
		event_free(w->sig_hup);
	if (w->sig_term)
		event_free(w->sig_term);
	if (w->sig_int)
		event_free(w->sig_int);
	if (w->accept_resume)
		event_free(w->accept_resume);
	if (w->drain_timer)
		event_free(w->drain_timer);
	if (w->to_client)
		evbuffer_free(w->to_client);
	if (w->to_backend)
		evbuffer_free(w->to_backend);
	if (w->dns)
		evdns_base_free(w->dns, 0);
	if (w->base)
		event_base_free(w->base);
	for (st = w->stats; st != NULL; st = next) {
		next = st->next;
		free(st);
	}
	config_unref(w->cfg);
	free(w);
}

static void
server_reload(struct worker *w)
{
	struct config_errors	 errs = { 0 };
	struct config		*cfg, *old = w->cfg;

	log_info("reloading %s", old->path);
	cfg = config_load_file(old->path, &errs);
	if (cfg == NULL || tlsctx_prepare(cfg, &errs) == -1 ||
	    listener_sync(w, cfg, &errs) == -1) {
		for (size_t i = 0; i < errs.count; i++)
			log_errorx("%s", errs.lines[i]);
		log_errorx("reload of %s failed: the running configuration is kept",
		    old->path);
		config_errors_clear(&errs);
		config_unref(cfg);
		return;
	}
	if ((cfg->user == NULL) != (old->user == NULL) ||
	    (cfg->user && strcmp(cfg->user, old->user) != 0) ||
	    (cfg->pidfile == NULL) != (old->pidfile == NULL) ||
	    (cfg->pidfile && strcmp(cfg->pidfile, old->pidfile) != 0))
		log_warnx("user, group and pidfile changes take effect at the next start");
	w->cfg = cfg;
	config_unref(old);
	server_apply_log(cfg);
	server_warn_selfsigned(cfg);
	log_info("reloaded %s: %zu listener%s; %u open session%s keep their settings",
	    cfg->path, cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s",
	    w->nsessions, w->nsessions == 1 ? "" : "s");
}

static void
server_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;

	log_info("shutdown_timeout reached: closing %u open session%s",
	    w->nsessions, w->nsessions == 1 ? "" : "s");
	session_shutdown_all(w, "still open when shutdown_timeout ran out");
	/* the sessions are freed from their own events, on the next pass */
}

static void
server_drain(struct worker *w)
{
	struct timeval	 tv = { .tv_sec = w->cfg->shutdown_timeout };

	if (w->draining) {
		log_info("second signal: closing every session now");
		session_shutdown_all(w, "a second signal asked to stop at once");
		return;
	}
	w->draining = true;
	listener_close_all(w);
	event_del(w->accept_resume);
	log_info("shutting down: listeners closed, %u open session%s, waiting up to %u s",
	    w->nsessions, w->nsessions == 1 ? "" : "s", w->cfg->shutdown_timeout);
	if (w->nsessions == 0) {
		event_base_loopexit(w->base, NULL);
		return;
	}
	w->drain_timer = evtimer_new(w->base, server_drain_timeout, w);
	if (w->drain_timer == NULL || w->cfg->shutdown_timeout == 0)
		session_shutdown_all(w, "shutdown_timeout is 0");
	else
		evtimer_add(w->drain_timer, &tv);
}

void
server_session_gone(struct worker *w)
{
	if (w->draining && w->nsessions == 0)
		event_base_loopexit(w->base, NULL);
	else if (w->accept_paused)
		listener_resume(w);
}

static void
server_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct worker	*w = arg;

	switch (sig) {
	case SIGHUP:
		if (!w->draining)
			server_reload(w);
		break;
	case SIGTERM:
	case SIGINT:
		server_drain(w);
		break;
	}
}

int
server_run(struct worker *w)
{
	evsignal_add(w->sig_hup, NULL);
	evsignal_add(w->sig_term, NULL);
	evsignal_add(w->sig_int, NULL);
	log_info("starttls-proxy %s started: %zu listener%s", PACKAGE_VERSION,
	    w->cfg->nlisteners, w->cfg->nlisteners == 1 ? "" : "s");
	if (event_base_dispatch(w->base) == -1) {
		log_errorx("the event loop failed");
		return -1;
	}
	log_info("starttls-proxy stopped");
	return 0;
}
