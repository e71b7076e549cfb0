/*
 * A session: one client, at most one backend, and the protocol module
 * between them.  Every session ends through session_close(), which writes
 * the one log line; the memory is freed later, from the session's own
 * timer event, so that no libevent callback ever runs on a freed session.
 */
#ifndef STP_SESSION_H
#define STP_SESSION_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "config.h"
#include "util.h"

struct bufferevent;
struct event;
struct evbuffer;
struct evdns_getaddrinfo_request;
struct worker;
struct listen_sock;

#define SESSION_MAGIC		0x53545031u	/* "STP1" */
#define SESSION_LINGER_MS	5000		/* flushing a last reply */
#define SESSION_PEER_MAX	(INET6_ADDRSTRLEN + 16 > ADDR_HOST_MAX + 8 ? \
				 INET6_ADDRSTRLEN + 16 : ADDR_HOST_MAX + 8)

enum session_state {
	SESSION_CLEARTEXT,	/* the protocol module parses, before any TLS */
	SESSION_PROXY_HEADER,	/* waiting for the PROXY protocol header */
	SESSION_UPGRADING,	/* the verb was answered; flushing the answer */
	SESSION_HANDSHAKE,	/* client TLS handshake */
	SESSION_TLS,		/* in TLS, the protocol module still parses */
	SESSION_RELAY,		/* transparent relay both ways */
	SESSION_CLOSING,	/* flushing a last reply to the client */
};

enum backend_state {
	BACKEND_IDLE,		/* not asked for yet */
	BACKEND_RESOLVING,
	BACKEND_CONNECTING,
	BACKEND_STARTTLS,	/* backend.tls = "starttls": the module's dialogue */
	BACKEND_HANDSHAKE,
	BACKEND_UP,
	BACKEND_FAILED,		/* given up on: its socket, if any, is idle */
};

/* Things to do from the session's timer event, outside I/O callbacks. */
#define SESSION_WORK_WRAP	0x01	/* start the client TLS handshake */
#define SESSION_WORK_RESUME	0x02	/* a destination drained: resume its source */
#define SESSION_WORK_SHUT	0x04	/* an output drained: pass an EOF on */
#define SESSION_WORK_CLOSE	0x08	/* the last reply is out: close */
#define SESSION_WORK_REWRITE	0x10	/* a TLS socket stopped writing at EOF: restart it */

/* The client's address and the one it connected to, as the PROXY protocol carries them. */
struct session_addrs {
	struct sockaddr_storage	 src;
	struct sockaddr_storage	 dst;
	socklen_t		 srclen;
	socklen_t		 dstlen;
};

/* One side of the relay. */
struct side {
	struct session		*s;
	struct bufferevent	*bev;		/* top: the TLS filter, or the socket */
	struct bufferevent	*sock;		/* the socket bufferevent under it */
	SSL			*ssl;		/* NULL in plaintext */
	bool			 tls_up;	/* handshake done */
	bool			 eof;		/* no more input from this side */
	bool			 want_shut;	/* pass EOF on once the output drains */
	bool			 shut;		/* close_notify (if TLS) sent */
	bool			 fin_sent;	/* shutdown(SHUT_WR) done */
	bool			 full;		/* output above high watermark: peer paused */
	bool			 reading;	/* EV_READ enabled on bev */
	struct event		*readahead;	/* under a TLS filter: see relay_readahead_cb */
};

struct session {
	uint32_t		 magic;
	uint64_t		 id;
	struct worker		*w;
	struct config		*cfg;		/* a reference */
	const struct listener_conf *lc;
	struct listener_counters *counters;	/* its listener's, in its worker */
	TAILQ_ENTRY(session)	 entry;

	enum session_state	 state;
	enum backend_state	 bstate;
	const struct proto	*proto;
	void			*proto_state;
	bool			 held;		/* client reading held by the module */
	bool			 unparsed;	/* the module stopped at the client's
						   watermark with input left (proto_client_full) */
	bool			 dead;
	unsigned		 work;

	struct side		 client;
	struct side		 backend;
	struct evbuffer		*pending;	/* for the backend, until it is up */
	const struct addr	*target;	/* the module's backend, or NULL */
	struct session_addrs	*addrs;		/* for the PROXY protocol, or NULL */
	struct evdns_getaddrinfo_request *dns;

	struct event		*timer;
	uint64_t		 start_ms;
	uint64_t		 last_ms;	/* last byte either way */
	uint64_t		 phase_deadline;	/* cleartext, handshake or closing */
	uint64_t		 connect_deadline;

	uint64_t		 bytes_in;
	uint64_t		 bytes_out;
	uint64_t		 discarded;
	const char		*upgraded;	/* "starttls", "implicit", "none" */
	const char		*first_eof;	/* "client-closed" or "backend-closed" */
	const char		*close_end;	/* while SESSION_CLOSING */
	char			*close_reason;
	char			 client_addr[SESSION_PEER_MAX];
	char			 backend_addr[SESSION_PEER_MAX];
};

uint64_t now_ms(void);

/* session.c */
void	 session_accept(struct worker *, struct listen_sock *, int fd,
	    const struct sockaddr *, socklen_t);
void	 session_close(struct session *, const char *end, const char *fmt, ...)
	    PRINTFLIKE(3, 4);
void	 session_finish(struct session *, const char *end, const char *reason);
void	 session_schedule(struct session *, unsigned work);
void	 session_backend_up(struct session *);
void	 session_backend_starttls(struct session *);
void	 session_backend_failed(struct session *, const char *end, const char *why);
void	 session_backend_event(struct session *, short what);
void	 session_backend_readcb(struct bufferevent *, void *);
void	 session_update_reading(struct session *);
void	 session_arm(struct session *);
void	 session_shutdown_all(struct worker *, const char *why);

/* relay.c */
void	 relay_attach(struct side *);
void	 relay_output_added(struct side *);
int	 relay_readahead_start(struct side *);
void	 relay_readahead_stop(struct side *);
void	 relay_forward(struct session *, struct side *from, struct side *to);
size_t	 relay_pending(const struct side *);
void	 relay_eof(struct session *, struct side *);
void	 relay_eof_released(struct session *);
void	 relay_try_shut(struct session *, struct side *);
void	 relay_flush_final(struct side *);
int	 relay_error_words(struct side *, const char *peer, bool handshake,
	    char *buf, size_t len);

/* backend.c */
void	 backend_connect(struct session *);
void	 backend_cancel(struct session *);
void	 backend_tls_start(struct session *);

#endif
