/*
 * A configuration made ready to run: see runtime.h.
 */
#include "autoconfig.h"

#include <stdlib.h>

#include "cfg.h"
#include "config.h"
#include "proto.h"
#include "runtime.h"
#include "tlsctx.h"

struct runtime *
runtime_new(struct config *cfg, struct config_errors *errs)
{
	struct runtime	*rt = calloc(1, sizeof(*rt));
	size_t		 before = errs->count;

	if (rt == NULL || (rt->listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1,
	    sizeof(*rt->listeners))) == NULL) {
		free(rt);
		config_errors_add(errs, "%s: out of memory while loading the configuration", cfg->path);
		errs->oom = true;
		return NULL;
	}
	atomic_init(&rt->refs, 1);
	rt->cfg = config_ref(cfg);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct listener_rt	*lr = &rt->listeners[i];
		const struct proto	*pr = cfg->listeners[i].proto;
		const char		*alpn = pr != NULL ? pr->alpn : NULL;
		struct tls_client	**made;

		lr->lc = &cfg->listeners[i];
		tlsctx_listener(lr->lc, alpn, &lr->tls_server, &lr->tls_backend, errs);
		if (lr->lc->nroutes == 0)
			continue;
		/*
		 * [0] the listener's backend, then the routes': a route shares
		 * the context of any before it made from the same files.
		 */
		if ((made = calloc(lr->lc->nroutes + 1, sizeof(*made))) == NULL ||
		    (lr->tls_routes = calloc(lr->lc->nroutes, sizeof(*lr->tls_routes))) == NULL) {
			free(made);
			config_errors_add(errs, "%s: out of memory while loading the configuration",
			    cfg->path);
			errs->oom = true;
			break;
		}
		made[0] = lr->tls_backend;
		for (size_t k = 0; k < lr->lc->nroutes; k++) {
			tlsctx_backend(&lr->lc->routes[k].backend, alpn, made, k + 1,
			    &lr->tls_routes[k], errs);
			made[k + 1] = lr->tls_routes[k];
		}
		free(made);
	}
	if (errs->count > before || errs->oom) {
		runtime_unref(rt);
		return NULL;
	}
	return rt;
}

struct runtime *
runtime_ref(struct runtime *rt)
{
	atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
	return rt;
}

void
runtime_unref(struct runtime *rt)
{
	if (rt == NULL || atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < rt->cfg->nlisteners; i++) {
		tls_server_free(rt->listeners[i].tls_server);
		tls_client_free(rt->listeners[i].tls_backend);
		for (size_t k = 0; rt->listeners[i].tls_routes != NULL &&
		    k < rt->cfg->listeners[i].nroutes; k++)
			tls_client_free(rt->listeners[i].tls_routes[k]);
		free(rt->listeners[i].tls_routes);
	}
	free(rt->listeners);
	config_unref(rt->cfg);
	free(rt);
}
