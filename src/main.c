/*
 * starttls-proxy(8): the command line, -t, daemonizing, the pid file and
 * the privilege drop.  Everything that can fail is done before the
 * daemon detaches, so that start-up errors reach the terminal.
 */
#include "autoconfig.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <libconfig.h>
#include <openssl/crypto.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "tlsctx.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG	SYSCONFDIR "/starttls-proxy.conf"

#define EXIT_CONFIG	1
#define EXIT_USAGE	2

struct options {
	const char	*config;
	const char	*pidfile;
	const char	*user;
	bool		 foreground;
	bool		 debug;
	bool		 test;
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: starttls-proxy [-fdtVh] [-c file] [-p pidfile] [-u user]\n"
	    "  -c, --config FILE    configuration file (default %s)\n"
	    "  -f, --foreground     do not daemonize; log to stderr\n"
	    "  -d, --debug          debug logging; implies -f\n"
	    "  -t, --test           check the configuration, certificates and keys, then exit\n"
	    "  -p, --pidfile FILE   write the pid there (overrides pidfile)\n"
	    "  -u, --user USER      drop to USER after binding (overrides user)\n"
	    "  -V, --version        show the version and the library versions\n"
	    "  -h, --help           show this help\n", DEFAULT_CONFIG);
}

static void
version(void)
{
	printf("starttls-proxy %s\n", PACKAGE_VERSION);
	printf("libevent %s\n", event_get_version());
	printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("libconfig %d.%d.%d\n", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR,
	    LIBCONFIG_VER_REVISION);
}

static int
parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "config",	required_argument, NULL, 'c' },
		{ "foreground",	no_argument,	   NULL, 'f' },
		{ "debug",	no_argument,	   NULL, 'd' },
		{ "test",	no_argument,	   NULL, 't' },
		{ "pidfile",	required_argument, NULL, 'p' },
		{ "user",	required_argument, NULL, 'u' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int	 ch;

	o->config = DEFAULT_CONFIG;
	while ((ch = getopt_long(argc, argv, "c:fdtp:u:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->config = optarg;
			break;
		case 'f':
			o->foreground = true;
			break;
		case 'd':
			o->debug = o->foreground = true;
			break;
		case 't':
			o->test = true;
			break;
		case 'p':
			o->pidfile = optarg;
			break;
		case 'u':
			o->user = optarg;
			break;
		case 'V':
			version();
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(EXIT_USAGE);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "starttls-proxy: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(EXIT_USAGE);
	}
	return 0;
}

static struct config *
load(const char *path)
{
	struct config_errors	 errs = { 0 };
	struct config		*cfg;

	cfg = config_load_file(path, &errs);
	if (cfg != NULL && tlsctx_prepare(cfg, &errs) == -1) {
		config_unref(cfg);
		cfg = NULL;
	}
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.lines[i]);
	config_errors_clear(&errs);
	return cfg;
}

struct privs {
	uid_t	 uid;
	gid_t	 gid;
	char	 name[64];
	bool	 drop;
};

static int
privs_lookup(const char *user, const char *group, struct privs *p)
{
	struct passwd	*pw;
	struct group	*gr;

	memset(p, 0, sizeof(*p));
	if (user == NULL)
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		fprintf(stderr, "starttls-proxy: user: unknown user \"%s\"\n", user);
		return -1;
	}
	p->uid = pw->pw_uid;
	p->gid = pw->pw_gid;
	snprintf(p->name, sizeof(p->name), "%s", user);
	if (group != NULL) {
		if ((gr = getgrnam(group)) == NULL) {
			fprintf(stderr, "starttls-proxy: group: unknown group \"%s\"\n", group);
			return -1;
		}
		p->gid = gr->gr_gid;
	}
	p->drop = true;
	return 0;
}

static int
privs_drop(const struct privs *p)
{
	if (!p->drop)
		return 0;
	if (setgroups(1, &p->gid) == -1 || setresgid(p->gid, p->gid, p->gid) == -1 ||
	    setresuid(p->uid, p->uid, p->uid) == -1) {
		log_errorx("cannot drop privileges to %s: %s", p->name, strerror(errno));
		return -1;
	}
	if (p->uid != 0 && setuid(0) == 0) {
		log_errorx("privileges could be regained after dropping them to %s", p->name);
		return -1;
	}
	log_info("running as %s (uid %u, gid %u)", p->name, (unsigned)p->uid,
	    (unsigned)p->gid);
	return 0;
}

static int
pidfile_write(const char *path)
{
	char	 buf[32];
	int	 fd, n;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) == -1) {
		log_errorx("pidfile: cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write(fd, buf, (size_t)n) != n) {
		log_errorx("pidfile: cannot write %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int
main(int argc, char **argv)
{
	struct options		 o = { 0 };
	struct config_errors	 errs = { 0 };
	struct config		*cfg;
	struct daemon		*d;
	struct privs		 privs;
	char			*pidfile = NULL;
	int			 rc;

	parse_args(argc, argv, &o);
	log_init(LOG_TARGET_STDERR, o.debug ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
	    "starttls-proxy");
	signal(SIGPIPE, SIG_IGN);

	if ((cfg = load(o.config)) == NULL)
		exit(EXIT_CONFIG);
	if (privs_lookup(o.user ? o.user : cfg->user, cfg->group, &privs) == -1)
		exit(EXIT_CONFIG);
	if (o.test) {
		printf("configuration OK\n");
		config_unref(cfg);
		exit(0);
	}

	if ((d = server_new(cfg, o.foreground, o.debug)) == NULL) {
		fprintf(stderr, "starttls-proxy: cannot set up the event loops\n");
		exit(EXIT_CONFIG);
	}
	if (o.foreground)
		server_apply_log(d, cfg);
	if (server_listen(d, &errs) == -1) {
		for (size_t i = 0; i < errs.count; i++)
			fprintf(stderr, "%s\n", errs.lines[i]);
		exit(EXIT_CONFIG);
	}
	if (!o.foreground) {
		if (daemon(0, 0) == -1) {
			fprintf(stderr, "starttls-proxy: cannot daemonize: %s\n", strerror(errno));
			exit(EXIT_CONFIG);
		}
		if (server_after_fork(d) == -1) {
			log_errorx("cannot reinitialise the event loops after fork");
			exit(EXIT_CONFIG);
		}
		server_apply_log(d, cfg);
	}
	server_warn_selfsigned(cfg);

	if (o.pidfile != NULL || cfg->pidfile != NULL)
		pidfile = strdup(o.pidfile ? o.pidfile : cfg->pidfile);
	if (pidfile != NULL && pidfile_write(pidfile) == -1)
		exit(EXIT_CONFIG);
	if (privs_drop(&privs) == -1)
		exit(EXIT_CONFIG);
	config_unref(cfg);	/* the daemon and its workers hold their own */

	rc = server_run(d) == 0 ? 0 : 1;
	stats_close(d);		/* server_free() would close it after the loop is gone */
	server_free(d);
	if (pidfile != NULL)
		(void)unlink(pidfile);
	free(pidfile);
	return rc;
}
