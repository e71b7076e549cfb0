/*
 * The configuration: libconfig text in, an immutable, validated struct
 * config out.  Nothing here opens a socket or loads a certificate; the
 * TLS material is loaded by tlsctx.c from what this file validated.
 *
 * A struct config is reference counted: the running daemon holds one
 * reference, and every session holds one for its whole life, so a reload
 * never changes the settings under an open session.
 */
#ifndef STP_CONFIG_H
#define STP_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "cfg.h"
#include "cidr.h"
#include "clienttab.h"
#include "log.h"
#include "util.h"

struct proto;

enum client_tls {
	CLIENT_TLS_STARTTLS,
	CLIENT_TLS_IMPLICIT,
	CLIENT_TLS_NONE,
};

enum backend_tls {
	BACKEND_TLS_NONE,
	BACKEND_TLS_IMPLICIT,
	BACKEND_TLS_STARTTLS,
};

enum verify_client {
	VERIFY_CLIENT_NONE,
	VERIFY_CLIENT_OPTIONAL,
	VERIFY_CLIENT_REQUIRE,
};

enum proxy_proto_version {
	PROXY_PROTO_NONE,
	PROXY_PROTO_V1,
	PROXY_PROTO_V2,
};

#define CONFIG_DEFAULT_MAX_CONNECTIONS	10000
#define CONFIG_DEFAULT_SHUTDOWN_TIMEOUT	30
#define CONFIG_DEFAULT_HIGH_WATERMARK	262144
#define CONFIG_DEFAULT_LOW_WATERMARK	65536
#define CONFIG_DEFAULT_TIMEOUT_CONNECT	10
#define CONFIG_DEFAULT_TIMEOUT_HANDSHAKE 15
#define CONFIG_DEFAULT_TIMEOUT_CLEARTEXT 60
#define CONFIG_DEFAULT_TIMEOUT_IDLE	300
#define CONFIG_WATERMARK_MIN		1024
#define CONFIG_WATERMARK_MAX		(64 * 1024 * 1024)
#define CONFIG_TIMEOUT_MAX		86400
#define CONFIG_MAX_CONNECTIONS_MAX	1000000
#define CONFIG_ROUTES_MAX		256	/* routes in a listener */
#define CONFIG_ROUTE_NAMES_MAX		256	/* server_names in a route */
#define CONFIG_ACCESS_MAX		4096	/* rules in one access list */
#define CONFIG_DEFAULT_PREFIX_IPV4	24
#define CONFIG_DEFAULT_PREFIX_IPV6	64
#define CONFIG_DEFAULT_BURST		10
#define CONFIG_DEFAULT_TABLE_SIZE	65536

struct cert_conf {
	char		*cert;
	char		*key;
	char		*passphrase_file;	/* NULL: the key is not encrypted */
	char		*where;			/* "file:line: path" for errors */
	/* "file:line: path.setting" of each, for errors about its file */
	char		*cert_where;
	char		*key_where;		/* cert's, when key is not set */
	char		*passphrase_where;
};

struct tls_conf {
	struct cert_conf *certs;		/* [0] is the default */
	size_t		 ncerts;
	int		 min_version;		/* TLS1_2_VERSION or TLS1_3_VERSION */
	char		*ciphers;		/* NULL: our default */
	char		*ciphersuites;		/* NULL: OpenSSL's default */
	char		*ciphers_where;		/* "file:line: ...ciphers", for tlsctx.c */
	char		*ciphersuites_where;
	char		*client_ca;
	enum verify_client verify_client;
	char		*ticket_key_file;	/* NULL: OpenSSL's own key, per process */
	char		*where;
	char		*client_ca_where;	/* "file:line: path.client_ca" */
	char		*ticket_key_where;
};

struct backend_conf {
	bool		 has_address;
	struct addr	 address;
	enum backend_tls tls;
	char		*ca;			/* NULL: the system store */
	bool		 verify;
	char		*server_name;		/* NULL: the host in address */
	char		**pins;
	size_t		 npins;
	char		*cert;
	char		*key;
	enum proxy_proto_version proxy_protocol;
	char		*where;
	char		*ca_where;		/* "file:line: path.ca"; the group's */
	char		*cert_where;		/*   line when the setting is absent */
	char		*key_where;		/* cert's, when key is not set */
};

/* One of a listener's routes: a backend for the clients that ask for these names. */
struct route_conf {
	char		**names;		/* lower case: exact, or "*.domain" */
	size_t		 nnames;
	struct backend_conf backend;
	char		*where;
};

struct timeouts_conf {
	unsigned	 connect;
	unsigned	 handshake;
	unsigned	 cleartext;
	unsigned	 idle;
};

/* client_limits = { ... }; all 0 (no limit) when the group is absent */
struct client_limits_conf {
	bool		 active;		/* some limit is not 0 */
	struct clienttab_limits limits;
	size_t		 table_size;
	char		*where;
};

struct listener_conf {
	char		*name;
	struct addr	*listen;
	size_t		 nlisten;
	const struct proto *proto;
	enum client_tls	 client_tls;
	bool		 require_tls;
	bool		 accept_proxy_protocol;
	unsigned	 max_connections;
	struct cidr_rule *access;		/* checked in order; NULL when none */
	size_t		 naccess;
	struct client_limits_conf client_limits;
	size_t		 high_watermark;
	size_t		 low_watermark;
	struct timeouts_conf timeouts;
	bool		 has_tls;
	struct tls_conf	 tls;
	struct backend_conf backend;		/* with routes: the default, if has_address */
	struct route_conf *routes;		/* chosen by the client's SNI, first match */
	size_t		 nroutes;
	bool		 routes_proxy_protocol;	/* a route's backend wants a PROXY header */
	void		*proto_conf;		/* the protocol's own settings */
	char		*where;
};

struct config {
	atomic_uint	 refs;
	char		*path;
	char		*user;
	char		*group;
	char		*pidfile;
	bool		 log_target_set;
	enum log_target	 log_target;
	enum log_level	 log_level;
	unsigned	 workers;
	unsigned	 max_connections;
	unsigned	 shutdown_timeout;
	bool		 has_stats;
	struct addr	 stats_listen;		/* the Prometheus endpoint */
	struct listener_conf *listeners;
	size_t		 nlisteners;
};

struct config *config_load_file(const char *path, struct config_errors *);
struct config *config_load_string(const char *text, const char *name,
		    struct config_errors *);

struct config	*config_ref(struct config *);
void		 config_unref(struct config *);

const char	*client_tls_name(enum client_tls);

/*
 * The route for the server name a client's handshake chose (NULL: the
 * client sent none), or NULL when no route names it: then the listener's
 * backend, if it has an address, is the default.  A name that is not a
 * valid host name matches no route.
 */
const struct route_conf *listener_route(const struct listener_conf *, const char *sni);

#endif
