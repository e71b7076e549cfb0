/*
 * One end of a connection: see side.h.
 *
 * What libevent 2.1's bufferevents need, each found the hard way and
 * each with a test:
 *
 * - A TLS filter moves what it encrypts straight into the output of the
 *   socket bufferevent under it (libevent issue #690, sslsplit issue
 *   #303): what is queued towards a peer is the sum of both outputs, and
 *   the callback that notices it drain sits on the socket's output
 *   evbuffer, since the socket bufferevent's own callbacks belong to the
 *   filter once it is wrapped.
 * - A socket bufferevent keeps its output drain-frozen between its own
 *   writes and its input add-frozen between its own reads: a direct write
 *   or read unfreezes around itself.
 * - A TLS bufferevent on a socket does not look again at records OpenSSL
 *   already holds when reading resumes (#690 again): side_set_reading
 *   kicks it.
 * - A filter can report the peer's close_notify before the read callback
 *   has seen the bytes that came with it: those are reported first.
 * - A TLS bufferevent on a socket reports a failed write (EPIPE) as an
 *   EOF when dirty shutdowns are allowed, and stops writing after it has
 *   reported an EOF, once the callback returns: the first is an error,
 *   the second asks the owner for a deferred call (SIDE_DEFER).
 * - After an EOF, a filter may report the TCP FIN again as an error.
 * - A ClientHello already buffered under a new server filter waits for
 *   the next read from the network, which may never come; a new client
 *   filter sends its ClientHello only from a write callback that a
 *   connected socket with nothing to write never gets: both are kicked.
 * - bufferevent_free drops what is queued and sends no close_notify:
 *   side_flush_final writes what it can first.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>	/* ev_read: see side_set_reading() */
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "side.h"
#include "tlsctx.h"

static void	side_readcb(struct bufferevent *, void *);
static void	side_eventcb(struct bufferevent *, short, void *);

static void
side_report(struct side *sd, enum side_event ev)
{
	if (sd->cb != NULL)
		sd->cb(sd, ev, sd->arg);
}

void
side_init(struct side *sd, side_cb cb, void *arg)
{
	memset(sd, 0, sizeof(*sd));
	sd->cb = cb;
	sd->arg = arg;
}

void
side_set_cb(struct side *sd, side_cb cb, void *arg)
{
	sd->cb = cb;
	sd->arg = arg;
}

size_t
side_pending(const struct side *sd)
{
	size_t	 n;

	if (sd->bev == NULL)
		return 0;
	n = evbuffer_get_length(bufferevent_get_output(sd->bev));
	if (sd->sock != sd->bev)
		n += evbuffer_get_length(bufferevent_get_output(sd->sock));
	return n;
}

/*
 * Every change to the socket's output.  Only drains matter; the owner
 * acts on them from its own event, never from inside libevent's write
 * path.
 */
static void
side_drain_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct side	*sd = arg;

	(void)buf;
	if (info->n_deleted == 0 || sd->cb == NULL)
		return;
	/* libevent wrote what a direct write left: it may stop watching */
	if (sd->ssl == NULL && side_pending(sd) == 0 &&
	    (bufferevent_get_enabled(sd->sock) & EV_WRITE))
		bufferevent_disable(sd->sock, EV_WRITE);
	side_report(sd, SIDE_DRAINED);
}

/* The socket bufferevent is made: callbacks, the drain watch. */
static int
side_adopt(struct side *sd, struct bufferevent *sock, SSL *ssl)
{
	if (sock == NULL)
		return -1;
	sd->sock = sd->bev = sock;
	sd->ssl = ssl;
	evbuffer_add_cb(bufferevent_get_output(sock), side_drain_cb, sd);
	bufferevent_setcb(sock, side_readcb, NULL, side_eventcb, sd);
	return 0;
}

/* No Nagle delay on TCP: a proxy's small writes are replies someone waits for. */
static void
side_nodelay(int fd, int family)
{
	int	 one = 1;

	if (family != AF_UNIX)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int
side_accept(struct side *sd, struct event_base *base, int fd, int family)
{
	struct bufferevent *sock = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);

	if (sock == NULL) {
		close(fd);
		return -1;
	}
	side_nodelay(fd, family);
	return side_adopt(sd, sock, NULL);
}

