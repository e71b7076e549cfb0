/*
 * The running daemon.  The main thread owns the configuration, the
 * signals and every bind(); each worker is one thread with its own event
 * loop, its own listening sockets (SO_REUSEPORT when there are several
 * workers), its sessions and the configuration they were accepted under.
 * The main thread talks to a worker only through its mailbox, so that a
 * worker's loop is never touched from another thread.
 */
#ifndef STP_SERVER_H
#define STP_SERVER_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "runtime.h"
#include "log.h"
#include "stats.h"
#include "util.h"

struct event;
struct event_base;
struct evdns_base;
struct evbuffer;
struct evconnlistener;
struct session;
struct daemon;

/* Per worker: sessions kept only to refuse a client (refuse_in_session). */
#define LISTENER_REFUSING_MAX	16

/*
 * Figures kept per listener name, a block per worker; they outlive
 * reloads.  So does the listener's client table (client_limits), made
 * the first time a configuration of that name has limits, at its
 * table_size, and kept at that size until the daemon restarts: the
 * sessions it counts, old and new, count in the same table.
 */
struct listener_stats {
	char			 name[65];
	struct listener_counters *workers;	/* [nworkers] */
	struct clienttab	*clients;	/* NULL until limits are configured */
	struct listener_stats	*next;
};

struct listen_sock {
	struct worker		*w;
	struct addr		 addr;
	int			 fd;
	struct evconnlistener	*ev;	/* NULL until the worker adopts it */
	struct listener_rt	*lr;	/* in w->rt */
};

TAILQ_HEAD(session_list, session);

enum worker_cmd_kind {
	WORKER_CMD_NONE,
	WORKER_CMD_CONFIGURE,	/* adopt rt and these listening sockets */
	WORKER_CMD_DRAIN,	/* stop accepting; end when the sessions have */
	WORKER_CMD_STOP,	/* close every session now */
};

struct worker_cmd {
	enum worker_cmd_kind	 kind;
	struct runtime		*rt;	/* a reference, for CONFIGURE */
	struct listen_sock	**socks;
	size_t			 nsocks;
};

struct worker {
	struct daemon		*d;
	unsigned		 index;
	pthread_t		 thread;
	bool			 started;
	struct event_base	*base;
	struct evdns_base	*dns;
	struct evdns_base	*dns_exact;	/* no search list: client-chosen names */
	struct runtime		*rt;		/* what it accepts with */
	struct listen_sock	**socks;
	size_t			 nsocks;
	struct session_list	 sessions;
	unsigned		 nsessions;
	unsigned		 nrefusing;	/* of them, kept only to be refused */
	bool			 draining;
	bool			 accept_paused;
	struct event		*accept_resume;
	struct event		*drain_timer;
	struct event		*cmd_ev;
	/* the mailbox: one command at a time, the main thread waits for it */
	pthread_mutex_t		 lock;
	pthread_cond_t		 done_cv;
	struct worker_cmd	 cmd;
	bool			 cmd_done;
	struct log_ratelimit	 rl_accept;
	struct log_ratelimit	 rl_busy;
	struct log_ratelimit	 rl_inject;
	/* scratch buffers for protocol replies, reused by every session */
	struct evbuffer		*to_client;
	struct evbuffer		*to_backend;
};

struct daemon {
	struct event_base	*base;		/* the main thread's: signals */
	struct runtime		*rt;		/* the running configuration */
	struct worker		**workers;
	unsigned		 nworkers;
	struct listener_stats	*stats;
	atomic_uint		 nsessions;	/* across workers */
	atomic_ullong		 next_id;
	atomic_uint		 running;	/* workers whose loop still runs */
	bool			 draining;
	bool			 foreground;
	bool			 debug;
	struct event		*sig_hup;
	struct event		*sig_term;
	struct event		*sig_int;
	struct event		*worker_exit;
	time_t			 started;
};

/* listener.c */
int	 listener_init(struct worker *);
int	 listener_plan(struct worker *, struct runtime *, struct listen_sock ***,
	    size_t *, struct config_errors *);
void	 listener_unplan(struct worker *, struct listen_sock **, size_t);
void	 listener_commit(struct worker *, struct listen_sock **, size_t);
void	 listener_close_all(struct worker *);
void	 listener_resume(struct worker *);

/* server.c */
struct daemon *server_new(struct runtime *, bool foreground, bool debug);
int	 server_listen(struct daemon *, struct config_errors *);
int	 server_after_fork(struct daemon *);
int	 server_run(struct daemon *);
void	 server_free(struct daemon *);
void	 server_apply_log(const struct daemon *, const struct config *);
void	 server_warn_selfsigned(const struct config *);
void	 server_session_gone(struct worker *);
unsigned server_workers_wanted(const struct config *);

#endif
