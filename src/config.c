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
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "proto.h"
#include "tlsctx.h"
#include "util.h"

#define PATH_MAX_TEXT	256

/* Where we are while walking the file. */
struct walk {
	struct config_errors	*errs;
	const char		*file;	/* for settings libconfig cannot place */
	size_t			 before;	/* error count when the walk started */
};

static const char *const global_keys[] = {
	"user", "group", "pidfile", "log_target", "log_level", "workers",
	"max_connections", "shutdown_timeout", "stats", "listeners", NULL
};
static const char *const listener_keys[] = {
	"name", "listen", "protocol", "client_tls", "require_tls",
	"accept_proxy_protocol", "max_connections", "high_watermark",
	"low_watermark", "timeouts", "tls", "backend", "line", "http", NULL
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
static const char *const line_keys[] = {
	"command", "reply", "refusal", NULL
};
static const char *const http_keys[] = {
	"connect_allow", NULL
};
static const char *const stats_keys[] = {
	"listen", NULL
};

/* Error collection */

void
config_errors_add(struct config_errors *errs, const char *fmt, ...)
{
	va_list	 ap;
	char	*line, **lines;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) == -1)
		line = NULL;
	va_end(ap);
	if (line == NULL)
		return;
	lines = reallocarray(errs->lines, errs->count + 1, sizeof(*lines));
	if (lines == NULL) {
		free(line);
		return;
	}
	errs->lines = lines;
	errs->lines[errs->count++] = line;
}

void
config_errors_clear(struct config_errors *errs)
{
	for (size_t i = 0; i < errs->count; i++)
		free(errs->lines[i]);
	free(errs->lines);
	errs->lines = NULL;
	errs->count = 0;
}

/* "file:line: path" of a setting. */
static void
where_of(const struct walk *w, const config_setting_t *s, const char *path,
    char *buf, size_t len)
{
	const char	*file = config_setting_source_file(s);
	unsigned	 line = config_setting_source_line(s);

	if (file == NULL)
		file = w->file;
	if (line == 0)
		snprintf(buf, len, "%s: %s", file, path);
	else
		snprintf(buf, len, "%s:%u: %s", file, line, path);
}

static void PRINTFLIKE(4, 5)
problem(struct walk *w, const config_setting_t *s, const char *path,
    const char *fmt, ...)
{
	char	 where[PATH_MAX_TEXT + 64 + PATH_MAX];
	char	 text[1024];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	where_of(w, s, path, where, sizeof(where));
	config_errors_add(w->errs, "%s: %s", where, text);
}

static char *
xstrdup(const char *s)
{
	char	*p = strdup(s);

	if (p == NULL)
		abort();	/* at load time only: not reachable from the network */
	return p;
}

static char *
where_dup(const struct walk *w, const config_setting_t *s, const char *path)
{
	char	 buf[PATH_MAX_TEXT + 64 + PATH_MAX];

	where_of(w, s, path, buf, sizeof(buf));
	return xstrdup(buf);
}

static void
child_path(char *buf, size_t len, const char *parent, const char *name)
{
	if (parent[0] == '\0')
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%s.%s", parent, name);
}

/*
 * "file:line: path.key" of a member, for the errors about the file it
 * names that only loading finds; the group's line when it is absent.
 */
static char *
member_where(const struct walk *w, const config_setting_t *group,
    const char *path, const char *key)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[PATH_MAX_TEXT];

	child_path(p, sizeof(p), path, key);
	return where_dup(w, s != NULL ? s : group, p);
}

static void
index_path(char *buf, size_t len, const char *parent, unsigned i)
{
	snprintf(buf, len, "%s.[%u]", parent, i);
}

static void
join_names(char *buf, size_t len, const char *const *names)
{
	size_t	 off = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i] != NULL && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    i == 0 ? "" : ", ", names[i]);
}

/* The known name nearest to a misspelt one, or NULL when none is close. */
static const char *
nearest_name(const char *name, const char *const *known)
{
	const char	*best = NULL;
	unsigned	 bestd = UINT_MAX;

	for (size_t i = 0; known[i] != NULL; i++) {
		unsigned d = edit_distance(name, known[i]);

		if (d < bestd) {
			bestd = d;
			best = known[i];
		}
	}
	if (best != NULL && bestd <= 2 && bestd < strlen(name))
		return best;
	return NULL;
}

