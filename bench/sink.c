/*
 * sink: the plaintext backend of the benchmark.
 *
 *   sink raw  PORT    reads and discards everything; after the first newline
 *                     of a connection answers "ok\n"; closes when the peer does
 *   sink smtp PORT    just enough SMTP: 220 greeting; EHLO/HELO -> 250-sink,
 *                     250 PIPELINING; MAIL, RCPT, NOOP, RSET -> 250; DATA ->
 *                     354, then counts the content up to CRLF.CRLF -> 250;
 *                     QUIT -> 221 and close; anything else -> 500
 *   sink auth PORT SMTP_PORT
 *                     nginx's auth_http: reads one HTTP request up to its
 *                     empty line, answers 200 with Auth-Status: OK,
 *                     Auth-Server: 127.0.0.1, Auth-Port: SMTP_PORT, closes
 *
 * One thread, epoll, non-blocking sockets, any number of connections.  It
 * prints "LISTENING port=N" once it listens, and on SIGUSR1 (and at exit on
 * SIGTERM/SIGINT) one line:
 *   SINK bytes=N conns=N open=N messages=N errors=N
 * where bytes counts every byte received (raw) or the DATA content (smtp),
 * and messages the messages (smtp) or the requests answered (auth).
 *
 * Build: cc -O2 -o sink sink.c
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/signalfd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RBUF	(256 * 1024)
#define LINEMAX	1024

enum { M_RAW, M_SMTP, M_AUTH };

struct conn {
	int		 fd;
	int		 answered;	/* raw: "ok\n" sent */
	int		 in_data;	/* smtp: inside DATA */
	int		 dstate;	/* smtp: matched prefix of "\r\n.\r\n" */
	int		 closing;	/* smtp, auth: close once output is flushed */
	int		 hstate;	/* auth: matched prefix of "\r\n\r\n" */
	size_t		 llen;		/* smtp: command line being assembled */
	char		 line[LINEMAX];
	size_t		 olen, ooff;	/* pending output */
	char		 out[256];
};

static int		 mode;
static uint64_t		 total_bytes, total_conns, open_conns, messages, errors;
static char		 rbuf[RBUF];
static char		 auth_reply[160];

static void
report(void)
{
	printf("SINK bytes=%llu conns=%llu open=%llu messages=%llu errors=%llu\n",
	    (unsigned long long)total_bytes, (unsigned long long)total_conns,
	    (unsigned long long)open_conns, (unsigned long long)messages,
	    (unsigned long long)errors);
	fflush(stdout);
}

static void
conn_close(int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
	open_conns--;
}

/* Queue a reply; returns -1 if it does not fit (never with our replies). */
static int
queue(struct conn *c, const char *s)
{
	size_t	 n = strlen(s);

	if (c->ooff > 0 && c->ooff == c->olen)
		c->ooff = c->olen = 0;
	if (c->olen + n > sizeof(c->out)) {
		if (c->ooff > 0) {
			memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
			c->olen -= c->ooff;
			c->ooff = 0;
		}
		if (c->olen + n > sizeof(c->out))
			return -1;
	}
	memcpy(c->out + c->olen, s, n);
	c->olen += n;
	return 0;
}

/* Write what is pending; -1 on a fatal error. */
static int
flush_out(int ep, struct conn *c)
{
	struct epoll_event	 ev;

	while (c->ooff < c->olen) {
		ssize_t	 w = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
				ev.data.ptr = c;
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				return 0;
			}
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->ooff += (size_t)w;
	}
	c->ooff = c->olen = 0;
	return 0;
}

static void
smtp_command(struct conn *c)
{
	char	*l = c->line;

	/* c->line is NUL-terminated without its line ending */
	if (!strncasecmp(l, "EHLO", 4) || !strncasecmp(l, "HELO", 4))
		queue(c, "250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
	else if (!strncasecmp(l, "MAIL", 4) || !strncasecmp(l, "RCPT", 4) ||
	    !strncasecmp(l, "NOOP", 4) || !strncasecmp(l, "RSET", 4))
		queue(c, "250 ok\r\n");
	else if (!strncasecmp(l, "DATA", 4)) {
		queue(c, "354 go ahead\r\n");
		c->in_data = 1;
		c->dstate = 2;	/* the CRLF before DATA's content counts */
	} else if (!strncasecmp(l, "QUIT", 4)) {
		queue(c, "221 bye\r\n");
		c->closing = 1;
	} else
		queue(c, "500 unknown command\r\n");
}

/*
 * Count DATA content up to CRLF.CRLF; returns how many bytes of p it used
 * (the rest are commands).  dstate is how much of "\r\n.\r\n" has been
 * matched so far; payloads have a CR every line, so memchr does the scan.
 */
static size_t
smtp_data(struct conn *c, const char *p, size_t n)
{
	static const char	 end[] = "\r\n.\r\n";
	size_t			 i = 0;

	while (i < n) {
		if (c->dstate == 0) {
			const char *cr = memchr(p + i, '\r', n - i);
			if (cr == NULL) {
				i = n;
				break;
			}
			i = (size_t)(cr - p) + 1;
			c->dstate = 1;
			continue;
		}
		if (p[i] == end[c->dstate]) {
			c->dstate++;
			i++;
			if (c->dstate == 5) {
				c->in_data = 0;
				c->dstate = 0;
				messages++;
				queue(c, "250 queued\r\n");
				break;
			}
		} else if (p[i] == '\r') {
			c->dstate = 1;
			i++;
		} else {
			c->dstate = 0;
			i++;
		}
	}
	total_bytes += i;
	return i;
}

static int
smtp_input(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		if (c->in_data) {
			size_t used = smtp_data(c, p, n);
			p += used;
			n -= used;
			continue;
		}
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) + 1 : n;
		if (c->llen + take >= LINEMAX) {
			queue(c, "500 line too long\r\n");
			c->closing = 1;
			errors++;
			return 0;
		}
		memcpy(c->line + c->llen, p, take);
		c->llen += take;
		p += take;
		n -= take;
		if (nl) {
			size_t l = c->llen;
			while (l > 0 && (c->line[l - 1] == '\n' || c->line[l - 1] == '\r'))
				l--;
			c->line[l] = '\0';
			c->llen = 0;
			smtp_command(c);
			if (c->closing)
				return 0;
		}
	}
	return 0;
}

