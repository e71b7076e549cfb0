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
		struct listener_rt *lr = &rt->listeners[i];

		lr->lc = &cfg->listeners[i];
		tlsctx_listener(lr->lc, lr->lc->proto != NULL ? lr->lc->proto->alpn : NULL,
		    &lr->tls_server, &lr->tls_backend, errs);
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
	}
	free(rt->listeners);
	config_unref(rt->cfg);
	free(rt);
}
