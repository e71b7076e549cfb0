/*
 * TLS contexts for listeners (server side) and backends (client side).
 */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/core_names.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"
#include "stats.h"
#include "tlsctx.h"
#include "util.h"

/* TLS 1.2: forward secrecy and AEAD only. */
#define TLSCTX_DEFAULT_CIPHERS	"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
#define PASSPHRASE_MAX		1024
#define SNI_NAMES_MAX		64

struct sni_entry {
	SSL_CTX		*ctx;
	char		**names;	/* DNS names, lower case; may start with "*." */
	size_t		 nnames;
};

/* A session ticket key (RFC 5077 layout): name, AES-256 key, HMAC key. */
#define TICKET_KEY_LEN		80
#define TICKET_KEYS_MAX		16
struct ticket_key {
	unsigned char	 name[16];
	unsigned char	 aes[32];
	unsigned char	 hmac[32];
};

struct tls_server {
	SSL_CTX		*ctx;		/* the default certificate */
	struct sni_entry *entries;	/* one per certificate, [0] is ctx */
	size_t		 nentries;
	struct ticket_key *keys;	/* [0] issues tickets; all decrypt */
	size_t		 nkeys;
	const char	*alpn;		/* the protocol's ALPN id, or NULL */
	bool		 alpn_required;	/* on every SSL: an implicit-TLS listener */
	unsigned char	 sid[32];	/* the listener's session id context */
};

static int	ticket_ex_index = -1;
static int	direct_ex_index = -1;	/* set on an SSL whose client started TLS directly */

struct tls_client {
	SSL_CTX			*ctx;		/* perhaps shared: see tlsctx_backend */
	const struct backend_conf *conf;
	const char		*alpn;
};

/* The self-signed default, made once per process. */
static EVP_PKEY	*selfsigned_key;
static X509	*selfsigned_cert;
static char	 selfsigned_fingerprint[32 * 3];

/* The most useful OpenSSL error text for a message, and clear the queue. */
static const char *
openssl_reason(void)
{
	static char	 buf[256];
	unsigned long	 e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		return "unknown error";
	const char *r = ERR_reason_error_string(last);
	snprintf(buf, sizeof(buf), "%s", r ? r : "unknown error");
	return buf;
}

static int
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX	 v3;
	X509_EXTENSION	*ext;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (ext == NULL)
		return -1;
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return 0;
}

static int
selfsigned_make(void)
{
	char		 host[256], san[600];
	unsigned char	 serial[16], md[EVP_MAX_MD_SIZE];
	unsigned	 mdlen;
	EVP_PKEY	*key;
	X509		*x;
	X509_NAME	*name;
	BIGNUM		*bn;

	if (selfsigned_cert != NULL)
		return 0;
	if (gethostname(host, sizeof(host)) == -1 || !hostname_valid(host))
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	if (strcmp(host, "localhost") == 0)
		snprintf(san, sizeof(san), "DNS:localhost");
	else
		snprintf(san, sizeof(san), "DNS:%s,DNS:localhost", host);

	if ((key = EVP_EC_gen("P-256")) == NULL)
		return -1;
	if ((x = X509_new()) == NULL) {
		EVP_PKEY_free(key);
		return -1;
	}
	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (unsigned char *)host, -1, -1, 0);
	X509_set_issuer_name(x, name);
	if (add_ext(x, NID_subject_alt_name, san) == -1 ||
	    add_ext(x, NID_key_usage, "critical,digitalSignature") == -1 ||
	    add_ext(x, NID_ext_key_usage, "serverAuth") == -1 ||
	    X509_sign(x, key, EVP_sha256()) == 0) {
		X509_free(x);
		EVP_PKEY_free(key);
		return -1;
	}
	X509_digest(x, EVP_sha256(), md, &mdlen);
	for (unsigned i = 0; i < mdlen && i < 32; i++)	/* "AB:CD:..." */
		snprintf(selfsigned_fingerprint + (i ? i * 3 - 1 : 0), 4, "%s%02X",
		    i ? ":" : "", md[i]);
	selfsigned_key = key;
	selfsigned_cert = x;
	return 0;
}

struct passphrase {
	const char	*text;
	bool		 asked;
};

static int
passphrase_cb(char *buf, int size, int rwflag, void *arg)
{
	struct passphrase	*p = arg;
	size_t			 len;

	p->asked = true;
	if (p->text == NULL)
		return -1;
	len = strlen(p->text);
	if (len >= (size_t)size)
		return -1;
	memcpy(buf, p->text, len);
	return (int)len;
}

/* The first line of the passphrase file, without its newline. */
static int
passphrase_read(const struct cert_conf *c, char *buf, size_t len,
    struct config_errors *errs)
{
	FILE	*f = fopen(c->passphrase_file, "r");

