/*
 * qubes-net-hotplug: the per-vif Xen hotplug client of the qubes-net network agent.
 *
 * xl devd runs the vif script (vif-route-qubes, which execs this program) with the
 * environment variables `vif` and `XENBUS_PATH` and the command (online, offline, add,
 * remove) as the first argument. This client reads the vif's addresses, MAC and type from
 * xenstore with xenstore-read (fork/exec with argument arrays, never a shell), sends one JSON
 * request to the agent's control socket (protocol: ctl-protocol.h, generated from the
 * TypeScript one), waits for the reply and, for online, writes `hotplug-status connected` like
 * Xen's hotplug helpers do on success. It exits 0 only when the agent reports the vif
 * configured (online) or cleaned up (offline); otherwise with the exit code of the reply's code.
 *
 * The socket stays bound while the agent is down (systemd's .socket unit, or qubes-net-watch
 * --activate in the lab): connecting starts the agent, and this client waits. A refused
 * connection (an agent restarting without an activator) and a connection closed without a
 * reply (an agent killed mid-request) are retried until the deadline: online and offline are
 * idempotent, and the next instance rebuilds its state before answering. Only when the socket
 * file does not exist at all does it exec `qubes-net-agent hotplug <command>`
 * (QUBES_NET_AGENT_CLI), which does the work in-process.
 *
 * Environment: vif, XENBUS_PATH, QUBES_NET_AGENT_SOCKET (default CTL_DEFAULT_AGENT_SOCKET),
 * QUBES_NET_AGENT_CLI (default /usr/bin/qubes-net-agent), QUBES_NET_HOTPLUG_TIMEOUT (seconds
 * to wait for the agent's reply, retries included, default 120).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CLI "/usr/bin/qubes-net-agent"
#define MAX_VALUE 4096
#define MAX_REQUEST CTL_MAX_REQUEST
#define MAX_REPLY CTL_MAX_REPLY
#define MAX_IPS 32

static const char *prog = "qubes-net-hotplug";

#include "ctl-protocol.h"
#define CTL_CLIENT_LOG
#include "ctl-client.h"

/* A growable text buffer; on overflow it marks itself full and stops growing. */
struct buf {
	char data[MAX_REQUEST];
	size_t len;
	int overflow;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->overflow || b->len + n >= sizeof(b->data)) {
		b->overflow = 1;
		return;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

/* Appends `s` as a JSON string literal; every byte below 0x20, '"' and '\\' is escaped. */
static void buf_json(struct buf *b, const char *s)
{
	char esc[8];
	buf_add(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			buf_add(b, esc, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			buf_add(b, esc, 6);
		} else {
			buf_add(b, (const char *)p, 1);
		}
	}
	buf_add(b, "\"", 1);
}

/* A child process whose stdout we collect (for xenstore-read). */
struct child {
	pid_t pid;
	int fd;
	char out[MAX_VALUE + 1];
	size_t len;
	int status;
};

static int spawn(struct child *c, char *const argv[], int capture)
{
	int pipefd[2] = { -1, -1 };
	c->pid = -1;
	c->fd = -1;
	c->len = 0;
	c->out[0] = '\0';
	c->status = -1;
	if (capture && pipe2(pipefd, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		if (capture) {
			close(pipefd[0]);
			close(pipefd[1]);
		}
		return -1;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, STDIN_FILENO);
			if (!capture)
				dup2(devnull, STDOUT_FILENO);
		}
		if (capture)
			dup2(pipefd[1], STDOUT_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	c->pid = pid;
	if (capture) {
		close(pipefd[1]);
		c->fd = pipefd[0];
	}
	return 0;
}

static void finish(struct child *c)
{
	if (c->fd >= 0) {
		for (;;) {
			char tmp[1024];
			ssize_t n = read(c->fd, tmp, sizeof(tmp));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			size_t room = MAX_VALUE - c->len;
			size_t take = (size_t)n < room ? (size_t)n : room;
			memcpy(c->out + c->len, tmp, take);
			c->len += take;
		}
		close(c->fd);
		c->fd = -1;
		c->out[c->len] = '\0';
		while (c->len > 0 && (c->out[c->len - 1] == '\n' || c->out[c->len - 1] == '\r'))
			c->out[--c->len] = '\0';
	}
	if (c->pid > 0) {
		while (waitpid(c->pid, &c->status, 0) < 0 && errno == EINTR)
			;
		c->pid = -1;
	}
}

static int succeeded(const struct child *c)
{
	return WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0;
}

/* xenstore-write path value [path value]; failures are only logged. */
static void xs_write(const char *p1, const char *v1, const char *p2, const char *v2)
{
	char *argv[6] = { "xenstore-write", (char *)p1, (char *)v1, NULL, NULL, NULL };
	if (p2) {
		argv[3] = (char *)p2;
		argv[4] = (char *)v2;
	}
	struct child c;
	if (spawn(&c, argv, 0) < 0) {
		logmsg("cannot run xenstore-write: %s", strerror(errno));
		return;
	}
	finish(&c);
	if (!succeeded(&c))
		logmsg("xenstore-write %s failed", p1);
}

static char path_buf[4][512];

static const char *xs_path(int slot, const char *base, const char *leaf)
{
	snprintf(path_buf[slot], sizeof(path_buf[slot]), "%s/%s", base, leaf);
	return path_buf[slot];
}

/* Records a failed online in xenstore like Xen's `fatal`, then exits with `code`. */
static void fail_with(const char *command, const char *xenbus, const char *msg, int code)
{
	logmsg("%s failed: %s", command, msg);
	if (xenbus && strcmp(command, "online") == 0)
		xs_write(xs_path(2, xenbus, "hotplug-error"), msg, xs_path(3, xenbus, "hotplug-status"), "error");
	exit(code);
}

static void fail(const char *command, const char *xenbus, const char *msg)
{
	fail_with(command, xenbus, msg, CTL_EXIT_FAILURE);
}

static void exec_cli(const char *command, const char *xenbus)
{
	/* QUBES_NET_DRIVER_CLI: the name before the agent hosted the driver, honoured while harnesses still set it. */
	const char *env = getenv("QUBES_NET_AGENT_CLI") || !getenv("QUBES_NET_DRIVER_CLI") ? "QUBES_NET_AGENT_CLI" : "QUBES_NET_DRIVER_CLI";
	const char *cli = ctl_exec_cli(env, DEFAULT_CLI, "hotplug", command, NULL);
	char msg[600];
	snprintf(msg, sizeof(msg), "no agent socket, and cannot run %s: %s", cli, strerror(errno));
	fail(command, xenbus, msg);
}

static int valid_env_value(const char *v, size_t max)
{
	return v && *v && strlen(v) <= max;
}

int main(int argc, char **argv)
{
	const char *command = argc > 1 ? argv[1] : getenv("command");
	const char *vif = getenv("vif");
	const char *xenbus = getenv("XENBUS_PATH");

	signal(SIGPIPE, SIG_IGN);
	if (!command) {
		logmsg("usage: %s online|offline|add|remove (env vif, XENBUS_PATH)", prog);
		return 2;
	}
	/* Like Xen's vif-common: vif devices need nothing on add/remove. */
	if (strcmp(command, "add") == 0 || strcmp(command, "remove") == 0)
		return 0;
	if (strcmp(command, "online") != 0 && strcmp(command, "offline") != 0) {
		logmsg("unknown command (want online|offline|add|remove)");
		return 2;
	}
	if (xenbus && !valid_env_value(xenbus, 400))
		xenbus = NULL;
	if (!valid_env_value(vif, 64))
		fail(command, xenbus, "environment variable vif is missing or too long");
	if (!xenbus && strcmp(command, "online") == 0)
		fail(command, NULL, "environment variable XENBUS_PATH is missing");

	/* No socket file at all: no agent is installed to answer; the CLI does everything (including xenstore). */
	const char *sock_path = ctl_env_or("QUBES_NET_AGENT_SOCKET", CTL_DEFAULT_AGENT_SOCKET);
	if (access(sock_path, F_OK) < 0 && errno == ENOENT)
		exec_cli(command, xenbus);

	/*
	 * ip, mac and type with one xenstore-read (it takes several paths and prints one value
	 * per line). If that fails (a key is missing: the tool then fails as a whole) or a value
	 * spans lines, each key is read on its own, in parallel.
	 */
	static const char *leaves[3] = { "ip", "mac", "type" };
	static struct child kids[3];
	static char split[MAX_VALUE + 1];
	const char *values[3] = { "", "", "" };
	if (xenbus) {
		char *xargv[] = { "xenstore-read", (char *)xs_path(0, xenbus, "ip"), (char *)xs_path(1, xenbus, "mac"),
				  (char *)xs_path(2, xenbus, "type"), NULL };
		int have = 0;
		if (spawn(&kids[0], xargv, 1) == 0) {
			finish(&kids[0]);
			if (succeeded(&kids[0]) && kids[0].len < MAX_VALUE) {
				memcpy(split, kids[0].out, kids[0].len + 1);
				char *p1 = split, *nl1 = strchr(p1, '\n');
				char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
				if (nl1 && nl2 && !strchr(nl2 + 1, '\n')) {
					*nl1 = '\0';
					*nl2 = '\0';
					values[0] = p1;
					values[1] = nl1 + 1;
					values[2] = nl2 + 1;
					have = 1;
				}
			}
		}
		if (!have) {
			for (int i = 0; i < 3; i++) {
				char *one[] = { "xenstore-read", (char *)xs_path(i, xenbus, leaves[i]), NULL };
				if (spawn(&kids[i], one, 1) < 0)
					kids[i].pid = -1;
			}
			for (int i = 0; i < 3; i++) {
				values[i] = "";
				if (kids[i].pid < 0)
					continue;
				finish(&kids[i]);
				if (succeeded(&kids[i]))
					values[i] = kids[i].out;
			}
		}
	}

	static struct buf req;
	buf_str(&req, "{\"op\":");
	buf_json(&req, command);
	buf_str(&req, ",\"vif\":");
	buf_json(&req, vif);
	buf_str(&req, ",\"ips\":[");
	/* xenstore's ip is space-separated (IPv4 first, then IPv6). */
	char ips[MAX_VALUE + 1];
	snprintf(ips, sizeof(ips), "%s", values[0]);
	int count = 0;
	for (char *save = NULL, *tok = strtok_r(ips, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (count++)
			buf_str(&req, ",");
		if (count > MAX_IPS)
			fail(command, xenbus, "too many addresses in xenstore ip");
		buf_json(&req, tok);
	}
	buf_str(&req, "],\"mac\":");
	buf_json(&req, values[1]);
	buf_str(&req, ",\"type\":");
	buf_json(&req, values[2]);
	if (xenbus) {
		buf_str(&req, ",\"xenbusPath\":");
		buf_json(&req, xenbus);
	}
	buf_str(&req, "}\n");
	if (req.overflow)
		fail(command, xenbus, "request too large");

	int timeout_s = 120;
	const char *t = getenv("QUBES_NET_HOTPLUG_TIMEOUT");
	if (t && atoi(t) > 0)
		timeout_s = atoi(t);
	static char reply[MAX_REPLY];
	char why[600];
	int exists = 1;
	if (ctl_request_retrying(sock_path, req.data, req.len, reply, sizeof(reply), timeout_s * 1000L, why, sizeof(why), &exists) < 0) {
		if (!exists)
			exec_cli(command, xenbus); /* the socket file went away meanwhile: no agent any more */
		fail_with(command, xenbus, why, CTL_EXIT_NO_REPLY);
	}

	if (!ctl_reply_ok(reply)) {
		char msg[1024];
		if (ctl_reply_string(reply, "message", msg, sizeof(msg)) < 0 && ctl_reply_string(reply, "error", msg, sizeof(msg)) < 0)
			snprintf(msg, sizeof(msg), "the agent refused the event");
		fail_with(command, xenbus, msg, ctl_reply_exit_code(reply));
	}
	if (strcmp(command, "online") == 0)
		xs_write(xs_path(2, xenbus, "hotplug-status"), "connected", NULL, NULL);
	return 0;
}
