/*
 * The typed libconfig getters and the list of problems: see cfg.h.
 */
#include "autoconfig.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "cfg.h"
#include "util.h"

/* Error collection */

void
config_errors_add(struct config_errors *errs, const char *fmt, ...)
{
	va_list	 ap;
	char	*line, **lines;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) == -1)
		line = NULL;
	va_end(ap);
	if (line == NULL) {
		errs->oom = true;
		return;
	}
	lines = reallocarray(errs->lines, errs->count + 1, sizeof(*lines));
	if (lines == NULL) {
		free(line);
		errs->oom = true;
		return;
	}
	errs->lines = lines;
	errs->lines[errs->count++] = line;
}

void
config_errors_clear(struct config_errors *errs)
{
	for (size_t i = 0; i < errs->count; i++)
		free(errs->lines[i]);
	free(errs->lines);
	errs->lines = NULL;
	errs->count = 0;
	errs->oom = false;
}

/* "file:line: path" of a setting. */
static void
where_of(const struct cfg_walk *w, const config_setting_t *s, const char *path,
    char *buf, size_t len)
{
	const char	*file = config_setting_source_file(s);
	unsigned	 line = config_setting_source_line(s);

	if (file == NULL)
		file = w->file;
	if (line == 0)
		snprintf(buf, len, "%s: %s", file, path);
	else
		snprintf(buf, len, "%s:%u: %s", file, line, path);
}

void
cfg_problem(struct cfg_walk *w, const config_setting_t *s, const char *path,
    const char *fmt, ...)
{
	char	 where[CFG_PATH_MAX + 64 + PATH_MAX];
	char	 text[1024];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	where_of(w, s, path, where, sizeof(where));
	config_errors_add(w->errs, "%s: %s", where, text);
}

/* A problem without a setting to place it: memory ran out. */
static void
cfg_oom(struct cfg_walk *w)
{
	if (!w->errs->oom)
		config_errors_add(w->errs, "%s: out of memory while loading the configuration", w->file);
	w->errs->oom = true;
}

char *
cfg_strdup(struct cfg_walk *w, const char *s)
{
	char	*p = strdup(s);

	if (p == NULL)
		cfg_oom(w);
	return p;
}

void *
cfg_calloc(struct cfg_walk *w, size_t n, size_t size)
{
	void	*p = calloc(n, size);

	if (p == NULL)
		cfg_oom(w);
	return p;
}

bool
cfg_failed(const struct cfg_walk *w)
{
	return w->errs->count > w->before || w->errs->oom;
}

char *
cfg_where(struct cfg_walk *w, const config_setting_t *s, const char *path)
{
	char	 buf[CFG_PATH_MAX + 64 + PATH_MAX];

	where_of(w, s, path, buf, sizeof(buf));
	return cfg_strdup(w, buf);
}

void
cfg_child_path(char *buf, size_t len, const char *parent, const char *name)
{
	if (parent[0] == '\0')
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%s.%s", parent, name);
}

/*
 * "file:line: path.key" of a member, for the errors about the file it
 * names that only loading finds; the group's line when it is absent.
 */
char *
cfg_member_where(struct cfg_walk *w, const config_setting_t *group,
    const char *path, const char *key)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[CFG_PATH_MAX];

	cfg_child_path(p, sizeof(p), path, key);
	return cfg_where(w, s != NULL ? s : group, p);
}

void
cfg_index_path(char *buf, size_t len, const char *parent, unsigned i)
{
	snprintf(buf, len, "%s.[%u]", parent, i);
}

void
cfg_join_names(char *buf, size_t len, const char *const *names)
{
	size_t	 off = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i] != NULL && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    i == 0 ? "" : ", ", names[i]);
}

/* The known name nearest to a misspelt one, or NULL when none is close. */
static const char *
nearest_name(const char *name, const char *const *known)
{
	const char	*best = NULL;
	unsigned	 bestd = UINT_MAX;

	for (size_t i = 0; known[i] != NULL; i++) {
		unsigned d = edit_distance(name, known[i]);

		if (d < bestd) {
			bestd = d;
			best = known[i];
		}
	}
	if (best != NULL && bestd <= 2 && bestd < strlen(name))
		return best;
	return NULL;
}

/* Every member of a group must be a known name. */
void
cfg_check_members(struct cfg_walk *w, const config_setting_t *group, const char *path,
    const char *const *known)
{
	char	 p[CFG_PATH_MAX], list[512];
	int	 n = config_setting_length(group);

	for (int i = 0; i < n; i++) {
		const config_setting_t	*m = config_setting_get_elem(group, (unsigned)i);
		const char		*name = config_setting_name(m);
		bool			 ok = false;

		for (size_t k = 0; known[k] != NULL; k++)
			if (strcmp(known[k], name) == 0)
				ok = true;
		if (ok)
			continue;
		cfg_child_path(p, sizeof(p), path, name);
		const char *near = nearest_name(name, known);
		if (near != NULL) {
			cfg_problem(w, m, p, "unknown setting (did you mean \"%s\"?)", near);
		} else {
			cfg_join_names(list, sizeof(list), known);
			cfg_problem(w, m, p, "unknown setting (expected one of %s)", list);
		}
	}
}

const char *
cfg_type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_GROUP:		return "a group";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:		return "an integer";
	case CONFIG_TYPE_FLOAT:		return "a float";
	case CONFIG_TYPE_STRING:	return "a string";
	case CONFIG_TYPE_BOOL:		return "a boolean";
	case CONFIG_TYPE_ARRAY:		return "an array";
	case CONFIG_TYPE_LIST:		return "a list";
	}
	return "something else";
}

