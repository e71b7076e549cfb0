/*
 * Loading and validating the configuration file (starttls-proxy.conf(5)).
 *
 * Every problem is collected, not only the first, as one line
 * "file:line: path: problem (expected ...)", so that an operator fixes a
 * file in one pass.  Unknown settings are errors and suggest the nearest
 * known name.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libconfig.h>
#include <openssl/ssl.h>

#include "config.h"
#include "proto.h"
#include "tbucket.h"
#include "util.h"



static const char *const global_keys[] = {
	"user", "group", "pidfile", "log_target", "log_level", "workers",
	"max_connections", "shutdown_timeout", "stats", "listeners", NULL
};
static const char *const listener_keys[] = {
	"name", "listen", "protocol", "client_tls", "require_tls",
	"accept_proxy_protocol", "access", "client_limits", "max_connections",
	"high_watermark", "low_watermark", "timeouts", "tls", "backend", "routes", NULL
};
static const char *const client_limits_keys[] = {
	"sessions_per_address", "sessions_per_prefix", "prefix_ipv4", "prefix_ipv6",
	"new_per_second", "burst", "table_size", NULL
};
static const char *const timeout_keys[] = {
	"connect", "handshake", "cleartext", "idle", NULL
};
static const char *const tls_keys[] = {
	"certificates", "min_version", "ciphers", "ciphersuites", "client_ca",
	"verify_client", "ticket_key_file", NULL
};
static const char *const cert_keys[] = {
	"cert", "key", "passphrase_file", NULL
};
static const char *const backend_keys[] = {
	"address", "tls", "ca", "verify", "server_name", "pin_sha256",
	"cert", "key", "proxy_protocol", NULL
};
static const char *const route_keys[] = {
	"server_names", "backend", NULL
};
static const char *const stats_keys[] = {
	"listen", NULL
};

/* Parts of a listener */

