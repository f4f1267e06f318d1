/*
 * qubes-net-uplink: the uplink client of the qubes-net guest agent.
 *
 *   qubes-net-uplink apply|remove IFACE
 *
 * The udev-started uplink unit runs this for every uplink event. While the guest daemon
 * (`qubes-net-guest run`) is up, starting Node per event would cost more than the whole
 * configuration, so this client hands the request to the daemon's control socket
 * ({"op":"apply","iface":"eth0"}, one JSON line), waits for the one-line reply and exits with
 * its exitCode: the same codes as `qubes-net-guest apply` (0 configured or nothing to do,
 * 2 invalid QubesDB value, 3 interface missing or the kernel refused, 4 QubesDB unreachable,
 * 64 usage). When the socket is absent or nobody listens on it (no daemon), or the daemon
 * closes the connection without replying (it is stopping), it execs the Node CLI with the same
 * arguments plus --no-daemon, so the result is the same with or without a daemon. (The CLI's
 * apply/remove would otherwise ask the daemon first themselves; --no-daemon makes it do the
 * work in its own process, since this client already found that no daemon answers: no loop.)
 *
 * No shell is involved anywhere: the CLI is started with execv and an argument array.
 *
 * Environment: QUBES_NET_GUEST_SOCKET (default /run/qubes-net/guest.sock),
 * QUBES_NET_GUEST_CLI (default /usr/bin/qubes-net-guest), QUBES_NET_UPLINK_TIMEOUT (seconds
 * to wait for the reply, 1-3600, default 30).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/qubes-net/guest.sock"
#define DEFAULT_CLI "/usr/bin/qubes-net-guest"
#define DEFAULT_TIMEOUT_S 30
#define MAX_REPLY 8192
#define MAX_TEXT 512

/* The exit codes of `qubes-net-guest apply`. */
#define EXIT_OK 0
#define EXIT_FAILED 3
#define EXIT_USAGE 64

static const char *prog = "qubes-net-uplink";

#define CTL_CLIENT_LOG
#include "ctl-client.h"

/* The daemon's rule for interface names: [A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}. */
static int valid_ifname(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 15)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
		if (!alnum && (i == 0 || (c != '.' && c != '@' && c != '-')))
			return 0;
	}
	return 1;
}

/*
 * No daemon: the CLI does the same work in its own process (--no-daemon: it does not ask the
 * daemon again). Returns only on failure.
 */
static int exec_cli(const char *op, const char *iface)
{
	const char *cli = ctl_exec_cli("QUBES_NET_GUEST_CLI", DEFAULT_CLI, op, iface, "--no-daemon");
	logmsg("%s %s: no guest daemon, and cannot run %s: %s", op, iface, cli, strerror(errno));
	return EXIT_FAILED;
}

/*
 * A minimal reader of the reply: one JSON object whose members are strings, numbers, true,
 * false, null or nested values (skipped). Only top-level members are looked at, so text inside
 * a string value can never be mistaken for a member.
 */
struct reply {
	int has_ok, ok;
	int has_exit, exit_code;
	char result[64];
	char detail[MAX_TEXT];
	char error[MAX_TEXT];
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* Parses a JSON string at p (at the opening quote); copies it (escapes simplified) into out. */
static const char *parse_string(const char *p, char *out, size_t cap)
{
	size_t n = 0;
	if (*p != '"')
		return NULL;
	for (p++; *p && *p != '"'; p++) {
		char c = *p;
		if (c == '\\') {
			p++;
			switch (*p) {
			case '"': case '\\': case '/': c = *p; break;
			case 'n': case 'r': case 't': case 'b': case 'f': c = ' '; break;
			case 'u':
				for (int i = 1; i <= 4; i++)
					if (!p[i])
						return NULL;
				p += 4;
				c = '?';
				break;
			default:
				return NULL;
			}
		} else if ((unsigned char)c < 0x20) {
			return NULL;
		}
		if (out && n + 1 < cap)
			out[n++] = c;
	}
	if (*p != '"')
		return NULL;
	if (out && cap)
		out[n] = '\0';
	return p + 1;
}

/* Skips one JSON value of any kind; returns the position after it, or NULL. */
static const char *skip_value(const char *p, int depth)
{
	p = skip_ws(p);
	if (depth > 16)
		return NULL;
	if (*p == '"')
		return parse_string(p, NULL, 0);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		p = skip_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				p = parse_string(skip_ws(p), NULL, 0);
				if (!p)
					return NULL;
				p = skip_ws(p);
				if (*p++ != ':')
					return NULL;
			}
			p = skip_value(p, depth + 1);
			if (!p)
				return NULL;
			p = skip_ws(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	}
	const char *start = p;
	while (*p && strchr("-+.eE0123456789truefalsn", *p))
		p++;
	return p > start ? p : NULL;
}