	if (f == NULL) {
		config_errors_add(errs, "%s: cannot read %s: %s",
		    c->passphrase_where, c->passphrase_file, strerror(errno));
		return -1;
	}
	if (fgets(buf, (int)len, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	return 0;
}

/*
 * A PEM private key.  pass is the passphrase, or NULL; can_have_pass says
 * whether the setting has a passphrase_file, for the error text.  where is
 * "file:line: path" of the key setting, pass_where of passphrase_file.
 */
static EVP_PKEY *
key_load(const char *file, const char *pass, bool can_have_pass,
    const char *where, const char *pass_where, struct config_errors *errs)
{
	struct passphrase	 p = { .text = pass };
	EVP_PKEY		*key;
	BIO			*bio;

	if ((bio = BIO_new_file(file, "r")) == NULL) {
		ERR_clear_error();
		config_errors_add(errs, "%s: cannot read %s: %s", where,
		    file, strerror(errno));
		return NULL;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, passphrase_cb, &p);
	BIO_free(bio);
	if (key != NULL)
		return key;
	if (p.asked && pass == NULL) {
		ERR_clear_error();
		if (!can_have_pass)
			config_errors_add(errs, "%s: %s is encrypted (expected an unencrypted PEM key for the backend client certificate)",
			    where, file);
		else
			config_errors_add(errs, "%s: %s is encrypted (expected passphrase_file naming a file whose first line is the passphrase)",
			    where, file);
	} else if (p.asked) {
		ERR_clear_error();
		config_errors_add(errs, "%s: wrong passphrase for %s",
		    pass_where, file);
	} else
		config_errors_add(errs, "%s: no private key in %s: %s (expected a PEM private key)",
		    where, file, openssl_reason());
	return NULL;
}

static int
cert_names(SSL_CTX *ctx, struct sni_entry *e)
{
	X509			*x = SSL_CTX_get0_certificate(ctx);
	STACK_OF(GENERAL_NAME)	*sans;
	char			*names[SNI_NAMES_MAX];
	size_t			 n = 0;

	if (x == NULL)
		return 0;
	sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && n < SNI_NAMES_MAX; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		const unsigned char *d;
		int len;

		if (gn->type != GEN_DNS)
			continue;
		d = ASN1_STRING_get0_data(gn->d.dNSName);
		len = ASN1_STRING_length(gn->d.dNSName);
		if (len <= 0 || memchr(d, '\0', (size_t)len) != NULL)
			continue;
		if ((names[n] = strndup((const char *)d, (size_t)len)) != NULL)
			n++;
	}
	GENERAL_NAMES_free(sans);
	if (n == 0) {
		char cn[256];

		if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName,
		    cn, sizeof(cn)) > 0 && (names[0] = strdup(cn)) != NULL)
			n = 1;
	}
	e->names = calloc(n ? n : 1, sizeof(*e->names));
	if (e->names == NULL) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		for (char *c = names[i]; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		e->names[i] = names[i];
	}
	e->nnames = n;
	return 0;
}

/* Exact, or "*.example.com" matching exactly one more label. */
static bool
sni_name_match(const char *pattern, const char *name)
{
	if (strncmp(pattern, "*.", 2) == 0) {
		const char *dot = strchr(name, '.');

		return dot != NULL && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return strcasecmp(pattern, name) == 0;
}

static int
servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_server	*ts = arg;
	const char		*name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (name == NULL)
		return SSL_TLSEXT_ERR_OK;
	/* exact names first, then wildcards, in the order of the file */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < ts->nentries; i++) {
			struct sni_entry *e = &ts->entries[i];

			for (size_t k = 0; k < e->nnames; k++) {
				bool wild = strncmp(e->names[k], "*.", 2) == 0;

				if (wild != (pass == 1) || !sni_name_match(e->names[k], name))
					continue;
				if (e->ctx != ts->ctx)
					SSL_set_SSL_CTX(ssl, e->ctx);
				return SSL_TLSEXT_ERR_OK;
			}
		}
	}
	return SSL_TLSEXT_ERR_OK;	/* unknown name: the default certificate */
}

static bool
alpn_required(const struct tls_server *ts, SSL *ssl)
{
	return ts->alpn_required ||
	    (direct_ex_index != -1 && SSL_get_ex_data(ssl, direct_ex_index) != NULL);
}

/*
 * The protocol's ALPN id when the client offers it (RFC 7301 section
 * 3.2).  A client that offers only others goes on without ALPN, unless
 * it started TLS directly: then it is refused with no_application_protocol
 * (OpenSSL sends that alert for SSL_TLSEXT_ERR_ALERT_FATAL), as
 * PostgreSQL 17 refuses a direct connection that does not name it.
 */
