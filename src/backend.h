/*
 * Reaching the backend: a name resolved with evdns (never blocking the
 * loop), a non-blocking connect, the PROXY protocol header first, and for
 * tls = "implicit" or "starttls" a TLS client on the connection, verified
 * against the CA, the host name and the pins before the backend sees a
 * byte of the client's.  It reports one result to its owner's callback;
 * with tls = "starttls" it reports each step of the dialogue that the
 * owner drives (the owner's protocol module speaks it).  It knows no
 * session and no protocol.
 */
#ifndef STP_BACKEND_H
#define STP_BACKEND_H

#include <sys/socket.h>

#include <stdbool.h>

#include "end.h"
#include "proxy_proto.h"
#include "side.h"
#include "util.h"

struct backend_conf;
struct event_base;
struct evdns_base;
struct evdns_getaddrinfo_request;
struct tls_client;

enum backend_state {
	BACKEND_IDLE,		/* not asked for yet */
	BACKEND_RESOLVING,
	BACKEND_CONNECTING,
	BACKEND_STARTTLS,	/* the owner's dialogue on the plaintext connection */
	BACKEND_HANDSHAKE,
	BACKEND_UP,
	BACKEND_FAILED,		/* given up on: its socket, if any, is idle */
};

enum backend_result {
	BACKEND_RESULT_UP,	/* connected and verified: the side is the owner's now */
	BACKEND_RESULT_DIALOGUE, /* tls = "starttls": bytes to answer, or (none) speak first */
	BACKEND_RESULT_FAILED,	/* see end and why */
};

/* Where the client came from, for the PROXY protocol header. */
struct backend_client {
	const struct sockaddr	*src;		/* NULL: unknown (LOCAL) */
	const struct sockaddr	*dst;
	struct proxy_tls_info	 tls;
};

#define BACKEND_NAME_MAX	(ADDR_HOST_MAX + 16)

struct backend;
typedef void (*backend_cb)(struct backend *, enum backend_result, enum session_end end,
		    const char *why, void *arg);

struct backend {
	struct side		 side;
	enum backend_state	 state;
	const struct backend_conf *conf;
	struct tls_client	*tls;
	const struct addr	*addr;
	struct event_base	*base;
	struct evdns_getaddrinfo_request *dns;
	struct backend_client	 client;
	uint8_t			 proxy_version;	/* enum proxy_proto_version */
	backend_cb		 cb;
	void			*arg;
	char			 name[BACKEND_NAME_MAX];	/* for logs: "-" until known */
};

void	 backend_init(struct backend *, backend_cb, void *arg);
/*
 * Reach addr (the owner's target, or conf->address) with conf's TLS; the
 * result comes through the callback, perhaps before this returns.  dns
 * resolves names.  client is copied from for the PROXY header.
 */
void	 backend_connect(struct backend *, struct event_base *, struct evdns_base *dns,
	    const struct backend_conf *, struct tls_client *, const struct addr *addr,
	    const struct backend_client *client);
/* The owner's dialogue has brought the backend to its TLS handshake. */
void	 backend_dialogue_done(struct backend *);
/* Give it up: no more results; its connection, if any, stays idle until backend_free. */
void	 backend_cancel(struct backend *);
void	 backend_free(struct backend *);

#endif