/*
 * Typed getters.  Each returns 1 when the setting is present and valid,
 * 0 when absent (out untouched), -1 after reporting a problem.
 */
int
cfg_get_string(struct cfg_walk *w, const config_setting_t *group, const char *parent,
    const char *key, const char **out)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[CFG_PATH_MAX];

	if (s == NULL)
		return 0;
	cfg_child_path(p, sizeof(p), parent, key);
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		cfg_problem(w, s, p, "expected a string, found %s", cfg_type_name(s));
		return -1;
	}
	*out = config_setting_get_string(s);
	return 1;
}

int
cfg_get_nonempty(struct cfg_walk *w, const config_setting_t *group, const char *parent,
    const char *key, char **out)
{
	const char	*v;
	int		 r = cfg_get_string(w, group, parent, key, &v);
	char		 p[CFG_PATH_MAX];

	if (r != 1)
		return r;
	if (v[0] == '\0') {
		cfg_child_path(p, sizeof(p), parent, key);
		cfg_problem(w, config_setting_get_member(group, key), p,
		    "must not be empty");
		return -1;
	}
	free(*out);
	if ((*out = cfg_strdup(w, v)) == NULL)
		return -1;
	return 1;
}

int
cfg_get_uint(struct cfg_walk *w, const config_setting_t *group, const char *parent,
    const char *key, long long min, long long max, unsigned long long *out)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[CFG_PATH_MAX];
	long long		 v;

	if (s == NULL)
		return 0;
	cfg_child_path(p, sizeof(p), parent, key);
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64) {
		cfg_problem(w, s, p, "expected an integer from %lld to %lld, found %s",
		    min, max, cfg_type_name(s));
		return -1;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		cfg_problem(w, s, p, "%lld is out of range (expected %lld to %lld)",
		    v, min, max);
		return -1;
	}
	*out = (unsigned long long)v;
	return 1;
}

int
cfg_get_bool(struct cfg_walk *w, const config_setting_t *group, const char *parent,
    const char *key, bool *out)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[CFG_PATH_MAX];

	if (s == NULL)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		cfg_child_path(p, sizeof(p), parent, key);
		cfg_problem(w, s, p, "expected true or false, found %s", cfg_type_name(s));
		return -1;
	}
	*out = config_setting_get_bool(s) != 0;
	return 1;
}

/* A string that must be one of names[]; *out is its index. */
int
cfg_get_enum(struct cfg_walk *w, const config_setting_t *group, const char *parent,
    const char *key, const char *const *names, int *out)
{
	const char	*v;
	char		 p[CFG_PATH_MAX], list[256];
	int		 r = cfg_get_string(w, group, parent, key, &v);

	if (r != 1)
		return r;
	for (int i = 0; names[i] != NULL; i++) {
		if (strcmp(names[i], v) == 0) {
			*out = i;
			return 1;
		}
	}
	cfg_child_path(p, sizeof(p), parent, key);
	cfg_join_names(list, sizeof(list), names);
	cfg_problem(w, config_setting_get_member(group, key), p,
	    "unknown value \"%s\" (expected one of %s)", v, list);
	return -1;
}

/*
 * A setting that is one string or an array or list of strings.
 * *out gets a NULL-terminated array of the setting's own strings (not
 * copied) and *settings the setting each came from.
 */
int
cfg_get_string_list(struct cfg_walk *w, const config_setting_t *group,
    const char *parent, const char *key, const char ***out,
    const config_setting_t ***settings, size_t *n)
{
	config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[CFG_PATH_MAX];
	int			 len;

	if (s == NULL)
		return 0;
	cfg_child_path(p, sizeof(p), parent, key);
	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		*out = calloc(2, sizeof(**out));
		*settings = calloc(1, sizeof(**settings));
		if (*out == NULL || *settings == NULL) {
			free(*out);
			free(*settings);
			cfg_oom(w);
			return -1;
		}
		(*out)[0] = config_setting_get_string(s);
		(*settings)[0] = s;
		*n = 1;
		return 1;
	}
	if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(s) != CONFIG_TYPE_LIST) {
		cfg_problem(w, s, p, "expected a string or a list of strings, found %s",
		    cfg_type_name(s));
		return -1;
	}
	len = config_setting_length(s);
	if (len == 0) {
		cfg_problem(w, s, p, "must not be an empty list");
		return -1;
	}
	*out = calloc((size_t)len + 1, sizeof(**out));
	*settings = calloc((size_t)len, sizeof(**settings));
	if (*out == NULL || *settings == NULL) {
		free(*out);
		free(*settings);
		cfg_oom(w);
		return -1;
	}
	for (int i = 0; i < len; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char ep[CFG_PATH_MAX];

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			cfg_index_path(ep, sizeof(ep), p, (unsigned)i);
			cfg_problem(w, e, ep, "expected a string, found %s", cfg_type_name(e));
			free(*out);
			free(*settings);
			return -1;
		}
		(*out)[i] = config_setting_get_string(e);
		(*settings)[i] = e;
	}
	*n = (size_t)len;
	return 1;
}

/* A group member that must be a group, or absent. */
const config_setting_t *
cfg_get_group(struct cfg_walk *w, const config_setting_t *group, const char *parent,
    const char *key, bool *bad)
{
	const config_setting_t	*s = config_setting_get_member(group, key);
	char			 p[CFG_PATH_MAX];

	if (s == NULL)
		return NULL;
	if (!config_setting_is_group(s)) {
		cfg_child_path(p, sizeof(p), parent, key);
		cfg_problem(w, s, p, "expected a group { ... }, found %s", cfg_type_name(s));
		*bad = true;
		return NULL;
	}
	return s;
}

