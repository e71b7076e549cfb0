/*
 * Shared by the unit tests and the fuzz targets that drive protocol
 * modules: a protocol's own settings, made the way the daemon makes
 * them, from the text of its block.
 */
#ifndef STP_TESTS_HARNESS_H
#define STP_TESTS_HARNESS_H

#include <stdlib.h>

#include <libconfig.h>

#include "cfg.h"
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

#endif
