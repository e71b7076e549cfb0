/*
 * One end of a connection: see side.h.
 *
 * The side does its own I/O on a non-blocking socket with two libevent
 * events (readable, writable), level-triggered, rather than through
 * bufferevents: each wake-up reads what the socket has, in large pieces,
 * up to a budget, and each write goes to the kernel at once, with the
 * write event registered only when the kernel takes less than we had
 * (HAProxy's speculative I/O, src/raw_sock.c).  TLS runs over a BIO of
 * our own: OpenSSL reads the socket through it, in large pieces with
 * read-ahead, after the bytes the side had already read (a ClientHello
 * that came in the same read as an upgrade verb); what OpenSSL writes
 * goes to a buffer that the side writes with one writev, so that the
 * records of one pass leave in one system call.
 *
 * Reading stops when the owner says so (backpressure: the kernel holds
 * the rest), except during a TLS handshake, which runs below the owner.
 * OpenSSL may hold whole records it read ahead when reading stops; they
 * are taken as soon as reading resumes, without waiting for the socket.
 */
#include "autoconfig.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "side.h"
#include "tlsctx.h"
#include "util.h"

/*
 * libevent rounds an evbuffer chain's size, its header included, up to a
 * power of two: asking for 64 KiB allocates 128 KiB, over glibc's mmap
 * threshold, an mmap, page faults and a munmap for every piece.  The
 * pieces leave room for the header.
 */
#define SIDE_CHAIN_HEADER	256
#define SIDE_CHUNK_SMALL	(16384 - SIDE_CHAIN_HEADER)	/* the first read of a wake-up */
#define SIDE_CHUNK		(65536 - SIDE_CHAIN_HEADER)	/* the next ones, when the first filled */
#define SIDE_READ_BUDGET	(4 * SIDE_CHUNK)	/* per wake-up: others run too */
#define SIDE_READ_RECORDS	256	/* and records: 1-byte ones cost as much as full ones */
#define SIDE_RAW_OUT_MAX	(4 * 16384 + 1024)	/* ciphertext made ahead of the socket */
#define SIDE_RECORD		16384		/* plaintext per TLS record */
/*
 * What OpenSSL may write by itself while it reads (KeyUpdate answers,
 * alerts) on top of what side_encrypt makes: past it the side stops
 * reading until the peer takes some.  A peer that asks for a KeyUpdate
 * in every record and never reads would otherwise have us queue one
 * answer per record.
 */
#define SIDE_RAW_OUT_STOP	(2 * SIDE_RAW_OUT_MAX)
/*
 * A TLS 1.3 KeyUpdate costs a key derivation to take in and another to
 * answer, and carries no data: a peer that sends nothing else keeps the
 * worker busy for nobody.  A peer may send SIDE_KU_BURST, and earns one
 * more per SIDE_KU_EARN bytes of data (BoringSSL stops at 32 in a row;
 * real peers update after gigabytes, or hours).
 */
#define SIDE_KU_BURST		32
#define SIDE_KU_EARN		(1024 * 1024)

static void	side_read_cb(evutil_socket_t, short, void *);
static void	side_write_cb(evutil_socket_t, short, void *);
static void	side_handshake(struct side *);
static void	side_write(struct side *);

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
	sd->fd = -1;
	sd->raw_budget = SIZE_MAX;
	sd->cb = cb;
	sd->arg = arg;
}

void
side_set_cb(struct side *sd, side_cb cb, void *arg)
{
	sd->cb = cb;
	sd->arg = arg;
}

bool
side_open(const struct side *sd)
{
	return sd->fd >= 0;
}

/* OpenSSL wrote more by itself than the peer took: read no more for now. */
static bool
side_owes_peer(const struct side *sd)
{
	return sd->raw_out != NULL && evbuffer_get_length(sd->raw_out) > SIDE_RAW_OUT_STOP;
}

/* The events say what the side needs: reading and writing. */
static void
side_update(struct side *sd)
{
	bool	 r, w;

	if (!sd->events)
		return;
	r = sd->cb != NULL && !sd->eof && !sd->connecting &&
	    (sd->handshaking || (sd->reading && !side_owes_peer(sd)));
	w = sd->cb != NULL && !sd->failed && (sd->connecting || sd->want_write);
	if (r != sd->rev_added) {
		if (r)
			event_add(&sd->rev, NULL);
		else
			event_del(&sd->rev);
		sd->rev_added = r;
		/* records OpenSSL already holds, which no socket event would bring */
		if (r && sd->tls_up && (SSL_has_pending(sd->ssl) || sd->raw_in != NULL))
			event_active(&sd->rev, EV_READ, 1);
	}
	if (w != sd->wev_added) {
		if (w)
			event_add(&sd->wev, NULL);
		else
			event_del(&sd->wev);
		sd->wev_added = w;
	}
}

