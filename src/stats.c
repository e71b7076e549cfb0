/*
 * The Prometheus endpoint: GET /metrics on stats.listen, served on the
 * main thread's loop, in the text exposition format (version 0.0.4).
 * See stats.h for how the counters are kept, and below for the server.
 */
#include "autoconfig.h"

#include <sys/queue.h>
#include <sys/socket.h>

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "clienttab.h"
#include "http_parse.h"
#include "log.h"
#include "server.h"
#include "stats.h"
#include "util.h"

void
stats_tls(struct listener_counters *c, const char *version, const char *cipher)
{
	for (size_t i = 0; i < STAT_TLS_SLOTS; i++) {
		struct stat_tls	*t = &c->tls[i];
		const char	*v = atomic_load_explicit(&t->version, memory_order_acquire);

		if (v == NULL) {
			/* only this worker writes this block: no one races for the slot */
			atomic_store_explicit(&t->cipher, cipher, memory_order_relaxed);
			atomic_store_explicit(&t->version, version, memory_order_release);
			v = version;
		}
		if (v == version && atomic_load_explicit(&t->cipher, memory_order_relaxed) == cipher) {
			STAT_INC(t, count);
			return;
		}
	}
	/* more combinations than slots: they are not broken down */
}

static unsigned long long
sum(const atomic_ullong *first, size_t stride, unsigned n)
{
	unsigned long long	 total = 0;
	const char		*p = (const char *)first;

	for (unsigned i = 0; i < n; i++, p += stride)
		total += atomic_load_explicit((const atomic_ullong *)p, memory_order_relaxed);
	return total;
}

#define SUM(st, n, field) \
	sum(&(st)->workers[0].field, sizeof(struct listener_counters), (n))

unsigned long long
stats_active(const struct listener_counters *workers, unsigned n)
{
	unsigned long long	 accepted = 0, closed = 0;

	for (unsigned i = 0; i < n; i++) {
		/* closed first: a session counted closed was counted accepted before */
		closed += atomic_load_explicit(&workers[i].closed, memory_order_relaxed);
		accepted += atomic_load_explicit(&workers[i].accepted, memory_order_relaxed);
	}
	return accepted > closed ? accepted - closed : 0;
}

static const char *const refused_names[REFUSED_MAX] = {
	[REFUSED_MAX_CONNECTIONS] = "max_connections",
	[REFUSED_PROXY_HEADER] = "proxy_header",
	[REFUSED_DENIED] = "denied",
	[REFUSED_CLIENT_LIMIT] = "client_limit",
};

static const char *const hs_names[HS_FAIL_MAX] = {
	[HS_FAIL_NO_SHARED_CIPHER] = "no_shared_cipher",
	[HS_FAIL_PLAINTEXT] = "plaintext",
	[HS_FAIL_VERSION] = "version",
	[HS_FAIL_CERTIFICATE_REJECTED] = "certificate_rejected",
	[HS_FAIL_CLIENT_CERTIFICATE] = "client_certificate",
	[HS_FAIL_CLOSED] = "closed",
	[HS_FAIL_TIMEOUT] = "timeout",
	[HS_FAIL_OTHER] = "other",
};

static const char *const backend_names[BACKEND_FAIL_MAX] = {
	[BACKEND_FAIL_UNREACHABLE] = "unreachable",
	[BACKEND_FAIL_TIMEOUT] = "timeout",
	[BACKEND_FAIL_VERIFY] = "verify",
	[BACKEND_FAIL_TLS] = "tls",
	[BACKEND_FAIL_NO_ROUTE] = "no_route",
};

static void
metric_head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP starttls_proxy_%s %s\n# TYPE starttls_proxy_%s %s\n",
	    name, help, name, type);
}

/* One value of a counter per listener. */
static void
per_listener(struct daemon *d, struct evbuffer *out, const char *name, size_t offset)
{
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next)
		evbuffer_add_printf(out, "starttls_proxy_%s{listener=\"%s\"} %llu\n", name, st->name,
		    sum((const atomic_ullong *)((const char *)&st->workers[0] + offset),
		    sizeof(struct listener_counters), d->nworkers));
}

