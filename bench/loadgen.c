/*
 * loadgen: the TLS load generator of the benchmark (OpenSSL client, one
 * epoll loop per thread, non-blocking sockets, edge-triggered).
 *
 *   loadgen bulk      [opts] HOST:PORT   -c conns, each sends -b bytes
 *   loadgen handshake [opts] HOST:PORT   -n full handshakes, -c at a time
 *   loadgen session   [opts] HOST:PORT   handshake --smtp: -n SMTP sessions
 *   loadgen idle      [opts] HOST:PORT   -c sessions held open
 *
 * Options:
 *   --smtp       SMTP STARTTLS: 220, EHLO, 250, STARTTLS, 220, handshake;
 *                without it the listener is implicit TLS
 *   --plain      bulk: no TLS at all (a plaintext relay)
 *   --no-txn     handshake --smtp: no EHLO, MAIL, RCPT after the handshake
 *   -c N         connections (bulk), concurrency (handshake), sessions (idle)
 *   -b BYTES     bulk: payload per connection (K, M, G suffixes: powers of 2)
 *   -n N         handshake: number of sessions (default 1000)
 *   -d SECS      handshake: start no new session after SECS (default: none)
 *   -T N         threads (default 1)
 *   -o N         idle: handshakes in flight at once (default 64 per thread)
 *   -w SECS      bound on the whole run (default 300): past it, exit 1
 *
 * After the handshake, each session does its protocol's work:
 *   bulk, implicit   the payload, then close_notify, then waits for the close
 *   bulk, --smtp     EHLO, MAIL, RCPT, DATA, 354, payload (lines of 62
 *                    printable bytes and CRLF, none starts with '.'), ".",
 *                    250, QUIT, 221, then waits for the close
 *   bulk, --plain    the payload in cleartext, shutdown(SHUT_WR), waits
 *                    for the close
 *   handshake        "ping", its one reply line, close_notify, waits for
 *                    the close
 *   handshake --smtp EHLO, MAIL, RCPT, NOOP (each 250), QUIT, 221, then
 *                    waits for the close; with --no-txn only NOOP and QUIT
 *                    (a proxy that opens its backend at RCPT, like nginx's
 *                    mail proxy with smtp_auth none, then answers NOOP
 *                    itself and never opens it)
 *   idle             like handshake, then holds the session (before QUIT)
 *                    until SIGUSR1 or until stdin reaches end of file;
 *                    "READY ..." is printed when every session is open
 * In handshake mode every session's latency is taken from just before its
 * connect(2) to the reply to its probe line ("ping" or NOOP): lat_n,
 * lat_p50_ms, lat_p90_ms, lat_p99_ms and lat_max_ms in the result (with -c 1
 * -T 1, one client's sequential sessions).
 * Every handshake is a full one: a fresh SSL per session, no session cache
 * and SSL_OP_NO_TICKET.  The result is one line on stdout:
 *   RESULT mode=bulk conns=8 ok=8 errors=0 bytes=N secs=S mib_s=R
 *          handshakes=N hs_s=R proto=TLSv1.3 cipher=... group=... sig=...
 *
 * Build: cc -O2 -pthread -o loadgen loadgen.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define CHUNK		16384		/* one TLS record of payload */
#define LINE		64		/* payload line: 62 bytes + CRLF */
#define RBUFSZ		4096

enum mode { M_BULK, M_HANDSHAKE, M_IDLE };
enum op { OP_CONNECT, OP_EXPECT, OP_SEND, OP_HANDSHAKE, OP_PAYLOAD,
	OP_MARK, OP_CLOSE_WAIT, OP_HOLD, OP_DONE };

struct step {
	enum op		 op;
	const char	*arg;	/* OP_SEND: text; OP_EXPECT: reply code or NULL for one line */
};

struct worker;

struct conn {
	int		 fd;
	SSL		*ssl;
	const struct step *step;
	struct worker	*w;
	int		 connected;
	int		 shut_sent;
	size_t		 rlen;
	char		 rbuf[RBUFSZ];
	const char	*wptr;		/* OP_SEND: what is left to write */
	size_t		 wlen;
	uint64_t	 left;		/* OP_PAYLOAD: bytes left to send */
	size_t		 poff;		/* offset in the periodic payload */
	size_t		 tried;		/* length of an SSL_write to retry, or 0 */
	double		 t0;		/* when connect(2) was called */
};

