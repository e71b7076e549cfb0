/*
 * Unit tests for src/side.c: two sides over socketpair(2) on a real event
 * base, with no session above them.  Backpressure in both directions,
 * the order of a half-close, the final flush, bytes that come with an
 * EOF, and a TLS wrap in the middle of a stream.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "side.h"

/* What one side reported. */
struct seen {
	unsigned	 events[SIDE_ERROR + 1];
	struct evbuffer	*got;		/* what SIDE_READ brought */
	bool		 read_after_eof;
	bool		 eof;
	bool		 drain_input;	/* move input to got on SIDE_READ */
};

static void
record_cb(struct side *sd, enum side_event ev, void *arg)
{
	struct seen	*s = arg;

	s->events[ev]++;
	if (ev == SIDE_READ) {
		if (s->eof)
			s->read_after_eof = true;
		if (s->drain_input)
			evbuffer_add_buffer(s->got, side_input(sd));
	}
	if (ev == SIDE_EOF)
		s->eof = true;
}

static void
seen_init(struct seen *s)
{
	memset(s, 0, sizeof(*s));
	s->got = evbuffer_new();
	s->drain_input = true;
	assert_non_null(s->got);
}

static void
seen_free(struct seen *s)
{
	evbuffer_free(s->got);
}

/* Run the loop until cond holds or about two seconds have passed. */
static bool
run_until(struct event_base *base, bool (*cond)(void *), void *arg)
{
	for (int i = 0; i < 2000 && !cond(arg); i++) {
		struct timeval tv = { 0, 1000 };

		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return cond(arg);
}

static void
pair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(fcntl(fds[i], F_SETFL, O_NONBLOCK), 0);
}

/* A peer that never reads: a side's pending bytes stay, and drain once it does. */
struct drain_check {
	struct side	*sd;
	int		 peer;
	size_t		 read;
	size_t		 want;
};

static bool
drained(void *arg)
{
	struct drain_check	*d = arg;
	char			 buf[65536];
	ssize_t			 n;

	while ((n = read(d->peer, buf, sizeof(buf))) > 0)
		d->read += (size_t)n;
	return d->read == d->want && side_pending(d->sd) == 0;
}

