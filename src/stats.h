/*
 * Figures for the Prometheus endpoint (stats = { listen = ...; }).
 *
 * Every listener name has one block of counters per worker; a worker
 * writes only its own block, with relaxed atomic adds that no other
 * thread contends for, and the main thread sums the blocks when /metrics
 * is read.  The blocks outlive reloads.
 */
#ifndef STP_STATS_H
#define STP_STATS_H

#include <stdatomic.h>
#include <stddef.h>

struct daemon;
struct evbuffer;

enum stat_refused {
	REFUSED_MAX_CONNECTIONS,
	REFUSED_PROXY_HEADER,
	REFUSED_DENIED,		/* by access */
	REFUSED_CLIENT_LIMIT,	/* past client_limits */
	REFUSED_MAX
};

enum stat_handshake_failure {
	HS_FAIL_NO_SHARED_CIPHER,
	HS_FAIL_PLAINTEXT,
	HS_FAIL_VERSION,
	HS_FAIL_CERTIFICATE_REJECTED,	/* the client rejected ours */
	HS_FAIL_CLIENT_CERTIFICATE,	/* theirs was missing or failed */
	HS_FAIL_CLOSED,
	HS_FAIL_TIMEOUT,
	HS_FAIL_OTHER,
	HS_FAIL_MAX
};

enum stat_backend_failure {
	BACKEND_FAIL_UNREACHABLE,
	BACKEND_FAIL_TIMEOUT,
	BACKEND_FAIL_VERIFY,
	BACKEND_FAIL_TLS,
	BACKEND_FAIL_NO_ROUTE,		/* a server name no route names, and no default */
	BACKEND_FAIL_MAX
};

#define STAT_TLS_SLOTS	32

/* A negotiated version and cipher; the strings are OpenSSL's own constants. */
struct stat_tls {
	_Atomic(const char *)	 version;
	_Atomic(const char *)	 cipher;
	atomic_ullong		 count;
};

struct listener_counters {
	atomic_ullong		 accepted;
	atomic_ullong		 closed;
	atomic_ullong		 refused[REFUSED_MAX];
	atomic_ullong		 upgrades_starttls;
	atomic_ullong		 upgrades_implicit;
	atomic_ullong		 handshake_failures[HS_FAIL_MAX];
	atomic_ullong		 injections;
	atomic_ullong		 injected_bytes;
	atomic_ullong		 backend_failures[BACKEND_FAIL_MAX];
	atomic_ullong		 bytes_in;
	atomic_ullong		 bytes_out;
	struct stat_tls		 tls[STAT_TLS_SLOTS];
} __attribute__((aligned(64)));

#define STAT_ADD(c, field, n) \
	atomic_fetch_add_explicit(&(c)->field, (n), memory_order_relaxed)
#define STAT_INC(c, field)	STAT_ADD(c, field, 1)

/* Count a negotiated version and cipher in a worker's block. */
void	 stats_tls(struct listener_counters *, const char *version, const char *cipher);

/* Sessions open on a listener, across workers. */
unsigned long long stats_active(const struct listener_counters *, unsigned nworkers);

/* The Prometheus text exposition of everything, into out. */
void	 stats_render(struct daemon *, struct evbuffer *out);

/*
 * The HTTP endpoint on the main thread's loop (stats.c says what it
 * answers and within which limits); -1 if it cannot listen.
 * stats_close() closes it and its connections, and must come before
 * the loop is freed; a second call does nothing.
 */
int	 stats_listen(struct daemon *, char *why, size_t len);
void	 stats_close(struct daemon *);

#endif