/* nginx's auth_http request: the reply once the header block has ended. */
static void
auth_input(struct conn *c, const char *p, size_t n)
{
	static const char	 end[] = "\r\n\r\n";

	for (size_t i = 0; i < n && !c->closing; i++) {
		if (p[i] == end[c->hstate])
			c->hstate++;
		else
			c->hstate = p[i] == '\r' ? 1 : 0;
		if (c->hstate == 4) {
			messages++;
			queue(c, auth_reply);
			c->closing = 1;
		}
	}
}

static void
on_readable(int ep, struct conn *c)
{
	for (;;) {
		ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
		if (r == 0)
			goto gone;
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			goto gone;
		}
		if (mode == M_RAW) {
			total_bytes += (uint64_t)r;
			if (!c->answered && memchr(rbuf, '\n', (size_t)r)) {
				c->answered = 1;
				queue(c, "ok\n");
			}
		} else if (mode == M_SMTP) {
			smtp_input(c, rbuf, (size_t)r);
		} else {
			auth_input(c, rbuf, (size_t)r);
		}
		if (c->olen > c->ooff && flush_out(ep, c) < 0)
			goto gone;
		if (c->closing && c->ooff == c->olen)
			goto gone;
		if ((size_t)r < sizeof(rbuf))
			break;	/* level-triggered: come back if more arrives */
	}
	return;
gone:
	conn_close(ep, c);
}

static int
listen_on(int port)
{
	struct sockaddr_in	 sin;
	int			 fd, one = 1;
	socklen_t		 sl = sizeof(sin);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 4096) < 0) {
		perror("sink: bind/listen");
		return -1;
	}
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	printf("LISTENING port=%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	return fd;
}

int
main(int argc, char **argv)
{
	struct epoll_event	 ev, evs[256];
	struct rlimit		 rl;
	sigset_t		 ss;
	int			 ep, lfd, sfd, one = 1;
	static char		 lmark;	/* tags the listener in epoll */
	static char		 smark;	/* tags the signalfd */

	if (argc == 3 && !strcmp(argv[1], "raw"))
		mode = M_RAW;
	else if (argc == 3 && !strcmp(argv[1], "smtp"))
		mode = M_SMTP;
	else if (argc == 4 && !strcmp(argv[1], "auth")) {
		mode = M_AUTH;
		snprintf(auth_reply, sizeof(auth_reply), "HTTP/1.0 200 OK\r\n"
		    "Auth-Status: OK\r\nAuth-Server: 127.0.0.1\r\n"
		    "Auth-Port: %d\r\n\r\n", atoi(argv[3]));
	} else {
		fprintf(stderr, "usage: sink raw|smtp PORT | sink auth PORT SMTP_PORT\n");
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		perror("sink: signalfd");
		return 1;
	}
	if ((lfd = listen_on(atoi(argv[2]))) < 0)
		return 1;
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.ptr = &lmark;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.ptr = &smark;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);

	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("sink: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == &smark) {
				struct signalfd_siginfo si;
				while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
					report();
					if (si.ssi_signo != SIGUSR1)
						return 0;
				}
				continue;
			}
			if (evs[i].data.ptr == &lmark) {
				for (;;) {
					int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (fd < 0) {
						if (errno == EMFILE || errno == ENFILE)
							errors++;
						break;
					}
					struct conn *c = calloc(1, sizeof(*c));
					if (c == NULL) {
						close(fd);
						errors++;
						continue;
					}
					c->fd = fd;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					total_conns++;
					open_conns++;
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.ptr = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
					if (mode == M_SMTP) {
						queue(c, "220 sink ESMTP ready\r\n");
						if (flush_out(ep, c) < 0)
							conn_close(ep, c);
					}
				}
				continue;
			}
			struct conn *c = evs[i].data.ptr;
			if (evs[i].events & EPOLLOUT) {
				if (flush_out(ep, c) < 0) {
					conn_close(ep, c);
					continue;
				}
				if (c->ooff == c->olen) {
					if (c->closing) {
						conn_close(ep, c);
						continue;
					}
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.ptr = c;
					epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				}
			}
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				on_readable(ep, c);
		}
	}
}
