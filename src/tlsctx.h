/*
 * TLS contexts: the proxy as a TLS server towards clients (certificates,
 * SNI, versions, ciphers, client certificates, the self-signed default) and
 * as a TLS client towards backends (CA, host name check, SPKI pins, client
 * certificate).  Built once per configuration, shared by its sessions.
 */
#ifndef STP_TLSCTX_H
#define STP_TLSCTX_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct config;
struct config_errors;
struct listener_conf;
struct backend_conf;

struct tls_server;
struct tls_client;

/*
 * The TLS contexts a listener needs, as server towards its clients (NULL
 * when client_tls is none) and as client towards its backend (NULL when
 * backend.tls is none): every certificate, key, CA file and cipher list
 * loaded and checked.  alpn is its protocol's ALPN id, or NULL: selected
 * when a client offers it, and offered to the backend.  0, or -1 with
 * errs filled.
 */
int		 tlsctx_listener(const struct listener_conf *, const char *alpn,
		    struct tls_server **, struct tls_client **, struct config_errors *);

/*
 * The TLS context towards one more backend, a route's (NULL when its tls
 * is none), as tlsctx_listener builds the listener's: 0, or -1 with errs
 * filled.  It shares the OpenSSL context (its CA store above all, most
 * of a context's memory) of one of the n others (NULL entries skipped)
 * made from the same ca, verify, cert and key, with the same alpn.
 */
int		 tlsctx_backend(const struct backend_conf *, const char *alpn,
		    struct tls_client *const *others, size_t n, struct tls_client **,
		    struct config_errors *);

void		 tls_server_free(struct tls_server *);
void		 tls_client_free(struct tls_client *);

/* After a handshake: what the TLS layer does then (a TLS 1.3 server's ticket). */
void		 tls_handshake_done(SSL *);

/* A new server-side SSL for one client, or NULL (out of memory). */
SSL		*tls_server_ssl(struct tls_server *);

/*
 * The client of this SSL starts TLS with no upgrade verb before it (the
 * protocol's direct TLS): on a listener whose protocol names an ALPN id,
 * a ClientHello that does not offer it is refused with the
 * no_application_protocol alert.  On an implicit-TLS listener every SSL
 * is so already.
 */
void		 tls_server_set_direct(SSL *);

/*
 * A new client-side SSL towards a backend.  host is the name (or address)
 * from backend.address, used for SNI and the certificate check unless
 * server_name overrides it.
 */
SSL		*tls_client_ssl(struct tls_client *, const char *host);

/*
 * After the backend handshake: 0 if the backend's key matches a pin (or no
 * pins are configured), -1 with why filled otherwise.
 */
int		 tls_client_check_pins(struct tls_client *, SSL *, char *why, size_t len);

/*
 * A handshake or record failure in words, from the OpenSSL error codes
 * that libevent collected and how far ssl's handshake had got: "no shared
 * cipher", "plaintext where a ClientHello was expected", "plaintext inside
 * TLS after the handshake", ...  peer is "client" or "backend".
 * Returns the kind, an enum stat_handshake_failure.
 */
int		 tls_failure_words(const unsigned long *errs, size_t n, SSL *ssl,
		    const char *peer, char *buf, size_t len);

/* The SHA-256 fingerprint of the self-signed default, or NULL if none was made. */
const char	*tlsctx_selfsigned_fingerprint(void);

/* "TLSv1.3" and the cipher name, or "-" when there is no session. */
const char	*tls_version_name(SSL *);
const char	*tls_cipher_name(SSL *);
const char	*tls_sni_name(SSL *);

#endif