struct worker {
	pthread_t	 th;
	int		 ep;
	int		 id;
	int		 target;	/* bulk, idle: sessions to open; handshake: concurrency */
	int		 started;
	int		 active;
	int		 held;
	uint64_t	 ok, errors, dropped, handshakes, bytes;
	int		 opened_all;
	double		*lat;		/* OP_MARK: seconds from connect, per session */
	size_t		 nlat, alat;
};

/* settings */
static enum mode	 mode;
static int		 smtp;
static int		 plain;
static int		 no_txn;
static int		 nconns = 1;
static uint64_t		 bulk_bytes = 64 << 20;
static long		 nhandshakes = 1000;
static double		 hs_seconds;		/* 0: no limit */
static int		 nthreads = 1;
static int		 open_inflight = 64;
static double		 wall_limit = 300;
static struct sockaddr_in target;

/* shared state */
static SSL_CTX		*ctx;
static atomic_long	 hs_budget;		/* handshake mode: sessions left to start */
static atomic_int	 stop_all;
static atomic_int	 workers_open;		/* idle: workers that opened all */
static double		 t_start, t_deadline, t_hs_stop;
static char		 payload[2 * CHUNK];
static char		 neg_proto[32] = "-", neg_cipher[64] = "-", neg_group[32] = "-", neg_sig[32] = "-";
static pthread_mutex_t	 neg_lock = PTHREAD_MUTEX_INITIALIZER;
static int		 neg_done;

