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

#include "util.h"

struct worker;
struct listen_sock;

/* Room for a peer's address as the logs show it. */
#define SESSION_PEER_MAX	(INET6_ADDRSTRLEN + 16 > ADDR_HOST_MAX + 8 ? \
				 INET6_ADDRSTRLEN + 16 : ADDR_HOST_MAX + 8)

/* A monotonic clock in milliseconds, coarse and cheap. */
uint64_t now_ms(void);

/* A client accepted on ls: the session takes fd. */
void	 session_accept(struct worker *, struct listen_sock *, int fd,
	    const struct sockaddr *, socklen_t);
/* Close every session of the worker now, with end=shutdown and why. */
void	 session_shutdown_all(struct worker *, const char *why);

#endif
