/*
 * The relay: moving bytes from one side's input to the other side's
 * output without copying (evbuffer_add_buffer), watermark backpressure, and
 * passing an EOF on as a half-close.
 *
 * Backpressure with TLS filters: a filter moves what it encrypts straight
 * into the output of the socket bufferevent under it (libevent issue #690,
 * sslsplit issue #303), so the filter's own output stays near empty while
 * the socket's grows.  What is queued towards a side is therefore the sum
 * of both outputs, and the callback that notices it drain sits on the
 * socket's output evbuffer: the socket bufferevent's own callbacks belong
 * to the filter once it is wrapped.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "log.h"
#include "session.h"
#include "stats.h"
#include "tlsctx.h"

/* Bytes queued towards a side and not yet written to its socket. */
size_t
relay_pending(const struct side *sd)
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
 * Called on every change to a side's socket output.  Only drains matter;
 * the work itself runs from the session's timer event, never from inside
 * libevent's write path.
 */
static void
relay_drain_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct side	*sd = arg;
	struct session	*s = sd->s;
	unsigned	 work = 0;
	size_t		 left;

	if (info->n_deleted == 0 || s->dead)
		return;
	/* bytes leaving for a slow reader are activity too: not idle */
	s->last_ms = now_ms();
	left = relay_pending(sd);
	/* libevent wrote what a direct write left: it may stop watching */
	if (left == 0 && sd->ssl == NULL && (bufferevent_get_enabled(sd->sock) & EV_WRITE))
		bufferevent_disable(sd->sock, EV_WRITE);
	if (sd->full && left <= s->lc->low_watermark)
		work |= SESSION_WORK_RESUME;
	if (left == 0) {
		if (sd == &s->client && s->state == SESSION_UPGRADING)
			work |= SESSION_WORK_WRAP;
		if (sd == &s->client && s->state == SESSION_CLOSING)
			work |= SESSION_WORK_CLOSE;
		if ((sd->want_shut && !sd->shut) || (sd->shut && !sd->fin_sent))
			work |= SESSION_WORK_SHUT;
	}
	if (work != 0)
		session_schedule(s, work);
}

/*
 * Bytes were queued towards a side.  A plaintext socket is written at
 * once, without waiting for the event loop to say it is writable: in the
 * usual case the kernel takes it all, and the write interest never has
 * to be registered and removed again (two system calls per write, and a
 * pass through the loop).  What the kernel does not take is left to
 * libevent, which also reports a failed write.  TLS bufferevents write
 * for themselves.
 */