static void
test_backpressure_and_drain(void **state)
{
	struct event_base	*base = event_base_new();
	struct side		 sd;
	struct seen		 s;
	int			 fds[2];
	char			*block = calloc(1, 1 << 20);
	struct drain_check	 d;

	(void)state;
	pair(fds);
	seen_init(&s);
	side_init(&sd, record_cb, &s);
	assert_int_equal(side_accept(&sd, base, fds[0], AF_UNIX), 0);
	/* 8 MiB towards a peer that does not read: most of it stays queued */
	for (int i = 0; i < 8; i++)
		evbuffer_add(side_output(&sd), block, 1 << 20);
	side_flush(&sd);
	for (int i = 0; i < 20; i++) {
		struct timeval tv = { 0, 1000 };

		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	assert_true(side_pending(&sd) > 4 << 20);	/* the kernel took a little */
	/* the peer reads: everything drains, reported as it goes */
	d = (struct drain_check){ .sd = &sd, .peer = fds[1], .want = 8 << 20 };
	assert_true(run_until(base, drained, &d));
	assert_true(s.events[SIDE_DRAINED] > 0);
	assert_int_equal(s.events[SIDE_ERROR], 0);
	side_free(&sd);
	close(fds[1]);
	seen_free(&s);
	free(block);
	event_base_free(base);
}

/* Reading off: the peer's bytes wait in the kernel, not in the side. */
struct input_check {
	struct side	*sd;
	struct seen	*s;
	size_t		 want;
};

static bool
got_all(void *arg)
{
	struct input_check *c = arg;

	return evbuffer_get_length(c->s->got) == c->want;
}

static void
test_reading_off_holds_nothing(void **state)
{
	struct event_base	*base = event_base_new();
	struct side		 sd;
	struct seen		 s;
	int			 fds[2];
	char			 buf[65536];
	size_t			 sent = 0;
	ssize_t			 n;
	struct input_check	 c;

	(void)state;
	memset(buf, 'x', sizeof(buf));
	pair(fds);
	seen_init(&s);
	side_init(&sd, record_cb, &s);
	assert_int_equal(side_accept(&sd, base, fds[0], AF_UNIX), 0);
	side_set_reading(&sd, false);
	while ((n = write(fds[1], buf, sizeof(buf))) > 0)
		sent += (size_t)n;
	for (int i = 0; i < 20; i++) {
		struct timeval tv = { 0, 1000 };

		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	assert_int_equal(evbuffer_get_length(side_input(&sd)), 0);
	assert_int_equal(s.events[SIDE_READ], 0);
	/* reading on: it all arrives */
	side_set_reading(&sd, true);
	c = (struct input_check){ .sd = &sd, .s = &s, .want = sent };
	assert_true(run_until(base, got_all, &c));
	side_free(&sd);
	close(fds[1]);
	seen_free(&s);
	event_base_free(base);
}

/* Half-close: the FIN follows every queued byte, never before. */
struct shut_check {
	struct side	*sd;
	int		 peer;
	size_t		 read;
	bool		 eof;
};

static bool
peer_eof(void *arg)
{
	struct shut_check	*c = arg;
	char			 buf[65536];
	ssize_t			 n;

	side_shut_progress(c->sd);	/* as the owner does on SIDE_DRAINED */
	while ((n = read(c->peer, buf, sizeof(buf))) > 0)
		c->read += (size_t)n;
	if (n == 0)
		c->eof = true;
	return c->eof;
}

static void
test_half_close_after_the_data(void **state)
{
	struct event_base	*base = event_base_new();
	struct side		 sd;
	struct seen		 s;
	int			 fds[2];
	char			*block = calloc(1, 1 << 20);
	struct shut_check	 c;

	(void)state;
	pair(fds);
	seen_init(&s);
	side_init(&sd, record_cb, &s);
	assert_int_equal(side_accept(&sd, base, fds[0], AF_UNIX), 0);
	for (int i = 0; i < 4; i++)
		evbuffer_add(side_output(&sd), block, 1 << 20);
	side_flush(&sd);
	side_want_shut(&sd);
	side_shut_progress(&sd);
	assert_false(side_done_writing(&sd));	/* bytes still queued: no FIN yet */
	c = (struct shut_check){ .sd = &sd, .peer = fds[1] };
	assert_true(run_until(base, peer_eof, &c));
	assert_int_equal(c.read, 4 << 20);
	assert_true(side_done_writing(&sd));
	/* our direction ended; the peer's is still open */
	assert_int_equal(write(fds[1], "late", 4), 4);
	{
		struct input_check ic = { .sd = &sd, .s = &s, .want = 4 };

		side_set_reading(&sd, true);
		assert_true(run_until(base, got_all, &ic));
	}
	side_free(&sd);
	close(fds[1]);
	seen_free(&s);
	free(block);
	event_base_free(base);
}

/* The bytes that come with the peer's close are reported before the EOF. */
static bool
saw_eof(void *arg)
{
	return ((struct seen *)arg)->eof;
}

static void
test_bytes_with_the_eof_come_first(void **state)
{
	struct event_base	*base = event_base_new();
	struct side		 sd;
	struct seen		 s;
	int			 fds[2];

	(void)state;
	pair(fds);
	seen_init(&s);
	side_init(&sd, record_cb, &s);
	assert_int_equal(side_accept(&sd, base, fds[0], AF_UNIX), 0);
	side_set_reading(&sd, true);
	assert_int_equal(write(fds[1], "221 Bye\r\n", 9), 9);
	close(fds[1]);
	assert_true(run_until(base, saw_eof, &s));
	assert_int_equal(evbuffer_get_length(s.got), 9);
	assert_false(s.read_after_eof);
	assert_true(sd.eof);
	side_free(&sd);
	seen_free(&s);
	event_base_free(base);
}

/* The final flush writes what is queued before the side is freed. */
static void
test_final_flush(void **state)
{
	struct event_base	*base = event_base_new();
	struct side		 sd;
	struct seen		 s;
	int			 fds[2];
	char			 buf[64];
	ssize_t			 n;

	(void)state;
	pair(fds);
	seen_init(&s);
	side_init(&sd, record_cb, &s);
	assert_int_equal(side_accept(&sd, base, fds[0], AF_UNIX), 0);
	/* queued and never flushed: only the final flush writes it */
	evbuffer_add(side_output(&sd), "421 bye\r\n", 9);
	side_quiesce(&sd);
	side_flush_final(&sd);
	side_free(&sd);
	event_base_loop(base, EVLOOP_NONBLOCK);	/* libevent closes the socket from its loop */
	n = read(fds[1], buf, sizeof(buf));
	assert_int_equal(n, 9);
	assert_memory_equal(buf, "421 bye\r\n", 9);
	assert_int_equal(read(fds[1], buf, sizeof(buf)), 0);	/* closed */
	close(fds[1]);
	seen_free(&s);
	event_base_free(base);
}

/* TLS in the middle of a stream: a server side and a client side, one socketpair. */
static SSL_CTX *
server_ctx(void)
{
	SSL_CTX		*ctx = SSL_CTX_new(TLS_server_method());
	EVP_PKEY	*key = EVP_EC_gen("P-256");
	X509		*x = X509_new();

	assert_non_null(ctx);
	assert_non_null(key);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)"side.test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	return ctx;
}

struct tls_pair {
	struct seen	*a;
	struct seen	*b;
	size_t		 want;
};

static bool
both_ready(void *arg)
{
	struct tls_pair *p = arg;

	return p->a->events[SIDE_TLS_READY] == 1 && p->b->events[SIDE_TLS_READY] == 1;
}

static bool
both_got(void *arg)
{
	struct tls_pair *p = arg;

	return evbuffer_get_length(p->a->got) == p->want &&
	    evbuffer_get_length(p->b->got) == p->want;
}

static void
test_tls_wrap_mid_stream(void **state)
{
	struct event_base	*base = event_base_new();
	SSL_CTX			*sctx = server_ctx(), *cctx = SSL_CTX_new(TLS_client_method());
	struct side		 a, b;
	struct seen		 sa, sb;
	struct tls_pair		 p = { &sa, &sb, 0 };
	int			 fds[2];
	char			*block = malloc(1 << 20);

	(void)state;
	pair(fds);
	seen_init(&sa);
	seen_init(&sb);
	side_init(&a, record_cb, &sa);
	side_init(&b, record_cb, &sb);
	assert_int_equal(side_accept(&a, base, fds[0], AF_UNIX), 0);
	assert_int_equal(side_accept(&b, base, fds[1], AF_UNIX), 0);
	side_set_reading(&a, true);
	side_set_reading(&b, true);
	/* cleartext first, like a STARTTLS and its answer */
	evbuffer_add(side_output(&b), "STARTTLS\r\n", 10);
	side_flush(&b);
	p.want = 10;
	{
		struct input_check c = { .sd = &a, .s = &sa, .want = 10 };

		assert_true(run_until(base, got_all, &c));
	}
	evbuffer_drain(sa.got, 10);
	/* both sides upgrade; reading stays on for the handshake to be reported */
	assert_int_equal(side_start_tls(&a, SSL_new(sctx), true), 0);
	assert_int_equal(side_start_tls(&b, SSL_new(cctx), false), 0);
	side_set_reading(&a, true);
	side_set_reading(&b, true);
	assert_true(run_until(base, both_ready, &p));
	assert_true(a.tls_up && b.tls_up);
	/* a megabyte each way, inside TLS */
	for (size_t i = 0; i < 1 << 20; i++)
		block[i] = (char)(i * 7);
	evbuffer_add(side_output(&a), block, 1 << 20);
	evbuffer_add(side_output(&b), block, 1 << 20);
	side_flush(&a);
	side_flush(&b);
	p.want = 1 << 20;
	assert_true(run_until(base, both_got, &p));
	assert_memory_equal(evbuffer_pullup(sa.got, -1), block, 1 << 20);
	assert_memory_equal(evbuffer_pullup(sb.got, -1), block, 1 << 20);
	/* a TLS half-close: close_notify, then the FIN; the peer sees an EOF */
	side_want_shut(&b);
	side_shut_progress(&b);
	assert_true(run_until(base, saw_eof, &sa));
	assert_int_equal(sa.events[SIDE_ERROR], 0);
	side_free(&a);
	side_free(&b);
	seen_free(&sa);
	seen_free(&sb);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	free(block);
	event_base_free(base);
}

/* Read away what reaches the peer's end of the socket: the side's answer goes out. */
struct answer_check {
	struct side	*sd;
	int		 peer;
};

static bool
answer_out(void *arg)
{
	struct answer_check	*c = arg;
	char			 buf[65536];

	while (read(c->peer, buf, sizeof(buf)) > 0)
		;
	return side_pending(c->sd) == 0;
}

static bool
got_one(void *arg)
{
	return evbuffer_get_length(((struct seen *)arg)->got) >= 1;
}

/*
 * What OpenSSL writes while it reads (the answer to a KeyUpdate) meets a
 * full socket: the side must wait for the socket to be writable, and
 * write it then, not leave it queued until something else is written.
 */
static void
test_tls_answer_to_a_full_socket_goes_out(void **state)
{
	struct event_base	*base = event_base_new();
	SSL_CTX			*sctx = server_ctx(), *cctx = SSL_CTX_new(TLS_client_method());
	struct side		 a, b;
	struct seen		 sa, sb;
	struct tls_pair		 p = { &sa, &sb, 0 };
	struct answer_check	 c;
	char			 junk[4096];
	int			 fds[2];

	(void)state;
	memset(junk, 'j', sizeof(junk));
	pair(fds);
	seen_init(&sa);
	seen_init(&sb);
	side_init(&a, record_cb, &sa);
	side_init(&b, record_cb, &sb);
	assert_int_equal(side_accept(&a, base, fds[0], AF_UNIX), 0);
	assert_int_equal(side_accept(&b, base, fds[1], AF_UNIX), 0);
	assert_int_equal(side_start_tls(&a, SSL_new(sctx), true), 0);
	assert_int_equal(side_start_tls(&b, SSL_new(cctx), false), 0);
	side_set_reading(&a, true);
	side_set_reading(&b, true);
	assert_true(run_until(base, both_ready, &p));
	assert_string_equal(SSL_get_version(a.ssl), "TLSv1.3");
	/* b's end stops reading; a's direction fills up behind the side's back */
	side_quiesce(&b);
	while (write(fds[0], junk, sizeof(junk)) > 0)
		;
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(side_pending(&a), 0);
	/* b asks for a KeyUpdate, with a byte of data behind it */
	assert_int_equal(SSL_key_update(b.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
	evbuffer_add(side_output(&b), "x", 1);
	side_flush(&b);
	assert_true(run_until(base, got_one, &sa));
	assert_true(side_pending(&a) > 0);	/* the answer, which the socket refused */
	/* the peer reads again: the answer leaves without anything else to write */
	c.sd = &a;
	c.peer = fds[1];
	assert_true(run_until(base, answer_out, &c));
	assert_int_equal(sa.events[SIDE_ERROR], 0);
	side_free(&a);
	side_free(&b);
	seen_free(&sa);
	seen_free(&sb);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backpressure_and_drain),
		cmocka_unit_test(test_reading_off_holds_nothing),
		cmocka_unit_test(test_half_close_after_the_data),
		cmocka_unit_test(test_bytes_with_the_eof_come_first),
		cmocka_unit_test(test_final_flush),
		cmocka_unit_test(test_tls_wrap_mid_stream),
		cmocka_unit_test(test_tls_answer_to_a_full_socket_goes_out),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