static void
parse_timeouts(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct timeouts_conf *t)
{
	unsigned long long v;

	cfg_check_members(w, g, path, timeout_keys);
	if (cfg_get_uint(w, g, path, "connect", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->connect = (unsigned)v;
	if (cfg_get_uint(w, g, path, "handshake", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->handshake = (unsigned)v;
	if (cfg_get_uint(w, g, path, "cleartext", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->cleartext = (unsigned)v;
	if (cfg_get_uint(w, g, path, "idle", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->idle = (unsigned)v;
}

/* access = [ "allow 192.0.2.0/24", "deny all" ]; */
static void
parse_access(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct listener_conf *lc)
{
	const char		**rules;
	const config_setting_t	**where;
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX], why[160];
	size_t			 n;

	if (cfg_get_string_list(w, g, path, "access", &rules, &where, &n) != 1)
		return;
	cfg_child_path(p, sizeof(p), path, "access");
	if (n > CONFIG_ACCESS_MAX) {
		cfg_problem(w, config_setting_get_member(g, "access"), p,
		    "%zu rules (expected at most %d)", n, CONFIG_ACCESS_MAX);
		n = 0;
	} else if ((lc->access = cfg_calloc(w, n ? n : 1, sizeof(*lc->access))) == NULL)
		n = 0;
	for (size_t i = 0; i < n; i++) {
		if (cidr_rule_parse(rules[i], &lc->access[lc->naccess], why, sizeof(why)) == -1) {
			cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
			cfg_problem(w, where[i], ep, "\"%.80s\": %s (expected \"allow PREFIX\", "
			    "\"deny PREFIX\", \"allow all\" or \"deny all\", where PREFIX is "
			    "an IPv4 or IPv6 address, optionally /length)", rules[i], why);
			continue;
		}
		lc->naccess++;
	}
	free(rules);
	free(where);
}

/* client_limits = { sessions_per_address = 10; ... }; */
static void
parse_client_limits(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct client_limits_conf *c)
{
	struct clienttab_limits	*l = &c->limits;
	unsigned long long	 v;

	cfg_check_members(w, g, path, client_limits_keys);
	c->where = cfg_where(w, g, path);
	if (cfg_get_uint(w, g, path, "sessions_per_address", 0, CONFIG_MAX_CONNECTIONS_MAX, &v) == 1)
		l->per_address = (unsigned)v;
	if (cfg_get_uint(w, g, path, "sessions_per_prefix", 0, CONFIG_MAX_CONNECTIONS_MAX, &v) == 1)
		l->per_prefix = (unsigned)v;
	if (cfg_get_uint(w, g, path, "prefix_ipv4", 1, 32, &v) == 1)
		l->prefix4 = (unsigned)v;
	if (cfg_get_uint(w, g, path, "prefix_ipv6", 1, 128, &v) == 1)
		l->prefix6 = (unsigned)v;
	if (cfg_get_uint(w, g, path, "new_per_second", 0, TBUCKET_RATE_MAX, &v) == 1)
		l->rate = (unsigned)v;
	if (cfg_get_uint(w, g, path, "burst", 1, TBUCKET_BURST_MAX, &v) == 1)
		l->burst = (unsigned)v;
	if (cfg_get_uint(w, g, path, "table_size", CLIENTTAB_SIZE_MIN, CLIENTTAB_SIZE_MAX, &v) == 1)
		c->table_size = (size_t)v;
	c->active = l->per_address != 0 || l->per_prefix != 0 || l->rate != 0;
}

static void
parse_certificates(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct tls_conf *tls)
{
	const config_setting_t	*list = config_setting_get_member(g, "certificates");
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX];
	int			 n;

	if (list == NULL)
		return;
	cfg_child_path(p, sizeof(p), path, "certificates");
	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		cfg_problem(w, list, p, "expected a list of groups ( { cert = ...; key = ...; } ), found %s",
		    cfg_type_name(list));
		return;
	}
	n = config_setting_length(list);
	if (n == 0)
		return;
	if ((tls->certs = cfg_calloc(w, (size_t)n, sizeof(*tls->certs))) == NULL)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t	*e = config_setting_get_elem(list, (unsigned)i);
		struct cert_conf	*c = &tls->certs[tls->ncerts];

		cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
		if (!config_setting_is_group(e)) {
			cfg_problem(w, e, ep, "expected a group { cert = ...; key = ...; }, found %s",
			    cfg_type_name(e));
			continue;
		}
		cfg_check_members(w, e, ep, cert_keys);
		tls->ncerts++;
		c->where = cfg_where(w, e, ep);
		if (cfg_get_nonempty(w, e, ep, "cert", &c->cert) == 0)
			cfg_problem(w, e, ep, "cert is required (a PEM file with the certificate chain)");
		cfg_get_nonempty(w, e, ep, "key", &c->key);
		cfg_get_nonempty(w, e, ep, "passphrase_file", &c->passphrase_file);
		c->cert_where = cfg_member_where(w, e, ep, "cert");
		c->key_where = cfg_member_where(w, e, ep, c->key ? "key" : "cert");
		c->passphrase_where = cfg_member_where(w, e, ep, "passphrase_file");
		if (c->key == NULL && c->cert != NULL)
			c->key = cfg_strdup(w, c->cert);
	}
}

static void
parse_tls(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct tls_conf *tls)
{
	static const char *const versions[] = { "TLSv1.2", "TLSv1.3", NULL };
	static const char *const verify[] = { "none", "optional", "require", NULL };
	char	 p[CFG_PATH_MAX];
	int	 i;

	cfg_check_members(w, g, path, tls_keys);
	tls->where = cfg_where(w, g, path);
	parse_certificates(w, g, path, tls);
	if (cfg_get_enum(w, g, path, "min_version", versions, &i) == 1)
		tls->min_version = i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
	/* the lists are OpenSSL's to judge: tlsctx.c checks them, at these lines */
	cfg_get_nonempty(w, g, path, "ciphers", &tls->ciphers);
	cfg_get_nonempty(w, g, path, "ciphersuites", &tls->ciphersuites);
	tls->ciphers_where = cfg_member_where(w, g, path, "ciphers");
	tls->ciphersuites_where = cfg_member_where(w, g, path, "ciphersuites");
	cfg_get_nonempty(w, g, path, "client_ca", &tls->client_ca);
	if (cfg_get_enum(w, g, path, "verify_client", verify, &i) == 1)
		tls->verify_client = (enum verify_client)i;
	if (tls->verify_client != VERIFY_CLIENT_NONE && tls->client_ca == NULL) {
		cfg_child_path(p, sizeof(p), path, "verify_client");
		cfg_problem(w, config_setting_get_member(g, "verify_client"), p,
		    "needs client_ca, the CA certificates that client certificates are checked against");
	}
	cfg_get_nonempty(w, g, path, "ticket_key_file", &tls->ticket_key_file);
	tls->client_ca_where = cfg_member_where(w, g, path, "client_ca");
	tls->ticket_key_where = cfg_member_where(w, g, path, "ticket_key_file");
}

static void
parse_pins(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct backend_conf *b)
{
	const char		**pins;
	const config_setting_t	**where;
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX];
	unsigned char		 digest[32];
	size_t			 n;

	if (cfg_get_string_list(w, g, path, "pin_sha256", &pins, &where, &n) != 1)
		return;
	cfg_child_path(p, sizeof(p), path, "pin_sha256");
	if ((b->pins = cfg_calloc(w, n, sizeof(*b->pins))) == NULL)
		n = 0;
	for (size_t i = 0; i < n; i++) {
		if (pin_decode(pins[i], digest) == -1) {
			cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
			cfg_problem(w, where[i], ep,
			    "\"%s\" is not a pin (expected the base64 of a SHA-256 digest, 44 characters)",
			    pins[i]);
			continue;
		}
		if ((b->pins[b->npins] = cfg_strdup(w, pins[i])) == NULL)
			break;
		b->npins++;
	}
	free(pins);
	free(where);
}

static void
parse_backend(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct backend_conf *b)
{
	static const char *const tlsnames[] = { "none", "implicit", "starttls", NULL };
	static const char *const ppnames[] = { "none", "v1", "v2", NULL };
	const char	*addr;
	const char	*why;
	char		 p[CFG_PATH_MAX];
	int		 i;
	bool		 verify_set = false;

	cfg_check_members(w, g, path, backend_keys);
	b->where = cfg_where(w, g, path);
	if (cfg_get_string(w, g, path, "address", &addr) == 1) {
		if (addr_parse(addr, ADDR_ALLOW_NAME | ADDR_ALLOW_UNIX, &b->address, &why) == -1) {
			cfg_child_path(p, sizeof(p), path, "address");
			cfg_problem(w, config_setting_get_member(g, "address"), p,
			    "\"%s\": %s (expected host:port, [v6]:port or unix:/path)", addr, why);
		} else
			b->has_address = true;
	}
	if (cfg_get_enum(w, g, path, "tls", tlsnames, &i) == 1) {
		b->tls = (enum backend_tls)i;
	}
	cfg_get_nonempty(w, g, path, "ca", &b->ca);
	if (cfg_get_bool(w, g, path, "verify", &b->verify) == 1)
		verify_set = true;
	if (!verify_set)
		b->verify = b->tls != BACKEND_TLS_NONE;
	if (cfg_get_nonempty(w, g, path, "server_name", &b->server_name) == 1 &&
	    !hostname_valid(b->server_name) && !ip_literal(b->server_name)) {
		cfg_child_path(p, sizeof(p), path, "server_name");
		cfg_problem(w, config_setting_get_member(g, "server_name"), p,
		    "\"%s\" is not a host name or IP address", b->server_name);
	}
	parse_pins(w, g, path, b);
	cfg_get_nonempty(w, g, path, "cert", &b->cert);
	cfg_get_nonempty(w, g, path, "key", &b->key);
	if (b->key != NULL && b->cert == NULL) {
		cfg_child_path(p, sizeof(p), path, "key");
		cfg_problem(w, config_setting_get_member(g, "key"), p,
		    "a client key needs its certificate (cert)");
	}
	b->ca_where = cfg_member_where(w, g, path, "ca");
	b->cert_where = cfg_member_where(w, g, path, "cert");
	b->key_where = cfg_member_where(w, g, path, b->key ? "key" : "cert");
	if (b->cert != NULL && b->key == NULL)
		b->key = cfg_strdup(w, b->cert);
	if (cfg_get_enum(w, g, path, "proxy_protocol", ppnames, &i) == 1)
		b->proxy_protocol = (enum proxy_proto_version)i;
	if (b->tls == BACKEND_TLS_NONE) {
		const char *const tls_only[] = { "ca", "server_name", "pin_sha256", "cert", "key", NULL };

		for (size_t k = 0; tls_only[k] != NULL; k++) {
			if (config_setting_get_member(g, tls_only[k]) == NULL)
				continue;
			cfg_child_path(p, sizeof(p), path, tls_only[k]);
			cfg_problem(w, config_setting_get_member(g, tls_only[k]), p,
			    "only applies with tls = \"implicit\" or \"starttls\" (the backend is reached in plaintext)");
		}
		if (verify_set && b->verify) {
			cfg_child_path(p, sizeof(p), path, "verify");
			cfg_problem(w, config_setting_get_member(g, "verify"), p,
			    "only applies with tls = \"implicit\" or \"starttls\" (the backend is reached in plaintext)");
		}
	}
	if (b->has_address && b->address.kind == ADDR_UNIX && b->tls != BACKEND_TLS_NONE &&
	    b->verify && b->server_name == NULL && b->npins == 0) {
		cfg_child_path(p, sizeof(p), path, "server_name");
		cfg_problem(w, g, p, "a TLS backend on a unix socket needs server_name (or pin_sha256, or verify = false) to check its certificate against");
	}
}

/* backend.tls = "starttls" needs a protocol that can drive the backend's upgrade. */
static void
check_backend_starttls(struct cfg_walk *w, const config_setting_t *g, const char *path,
    const struct listener_conf *lc, const struct backend_conf *b)
{
	char	 names[64], p[CFG_PATH_MAX];

	if (b->tls != BACKEND_TLS_STARTTLS || lc->proto == NULL ||
	    lc->proto->backend_starttls != NULL)
		return;
	proto_backend_starttls_names(names, sizeof(names));
	cfg_child_path(p, sizeof(p), path, "tls");
	cfg_problem(w, config_setting_get_member(g, "tls"), p,
	    "protocol %s has no upgrade verb to send to the backend "
	    "(expected none or implicit; starttls works with %s)", lc->proto->name, names);
}

/* A route's server names: valid host names or "*.domain", in lower case, none twice. */
static void
parse_route_names(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct listener_conf *lc, struct route_conf *r)
{
	const char		**names;
	const config_setting_t	**where;
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX];
	size_t			 n;
	int			 rc;

	cfg_child_path(p, sizeof(p), path, "server_names");
	rc = cfg_get_string_list(w, g, path, "server_names", &names, &where, &n);
	if (rc == 0)
		cfg_problem(w, g, path, "server_names is required (a list of names such as "
		    "\"mail.example.com\" or \"*.example.com\")");
	if (rc != 1)
		return;
	if (n > CONFIG_ROUTE_NAMES_MAX) {
		cfg_problem(w, config_setting_get_member(g, "server_names"), p,
		    "%zu names is too many (expected at most %d)", n, CONFIG_ROUTE_NAMES_MAX);
		n = 0;
	}
	if (n > 0 && (r->names = cfg_calloc(w, n, sizeof(*r->names))) == NULL)
		n = 0;
	for (size_t i = 0; i < n; i++) {
		const char	*name = names[i];
		bool		 wild = strncmp(name, "*.", 2) == 0;
		char		*copy;

		cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
		if (!hostname_valid(wild ? name + 2 : name) || ip_literal(name) ||
		    name[strlen(name) - 1] == '.' || strchr(wild ? name + 2 : name, '*')) {
			cfg_problem(w, where[i], ep, "\"%s\" is not a server name "
			    "(expected a host name such as \"mail.example.com\", or \"*.example.com\" "
			    "for any name under example.com)", name);
			continue;
		}
		/* the same name twice: the second is never reached */
		for (size_t k = 0; k <= (size_t)(r - lc->routes); k++) {
			const struct route_conf *o = &lc->routes[k];

			for (size_t j = 0; j < o->nnames; j++) {
				if (strcasecmp(o->names[j], name) != 0)
					continue;
				cfg_problem(w, where[i], ep, "\"%s\" is already routed by %s",
				    name, o->where);
				goto next;
			}
		}
		if ((copy = cfg_strdup(w, name)) == NULL)
			break;
		for (char *c = copy; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		r->names[r->nnames++] = copy;
next:		;
	}
	free(names);
	free(where);
}

/* routes = ( { server_names = [ ... ]; backend = { ... }; }, ... ) */
static void
parse_routes(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct listener_conf *lc)
{
	const config_setting_t	*list = config_setting_get_member(g, "routes");
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX], bp[CFG_PATH_MAX];
	int			 n;

	if (list == NULL)
		return;
	cfg_child_path(p, sizeof(p), path, "routes");
	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		cfg_problem(w, list, p, "expected a list of groups ( { server_names = [ ... ]; "
		    "backend = { ... }; } ), found %s", cfg_type_name(list));
		return;
	}
	n = config_setting_length(list);
	if (n == 0) {
		cfg_problem(w, list, p, "must hold at least one route");
		return;
	}
	if (n > CONFIG_ROUTES_MAX) {
		cfg_problem(w, list, p, "%d routes is too many (expected at most %d)", n,
		    CONFIG_ROUTES_MAX);
		return;
	}
	if ((lc->routes = cfg_calloc(w, (size_t)n, sizeof(*lc->routes))) == NULL)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t	*e = config_setting_get_elem(list, (unsigned)i);
		const config_setting_t	*sub;
		struct route_conf	*r = &lc->routes[lc->nroutes];
		bool			 bad = false;

		cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
		if (!config_setting_is_group(e)) {
			cfg_problem(w, e, ep, "expected a group { server_names = [ ... ]; "
			    "backend = { ... }; }, found %s", cfg_type_name(e));
			continue;
		}
		cfg_check_members(w, e, ep, route_keys);
		lc->nroutes++;
		r->where = cfg_where(w, e, ep);
		parse_route_names(w, e, ep, lc, r);
		cfg_child_path(bp, sizeof(bp), ep, "backend");
		if ((sub = cfg_get_group(w, e, ep, "backend", &bad)) != NULL) {
			parse_backend(w, sub, bp, &r->backend);
			if (!r->backend.has_address && config_setting_get_member(sub, "address") == NULL)
				cfg_problem(w, sub, bp, "address is required (host:port, [v6]:port or unix:/path)");
			check_backend_starttls(w, sub, bp, lc, &r->backend);
			if (r->backend.proxy_protocol != PROXY_PROTO_NONE)
				lc->routes_proxy_protocol = true;
		} else if (!bad)
			cfg_problem(w, e, ep, "backend is required (backend = { address = \"host:port\"; };)");
	}
}

