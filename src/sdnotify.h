/*
 * systemd integration, when configure found libsystemd: readiness
 * notifications (Type=notify) and socket activation (LISTEN_FDS).
 * Without libsystemd these do nothing and no socket is ever inherited.
 */
#ifndef STP_SDNOTIFY_H
#define STP_SDNOTIFY_H

#include "util.h"

/* READY=1, RELOADING=1, STOPPING=1, STATUS=...; ignored outside systemd. */
void	sdnotify(const char *state);

/* Take the sockets systemd passed (LISTEN_FDS); call once, early. */
void	sdnotify_collect_sockets(void);

/*
 * A listening socket systemd passed for this address, or -1: the socket
 * itself the first time, a duplicate for each further worker.
 * sdnotify_unclaimed() closes and names those no listener wanted.
 */
int	sdnotify_take_socket(const struct addr *);
void	sdnotify_unclaimed(void);

#endif
