/*
 * The protocol interface.  A protocol module sees the cleartext (and, after
 * the upgrade, the decrypted) conversation through evbuffers and answers
 * with a verdict; it never touches sockets, bufferevents or the session's
 * life, so that teardown stays in session.c.  The parsing itself lives in
 * pure files (smtp_parse.c, ber.c, ...) that the modules call.
 *
 * The session calls:
 *   session_new        once, when the client is accepted
 *   client_input       whenever client bytes are buffered and the module
 *                      is parsing (not after PROTO_TRANSPARENT)
 *   backend_input      likewise for backend bytes
 *   tls_ready          when the client's TLS handshake has completed
 *   backend_ready      when the backend is up, if the module asked for it
 *                      with PROTO_CONNECT (or whenever it comes up while
 *                      the module still parses)
 *   backend_failed     when the backend cannot be reached: queue the
 *                      protocol's error reply (the session then closes)
 *   refuse             a client refused at accept (past max_connections,
 *                      denied by access, past client_limits): the
 *                      protocol's reply for that refusal, if it has one
 *                      that may be sent before the client speaks
 *   backend_starttls   with backend.tls = "starttls", the proxy as the
 *                      STARTTLS client: once when the backend's TCP
 *                      connection is up (io->in empty: the module may
 *                      speak first), then with each read of the backend's
 *                      bytes.  PROTO_CONTINUE to wait, PROTO_UPGRADE to
 *                      start TLS (io->in must then be empty: bytes after
 *                      the upgrade reply are refused, not fed to TLS),
 *                      PROTO_CLOSE when the backend cannot be upgraded
 *                      (io->reason).  What the client must still see
 *                      (SMTP's greeting) the module keeps, and gives to
 *                      backend_input once the backend is up.
 *   session_free       once, at close
 */
#ifndef STP_PROTO_H
#define STP_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include <libconfig.h>

#include "cfg.h"
#include "config.h"
#include "end.h"

struct evbuffer;

/*
 * Why a client was accepted only to be refused, for a protocol whose
 * refusals need a session (refuse_in_session).
 */
enum proto_refusal {
	PROTO_REFUSAL_NONE,
	PROTO_REFUSAL_BUSY,	/* past max_connections */
	PROTO_REFUSAL_DENIED,	/* by the listener's access list */
	PROTO_REFUSAL_CLIENT_LIMIT, /* past one of its client_limits */
};

enum proto_verdict {
	PROTO_CONTINUE,		/* keep going */
	PROTO_HOLD,		/* stop reading the client until the backend answers */
	PROTO_UPGRADE,		/* the verb was answered: start TLS on the client side */
	PROTO_TRANSPARENT,	/* nothing left to enforce: relay without parsing */
	PROTO_CLOSE,		/* flush what is queued to the client, then close */
	PROTO_CONNECT,		/* reach the backend (io->connect_to, or backend.address)
				   and hold the client until backend_ready */
};

/* What a module works on; the session fills it for each call. */
struct proto_io {
	void			*state;		/* from session_new */
	const struct listener_conf *conf;
	bool			 client_tls;	/* client side is in TLS */
	struct evbuffer		*in;		/* input of the side being handled */
	struct evbuffer		*to_client;
	struct evbuffer		*to_backend;
	const struct addr	*connect_to;	/* with PROTO_CONNECT: instead of backend.address */
	bool			 timed_out;	/* backend_failed: the connect timed out */
	enum session_end	 end;		/* with PROTO_CLOSE: end= in the log
						   (END_PROTOCOL_ERROR unless set) */
	const char		*reason;	/* and why, in words */
	size_t			 refused;	/* requests answered by the proxy so far */
	size_t			 dropped;	/* backend bytes the module discarded */
	size_t			 client_room;	/* what it may queue to the client: see proto_client_full */
	bool			 stopped;	/* it stopped there, with input left */
	enum proto_refusal	 refusal;	/* not NONE: the client is refused; answer its
						   first message so (proto_refusal_end) and
						   PROTO_CLOSE; the backend is never reached */
	bool			 direct_tls;	/* with PROTO_UPGRADE: no verb, the client's
						   first byte starts its ClientHello (left in
						   io->in), which must offer proto->alpn */
};

