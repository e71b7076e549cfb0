/*
 * The protocol table.  Adding a protocol is adding its module here.
 */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "proto.h"

const struct proto *const proto_table[] = {
	&proto_smtp,
	&proto_imap,
	&proto_pop3,
	&proto_ldap,
	&proto_postgres,
	&proto_http,
	&proto_line,
	&proto_tcp,
	NULL
};

const struct proto *
proto_lookup(const char *name)
{
	for (size_t i = 0; proto_table[i] != NULL; i++)
		if (strcmp(proto_table[i]->name, name) == 0)
			return proto_table[i];
	return NULL;
}

/* "a, b, c": the names of the protocols that match, or all with NULL. */
static void
names_where(bool (*match)(const struct proto *), char *buf, size_t len)
{
	size_t	 off = 0;

	buf[0] = '\0';
	for (size_t i = 0; proto_table[i] != NULL && off < len; i++)
		if (match == NULL || match(proto_table[i]))
			off += (size_t)snprintf(buf + off, len - off, "%s%s",
			    off ? ", " : "", proto_table[i]->name);
}

const char *
proto_names(void)
{
	static char	 names[128];

	if (names[0] == '\0')
		names_where(NULL, names, sizeof(names));
	return names;
}

static bool
drives_backend_starttls(const struct proto *p)
{
	return p->backend_starttls != NULL;
}

void
proto_backend_starttls_names(char *buf, size_t len)
{
	names_where(drives_backend_starttls, buf, len);
}

enum proto_verdict
proto_upgrade_failed(struct proto_io *io, char *why, size_t len, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	io->end = END_BACKEND_TLS_FAILED;
	io->reason = why;
	return PROTO_CLOSE;
}

bool
proto_client_full(struct proto_io *io)
{
	if (evbuffer_get_length(io->to_client) < io->client_room)
		return false;
	io->stopped = true;
	return true;
}

enum session_end
proto_refusal_end(enum proto_refusal r)
{
	switch (r) {
	case PROTO_REFUSAL_BUSY:
		return END_BUSY;
	case PROTO_REFUSAL_DENIED:
		return END_DENIED;
	case PROTO_REFUSAL_CLIENT_LIMIT:
		return END_CLIENT_LIMIT;
	case PROTO_REFUSAL_NONE:
		break;
	}
	return END_INTERNAL;
}

const char *
proto_refusal_name(enum proto_refusal r)
{
	switch (r) {
	case PROTO_REFUSAL_BUSY:
		return "max_connections";
	case PROTO_REFUSAL_DENIED:
		return "access";
	case PROTO_REFUSAL_CLIENT_LIMIT:
		return "client_limits";
	case PROTO_REFUSAL_NONE:
		break;
	}
	return "none";
}

size_t
proto_blocks(const char **out, size_t max)
{
	size_t	 n = 0;

	for (size_t i = 0; proto_table[i] != NULL && n + 1 < max; i++)
		if (proto_table[i]->block != NULL)
			out[n++] = proto_table[i]->block;
	out[n] = NULL;
	return n;
}