/* Every member of a group must be a known name. */
static void
check_members(struct walk *w, const config_setting_t *group, const char *path,
    const char *const *known)
{
	char	 p[PATH_MAX_TEXT], list[512];
	int	 n = config_setting_length(group);

	for (int i = 0; i < n; i++) {
		const config_setting_t	*m = config_setting_get_elem(group, (unsigned)i);
		const char		*name = config_setting_name(m);
		bool			 ok = false;

		for (size_t k = 0; known[k] != NULL; k++)
			if (strcmp(known[k], name) == 0)
				ok = true;
		if (ok)
			continue;
		child_path(p, sizeof(p), path, name);
		const char *near = nearest_name(name, known);
		if (near != NULL) {
			problem(w, m, p, "unknown setting (did you mean \"%s\"?)", near);
		} else {
			join_names(list, sizeof(list), known);
			problem(w, m, p, "unknown setting (expected one of %s)", list);
		}
	}
}

static const char *
type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_GROUP:		return "a group";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:		return "an integer";
	case CONFIG_TYPE_FLOAT:		return "a float";
	case CONFIG_TYPE_STRING:	return "a string";
	case CONFIG_TYPE_BOOL:		return "a boolean";
	case CONFIG_TYPE_ARRAY:		return "an array";
	case CONFIG_TYPE_LIST:		return "a list";
	}
	return "something else";
}

/*
 * Typed getters.  Each returns 1 when the setting is present and valid,
 * 0 when absent (out untouched), -1 after reporting a problem.
 */
static int
get_string(struct walk *w, const config_setting_t *group, const char *parent,
    const char *key, const char **out)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[PATH_MAX_TEXT];

	if (s == NULL)
		return 0;
	child_path(p, sizeof(p), parent, key);
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		problem(w, s, p, "expected a string, found %s", type_name(s));
		return -1;
	}
	*out = config_setting_get_string(s);
	return 1;
}

static int
get_nonempty(struct walk *w, const config_setting_t *group, const char *parent,
    const char *key, char **out)
{
	const char	*v;
	int		 r = get_string(w, group, parent, key, &v);
	char		 p[PATH_MAX_TEXT];

	if (r != 1)
		return r;
	if (v[0] == '\0') {
		child_path(p, sizeof(p), parent, key);
		problem(w, config_setting_get_member(group, key), p,
		    "must not be empty");
		return -1;
	}
	free(*out);
	*out = xstrdup(v);
	return 1;
}

static int
get_uint(struct walk *w, const config_setting_t *group, const char *parent,
    const char *key, long long min, long long max, unsigned long long *out)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[PATH_MAX_TEXT];
	long long		 v;

	if (s == NULL)
		return 0;
	child_path(p, sizeof(p), parent, key);
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64) {
		problem(w, s, p, "expected an integer from %lld to %lld, found %s",
		    min, max, type_name(s));
		return -1;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		problem(w, s, p, "%lld is out of range (expected %lld to %lld)",
		    v, min, max);
		return -1;
	}
	*out = (unsigned long long)v;
	return 1;
}

static int
get_bool(struct walk *w, const config_setting_t *group, const char *parent,
    const char *key, bool *out)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[PATH_MAX_TEXT];

	if (s == NULL)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		child_path(p, sizeof(p), parent, key);
		problem(w, s, p, "expected true or false, found %s", type_name(s));
		return -1;
	}
	*out = config_setting_get_bool(s) != 0;
	return 1;
}

/* A string that must be one of names[]; *out is its index. */
static int
get_enum(struct walk *w, const config_setting_t *group, const char *parent,
    const char *key, const char *const *names, int *out)
{
	const char	*v;
	char		 p[PATH_MAX_TEXT], list[256];
	int		 r = get_string(w, group, parent, key, &v);

	if (r != 1)
		return r;
	for (int i = 0; names[i] != NULL; i++) {
		if (strcmp(names[i], v) == 0) {
			*out = i;
			return 1;
		}
	}
	child_path(p, sizeof(p), parent, key);
	join_names(list, sizeof(list), names);
	problem(w, config_setting_get_member(group, key), p,
	    "unknown value \"%s\" (expected one of %s)", v, list);
	return -1;
}

/*
 * A setting that is one string or an array or list of strings.
 * *out gets a NULL-terminated array of the setting's own strings (not
 * copied) and *settings the setting each came from.
 */