static unsigned
open_fds(void)
{
	DIR		*dir = opendir("/proc/self/fd");
	struct dirent	*e;
	unsigned	 n = 0;

	if (dir == NULL)
		return 0;
	while ((e = readdir(dir)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n > 0 ? n - 1 : 0;	/* not the directory's own descriptor */
}

static unsigned long long
resident_bytes(void)
{
	unsigned long long	 size = 0, resident = 0;
	FILE			*f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* The client tables of the listeners that have one (client_limits). */
static void
stats_render_clients(struct daemon *d, struct evbuffer *out)
{
	static const struct {
		const char	*name, *help;
	} m[] = {
		{ "client_table_size", "Entries in the listener's client table (client_limits)." },
		{ "client_table_entries", "Of them, in use (addresses and prefixes)." },
		{ "client_table_sessions", "Sessions counted in the client table now." },
		{ "client_table_evictions_total", "Idle entries reused for new keys." },
	};

	for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
		metric_head(out, m[k].name, k == 3 ? "counter" : "gauge", m[k].help);
		for (struct listener_stats *st = d->stats; st != NULL; st = st->next) {
			struct clienttab_counts c;
			unsigned long long	 v;

			if (st->clients == NULL)
				continue;
			clienttab_get_counts(st->clients, &c);
			v = k == 0 ? c.size : k == 1 ? c.used : k == 2 ? c.held : c.evicted;
			evbuffer_add_printf(out, "starttls_proxy_%s{listener=\"%s\"} %llu\n",
			    m[k].name, st->name, v);
		}
	}
}

void
stats_render(struct daemon *d, struct evbuffer *out)
{
	unsigned	 n = d->nworkers;

	metric_head(out, "sessions_accepted_total", "counter", "Sessions accepted.");
	per_listener(d, out, "sessions_accepted_total", offsetof(struct listener_counters, accepted));
	metric_head(out, "sessions_active", "gauge", "Sessions open now.");
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next)
		evbuffer_add_printf(out, "starttls_proxy_sessions_active{listener=\"%s\"} %llu\n",
		    st->name, stats_active(st->workers, n));
	metric_head(out, "sessions_refused_total", "counter", "Connections refused, by reason.");
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next)
		for (int r = 0; r < REFUSED_MAX; r++)
			evbuffer_add_printf(out,
			    "starttls_proxy_sessions_refused_total{listener=\"%s\",reason=\"%s\"} %llu\n",
			    st->name, refused_names[r], SUM(st, n, refused[r]));
	stats_render_clients(d, out);
	metric_head(out, "upgrades_total", "counter", "Client sides that completed TLS, by kind.");
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next) {
		evbuffer_add_printf(out, "starttls_proxy_upgrades_total{listener=\"%s\",kind=\"starttls\"} %llu\n",
		    st->name, SUM(st, n, upgrades_starttls));
		evbuffer_add_printf(out, "starttls_proxy_upgrades_total{listener=\"%s\",kind=\"implicit\"} %llu\n",
		    st->name, SUM(st, n, upgrades_implicit));
	}
	metric_head(out, "handshake_failures_total", "counter",
	    "Client TLS handshakes that failed, by reason.");
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next)
		for (int r = 0; r < HS_FAIL_MAX; r++)
			evbuffer_add_printf(out,
			    "starttls_proxy_handshake_failures_total{listener=\"%s\",reason=\"%s\"} %llu\n",
			    st->name, hs_names[r], SUM(st, n, handshake_failures[r]));
	metric_head(out, "injections_total", "counter",
	    "Sessions whose client sent bytes behind the upgrade verb (discarded).");
	per_listener(d, out, "injections_total", offsetof(struct listener_counters, injections));
	metric_head(out, "injected_bytes_total", "counter", "Bytes discarded behind upgrade verbs.");
	per_listener(d, out, "injected_bytes_total", offsetof(struct listener_counters, injected_bytes));
	metric_head(out, "backend_failures_total", "counter",
	    "Backend connections that failed, by reason.");
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next)
		for (int r = 0; r < BACKEND_FAIL_MAX; r++)
			evbuffer_add_printf(out,
			    "starttls_proxy_backend_failures_total{listener=\"%s\",reason=\"%s\"} %llu\n",
			    st->name, backend_names[r], SUM(st, n, backend_failures[r]));
	metric_head(out, "bytes_in_total", "counter", "Bytes from clients, of sessions that ended.");
	per_listener(d, out, "bytes_in_total", offsetof(struct listener_counters, bytes_in));
	metric_head(out, "bytes_out_total", "counter", "Bytes to clients, of sessions that ended.");
	per_listener(d, out, "bytes_out_total", offsetof(struct listener_counters, bytes_out));

	metric_head(out, "tls_sessions_total", "counter",
	    "Client TLS sessions, by negotiated version and cipher.");
	for (struct listener_stats *st = d->stats; st != NULL; st = st->next) {
		/* merge the workers' slots: the same constant strings in each */
		struct tls_seen { const char *v, *c; unsigned long long n; } seen[STAT_TLS_SLOTS * 4];
		size_t nseen = 0;

		for (unsigned w = 0; w < n; w++) {
			for (size_t i = 0; i < STAT_TLS_SLOTS; i++) {
				const struct stat_tls *t = &st->workers[w].tls[i];
				const char *v = atomic_load_explicit(&t->version, memory_order_acquire);
				const char *c = atomic_load_explicit(&t->cipher, memory_order_relaxed);
				unsigned long long cnt = atomic_load_explicit(&t->count, memory_order_relaxed);
				size_t k;

				if (v == NULL)
					break;
				for (k = 0; k < nseen; k++)
					if (seen[k].v == v && seen[k].c == c)
						break;
				if (k == nseen) {
					if (nseen == sizeof(seen) / sizeof(seen[0]))
						continue;
					seen[nseen++] = (struct tls_seen){ v, c, 0 };
				}
				seen[k].n += cnt;
			}
		}
		for (size_t k = 0; k < nseen; k++)
			evbuffer_add_printf(out, "starttls_proxy_tls_sessions_total{listener=\"%s\","
			    "version=\"%s\",cipher=\"%s\"} %llu\n", st->name, seen[k].v, seen[k].c,
			    seen[k].n);
	}

	metric_head(out, "workers", "gauge", "Event loops.");
	evbuffer_add_printf(out, "starttls_proxy_workers %u\n", n);
	metric_head(out, "process_open_fds", "gauge", "Open file descriptors.");
	evbuffer_add_printf(out, "starttls_proxy_process_open_fds %u\n", open_fds());
	metric_head(out, "process_resident_memory_bytes", "gauge", "Resident memory.");
	evbuffer_add_printf(out, "starttls_proxy_process_resident_memory_bytes %llu\n",
	    resident_bytes());
	metric_head(out, "process_start_time_seconds", "gauge", "Start time, seconds since the epoch.");
	evbuffer_add_printf(out, "starttls_proxy_process_start_time_seconds %lld\n",
	    (long long)d->started);
}