static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	struct tls_server	*ts = arg;
	size_t			 want = strlen(ts->alpn);

	/* the client's list: names of 1 to 255 bytes, each after its length */
	for (unsigned i = 0; i < inlen && in[i] != 0 && in[i] < inlen - i; i += 1u + in[i]) {
		if (in[i] == want && memcmp(in + i + 1, ts->alpn, want) == 0) {
			*out = in + i + 1;
			*outlen = in[i];
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return alpn_required(ts, ssl) ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

/*
 * The host name of a ClientHello's server_name extension (RFC 6066
 * section 3), lower-cased into name; false when there is none.
 */
static bool
client_hello_sni(SSL *ssl, char *name, size_t size)
{
	const unsigned char	*p;
	size_t			 len, list, n;

	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 2)
		return false;
	list = (size_t)p[0] << 8 | p[1];
	if (list != len - 2)
		return false;
	for (p += 2; list >= 3; p += 3 + n, list -= 3 + n) {
		n = (size_t)p[1] << 8 | p[2];
		if (n > list - 3)
			return false;
		if (p[0] != TLSEXT_NAMETYPE_host_name)
			continue;
		if (n == 0 || n >= size)
			return false;
		for (size_t i = 0; i < n; i++)
			name[i] = (char)tolower(p[3 + i]);
		name[n] = '\0';
		return true;
	}
	return false;
}

/*
 * A session belongs to the server name it was made for.  OpenSSL keeps
 * the TLS 1.2 session's name on a resumption whatever name the client
 * sends (and RFC 6066 section 3 wants them equal), and a TLS 1.3 PSK
 * would reach another name's route and certificate with the first
 * name's authentication: the session id context, which OpenSSL checks
 * before it resumes, is the listener's digested with the name.  It is
 * set before OpenSSL looks for the session, and SSL_set_SSL_CTX (the
 * certificate by SNI) keeps a context set on the SSL.
 */
static bool
session_context_by_name(const struct tls_server *ts, SSL *ssl)
{
	unsigned char	 sid[SHA256_DIGEST_LENGTH];
	char		 name[256];
	EVP_MD_CTX	*md;
	bool		 ok;

	if (!client_hello_sni(ssl, name, sizeof(name)))
		return true;	/* no name: the listener's own context */
	if ((md = EVP_MD_CTX_new()) == NULL)
		return false;
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, ts->sid, sizeof(ts->sid)) == 1 &&
	    EVP_DigestUpdate(md, name, strlen(name)) == 1 &&
	    EVP_DigestFinal_ex(md, sid, NULL) == 1 &&
	    SSL_set_session_id_context(ssl, sid, sizeof(sid)) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

/*
 * Every ClientHello, before OpenSSL looks for a session to resume: the
 * session id context by server name, and a direct ClientHello with no
 * ALPN extension at all (alpn_select_cb is never called for it) is
 * refused here, with the same alert and the same reason in the log.
 */
static int
client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_server	*ts = arg;
	const unsigned char	*ext;
	size_t			 len;

	if (!session_context_by_name(ts, ssl)) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	if (ts->alpn == NULL || !alpn_required(ts, ssl) ||
	    SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
	    &ext, &len) == 1)
		return SSL_CLIENT_HELLO_SUCCESS;
	ERR_raise(ERR_LIB_SSL, SSL_R_NO_APPLICATION_PROTOCOL);
	*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

void
tls_server_set_direct(SSL *ssl)
{
	if (direct_ex_index != -1)
		SSL_set_ex_data(ssl, direct_ex_index, &direct_ex_index);
}

/*
 * tls.ticket_key_file: one key per line, the base64 of 80 random bytes
 * (openssl rand 80 | base64 -w0); the first line issues tickets, the
 * others are earlier keys that still decrypt.  '#' starts a comment.
 */
static int
ticket_keys_load(struct tls_server *ts, const struct tls_conf *t, struct config_errors *errs)
{
	FILE		*f;
	char		 line[512];
	unsigned	 lineno = 0;

	if ((f = fopen(t->ticket_key_file, "r")) == NULL) {
		config_errors_add(errs, "%s: cannot read %s: %s", t->ticket_key_where,
		    t->ticket_key_file, strerror(errno));
		return -1;
	}
	if ((ts->keys = calloc(TICKET_KEYS_MAX, sizeof(*ts->keys))) == NULL) {
		fclose(f);
		config_errors_add(errs, "%s: out of memory", t->ticket_key_where);
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned char	 raw[128];
		size_t		 len;
		int		 n;

		lineno++;
		line[strcspn(line, "#\r\n")] = '\0';
		len = strlen(line);
		while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		n = EVP_DecodeBlock(raw, (const unsigned char *)line, (int)len);
		if (len % 4 != 0 || n < 0 || (n - (line[len - 1] == '=') - (line[len - 2] == '=')) != TICKET_KEY_LEN) {
			config_errors_add(errs, "%s: %s line %u: not a key "
			    "(expected the base64 of 80 random bytes: openssl rand 80 | base64 -w0)",
			    t->ticket_key_where, t->ticket_key_file, lineno);
			goto fail;
		}
		if (ts->nkeys == TICKET_KEYS_MAX) {
			config_errors_add(errs, "%s: %s has more than %d keys",
			    t->ticket_key_where, t->ticket_key_file, TICKET_KEYS_MAX);
			goto fail;
		}
		memcpy(ts->keys[ts->nkeys].name, raw, 16);
		memcpy(ts->keys[ts->nkeys].aes, raw + 16, 32);
		memcpy(ts->keys[ts->nkeys].hmac, raw + 48, 32);
		OPENSSL_cleanse(raw, sizeof(raw));
		ts->nkeys++;
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (ts->nkeys == 0) {
		config_errors_add(errs, "%s: %s holds no key", t->ticket_key_where,
		    t->ticket_key_file);
		return -1;
	}
	return 0;
fail:
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	return -1;
}

/* Encrypt tickets with keys[0]; decrypt with whichever key named it. */
static int
ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_server	*ts = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_ex_index);
	const struct ticket_key	*k = NULL;
	OSSL_PARAM		 params[3];
	size_t			 i;

	if (ts == NULL || ts->nkeys == 0)
		return 0;
	if (enc) {
		k = &ts->keys[0];
		memcpy(name, k->name, 16);
		if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1 ||
		    EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			return -1;
	} else {
		for (i = 0; i < ts->nkeys; i++)
			if (CRYPTO_memcmp(name, ts->keys[i].name, 16) == 0)
				break;
		if (i == ts->nkeys)
			return 0;	/* unknown key: a full handshake */
		k = &ts->keys[i];
		if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			return -1;
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	/* 2: an earlier key, so the client gets a ticket under the current one */
	return enc || k == &ts->keys[0] ? 1 : 2;
}

