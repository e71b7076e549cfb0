/*
 * Sessions: one client, at most one backend, and the protocol module
 * between them.  struct session is session.c's own; the rest of the
 * daemon starts sessions and, at the end of a shutdown, ends them.
 */
#ifndef STP_SESSION_H
#define STP_SESSION_H

#include <sys/socket.h>
#include <netinet/in.h>

#include <stdint.h>

#include "proto.h"
#include "util.h"

struct worker;
struct listen_sock;

/* Room for a peer's address as the logs show it. */
#define SESSION_PEER_MAX	(INET6_ADDRSTRLEN + 16 > ADDR_HOST_MAX + 8 ? \
				 INET6_ADDRSTRLEN + 16 : ADDR_HOST_MAX + 8)

/* A monotonic clock in milliseconds, coarse and cheap. */
uint64_t now_ms(void);

/*
 * A client accepted on ls: the session takes fd.  With a refusal, the
 * session exists only to give the client its protocol's refusal (the
 * protocol has refuse_in_session): it never reaches the backend, lives
 * at most timeouts.cleartext outside the TLS handshake, and does not
 * count towards max_connections (w->nrefusing counts it).
 */
void	 session_accept(struct worker *, struct listen_sock *, int fd,
	    const struct sockaddr *, socklen_t, enum proto_refusal);
/* Close every session of the worker now, with end=shutdown and why. */
void	 session_shutdown_all(struct worker *, const char *why);

#endif