/*
 * The endpoint: a small, strict HTTP/1.x server of our own over
 * bufferevents on the main loop.  Not evhttp, which goes on reading
 * pipelined requests into its input buffer while an answer is unsent: a
 * client that sent requests and never read the answers made it buffer
 * without limit (256 MiB in two seconds).
 *
 * A connection gets one answer.  Read one request head, at most
 * STATS_HEAD_MAX bytes (the read watermark: no more is read ahead); stop
 * reading; answer with "Connection: close"; once the answer has left,
 * half-close and drop whatever the client still sends until it closes,
 * so that our close does not reset an answer it has not read yet.  What
 * a connection holds is STATS_HEAD_MAX in and one answer out; there are
 * at most STATS_CONNS_MAX of them, and each has a deadline.
 */
#define STATS_CONNS_MAX		16	/* past it, a new connection closes the oldest */
#define STATS_HEAD_MAX		8192	/* a request head, else 431 */
#define STATS_HEAD_TIMEOUT	5	/* seconds from the accept to a whole head */
#define STATS_ANSWER_TIMEOUT	10	/* seconds for the answer to be taken */
#define STATS_LINGER_MAX	65536	/* bytes dropped after the answer, then close */
#define STATS_BACKLOG		32
#define STATS_ACCEPT_PAUSE_MS	250	/* after EMFILE and the like */