/*
 * What a listener's contexts share: the client-certificate policy, read
 * once, and the session id context that names it.
 */
struct server_policy {
	X509_STORE	*store;		/* client_ca; NULL with verify_client = none */
	STACK_OF(X509_NAME) *names;	/* the CA names a CertificateRequest lists */
	unsigned char	 sid[SHA256_DIGEST_LENGTH];
};

static int
cmp_digest(const void *a, const void *b)
{
	return memcmp(a, b, SHA256_DIGEST_LENGTH);
}

/*
 * The session id context, a digest of the listener's name and of its
 * client-certificate policy: verify_client and the CA certificates that
 * client_ca holds.  OpenSSL stores it in every session, in the cache and
 * inside tickets, and resumes a session only when it equals the one of
 * the handshake, so a session made under one policy is never resumed
 * under another: a reload that changes the policy forces a full
 * handshake, even though the ticket keys (ticket_key_file) still decrypt
 * the old tickets.  Only what the policy is goes in, never where or when
 * it was read (no path, no pointer, no time), so that instances with the
 * same policy and the same ticket keys resume each other's sessions: the
 * certificates are taken by their SHA-256 digests, sorted, so that the
 * order of the file and its comments do not matter.  A setting that
 * changes how client certificates are verified belongs here too.
 */
static int
policy_sid(struct server_policy *pol, const struct listener_conf *lc)
{
	static const char	 label[] = "starttls-proxy session id context 1";
	const char		*mode = lc->tls.verify_client == VERIFY_CLIENT_REQUIRE ?
				    "require" : lc->tls.verify_client == VERIFY_CLIENT_OPTIONAL ?
				    "optional" : "none";
	STACK_OF(X509)		*certs = NULL;
	unsigned char		(*d)[SHA256_DIGEST_LENGTH] = NULL;
	unsigned char		 count[4];
	EVP_MD_CTX		*md;
	int			 n = 0, ok = 0;

	if ((md = EVP_MD_CTX_new()) == NULL)
		return -1;
	if (pol->store != NULL) {
		if ((certs = X509_STORE_get1_all_certs(pol->store)) == NULL)
			goto done;
		n = sk_X509_num(certs);
		if ((d = calloc(n ? (size_t)n : 1, sizeof(*d))) == NULL)
			goto done;
		for (int i = 0; i < n; i++) {
			unsigned len;

			if (X509_digest(sk_X509_value(certs, i), EVP_sha256(), d[i], &len) != 1)
				goto done;
		}
		qsort(d, (size_t)n, sizeof(*d), cmp_digest);
	}
	count[0] = (unsigned char)(n >> 24);
	count[1] = (unsigned char)(n >> 16);
	count[2] = (unsigned char)(n >> 8);
	count[3] = (unsigned char)n;
	/* each field ends in a NUL, so that no two policies read alike */
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, label, sizeof(label)) == 1 &&
	    EVP_DigestUpdate(md, lc->name, strlen(lc->name) + 1) == 1 &&
	    EVP_DigestUpdate(md, mode, strlen(mode) + 1) == 1 &&
	    EVP_DigestUpdate(md, count, sizeof(count)) == 1 &&
	    (n == 0 || EVP_DigestUpdate(md, d, (size_t)n * sizeof(*d)) == 1) &&
	    EVP_DigestFinal_ex(md, pol->sid, NULL) == 1;
done:
	EVP_MD_CTX_free(md);
	free(d);
	sk_X509_pop_free(certs, X509_free);
	return ok ? 0 : -1;
}

/*
 * client_ca is read once per listener, into one store that every
 * certificate's context verifies with: the policy that the session id
 * context names is then the one applied, whichever certificate SNI picks.
 */
static int
policy_load(struct server_policy *pol, const struct listener_conf *lc,
    struct config_errors *errs)
{
	const struct tls_conf	*t = &lc->tls;
	const char		*where = t->where ? t->where : lc->where;

	if (t->verify_client != VERIFY_CLIENT_NONE) {
		if ((pol->store = X509_STORE_new()) == NULL ||
		    X509_STORE_load_file(pol->store, t->client_ca) != 1 ||
		    (pol->names = SSL_load_client_CA_file(t->client_ca)) == NULL) {
			config_errors_add(errs, "%s: cannot load CA certificates from %s: %s",
			    t->client_ca_where, t->client_ca, access(t->client_ca, R_OK) == -1 ?
			    strerror(errno) : openssl_reason());
			return -1;
		}
	}
	if (policy_sid(pol, lc) == -1) {
		config_errors_add(errs, "%s: cannot make the session id context: %s",
		    where, openssl_reason());
		return -1;
	}
	return 0;
}

