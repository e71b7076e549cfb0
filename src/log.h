/*
 * Logging: syslog or stderr, four levels, printf-checked.
 * log_warnx() and friends never append errno; log_warn() appends strerror(errno).
 */
#ifndef STP_LOG_H
#define STP_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <time.h>

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

enum log_target {
	LOG_TARGET_SYSLOG,
	LOG_TARGET_STDERR,
};

#define PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))

void	log_init(enum log_target, enum log_level, const char *ident);
void	log_set(enum log_target, enum log_level);
bool	log_enabled(enum log_level);
int	log_level_parse(const char *, enum log_level *);
const char *log_level_name(enum log_level);

void	log_warn(const char *, ...) PRINTFLIKE(1, 2);
void	log_warnx(const char *, ...) PRINTFLIKE(1, 2);
void	log_errorx(const char *, ...) PRINTFLIKE(1, 2);
void	log_info(const char *, ...) PRINTFLIKE(1, 2);
void	log_debug(const char *, ...) PRINTFLIKE(1, 2);
void	log_openssl_errors(const char *what);
__attribute__((noreturn)) void fatal(const char *, ...) PRINTFLIKE(1, 2);
__attribute__((noreturn)) void fatalx(const char *, ...) PRINTFLIKE(1, 2);

/*
 * A rate limit for warnings that a peer can trigger: at most one line per
 * interval, with the count of what was suppressed in between.
 */
struct log_ratelimit {
	time_t		last;
	unsigned long	suppressed;
};
bool	log_ratelimit_pass(struct log_ratelimit *, time_t now, unsigned long *suppressed);

/*
 * Guarantee 4: every value a peer chooses (an address from a PROXY header,
 * an SNI name, a reply text, a host name it asked for) goes through this
 * before it reaches a log line, at every level.  A byte that could end
 * the value or the line becomes \xHH: in a bare value anything but
 * letters, digits and ._-:/[]*@+; in a quoted one (for key="...") control
 * characters and bytes past ASCII, while '"' and '\\' become '\''.  The
 * result always fits
 * in outlen (truncated, never cut inside an escape) and is returned.
 */
const char *log_escape(const char *in, bool quoted, char *out, size_t outlen);

#define log_debug_enabled() log_enabled(LOG_LEVEL_DEBUG)

#endif