static int
get_string_list(struct walk *w, const config_setting_t *group,
    const char *parent, const char *key, const char ***out,
    const config_setting_t ***settings, size_t *n)
{
	config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[PATH_MAX_TEXT];
	int			 len;

	if (s == NULL)
		return 0;
	child_path(p, sizeof(p), parent, key);
	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		*out = calloc(2, sizeof(**out));
		*settings = calloc(1, sizeof(**settings));
		if (*out == NULL || *settings == NULL)
			abort();
		(*out)[0] = config_setting_get_string(s);
		(*settings)[0] = s;
		*n = 1;
		return 1;
	}
	if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(s) != CONFIG_TYPE_LIST) {
		problem(w, s, p, "expected a string or a list of strings, found %s",
		    type_name(s));
		return -1;
	}
	len = config_setting_length(s);
	if (len == 0) {
		problem(w, s, p, "must not be an empty list");
		return -1;
	}
	*out = calloc((size_t)len + 1, sizeof(**out));
	*settings = calloc((size_t)len, sizeof(**settings));
	if (*out == NULL || *settings == NULL)
		abort();
	for (int i = 0; i < len; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char ep[PATH_MAX_TEXT];

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			index_path(ep, sizeof(ep), p, (unsigned)i);
			problem(w, e, ep, "expected a string, found %s", type_name(e));
			free(*out);
			free(*settings);
			return -1;
		}
		(*out)[i] = config_setting_get_string(e);
		(*settings)[i] = e;
	}
	*n = (size_t)len;
	return 1;
}

/* A group member that must be a group, or absent. */
static const config_setting_t *
get_group(struct walk *w, const config_setting_t *group, const char *parent,
    const char *key, bool *bad)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[PATH_MAX_TEXT];

	if (s == NULL)
		return NULL;
	if (!config_setting_is_group(s)) {
		child_path(p, sizeof(p), parent, key);
		problem(w, s, p, "expected a group { ... }, found %s", type_name(s));
		*bad = true;
		return NULL;
	}
	return s;
}

/* Parts of a listener */

static void
parse_timeouts(struct walk *w, const config_setting_t *g, const char *path,
    struct timeouts_conf *t)
{
	unsigned long long v;