static void
policy_free(struct server_policy *pol)
{
	X509_STORE_free(pol->store);
	sk_X509_NAME_pop_free(pol->names, X509_NAME_free);
}

/*
 * How OpenSSL meets the socket (side.c): buffers released while a session
 * is idle, and read-ahead into a 64 KiB buffer, so that one recv() brings
 * several records; side.c reads until OpenSSL has none left, so nothing
 * read ahead waits for a socket event that would not come.
 */
static void
tlsctx_io_settings(SSL_CTX *ctx)
{
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, 65536);
}

void
tls_handshake_done(SSL *ssl)
{
	/*
	 * TLS 1.3 sends its session tickets after the handshake, in a flight
	 * of their own: OpenSSL's default is two tickets, two encryptions, a
	 * write and a packet for each client.  One ticket, sent with the
	 * first bytes of the session (SSL_new_session_ticket queues it for
	 * the next write), costs a fraction of that and resumes all the same.
	 */
	if (SSL_is_server(ssl) && SSL_version(ssl) == TLS1_3_VERSION &&
	    !(SSL_get_options(ssl) & SSL_OP_NO_TICKET))
		(void)SSL_new_session_ticket(ssl);
}

static SSL_CTX *
server_ctx_base(const struct listener_conf *lc, const struct server_policy *pol,
    struct config_errors *errs)
{
	const struct tls_conf	*t = &lc->tls;
	const char		*where = t->where ? t->where : lc->where;
	SSL_CTX			*ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		config_errors_add(errs, "%s: cannot create a TLS context: %s", where, openssl_reason());
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, t->min_version);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
	tlsctx_io_settings(ctx);
	SSL_CTX_set_num_tickets(ctx, 0);	/* one, with the first data: tls_handshake_done */
	if (SSL_CTX_set_cipher_list(ctx, t->ciphers ? t->ciphers : TLSCTX_DEFAULT_CIPHERS) != 1) {
		ERR_clear_error();
		config_errors_add(errs, "%s: no usable cipher in \"%s\" (expected an OpenSSL cipher list, see ciphers(1))",
		    t->ciphers_where ? t->ciphers_where : where,
		    t->ciphers ? t->ciphers : TLSCTX_DEFAULT_CIPHERS);
		goto fail;
	}
	if (t->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
		ERR_clear_error();
		config_errors_add(errs, "%s: invalid TLS 1.3 cipher suites \"%s\" (expected e.g. TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256)",
		    t->ciphersuites_where ? t->ciphersuites_where : where, t->ciphersuites);
		goto fail;
	}
	/*
	 * Every context of a listener has the same session id context.  The
	 * SSL takes it from the default context, OpenSSL decides on
	 * resumption with it before the servername callback runs, and
	 * SSL_set_SSL_CTX() then copies the chosen context's one, the same.
	 */
	SSL_CTX_set_session_id_context(ctx, pol->sid, sizeof(pol->sid));
	if (t->verify_client != VERIFY_CLIENT_NONE) {
		STACK_OF(X509_NAME) *names = SSL_dup_CA_list(pol->names);

		if (names == NULL) {
			config_errors_add(errs, "%s: out of memory", where);
			goto fail;
		}
		SSL_CTX_set1_cert_store(ctx, pol->store);
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (t->verify_client == VERIFY_CLIENT_REQUIRE ?
		    SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static int
server_ctx_cert(SSL_CTX *ctx, const struct cert_conf *c, struct config_errors *errs)
{
	char		 pass[PASSPHRASE_MAX];
	EVP_PKEY	*key;

	if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
		if (access(c->cert, R_OK) == -1) {
			ERR_clear_error();
			config_errors_add(errs, "%s: cannot read %s: %s", c->cert_where,
			    c->cert, strerror(errno));
		} else
			config_errors_add(errs, "%s: no certificate in %s: %s (expected a PEM certificate chain)",
			    c->cert_where, c->cert, openssl_reason());
		return -1;
	}
	if (c->passphrase_file != NULL &&
	    passphrase_read(c, pass, sizeof(pass), errs) == -1)
		return -1;
	key = key_load(c->key, c->passphrase_file ? pass : NULL, true, c->key_where,
	    c->passphrase_where, errs);
	OPENSSL_cleanse(pass, sizeof(pass));
	if (key == NULL)
		return -1;
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		config_errors_add(errs, "%s: the key in %s does not match the certificate in %s",
		    c->key_where, c->key, c->cert);
		ERR_clear_error();
		EVP_PKEY_free(key);
		return -1;
	}
	EVP_PKEY_free(key);
	return 0;
}