/*
 * Routes choose the backend by the name in the client's ClientHello, so
 * the backend must wait for the handshake: never where the protocol
 * relays the backend before the upgrade, nor without client TLS.
 */
static void
check_routes(struct cfg_walk *w, const config_setting_t *g, const char *path,
    const struct listener_conf *lc)
{
	const config_setting_t	*list = config_setting_get_member(g, "routes");
	const struct proto	*pr = lc->proto;
	char			 p[CFG_PATH_MAX];
	const char		*name = lc->name ? lc->name : "?";

	if (list == NULL || pr == NULL)
		return;
	cfg_child_path(p, sizeof(p), path, "routes");
	if (lc->client_tls == CLIENT_TLS_NONE)
		cfg_problem(w, list, p, "listener %s: routes choose the backend by the server name "
		    "of the client's TLS handshake, and with client_tls = \"none\" there is none "
		    "(expected client_tls = \"implicit\"%s, or no routes)", name,
		    pr->has_upgrade && pr->backend_before_upgrade == NULL ? " or \"starttls\"" : "");
	else if (lc->client_tls == CLIENT_TLS_STARTTLS && pr->backend_before_upgrade != NULL &&
	    !(pr->waits_with_require_tls && lc->require_tls))
		cfg_problem(w, list, p, "listener %s: routes need a backend that waits for the "
		    "client's TLS handshake, but with protocol %s and client_tls = \"starttls\" %s "
		    "(expected client_tls = \"implicit\"%s, or no routes)", name, pr->name,
		    pr->backend_before_upgrade,
		    pr->waits_with_require_tls ? " or require_tls = true" : "");
}

