/*
 * ctl-client.h: what the small clients of our unix sockets share (qubes-net-hotplug,
 * qubes-net-uplink, and libqubesdb's connect): connect to a unix stream socket, send a whole
 * request, read one reply line within a deadline, and exec the Node CLI when no daemon is up.
 *
 * The agent's protocol (ops, reply codes, exit codes) comes from ctl-protocol.h, generated from
 * the TypeScript source by scripts/gen-ctl-header.mjs.
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

#include "ctl-protocol.h"

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

/* Sleeps `ms` milliseconds (EINTR resumes). */
static inline void ctl_sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * One request to an agent that may be starting or restarting: connect, send, read one reply
 * line, and start over (connect again, send again) when the connection is refused (nobody
 * listens yet), or closed, reset or cut short before a whole reply (the agent died while
 * answering), until `timeout_ms` have passed. Only for idempotent requests. Returns the reply
 * length; -1 with a reason in `why`, and *exists = 0 when the socket file is gone.
 */
static inline ssize_t ctl_request_retrying(const char *path, const char *req, size_t len, char *out, size_t cap, long timeout_ms,
					   char *why, size_t why_cap, int *exists)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	long backoff = 20;
	*exists = 1;
	for (int attempt = 0;; attempt++) {
		if (attempt > 0) {
			long left = timeout_ms - ctl_elapsed_ms(&start);
			if (left <= 0)
				return -1; /* `why` holds the last attempt's reason */
			ctl_sleep_ms(backoff < left ? backoff : left);
			backoff = backoff * 2 > 500 ? 500 : backoff * 2;
		}
		int fd = ctl_connect(path);
		if (fd < 0) {
			int e = errno;
			snprintf(why, why_cap, "cannot connect to %s: %s", path, strerror(e));
			if (e == ENOENT) {
				*exists = 0;
				return -1;
			}
			if (e == ECONNREFUSED || e == EAGAIN || e == ECONNRESET || e == EINTR)
				continue;
			return -1;
		}
		if (ctl_send_all(fd, req, len) < 0) {
			snprintf(why, why_cap, "cannot send to %s: %s", path, strerror(errno));
			close(fd);
			continue;
		}
		long left = timeout_ms - ctl_elapsed_ms(&start);
		ssize_t got = ctl_read_line(fd, out, cap, left > 0 ? left : 1);
		int e = errno;
		close(fd);
		if (got > 0)
			return got;
		if (got == 0 || e == EPROTO || e == ECONNRESET) {
			snprintf(why, why_cap, "%s closed the connection without a reply", path);
			continue;
		}
		snprintf(why, why_cap, "no reply from %s: %s", path, strerror(e));
		return -1;
	}
}

/* Whether a reply line says {"ok":true, ...} (the agent writes `ok` first). */
static inline int ctl_reply_ok(const char *reply)
{
	while (*reply == ' ' || *reply == '\t')
		reply++;
	return strncmp(reply, "{\"ok\":true", 10) == 0;
}

/*
 * Copies the string value of top-level-looking key `key` from a reply line (backslash escapes
 * reduced to the escaped character; enough for log messages). 0, or -1 when absent.
 */
static inline int ctl_reply_string(const char *reply, const char *key, char *out, size_t cap)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	const char *p = strstr(reply, pat);
	if (!p || cap == 0)
		return -1;
	p += strlen(pat);
	size_t n = 0;
	while (*p && *p != '"' && n + 1 < cap) {
		if (*p == '\\' && p[1])
			p++;
		out[n++] = *p++;
	}
	out[n] = '\0';
	return 0;
}

/* The exit code for a reply's `code` (ctl_code_exits); failure for an unknown or missing one. */
static inline int ctl_reply_exit_code(const char *reply)
{
	char code[64];
	if (ctl_reply_string(reply, "code", code, sizeof(code)) < 0)
		return ctl_reply_ok(reply) ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
	for (size_t i = 0; i < sizeof(ctl_code_exits) / sizeof(ctl_code_exits[0]); i++)
		if (strcmp(ctl_code_exits[i].code, code) == 0)
			return ctl_code_exits[i].exit_code;
	return CTL_EXIT_FAILURE;
}

#endif
