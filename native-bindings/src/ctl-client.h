/*
 * ctl-client.h: what the small clients of our unix sockets share (qubes-net-hotplug,
 * qubes-net-uplink, and libqubesdb's connect): connect to a unix stream socket, send a whole
 * request, read one reply line within a deadline, and exec the Node CLI when no daemon is up.
 *
 * A program that defines CTL_CLIENT_LOG and `static const char *prog` before including it
 * also gets logmsg(), which prefixes each line on stderr with that name.
 *
 * Static inline functions in a header rather than a .c linked into each program: every user is
 * a single translation unit (libqubesdb.so must stay one file, like upstream's), and unused
 * inline functions do not trip -Wall -Wextra -Werror.
 */
#ifndef QUBES_NET_CTL_CLIENT_H
#define QUBES_NET_CTL_CLIENT_H

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef CTL_CLIENT_LOG
/* One line on stderr, "prog: message". */
static inline void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void logmsg(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
#endif

/* The value of environment variable `name`, or `fallback` when it is unset or empty. */
static inline const char *ctl_env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);
	return v && *v ? v : fallback;
}

/* Connects to the unix stream socket at `path`; returns the fd (close-on-exec), or -1 with errno set. */
static inline int ctl_connect(const char *path)
{
	struct sockaddr_un addr;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	while (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (errno == EINTR)
			continue;
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Sends all of data (MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE); 0, or -1 with errno set. */
static inline int ctl_send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static inline long ctl_elapsed_ms(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

/*
 * Reads one reply line into out (NUL-terminated, without the newline). Returns its length;
 * 0 when the daemon closed the connection before sending anything; -1 with errno set on a
 * timeout (ETIMEDOUT), an over-long reply (EMSGSIZE), a reply cut short (EPROTO), or a read error.
 */
static inline ssize_t ctl_read_line(int fd, char *out, size_t cap, long timeout_ms)
{
	size_t len = 0;
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		long left = timeout_ms - ctl_elapsed_ms(&start);
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			continue; /* the deadline check above ends the wait */
		ssize_t n = read(fd, out + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == ECONNRESET && len == 0)
				return 0;
			return -1;
		}
		if (n == 0) {
			if (len == 0)
				return 0;
			errno = EPROTO; /* a partial line: the daemon died while answering */
			return -1;
		}
		len += (size_t)n;
		out[len] = '\0';
		char *nl = memchr(out, '\n', len);
		if (nl) {
			*nl = '\0';
			return nl - out;
		}
		if (len >= cap - 1) {
			errno = EMSGSIZE;
			return -1;
		}
	}
}

/*
 * No daemon: replaces this process with the Node CLI named by environment variable `env`
 * (default `fallback`), argv = { cli, a1, a2[, a3] }; execv with an argument array, never a shell.
 * Returns only on failure, with errno set, giving the CLI path it tried.
 */
static inline const char *ctl_exec_cli(const char *env, const char *fallback, const char *a1, const char *a2, const char *a3)
{
	const char *cli = ctl_env_or(env, fallback);
	char *argv[] = { (char *)cli, (char *)a1, (char *)a2, (char *)a3, NULL }; /* a3 may be NULL */
	execv(cli, argv);
	return cli;
}

#endif