	check_members(w, g, path, timeout_keys);
	if (get_uint(w, g, path, "connect", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->connect = (unsigned)v;
	if (get_uint(w, g, path, "handshake", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->handshake = (unsigned)v;
	if (get_uint(w, g, path, "cleartext", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->cleartext = (unsigned)v;
	if (get_uint(w, g, path, "idle", 1, CONFIG_TIMEOUT_MAX, &v) == 1)
		t->idle = (unsigned)v;
}

static void
parse_certificates(struct walk *w, const config_setting_t *g, const char *path,
    struct tls_conf *tls)
{
	const config_setting_t	*list = config_setting_get_member(g, "certificates");
	char			 p[PATH_MAX_TEXT], ep[PATH_MAX_TEXT];
	int			 n;

	if (list == NULL)
		return;
	child_path(p, sizeof(p), path, "certificates");
	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		problem(w, list, p, "expected a list of groups ( { cert = ...; key = ...; } ), found %s",
		    type_name(list));
		return;
	}
	n = config_setting_length(list);
	if (n == 0)
		return;
	tls->certs = calloc((size_t)n, sizeof(*tls->certs));
	if (tls->certs == NULL)
		abort();
	for (int i = 0; i < n; i++) {
		const config_setting_t	*e = config_setting_get_elem(list, (unsigned)i);
		struct cert_conf	*c = &tls->certs[tls->ncerts];

		index_path(ep, sizeof(ep), p, (unsigned)i);
		if (!config_setting_is_group(e)) {
			problem(w, e, ep, "expected a group { cert = ...; key = ...; }, found %s",
			    type_name(e));
			continue;
		}
		check_members(w, e, ep, cert_keys);
		tls->ncerts++;
		c->where = where_dup(w, e, ep);
		if (get_nonempty(w, e, ep, "cert", &c->cert) == 0)
			problem(w, e, ep, "cert is required (a PEM file with the certificate chain)");
		get_nonempty(w, e, ep, "key", &c->key);
		get_nonempty(w, e, ep, "passphrase_file", &c->passphrase_file);
		c->cert_where = member_where(w, e, ep, "cert");
		c->key_where = member_where(w, e, ep, c->key ? "key" : "cert");
		c->passphrase_where = member_where(w, e, ep, "passphrase_file");
		if (c->key == NULL && c->cert != NULL)
			c->key = xstrdup(c->cert);
	}
}

/* Check a cipher list the way the TLS layer will use it. */
static bool
cipher_list_valid(const char *list, bool tls13)
{
	SSL_CTX	*ctx = SSL_CTX_new(TLS_method());
	int	 ok;

	if (ctx == NULL)
		return true;	/* cannot check here; tlsctx.c will */
	ok = tls13 ? SSL_CTX_set_ciphersuites(ctx, list) :
	    SSL_CTX_set_cipher_list(ctx, list);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok == 1;
}

static void
parse_tls(struct walk *w, const config_setting_t *g, const char *path,
    struct tls_conf *tls)
{
	static const char *const versions[] = { "TLSv1.2", "TLSv1.3", NULL };
	static const char *const verify[] = { "none", "optional", "require", NULL };
	char	 p[PATH_MAX_TEXT];
	int	 i;

	check_members(w, g, path, tls_keys);
	tls->where = where_dup(w, g, path);
	parse_certificates(w, g, path, tls);
	if (get_enum(w, g, path, "min_version", versions, &i) == 1)
		tls->min_version = i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
	if (get_nonempty(w, g, path, "ciphers", &tls->ciphers) == 1 &&
	    !cipher_list_valid(tls->ciphers, false)) {
		child_path(p, sizeof(p), path, "ciphers");
		problem(w, config_setting_get_member(g, "ciphers"), p,
		    "no usable cipher in \"%s\" (expected an OpenSSL cipher list, see ciphers(1))",
		    tls->ciphers);
	}
	if (get_nonempty(w, g, path, "ciphersuites", &tls->ciphersuites) == 1 &&
	    !cipher_list_valid(tls->ciphersuites, true)) {
		child_path(p, sizeof(p), path, "ciphersuites");
		problem(w, config_setting_get_member(g, "ciphersuites"), p,
		    "invalid TLS 1.3 cipher suites \"%s\" (expected e.g. TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256)",
		    tls->ciphersuites);
	}
	get_nonempty(w, g, path, "client_ca", &tls->client_ca);
	if (get_enum(w, g, path, "verify_client", verify, &i) == 1)
		tls->verify_client = (enum verify_client)i;
	if (tls->verify_client != VERIFY_CLIENT_NONE && tls->client_ca == NULL) {
		child_path(p, sizeof(p), path, "verify_client");
		problem(w, config_setting_get_member(g, "verify_client"), p,
		    "needs client_ca, the CA certificates that client certificates are checked against");
	}
	get_nonempty(w, g, path, "ticket_key_file", &tls->ticket_key_file);
	tls->client_ca_where = member_where(w, g, path, "client_ca");
	tls->ticket_key_where = member_where(w, g, path, "ticket_key_file");
}

static void
parse_pins(struct walk *w, const config_setting_t *g, const char *path,
    struct backend_conf *b)
{
	const char		**pins;
	const config_setting_t	**where;
	char			 p[PATH_MAX_TEXT], ep[PATH_MAX_TEXT];
	unsigned char		 digest[32];
	size_t			 n;

	if (get_string_list(w, g, path, "pin_sha256", &pins, &where, &n) != 1)
		return;
	child_path(p, sizeof(p), path, "pin_sha256");
	b->pins = calloc(n, sizeof(*b->pins));
	if (b->pins == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (pin_decode(pins[i], digest) == -1) {
			index_path(ep, sizeof(ep), p, (unsigned)i);
			problem(w, where[i], ep,
			    "\"%s\" is not a pin (expected the base64 of a SHA-256 digest, 44 characters)",
			    pins[i]);
			continue;
		}
		b->pins[b->npins++] = xstrdup(pins[i]);
	}
	free(pins);
	free(where);
}

static void
parse_backend(struct walk *w, const config_setting_t *g, const char *path,
    struct backend_conf *b)
{
	static const char *const tlsnames[] = { "none", "implicit", "starttls", NULL };
	static const char *const ppnames[] = { "none", "v1", "v2", NULL };
	const char	*addr;
	const char	*why;
	char		 p[PATH_MAX_TEXT];
	int		 i;
	bool		 verify_set = false;

	check_members(w, g, path, backend_keys);
	b->where = where_dup(w, g, path);
	if (get_string(w, g, path, "address", &addr) == 1) {
		if (addr_parse(addr, ADDR_ALLOW_NAME | ADDR_ALLOW_UNIX, &b->address, &why) == -1) {
			child_path(p, sizeof(p), path, "address");
			problem(w, config_setting_get_member(g, "address"), p,
			    "\"%s\": %s (expected host:port, [v6]:port or unix:/path)", addr, why);
		} else
			b->has_address = true;
	}
	if (get_enum(w, g, path, "tls", tlsnames, &i) == 1) {
		b->tls = (enum backend_tls)i;
	}
	get_nonempty(w, g, path, "ca", &b->ca);
	if (get_bool(w, g, path, "verify", &b->verify) == 1)
		verify_set = true;
	if (!verify_set)
		b->verify = b->tls != BACKEND_TLS_NONE;
	if (get_nonempty(w, g, path, "server_name", &b->server_name) == 1 &&
	    !hostname_valid(b->server_name) && !ip_literal(b->server_name)) {
		child_path(p, sizeof(p), path, "server_name");
		problem(w, config_setting_get_member(g, "server_name"), p,
		    "\"%s\" is not a host name or IP address", b->server_name);
	}
	parse_pins(w, g, path, b);
	get_nonempty(w, g, path, "cert", &b->cert);
	get_nonempty(w, g, path, "key", &b->key);
	if (b->key != NULL && b->cert == NULL) {
		child_path(p, sizeof(p), path, "key");
		problem(w, config_setting_get_member(g, "key"), p,
		    "a client key needs its certificate (cert)");
	}
	b->ca_where = member_where(w, g, path, "ca");
	b->cert_where = member_where(w, g, path, "cert");
	b->key_where = member_where(w, g, path, b->key ? "key" : "cert");
	if (b->cert != NULL && b->key == NULL)
		b->key = xstrdup(b->cert);
	if (get_enum(w, g, path, "proxy_protocol", ppnames, &i) == 1)
		b->proxy_protocol = (enum proxy_proto_version)i;
	if (b->tls == BACKEND_TLS_NONE) {
		const char *const tls_only[] = { "ca", "server_name", "pin_sha256", "cert", "key", NULL };

		for (size_t k = 0; tls_only[k] != NULL; k++) {
			if (config_setting_get_member(g, tls_only[k]) == NULL)
				continue;
			child_path(p, sizeof(p), path, tls_only[k]);
			problem(w, config_setting_get_member(g, tls_only[k]), p,
			    "only applies with tls = \"implicit\" or \"starttls\" (the backend is reached in plaintext)");
		}
		if (verify_set && b->verify) {
			child_path(p, sizeof(p), path, "verify");
			problem(w, config_setting_get_member(g, "verify"), p,
			    "only applies with tls = \"implicit\" or \"starttls\" (the backend is reached in plaintext)");
		}
	}
	if (b->has_address && b->address.kind == ADDR_UNIX && b->tls != BACKEND_TLS_NONE &&
	    b->verify && b->server_name == NULL && b->npins == 0) {
		child_path(p, sizeof(p), path, "server_name");
		problem(w, g, p, "a TLS backend on a unix socket needs server_name (or pin_sha256, or verify = false) to check its certificate against");
	}
}

static bool
printable(const char *s)
{
	for (; *s != '\0'; s++)
		if (!isprint((unsigned char)*s))
			return false;
	return true;
}

static void
parse_line_block(struct walk *w, const config_setting_t *g, const char *path,
    struct line_conf *l)
{
	const char *const keys[] = { "command", "reply", "refusal" };
	char	**fields[] = { &l->command, &l->reply, &l->refusal };
	char	 p[PATH_MAX_TEXT];
	const char *v;

	check_members(w, g, path, line_keys);
	for (size_t i = 0; i < 3; i++) {
		if (get_string(w, g, path, keys[i], &v) != 1)
			continue;
		child_path(p, sizeof(p), path, keys[i]);
		if (!printable(v) || strlen(v) > CONFIG_LINE_TEXT_MAX) {
			problem(w, config_setting_get_member(g, keys[i]), p,
			    "expected printable text of at most %d characters, without CR or LF",
			    CONFIG_LINE_TEXT_MAX);
			continue;
		}
		if (i == 0 && (v[0] == '\0' || strchr(v, ' ') != NULL)) {
			problem(w, config_setting_get_member(g, keys[i]), p,
			    "expected one word, such as \"STARTTLS\"");
			continue;
		}
		free(*fields[i]);
		*fields[i] = xstrdup(v);
	}
}

static bool
connect_rule_valid(const char *rule)
{
	struct addr	 a;
	const char	*why;

	if (strncmp(rule, "*.", 2) == 0)
		rule += 2;
	return addr_parse(rule, ADDR_ALLOW_NAME, &a, &why) == 0;
}

static void
parse_http_block(struct walk *w, const config_setting_t *g, const char *path,
    struct http_conf *h)
{
	const char		**rules;
	const config_setting_t	**where;
	char			 p[PATH_MAX_TEXT], ep[PATH_MAX_TEXT];
	size_t			 n;

	check_members(w, g, path, http_keys);
	if (get_string_list(w, g, path, "connect_allow", &rules, &where, &n) != 1)
		return;
	child_path(p, sizeof(p), path, "connect_allow");
	h->connect_allow = calloc(n, sizeof(*h->connect_allow));
	if (h->connect_allow == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (!connect_rule_valid(rules[i])) {
			index_path(ep, sizeof(ep), p, (unsigned)i);
			problem(w, where[i], ep,
			    "\"%s\" is not a rule (expected host:port, [v6]:port or *.domain:port)",
			    rules[i]);
			continue;
		}
		h->connect_allow[h->nconnect_allow++] = xstrdup(rules[i]);
	}
	free(rules);
	free(where);
}

static void
parse_listen(struct walk *w, const config_setting_t *g, const char *path,
    struct listener_conf *lc)
{
	const char		**addrs;
	const config_setting_t	**where;
	char			 p[PATH_MAX_TEXT], ep[PATH_MAX_TEXT];
	const char		*why;
	size_t			 n;
	int			 r;

	r = get_string_list(w, g, path, "listen", &addrs, &where, &n);
	if (r == 0)
		problem(w, g, path, "listen is required (\"host:port\" or a list of them)");
	if (r != 1)
		return;
	child_path(p, sizeof(p), path, "listen");
	lc->listen = calloc(n, sizeof(*lc->listen));
	if (lc->listen == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		struct addr *a = &lc->listen[lc->nlisten];

		if (n == 1 && config_setting_type(where[0]) == CONFIG_TYPE_STRING &&
		    config_setting_get_member(g, "listen") == where[0])
			snprintf(ep, sizeof(ep), "%s", p);
		else
			index_path(ep, sizeof(ep), p, (unsigned)i);
		if (addr_parse(addrs[i], 0, a, &why) == -1) {
			problem(w, where[i], ep,
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

/*
 * An http listener needs somewhere to send requests: backend.address, or
 * the targets of CONNECT, which only a STARTTLS listener accepts.
 */
static void
check_http_backend(struct walk *w, const config_setting_t *g, const char *path,
    const struct listener_conf *lc)
{
	const config_setting_t	*b = config_setting_get_member(g, "backend");
	const config_setting_t	*h = config_setting_get_member(g, "http");

	if (lc->proto == NULL || strcmp(lc->proto->name, "http") != 0 ||
	    lc->backend.has_address || (b != NULL && config_setting_get_member(b, "address")))
		return;		/* has one, or a bad one already reported */
	if (lc->client_tls != CLIENT_TLS_STARTTLS)
		problem(w, g, path, "an http listener without client_tls = \"starttls\" (so without CONNECT) needs backend.address");
	else if (lc->http.nconnect_allow == 0 &&
	    (h == NULL || config_setting_get_member(h, "connect_allow") == NULL))
		problem(w, g, path, "an http listener needs backend.address, http.connect_allow or both");
}

static void
parse_listener(struct walk *w, const config_setting_t *g, const char *path,
    struct config *cfg, struct listener_conf *lc)
{
	static const char *const ctls[] = { "starttls", "implicit", "none", NULL };
	const config_setting_t	*sub;
	const char		*v;
	char			 p[PATH_MAX_TEXT], sp[PATH_MAX_TEXT], list[128];
	unsigned long long	 n;
	int			 i;
	bool			 bad = false, ctls_set = false;

	check_members(w, g, path, listener_keys);
	lc->where = where_dup(w, g, path);
	lc->max_connections = cfg->max_connections;
	lc->high_watermark = CONFIG_DEFAULT_HIGH_WATERMARK;
	lc->low_watermark = CONFIG_DEFAULT_LOW_WATERMARK;
	lc->timeouts = (struct timeouts_conf){
		.connect = CONFIG_DEFAULT_TIMEOUT_CONNECT,
		.handshake = CONFIG_DEFAULT_TIMEOUT_HANDSHAKE,
		.cleartext = CONFIG_DEFAULT_TIMEOUT_CLEARTEXT,
		.idle = CONFIG_DEFAULT_TIMEOUT_IDLE,
	};
	lc->tls.min_version = TLS1_2_VERSION;
	lc->line.command = xstrdup("STARTTLS");
	lc->line.reply = xstrdup("");
	lc->line.refusal = xstrdup("ERR STARTTLS required");

	if (get_string(w, g, path, "name", &v) == 1) {
		child_path(p, sizeof(p), path, "name");
		if (!listener_name_valid(v))
			problem(w, config_setting_get_member(g, "name"), p,
			    "\"%s\" is not a valid name (expected 1 to 64 letters, digits, '-', '_' or '.')", v);
		else
			lc->name = xstrdup(v);
	} else if (config_setting_get_member(g, "name") == NULL)
		problem(w, g, path, "name is required (a unique name used in logs)");

	parse_listen(w, g, path, lc);

	if (get_string(w, g, path, "protocol", &v) == 1) {
		lc->proto = proto_lookup(v);
		if (lc->proto == NULL) {
			child_path(p, sizeof(p), path, "protocol");
			problem(w, config_setting_get_member(g, "protocol"), p,
			    "unknown protocol \"%s\" (expected one of %s)", v, proto_names());
		}
	} else if (config_setting_get_member(g, "protocol") == NULL)
		problem(w, g, path, "protocol is required (expected one of %s)", proto_names());

	if (get_enum(w, g, path, "client_tls", ctls, &i) == 1) {
		lc->client_tls = (enum client_tls)i;
		ctls_set = true;
	}
	if (lc->proto != NULL) {
		if (!ctls_set)
			lc->client_tls = lc->proto->default_client_tls;
		lc->require_tls = lc->proto->default_require_tls;
		if (lc->client_tls == CLIENT_TLS_STARTTLS && !lc->proto->has_upgrade) {
			child_path(p, sizeof(p), path, "client_tls");
			problem(w, config_setting_get_member(g, "client_tls"), p,
			    "protocol %s has no upgrade verb (expected implicit or none)",
			    lc->proto->name);
		}
	}
	if (get_bool(w, g, path, "require_tls", &lc->require_tls) == 1 &&
	    lc->require_tls && lc->client_tls == CLIENT_TLS_NONE) {
		child_path(p, sizeof(p), path, "require_tls");
		problem(w, config_setting_get_member(g, "require_tls"), p,
		    "cannot be true with client_tls = \"none\"");
	}
	if (lc->client_tls == CLIENT_TLS_NONE || lc->client_tls == CLIENT_TLS_IMPLICIT)
		lc->require_tls = false;	/* nothing to require: no upgrade happens */

	get_bool(w, g, path, "accept_proxy_protocol", &lc->accept_proxy_protocol);

	if (get_uint(w, g, path, "max_connections", 1, CONFIG_MAX_CONNECTIONS_MAX, &n) == 1)
		lc->max_connections = (unsigned)n;
	if (get_uint(w, g, path, "high_watermark", CONFIG_WATERMARK_MIN, CONFIG_WATERMARK_MAX, &n) == 1)
		lc->high_watermark = (size_t)n;
	if (get_uint(w, g, path, "low_watermark", 0, CONFIG_WATERMARK_MAX, &n) == 1)
		lc->low_watermark = (size_t)n;
	if (lc->low_watermark >= lc->high_watermark) {
		child_path(p, sizeof(p), path, "low_watermark");
		problem(w, config_setting_get_member(g, "low_watermark") ?
		    config_setting_get_member(g, "low_watermark") : g, p,
		    "%zu must be below high_watermark (%zu)", lc->low_watermark,
		    lc->high_watermark);
	}

	child_path(sp, sizeof(sp), path, "timeouts");
	if ((sub = get_group(w, g, path, "timeouts", &bad)) != NULL)
		parse_timeouts(w, sub, sp, &lc->timeouts);

	child_path(sp, sizeof(sp), path, "tls");
	if ((sub = get_group(w, g, path, "tls", &bad)) != NULL) {
		lc->has_tls = true;
		parse_tls(w, sub, sp, &lc->tls);
		if (lc->client_tls == CLIENT_TLS_NONE)
			problem(w, sub, sp, "client_tls is \"none\": this listener never speaks TLS to clients");
	}

	child_path(sp, sizeof(sp), path, "backend");
	if ((sub = get_group(w, g, path, "backend", &bad)) != NULL)
		parse_backend(w, sub, sp, &lc->backend);
	else if (!bad && (lc->proto == NULL || strcmp(lc->proto->name, "http") != 0))
		problem(w, g, path, "backend is required (backend = { address = \"host:port\"; };)");
	if (sub != NULL && lc->backend.tls == BACKEND_TLS_STARTTLS && lc->proto != NULL &&
	    lc->proto->backend_starttls == NULL) {
		char names[64];

		proto_backend_starttls_names(names, sizeof(names));
		child_path(p, sizeof(p), sp, "tls");
		problem(w, config_setting_get_member(sub, "tls"), p,
		    "protocol %s has no upgrade verb to send to the backend "
		    "(expected none or implicit; starttls works with %s)", lc->proto->name, names);
	}
	if (sub != NULL && !lc->backend.has_address &&
	    config_setting_get_member(sub, "address") == NULL &&
	    (lc->proto == NULL || strcmp(lc->proto->name, "http") != 0))
		problem(w, sub, sp, "address is required (host:port, [v6]:port or unix:/path)");

	/* A protocol's own block is allowed only on a listener of that protocol. */
	for (size_t k = 0; k < 2; k++) {
		const char *blk = k == 0 ? "line" : "http";

		child_path(sp, sizeof(sp), path, blk);
		if ((sub = get_group(w, g, path, blk, &bad)) == NULL)
			continue;
		if (lc->proto != NULL && (lc->proto->block == NULL ||
		    strcmp(lc->proto->block, blk) != 0)) {
			problem(w, sub, sp, "only applies to listeners with protocol = \"%s\"", blk);
			continue;
		}
		if (k == 0)
			parse_line_block(w, sub, sp, &lc->line);
		else
			parse_http_block(w, sub, sp, &lc->http);
	}
	check_http_backend(w, g, path, lc);
	(void)list;
}

static void
parse_listeners(struct walk *w, const config_setting_t *root, struct config *cfg)
{
	const config_setting_t	*list = config_setting_get_member(root, "listeners");
	char			 p[PATH_MAX_TEXT];
	int			 n;

	if (list == NULL) {
		config_errors_add(w->errs, "%s: listeners: is required (a list of listener groups)", w->file);
		return;
	}
	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		problem(w, list, "listeners", "expected a list ( { ... }, { ... } ), found %s",
		    type_name(list));
		return;
	}
	n = config_setting_length(list);
	if (n == 0) {
		problem(w, list, "listeners", "must hold at least one listener");
		return;
	}
	cfg->listeners = calloc((size_t)n, sizeof(*cfg->listeners));
	if (cfg->listeners == NULL)
		abort();
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);

		index_path(p, sizeof(p), "listeners", (unsigned)i);
		if (!config_setting_is_group(e)) {
			problem(w, e, p, "expected a listener group { name = ...; ... }, found %s",
			    type_name(e));
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
parse_global(struct walk *w, const config_setting_t *root, struct config *cfg)
{
	static const char *const targets[] = { "syslog", "stderr", NULL };
	const config_setting_t	*s;
	const char		*v;
	unsigned long long	 n;
	int			 i;
	bool			 bad = false;

	check_members(w, root, "", global_keys);
	get_nonempty(w, root, "", "user", &cfg->user);
	if (get_nonempty(w, root, "", "group", &cfg->group) == 1 && cfg->user == NULL &&
	    config_setting_get_member(root, "user") == NULL)
		problem(w, config_setting_get_member(root, "group"), "group",
		    "needs user: the group is set when dropping privileges to user");
	get_nonempty(w, root, "", "pidfile", &cfg->pidfile);
	if (get_enum(w, root, "", "log_target", targets, &i) == 1) {
		cfg->log_target = i == 0 ? LOG_TARGET_SYSLOG : LOG_TARGET_STDERR;
		cfg->log_target_set = true;
	}
	if (get_string(w, root, "", "log_level", &v) == 1 &&
	    log_level_parse(v, &cfg->log_level) == -1)
		problem(w, config_setting_get_member(root, "log_level"), "log_level",
		    "unknown level \"%s\" (expected one of error, warning, info, debug)", v);
	if (get_uint(w, root, "", "workers", 0, 1024, &n) == 1)
		cfg->workers = (unsigned)n;	/* 0: one per CPU */
	if (get_uint(w, root, "", "max_connections", 1, CONFIG_MAX_CONNECTIONS_MAX, &n) == 1)
		cfg->max_connections = (unsigned)n;
	if (get_uint(w, root, "", "shutdown_timeout", 0, 3600, &n) == 1)
		cfg->shutdown_timeout = (unsigned)n;
	if ((s = get_group(w, root, "", "stats", &bad)) != NULL) {
		const char *why;

		check_members(w, s, "stats", stats_keys);
		if (get_string(w, s, "stats", "listen", &v) == 1) {
			if (addr_parse(v, 0, &cfg->stats_listen, &why) == -1)
				problem(w, config_setting_get_member(s, "listen"), "stats.listen",
				    "\"%s\": %s (expected 127.0.0.1:port or [::1]:port)", v, why);
			else
				cfg->has_stats = true;
		} else if (config_setting_get_member(s, "listen") == NULL)
			problem(w, s, "stats", "listen is required (the address of /metrics, e.g. \"127.0.0.1:9273\")");
	}
}

static struct config *
config_new(const char *path)
{
	struct config	*cfg = calloc(1, sizeof(*cfg));

	if (cfg == NULL)
		abort();
	atomic_init(&cfg->refs, 1);
	cfg->path = xstrdup(path);
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
	struct walk	 w = { .errs = errs, .file = name, .before = errs->count };

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
	cfg = config_new(name);
	parse_global(&w, config_root_setting(lc), cfg);
	parse_listeners(&w, config_root_setting(lc), cfg);
	if (errs->count > w.before) {
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
	dir = xstrdup(path);
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
listener_conf_free(struct listener_conf *lc)
{
	free(lc->name);
	free(lc->listen);
	free(lc->where);
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
	free(lc->tls.ticket_key_where);
	free(lc->backend.ca);
	free(lc->backend.server_name);
	for (size_t i = 0; i < lc->backend.npins; i++)
		free(lc->backend.pins[i]);
	free(lc->backend.pins);
	free(lc->backend.cert);
	free(lc->backend.key);
	free(lc->backend.where);
	free(lc->backend.ca_where);
	free(lc->backend.cert_where);
	free(lc->backend.key_where);
	free(lc->line.command);
	free(lc->line.reply);
	free(lc->line.refusal);
	for (size_t i = 0; i < lc->http.nconnect_allow; i++)
		free(lc->http.connect_allow[i]);
	free(lc->http.connect_allow);
	tls_server_free(lc->tls_server);
	tls_client_free(lc->tls_backend);
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
