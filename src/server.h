/*
 * The running daemon: a worker is one event loop with its listening
 * sockets, its sessions and the configuration they were accepted under.
 */
#ifndef STP_SERVER_H
#define STP_SERVER_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "util.h"

struct event;
struct event_base;
struct evdns_base;
struct evbuffer;
struct evconnlistener;
struct session;

/* Figures kept per listener name; they outlive reloads. */
struct listener_stats {
	char			 name[65];
	unsigned		 active;
	uint64_t		 accepted;
	uint64_t		 refused;
	struct listener_stats	*next;
};

struct listen_sock {
	struct worker		*w;
	struct addr		 addr;
	int			 fd;
	struct evconnlistener	*ev;
	struct listener_conf	*lc;	/* in w->cfg */
};

TAILQ_HEAD(session_list, session);

struct worker {
	struct event_base	*base;
	struct evdns_base	*dns;
	struct config		*cfg;
	struct listen_sock	**socks;
	size_t			 nsocks;
	struct session_list	 sessions;
	unsigned		 nsessions;
	uint64_t		 next_id;
	struct listener_stats	*stats;
	bool			 draining;
	bool			 accept_paused;
	struct event		*accept_resume;
	struct event		*drain_timer;
	struct event		*sig_hup;
	struct event		*sig_term;
	struct event		*sig_int;
	struct log_ratelimit	 rl_accept;
	struct log_ratelimit	 rl_busy;
	struct log_ratelimit	 rl_inject;
	/* scratch buffers for protocol replies, reused by every session */
	struct evbuffer		*to_client;
	struct evbuffer		*to_backend;
};

/* listener.c */
int	 listener_init(struct worker *);
int	 listener_sync(struct worker *, struct config *, struct config_errors *);
void	 listener_close_all(struct worker *);
void	 listener_resume(struct worker *);
struct listener_stats *listener_stats_get(struct worker *, const char *name);

/* server.c */
void	 server_set_log(bool foreground, bool debug);
void	 server_apply_log(const struct config *);
void	 server_warn_selfsigned(const struct config *);
struct worker *server_new(struct config *);
int	 server_run(struct worker *);
void	 server_free(struct worker *);
void	 server_session_gone(struct worker *);

#endif