static void
parse_listen(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct listener_conf *lc)
{
	const char		**addrs;
	const config_setting_t	**where;
	char			 p[CFG_PATH_MAX], ep[CFG_PATH_MAX];
	const char		*why;
	size_t			 n;
	int			 r;

	r = cfg_get_string_list(w, g, path, "listen", &addrs, &where, &n);
	if (r == 0)
		cfg_problem(w, g, path, "listen is required (\"host:port\" or a list of them)");
	if (r != 1)
		return;
	cfg_child_path(p, sizeof(p), path, "listen");
	if ((lc->listen = cfg_calloc(w, n, sizeof(*lc->listen))) == NULL)
		n = 0;
	for (size_t i = 0; i < n; i++) {
		struct addr *a = &lc->listen[lc->nlisten];

		if (n == 1 && config_setting_type(where[0]) == CONFIG_TYPE_STRING &&
		    config_setting_get_member(g, "listen") == where[0])
			snprintf(ep, sizeof(ep), "%s", p);
		else
			cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
		if (addr_parse(addrs[i], 0, a, &why) == -1) {
			cfg_problem(w, where[i], ep,
			    "\"%s\": %s (expected 0.0.0.0:port, 127.0.0.1:port or [::]:port)",
			    addrs[i], why);
			continue;
		}
		lc->nlisten++;
	}
	free(addrs);
	free(where);
}