struct proto {
	const char	*name;
	enum client_tls	 default_client_tls;
	bool		 default_require_tls;
	bool		 has_upgrade;		/* has a cleartext upgrade verb */
	bool		 connect_early;		/* connect the backend before any client byte */
	bool		 keep_backend_at_upgrade; /* backend bytes belong to the tunnel */
	bool		 backend_optional;	/* the module may name the backend itself */
	const char	*alpn;			/* the ALPN id (RFC 7301) the proxy selects
						   as TLS server when the client offers it */
	bool		 refuse_in_session;	/* the client speaks first, perhaps in TLS: a
						   refused client is accepted as a session
						   that the module answers (io->refusal);
						   refuse is not used */
	bool		 connect_on_verdict;	/* the backend is reached only when the module
						   says so (PROTO_CONNECT, PROTO_TRANSPARENT),
						   never at the start or at TLS */
	const char	*backend_before_upgrade; /* with client_tls = "starttls": why the
						   backend is needed before the client's
						   handshake, so that routes (by SNI) are
						   refused; NULL: it can wait */
	bool		 waits_with_require_tls; /* ... except under require_tls */

	/*
	 * Its own settings group in a listener (block = { ... }), with the
	 * names it knows.  conf_parse reads it (NULL when the listener has
	 * none: the defaults) into the listener's opaque proto_conf, reporting
	 * problems through the walk; NULL when memory ran out.  conf_check
	 * looks at the whole listener once it is read.
	 */
	const char	*block;
	const char *const *block_keys;
	void		*(*conf_parse)(struct cfg_walk *, const config_setting_t *block,
			    const char *path);
	void		 (*conf_free)(void *);
	void		 (*conf_check)(struct cfg_walk *, const config_setting_t *listener,
			    const char *path, const struct listener_conf *);

	void		*(*session_new)(const struct listener_conf *);
	void		 (*session_free)(void *);
	enum proto_verdict (*client_input)(struct proto_io *);
	enum proto_verdict (*backend_input)(struct proto_io *);
	enum proto_verdict (*tls_ready)(struct proto_io *);
	enum proto_verdict (*backend_ready)(struct proto_io *);
	void		 (*backend_failed)(struct proto_io *);
	void		 (*refuse)(struct evbuffer *to_client, enum proto_refusal);
	enum proto_verdict (*backend_starttls)(struct proto_io *);
};

const struct proto *proto_lookup(const char *name);
/* "smtp, imap, pop3, ldap, http, line, tcp", for error messages. */
const char	*proto_names(void);
/* "smtp, imap, pop3, ldap, line": those with backend_starttls. */
void		 proto_backend_starttls_names(char *buf, size_t len);
/*
 * For backend_starttls: the attempt failed; why, formatted into the
 * module's own buffer (it must outlive the call), becomes io->reason, with
 * end=backend-tls-failed.  Returns PROTO_CLOSE.
 */
enum proto_verdict proto_upgrade_failed(struct proto_io *io, char *why, size_t len,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/*
 * Guarantee 1 for the replies the proxy writes itself: true once what is
 * queued towards the client has reached the listener's high watermark.
 * A module asks before each command it may answer and, when it is true,
 * returns PROTO_CONTINUE with the rest of the input left in io->in: the
 * session pauses the client, as it pauses any source whose destination
 * is full, and calls the module again once the client has read.  A client
 * that sends refused commands and never reads its replies is held to the
 * watermark, however many replies its bytes would earn.
 */
bool		 proto_client_full(struct proto_io *io);
/* The end= of a session refused so, and the limit it names for the log. */
enum session_end proto_refusal_end(enum proto_refusal);
const char	*proto_refusal_name(enum proto_refusal);
/* The table, NULL-terminated. */
extern const struct proto *const proto_table[];

extern const struct proto proto_smtp;
extern const struct proto proto_imap;
extern const struct proto proto_pop3;
extern const struct proto proto_ldap;
extern const struct proto proto_postgres;
extern const struct proto proto_http;
extern const struct proto proto_line;
extern const struct proto proto_tcp;

/* The listener keys that protocols add: their blocks, NULL-terminated. */
size_t		 proto_blocks(const char **out, size_t max);

#endif