/* No Nagle delay on TCP: a proxy's small writes are replies someone waits for. */
static void
side_nodelay(int fd, int family)
{
	int	 one = 1;

	if (family != AF_UNIX)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int
side_adopt(struct side *sd, struct event_base *base, int fd)
{
	sd->fd = fd;
	sd->in = evbuffer_new();
	sd->out = evbuffer_new();
	if (sd->in == NULL || sd->out == NULL) {
		errno = ENOMEM;
		return -1;
	}
	event_assign(&sd->rev, base, fd, EV_READ | EV_PERSIST, side_read_cb, sd);
	event_assign(&sd->wev, base, fd, EV_WRITE | EV_PERSIST, side_write_cb, sd);
	sd->events = true;
	return 0;
}

int
side_accept(struct side *sd, struct event_base *base, int fd, int family)
{
	if (side_adopt(sd, base, fd) == -1)
		return -1;
	side_nodelay(fd, family);
	return 0;
}

int
side_accept_tls(struct side *sd, struct event_base *base, int fd, int family, SSL *ssl)
{
	if (side_adopt(sd, base, fd) == -1) {
		SSL_free(ssl);
		return -1;
	}
	side_nodelay(fd, family);
	return side_start_tls(sd, ssl, true);
}

int
side_connect(struct side *sd, struct event_base *base, const struct sockaddr *sa,
    socklen_t len)
{
	int	 fd;

	if ((fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (side_adopt(sd, base, fd) == -1)
		return -1;
	side_nodelay(fd, sa->sa_family);
	if (connect(fd, sa, len) == -1 && errno != EINPROGRESS && errno != EINTR)
		return -1;
	/* done or under way: the socket says which once it is writable */
	sd->connecting = true;
	side_update(sd);
	return 0;
}

/* OpenSSL over the socket, after the bytes already read. */

static int
side_bio_write(BIO *bio, const char *buf, int len)
{
	struct side	*sd = BIO_get_data(bio);

	BIO_clear_retry_flags(bio);
	/* made when there is something to write: an idle side holds none */
	if (sd->raw_out == NULL && (sd->raw_out = evbuffer_new()) == NULL)
		return -1;
	if (evbuffer_add(sd->raw_out, buf, (size_t)len) == -1)
		return -1;
	return len;
}

/*
 * What the peer sent after the verb, up to the first byte that may
 * start a record, is dropped: the bytes of buf left, moved to its start.
 */
static ssize_t
side_skip(struct side *sd, char *buf, size_t n)
{
	size_t	 k = tls_record_start((const unsigned char *)buf, n);

	if (k > SIDE_SKIP_MAX - sd->skipped)
		k = SIDE_SKIP_MAX - sd->skipped;	/* enough: the handshake says no */
	sd->skipped += (uint32_t)k;
	if (k < n || sd->skipped == SIDE_SKIP_MAX)
		sd->skip_to_record = false;
	memmove(buf, buf + k, n - k);
	return (ssize_t)(n - k);
}

void
side_skip_to_record(struct side *sd)
{
	sd->skip_to_record = true;
}

static int
side_bio_read(BIO *bio, char *buf, int len)
{
	struct side	*sd = BIO_get_data(bio);
	ssize_t		 n;

	BIO_clear_retry_flags(bio);
	if (sd->ku_flood) {
		sd->sys_errno = EPROTO;	/* a failure: side_error_words says why */
		return -1;
	}
	if (sd->raw_in != NULL) {
		int got = evbuffer_remove(sd->raw_in, buf, (size_t)len);

		if (evbuffer_get_length(sd->raw_in) == 0) {
			evbuffer_free(sd->raw_in);	/* read once, at the upgrade */
			sd->raw_in = NULL;
		}
		if (got > 0)
			return got;
	}
	/*
	 * The pass's budget is in ciphertext: records without plaintext
	 * (KeyUpdates) or with one byte each cost as much to take in as
	 * full ones, and others wait meanwhile.  The socket still has the
	 * rest and says so again on the next pass.
	 */
	if (sd->raw_budget == 0) {
		BIO_set_retry_read(bio);
		return -1;
	}
	if ((size_t)len > sd->raw_budget)
		len = (int)sd->raw_budget;
	if ((n = recv(sd->fd, buf, (size_t)len, 0)) >= 0) {
		if (sd->raw_budget != SIZE_MAX)
			sd->raw_budget -= (size_t)n;
		if (sd->skip_to_record && n > 0 && (n = side_skip(sd, buf, (size_t)n)) == 0) {
			BIO_set_retry_read(bio);	/* all of it dropped: more may come */
			return -1;
		}
		return (int)n;
	}
	if (errno == EAGAIN || errno == EINTR)
		BIO_set_retry_read(bio);
	else
		sd->sys_errno = errno;
	return -1;
}

static long
side_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	(void)bio;
	(void)num;
	(void)ptr;
	/* writes are buffered by the side, which writes them itself */
	return cmd == BIO_CTRL_FLUSH || cmd == BIO_CTRL_DUP;
}

static int
side_bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

static BIO_METHOD	*side_bio_method;

static void
side_bio_method_make(void)
{
	BIO_METHOD	*m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
			    "starttls-proxy side");

	if (m == NULL || !BIO_meth_set_write(m, side_bio_write) ||
	    !BIO_meth_set_read(m, side_bio_read) || !BIO_meth_set_ctrl(m, side_bio_ctrl) ||
	    !BIO_meth_set_create(m, side_bio_create)) {
		BIO_meth_free(m);
		return;
	}
	side_bio_method = m;
}

/* Counts the peer's KeyUpdates (see SIDE_KU_BURST). */
static void
side_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
    SSL *ssl, void *arg)
{
	struct side	*sd = arg;

	(void)version;
	(void)ssl;
	if (write_p || content_type != SSL3_RT_HANDSHAKE || len < 1 ||
	    *(const unsigned char *)buf != SSL3_MT_KEY_UPDATE)
		return;
	if (sd->ku_allowed == 0)
		sd->ku_flood = true;	/* the next read of the BIO fails */
	else
		sd->ku_allowed--;
}