static int parse_reply(const char *text, struct reply *r)
{
	memset(r, 0, sizeof(*r));
	const char *p = skip_ws(text);
	if (*p++ != '{')
		return -1;
	p = skip_ws(p);
	if (*p == '}')
		return 0;
	for (;;) {
		char key[32];
		p = parse_string(skip_ws(p), key, sizeof(key));
		if (!p)
			return -1;
		p = skip_ws(p);
		if (*p++ != ':')
			return -1;
		p = skip_ws(p);
		if (strcmp(key, "ok") == 0 && (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0)) {
			r->has_ok = 1;
			r->ok = *p == 't';
			p += r->ok ? 4 : 5;
		} else if (strcmp(key, "exitCode") == 0 && *p >= '0' && *p <= '9') {
			char *end;
			long v = strtol(p, &end, 10);
			if (v < 0 || v > 255)
				return -1;
			r->has_exit = 1;
			r->exit_code = (int)v;
			p = end;
		} else if (strcmp(key, "result") == 0 && *p == '"') {
			p = parse_string(p, r->result, sizeof(r->result));
		} else if (strcmp(key, "detail") == 0 && *p == '"') {
			p = parse_string(p, r->detail, sizeof(r->detail));
		} else if (strcmp(key, "error") == 0 && *p == '"') {
			p = parse_string(p, r->error, sizeof(r->error));
		} else {
			p = skip_value(p, 0);
		}
		if (!p)
			return -1;
		p = skip_ws(p);
		if (*p == '}')
			return 0;
		if (*p++ != ',')
			return -1;
	}
}

static long timeout_ms(void)
{
	const char *t = getenv("QUBES_NET_UPLINK_TIMEOUT");
	if (!t || !*t)
		return DEFAULT_TIMEOUT_S * 1000L;
	char *end;
	errno = 0;
	long v = strtol(t, &end, 10);
	if (errno || *end || v < 1 || v > 3600) {
		logmsg("QUBES_NET_UPLINK_TIMEOUT must be 1-3600 seconds; using %d", DEFAULT_TIMEOUT_S);
		return DEFAULT_TIMEOUT_S * 1000L;
	}
	return v * 1000L;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc != 3 || (strcmp(argv[1], "apply") != 0 && strcmp(argv[1], "remove") != 0)) {
		logmsg("usage: %s apply|remove IFACE", prog);
		return EXIT_USAGE;
	}
	const char *op = argv[1];
	const char *iface = argv[2];
	if (!valid_ifname(iface)) {
		logmsg("not an interface name (want [A-Za-z0-9_][A-Za-z0-9_.@-]{0,14})");
		return EXIT_USAGE;
	}

	const char *sock_path = ctl_env_or("QUBES_NET_GUEST_SOCKET", DEFAULT_SOCKET);
	int fd = ctl_connect(sock_path);
	if (fd < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			return exec_cli(op, iface);
		logmsg("%s %s: cannot connect to %s: %s", op, iface, sock_path, strerror(errno));
		return EXIT_FAILED;
	}

	/* iface passed the check above: no character in it needs escaping. */
	char request[64];
	int len = snprintf(request, sizeof(request), "{\"op\":\"%s\",\"iface\":\"%s\"}\n", op, iface);
	if (len < 0 || (size_t)len >= sizeof(request) || ctl_send_all(fd, request, (size_t)len) < 0) {
		int e = errno;
		close(fd);
		if (e == EPIPE || e == ECONNRESET)
			return exec_cli(op, iface); /* the daemon went away between connect and send */
		logmsg("%s %s: cannot send to %s: %s", op, iface, sock_path, strerror(e));
		return EXIT_FAILED;
	}

	static char text[MAX_REPLY];
	ssize_t n = ctl_read_line(fd, text, sizeof(text), timeout_ms());
	int read_errno = errno;
	close(fd);
	if (n == 0)
		return exec_cli(op, iface); /* closed without a reply: the daemon is stopping */
	if (n < 0) {
		logmsg("%s %s: no reply from %s: %s", op, iface, sock_path, strerror(read_errno));
		return EXIT_FAILED;
	}

	struct reply r;
	if (parse_reply(text, &r) < 0 || !r.has_ok) {
		logmsg("%s %s: unreadable reply from %s", op, iface, sock_path);
		return EXIT_FAILED;
	}
	if (!r.ok) {
		logmsg("%s %s: the daemon refused: %s", op, iface, r.error[0] ? r.error : "no reason given");
		return r.has_exit ? r.exit_code : EXIT_FAILED;
	}
	if (!r.has_exit) {
		logmsg("%s %s: reply without exitCode from %s", op, iface, sock_path);
		return EXIT_FAILED;
	}
	if (r.exit_code != EXIT_OK)
		logmsg("%s %s: %s: %s", op, iface, r.result[0] ? r.result : "failed", r.detail);
	return r.exit_code;
}