static bool
listener_name_valid(const char *s)
{
	if (*s == '\0' || strlen(s) > 64)
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("-_.", *s) == NULL)
			return false;
	return true;
}

static void
parse_listener(struct cfg_walk *w, const config_setting_t *g, const char *path,
    struct config *cfg, struct listener_conf *lc)
{
	static const char *const ctls[] = { "starttls", "implicit", "none", NULL };
	const config_setting_t	*sub;
	const char		*v;
	char			 p[CFG_PATH_MAX], sp[CFG_PATH_MAX];
	const char		*known[32];
	size_t			 nknown = 0;
	unsigned long long	 n;
	int			 i;
	bool			 bad = false, ctls_set = false;

	/* the listener's own settings, and the blocks of the protocols */
	for (; listener_keys[nknown] != NULL; nknown++)
		known[nknown] = listener_keys[nknown];
	proto_blocks(known + nknown, sizeof(known) / sizeof(known[0]) - nknown);
	cfg_check_members(w, g, path, known);
	lc->where = cfg_where(w, g, path);
	lc->max_connections = cfg->max_connections;
	lc->client_limits.limits = (struct clienttab_limits){
		.prefix4 = CONFIG_DEFAULT_PREFIX_IPV4,
		.prefix6 = CONFIG_DEFAULT_PREFIX_IPV6,
		.burst = CONFIG_DEFAULT_BURST,
	};
	lc->client_limits.table_size = CONFIG_DEFAULT_TABLE_SIZE;
	lc->high_watermark = CONFIG_DEFAULT_HIGH_WATERMARK;
	lc->low_watermark = CONFIG_DEFAULT_LOW_WATERMARK;
	lc->timeouts = (struct timeouts_conf){
		.connect = CONFIG_DEFAULT_TIMEOUT_CONNECT,
		.handshake = CONFIG_DEFAULT_TIMEOUT_HANDSHAKE,
		.cleartext = CONFIG_DEFAULT_TIMEOUT_CLEARTEXT,
		.idle = CONFIG_DEFAULT_TIMEOUT_IDLE,
	};
	lc->tls.min_version = TLS1_2_VERSION;

	if (cfg_get_string(w, g, path, "name", &v) == 1) {
		cfg_child_path(p, sizeof(p), path, "name");
		if (!listener_name_valid(v))
			cfg_problem(w, config_setting_get_member(g, "name"), p,
			    "\"%s\" is not a valid name (expected 1 to 64 letters, digits, '-', '_' or '.')", v);
		else
			lc->name = cfg_strdup(w, v);
	} else if (config_setting_get_member(g, "name") == NULL)
		cfg_problem(w, g, path, "name is required (a unique name used in logs)");

	parse_listen(w, g, path, lc);

	if (cfg_get_string(w, g, path, "protocol", &v) == 1) {
		lc->proto = proto_lookup(v);
		if (lc->proto == NULL) {
			cfg_child_path(p, sizeof(p), path, "protocol");
			cfg_problem(w, config_setting_get_member(g, "protocol"), p,
			    "unknown protocol \"%s\" (expected one of %s)", v, proto_names());
		}
	} else if (config_setting_get_member(g, "protocol") == NULL)
		cfg_problem(w, g, path, "protocol is required (expected one of %s)", proto_names());

