/*
 * The protocol table.  Adding a protocol is adding its module here.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "proto.h"

const struct proto *const proto_table[] = {
	&proto_smtp,
	&proto_ldap,
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

const char *
proto_names(void)
{
	static char	 names[128];
	size_t		 off = 0;

	if (names[0] != '\0')
		return names;
	for (size_t i = 0; proto_table[i] != NULL && off < sizeof(names); i++)
		off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
		    i ? ", " : "", proto_table[i]->name);
	return names;
}
