/*
 * systemd readiness and socket activation: see sdnotify.h.
 */
#include "autoconfig.h"

#include <sys/socket.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "sdnotify.h"

#define SD_SOCKETS_MAX	64

static int	sd_fds[SD_SOCKETS_MAX];
static bool	sd_taken[SD_SOCKETS_MAX];
static int	sd_nfds;

void
sdnotify(const char *state)
{
#ifdef HAVE_SYSTEMD
	if (strcmp(state, "RELOADING=1") == 0) {
		struct timespec	 ts;
		char		 msg[96];

		/* systemd 253 and later want the time of the reload with it */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		    (unsigned long long)ts.tv_sec * 1000000ULL +
		    (unsigned long long)ts.tv_nsec / 1000);
		(void)sd_notify(0, msg);
		return;
	}
	(void)sd_notify(0, state);
#else
	(void)state;
#endif
}

void
sdnotify_collect_sockets(void)
{
#ifdef HAVE_SYSTEMD
	int	 n = sd_listen_fds(1);

	if (n <= 0)
		return;
	if (n > SD_SOCKETS_MAX) {
		log_warnx("systemd passed %d sockets; using the first %d", n, SD_SOCKETS_MAX);
		n = SD_SOCKETS_MAX;
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;

		if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			log_warnx("systemd passed descriptor %d, which is not a listening stream socket: ignored", fd);
			continue;
		}
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		sd_fds[sd_nfds++] = fd;
	}
	log_info("systemd passed %d listening socket%s", sd_nfds, sd_nfds == 1 ? "" : "s");
#endif
}

/*
 * The first worker to ask gets the socket itself; the others get a
 * duplicate of it and accept from the same queue.  They cannot bind
 * their own SO_REUSEPORT sockets next to it: the kernel lets only
 * sockets of the same owner share a port, and systemd made this one as
 * root.
 */
int
sdnotify_take_socket(const struct addr *a)
{
	for (int i = 0; i < sd_nfds; i++) {
		struct sockaddr_storage	 ss;
		socklen_t		 len = sizeof(ss);

		if (sd_fds[i] < 0 || getsockname(sd_fds[i], (struct sockaddr *)&ss, &len) == -1)
			continue;
		if (!addr_sockaddr_equal((struct sockaddr *)&ss, len,
		    (const struct sockaddr *)&a->ss, a->sslen))
			continue;
		if (!sd_taken[i]) {
			sd_taken[i] = true;
			return sd_fds[i];
		}
		return fcntl(sd_fds[i], F_DUPFD_CLOEXEC, 0);
	}
	return -1;
}

void
sdnotify_unclaimed(void)
{
	for (int i = 0; i < sd_nfds; i++) {
		struct sockaddr_storage	 ss;
		socklen_t		 len = sizeof(ss);
		char			 name[128] = "?";

		if (sd_fds[i] < 0 || sd_taken[i])
			continue;
		if (getsockname(sd_fds[i], (struct sockaddr *)&ss, &len) == 0)
			addr_format((struct sockaddr *)&ss, len, name, sizeof(name));
		log_warnx("systemd passed a socket on %s that no listener names: closed", name);
		close(sd_fds[i]);
		sd_fds[i] = -1;
	}
}
