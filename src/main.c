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
#include "runtime.h"
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

/* The file, read, checked and made ready to run (every certificate loaded). */
static struct runtime *
load(const char *path)
{
	struct config_errors	 errs = { 0 };
	struct config		*cfg;
	struct runtime		*rt = NULL;

	if ((cfg = config_load_file(path, &errs)) != NULL)
		rt = runtime_new(cfg, &errs);
	config_unref(cfg);
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.lines[i]);
	config_errors_clear(&errs);
	return rt;
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

/*
 * The pid file.  Its directory may be one that others can write to, and
 * the file is written as root: a symbolic or hard link planted at its
 * path must not make us truncate or write the file it leads to.  So it is
 * opened with O_NOFOLLOW (a symbolic link as the last component fails
 * with ELOOP) and O_NONBLOCK | O_NOCTTY (a FIFO or a device neither
 * blocks nor becomes our terminal), and what was opened must be a regular
 * file of ours with a single link before it is truncated.  A link is
 * refused, not replaced (a rename(2) of a temporary file over it would be
 * as safe): a link where the pid file should be is tampering that the
 * administrator should see, and a refusal needs no temporary name in the
 * directory.  The file is opened before daemon(3), so that a refusal
 * reaches the terminal, and written after it, when the pid is known.
 */
struct pidfile {
	char	*path;
	int	 fd;
	bool	 created;	/* by us: removed if the start fails */
	bool	 written;
	dev_t	 dev;		/* what we opened, so that only that is removed */
	ino_t	 ino;
};

static const char *
pidfile_kind(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "a device";
	return "not a regular file";
}

static void
pidfile_refuse(const char *path, mode_t mode)
{
	fprintf(stderr, "starttls-proxy: pidfile: %s is %s; expected a regular file "
	    "or no file (not %s)\n", path, pidfile_kind(mode),
	    S_ISLNK(mode) ? "followed" : "written");
}

static int
pidfile_open(struct pidfile *pf, const char *path)
{
	const int	 flags = O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	struct stat	 st;

	memset(pf, 0, sizeof(*pf));
	pf->fd = -1;
	if ((pf->path = strdup(path)) == NULL) {
		fprintf(stderr, "starttls-proxy: pidfile: out of memory\n");
		return -1;
	}
	pf->fd = open(path, flags | O_CREAT | O_EXCL, 0644);
	if (pf->fd != -1)
		pf->created = true;
	else if (errno == EEXIST)
		pf->fd = open(path, flags);
	if (pf->fd == -1) {
		int	 err = errno;

		if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
			pidfile_refuse(path, st.st_mode);
		else
			fprintf(stderr, "starttls-proxy: pidfile: cannot open %s: %s\n", path,
			    strerror(err));
		return -1;
	}
	if (fstat(pf->fd, &st) == -1) {
		fprintf(stderr, "starttls-proxy: pidfile: %s: %s\n", path, strerror(errno));
		return -1;
	}
	pf->dev = st.st_dev;
	pf->ino = st.st_ino;
	if (!S_ISREG(st.st_mode)) {
		pidfile_refuse(path, st.st_mode);
		return -1;
	}
	if (st.st_nlink != 1) {
		fprintf(stderr, "starttls-proxy: pidfile: %s has %lu links; expected a file of "
		    "its own (not written)\n", path, (unsigned long)st.st_nlink);
		return -1;
	}
	if (st.st_uid != geteuid()) {
		fprintf(stderr, "starttls-proxy: pidfile: %s belongs to uid %lu; expected a file "
		    "of uid %lu (not written: its owner could change the pid in it)\n", path,
		    (unsigned long)st.st_uid, (unsigned long)geteuid());
		return -1;
	}
	/* daemon(3) puts /dev/null on 0, 1 and 2: keep the file off them */
	if (pf->fd <= STDERR_FILENO) {
		int	 fd = fcntl(pf->fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);

		if (fd == -1) {
			fprintf(stderr, "starttls-proxy: pidfile: %s: %s\n", path, strerror(errno));
			return -1;
		}
		close(pf->fd);
		pf->fd = fd;
	}
	return 0;
}

/* Its mode, while the daemon may still change it (before privileges are dropped). */
static int
pidfile_mode(struct pidfile *pf)
{
	if (fchmod(pf->fd, 0644) == -1) {
		log_errorx("pidfile: cannot set the mode of %s: %s", pf->path, strerror(errno));
		return -1;
	}
	return 0;
}

