/*
 * One driver of protocol modules, for the unit tests and the fuzz target:
 * a module's state under a listener configuration, four evbuffers for
 * the bytes each way, and its hooks called as the session calls them,
 * without sockets.  The tests decide what to do with the verdicts.
 */
#ifndef STP_TESTS_HARNESS_H
#define STP_TESTS_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <libconfig.h>

#include "cfg.h"
#include "helpers.h"
#include "config.h"
#include "proto.h"

/*
 * p's settings from the inside of its block ("reply = \"OK\";"), or its
 * defaults with NULL; NULL for a protocol without settings.  Aborts on a
 * problem: the text is the test's own.  Free with p->conf_free.
 */
static inline void *
harness_proto_conf(const struct proto *p, const char *block)
{
	struct config_errors	 errs = { 0 };
	struct cfg_walk		 w = { .errs = &errs, .file = "harness" };
	config_t		 c;
	char			 text[2048];
	void			*conf;

	if (p->conf_parse == NULL)
		return NULL;
	config_init(&c);
	snprintf(text, sizeof(text), "b = { %s };", block ? block : "");
	if (config_read_string(&c, text) != CONFIG_TRUE)
		abort();
	conf = p->conf_parse(&w, block ? config_lookup(&c, "b") : NULL, "b");
	config_destroy(&c);
	if (conf == NULL || errs.count > 0)
		abort();
	return conf;
}

struct harness {
	struct listener_conf	 conf;
	const struct proto	*proto;
	void			*state;
	bool			 owns_conf;	/* proto_conf is the harness's */
	struct evbuffer		*from_client;
	struct evbuffer		*from_backend;
	struct evbuffer		*to_client;
	struct evbuffer		*to_backend;
	bool			 client_tls;	/* the client side is in TLS */
	size_t			 client_room;	/* what may wait for the client to read */
	enum proto_refusal	 refusal;	/* the session only refuses the client */
	/* what the last call left in its proto_io */
	bool			 stopped;
	bool			 direct_tls;
	enum session_end	 end;
	const char		*reason;
	size_t			 dropped;
};

enum harness_hook {
	HARNESS_CLIENT,		/* client_input on from_client */
	HARNESS_BACKEND,	/* backend_input on from_backend */
	HARNESS_DIALOGUE,	/* backend_starttls on from_backend */
	HARNESS_TLS_READY,
	HARNESS_BACKEND_READY,
};

static inline void
harness_start(struct harness *h)
{
	h->state = h->proto->session_new != NULL ? h->proto->session_new(&h->conf) : NULL;
	h->from_client = evbuffer_new();
	h->from_backend = evbuffer_new();
	h->to_client = evbuffer_new();
	h->to_backend = evbuffer_new();
	h->client_room = SIZE_MAX;
	if ((h->proto->session_new != NULL && h->state == NULL) || h->from_client == NULL ||
	    h->from_backend == NULL || h->to_client == NULL || h->to_backend == NULL)
		abort();
}

/* p under a STARTTLS listener whose own block says block (NULL: the defaults). */
static inline void
harness_open(struct harness *h, const struct proto *p, const char *block)
{
	memset(h, 0, sizeof(*h));
	h->conf.proto = p;
	h->conf.client_tls = CLIENT_TLS_STARTTLS;
	h->conf.proto_conf = harness_proto_conf(p, block);
	h->owns_conf = true;
	h->proto = p;
	harness_start(h);
}

/* The module under a listener the test loaded from a configuration. */
static inline void
harness_open_listener(struct harness *h, const struct listener_conf *lc)
{
	memset(h, 0, sizeof(*h));
	h->conf = *lc;
	h->proto = lc->proto;
	harness_start(h);
}

static inline void
harness_close(struct harness *h)
{
	if (h->state != NULL)
		h->proto->session_free(h->state);
	if (h->owns_conf && h->proto->conf_free != NULL)
		h->proto->conf_free(h->conf.proto_conf);
	evbuffer_free(h->from_client);
	evbuffer_free(h->from_backend);
	evbuffer_free(h->to_client);
	evbuffer_free(h->to_backend);
}

/* One hook, with what the session would give it. */
static inline enum proto_verdict
harness_call(struct harness *h, enum harness_hook hook)
{
	size_t			 queued = evbuffer_get_length(h->to_client);
	struct proto_io		 io = {
		.state = h->state,
		.conf = &h->conf,
		.client_tls = h->client_tls,
		.to_client = h->to_client,
		.to_backend = h->to_backend,
		.client_room = h->client_room > queued ? h->client_room - queued : 0,
		.end = hook == HARNESS_DIALOGUE ? END_BACKEND_TLS_FAILED : END_PROTOCOL_ERROR,
		.refusal = h->refusal,
	};
	enum proto_verdict	 v = PROTO_CONTINUE;

	switch (hook) {
	case HARNESS_CLIENT:
		io.in = h->from_client;
		v = h->proto->client_input(&io);
		break;
	case HARNESS_BACKEND:
		io.in = h->from_backend;
		v = h->proto->backend_input(&io);
		break;
	case HARNESS_DIALOGUE:
		io.in = h->from_backend;
		v = h->proto->backend_starttls(&io);
		break;
	case HARNESS_TLS_READY:
		if (h->proto->tls_ready != NULL)
			v = h->proto->tls_ready(&io);
		break;
	case HARNESS_BACKEND_READY:
		if (h->proto->backend_ready != NULL)
			v = h->proto->backend_ready(&io);
		break;
	}
	h->stopped = io.stopped && v == PROTO_CONTINUE;
	h->direct_tls = io.direct_tls;
	h->end = io.end;
	h->reason = io.reason;
	h->dropped = io.dropped;
	return v;
}

#endif
