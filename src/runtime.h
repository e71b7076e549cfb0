/*
 * A configuration made ready to run: the TLS contexts each listener needs
 * and, once the server uses it, its listeners' figures.  struct config is
 * what the file says and nothing else (config.c never builds a TLS
 * context); this is what the server builds from it, checks (every
 * certificate, key and cipher list) and either runs or throws away,
 * the shape of hitch's configuration/reconfigure split.  Reference
 * counted: the daemon, each worker and each session hold one, so that a
 * reload never changes what an open session runs on.
 */
#ifndef STP_RUNTIME_H
#define STP_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>

struct config;
struct config_errors;
struct listener_conf;
struct listener_stats;
struct tls_client;
struct tls_server;

struct listener_rt {
	const struct listener_conf *lc;
	struct tls_server	*tls_server;	/* NULL when client_tls is none */
	struct tls_client	*tls_backend;	/* NULL when backend tls is none */
	struct tls_client	**tls_routes;	/* [lc->nroutes], each NULL when its tls is none */
	struct listener_stats	*stats;		/* the server's, by listener name */
};

struct runtime {
	atomic_uint		 refs;
	struct config		*cfg;		/* a reference */
	struct listener_rt	*listeners;	/* [cfg->nlisteners] */
};

/* Every TLS context cfg needs; NULL with errs filled.  Takes a reference to cfg. */
struct runtime	*runtime_new(struct config *, struct config_errors *);
struct runtime	*runtime_ref(struct runtime *);
void		 runtime_unref(struct runtime *);

#endif