/* Data from the peer earns it KeyUpdates back, up to the burst. */
static void
side_ku_earn(struct side *sd, size_t n)
{
	if (sd->ku_allowed >= SIDE_KU_BURST)
		return;
	if (n >= SIDE_KU_EARN - sd->ku_bytes) {
		sd->ku_allowed++;
		sd->ku_bytes = 0;
	} else
		sd->ku_bytes += (uint32_t)n;
}

int
side_start_tls(struct side *sd, SSL *ssl, bool server)
{
	static pthread_once_t	 once = PTHREAD_ONCE_INIT;
	BIO			*bio = NULL;

	pthread_once(&once, side_bio_method_make);
	if (side_bio_method == NULL || (bio = BIO_new(side_bio_method)) == NULL ||
	    (evbuffer_get_length(sd->in) > 0 && (sd->raw_in = evbuffer_new()) == NULL)) {
		BIO_free(bio);
		SSL_free(ssl);
		return -1;
	}
	BIO_set_data(bio, sd);
	SSL_set_bio(ssl, bio, bio);
	sd->ku_allowed = SIDE_KU_BURST;
	SSL_set_msg_callback(ssl, side_msg_cb);
	SSL_set_msg_callback_arg(ssl, sd);
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	/* what was read in cleartext and not consumed is the handshake's start */
	if (sd->raw_in != NULL) {
		evbuffer_add_buffer(sd->raw_in, sd->in);
		sd->skip_to_record = false;	/* it starts with a record already */
	}
	sd->ssl = ssl;
	sd->server = server;
	sd->handshaking = true;
	side_update(sd);
	/*
	 * A client speaks first, and a server may have its ClientHello in
	 * raw_in already: the handshake starts on the next pass, from the
	 * side's own event, never inside the owner's call.
	 */
	event_active(&sd->rev, EV_READ, 1);
	return 0;
}

struct evbuffer *
side_input(struct side *sd)
{
	return sd->in;
}

struct evbuffer *
side_output(struct side *sd)
{
	return sd->out;
}

