/*
 * Reading libconfig settings into our own structs: the typed getters and
 * the list of problems, shared by config.c and by the protocol modules
 * that parse their own settings block.  Every problem is collected, not
 * only the first, as one line "file:line: path: problem (expected ...)",
 * so that an operator fixes a file in one pass.  Running out of memory
 * is a problem like any other: the load fails and, on SIGHUP, the
 * running configuration is kept.
 */
#ifndef STP_CFG_H
#define STP_CFG_H

#include <stdbool.h>
#include <stddef.h>

#include <libconfig.h>

#include "log.h"

#define CFG_PATH_MAX	256	/* "listeners.[3].backend.pin_sha256.[2]" */

/* Problems found while loading, each one line "file:line: path: text". */
struct config_errors {
	char		**lines;
	size_t		 count;
	bool		 oom;		/* a line could not even be kept */
};

void	 config_errors_add(struct config_errors *, const char *, ...) PRINTFLIKE(2, 3);
void	 config_errors_clear(struct config_errors *);

/* Where we are while walking a file. */
struct cfg_walk {
	struct config_errors	*errs;
	const char		*file;		/* for settings libconfig cannot place */
	size_t			 before;	/* error count when the walk started */
};

/* True once the walk has found a problem (or run out of memory). */
bool	 cfg_failed(const struct cfg_walk *);

void	 cfg_problem(struct cfg_walk *, const config_setting_t *, const char *path,
	    const char *fmt, ...) PRINTFLIKE(4, 5);
/* Allocation at load time: NULL (with a problem reported) when memory runs out. */
char	*cfg_strdup(struct cfg_walk *, const char *);
void	*cfg_calloc(struct cfg_walk *, size_t n, size_t size);
/* "file:line: path" of a setting, allocated. */
char	*cfg_where(struct cfg_walk *, const config_setting_t *, const char *path);
/* "file:line: path.key" of a member, or of the group when it is absent. */
char	*cfg_member_where(struct cfg_walk *, const config_setting_t *group,
	    const char *path, const char *key);

void	 cfg_child_path(char *buf, size_t len, const char *parent, const char *name);
void	 cfg_index_path(char *buf, size_t len, const char *parent, unsigned i);
/* "a, b, c" */
void	 cfg_join_names(char *buf, size_t len, const char *const *names);
const char *cfg_type_name(const config_setting_t *);

/* Every member of group must be one of known (NULL-terminated); suggests the nearest. */
void	 cfg_check_members(struct cfg_walk *, const config_setting_t *group,
	    const char *path, const char *const *known);

/*
 * Typed getters of group's member key (path is the group's).  Each returns
 * 1 when the setting is present and valid, 0 when absent (out untouched),
 * -1 after reporting a problem.
 */
int	 cfg_get_string(struct cfg_walk *, const config_setting_t *group, const char *path,
	    const char *key, const char **out);
/* A copy of a string that must not be empty; *out is freed first. */
int	 cfg_get_nonempty(struct cfg_walk *, const config_setting_t *group, const char *path,
	    const char *key, char **out);
int	 cfg_get_uint(struct cfg_walk *, const config_setting_t *group, const char *path,
	    const char *key, long long min, long long max, unsigned long long *out);
int	 cfg_get_bool(struct cfg_walk *, const config_setting_t *group, const char *path,
	    const char *key, bool *out);
/* A string that must be one of names (NULL-terminated); *out is its index. */
int	 cfg_get_enum(struct cfg_walk *, const config_setting_t *group, const char *path,
	    const char *key, const char *const *names, int *out);
/*
 * One string, or an array or list of strings: *out gets a NULL-terminated
 * array of the setting's own strings (not copied) and *settings the
 * setting each came from; the caller frees both arrays.
 */
int	 cfg_get_string_list(struct cfg_walk *, const config_setting_t *group,
	    const char *path, const char *key, const char ***out,
	    const config_setting_t ***settings, size_t *n);
/* A member that must be a group, or absent; *bad is set when it is something else. */
const config_setting_t *cfg_get_group(struct cfg_walk *, const config_setting_t *group,
	    const char *path, const char *key, bool *bad);

#endif