	if (cfg_get_enum(w, g, path, "client_tls", ctls, &i) == 1) {
		lc->client_tls = (enum client_tls)i;
		ctls_set = true;
	}
	if (lc->proto != NULL) {
		if (!ctls_set)
			lc->client_tls = lc->proto->default_client_tls;
		lc->require_tls = lc->proto->default_require_tls;
		if (lc->client_tls == CLIENT_TLS_STARTTLS && !lc->proto->has_upgrade) {
			cfg_child_path(p, sizeof(p), path, "client_tls");
			cfg_problem(w, config_setting_get_member(g, "client_tls"), p,
			    "protocol %s has no upgrade verb (expected implicit or none)",
			    lc->proto->name);
		}
	}
	if (cfg_get_bool(w, g, path, "require_tls", &lc->require_tls) == 1 &&
	    lc->require_tls && lc->client_tls == CLIENT_TLS_NONE) {
		cfg_child_path(p, sizeof(p), path, "require_tls");
		cfg_problem(w, config_setting_get_member(g, "require_tls"), p,
		    "cannot be true with client_tls = \"none\"");
	}
	if (lc->client_tls == CLIENT_TLS_NONE || lc->client_tls == CLIENT_TLS_IMPLICIT)
		lc->require_tls = false;	/* nothing to require: no upgrade happens */

	cfg_get_bool(w, g, path, "accept_proxy_protocol", &lc->accept_proxy_protocol);

	if (cfg_get_uint(w, g, path, "max_connections", 1, CONFIG_MAX_CONNECTIONS_MAX, &n) == 1)
		lc->max_connections = (unsigned)n;
	if (cfg_get_uint(w, g, path, "high_watermark", CONFIG_WATERMARK_MIN, CONFIG_WATERMARK_MAX, &n) == 1)
		lc->high_watermark = (size_t)n;
	if (cfg_get_uint(w, g, path, "low_watermark", 0, CONFIG_WATERMARK_MAX, &n) == 1)
		lc->low_watermark = (size_t)n;
	if (lc->low_watermark >= lc->high_watermark) {
		cfg_child_path(p, sizeof(p), path, "low_watermark");
		cfg_problem(w, config_setting_get_member(g, "low_watermark") ?
		    config_setting_get_member(g, "low_watermark") : g, p,
		    "%zu must be below high_watermark (%zu)", lc->low_watermark,
		    lc->high_watermark);
	}

	parse_access(w, g, path, lc);
	cfg_child_path(sp, sizeof(sp), path, "client_limits");
	if ((sub = cfg_get_group(w, g, path, "client_limits", &bad)) != NULL)
		parse_client_limits(w, sub, sp, &lc->client_limits);

	cfg_child_path(sp, sizeof(sp), path, "timeouts");
	if ((sub = cfg_get_group(w, g, path, "timeouts", &bad)) != NULL)
		parse_timeouts(w, sub, sp, &lc->timeouts);

	cfg_child_path(sp, sizeof(sp), path, "tls");
	if ((sub = cfg_get_group(w, g, path, "tls", &bad)) != NULL) {
		lc->has_tls = true;
		parse_tls(w, sub, sp, &lc->tls);
		if (lc->client_tls == CLIENT_TLS_NONE)
			cfg_problem(w, sub, sp, "client_tls is \"none\": this listener never speaks TLS to clients");
	}

	parse_routes(w, g, path, lc);
	cfg_child_path(sp, sizeof(sp), path, "backend");
	if ((sub = cfg_get_group(w, g, path, "backend", &bad)) != NULL)
		parse_backend(w, sub, sp, &lc->backend);
	else if (!bad && config_setting_get_member(g, "routes") == NULL &&
	    (lc->proto == NULL || !lc->proto->backend_optional))
		cfg_problem(w, g, path, "backend is required (backend = { address = \"host:port\"; };)");
	if (sub != NULL)
		check_backend_starttls(w, sub, sp, lc, &lc->backend);
	if (sub != NULL && !lc->backend.has_address &&
	    config_setting_get_member(sub, "address") == NULL &&
	    (lc->proto == NULL || !lc->proto->backend_optional))
		cfg_problem(w, sub, sp, "address is required (host:port, [v6]:port or unix:/path)");

	/* A protocol's own block is allowed only on a listener of that protocol. */
	for (size_t k = 0; proto_table[k] != NULL; k++) {
		const struct proto *pr = proto_table[k];

		if (pr->block == NULL || pr == lc->proto)
			continue;
		cfg_child_path(sp, sizeof(sp), path, pr->block);
		if ((sub = config_setting_get_member(g, pr->block)) != NULL)
			cfg_problem(w, sub, sp, "only applies to listeners with protocol = \"%s\"",
			    pr->name);
	}
	if (lc->proto != NULL && lc->proto->conf_parse != NULL) {
		sub = NULL;
		if (lc->proto->block != NULL) {
			cfg_child_path(sp, sizeof(sp), path, lc->proto->block);
			sub = cfg_get_group(w, g, path, lc->proto->block, &bad);
		}
		lc->proto_conf = lc->proto->conf_parse(w, sub, sp);
	}
	if (lc->proto != NULL && lc->proto->conf_check != NULL)
		lc->proto->conf_check(w, g, path, lc);
	check_routes(w, g, path, lc);
}

