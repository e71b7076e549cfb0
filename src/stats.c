/*
 * The Prometheus endpoint: GET /metrics on stats.listen, served by
 * libevent's evhttp on the main thread, in the text exposition format
 * (version 0.0.4).  See stats.h for how the counters are kept.
 */
#include "autoconfig.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "server.h"
#include "stats.h"

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

static void
stats_request(struct evhttp_request *req, void *arg)
{
	struct daemon	*d = arg;
	struct evbuffer	*out;
	const char	*path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	if (path == NULL || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found: the figures are at /metrics");
		return;
	}
	if ((out = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, "Out of memory");
		return;
	}
	stats_render(d, out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", out);
	evbuffer_free(out);
}

int
stats_listen(struct daemon *d, char *why, size_t len)
{
	const struct addr	*a = &d->cfg->stats_listen;
	char			 host[ADDR_HOST_MAX + 1];

	if (!d->cfg->has_stats)
		return 0;
	if ((d->http = evhttp_new(d->base)) == NULL) {
		snprintf(why, len, "stats: cannot create the HTTP server");
		return -1;
	}
	snprintf(host, sizeof(host), "%s", a->host);
	evhttp_set_allowed_methods(d->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(d->http, 8192);
	evhttp_set_max_body_size(d->http, 0);
	evhttp_set_timeout(d->http, 10);
	evhttp_set_gencb(d->http, stats_request, d);
	if (evhttp_bind_socket_with_handle(d->http, host, a->port) == NULL) {
		snprintf(why, len, "stats.listen: cannot listen on %s:%u", a->host, a->port);
		evhttp_free(d->http);
		d->http = NULL;
		return -1;
	}
	log_info("stats: Prometheus figures at http://%s%s%s:%u/metrics",
	    a->ss.ss_family == AF_INET6 ? "[" : "", a->host,
	    a->ss.ss_family == AF_INET6 ? "]" : "", a->port);
	return 0;
}

void
stats_close(struct daemon *d)
{
	if (d->http != NULL) {
		evhttp_free(d->http);
		d->http = NULL;
	}
}