static struct tls_server *
tls_server_new(const struct listener_conf *lc, const char *alpn, struct config_errors *errs)
{
	struct tls_server	*ts;
	struct server_policy	 pol = { 0 };
	size_t			 n = lc->tls.ncerts ? lc->tls.ncerts : 1;

	if ((ts = calloc(1, sizeof(*ts))) == NULL ||
	    (ts->entries = calloc(n, sizeof(*ts->entries))) == NULL) {
		free(ts);
		config_errors_add(errs, "%s: out of memory", lc->where);
		return NULL;
	}
	if (policy_load(&pol, lc, errs) == -1)
		goto fail;
	memcpy(ts->sid, pol.sid, sizeof(ts->sid));
	for (size_t i = 0; i < n; i++) {
		struct sni_entry *e = &ts->entries[i];

		if ((e->ctx = server_ctx_base(lc, &pol, errs)) == NULL)
			goto fail;
		ts->nentries++;
		if (lc->tls.ncerts == 0) {
			if (selfsigned_make() == -1) {
				config_errors_add(errs, "%s: cannot make a self-signed certificate: %s",
				    lc->where, openssl_reason());
				goto fail;
			}
			SSL_CTX_use_certificate(e->ctx, selfsigned_cert);
			SSL_CTX_use_PrivateKey(e->ctx, selfsigned_key);
		} else if (server_ctx_cert(e->ctx, &lc->tls.certs[i], errs) == -1)
			goto fail;
		if (cert_names(e->ctx, e) == -1)
			goto fail;
	}
	ts->ctx = ts->entries[0].ctx;
	if (lc->tls.ticket_key_file != NULL) {
		if (ticket_keys_load(ts, &lc->tls, errs) == -1)
			goto fail;
		if (ticket_ex_index == -1)
			ticket_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
		for (size_t i = 0; i < ts->nentries; i++) {
			SSL_CTX_set_ex_data(ts->entries[i].ctx, ticket_ex_index, ts);
			SSL_CTX_set_tlsext_ticket_key_evp_cb(ts->entries[i].ctx, ticket_key_cb);
		}
	}
	if (ts->nentries > 1) {
		SSL_CTX_set_tlsext_servername_callback(ts->ctx, servername_cb);
		SSL_CTX_set_tlsext_servername_arg(ts->ctx, ts);
	}
	/* the ClientHello is seen by the default context */
	SSL_CTX_set_client_hello_cb(ts->ctx, client_hello_cb, ts);
	if (alpn != NULL) {
		ts->alpn = alpn;
		ts->alpn_required = lc->client_tls == CLIENT_TLS_IMPLICIT;
		if (direct_ex_index == -1)
			direct_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
		/* ALPN is seen by the context SNI chose */
		for (size_t i = 0; i < ts->nentries; i++)
			SSL_CTX_set_alpn_select_cb(ts->entries[i].ctx, alpn_select_cb, ts);
	}
	policy_free(&pol);
	return ts;
fail:
	policy_free(&pol);
	tls_server_free(ts);
	return NULL;
}

void
tls_server_free(struct tls_server *ts)
{
	if (ts == NULL)
		return;
	for (size_t i = 0; i < ts->nentries; i++) {
		SSL_CTX_free(ts->entries[i].ctx);
		for (size_t k = 0; k < ts->entries[i].nnames; k++)
			free(ts->entries[i].names[k]);
		free(ts->entries[i].names);
	}
	free(ts->entries);
	if (ts->keys != NULL) {
		OPENSSL_cleanse(ts->keys, ts->nkeys * sizeof(*ts->keys));
		free(ts->keys);
	}
	free(ts);
}

SSL *
tls_server_ssl(struct tls_server *ts)
{
	return SSL_new(ts->ctx);
}