static void
parse_listeners(struct cfg_walk *w, const config_setting_t *root, struct config *cfg)
{
	const config_setting_t	*list = config_setting_get_member(root, "listeners");
	char			 p[CFG_PATH_MAX];
	int			 n;

	if (list == NULL) {
		config_errors_add(w->errs, "%s: listeners: is required (a list of listener groups)", w->file);
		return;
	}
	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		cfg_problem(w, list, "listeners", "expected a list ( { ... }, { ... } ), found %s",
		    cfg_type_name(list));
		return;
	}
	n = config_setting_length(list);
	if (n == 0) {
		cfg_problem(w, list, "listeners", "must hold at least one listener");
		return;
	}
	if ((cfg->listeners = cfg_calloc(w, (size_t)n, sizeof(*cfg->listeners))) == NULL)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);

		cfg_index_path(p, sizeof(p), "listeners", (unsigned)i);
		if (!config_setting_is_group(e)) {
			cfg_problem(w, e, p, "expected a listener group { name = ...; ... }, found %s",
			    cfg_type_name(e));
			continue;
		}
		parse_listener(w, e, p, cfg, &cfg->listeners[cfg->nlisteners++]);
	}

	/* Names are unique, and no address is listened on twice. */
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct listener_conf *a = &cfg->listeners[i];

		for (size_t j = 0; j < i; j++) {
			struct listener_conf *b = &cfg->listeners[j];

			if (a->name != NULL && b->name != NULL && strcmp(a->name, b->name) == 0)
				config_errors_add(w->errs, "%s.name: \"%s\" is already the name of %s",
				    a->where, a->name, b->where);
			for (size_t x = 0; x < a->nlisten; x++)
				for (size_t y = 0; y < b->nlisten; y++)
					if (addr_sockaddr_equal((struct sockaddr *)&a->listen[x].ss,
					    a->listen[x].sslen, (struct sockaddr *)&b->listen[y].ss,
					    b->listen[y].sslen))
						config_errors_add(w->errs,
						    "%s.listen: %s:%u is already listened on by %s",
						    a->where, a->listen[x].host, a->listen[x].port, b->where);
		}
		for (size_t x = 0; x < a->nlisten; x++)
			for (size_t y = 0; y < x; y++)
				if (addr_sockaddr_equal((struct sockaddr *)&a->listen[x].ss,
				    a->listen[x].sslen, (struct sockaddr *)&a->listen[y].ss,
				    a->listen[y].sslen))
					config_errors_add(w->errs, "%s.listen: %s:%u is listed twice",
					    a->where, a->listen[x].host, a->listen[x].port);
	}
}

static void
parse_global(struct cfg_walk *w, const config_setting_t *root, struct config *cfg)
{
	static const char *const targets[] = { "syslog", "stderr", NULL };
	const config_setting_t	*s;
	const char		*v;
	unsigned long long	 n;
	int			 i;
	bool			 bad = false;

	cfg_check_members(w, root, "", global_keys);
	cfg_get_nonempty(w, root, "", "user", &cfg->user);
	if (cfg_get_nonempty(w, root, "", "group", &cfg->group) == 1 && cfg->user == NULL &&
	    config_setting_get_member(root, "user") == NULL)
		cfg_problem(w, config_setting_get_member(root, "group"), "group",
		    "needs user: the group is set when dropping privileges to user");
	cfg_get_nonempty(w, root, "", "pidfile", &cfg->pidfile);
	if (cfg_get_enum(w, root, "", "log_target", targets, &i) == 1) {
		cfg->log_target = i == 0 ? LOG_TARGET_SYSLOG : LOG_TARGET_STDERR;
		cfg->log_target_set = true;
	}
	if (cfg_get_string(w, root, "", "log_level", &v) == 1 &&
	    log_level_parse(v, &cfg->log_level) == -1)
		cfg_problem(w, config_setting_get_member(root, "log_level"), "log_level",
		    "unknown level \"%s\" (expected one of error, warning, info, debug)", v);
	if (cfg_get_uint(w, root, "", "workers", 0, 1024, &n) == 1)
		cfg->workers = (unsigned)n;	/* 0: one per CPU */
	if (cfg_get_uint(w, root, "", "max_connections", 1, CONFIG_MAX_CONNECTIONS_MAX, &n) == 1)
		cfg->max_connections = (unsigned)n;
	if (cfg_get_uint(w, root, "", "shutdown_timeout", 0, 3600, &n) == 1)
		cfg->shutdown_timeout = (unsigned)n;
	if ((s = cfg_get_group(w, root, "", "stats", &bad)) != NULL) {
		const char *why;

		cfg_check_members(w, s, "stats", stats_keys);
		if (cfg_get_string(w, s, "stats", "listen", &v) == 1) {
			if (addr_parse(v, 0, &cfg->stats_listen, &why) == -1)
				cfg_problem(w, config_setting_get_member(s, "listen"), "stats.listen",
				    "\"%s\": %s (expected 127.0.0.1:port or [::1]:port)", v, why);
			else
				cfg->has_stats = true;
		} else if (config_setting_get_member(s, "listen") == NULL)
			cfg_problem(w, s, "stats", "listen is required (the address of /metrics, e.g. \"127.0.0.1:9273\")");
	}
}