/*
 * TLS from the first byte, with nothing to read before it: OpenSSL reads
 * and writes the socket itself, whole records at a time, with no
 * bufferevent between it and the socket (libevent 2.1 reads a socket
 * bufferevent 4 KiB at a time).
 */
int
side_accept_tls(struct side *sd, struct event_base *base, int fd, int family, SSL *ssl)
{
	struct bufferevent *sock = bufferevent_openssl_socket_new(base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);

	/* on failure libevent has freed the SSL; the socket is ours to close */
	if (sock == NULL) {
		close(fd);
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(sock, 1);
	bufferevent_enable(sock, EV_WRITE);
	side_nodelay(fd, family);
	return side_adopt(sd, sock, ssl);
}

int
side_connect(struct side *sd, struct event_base *base, const struct sockaddr *sa,
    socklen_t len)
{
	struct bufferevent *sock = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

	if (side_adopt(sd, sock, NULL) == -1)
		return -1;
	if (bufferevent_socket_connect(sock, sa, (int)len) == -1)
		return -1;
	side_nodelay(bufferevent_getfd(sock), sa->sa_family);
	return 0;
}

/*
 * Under a TLS filter, libevent 2.1 reads the socket bufferevent at most
 * 4 KiB per read event (EVBUFFER_MAX_READ), each with an ioctl(FIONREAD)
 * and a pass through epoll: twelve system calls per 16 KiB TLS record.
 * This event on the same socket, added after libevent's own and so run
 * before it when the socket is readable (libevent activates the newest
 * event of a descriptor first; priorities would starve everything else),
 * reads what is there in large pieces into the socket bufferevent's
 * input and hands it to the filter; libevent's read then finds nothing
 * and goes back to waiting.  EOF and errors are left to libevent, and so
 * is everything while the side is not reading (backpressure).
 */
#define READAHEAD_CHUNK		16384
#define READAHEAD_MAX		(4 * READAHEAD_CHUNK)

static void
side_readahead_cb(evutil_socket_t fd, short what, void *arg)
{
	struct side		*sd = arg;
	struct evbuffer		*in;
	struct evbuffer_iovec	 v[2];
	size_t			 total = 0, got;
	int			 n;
	ssize_t			 r;

	(void)what;
	/*
	 * The side's own flag, not the socket bufferevent's: a filter that
	 * stops reading only suspends the socket under it, which still says
	 * it is enabled, and reading on would defeat the backpressure.
	 */
	if (sd->cb == NULL || sd->sock == NULL || !sd->reading ||
	    !(bufferevent_get_enabled(sd->sock) & EV_READ)) {
		event_del(sd->readahead);	/* re-armed with reading (side_set_reading) */
		return;
	}
	in = bufferevent_get_input(sd->sock);
	evbuffer_unfreeze(in, 0);	/* add-frozen between libevent's own reads */
	while (total < READAHEAD_MAX) {
		if ((n = evbuffer_reserve_space(in, READAHEAD_CHUNK, v, 2)) <= 0)
			break;
		r = readv(fd, (struct iovec *)v, n);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
			/* EOF or an error: libevent's read sees it next; stop */
			event_del(sd->readahead);
			break;
		}
		if (r < 0)
			break;
		got = (size_t)r;
		for (int i = 0; i < n; i++) {
			size_t take = (size_t)r < v[i].iov_len ? (size_t)r : v[i].iov_len;

			v[i].iov_len = take;
			r -= (ssize_t)take;
		}
		evbuffer_commit_space(in, v, n);
		total += got;
		if (got < READAHEAD_CHUNK)
			break;		/* the socket is empty for now */
	}
	evbuffer_freeze(in, 0);
	if (total > 0)
		bufferevent_trigger(sd->sock, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
}

static void
side_readahead_stop(struct side *sd)
{
	if (sd->readahead != NULL) {
		event_free(sd->readahead);
		sd->readahead = NULL;
	}
}

/* Without it libevent reads alone, only slower. */
static void
side_readahead_start(struct side *sd)
{
	if (sd->readahead == NULL)
		sd->readahead = event_new(bufferevent_get_base(sd->sock),
		    bufferevent_getfd(sd->sock), EV_READ | EV_PERSIST, side_readahead_cb, sd);
	if (sd->readahead == NULL || event_add(sd->readahead, NULL) == -1)
		side_readahead_stop(sd);
}

int
side_start_tls(struct side *sd, SSL *ssl, bool server)
{
	struct bufferevent	*f;

	f = bufferevent_openssl_filter_new(bufferevent_get_base(sd->sock), sd->sock, ssl,
	    server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (f == NULL) {
		/* libevent freed the SSL and may have freed the socket: forget both */
		side_readahead_stop(sd);
		sd->sock = sd->bev = NULL;
		sd->ssl = NULL;
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	sd->bev = f;
	sd->ssl = ssl;
	sd->reading = false;
	bufferevent_setcb(f, side_readcb, NULL, side_eventcb, sd);
	bufferevent_enable(f, EV_WRITE);
	if (server) {
		/* a ClientHello that came in the same read as the verb */
		if (evbuffer_get_length(bufferevent_get_input(sd->sock)) > 0)
			bufferevent_trigger(sd->sock, EV_READ,
			    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	} else {
		/* the ClientHello goes out from a write callback: make one */
		bufferevent_trigger(sd->sock, EV_WRITE,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	}
	side_readahead_start(sd);
	return 0;
}

struct evbuffer *
side_input(struct side *sd)
{
	return bufferevent_get_input(sd->bev);
}

struct evbuffer *
side_output(struct side *sd)
{
	return bufferevent_get_output(sd->bev);
}

/*
 * A plaintext socket is written at once, without waiting for the event
 * loop to say it is writable: in the usual case the kernel takes it all,
 * and the write interest never has to be registered and removed again
 * (two system calls per write, and a pass through the loop).  What the
 * kernel does not take is left to libevent, which also reports a failed
 * write.  TLS bufferevents write for themselves once writing is on.
 */
void
side_flush(struct side *sd)
{
	struct evbuffer	*out;
	int		 fd;

	if (sd->sock == NULL || sd->shut)
		return;
	if (sd->ssl != NULL) {
		if (!(bufferevent_get_enabled(sd->bev) & EV_WRITE))
			bufferevent_enable(sd->bev, EV_WRITE);
		return;
	}
	if (bufferevent_get_enabled(sd->sock) & EV_WRITE)
		return;		/* libevent is writing already */
	out = bufferevent_get_output(sd->sock);
	if (evbuffer_get_length(out) == 0 || (fd = bufferevent_getfd(sd->sock)) < 0)
		return;
	evbuffer_unfreeze(out, 1);	/* drain-frozen between libevent's own writes */
	(void)evbuffer_write(out, fd);
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(sd->sock, EV_WRITE);
}

void
side_set_reading(struct side *sd, bool on)
{
	if (sd->bev == NULL || sd->reading == on)
		return;
	sd->reading = on;
	if (!on) {
		bufferevent_disable(sd->bev, EV_READ);
		return;
	}
	bufferevent_enable(sd->bev, EV_READ);
	if (sd->readahead != NULL)
		event_add(sd->readahead, NULL);
	/* records OpenSSL already holds, which no network read would bring (#690) */
	if (sd->ssl != NULL && sd->bev == sd->sock && SSL_has_pending(sd->ssl))
		event_active(&sd->bev->ev_read, EV_READ, 1);
}

void
side_want_shut(struct side *sd)
{
	sd->want_shut = true;
}

void
side_shut_progress(struct side *sd)
{
	if (sd->bev == NULL)
		return;
	if (sd->want_shut && !sd->shut && side_pending(sd) == 0) {
		sd->shut = true;
		if (sd->ssl != NULL && sd->tls_up) {
			SSL_shutdown(sd->ssl);
			ERR_clear_error();
		}
	}
	if (sd->shut && !sd->fin_sent &&
	    evbuffer_get_length(bufferevent_get_output(sd->sock)) == 0) {
		sd->fin_sent = true;
		(void)shutdown(bufferevent_getfd(sd->sock), SHUT_WR);
	}
}

bool
side_done_writing(const struct side *sd)
{
	return sd->fin_sent;
}

void
side_deferred(struct side *sd)
{
	if (sd->rewrite && sd->bev != NULL && sd->bev == sd->sock) {
		sd->rewrite = false;
		bufferevent_enable(sd->bev, EV_WRITE);
	}
}

void
side_quiesce(struct side *sd)
{
	side_readahead_stop(sd);
	sd->cb = NULL;
	if (sd->bev != NULL) {
		bufferevent_setcb(sd->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(sd->bev, EV_READ | EV_WRITE);
	}
}

void
side_flush_final(struct side *sd)
{
	struct evbuffer	*out;

	if (sd->sock == NULL)
		return;
	if (sd->ssl != NULL && sd->tls_up && !sd->shut &&
	    evbuffer_get_length(bufferevent_get_output(sd->bev)) == 0) {
		sd->shut = true;
		SSL_shutdown(sd->ssl);
		ERR_clear_error();
	}
	if (sd->ssl != NULL && sd->sock == sd->bev) {
		/*
		 * TLS on the socket: what is queued is plaintext.  What the
		 * peer sent and nobody read would turn the close into a reset
		 * that destroys the alert in flight: read it away first.
		 */
		char	 junk[16384];
		int	 fd = bufferevent_getfd(sd->sock);

		for (int i = 0; fd >= 0 && i < 4; i++)
			if (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) <= 0)
				break;
		return;
	}
	out = bufferevent_get_output(sd->sock);
	if (evbuffer_get_length(out) > 0 && bufferevent_getfd(sd->sock) >= 0) {
		evbuffer_unfreeze(out, 1);
		(void)evbuffer_write(out, bufferevent_getfd(sd->sock));
		evbuffer_freeze(out, 1);
	}
}

void
side_free(struct side *sd)
{
	side_readahead_stop(sd);
	if (sd->bev != NULL)
		bufferevent_free(sd->bev);	/* a filter frees its socket */
	sd->bev = sd->sock = NULL;
	sd->ssl = NULL;
}

static void
side_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	side_report(arg, SIDE_READ);
}

static void
side_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct side	*sd = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		if (sd->ssl == NULL) {
			side_report(sd, SIDE_CONNECTED);
		} else {
			sd->tls_up = true;
			side_report(sd, SIDE_TLS_READY);
		}
		return;
	}
	/* a write to a peer that is gone, from a TLS socket allowing dirty shutdowns */
	if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_WRITING))
		what = BEV_EVENT_ERROR | BEV_EVENT_WRITING;
	if (what & BEV_EVENT_ERROR) {
		if (sd->eof && (what & BEV_EVENT_READING))
			return;		/* the FIN again, after the close_notify */
		side_report(sd, SIDE_ERROR);
		return;
	}
	if (!(what & BEV_EVENT_EOF) || sd->eof)
		return;
	/* the bytes that came with the close, first (a last "221 Bye") */
	if (evbuffer_get_length(bufferevent_get_input(sd->bev)) > 0) {
		side_report(sd, SIDE_READ);
		if (sd->cb == NULL)
			return;
	}
	sd->eof = true;
	side_report(sd, SIDE_EOF);
	/* a TLS socket stops writing after this callback: the other way may still owe bytes */
	if (sd->cb != NULL && sd->ssl != NULL && sd->bev == sd->sock) {
		sd->rewrite = true;
		side_report(sd, SIDE_DEFER);
	}
}

int
side_error_words(struct side *sd, const char *peer, bool handshake, char *buf, size_t len)
{
	unsigned long	 errs[8];
	size_t		 n = 0;
	unsigned long	 e;
	int		 saved = errno;

	if (sd->ssl != NULL && sd->bev != NULL) {
		while ((e = bufferevent_get_openssl_error(sd->bev)) != 0)
			if (n < sizeof(errs) / sizeof(errs[0]))
				errs[n++] = e;
		for (size_t i = 0; i < n; i++)
			if (handshake || ERR_GET_LIB(errs[i]) != 0)
				return tls_failure_words(errs, n, sd->ssl, peer, buf, len);
		if (handshake)
			return tls_failure_words(errs, 0, sd->ssl, peer, buf, len);
	}
	if (saved != 0 && saved != EAGAIN)
		snprintf(buf, len, "%s connection: %s", peer, strerror(saved));
	else
		snprintf(buf, len, "%s connection failed", peer);
	return -1;
}