void
relay_output_added(struct side *sd)
{
	struct evbuffer	*out;
	int		 fd;

	if (sd->ssl != NULL || sd->sock == NULL || sd->shut)
		return;
	if (sd == &sd->s->backend && sd->s->bstate != BACKEND_UP)
		return;
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
relay_readahead_cb(evutil_socket_t fd, short what, void *arg)
{
	struct side		*sd = arg;
	struct evbuffer		*in;
	struct evbuffer_iovec	 v[2];
	size_t			 total = 0;
	int			 n;
	ssize_t			 r;

	/*
	 * The side's own flag, not the socket bufferevent's: a filter that
	 * stops reading only suspends the socket under it, which still says
	 * it is enabled, and reading on would defeat the backpressure.
	 */
	if (sd->s->dead || sd->sock == NULL || !sd->reading ||
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
		for (int i = 0; i < n; i++) {
			size_t take = (size_t)r < v[i].iov_len ? (size_t)r : v[i].iov_len;

			v[i].iov_len = take;
			r -= (ssize_t)take;
		}
		evbuffer_commit_space(in, v, n);
		total += v[0].iov_len + (n > 1 ? v[1].iov_len : 0);
		if (v[0].iov_len + (n > 1 ? v[1].iov_len : 0) < READAHEAD_CHUNK)
			break;		/* the socket is empty for now */
	}
	evbuffer_freeze(in, 0);
	if (total > 0)
		bufferevent_trigger(sd->sock, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
}

int
relay_readahead_start(struct side *sd)
{
	if (sd->readahead == NULL) {
		sd->readahead = event_new(bufferevent_get_base(sd->sock),
		    bufferevent_getfd(sd->sock), EV_READ | EV_PERSIST, relay_readahead_cb, sd);
		if (sd->readahead == NULL)
			return -1;
	}
	return event_add(sd->readahead, NULL);
}

void
relay_readahead_stop(struct side *sd)
{
	if (sd->readahead != NULL) {
		event_free(sd->readahead);
		sd->readahead = NULL;
	}
}

/* Watch a side's socket output; the socket bufferevent outlives any filter. */
void
relay_attach(struct side *sd)
{
	evbuffer_add_cb(bufferevent_get_output(sd->sock), relay_drain_cb, sd);
}

void
relay_forward(struct session *s, struct side *from, struct side *to)
{
	struct evbuffer	*in;
	size_t		 n;

	if (from->bev == NULL || s->dead)
		return;
	in = bufferevent_get_input(from->bev);
	if ((n = evbuffer_get_length(in)) == 0)
		return;
	if (to == &s->backend && s->bstate != BACKEND_UP) {
		/* kept in the client's input until the backend is up */
		session_update_reading(s);
		return;
	}
	if (to->bev == NULL || to->shut)
		return;
	evbuffer_add_buffer(bufferevent_get_output(to->bev), in);
	relay_output_added(to);
	if (from == &s->client)
		s->bytes_in += n;
	else
		s->bytes_out += n;
	if (!to->full && relay_pending(to) >= s->lc->high_watermark) {
		to->full = true;
		session_update_reading(s);
	}
}

static void	relay_pass_eof(struct session *, struct side *);

/* One side's input ended: pass the EOF on once what it sent is delivered. */
void
relay_eof(struct session *s, struct side *sd)
{
	struct side	*other = sd == &s->client ? &s->backend : &s->client;

	if (sd->eof)
		return;
	sd->eof = true;
	if (s->first_eof == NULL)
		s->first_eof = sd == &s->client ? "client-closed" : "backend-closed";
	log_debug("session %llu: EOF from the %s", (unsigned long long)s->id,
	    sd == &s->client ? "client" : "backend");

	if (sd == &s->backend && s->state != SESSION_RELAY) {
		/* the backend left before the protocol was done: say goodbye */
		session_finish(s, "backend-closed", NULL);
		return;
	}
	if (s->state == SESSION_RELAY)
		relay_forward(s, sd, other);
	if (s->dead)
		return;
	if (sd == &s->client && (s->held || s->unparsed) &&
	    evbuffer_get_length(bufferevent_get_input(sd->bev)) > 0) {
		/*
		 * The module holds commands the client pipelined before its
		 * EOF (an upgrade or a refusal waits for earlier replies, or
		 * the client has not read its replies yet): they reach the
		 * backend before the EOF does, once the module has had them
		 * (relay_eof_released).
		 */
		session_update_reading(s);
		return;
	}
	relay_pass_eof(s, other);
}

/* The client's EOF waited for held input: pass it on now if it is due. */
void
relay_eof_released(struct session *s)
{
	if (s->dead || !s->client.eof || s->held || s->unparsed || s->backend.want_shut)
		return;
	relay_pass_eof(s, &s->backend);
}

static void
relay_pass_eof(struct session *s, struct side *other)
{
	other->want_shut = true;
	session_update_reading(s);
	if (other == &s->backend && s->bstate != BACKEND_UP) {
		if (s->bstate == BACKEND_IDLE)
			session_close(s, "client-closed", NULL);
		return;		/* applied by session_backend_up() */
	}
	relay_try_shut(s, other);
}

/*
 * Half-close towards a side: once its output is empty, a close_notify
 * (TLS) and then, once that is written too, shutdown(SHUT_WR).  The
 * session ends when both directions have ended and been passed on.
 */
void
relay_try_shut(struct session *s, struct side *sd)
{
	if (s->dead || sd->bev == NULL)
		return;
	/*
	 * Not while the backend is still being reached: its TLS handshake
	 * or STARTTLS dialogue needs the connection both ways, and what the
	 * client sent is not there yet.  session_backend_up applies it.
	 */
	if (sd == &s->backend && s->bstate != BACKEND_UP)
		return;
	if (sd->want_shut && !sd->shut && relay_pending(sd) == 0) {
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
	if (s->client.eof && s->backend.eof && s->client.fin_sent &&
	    s->backend.fin_sent)
		session_close(s, s->first_eof, NULL);
}

/*
 * Before a bufferevent is freed: a close_notify if none was sent, and one
 * non-blocking attempt to write what is still queued (a last reply, or the
 * TLS alert that says why a handshake failed), since libevent drops a
 * bufferevent's output when it is freed.
 */
void
relay_flush_final(struct side *sd)
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
		/* a socket bufferevent keeps its output drain-frozen between its own writes */
		evbuffer_unfreeze(out, 1);
		(void)evbuffer_write(out, bufferevent_getfd(sd->sock));
		evbuffer_freeze(out, 1);
	}
}

/*
 * Why a side's bufferevent reported an error, in words; returns the kind
 * of TLS failure (enum stat_handshake_failure), HS_FAIL_OTHER otherwise.
 */
int
relay_error_words(struct side *sd, const char *peer, bool handshake, char *buf, size_t len)
{
	unsigned long	 errs[8];
	size_t		 n = 0;
	unsigned long	 e;
	int		 saved = errno;

	if (sd->ssl != NULL) {
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
	return HS_FAIL_OTHER;
}
