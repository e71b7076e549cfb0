/*
 * One end of a connection: a socket bufferevent, and over it, once TLS
 * starts, OpenSSL (a filter, or the socket bufferevent itself for TLS
 * from the first byte).  The I/O layer: it moves bytes, starts TLS, ends
 * its direction with close_notify and FIN, and carries the workarounds
 * that libevent's bufferevents need, and it reports what happens to one
 * callback.  It knows no session, no backend and no protocol: the owner
 * decides everything (the shape of OpenSMTPD's ioev.c under
 * smtp_session.c).
 *
 * The owner calls side_* functions; the side calls back with an event.
 * Structural changes (side_start_tls on an accepting side, side_free)
 * are made from the owner's own event, never from inside a callback.
 */
#ifndef STP_SIDE_H
#define STP_SIDE_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct bufferevent;
struct event;
struct event_base;
struct evbuffer;

enum side_event {
	SIDE_READ,		/* bytes wait in side_input() */
	SIDE_DRAINED,		/* bytes left for the peer (from libevent's write
				   path: note it, act from your own event) */
	SIDE_CONNECTED,		/* side_connect() completed */
	SIDE_TLS_READY,		/* the TLS handshake completed */
	SIDE_EOF,		/* the peer ended its direction; what came with
				   the EOF was reported as SIDE_READ first */
	SIDE_ERROR,		/* the connection failed: side_error_words() */
	SIDE_DEFER,		/* call side_deferred() from your own event */
};

struct side;
typedef void (*side_cb)(struct side *, enum side_event, void *arg);

struct side {
	struct bufferevent	*bev;		/* top: OpenSSL's, or the socket's */
	struct bufferevent	*sock;		/* the socket bufferevent */
	SSL			*ssl;		/* NULL in plaintext */
	struct event		*readahead;	/* under a TLS filter: see side.c */
	side_cb			 cb;
	void			*arg;
	bool			 tls_up;	/* handshake done */
	bool			 eof;		/* no more input from the peer */
	bool			 want_shut;	/* end our direction once drained */
	bool			 shut;		/* close_notify (if TLS) sent */
	bool			 fin_sent;	/* shutdown(SHUT_WR) done */
	bool			 reading;
	bool			 rewrite;	/* TLS socket: write again (SIDE_DEFER) */
};

void	 side_init(struct side *, side_cb, void *arg);
/* The callback from now on (the backend side changes owners once up). */
void	 side_set_cb(struct side *, side_cb, void *arg);

/* An accepted socket (of that address family), in plaintext; 0, or -1 (fd closed). */
int	 side_accept(struct side *, struct event_base *, int fd, int family);
/*
 * An accepted socket with TLS from its first byte (OpenSSL reads the
 * socket); -1 with fd closed and the SSL freed.
 */
int	 side_accept_tls(struct side *, struct event_base *, int fd, int family, SSL *);
/* Connect to sa without blocking: SIDE_CONNECTED or SIDE_ERROR follow. */
int	 side_connect(struct side *, struct event_base *, const struct sockaddr *, socklen_t);
/*
 * TLS over the socket from here on, as server (accept) or client: a
 * filter on the socket bufferevent.  The handshake runs at once; bytes
 * already read are its first.  SIDE_TLS_READY or SIDE_ERROR follow.
 * -1 when it cannot be made (out of memory): the side has lost its
 * socket and the SSL.
 */
int	 side_start_tls(struct side *, SSL *, bool server);

struct evbuffer *side_input(struct side *);
struct evbuffer *side_output(struct side *);
/* Bytes queued towards the peer and not yet written to the socket. */
size_t	 side_pending(const struct side *);
/* Bytes were added to side_output(): write what the kernel takes now. */
void	 side_flush(struct side *);
void	 side_set_reading(struct side *, bool);

/*
 * End our direction once what is queued is out: close_notify (TLS), then
 * shutdown(SHUT_WR) once that is written too.  side_shut_progress does
 * what is due now; the owner calls it again on SIDE_DRAINED, from its
 * own event.  side_done_writing() tells when the FIN is out.
 */
void	 side_want_shut(struct side *);
void	 side_shut_progress(struct side *);
bool	 side_done_writing(const struct side *);
/* Stop reading and writing and reporting, before a close. */
void	 side_quiesce(struct side *);
/*
 * Before side_free: a close_notify if none was sent, and one attempt to
 * write what is queued (a last reply, the alert that says why a handshake
 * failed), since libevent drops what a bufferevent holds when freed.
 */
void	 side_flush_final(struct side *);
void	 side_free(struct side *);
/* What SIDE_DEFER asked for. */
void	 side_deferred(struct side *);

/*
 * Why the side reported SIDE_ERROR, in words ("client connection:
 * Connection reset by peer", "no shared cipher", ...); peer is "client"
 * or "backend".  Returns the kind of TLS failure (tls_failure_words),
 * or -1 when it was not one.
 */
int	 side_error_words(struct side *, const char *peer, bool handshake,
	    char *buf, size_t len);

#endif