static struct tls_client *
tls_client_new(const struct backend_conf *b, const char *alpn, struct config_errors *errs)
{
	struct tls_client	*tc;
	SSL_CTX			*ctx;
	unsigned char		 wire[256];

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		config_errors_add(errs, "%s: cannot create a TLS context: %s", b->where, openssl_reason());
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	tlsctx_io_settings(ctx);
	/*
	 * The protocol's ALPN id, offered: a server that takes TLS from the
	 * first byte may insist on it (PostgreSQL 17's direct SSL does), and
	 * one that does not know ALPN ignores it.
	 */
	if (alpn != NULL && strlen(alpn) < sizeof(wire)) {
		wire[0] = (unsigned char)strlen(alpn);
		memcpy(wire + 1, alpn, wire[0]);
		if (SSL_CTX_set_alpn_protos(ctx, wire, wire[0] + 1u) != 0) {
			config_errors_add(errs, "%s: cannot offer ALPN %s: %s", b->where, alpn,
			    openssl_reason());
			goto fail;
		}
	}
	if (b->verify) {
		int ok = b->ca ? SSL_CTX_load_verify_locations(ctx, b->ca, NULL) :
		    SSL_CTX_set_default_verify_paths(ctx);

		if (ok != 1) {
			config_errors_add(errs, "%s: cannot load CA certificates from %s: %s",
			    b->ca_where, b->ca ? b->ca : "the system store",
			    b->ca && access(b->ca, R_OK) == -1 ? strerror(errno) : openssl_reason());
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (b->cert != NULL) {
		EVP_PKEY *key;

		if (SSL_CTX_use_certificate_chain_file(ctx, b->cert) != 1) {
			config_errors_add(errs, "%s: cannot load a certificate from %s: %s",
			    b->cert_where, b->cert, access(b->cert, R_OK) == -1 ?
			    strerror(errno) : openssl_reason());
			goto fail;
		}
		if ((key = key_load(b->key, NULL, false, b->key_where, NULL, errs)) == NULL)
			goto fail;
		if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
			config_errors_add(errs, "%s: the key in %s does not match the certificate in %s",
			    b->key_where, b->key, b->cert);
			ERR_clear_error();
			EVP_PKEY_free(key);
			goto fail;
		}
		EVP_PKEY_free(key);
	}
	if ((tc = calloc(1, sizeof(*tc))) == NULL)
		goto fail;
	tc->ctx = ctx;
	tc->conf = b;
	tc->alpn = alpn;
	return tc;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

void
tls_client_free(struct tls_client *tc)
{
	if (tc == NULL)
		return;
	SSL_CTX_free(tc->ctx);
	free(tc);
}

SSL *
tls_client_ssl(struct tls_client *tc, const char *host)
{
	const char	*name = tc->conf->server_name ? tc->conf->server_name : host;
	SSL		*ssl;

	if ((ssl = SSL_new(tc->ctx)) == NULL)
		return NULL;
	if (name == NULL)
		return ssl;
	if (!ip_literal(name))
		SSL_set_tlsext_host_name(ssl, name);
	if (tc->conf->verify) {
		int ok = ip_literal(name) ?
		    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) :
		    SSL_set1_host(ssl, name);

		if (ok != 1) {
			SSL_free(ssl);
			return NULL;
		}
	}
	return ssl;
}

int
tls_client_check_pins(struct tls_client *tc, SSL *ssl, char *why, size_t len)
{
	unsigned char	 digest[SHA256_DIGEST_LENGTH], *der = NULL;
	X509		*peer;
	int		 derlen;
	bool		 ok;

	if (tc->conf->npins == 0)
		return 0;
	if ((peer = SSL_get1_peer_certificate(ssl)) == NULL) {
		snprintf(why, len, "the backend sent no certificate to check pin_sha256 against");
		return -1;
	}
	derlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(peer), &der);
	X509_free(peer);
	if (derlen <= 0) {
		snprintf(why, len, "cannot read the backend's public key");
		return -1;
	}
	SHA256(der, (size_t)derlen, digest);
	OPENSSL_free(der);
	ok = pin_match(digest, (const char *const *)tc->conf->pins, tc->conf->npins);
	if (!ok) {
		unsigned char b64[64];

		EVP_EncodeBlock(b64, digest, sizeof(digest));
		snprintf(why, len, "the backend's key (pin %s) matches no pin_sha256", b64);
		return -1;
	}
	return 0;
}

int
tlsctx_listener(const struct listener_conf *lc, const char *alpn, struct tls_server **ts,
    struct tls_client **tc, struct config_errors *errs)
{
	size_t	 before = errs->count;

	*ts = NULL;
	*tc = NULL;
	if (lc->client_tls != CLIENT_TLS_NONE)
		*ts = tls_server_new(lc, alpn, errs);
	if (lc->backend.tls != BACKEND_TLS_NONE)
		*tc = tls_client_new(&lc->backend, alpn, errs);
	return errs->count > before ? -1 : 0;
}

static bool
same_string(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether a context made for o is the one b would make (the same files, read at once). */
static bool
tls_client_same_ctx(const struct tls_client *o, const struct backend_conf *b, const char *alpn)
{
	const struct backend_conf *c = o->conf;

	return same_string(o->alpn, alpn) && c->verify == b->verify &&
	    (!b->verify || same_string(c->ca, b->ca)) && same_string(c->cert, b->cert) &&
	    same_string(c->key, b->key);
}

int
tlsctx_backend(const struct backend_conf *b, const char *alpn, struct tls_client *const *others,
    size_t n, struct tls_client **tc, struct config_errors *errs)
{
	size_t	 before = errs->count;

	*tc = NULL;
	if (b->tls == BACKEND_TLS_NONE)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (others[i] == NULL || !tls_client_same_ctx(others[i], b, alpn))
			continue;
		if ((*tc = calloc(1, sizeof(**tc))) == NULL || SSL_CTX_up_ref(others[i]->ctx) != 1) {
			free(*tc);
			*tc = NULL;
			config_errors_add(errs, "%s: out of memory", b->where);
			errs->oom = true;
			return -1;
		}
		(*tc)->ctx = others[i]->ctx;
		(*tc)->conf = b;
		(*tc)->alpn = alpn;
		return 0;
	}
	*tc = tls_client_new(b, alpn, errs);
	return errs->count > before ? -1 : 0;
}

const char *
tlsctx_selfsigned_fingerprint(void)
{
	return selfsigned_cert ? selfsigned_fingerprint : NULL;
}

static const char *
verify_words(SSL *ssl)
{
	long	 v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	return v == X509_V_OK ? "certificate verification failed" :
	    X509_verify_cert_error_string(v);
}

/*
 * How far the handshake had got.  A fatal error moves OpenSSL's state
 * machine to its error state but leaves SSL_get_state() on the last
 * handshake state reached (SSL_is_init_finished() is false by then): still
 * before the peer's first message, within the handshake, or done.
 */
