/*
 * Logging to syslog or stderr.  Messages are built once into a stack
 * buffer so that a line is written with a single call and threads never
 * interleave within a line.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"

static enum log_target	log_target = LOG_TARGET_STDERR;
static enum log_level	log_level = LOG_LEVEL_INFO;
static const char	*log_ident = "starttls-proxy";

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

void
log_init(enum log_target target, enum log_level level, const char *ident)
{
	log_ident = ident;
	log_set(target, level);
}

void
log_set(enum log_target target, enum log_level level)
{
	if (target == LOG_TARGET_SYSLOG && log_target != LOG_TARGET_SYSLOG)
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (target != LOG_TARGET_SYSLOG && log_target == LOG_TARGET_SYSLOG)
		closelog();
	log_target = target;
	log_level = level;
}

bool
log_enabled(enum log_level level)
{
	return level <= log_level;
}

int
log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

const char *
log_level_name(enum log_level level)
{
	return level_names[level];
}

static bool
log_byte_safe(unsigned char c, bool quoted)
{
	if (quoted)
		return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("._-:/[]*@+", c) != NULL);
}

const char *
log_escape(const char *in, bool quoted, char *out, size_t outlen)
{
	static const char	 hex[] = "0123456789abcdef";
	size_t			 o = 0;

	if (outlen == 0)
		return out;
	for (; *in != '\0'; in++) {
		unsigned char c = (unsigned char)*in;

		if (log_byte_safe(c, quoted) || (quoted && (c == '"' || c == '\\'))) {
			if (o + 1 >= outlen)
				break;
			/* in a quoted value, quotes stay readable as ' */
			out[o++] = log_byte_safe(c, quoted) ? (char)c : '\'';
			continue;
		}
		if (o + 4 >= outlen)
			break;
		out[o++] = '\\';
		out[o++] = 'x';
		out[o++] = hex[c >> 4];
		out[o++] = hex[c & 0xf];
	}
	out[o] = '\0';
	return out;
}

/*
 * The last line of defence: whatever a caller forgot to escape, no
 * control character reaches the log, so no peer can start a line of its
 * own (log_escape does the rest, per value).
 */
static void
log_neutralize(char *msg)
{
	for (unsigned char *p = (unsigned char *)msg; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static void log_vwrite(enum log_level, const char *, const char *, va_list)
    __attribute__((format(printf, 3, 0)));

static void
log_vwrite(enum log_level level, const char *errstr, const char *fmt, va_list ap)
{
	static const int prio[] = {
		[LOG_LEVEL_ERROR] = LOG_ERR,
		[LOG_LEVEL_WARNING] = LOG_WARNING,
		[LOG_LEVEL_INFO] = LOG_INFO,
		[LOG_LEVEL_DEBUG] = LOG_DEBUG,
	};
	char	 msg[2048];
	int	 n;

	if (!log_enabled(level))
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (errstr != NULL && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", errstr);
	log_neutralize(msg);

	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(prio[level], "%s", msg);
		return;
	}

	char		 stamp[32];
	struct timespec	 ts;
	struct tm	 tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	dprintf(STDERR_FILENO, "%s.%03ld %s[%d]: %s%s\n", stamp,
	    ts.tv_nsec / 1000000, log_ident, (int)getpid(),
	    level == LOG_LEVEL_ERROR ? "error: " :
	    level == LOG_LEVEL_WARNING ? "warning: " : "", msg);
}

#define LOG_FN(name, level, with_errno)				\
void								\
name(const char *fmt, ...)					\
{								\
	int	 saved = errno;					\
	va_list	 ap;						\
								\
	va_start(ap, fmt);					\
	log_vwrite(level, with_errno ? strerror(saved) : NULL, fmt, ap); \
	va_end(ap);						\
	errno = saved;						\
}

LOG_FN(log_warn, LOG_LEVEL_WARNING, 1)
LOG_FN(log_warnx, LOG_LEVEL_WARNING, 0)
LOG_FN(log_errorx, LOG_LEVEL_ERROR, 0)
LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)

void
fatal(const char *fmt, ...)
{
	int	 saved = errno;
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, strerror(saved), fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Drain the OpenSSL error queue of this thread into the log. */
void
log_openssl_errors(const char *what)
{
	unsigned long	 e;
	char		 buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_warnx("%s: %s", what, buf);
	}
}

bool
log_ratelimit_pass(struct log_ratelimit *rl, time_t now, unsigned long *suppressed)
{
	if (now == rl->last) {
		rl->suppressed++;
		return false;
	}
	rl->last = now;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}