size_t
side_pending(const struct side *sd)
{
	size_t	 n = 0;

	if (sd->out != NULL)
		n += evbuffer_get_length(sd->out);
	if (sd->raw_out != NULL)
		n += evbuffer_get_length(sd->raw_out);
	return n;
}

/* Keep what OpenSSL put in its error queue, for side_error_words. */
static void
side_keep_errors(struct side *sd)
{
	unsigned long	 e;

	while ((e = ERR_get_error()) != 0)
		if (sd->nerrs < SIDE_ERRS_MAX)
			sd->errs[sd->nerrs++] = e;
}

static void
side_failed(struct side *sd, int err)
{
	if (err != 0)
		sd->sys_errno = err;
	sd->failed = true;
	sd->eof = true;		/* nothing more will come */
	side_update(sd);
	side_report(sd, SIDE_ERROR);
}

/*
 * The peer is gone while we wrote to it.  What it sent last may say why:
 * a client whose TLS library rejected our certificate once its handshake
 * was done sends its goodbye in cleartext (libldap's Unbind), and that is
 * the reason to give, not the broken pipe it left.
 */
static void
side_read_reason(struct side *sd)
{
	char	 scratch[4096];
	size_t	 n;

	for (int i = 0; i < 8 && sd->ssl != NULL && sd->nerrs == 0; i++) {
		ERR_clear_error();
		if (SSL_read_ex(sd->ssl, scratch, sizeof(scratch), &n) == 1)
			continue;
		if (SSL_get_error(sd->ssl, 0) == SSL_ERROR_SSL)
			side_keep_errors(sd);
		break;
	}
}

/*
 * Write what the socket takes: the ciphertext OpenSSL made, or the
 * plaintext.  0, or -1 after reporting an error.  The write event is on
 * while the kernel takes less than there is.
 */
static int
side_write_raw(struct side *sd, struct evbuffer *buf, bool *progress)
{
	int	 n;

	if (buf == NULL) {
		sd->want_write = false;
		return 0;
	}
	while (evbuffer_get_length(buf) > 0) {
		if ((n = evbuffer_write(buf, sd->fd)) > 0) {
			*progress = true;
			continue;
		}
		if (n == -1 && (errno == EINTR))
			continue;
		if (n == -1 && errno == EAGAIN) {
			/* the write event, whoever called: a read pass writes too */
			sd->want_write = true;
			side_update(sd);
			return 0;
		}
		{
			int err = n == 0 ? EPIPE : errno;

			if (err == EPIPE || err == ECONNRESET)
				side_read_reason(sd);
			side_failed(sd, err);
		}
		return -1;
	}
	sd->want_write = false;
	if (buf == sd->raw_out) {
		evbuffer_free(sd->raw_out);	/* all out: an idle side holds none */
		sd->raw_out = NULL;
	}
	return 0;
}

/* Plaintext through OpenSSL into raw_out, as far as raw_out may grow. */
static void
side_encrypt(struct side *sd)
{
	struct evbuffer_iovec	 v;
	const void		*p;
	size_t			 len, n, done;

	while ((len = evbuffer_get_length(sd->out)) > 0 &&
	    (sd->raw_out == NULL || evbuffer_get_length(sd->raw_out) < SIDE_RAW_OUT_MAX)) {
		n = len < SIDE_RECORD ? len : SIDE_RECORD;
		/*
		 * A record from the first piece as it is when it is large
		 * (what a read brought): no copy; small pieces (replies, short
		 * lines) are joined first, so that records stay whole.
		 */
		if (evbuffer_peek(sd->out, -1, NULL, &v, 1) >= 1 && v.iov_len >= SIDE_RECORD / 4) {
			p = v.iov_base;
			if (n > v.iov_len)
				n = v.iov_len;
		} else
			p = evbuffer_pullup(sd->out, (ssize_t)n);
		ERR_clear_error();
		if (SSL_write_ex(sd->ssl, p, n, &done) != 1) {
			side_keep_errors(sd);
			side_failed(sd, 0);
			return;
		}
		evbuffer_drain(sd->out, done);
	}
}