enum hs_stage {
	HS_STAGE_HELLO,
	HS_STAGE_DURING,
	HS_STAGE_DONE
};

static enum hs_stage
handshake_stage(SSL *ssl)
{
	OSSL_HANDSHAKE_STATE	 st;

	if (ssl == NULL)
		return HS_STAGE_HELLO;
	st = SSL_get_state(ssl);
	if (st == TLS_ST_OK)
		return HS_STAGE_DONE;
	if (st == TLS_ST_BEFORE || (!SSL_is_server(ssl) && st == TLS_ST_CW_CLNT_HELLO))
		return HS_STAGE_HELLO;
	return HS_STAGE_DURING;
}

/*
 * Bytes that are no TLS record.  Before the peer's first message it is a
 * peer that does not speak TLS (or not yet: a STARTTLS injection).  Later,
 * the peer did speak TLS, then wrote cleartext into the connection: a
 * client whose TLS library rejected our certificate once its handshake was
 * done, as libldap does, then sends its LDAP Unbind in the clear.
 */
static void
plaintext_words(SSL *ssl, const char *peer, char *buf, size_t len)
{
	bool	 client = strcmp(peer, "client") == 0;

	switch (handshake_stage(ssl)) {
	case HS_STAGE_HELLO:
		snprintf(buf, len, "plaintext from the %s where a TLS %s was expected",
		    peer, client ? "ClientHello" : "ServerHello");
		break;
	case HS_STAGE_DURING:
		snprintf(buf, len, "the %s sent plaintext during the TLS handshake%s",
		    peer, client ? " (it may have rejected our certificate)" : "");
		break;
	case HS_STAGE_DONE:
		snprintf(buf, len, "the %s sent plaintext inside TLS after the handshake%s",
		    peer, client ? " (it may have rejected our certificate)" : "");
		break;
	}
}

int
tls_failure_words(const unsigned long *errs, size_t n, SSL *ssl,
    const char *peer, char *buf, size_t len)
{
	unsigned long	 e = 0;
	const char	*alert;

	/*
	 * libevent also reports SSL_get_error() codes: skip those.  A
	 * callback of ours that fails a handshake raises its own reason
	 * before OpenSSL's "callback failed": that one says why.
	 */
	for (size_t i = 0; i < n; i++) {
		if (ERR_GET_LIB(errs[i]) == 0)
			continue;
		if (e == 0 || ERR_GET_REASON(e) == SSL_R_CALLBACK_FAILED)
			e = errs[i];
	}
	if (e == 0) {
		snprintf(buf, len, "%s closed the connection during the TLS handshake", peer);
		return HS_FAIL_CLOSED;
	}
	if (log_debug_enabled()) {
		char	 raw[256];

		ERR_error_string_n(e, raw, sizeof(raw));
		log_debug("TLS error with the %s: %s", peer, raw);
	}
	switch (ERR_GET_REASON(e)) {
	case SSL_R_NO_SHARED_CIPHER:
		snprintf(buf, len, "no shared cipher with the %s", peer);
		return HS_FAIL_NO_SHARED_CIPHER;
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
	case SSL_R_UNEXPECTED_MESSAGE:
	case SSL_R_UNEXPECTED_RECORD:
		plaintext_words(ssl, peer, buf, len);
		return HS_FAIL_PLAINTEXT;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
		snprintf(buf, len, "the %s offered no TLS version we accept (see min_version)", peer);
		return HS_FAIL_VERSION;
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		snprintf(buf, len, "%s certificate rejected: %s", peer, verify_words(ssl));
		return HS_FAIL_CLIENT_CERTIFICATE;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		snprintf(buf, len, "the %s sent no certificate (verify_client = require)", peer);
		return HS_FAIL_CLIENT_CERTIFICATE;
	case SSL_R_NO_APPLICATION_PROTOCOL:
		snprintf(buf, len, "the %s started TLS directly without offering the "
		    "protocol's ALPN name", peer);
		return HS_FAIL_OTHER;
	}
	/* alerts from the peer: the reason strings are "sslv3 alert bad certificate" ... */
	alert = ERR_reason_error_string(e);
	if (alert != NULL && strstr(alert, "alert") != NULL &&
	    (strstr(alert, "certificate") != NULL || strstr(alert, "unknown ca") != NULL)) {
		snprintf(buf, len, "the %s rejected our certificate (%s)", peer, alert);
		return HS_FAIL_CERTIFICATE_REJECTED;
	}
	snprintf(buf, len, "TLS error with the %s: %s", peer, alert ? alert : "unknown");
	return HS_FAIL_OTHER;
}

const char *
tls_version_name(SSL *ssl)
{
	return ssl ? SSL_get_version(ssl) : "-";
}

const char *
tls_cipher_name(SSL *ssl)
{
	const char *c = ssl ? SSL_get_cipher_name(ssl) : NULL;

	return c && strcmp(c, "(NONE)") != 0 ? c : "-";
}

const char *
tls_sni_name(SSL *ssl)
{
	const char *n = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;

	return n ? n : "-";
}