enum stats_conn_state {
	STATS_CONN_HEAD,	/* reading the request head */
	STATS_CONN_ANSWER,	/* not reading: the answer is leaving */
	STATS_CONN_LINGER,	/* answered and half-closed: dropping input until EOF */
};

struct stats_conn {
	TAILQ_ENTRY(stats_conn)	 entry;
	struct bufferevent	*bev;
	struct event		*deadline;
	enum stats_conn_state	 state;
	size_t			 dropped;
	char			 peer[ADDR_TEXT_MAX];
};

/* One endpoint per process, on the main thread's loop: only that thread uses it. */
static struct {
	struct daemon		*d;		/* NULL when not listening */
	struct evconnlistener	*listener;
	struct event		*resume;
	TAILQ_HEAD(, stats_conn) conns;		/* oldest first */
	unsigned		 nconns;
	struct log_ratelimit	 rl_full;
	struct log_ratelimit	 rl_accept;
} ep;

static void
stats_conn_close(struct stats_conn *c, const char *why)
{
	log_debug("stats: %s: closed: %s", c->peer, why);
	TAILQ_REMOVE(&ep.conns, c, entry);
	ep.nconns--;
	event_free(c->deadline);
	bufferevent_free(c->bev);
	free(c);
}

static const char *
stats_reason(int status)
{
	switch (status) {
	case 200:	return "OK";
	case 400:	return "Bad Request";
	case 404:	return "Not Found";
	case 405:	return "Method Not Allowed";
	case 413:	return "Content Too Large";
	case 414:	return "URI Too Long";
	case 431:	return "Request Header Fields Too Large";
	case 505:	return "HTTP Version Not Supported";
	}
	return "Error";
}

static bool
stats_method_is(const struct http_request *r, const char *m)
{
	return r->method_len == strlen(m) && memcmp(r->method, m, r->method_len) == 0;
}

/* The status for a request that parsed; only GET or HEAD /metrics is 200. */
static int
stats_route(const struct http_request *r)
{
	const char	*q;
	size_t		 plen = r->target_len;

	if (!stats_method_is(r, "GET") && !stats_method_is(r, "HEAD"))
		return 405;
	if (r->has_body)
		return 413;
	/* the path, without a query string */
	if ((q = memchr(r->target, '?', r->target_len)) != NULL)
		plen = (size_t)(q - r->target);
	if (plen != strlen("/metrics") || memcmp(r->target, "/metrics", plen) != 0)
		return 404;
	return 200;
}