static struct config *
config_new(struct cfg_walk *w, const char *path)
{
	struct config	*cfg = cfg_calloc(w, 1, sizeof(*cfg));

	if (cfg == NULL)
		return NULL;
	atomic_init(&cfg->refs, 1);
	cfg->path = cfg_strdup(w, path);
	cfg->log_target = LOG_TARGET_SYSLOG;
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->workers = 1;
	cfg->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
	cfg->shutdown_timeout = CONFIG_DEFAULT_SHUTDOWN_TIMEOUT;
	return cfg;
}

static struct config *
config_from(config_t *lc, int read_ok, const char *name, struct config_errors *errs)
{
	struct config	*cfg;
	struct cfg_walk	 w = { .errs = errs, .file = name, .before = errs->count };

	if (!read_ok) {
		const char *file = config_error_file(lc);

		if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
			config_errors_add(errs, "%s: cannot read the file: %s", name,
			    config_error_text(lc));
		else
			config_errors_add(errs, "%s:%d: %s", file ? file : name,
			    config_error_line(lc), config_error_text(lc));
		return NULL;
	}
	if ((cfg = config_new(&w, name)) == NULL)
		return NULL;
	parse_global(&w, config_root_setting(lc), cfg);
	parse_listeners(&w, config_root_setting(lc), cfg);
	if (cfg_failed(&w)) {
		config_unref(cfg);
		return NULL;
	}
	return cfg;
}

struct config *
config_load_file(const char *path, struct config_errors *errs)
{
	config_t	 lc;
	struct config	*cfg;
	char		*dir, *slash;
	int		 ok;

	config_init(&lc);
	/* @include paths are relative to the file that includes them */
	if ((dir = strdup(path)) == NULL) {
		config_errors_add(errs, "%s: out of memory while loading the configuration", path);
		errs->oom = true;
		config_destroy(&lc);
		return NULL;
	}
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		config_set_include_dir(&lc, dir[0] ? dir : "/");
	}
	ok = config_read_file(&lc, path);
	cfg = config_from(&lc, ok, path, errs);
	config_destroy(&lc);
	free(dir);
	return cfg;
}

struct config *
config_load_string(const char *text, const char *name, struct config_errors *errs)
{
	config_t	 lc;
	struct config	*cfg;
	int		 ok;

	config_init(&lc);
	ok = config_read_string(&lc, text);
	cfg = config_from(&lc, ok, name, errs);
	config_destroy(&lc);
	return cfg;
}

struct config *
config_ref(struct config *cfg)
{
	atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
	return cfg;
}

static void
backend_conf_free(struct backend_conf *b)
{
	free(b->ca);
	free(b->server_name);
	for (size_t i = 0; i < b->npins; i++)
		free(b->pins[i]);
	free(b->pins);
	free(b->cert);
	free(b->key);
	free(b->where);
	free(b->ca_where);
	free(b->cert_where);
	free(b->key_where);
}

static void
listener_conf_free(struct listener_conf *lc)
{
	free(lc->name);
	free(lc->listen);
	free(lc->where);
	free(lc->access);
	free(lc->client_limits.where);
	for (size_t i = 0; i < lc->tls.ncerts; i++) {
		free(lc->tls.certs[i].cert);
		free(lc->tls.certs[i].key);
		free(lc->tls.certs[i].passphrase_file);
		free(lc->tls.certs[i].where);
		free(lc->tls.certs[i].cert_where);
		free(lc->tls.certs[i].key_where);
		free(lc->tls.certs[i].passphrase_where);
	}
	free(lc->tls.certs);
	free(lc->tls.ciphers);
	free(lc->tls.ciphersuites);
	free(lc->tls.client_ca);
	free(lc->tls.ticket_key_file);
	free(lc->tls.where);
	free(lc->tls.client_ca_where);
	free(lc->tls.ciphers_where);
	free(lc->tls.ciphersuites_where);
	free(lc->tls.ticket_key_where);
	backend_conf_free(&lc->backend);
	for (size_t i = 0; i < lc->nroutes; i++) {
		for (size_t k = 0; k < lc->routes[i].nnames; k++)
			free(lc->routes[i].names[k]);
		free(lc->routes[i].names);
		backend_conf_free(&lc->routes[i].backend);
		free(lc->routes[i].where);
	}
	free(lc->routes);
	if (lc->proto != NULL && lc->proto->conf_free != NULL)
		lc->proto->conf_free(lc->proto_conf);
}

void
config_unref(struct config *cfg)
{
	if (cfg == NULL)
		return;
	if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		listener_conf_free(&cfg->listeners[i]);
	free(cfg->listeners);
	free(cfg->path);
	free(cfg->user);
	free(cfg->group);
	free(cfg->pidfile);
	free(cfg);
}

const char *
client_tls_name(enum client_tls t)
{
	switch (t) {
	case CLIENT_TLS_STARTTLS:	return "starttls";
	case CLIENT_TLS_IMPLICIT:	return "implicit";
	case CLIENT_TLS_NONE:		return "none";
	}
	return "?";
}

const struct route_conf *
listener_route(const struct listener_conf *lc, const char *sni)
{
	if (sni == NULL || !hostname_valid(sni))
		return NULL;
	for (size_t i = 0; i < lc->nroutes; i++)
		for (size_t k = 0; k < lc->routes[i].nnames; k++)
			if (server_name_match(lc->routes[i].names[k], sni))
				return &lc->routes[i];
	return NULL;
}