static void
side_write(struct side *sd)
{
	bool	 progress = false;

	if (!side_open(sd) || sd->connecting || sd->fin_sent || sd->failed)
		return;
	if (sd->ssl == NULL) {
		if (side_write_raw(sd, sd->out, &progress) == -1)
			return;
	} else {
		for (;;) {
			if (side_write_raw(sd, sd->raw_out, &progress) == -1)
				return;
			if (sd->want_write || sd->handshaking || sd->shut ||
			    evbuffer_get_length(sd->out) == 0)
				break;
			side_encrypt(sd);
			if (sd->failed)
				return;
		}
	}
	side_update(sd);
	if (progress)
		side_report(sd, SIDE_DRAINED);
}

void
side_flush(struct side *sd)
{
	if (!sd->want_write)
		side_write(sd);
}

static void
side_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct side	*sd = arg;
	int		 err = 0;
	socklen_t	 len = sizeof(err);

	(void)what;
	if (sd->connecting) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err == EINPROGRESS)
			return;
		sd->connecting = false;
		/*
		 * Reset after it was accepted: it did connect, and the reset is
		 * the connection's first event, not a refused connect.
		 */
		if (err == ECONNRESET || err == EPIPE)
			err = 0;
		if (err != 0) {
			side_failed(sd, err);
			return;
		}
		side_update(sd);
		side_report(sd, SIDE_CONNECTED);
		if (sd->cb != NULL)
			side_write(sd);
		return;
	}
	sd->want_write = false;
	side_write(sd);
}

/* The peer ended its direction. */
static void
side_got_eof(struct side *sd)
{
	sd->eof = true;
	side_update(sd);
	side_report(sd, SIDE_EOF);
}

/*
 * Read what the socket has, in pieces: a first one of 16 KiB (most reads
 * are small: no large buffer for them), then 64 KiB ones while the pieces
 * fill, each reported as it comes so that the owner can stop reading
 * between them.
 */