/* the scripts */
static const struct step s_smtp_pre[] = {
	{ OP_CONNECT, NULL }, { OP_EXPECT, "220" },
	{ OP_SEND, "EHLO loadgen.example\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "STARTTLS\r\n" }, { OP_EXPECT, "220" },
};
static const struct step s_smtp_bulk[] = {
	{ OP_HANDSHAKE, NULL },
	{ OP_SEND, "EHLO loadgen.example\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "MAIL FROM:<bench@loadgen.example>\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "RCPT TO:<sink@sink.example>\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "DATA\r\n" }, { OP_EXPECT, "354" },
	{ OP_PAYLOAD, NULL },
	{ OP_SEND, ".\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "QUIT\r\n" }, { OP_EXPECT, "221" },
	{ OP_CLOSE_WAIT, NULL }, { OP_DONE, NULL },
};
static const struct step s_smtp_hs[] = {
	{ OP_HANDSHAKE, NULL },
	{ OP_SEND, "EHLO loadgen.example\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "MAIL FROM:<bench@loadgen.example>\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "RCPT TO:<sink@sink.example>\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "NOOP\r\n" }, { OP_EXPECT, "250" }, { OP_MARK, NULL },
	{ OP_SEND, "QUIT\r\n" }, { OP_EXPECT, "221" },
	{ OP_CLOSE_WAIT, NULL }, { OP_DONE, NULL },
};
static const struct step s_smtp_hs_notxn[] = {
	{ OP_HANDSHAKE, NULL },
	{ OP_SEND, "NOOP\r\n" }, { OP_EXPECT, "250" }, { OP_MARK, NULL },
	{ OP_SEND, "QUIT\r\n" }, { OP_EXPECT, "221" },
	{ OP_CLOSE_WAIT, NULL }, { OP_DONE, NULL },
};
static const struct step s_smtp_idle[] = {
	{ OP_HANDSHAKE, NULL },
	{ OP_SEND, "EHLO loadgen.example\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "MAIL FROM:<bench@loadgen.example>\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "RCPT TO:<sink@sink.example>\r\n" }, { OP_EXPECT, "250" },
	{ OP_SEND, "NOOP\r\n" }, { OP_EXPECT, "250" },
	{ OP_HOLD, NULL },
};
static const struct step s_plain_bulk[] = {
	{ OP_CONNECT, NULL },
	{ OP_PAYLOAD, NULL }, { OP_CLOSE_WAIT, NULL }, { OP_DONE, NULL },
};
static const struct step s_tls_bulk[] = {
	{ OP_CONNECT, NULL }, { OP_HANDSHAKE, NULL },
	{ OP_PAYLOAD, NULL }, { OP_CLOSE_WAIT, NULL }, { OP_DONE, NULL },
};
static const struct step s_tls_hs[] = {
	{ OP_CONNECT, NULL }, { OP_HANDSHAKE, NULL },
	{ OP_SEND, "ping\n" }, { OP_EXPECT, NULL }, { OP_MARK, NULL },
	{ OP_CLOSE_WAIT, NULL }, { OP_DONE, NULL },
};
static const struct step s_tls_idle[] = {
	{ OP_CONNECT, NULL }, { OP_HANDSHAKE, NULL },
	{ OP_SEND, "ping\n" }, { OP_EXPECT, NULL },
	{ OP_HOLD, NULL },
};

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	fprintf(stderr, "loadgen: %s\n", what);
	exit(1);
}

static const struct step *
script_next_after_pre(void)
{
	if (mode == M_BULK)
		return smtp ? s_smtp_bulk : plain ? s_plain_bulk : s_tls_bulk;
	if (mode == M_HANDSHAKE)
		return smtp ? (no_txn ? s_smtp_hs_notxn : s_smtp_hs) : s_tls_hs;
	return smtp ? s_smtp_idle : s_tls_idle;
}

static void
conn_free(struct conn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	c->w->active--;
	free(c);
}

static int
conn_start(struct worker *w)
{
	struct epoll_event	 ev;
	struct conn		*c;
	int			 one = 1;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		die("out of memory");
	c->w = w;
	c->t0 = now();
	c->step = smtp ? s_smtp_pre : script_next_after_pre();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	w->started++;
	w->active++;
	if (c->fd < 0) {
		perror("loadgen: socket");
		w->errors++;
		conn_free(c);
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = c;
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl");
	if (connect(c->fd, (struct sockaddr *)&target, sizeof(target)) == 0)
		c->connected = 1;
	else if (errno != EINPROGRESS) {
		perror("loadgen: connect");
		w->errors++;
		conn_free(c);
		return -1;
	}
	return 0;
}

static void
note_negotiated(SSL *ssl)
{
	int nid;

	if (neg_done)
		return;
	pthread_mutex_lock(&neg_lock);
	if (!neg_done) {
		snprintf(neg_proto, sizeof(neg_proto), "%s", SSL_get_version(ssl));
		snprintf(neg_cipher, sizeof(neg_cipher), "%s", SSL_get_cipher_name(ssl));
		nid = SSL_get_negotiated_group(ssl);
		if (nid != 0) {
			const char *g = SSL_group_to_name(ssl, nid);
			snprintf(neg_group, sizeof(neg_group), "%s", g ? g : OBJ_nid2sn(nid));
		}
		if (SSL_get_peer_signature_type_nid(ssl, &nid) == 1)
			snprintf(neg_sig, sizeof(neg_sig), "%s", OBJ_nid2sn(nid));
		neg_done = 1;
	}
	pthread_mutex_unlock(&neg_lock);
}

/* Result of one step: go on with the next step, wait for an event, or fail. */
enum { R_NEXT, R_WAIT, R_FAIL };

static int
ssl_wait(struct conn *c, int r, const char *what)
{
	int	 e = SSL_get_error(c->ssl, r);

	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return R_WAIT;
	if (getenv("LOADGEN_DEBUG")) {
		fprintf(stderr, "loadgen: %s: SSL error %d errno %d\n", what, e, errno);
		ERR_print_errors_fp(stderr);
	}
	ERR_clear_error();
	return R_FAIL;
}

/* Read what is there into rbuf; R_NEXT when something came, R_WAIT, R_FAIL (incl. EOF). */
static int
fill(struct conn *c)
{
	size_t	 room = sizeof(c->rbuf) - c->rlen;
	int	 r;

	if (room == 0)
		return R_FAIL;
	if (c->ssl == NULL) {
		ssize_t n = recv(c->fd, c->rbuf + c->rlen, room, 0);
		if (n > 0) {
			c->rlen += (size_t)n;
			return R_NEXT;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return R_WAIT;
		return R_FAIL;
	}
	r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)room);
	if (r > 0) {
		c->rlen += (size_t)r;
		return R_NEXT;
	}
	return ssl_wait(c, r, "read");
}

/* Length of a complete reply at the start of rbuf, or 0. */
static size_t
reply_len(struct conn *c, const char *code)
{
	size_t	 off = 0;

	for (;;) {
		char *nl = memchr(c->rbuf + off, '\n', c->rlen - off);
		if (nl == NULL)
			return 0;
		size_t end = (size_t)(nl - c->rbuf) + 1;
		if (code == NULL)
			return end;
		/* an SMTP reply ends with a line whose fourth byte is not '-' */
		if (end - off < 4 || c->rbuf[off + 3] != '-')
			return end;
		off = end;
	}
}

static int
do_expect(struct conn *c)
{
	for (;;) {
		size_t n = reply_len(c, c->step->arg);
		if (n > 0) {
			int good = c->step->arg == NULL ||
			    strncmp(c->rbuf, c->step->arg, 3) == 0;
			if (!good && getenv("LOADGEN_DEBUG"))
				fprintf(stderr, "loadgen: expected %s, got %.*s", c->step->arg, (int)n, c->rbuf);
			memmove(c->rbuf, c->rbuf + n, c->rlen - n);
			c->rlen -= n;
			return good ? R_NEXT : R_FAIL;
		}
		int r = fill(c);
		if (r != R_NEXT)
			return r;
	}
}

static int
do_send(struct conn *c)
{
	if (c->wptr == NULL) {
		c->wptr = c->step->arg;
		c->wlen = strlen(c->wptr);
	}
	while (c->wlen > 0) {
		if (c->ssl == NULL) {
			ssize_t n = send(c->fd, c->wptr, c->wlen, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return R_WAIT;
				return R_FAIL;
			}
			c->wptr += n;
			c->wlen -= (size_t)n;
		} else {
			int n = SSL_write(c->ssl, c->wptr, (int)c->wlen);
			if (n <= 0)
				return ssl_wait(c, n, "write");
			c->wptr += n;
			c->wlen -= (size_t)n;
		}
	}
	c->wptr = NULL;
	return R_NEXT;
}

static int
do_handshake(struct conn *c)
{
	int	 r;

	if (c->ssl == NULL) {
		if ((c->ssl = SSL_new(ctx)) == NULL)
			return R_FAIL;
		SSL_set_fd(c->ssl, c->fd);
		SSL_set_tlsext_host_name(c->ssl, "localhost");
		SSL_set_connect_state(c->ssl);
	}
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->w->handshakes++;
		note_negotiated(c->ssl);
		return R_NEXT;
	}
	return ssl_wait(c, r, "handshake");
}

/* Discard whatever the server sends while we write (e.g. the sink's "ok"). */
static int
drain(struct conn *c)
{
	char	 junk[4096];
	int	 r;

	for (;;) {
		if (c->ssl == NULL) {
			ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
			if (n > 0)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return R_WAIT;
			return R_FAIL;
		}
		r = SSL_read(c->ssl, junk, sizeof(junk));
		if (r > 0)
			continue;
		return ssl_wait(c, r, "drain");
	}
}

static int
do_payload(struct conn *c)
{
	int	 n, dr;

	if (c->left == 0 && c->tried == 0)
		c->left = bulk_bytes;
	if (!smtp) {
		dr = drain(c);
		if (dr == R_FAIL)
			return R_FAIL;
	}
	while (c->left > 0) {
		size_t len = c->tried ? c->tried : (c->left < CHUNK ? (size_t)c->left : CHUNK);
		if (c->ssl == NULL) {
			/* cleartext: larger writes, as a relay's reads may be */
			len = c->left < CHUNK ? (size_t)c->left : CHUNK;
			ssize_t sn = send(c->fd, payload + c->poff, len, MSG_NOSIGNAL);
			if (sn < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return R_WAIT;
				return R_FAIL;
			}
			c->left -= (uint64_t)sn;
			c->w->bytes += (uint64_t)sn;
			c->poff = (c->poff + (size_t)sn) % CHUNK;
			continue;
		}
		n = SSL_write(c->ssl, payload + c->poff, (int)len);
		if (n <= 0) {
			c->tried = len;
			return ssl_wait(c, n, "payload");
		}
		c->tried = 0;
		c->left -= (uint64_t)n;
		c->w->bytes += (uint64_t)n;
		c->poff = (c->poff + (size_t)n) % CHUNK;
	}
	return R_NEXT;
}

static int
do_close_wait(struct conn *c)
{
	char	 junk[4096];
	int	 r;

	if (c->ssl == NULL) {
		if (!c->shut_sent) {
			shutdown(c->fd, SHUT_WR);
			c->shut_sent = 1;
		}
		for (;;) {
			ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
			if (n > 0)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return R_WAIT;
			return R_NEXT;		/* EOF (or reset): the relay closed */
		}
	}
	if (!c->shut_sent) {
		r = SSL_shutdown(c->ssl);
		if (r < 0) {
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return R_WAIT;
			/* the server may have closed first (after QUIT): fine */
			ERR_clear_error();
		}
		c->shut_sent = 1;
		shutdown(c->fd, SHUT_WR);
	}
	for (;;) {
		r = SSL_read(c->ssl, junk, sizeof(junk));
		if (r > 0)
			continue;
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return R_WAIT;
		ERR_clear_error();
		return R_NEXT;		/* close_notify or EOF: the server closed */
	}
}

/* A held session got an event: data is discarded, an EOF is a drop. */
static int
do_hold(struct conn *c)
{
	char	 junk[4096];
	int	 r;

	for (;;) {
		r = SSL_read(c->ssl, junk, sizeof(junk));
		if (r > 0)
			continue;
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return R_WAIT;
		ERR_clear_error();
		return R_FAIL;
	}
}

static int
do_mark(struct conn *c)
{
	struct worker	*w = c->w;

	if (w->nlat == w->alat) {
		size_t n = w->alat ? 2 * w->alat : 1024;
		double *p = realloc(w->lat, n * sizeof(*p));
		if (p == NULL)
			die("out of memory");
		w->lat = p;
		w->alat = n;
	}
	w->lat[w->nlat++] = now() - c->t0;
	return R_NEXT;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
finish(struct conn *c, int ok)
{
	struct worker	*w = c->w;

	if (ok)
		w->ok++;
	else
		w->errors++;
	conn_free(c);
	if (mode == M_HANDSHAKE && !atomic_load(&stop_all) &&
	    (hs_seconds <= 0 || now() < t_hs_stop) &&
	    atomic_fetch_sub(&hs_budget, 1) > 0)
		conn_start(w);
}

static void
drive(struct conn *c, uint32_t events)
{
	int	 r;

	for (;;) {
		switch (c->step->op) {
		case OP_CONNECT:
			if (!c->connected) {
				int err = 0;
				socklen_t el = sizeof(err);
				if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
					return;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err != 0) {
					if (getenv("LOADGEN_DEBUG"))
						fprintf(stderr, "loadgen: connect: %s\n", strerror(err));
					finish(c, 0);
					return;
				}
				c->connected = 1;
			}
			r = R_NEXT;
			break;
		case OP_EXPECT:	r = do_expect(c); break;
		case OP_SEND:	r = do_send(c); break;
		case OP_HANDSHAKE: r = do_handshake(c); break;
		case OP_PAYLOAD: r = do_payload(c); break;
		case OP_MARK:	r = do_mark(c); break;
		case OP_CLOSE_WAIT: r = do_close_wait(c); break;
		case OP_HOLD:
			r = do_hold(c);
			if (r == R_FAIL) {
				c->w->dropped++;
				c->w->held--;
				finish(c, 0);
			}
			return;
		case OP_DONE:
		default:
			finish(c, 1);
			return;
		}
		if (r == R_WAIT)
			return;
		if (r == R_FAIL) {
			finish(c, 0);
			return;
		}
		/* the cleartext phase is over: switch to the TLS script */
		if (c->step == &s_smtp_pre[sizeof(s_smtp_pre) / sizeof(s_smtp_pre[0]) - 1])
			c->step = script_next_after_pre();
		else
			c->step++;
		if (c->step->op == OP_HOLD) {
			c->w->held++;
			c->w->ok++;
			/* stays active; do_hold is run on later events only */
			return;
		}
	}
}

static void *
worker_main(void *arg)
{
	struct worker		*w = arg;
	struct epoll_event	 evs[512];

	if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll_create1");
	if (mode == M_BULK) {
		for (int i = 0; i < w->target; i++)
			conn_start(w);
	} else if (mode == M_HANDSHAKE) {
		for (int i = 0; i < w->target; i++)
			if (atomic_fetch_sub(&hs_budget, 1) > 0)
				conn_start(w);
	}
	for (;;) {
		if (mode == M_IDLE) {
			/* keep open_inflight handshakes going until target are open */
			while (w->started < w->target &&
			    w->active - w->held < open_inflight)
				conn_start(w);
			if (!w->opened_all && w->started >= w->target &&
			    w->active == w->held) {
				w->opened_all = 1;
				atomic_fetch_add(&workers_open, 1);
			}
		} else if (w->active == 0)
			break;
		if (atomic_load(&stop_all))
			break;
		if (now() > t_deadline) {
			fprintf(stderr, "loadgen: worker %d: time limit reached with %d sessions active\n",
			    w->id, w->active);
			w->errors += (uint64_t)w->active;
			break;
		}
		int n = epoll_wait(w->ep, evs, 512, 100);
		for (int i = 0; i < n; i++)
			drive(evs[i].data.ptr, evs[i].events);
	}
	return NULL;
}

static uint64_t
parse_size(const char *s)
{
	char		*end;
	double		 v = strtod(s, &end);

	switch (*end) {
	case 'k': case 'K': v *= 1024; break;
	case 'm': case 'M': v *= 1024 * 1024; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
	}
	return (uint64_t)v;
}

static void
usage(void)
{
	fprintf(stderr, "usage: loadgen bulk|handshake|session|idle [--smtp] [--plain] [--no-txn]\n"
	    "               [-c N] [-b BYTES] [-n N] [-d SECS] [-T THREADS] [-o INFLIGHT]\n"
	    "               [-w SECS] HOST:PORT\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct rlimit	 rl;
	struct worker	*ws;
	const char	*addr = NULL;
	char		 host[256], *colon;
	sigset_t	 ss;
	int		 sfd = -1;
	uint64_t	 ok = 0, errors = 0, dropped = 0, hs = 0, bytes = 0;
	double		 t_ready = 0, t_end;

	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "bulk"))
		mode = M_BULK;
	else if (!strcmp(argv[1], "handshake"))
		mode = M_HANDSHAKE;
	else if (!strcmp(argv[1], "session")) {
		mode = M_HANDSHAKE;
		smtp = 1;
	}
	else if (!strcmp(argv[1], "idle"))
		mode = M_IDLE;
	else
		usage();
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--smtp"))
			smtp = 1;
		else if (!strcmp(a, "--plain"))
			plain = 1;
		else if (!strcmp(a, "--no-txn"))
			no_txn = 1;
		else if (a[0] == '-' && strchr("cbndTow", a[1]) && a[1] && !a[2]) {
			if (v == NULL)
				usage();
			i++;
			switch (a[1]) {
			case 'c': nconns = atoi(v); break;
			case 'b': bulk_bytes = parse_size(v); break;
			case 'n': nhandshakes = atol(v); break;
			case 'd': hs_seconds = atof(v); break;
			case 'T': nthreads = atoi(v); break;
			case 'o': open_inflight = atoi(v); break;
			case 'w': wall_limit = atof(v); break;
			}
		} else if (a[0] != '-' && addr == NULL)
			addr = a;
		else
			usage();
	}
	if (addr == NULL || nconns < 1 || nthreads < 1 || (plain && (smtp || mode != M_BULK)))
		usage();
	/* whole records of whole lines, so that DATA ends with CRLF */
	bulk_bytes = bulk_bytes < CHUNK ? CHUNK : bulk_bytes / CHUNK * CHUNK;
	if (nthreads > nconns)
		nthreads = nconns;
	snprintf(host, sizeof(host), "%s", addr);
	if ((colon = strrchr(host, ':')) == NULL)
		usage();
	*colon = '\0';
	memset(&target, 0, sizeof(target));
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &target.sin_addr) != 1)
		die("HOST must be an IPv4 address");

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);	/* inherited by the workers */
	if (mode == M_IDLE && (sfd = signalfd(-1, &ss, SFD_CLOEXEC)) < 0)
		die("signalfd");

	/* the payload: lines of 62 printable bytes (never '.') and CRLF */
	for (size_t i = 0; i < CHUNK / LINE; i++) {
		char *l = payload + i * LINE;
		for (int j = 0; j < LINE - 2; j++)
			l[j] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[(i + (size_t)j) % 62];
		l[LINE - 2] = '\r';
		l[LINE - 1] = '\n';
	}
	memcpy(payload + CHUNK, payload, CHUNK);

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		die("SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	    (mode == M_IDLE ? SSL_MODE_RELEASE_BUFFERS : 0));

	atomic_store(&hs_budget, nhandshakes);
	t_start = now();
	t_deadline = t_start + wall_limit;
	t_hs_stop = t_start + hs_seconds;
	if ((ws = calloc((size_t)nthreads, sizeof(*ws))) == NULL)
		die("out of memory");
	for (int i = 0; i < nthreads; i++) {
		ws[i].id = i;
		ws[i].target = nconns / nthreads + (i < nconns % nthreads);
		if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0)
			die("pthread_create");
	}

	if (mode == M_IDLE) {
		/* wait until every worker has its sessions open, then hold */
		while (atomic_load(&workers_open) < nthreads && now() < t_deadline)
			usleep(10000);
		t_ready = now();
		for (int i = 0; i < nthreads; i++) {
			ok += ws[i].ok;
			errors += ws[i].errors;
		}
		printf("READY sessions=%llu errors=%llu secs=%.3f\n", (unsigned long long)ok,
		    (unsigned long long)errors, t_ready - t_start);
		fflush(stdout);
		ok = errors = 0;
		for (;;) {
			struct pollfd pfd[2] = { { sfd, POLLIN, 0 }, { 0, POLLIN, 0 } };
			char b[256];
			if (poll(pfd, 2, 1000) < 0 && errno != EINTR)
				break;
			if (pfd[0].revents & POLLIN)
				break;
			if ((pfd[1].revents & (POLLIN | POLLHUP)) && read(0, b, sizeof(b)) <= 0)
				break;
			if (now() > t_deadline)
				break;
		}
		atomic_store(&stop_all, 1);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(ws[i].th, NULL);
	t_end = now();
	for (int i = 0; i < nthreads; i++) {
		ok += ws[i].ok;
		errors += ws[i].errors;
		dropped += ws[i].dropped;
		hs += ws[i].handshakes;
		bytes += ws[i].bytes;
	}
	double secs = (mode == M_IDLE ? t_ready : t_end) - t_start;
	size_t nlat = 0;
	for (int i = 0; i < nthreads; i++)
		nlat += ws[i].nlat;
	double *lat = calloc(nlat + 1, sizeof(*lat));
	if (lat == NULL)
		die("out of memory");
	nlat = 0;
	for (int i = 0; i < nthreads; i++) {
		if (ws[i].nlat > 0)
			memcpy(lat + nlat, ws[i].lat, ws[i].nlat * sizeof(*lat));
		nlat += ws[i].nlat;
	}
	qsort(lat, nlat, sizeof(*lat), cmp_double);
#define PCT(p)	(nlat ? lat[(size_t)((double)(nlat - 1) * (p) + 0.5)] * 1000 : 0.0)
	printf("RESULT mode=%s smtp=%d plain=%d conns=%d ok=%llu errors=%llu dropped=%llu bytes=%llu "
	    "secs=%.6f mib_s=%.1f handshakes=%llu hs_s=%.1f lat_n=%zu lat_p50_ms=%.3f "
	    "lat_p90_ms=%.3f lat_p99_ms=%.3f lat_max_ms=%.3f proto=%s cipher=%s group=%s sig=%s\n",
	    argv[1], smtp, plain, nconns, (unsigned long long)ok, (unsigned long long)errors,
	    (unsigned long long)dropped, (unsigned long long)bytes, secs,
	    secs > 0 ? (double)bytes / secs / 1048576.0 : 0.0,
	    (unsigned long long)hs, secs > 0 ? (double)hs / secs : 0.0,
	    nlat, PCT(0.50), PCT(0.90), PCT(0.99), PCT(1.0),
	    neg_proto, neg_cipher, neg_group, neg_sig);
#undef PCT
	fflush(stdout);
	return errors == 0 && dropped == 0 ? 0 : 1;
}