/* The whole answer into the output buffer; -1 if memory ran out. */
static int
stats_answer(struct stats_conn *c, int status, bool with_body)
{
	struct evbuffer	*out = bufferevent_get_output(c->bev), *body;
	char		 date[64];
	time_t		 now = time(NULL);
	struct tm	 tm;
	int		 rc;

	if ((body = evbuffer_new()) == NULL)
		return -1;
	if (status == 200)
		stats_render(ep.d, body);
	else if (status == 404)
		evbuffer_add_printf(body, "Not Found: the figures are at /metrics\n");
	else
		evbuffer_add_printf(body, "%s\n", stats_reason(status));
	if (gmtime_r(&now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
		date[0] = '\0';
	rc = evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n%s%s%s"
	    "Content-Type: text/plain; %scharset=utf-8\r\nContent-Length: %zu\r\n%s"
	    "Connection: close\r\n\r\n", status, stats_reason(status),
	    date[0] ? "Date: " : "", date, date[0] ? "\r\n" : "",
	    status == 200 ? "version=0.0.4; " : "", evbuffer_get_length(body),
	    status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (rc != -1 && with_body)
		rc = evbuffer_add_buffer(out, body);
	evbuffer_free(body);
	return rc == -1 ? -1 : 0;
}

/* Input while reading the head: a whole head gets its answer, and nothing more is read. */
static void
stats_head(struct stats_conn *c, struct evbuffer *in)
{
	struct http_request	 r;
	struct timeval		 tv = { STATS_ANSWER_TIMEOUT, 0 };
	size_t			 len = evbuffer_get_length(in);
	size_t			 n = len < STATS_HEAD_MAX ? len : STATS_HEAD_MAX;
	const char		*p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
	enum parse_result	 res;
	int			 status = 400;
	bool			 with_body = true;

	if (p == NULL) {
		stats_conn_close(c, "out of memory");
		return;
	}
	res = http_parse_request(p, n, &r, &status);
	if (res == PARSE_NEED_MORE) {
		if (n < STATS_HEAD_MAX)
			return;
		status = 431;
	} else if (res == PARSE_OK) {
		status = stats_route(&r);
		with_body = !stats_method_is(&r, "HEAD");
	}
	/* one request per connection: whatever came behind this one is dropped */
	bufferevent_disable(c->bev, EV_READ);
	evbuffer_drain(in, len);
	c->state = STATS_CONN_ANSWER;
	log_debug("stats: %s: %d", c->peer, status);
	if (stats_answer(c, status, with_body) == -1) {
		stats_conn_close(c, "out of memory");
		return;
	}
	evtimer_add(c->deadline, &tv);
}

static void
stats_readcb(struct bufferevent *bev, void *arg)
{
	struct stats_conn	*c = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	size_t			 len = evbuffer_get_length(in);

	switch (c->state) {
	case STATS_CONN_HEAD:
		stats_head(c, in);
		break;
	case STATS_CONN_ANSWER:
		/* reading is off; a callback already on its way may still come */
		break;
	case STATS_CONN_LINGER:
		evbuffer_drain(in, len);
		c->dropped += len;
		if (c->dropped > STATS_LINGER_MAX)
			stats_conn_close(c, "answered; more input than expected after it");
		break;
	}
}

static void
stats_writecb(struct bufferevent *bev, void *arg)
{
	struct stats_conn	*c = arg;

	if (c->state != STATS_CONN_ANSWER)
		return;
	/* the answer has left: say we are done, and wait for the client's close */
	c->state = STATS_CONN_LINGER;
	if (shutdown(bufferevent_getfd(bev), SHUT_WR) == -1) {
		stats_conn_close(c, "answered");
		return;
	}
	bufferevent_enable(bev, EV_READ);
}

static void
stats_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct stats_conn	*c = arg;

	if (c->state == STATS_CONN_LINGER && (what & BEV_EVENT_EOF))
		stats_conn_close(c, "answered");
	else if (what & BEV_EVENT_EOF)
		stats_conn_close(c, c->state == STATS_CONN_HEAD ?
		    "closed by the client before a whole request" :
		    "closed by the client before the answer was sent");
	else if (what & BEV_EVENT_ERROR)
		stats_conn_close(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void
stats_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stats_conn	*c = arg;

	static const char *const why[] = {
		[STATS_CONN_HEAD] = "no whole request in time",
		[STATS_CONN_ANSWER] = "the answer was not taken in time",
		[STATS_CONN_LINGER] = "answered; the client did not close in time",
	};

	stats_conn_close(c, why[c->state]);
}

static void
stats_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct stats_conn	*c;
	struct timeval		 tv = { STATS_HEAD_TIMEOUT, 0 };
	unsigned long		 suppressed;

	/*
	 * Full: the oldest connection goes, rather than the new one.  The
	 * oldest is the likeliest to be idle or stuck, and a scraper that
	 * sends its request at once is answered within a loop or two, so a
	 * pile of idle connections cannot lock it out.
	 */
	if (ep.nconns >= STATS_CONNS_MAX) {
		struct stats_conn *old = TAILQ_FIRST(&ep.conns);

		if (log_ratelimit_pass(&ep.rl_full, time(NULL), &suppressed))
			log_warnx("stats: %u connections open: closing the oldest, from %s%s",
			    STATS_CONNS_MAX, old->peer,
			    suppressed ? " (more not logged)" : "");
		stats_conn_close(old, "the endpoint's connection limit");
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		evutil_closesocket(fd);
		return;
	}
	addr_format(sa, (socklen_t)salen, c->peer, sizeof(c->peer));
	c->state = STATS_CONN_HEAD;
	c->bev = bufferevent_socket_new(ep.d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->deadline = evtimer_new(ep.d->base, stats_deadline_cb, c);
	if (c->bev == NULL || c->deadline == NULL) {
		log_warnx("stats: %s: out of memory: closed", c->peer);
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			evutil_closesocket(fd);
		if (c->deadline != NULL)
			event_free(c->deadline);
		free(c);
		return;
	}
	/* never more than a head ahead: reading stops there */
	bufferevent_setwatermark(c->bev, EV_READ, 0, STATS_HEAD_MAX);
	bufferevent_setcb(c->bev, stats_readcb, stats_writecb, stats_eventcb, c);
	bufferevent_enable(c->bev, EV_READ);
	evtimer_add(c->deadline, &tv);
	TAILQ_INSERT_TAIL(&ep.conns, c, entry);
	ep.nconns++;
}

static void
stats_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	if (ep.listener != NULL)
		evconnlistener_enable(ep.listener);
}

/*
 * accept() failed for want of a resource (EMFILE above all).  The
 * pending connection keeps the socket readable, so accepting again at
 * once would spin: pause for a moment.
 */
static void
stats_accept_error_cb(struct evconnlistener *l, void *arg)
{
	int		 err = EVUTIL_SOCKET_ERROR();
	struct timeval	 tv = { 0, STATS_ACCEPT_PAUSE_MS * 1000 };
	unsigned long	 suppressed;

	if (log_ratelimit_pass(&ep.rl_accept, time(NULL), &suppressed))
		log_warnx("stats: cannot accept: %s; accepting paused%s", strerror(err),
		    suppressed ? " (repeated)" : "");
	evconnlistener_disable(l);
	event_add(ep.resume, &tv);
}

int
stats_listen(struct daemon *d, char *why, size_t len)
{
	const struct addr	*a = &d->rt->cfg->stats_listen;
	unsigned		 flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
				    LEV_OPT_REUSEABLE;
	bool			 v6 = a->ss.ss_family == AF_INET6;

	if (!d->rt->cfg->has_stats)
		return 0;
	if (v6)
		flags |= LEV_OPT_BIND_IPV6ONLY;
	TAILQ_INIT(&ep.conns);
	ep.nconns = 0;
	if ((ep.resume = evtimer_new(d->base, stats_resume_cb, NULL)) == NULL) {
		snprintf(why, len, "stats: out of memory");
		return -1;
	}
	ep.listener = evconnlistener_new_bind(d->base, stats_accept_cb, NULL, flags,
	    STATS_BACKLOG, (const struct sockaddr *)&a->ss, (int)a->sslen);
	if (ep.listener == NULL) {
		snprintf(why, len, "stats.listen: cannot listen on %s%s%s:%u: %s",
		    v6 ? "[" : "", a->host, v6 ? "]" : "", a->port, strerror(errno));
		event_free(ep.resume);
		ep.resume = NULL;
		return -1;
	}
	evconnlistener_set_error_cb(ep.listener, stats_accept_error_cb);
	ep.d = d;
	log_info("stats: Prometheus figures at http://%s%s%s:%u/metrics",
	    v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
	return 0;
}

/* Before the loop is freed: the connections and the listener are events in it. */
void
stats_close(struct daemon *d)
{
	if (ep.d == NULL || ep.d != d)
		return;
	while (!TAILQ_EMPTY(&ep.conns))
		stats_conn_close(TAILQ_FIRST(&ep.conns), "the daemon is stopping");
	evconnlistener_free(ep.listener);
	event_free(ep.resume);
	ep.listener = NULL;
	ep.resume = NULL;
	ep.d = NULL;
}