static void
side_read_plain(struct side *sd)
{
	struct evbuffer_iovec	 v[2];
	size_t			 total = 0, chunk = SIDE_CHUNK_SMALL;
	ssize_t			 r;
	int			 n;

	while (sd->reading && sd->cb != NULL && total < SIDE_READ_BUDGET) {
		if ((n = evbuffer_reserve_space(sd->in, (ev_ssize_t)chunk, v, 2)) <= 0) {
			side_failed(sd, ENOMEM);
			return;
		}
		if ((r = readv(sd->fd, (struct iovec *)v, n)) > 0) {
			size_t got = (size_t)r;

			for (int i = 0; i < n; i++) {
				size_t take = got < v[i].iov_len ? got : v[i].iov_len;

				v[i].iov_len = take;
				got -= take;
			}
			evbuffer_commit_space(sd->in, v, n);
			total += (size_t)r;
			side_report(sd, SIDE_READ);
			if ((size_t)r < chunk)
				return;		/* the socket is empty for now */
			chunk = SIDE_CHUNK;
			continue;
		}
		evbuffer_commit_space(sd->in, v, 0);
		if (r == 0) {
			side_got_eof(sd);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			side_failed(sd, errno);
		return;
	}
}

/*
 * Records through OpenSSL, as many as it has or the socket gives, within
 * the budget: SIDE_READ_BUDGET of plaintext, SIDE_READ_RECORDS records,
 * and SIDE_READ_BUDGET of ciphertext from the socket (side_bio_read).
 */
static void
side_read_tls_pass(struct side *sd)
{
	struct evbuffer_iovec	 v;
	size_t			 total = 0, got, r;
	unsigned		 records = 0;
	int			 err = SSL_ERROR_NONE;
	bool			 progress = false;

	while (sd->reading && sd->cb != NULL && !sd->eof) {
		if (total >= SIDE_READ_BUDGET || records >= SIDE_READ_RECORDS) {
			/* come back on the next pass: what OpenSSL holds, the socket will not say */
			if (SSL_has_pending(sd->ssl))
				event_active(&sd->rev, EV_READ, 1);
			return;
		}
		if (evbuffer_reserve_space(sd->in, SIDE_CHUNK, &v, 1) != 1) {
			side_failed(sd, ENOMEM);
			return;
		}
		for (got = 0; got < v.iov_len && records < SIDE_READ_RECORDS; got += r, records++) {
			ERR_clear_error();
			if (SSL_read_ex(sd->ssl, (char *)v.iov_base + got, v.iov_len - got, &r) != 1) {
				err = SSL_get_error(sd->ssl, 0);
				/* why, before anything else can clear the queue */
				if (err == SSL_ERROR_SSL || err == SSL_ERROR_SYSCALL)
					side_keep_errors(sd);
				break;
			}
			side_ku_earn(sd, r);	/* before the next record's KeyUpdate counts */
		}
		v.iov_len = got;
		evbuffer_commit_space(sd->in, &v, got > 0);
		/* reading may make OpenSSL write (a key update): send it */
		if (side_write_raw(sd, sd->raw_out, &progress) == -1)
			return;
		if (side_owes_peer(sd)) {
			side_update(sd);	/* until the peer reads: side_write */
			if (got > 0)
				side_report(sd, SIDE_READ);
			return;
		}
		if (got > 0) {
			total += got;
			side_report(sd, SIDE_READ);
		}
		switch (err) {
		case SSL_ERROR_NONE:
			continue;	/* the piece filled: more may wait */
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			return;		/* the socket is empty for now */
		case SSL_ERROR_ZERO_RETURN:
			side_got_eof(sd);	/* close_notify, or a bare FIN (IGNORE_UNEXPECTED_EOF) */
			return;
		case SSL_ERROR_SYSCALL:
			if (sd->sys_errno == 0 && sd->nerrs == 0) {
				side_got_eof(sd);
				return;
			}
			side_failed(sd, 0);
			return;
		default:
			side_failed(sd, 0);
			return;
		}
	}
}

static void
side_read_tls(struct side *sd)
{
	sd->raw_budget = SIDE_READ_BUDGET;
	side_read_tls_pass(sd);
	sd->raw_budget = SIZE_MAX;
}

/* Only the peer's close, in OpenSSL's words: not a TLS failure. */
static bool
side_errors_are_eof(const struct side *sd)
{
	for (unsigned i = 0; i < sd->nerrs; i++)
		if (ERR_GET_REASON(sd->errs[i]) != SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return false;
	return true;
}

static void
side_handshake(struct side *sd)
{
	bool	 progress = false;
	int	 r, err;

	ERR_clear_error();
	r = SSL_do_handshake(sd->ssl);
	err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(sd->ssl, r);
	if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
		side_keep_errors(sd);
	/* what it made: a ServerHello, a ClientHello, an alert that says why */
	if (side_write_raw(sd, sd->raw_out, &progress) == -1)
		return;
	switch (err) {
	case SSL_ERROR_NONE:
		sd->handshaking = false;
		sd->tls_up = true;
		tls_handshake_done(sd->ssl);
		side_update(sd);
		side_report(sd, SIDE_TLS_READY);
		/* the peer's first records may have come with its last handshake message */
		if (sd->cb != NULL && sd->reading &&
		    (SSL_has_pending(sd->ssl) || sd->raw_in != NULL))
			event_active(&sd->rev, EV_READ, 1);
		if (sd->cb != NULL && evbuffer_get_length(sd->out) > 0)
			side_write(sd);
		return;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		side_update(sd);
		return;
	case SSL_ERROR_ZERO_RETURN:
		side_got_eof(sd);
		return;
	case SSL_ERROR_SYSCALL:
		if (sd->sys_errno == 0 && sd->nerrs == 0) {
			side_got_eof(sd);
			return;
		}
		side_failed(sd, 0);
		return;
	default:
		if (sd->nerrs > 0 && side_errors_are_eof(sd)) {
			side_got_eof(sd);	/* it left during the handshake */
			return;
		}
		side_failed(sd, 0);
		return;
	}
}

static void
side_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct side	*sd = arg;

	(void)fd;
	(void)what;
	if (sd->handshaking)
		side_handshake(sd);
	else if (sd->ssl != NULL)
		side_read_tls(sd);
	else
		side_read_plain(sd);
}

void
side_set_reading(struct side *sd, bool on)
{
	if (sd->reading == on)
		return;
	sd->reading = on;
	side_update(sd);
}

size_t
side_discard_input(struct side *sd, size_t max, bool *more)
{
	char	 scratch[16384];
	size_t	 total = 0, n;
	ssize_t	 r;

	*more = false;
	if (!side_open(sd) || sd->connecting || sd->handshaking || sd->eof)
		return 0;
	while (total < max) {
		size_t want = max - total < sizeof(scratch) ? max - total : sizeof(scratch);

		if (sd->ssl != NULL) {
			ERR_clear_error();
			if (SSL_read_ex(sd->ssl, scratch, want, &n) != 1) {
				ERR_clear_error();
				return total;
			}
		} else {
			if ((r = recv(sd->fd, scratch, want, MSG_DONTWAIT)) <= 0)
				return total;
			n = (size_t)r;
		}
		total += n;
	}
	*more = true;
	return total;
}

void
side_want_shut(struct side *sd)
{
	sd->want_shut = true;
}

void
side_shut_progress(struct side *sd)
{
	bool	 progress = false;

	if (!side_open(sd) || sd->connecting)
		return;
	if (sd->want_shut && !sd->shut && side_pending(sd) == 0) {
		sd->shut = true;
		if (sd->ssl != NULL && sd->tls_up) {
			ERR_clear_error();
			(void)SSL_shutdown(sd->ssl);	/* close_notify, into raw_out */
			ERR_clear_error();
			if (side_write_raw(sd, sd->raw_out, &progress) == -1)
				return;
		}
	}
	if (sd->shut && !sd->fin_sent && side_pending(sd) == 0) {
		sd->fin_sent = true;
		(void)shutdown(sd->fd, SHUT_WR);
	}
	side_update(sd);
}

bool
side_done_writing(const struct side *sd)
{
	return sd->fin_sent;
}

void
side_quiesce(struct side *sd)
{
	sd->cb = NULL;
	if (sd->events) {
		event_del(&sd->rev);
		event_del(&sd->wev);
		sd->rev_added = false;
		sd->wev_added = false;
	}
}

void
side_flush_final(struct side *sd)
{
	char	 junk[16384];

	if (!side_open(sd) || sd->connecting)
		return;
	if (sd->ssl != NULL && sd->tls_up && !sd->failed)
		side_encrypt(sd);	/* the last reply, as far as it goes */
	if (sd->ssl != NULL && sd->tls_up && !sd->shut && !sd->failed &&
	    evbuffer_get_length(sd->out) == 0) {
		sd->shut = true;
		ERR_clear_error();
		(void)SSL_shutdown(sd->ssl);
		ERR_clear_error();
	}
	/*
	 * What the peer sent and nobody read would turn the close into a
	 * reset that destroys the last reply or alert in flight: read it
	 * away first.
	 */
	for (int i = 0; sd->ssl != NULL && i < 4; i++)
		if (recv(sd->fd, junk, sizeof(junk), MSG_DONTWAIT) <= 0)
			break;
	/* one attempt, never blocking */
	if (sd->raw_out != NULL && evbuffer_get_length(sd->raw_out) > 0)
		(void)evbuffer_write(sd->raw_out, sd->fd);
	else if (sd->ssl == NULL && evbuffer_get_length(sd->out) > 0)
		(void)evbuffer_write(sd->out, sd->fd);
}

void
side_free(struct side *sd)
{
	side_quiesce(sd);
	if (sd->ssl != NULL)
		SSL_free(sd->ssl);	/* and its BIO */
	if (sd->fd >= 0)
		close(sd->fd);
	if (sd->in != NULL)
		evbuffer_free(sd->in);
	if (sd->out != NULL)
		evbuffer_free(sd->out);
	if (sd->raw_in != NULL)
		evbuffer_free(sd->raw_in);
	if (sd->raw_out != NULL)
		evbuffer_free(sd->raw_out);
	sd->ssl = NULL;
	sd->fd = -1;
	sd->in = sd->out = sd->raw_in = sd->raw_out = NULL;
	sd->events = false;
}

int
side_error_words(struct side *sd, const char *peer, bool handshake, char *buf, size_t len)
{
	if (sd->ku_flood) {
		snprintf(buf, len, "%s sent more TLS KeyUpdates than its data earns "
		    "(%d, and one per MiB)", peer, SIDE_KU_BURST);
		return -1;
	}
	if (sd->ssl != NULL) {
		for (unsigned i = 0; i < sd->nerrs; i++)
			if (handshake || ERR_GET_LIB(sd->errs[i]) != 0)
				return tls_failure_words(sd->errs, sd->nerrs, sd->ssl, peer, buf, len);
		if (handshake)
			return tls_failure_words(sd->errs, 0, sd->ssl, peer, buf, len);
	}
	if (sd->sys_errno != 0 && sd->sys_errno != EAGAIN)
		snprintf(buf, len, "%s connection: %s", peer, strerror(sd->sys_errno));
	else
		snprintf(buf, len, "%s connection failed", peer);
	return -1;
}
