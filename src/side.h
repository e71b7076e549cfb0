/*
 * One end of a connection: a non-blocking socket, the bytes waiting in
 * each direction, and OpenSSL over it once TLS starts.  The I/O layer: it
 * reads and writes the socket itself (as much as it can per wake-up, in
 * large pieces, writing at once rather than waiting for the loop), runs
 * OpenSSL over its own BIO, ends its direction with close_notify and FIN,
 * and reports what happens to one callback.  It knows no session, no
 * backend and no protocol: the owner decides everything (the shape of
 * OpenSMTPD's ioev.c under smtp_session.c).
 *
 * The owner calls side_* functions; the side calls back with an event.
 * The owner may call side_* functions from inside the callback, but
 * frees a side only from an event of its own.
 */
#ifndef STP_SIDE_H
#define STP_SIDE_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event_struct.h>	/* struct event, embedded: no allocation per side */

#include <openssl/ssl.h>

struct event_base;
struct evbuffer;

enum side_event {
	SIDE_READ,		/* bytes wait in side_input() */
	SIDE_DRAINED,		/* bytes left for the peer; side_pending() says what is left */
	SIDE_CONNECTED,		/* side_connect() completed */
	SIDE_TLS_READY,		/* the TLS handshake completed */
	SIDE_EOF,		/* the peer ended its direction; what came before
				   the EOF was reported as SIDE_READ first */
	SIDE_ERROR,		/* the connection failed: side_error_words() */
};

struct side;
typedef void (*side_cb)(struct side *, enum side_event, void *arg);

#define SIDE_ERRS_MAX	8
#define SIDE_SKIP_MAX	16384	/* bytes dropped before a ClientHello, at most */

struct side {
	int			 fd;		/* -1 when there is none */
	struct event		 rev;		/* readable */
	struct event		 wev;		/* writable, and connected */
	struct evbuffer		*in;		/* plaintext from the peer */
	struct evbuffer		*out;		/* plaintext to the peer */
	struct evbuffer		*raw_in;	/* TLS: ciphertext read before TLS started */
	struct evbuffer		*raw_out;	/* TLS: ciphertext for the socket */
	SSL			*ssl;		/* NULL in plaintext */
	side_cb			 cb;
	void			*arg;
	unsigned long		 errs[SIDE_ERRS_MAX];	/* OpenSSL's, at a TLS failure */
	uint8_t			 nerrs;
	int			 sys_errno;	/* errno of a failed system call */
	uint32_t		 ku_bytes;	/* TLS 1.3: plaintext since the last KeyUpdate credit */
	uint8_t			 ku_allowed;	/* KeyUpdates the peer may still send */
	bool			 ku_flood;	/* it sent more: the side fails */
	bool			 skip_to_record;	/* see side_skip_to_record */
	uint32_t		 skipped;	/* bytes it dropped */
	size_t			 raw_budget;	/* TLS: ciphertext the BIO may still read
						   in this pass (SIZE_MAX outside one) */
	bool			 events;	/* rev and wev are assigned */
	bool			 connecting;
	bool			 handshaking;
	bool			 server;	/* the TLS server side */
	bool			 tls_up;	/* handshake done */
	bool			 eof;		/* no more input from the peer */
	bool			 want_shut;	/* end our direction once drained */
	bool			 shut;		/* close_notify (if TLS) sent */
	bool			 fin_sent;	/* shutdown(SHUT_WR) done */
	bool			 reading;	/* the owner lets it read */
	bool			 want_write;	/* the socket took less than we had */
	bool			 failed;	/* SIDE_ERROR was reported */
	bool			 rev_added;
	bool			 wev_added;
};

void	 side_init(struct side *, side_cb, void *arg);
/* The callback from now on (the backend side changes owners once up). */
void	 side_set_cb(struct side *, side_cb, void *arg);
/* The side has a connection. */
bool	 side_open(const struct side *);

/* An accepted socket (of that address family), in plaintext; 0, or -1 (fd closed). */
int	 side_accept(struct side *, struct event_base *, int fd, int family);
/*
 * An accepted socket with TLS from its first byte; -1 with fd closed and
 * the SSL freed.  SIDE_TLS_READY or SIDE_ERROR follow.
 */
int	 side_accept_tls(struct side *, struct event_base *, int fd, int family, SSL *);
/* Connect to sa without blocking: SIDE_CONNECTED or SIDE_ERROR follow. -1 with errno. */
int	 side_connect(struct side *, struct event_base *, const struct sockaddr *, socklen_t);
/*
 * TLS over the connection from here on, as server or client.  The
 * handshake runs at once, whatever the owner's reading says; bytes already
 * read (a ClientHello in the same read as an upgrade verb) are its first.
 * SIDE_TLS_READY or SIDE_ERROR follow.  -1 (the SSL freed) when memory
 * runs out.
 */
int	 side_start_tls(struct side *, SSL *, bool server);
/*
 * After an upgrade verb: until the first byte that can start a TLS
 * record, what the peer sends is dropped rather than handed to the
 * handshake (up to SIDE_SKIP_MAX), and counted in skipped.  Call it
 * before side_start_tls.
 */
void	 side_skip_to_record(struct side *);

struct evbuffer *side_input(struct side *);
struct evbuffer *side_output(struct side *);
/* Bytes queued towards the peer and not yet written to the socket. */
size_t	 side_pending(const struct side *);
/* Bytes were added to side_output(): write what the kernel takes now. */
void	 side_flush(struct side *);
void	 side_set_reading(struct side *, bool);
/*
 * Read and throw away what the peer has sent so far, without waiting,
 * up to max bytes: the bytes thrown away, and *more when the socket had
 * more than max.  An EOF or an error is left for the next read to find.
 */
size_t	 side_discard_input(struct side *, size_t max, bool *more);

/*
 * End our direction once what is queued is out: close_notify (TLS), then
 * shutdown(SHUT_WR) once that is written too.  side_shut_progress does
 * what is due now; the owner calls it again on SIDE_DRAINED.
 * side_done_writing() tells when the FIN is out.
 */
void	 side_want_shut(struct side *);
void	 side_shut_progress(struct side *);
bool	 side_done_writing(const struct side *);
/* Stop reading, writing and reporting, before a close. */
void	 side_quiesce(struct side *);
/*
 * Before side_free: a close_notify if none was sent, and one attempt to
 * write what is queued (a last reply, the alert that says why a handshake
 * failed).
 */
void	 side_flush_final(struct side *);
void	 side_free(struct side *);

/*
 * Why the side reported SIDE_ERROR, in words ("client connection:
 * Connection reset by peer", "no shared cipher", ...); peer is "client"
 * or "backend".  Returns the kind of TLS failure (tls_failure_words),
 * or -1 when it was not one.
 */
int	 side_error_words(struct side *, const char *peer, bool handshake,
	    char *buf, size_t len);

#endif