/* After daemon(3) and the privilege drop: the pid into the file checked by pidfile_open(). */
static int
pidfile_write(struct pidfile *pf)
{
	char	 buf[32];
	int	 n;

	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(pf->fd, 0) == -1 || write(pf->fd, buf, (size_t)n) != n) {
		log_errorx("pidfile: cannot write %s: %s", pf->path, strerror(errno));
		return -1;
	}
	close(pf->fd);
	pf->fd = -1;
	pf->written = true;
	return 0;
}

/*
 * Does the path still name the file we opened, holding what we wrote?
 * The inode alone would not do: once the file is removed, a new one may
 * get its number.
 */
static bool
pidfile_ours(const struct pidfile *pf)
{
	char		 want[32], got[32];
	struct stat	 st;
	ssize_t		 n;
	int		 fd, wn = 0;
	bool		 ours;

	if (pf->written)
		wn = snprintf(want, sizeof(want), "%ld\n", (long)getpid());
	fd = open(pf->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd == -1)
		return false;
	ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == pf->dev &&
	    st.st_ino == pf->ino && (n = read(fd, got, sizeof(got))) == wn &&
	    memcmp(got, want, (size_t)wn) == 0;
	close(fd);
	return ours;
}

/*
 * Remove the file at exit, or after a start that failed if we made it,
 * but only if the path still names the file we wrote: never whatever
 * someone put in its place.  unlink(2) removes a name and follows no
 * link, so a swap between the check and it can only remove an entry of
 * the directory, which that someone could remove already.
 */
static void
pidfile_remove(struct pidfile *pf, bool failed)
{
	if (pf->path == NULL)
		return;
	if (pf->fd != -1)
		close(pf->fd);
	if ((!failed || pf->created) && pidfile_ours(pf) && unlink(pf->path) == -1)
		log_debug("pidfile: cannot remove %s: %s", pf->path, strerror(errno));
	free(pf->path);
	pf->path = NULL;
}

int
main(int argc, char **argv)
{
	struct options		 o = { 0 };
	struct config_errors	 errs = { 0 };
	struct runtime		*rt;
	struct config		*cfg;
	struct daemon		*d;
	struct privs		 privs;
	struct pidfile		 pf = { .fd = -1 };
	const char		*pidfile;
	int			 rc;

	parse_args(argc, argv, &o);
	log_init(LOG_TARGET_STDERR, o.debug ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
	    "starttls-proxy");
	signal(SIGPIPE, SIG_IGN);

	if ((rt = load(o.config)) == NULL)
		exit(EXIT_CONFIG);
	cfg = rt->cfg;
	if (privs_lookup(o.user ? o.user : cfg->user, cfg->group, &privs) == -1)
		exit(EXIT_CONFIG);
	if (o.test) {
		printf("configuration OK\n");
		runtime_unref(rt);
		exit(0);
	}

	if ((d = server_new(rt, o.foreground, o.debug)) == NULL) {
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
	pidfile = o.pidfile ? o.pidfile : cfg->pidfile;
	if (pidfile != NULL && pidfile_open(&pf, pidfile) == -1) {
		pidfile_remove(&pf, true);
		exit(EXIT_CONFIG);
	}
	if (!o.foreground) {
		if (daemon(0, 0) == -1) {
			fprintf(stderr, "starttls-proxy: cannot daemonize: %s\n", strerror(errno));
			pidfile_remove(&pf, true);
			exit(EXIT_CONFIG);
		}
		if (server_after_fork(d) == -1) {
			log_errorx("cannot reinitialise the event loops after fork");
			pidfile_remove(&pf, true);
			exit(EXIT_CONFIG);
		}
		server_apply_log(d, cfg);
	}
	server_warn_selfsigned(cfg);

	if ((pf.path != NULL && pidfile_mode(&pf) == -1) || privs_drop(&privs) == -1) {
		pidfile_remove(&pf, true);
		exit(EXIT_CONFIG);
	}
	/*
	 * Once privileges are dropped, through the file opened before: the
	 * pid a supervisor reads is that of the daemon as it runs.
	 */
	if (pf.path != NULL && pidfile_write(&pf) == -1) {
		pidfile_remove(&pf, true);
		exit(EXIT_CONFIG);
	}
	runtime_unref(rt);	/* the daemon and its workers hold their own */

	rc = server_run(d) == 0 ? 0 : 1;
	server_free(d);
	pidfile_remove(&pf, false);
	return rc;
}
