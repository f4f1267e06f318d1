/*
 * qubes-net-watch: the small resident watcher of a qube (docs/runtime-shape.md). It follows
 * QubesDB keys, files and network links, and on a change runs a one-shot command, pokes a
 * socket, or socket-activates an agent. It writes nothing itself, so a client qube keeps no
 * Node process resident.
 *
 *   qubes-net-watch [--qdb-dir DIR] GROUP [--group GROUP]...
 *   GROUP: [--debounce-ms N] [--run-at-start]
 *       [--qdb PATH]... [--file PATH]... [--link IFACE]... [--wake-file PATH]
 *       (--run -- CMD ARGS... | --notify SOCKET [--request JSON] | --activate SOCKET -- CMD ARGS...)
 *
 * A group is a set of triggers with its one action. One process carries every group of a qube
 * (a network qube's uplink and its agent), so it pays for one libc, one QubesDB connection, one
 * inotify and one netlink socket instead of two of each. A command (--run, --activate) ends at
 * the next argument that is exactly "--group", which therefore cannot be one of its arguments.
 * Groups share nothing but those sockets: each debounces, runs and retries on its own.
 *
 * Triggers are debounced (quiet time --debounce-ms, capped so that a steady stream still gets
 * through); the action never runs twice at once, and triggers that come while it runs give
 * exactly one more run after it. QubesDB is reached through libqubesdb (ours is compiled in:
 * it re-registers the watches after it reconnects); when the daemon goes away the watcher
 * reconnects with back-off and then triggers once, since anything may have changed meanwhile.
 * Files are watched through their directory (inotify) filtered by name, so a rename over the
 * file or a replaced symlink is seen, and a directory that does not exist yet is retried.
 * Links are followed on rtnetlink: a trigger when the interface appears, disappears, gets a
 * new index or is taken down; not when it is brought up (which is what the action itself does).
 *
 * Everything read from outside (QubesDB event paths, file contents, netlink messages, the
 * agent's reply) is bounded and validated; children get argument arrays, never a shell.
 * Logs: one JSON line per event on stderr (journald under systemd).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <qubesdb-client.h>

#define MAX_WATCHES 64
#define MAX_REQUEST 4096
#define MAX_REPLY 4096
#define DEFAULT_DEBOUNCE_MS 100
#define NOTIFY_TIMEOUT_MS 120000
#define RETRY_MIN_MS 250
#define RETRY_MAX_MS 30000
#define KILL_GRACE_MS 10000
#define DEFAULT_REQUEST "{\"op\":\"sync\"}"

/* ---- logging: one JSON line per event ---- */

static void json_str(FILE *f, const char *s, size_t max)
{
	size_t i;
	fputc('"', f);
	for (i = 0; s[i] && i < max; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static long long realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* level: 30 info, 40 warn, 50 error (pino's numbers). Fields: NULL-terminated key, value pairs
 * of strings; a key starting with '#' (always a literal in this file) marks a value that is a
 * number we formatted ourselves, written bare; every other value is escaped. */
/* Whether stderr is the journal stream systemd names in JOURNAL_STREAM ("dev:inode"): then
 * each line starts with a <N> syslog priority, so journald stores warnings and errors at their
 * level instead of all at info. Decided once; a plain terminal or file gets bare JSON lines. */
static int stderr_is_journal(void)
{
	static int known = -1;
	const char *js;
	unsigned long long dev, ino;
	struct stat st;

	if (known >= 0)
		return known;
	known = 0;
	js = getenv("JOURNAL_STREAM");
	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		known = 1;
	return known;
}

/* pino level -> syslog priority: 60 crit, 50 err, 40 warning, 30 info, below debug. */
static int syslog_priority(int level)
{
	return level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

/* The group a line is about (-1: the process), written only when there are several. */
static int log_group = -1;
static int n_groups_for_log;

static void logj(int level, const char *msg, ...)
{
	va_list ap;
	const char *k, *v;
	FILE *f = stderr;

	if (stderr_is_journal())
		fprintf(f, "<%d>", syslog_priority(level));
	fprintf(f, "{\"level\":%d,\"time\":%lld,\"pid\":%d,\"component\":\"qubes-net-watch\",", level, realtime_ms(), (int)getpid());
	if (log_group >= 0 && n_groups_for_log > 1)
		fprintf(f, "\"group\":%d,", log_group);
	fputs("\"msg\":", f);
	json_str(f, msg, 200);
	va_start(ap, msg);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (k[0] == '#') {
			fprintf(f, ",\"%s\":%s", k + 1, v);
		} else {
			fprintf(f, ",\"%s\":", k);
			json_str(f, v ? v : "", 300);
		}
	}
	va_end(ap);
	fputs("}\n", f);
	fflush(f);
}

static const char *num(char *buf, size_t cap, long long v)
{
	snprintf(buf, cap, "%lld", v);
	return buf;
}

static void usage_exit(const char *why)
{
	fprintf(stderr, "qubes-net-watch: %s\n"
		"usage: qubes-net-watch [--qdb-dir DIR] GROUP [--group GROUP]...\n"
		"  GROUP: [--debounce-ms N] [--run-at-start]\n"
		"         [--qdb PATH]... [--file PATH]... [--link IFACE]... [--wake-file PATH]\n"
		"         (--run -- CMD ARGS... | --notify SOCKET [--request JSON] | --activate SOCKET -- CMD ARGS...)\n",
		why);
	exit(64);
}

/* ---- configuration ---- */

#define MAX_GROUPS 8

enum action { ACT_NONE, ACT_RUN, ACT_NOTIFY, ACT_ACTIVATE };

/* Files and links of every group live in one array each (one inotify, one netlink socket);
 * each entry names its group. */
struct file_watch {
	char dir[PATH_MAX];
	char name[NAME_MAX + 1];
	int wd; /* -1: not watched (yet) */
	int is_wake; /* the group's --wake-file: a change is re-read, not a trigger */
	int group;
};

struct link_watch {
	char name[IFNAMSIZ];
	int known;   /* 1 once its state is known (dump or event) */
	int present;
	int ifindex;
	unsigned flags;
	int group;
};

/* One group: its triggers' settings, its action and the action's state. */
struct group {
	int id;
	long debounce_ms;
	int run_at_start;
	char *qdb_paths[MAX_WATCHES];
	int n_qdb;
	const char *wake_file;
	enum action action;
	const char *socket_path;
	const char *request;
	char **cmd; /* NULL-terminated argv of --run / --activate */

	int listen_fd;          /* --activate */
	int pending;            /* a trigger waits for its debounce deadline */
	long long due_at, first_at;
	int again;              /* triggers came while the action ran */
	char reason[96];        /* what the pending run is for (first trigger) */

	pid_t child;            /* --run / --activate */
	long long child_started;
	long respawn_ms;        /* --activate crash back-off */
	long long respawn_at;

	int notify_fd;          /* --notify request in flight */
	long long notify_deadline;
	char notify_buf[MAX_REPLY];
	size_t notify_len, notify_sent;
	char notify_req[MAX_REQUEST + 2];
	long notify_retry_ms;

	long long wake_at;      /* monotonic */
	long long wake_value;   /* the deadline wake_at stands for (epoch ms) */
	long long wake_fired;   /* the last deadline that fired: never fired twice */
};

static struct {
	const char *qdb_dir;
	struct group groups[MAX_GROUPS];
	int n_groups;
	struct file_watch files[MAX_WATCHES];
	int n_files;
	struct link_watch links[MAX_WATCHES];
	int n_links;
	int n_qdb; /* over every group */
} cfg;

/* QubesDB paths: what our libqubesdb accepts for a watch (the daemon's characters). */
static int valid_qdb_path(const char *p)
{
	size_t n = strlen(p), i;
	if (n == 0 || n >= QDB_MAX_PATH || p[0] != '/')
		return 0;
	for (i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '/' || c == '.' || c == ':' || c == '@'))
			return 0;
	}
	return 1;
}

/* Interface names as the agents accept them: [A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}. */
static int valid_ifname(const char *s)
{
	size_t n = strlen(s), i;
	if (n == 0 || n >= IFNAMSIZ)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
		if (!alnum && (i == 0 || (c != '.' && c != '@' && c != '-')))
			return 0;
	}
	return 1;
}

static long parse_ms(const char *s, long max)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > max)
		usage_exit("--debounce-ms wants 0-60000");
	return v;
}

static void add_file(struct group *g, const char *path, int is_wake)
{
	struct file_watch *fw;
	const char *slash;
	size_t dlen;

	if (cfg.n_files == MAX_WATCHES)
		usage_exit("too many --file");
	if (path[0] != '/' || strlen(path) >= PATH_MAX)
		usage_exit("--file wants an absolute path");
	slash = strrchr(path, '/');
	if (!slash[1] || strcmp(slash + 1, ".") == 0 || strcmp(slash + 1, "..") == 0 || strlen(slash + 1) > NAME_MAX)
		usage_exit("--file wants a file name, not a directory");
	fw = &cfg.files[cfg.n_files++];
	dlen = slash == path ? 1 : (size_t)(slash - path);
	memcpy(fw->dir, path, dlen);
	fw->dir[dlen] = '\0';
	strcpy(fw->name, slash + 1);
	fw->wd = -1;
	fw->is_wake = is_wake;
	fw->group = g->id;
}

static struct group *new_group(void)
{
	struct group *g;
	if (cfg.n_groups == MAX_GROUPS)
		usage_exit("too many --group");
	g = &cfg.groups[cfg.n_groups];
	memset(g, 0, sizeof(*g));
	g->id = cfg.n_groups++;
	g->debounce_ms = DEFAULT_DEBOUNCE_MS;
	g->listen_fd = -1;
	g->child = -1;
	g->respawn_at = -1;
	g->notify_fd = -1;
	g->wake_at = -1;
	g->wake_value = -1;
	g->wake_fired = -1;
	return g;
}

static void finish_group(struct group *g)
{
	if (g->action == ACT_NONE)
		usage_exit("each group needs exactly one of --run, --notify, --activate");
	/* The agent writes its wake file as it exits, which --notify does not see: watch it. */
	if (g->wake_file)
		add_file(g, g->wake_file, 1);
}

static void parse_args(int argc, char **argv)
{
	int i;
	struct group *g = new_group();

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			usage_exit("follows QubesDB keys, files and links; acts on a change");
		if (strcmp(a, "--group") == 0) {
			finish_group(g);
			g = new_group();
			continue;
		}
		if (strcmp(a, "--run-at-start") == 0) {
			g->run_at_start = 1;
			continue;
		}
		if (strcmp(a, "--run") == 0 || strcmp(a, "--activate") == 0) {
			int k;
			if (g->action != ACT_NONE)
				usage_exit("exactly one of --run, --notify, --activate per group");
			if (a[2] == 'a') {
				if (!v || !*v)
					usage_exit("--activate needs a socket path");
				g->action = ACT_ACTIVATE;
				g->socket_path = v;
				i++;
			} else {
				g->action = ACT_RUN;
			}
			if (i + 1 >= argc || strcmp(argv[i + 1], "--") != 0 || i + 2 >= argc || strcmp(argv[i + 2], "--group") == 0)
				usage_exit("--run and --activate end with -- CMD ARGS...");
			g->cmd = &argv[i + 2];
			/* The command takes the arguments up to the next "--group". */
			for (k = i + 2; k < argc && strcmp(argv[k], "--group") != 0; k++)
				;
			if (k < argc) {
				argv[k] = NULL; /* ends this command's argv */
				finish_group(g);
				g = new_group();
			}
			i = k;
			continue;
		}
		if (!v)
			usage_exit("an option needs a value");
		if (strcmp(a, "--qdb-dir") == 0) {
			cfg.qdb_dir = v; /* one QubesDB connection for every group */
		} else if (strcmp(a, "--debounce-ms") == 0) {
			g->debounce_ms = parse_ms(v, 60000);
		} else if (strcmp(a, "--qdb") == 0) {
			if (g->n_qdb == MAX_WATCHES)
				usage_exit("too many --qdb");
			if (!valid_qdb_path(v))
				usage_exit("--qdb wants a QubesDB path: /[A-Za-z0-9_/.:@-]*, under 64 characters");
			g->qdb_paths[g->n_qdb++] = (char *)v;
			cfg.n_qdb++;
		} else if (strcmp(a, "--file") == 0) {
			for (const char *c = v; *c; c++)
				if ((unsigned char)*c < 0x20)
					usage_exit("--file path with a control character");
			add_file(g, v, 0);
		} else if (strcmp(a, "--link") == 0) {
			if (cfg.n_links == MAX_WATCHES)
				usage_exit("too many --link");
			if (!valid_ifname(v))
				usage_exit("--link wants an interface name");
			strcpy(cfg.links[cfg.n_links].name, v);
			cfg.links[cfg.n_links++].group = g->id;
		} else if (strcmp(a, "--wake-file") == 0) {
			if (v[0] != '/')
				usage_exit("--wake-file wants an absolute path");
			g->wake_file = v;
		} else if (strcmp(a, "--notify") == 0) {
			if (g->action != ACT_NONE)
				usage_exit("exactly one of --run, --notify, --activate per group");
			g->action = ACT_NOTIFY;
			g->socket_path = v;
		} else if (strcmp(a, "--request") == 0) {
			size_t n = strlen(v), k;
			if (n < 2 || n >= MAX_REQUEST || v[0] != '{' || v[n - 1] != '}')
				usage_exit("--request wants one JSON object");
			for (k = 0; k < n; k++)
				if ((unsigned char)v[k] < 0x20)
					usage_exit("--request must be one line");
			g->request = v;
		} else {
			usage_exit("unknown option");
		}
		i++;
	}
	/* A trailing "--group" after a command leaves an empty last group: that is a mistake too. */
	finish_group(g);
	for (i = 0; i < cfg.n_groups; i++) {
		int j;
		for (j = 0; j < i; j++)
			if (cfg.groups[i].action == ACT_ACTIVATE && cfg.groups[j].action == ACT_ACTIVATE &&
			    strcmp(cfg.groups[i].socket_path, cfg.groups[j].socket_path) == 0)
				usage_exit("two groups cannot --activate the same socket");
	}
	n_groups_for_log = cfg.n_groups;
}

/* ---- state shared by every group ---- */

static int sig_fd = -1, ino_fd = -1, nl_fd = -1;
static qdb_handle_t qdb;
static int qdb_fd = -1;            /* polled when connected */
static long long qdb_retry_at = -1; /* monotonic ms of the next reconnect attempt */
static long qdb_retry_ms = RETRY_MIN_MS;
static long long file_retry_at = -1;

static int stopping;
static long long stop_deadline;

/* Logs about group g (its index on each line when there are several groups). */
#define GLOG(g, ...) do { log_group = (g)->id; logj(__VA_ARGS__); log_group = -1; } while (0)

static int busy(const struct group *g)
{
	if (g->action == ACT_RUN)
		return g->child > 0;
	return g->notify_fd >= 0;
}

static void trigger(struct group *g, const char *source, const char *detail)
{
	long long now = mono_ms();
	GLOG(g, 30, "trigger", "source", source, "detail", detail, NULL);
	if (stopping)
		return;
	if (busy(g)) {
		g->again = 1;
		return;
	}
	if (!g->pending) {
		g->pending = 1;
		g->first_at = now;
		snprintf(g->reason, sizeof(g->reason), "%s", source);
	}
	g->due_at = now + g->debounce_ms;
	/* A steady stream of changes must not postpone the run forever. */
	{
		long cap = g->debounce_ms * 10 > 1000 ? g->debounce_ms * 10 : 1000;
		if (g->due_at > g->first_at + cap)
			g->due_at = g->first_at + cap;
	}
}

static void trigger_all(const char *source, const char *detail)
{
	int i;
	for (i = 0; i < cfg.n_groups; i++)
		trigger(&cfg.groups[i], source, detail);
}

/* ---- the wake file ---- */

static void read_wake_file(struct group *g)
{
	char buf[32];
	ssize_t n;
	int fd;
	long long v = 0;
	char nb[32];

	g->wake_at = -1;
	if (!g->wake_file)
		return;
	fd = open(g->wake_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno != ENOENT)
			GLOG(g, 40, "wake file unreadable", "path", g->wake_file, "error", strerror(errno), NULL);
		return;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	if (n == 0)
		return;
	if (n > 15) {
		GLOG(g, 40, "wake file invalid", "path", g->wake_file, "value", buf, NULL);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] < '0' || buf[i] > '9') {
			GLOG(g, 40, "wake file invalid", "path", g->wake_file, "value", buf, NULL);
			return;
		}
		v = v * 10 + (buf[i] - '0');
	}
	if (v == g->wake_fired)
		return;
	{
		long long delta = v - realtime_ms();
		g->wake_at = mono_ms() + (delta > 0 ? delta : 0);
		if (v != g->wake_value)
			GLOG(g, 30, "wake deadline", "#at", num(nb, sizeof(nb), v), NULL);
		g->wake_value = v;
	}
}

/* ---- QubesDB: one connection, every group's watches ---- */

static void qdb_lost(void)
{
	qdb_fd = -1;
	qdb_retry_at = mono_ms() + qdb_retry_ms;
	qdb_retry_ms = qdb_retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : qdb_retry_ms * 2;
}

/* Every group that watches QubesDB: after a reconnect anything may have changed. */
static void trigger_qdb_groups(const char *detail)
{
	int i;
	for (i = 0; i < cfg.n_groups; i++)
		if (cfg.groups[i].n_qdb)
			trigger(&cfg.groups[i], "qubesdb", detail);
}

/* Whether path p was registered already (by this or an earlier group). */
static int qdb_path_seen(int gi, int pi)
{
	const char *p = cfg.groups[gi].qdb_paths[pi];
	int i, j;
	for (i = 0; i <= gi; i++)
		for (j = 0; j < (i == gi ? pi : cfg.groups[i].n_qdb); j++)
			if (strcmp(cfg.groups[i].qdb_paths[j], p) == 0)
				return 1;
	return 0;
}

/* Opens QubesDB and registers the watches (first time), or reconnects (libqubesdb then
 * registers them again). Triggers after a reconnect: changes may have been missed. */
static void qdb_connect(int first)
{
	int gi, pi, count = 0;
	char nb[32];

	if (!qdb) {
		qdb = qdb_open(NULL);
		if (!qdb) {
			if (first || qdb_retry_ms == RETRY_MIN_MS)
				logj(40, "qubesdb not reachable, retrying", "error", strerror(errno), NULL);
			qdb_lost();
			return;
		}
		for (gi = 0; gi < cfg.n_groups; gi++) {
			for (pi = 0; pi < cfg.groups[gi].n_qdb; pi++) {
				char *p = cfg.groups[gi].qdb_paths[pi];
				if (qdb_path_seen(gi, pi))
					continue;
				if (!qdb_watch(qdb, p)) {
					logj(40, "qubesdb watch failed, retrying", "path", p, "error", strerror(errno), NULL);
					qdb_close(qdb);
					qdb = NULL;
					qdb_lost();
					return;
				}
				count++;
			}
		}
		qdb_fd = qdb_watch_fd(qdb);
		logj(30, "qubesdb watches registered", "#count", num(nb, sizeof(nb), count), NULL);
		if (!first)
			trigger_qdb_groups("reconnected");
	} else {
		qdb_fd = qdb_watch_fd(qdb);
		if (qdb_fd < 0) {
			qdb_lost();
			return;
		}
		logj(30, "qubesdb reconnected", NULL);
		trigger_qdb_groups("reconnected");
	}
	qdb_retry_at = -1;
	qdb_retry_ms = RETRY_MIN_MS;
}

/* The daemon's matching: a watch on "X" fires for exactly "X", one on "X/" for anything under
 * it; an event for a whole directory ("X/" removed) also concerns exact watches inside it. */
static int qdb_watch_matches(const char *watch, const char *path)
{
	size_t wn = strlen(watch), pn = strlen(path);
	if (wn && watch[wn - 1] == '/')
		return strncmp(path, watch, wn) == 0;
	if (strcmp(path, watch) == 0)
		return 1;
	return pn && path[pn - 1] == '/' && strncmp(watch, path, pn) == 0;
}

static void qdb_readable(void)
{
	char *path = qdb_read_watch(qdb);
	int gi, pi, hit = 0;
	const char *detail;

	if (!path) {
		logj(40, "qubesdb connection lost, reconnecting", "error", strerror(errno), NULL);
		qdb_lost();
		return;
	}
	/* The path comes from the daemon: only a well-formed one is logged as it is, and one we
	 * cannot place (malformed, or matched in a way we do not know) wakes every QubesDB group. */
	detail = valid_qdb_path(path) ? path : "(invalid path)";
	if (detail == path) {
		for (gi = 0; gi < cfg.n_groups; gi++) {
			struct group *g = &cfg.groups[gi];
			for (pi = 0; pi < g->n_qdb; pi++) {
				if (qdb_watch_matches(g->qdb_paths[pi], path)) {
					trigger(g, "qubesdb", detail);
					hit = 1;
					break;
				}
			}
		}
	}
	if (!hit)
		trigger_qdb_groups(detail);
	free(path);
}

/* ---- files ---- */

static void file_watch_add(struct file_watch *fw)
{
	fw->wd = inotify_add_watch(ino_fd, fw->dir,
				   IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
				   IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
	if (fw->wd < 0 && file_retry_at < 0)
		file_retry_at = mono_ms() + 2000;
}

static void file_changed(struct file_watch *fw)
{
	struct group *g = &cfg.groups[fw->group];
	if (fw->is_wake)
		read_wake_file(g);
	else
		trigger(g, "file", fw->name);
}

static void files_retry(void)
{
	int i;
	file_retry_at = -1;
	for (i = 0; i < cfg.n_files; i++) {
		if (cfg.files[i].wd >= 0)
			continue;
		file_watch_add(&cfg.files[i]);
		if (cfg.files[i].wd < 0)
			continue;
		file_changed(&cfg.files[i]); /* the directory (and maybe the file) appeared */
	}
}

static void ino_readable(void)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(ino_fd, buf, sizeof(buf));
	char *p;
	int i;

	if (n <= 0)
		return;
	for (p = buf; p < buf + n;) {
		struct inotify_event *ev = (struct inotify_event *)p;
		int removed = 0;
		p += sizeof(*ev) + ev->len;
		for (i = 0; i < cfg.n_files; i++) {
			struct file_watch *fw = &cfg.files[i];
			if (fw->wd != ev->wd)
				continue;
			if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
				/* The directory went: watch it again when it is back. Two files of
				 * one directory share the watch descriptor, removed once. */
				if ((ev->mask & IN_MOVE_SELF) && !removed) {
					inotify_rm_watch(ino_fd, fw->wd);
					removed = 1;
				}
				fw->wd = -1;
				if (file_retry_at < 0)
					file_retry_at = mono_ms() + 2000;
				file_changed(fw);
			} else if (ev->len && strncmp(ev->name, fw->name, ev->len) == 0) {
				file_changed(fw);
			}
		}
		if (ev->mask & IN_Q_OVERFLOW) {
			for (i = 0; i < cfg.n_groups; i++) {
				int j, has = 0;
				for (j = 0; j < cfg.n_files; j++)
					if (cfg.files[j].group == i && !cfg.files[j].is_wake)
						has = 1;
				read_wake_file(&cfg.groups[i]);
				if (has)
					trigger(&cfg.groups[i], "file", "inotify overflow");
			}
		}
	}
}

/* ---- links ---- */

/* One RTM_NEWLINK / RTM_DELLINK; dump: from the start-up listing (no trigger). Every group's
 * entry for that name follows it (each group its own state). */
static void link_message(const struct nlmsghdr *nh, int dump)
{
	const struct ifinfomsg *ifi = NLMSG_DATA(nh);
	const struct rtattr *rta;
	int len = (int)nh->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*ifi));
	char name[IFNAMSIZ] = "";
	int i, present, changed;

	if (len < 0)
		return;
	for (rta = IFLA_RTA(ifi); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
		if (rta->rta_type == IFLA_IFNAME) {
			size_t n = RTA_PAYLOAD(rta);
			if (n == 0 || n > IFNAMSIZ)
				return;
			memcpy(name, RTA_DATA(rta), n);
			name[IFNAMSIZ - 1] = '\0';
		}
	}
	if (!name[0])
		return;
	present = nh->nlmsg_type == RTM_NEWLINK;
	for (i = 0; i < cfg.n_links; i++) {
		struct link_watch *lw = &cfg.links[i];
		if (strcmp(lw->name, name) != 0)
			continue;
		changed = !lw->known || present != lw->present || (present && ifi->ifi_index != lw->ifindex) ||
			  (present && (lw->flags & IFF_UP) && !(ifi->ifi_flags & IFF_UP));
		if (!dump && changed) {
			const char *what = !present ? "removed" : (!lw->known || !lw->present || ifi->ifi_index != lw->ifindex) ? "appeared" : "down";
			char detail[IFNAMSIZ + 16];
			snprintf(detail, sizeof(detail), "%s %s", name, what);
			trigger(&cfg.groups[lw->group], "link", detail);
		}
		lw->known = 1;
		lw->present = present;
		lw->ifindex = ifi->ifi_index;
		lw->flags = ifi->ifi_flags;
	}
}

/* Reads what is queued on the netlink socket; returns 1 when a dump's NLMSG_DONE was seen. */
static int nl_read(int dump)
{
	char buf[16384] __attribute__((aligned(4)));
	int done = 0;

	for (;;) {
		ssize_t n = recv(nl_fd, buf, sizeof(buf), MSG_DONTWAIT);
		struct nlmsghdr *nh;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {
				/* Events were dropped: we cannot know what changed. */
				int i;
				for (i = 0; i < cfg.n_links; i++) {
					if (cfg.links[i].known)
						trigger(&cfg.groups[cfg.links[i].group], "link", "netlink overrun");
					cfg.links[i].known = 0;
				}
				continue;
			}
			return done;
		}
		if (n == 0)
			return done;
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (unsigned)n); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_DONE || nh->nlmsg_type == NLMSG_ERROR)
				done = 1;
			else if (nh->nlmsg_type == RTM_NEWLINK || nh->nlmsg_type == RTM_DELLINK)
				link_message(nh, dump && nh->nlmsg_seq == 1);
		}
		if (dump && done)
			return 1;
	}
}

static void nl_open(void)
{
	struct sockaddr_nl sa;
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
	} req;
	struct pollfd p;
	long long until;
	int i;

	nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl_fd < 0) {
		logj(50, "netlink socket failed", "error", strerror(errno), NULL);
		exit(1);
	}
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	sa.nl_groups = RTMGRP_LINK;
	if (bind(nl_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		logj(50, "netlink bind failed", "error", strerror(errno), NULL);
		exit(1);
	}
	/* Learn the current state first, so that only real changes trigger. */
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = RTM_GETLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq = 1;
	req.ifi.ifi_family = AF_UNSPEC;
	if (send(nl_fd, &req, sizeof(req), 0) < 0)
		return;
	until = mono_ms() + 5000;
	while (mono_ms() < until) {
		p.fd = nl_fd;
		p.events = POLLIN;
		if (poll(&p, 1, 500) > 0 && nl_read(1))
			break;
	}
	for (i = 0; i < cfg.n_links; i++)
		if (!cfg.links[i].known) {
			cfg.links[i].known = 1; /* absent at start */
			cfg.links[i].present = 0;
		}
}

/* ---- children ---- */

static void exec_child(char **argv)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	execvp(argv[0], argv);
	fprintf(stderr, "qubes-net-watch: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static void spawn_child(struct group *g, const char *why)
{
	char nb[32];
	pid_t pid = fork();

	if (pid < 0) {
		GLOG(g, 50, "fork failed", "error", strerror(errno), NULL);
		return;
	}
	if (pid == 0) {
		if (g->action == ACT_ACTIVATE) {
			char pidbuf[24];
			if (g->listen_fd != 3) {
				if (dup2(g->listen_fd, 3) < 0)
					_exit(127);
			} else {
				fcntl(3, F_SETFD, 0);
			}
			snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
			setenv("LISTEN_FDS", "1", 1);
			setenv("LISTEN_PID", pidbuf, 1);
			unsetenv("LISTEN_FDNAMES");
		}
		exec_child(g->cmd);
	}
	g->child = pid;
	g->child_started = mono_ms();
	GLOG(g, 30, g->action == ACT_RUN ? "run started" : "activated", "command", g->cmd[0], "reason", why, "#child", num(nb, sizeof(nb), pid), NULL);
}

static void after_action(struct group *g)
{
	read_wake_file(g);
	if (g->again && !stopping) {
		g->again = 0;
		trigger(g, "again", "changes during the last run");
	}
}

static void reap(void)
{
	int status, i;
	pid_t pid;
	char nb[32], nb2[32];

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct group *g = NULL;
		for (i = 0; i < cfg.n_groups; i++)
			if (cfg.groups[i].child == pid)
				g = &cfg.groups[i];
		if (!g)
			continue;
		g->child = -1;
		long long ran = mono_ms() - g->child_started;
		if (WIFEXITED(status))
			GLOG(g, WEXITSTATUS(status) == 0 ? 30 : 40, g->action == ACT_RUN ? "run finished" : "agent exited",
			     "#code", num(nb, sizeof(nb), WEXITSTATUS(status)), "#ms", num(nb2, sizeof(nb2), ran), NULL);
		else
			GLOG(g, 40, g->action == ACT_RUN ? "run killed" : "agent killed", "#signal",
			     num(nb, sizeof(nb), WIFSIGNALED(status) ? WTERMSIG(status) : 0), "#ms", num(nb2, sizeof(nb2), ran), NULL);
		if (g->action == ACT_ACTIVATE) {
			int failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
			/* An agent that fails at once must not be respawned in a tight loop. */
			if (failed && ran < 1000)
				g->respawn_ms = g->respawn_ms ? (g->respawn_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->respawn_ms * 2) : RETRY_MIN_MS;
			else
				g->respawn_ms = 0;
			g->respawn_at = mono_ms() + g->respawn_ms;
		}
		after_action(g);
	}
}

/* ---- --notify / --activate: one request on the socket ---- */

static void notify_done(struct group *g, int ok, const char *what)
{
	close(g->notify_fd);
	g->notify_fd = -1;
	if (ok) {
		g->notify_retry_ms = 0;
		after_action(g);
	} else {
		/* The agent must hear about the change: retry with back-off. */
		g->notify_retry_ms = g->notify_retry_ms ? (g->notify_retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->notify_retry_ms * 2) : RETRY_MIN_MS;
		if (!stopping) {
			char nb[32];
			GLOG(g, 40, "request failed, retrying", "socket", g->socket_path, "error", what, "#retryInMs", num(nb, sizeof(nb), g->notify_retry_ms), NULL);
			g->pending = 1;
			g->first_at = g->due_at = mono_ms() + g->notify_retry_ms;
			snprintf(g->reason, sizeof(g->reason), "retry");
		}
		g->again = 0; /* the retry covers them */
		read_wake_file(g);
	}
}

static void notify_start(struct group *g, const char *why)
{
	struct sockaddr_un addr;
	int fd;

	if (strlen(g->socket_path) >= sizeof(addr.sun_path)) {
		GLOG(g, 50, "socket path too long", "socket", g->socket_path, NULL);
		return;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		GLOG(g, 50, "socket failed", "error", strerror(errno), NULL);
		return;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strcpy(addr.sun_path, g->socket_path);
	g->notify_fd = fd;
	g->notify_len = 0;
	g->notify_sent = 0;
	snprintf(g->notify_req, sizeof(g->notify_req), "%s\n", g->request ? g->request : DEFAULT_REQUEST);
	g->notify_deadline = mono_ms() + NOTIFY_TIMEOUT_MS;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS) {
		notify_done(g, 0, strerror(errno));
		return;
	}
	GLOG(g, 30, "request sent", "socket", g->socket_path, "reason", why, NULL);
}

static void notify_io(struct group *g, short revents)
{
	size_t req_len = strlen(g->notify_req);
	if (g->notify_sent < req_len) {
		if (revents & (POLLOUT | POLLERR | POLLHUP)) {
			ssize_t n = send(g->notify_fd, g->notify_req + g->notify_sent, req_len - g->notify_sent, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno != EAGAIN && errno != EINTR)
					notify_done(g, 0, strerror(errno));
				return;
			}
			g->notify_sent += (size_t)n;
		}
		return;
	}
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		ssize_t n = recv(g->notify_fd, g->notify_buf + g->notify_len, sizeof(g->notify_buf) - 1 - g->notify_len, 0);
		char *nl;
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				notify_done(g, 0, strerror(errno));
			return;
		}
		if (n == 0) {
			notify_done(g, 0, "closed without a reply");
			return;
		}
		g->notify_len += (size_t)n;
		g->notify_buf[g->notify_len] = '\0';
		nl = memchr(g->notify_buf, '\n', g->notify_len);
		if (!nl && g->notify_len < sizeof(g->notify_buf) - 1)
			return;
		if (nl)
			*nl = '\0';
		/* Only a top-level "ok":true counts; the reply is logged (bounded, escaped) either way. */
		{
			int ok = strncmp(g->notify_buf, "{\"ok\":true", 10) == 0;
			GLOG(g, ok ? 30 : 40, "reply", "socket", g->socket_path, "reply", g->notify_buf, NULL);
			notify_done(g, 1, NULL);
		}
	}
}

/* ---- --activate: the listening socket ---- */

static void bind_listen(struct group *g)
{
	struct sockaddr_un addr;
	struct stat st;
	char dir[PATH_MAX], *slash;
	int fd;

	if (strlen(g->socket_path) >= sizeof(addr.sun_path) || g->socket_path[0] != '/')
		usage_exit("--activate wants an absolute socket path under 108 characters");
	snprintf(dir, sizeof(dir), "%s", g->socket_path);
	slash = strrchr(dir, '/');
	if (slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			GLOG(g, 50, "cannot create the socket directory", "path", dir, "error", strerror(errno), NULL);
			exit(1);
		}
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strcpy(addr.sun_path, g->socket_path);
	if (lstat(g->socket_path, &st) == 0) {
		int probe;
		if (!S_ISSOCK(st.st_mode)) {
			GLOG(g, 50, "socket path exists and is not a socket", "socket", g->socket_path, NULL);
			exit(1);
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
			close(probe);
			GLOG(g, 50, "another process listens on the socket", "socket", g->socket_path, NULL);
			exit(3);
		}
		if (probe >= 0)
			close(probe);
		unlink(g->socket_path); /* stale, nobody listens */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(g->socket_path, 0600) < 0 || listen(fd, 128) < 0) {
		GLOG(g, 50, "cannot listen on the socket", "socket", g->socket_path, "error", strerror(errno), NULL);
		exit(1);
	}
	g->listen_fd = fd;
}

static int listen_pending(const struct group *g)
{
	struct pollfd p = { .fd = g->listen_fd, .events = POLLIN };
	return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* ---- main loop ---- */

static void start_action(struct group *g)
{
	g->pending = 0;
	if (g->action == ACT_RUN)
		spawn_child(g, g->reason);
	else
		notify_start(g, g->reason);
}

static int any_child(void)
{
	int i;
	for (i = 0; i < cfg.n_groups; i++)
		if (cfg.groups[i].child > 0)
			return 1;
	return 0;
}

static void kill_children(int sig)
{
	int i;
	for (i = 0; i < cfg.n_groups; i++)
		if (cfg.groups[i].child > 0)
			kill(cfg.groups[i].child, sig);
}

static void begin_stop(const char *sig)
{
	int i;
	if (stopping)
		return;
	stopping = 1;
	logj(30, "stopping", "signal", sig, NULL);
	for (i = 0; i < cfg.n_groups; i++) {
		struct group *g = &cfg.groups[i];
		g->pending = 0;
		g->again = 0;
		if (g->listen_fd >= 0) {
			close(g->listen_fd);
			g->listen_fd = -1;
			unlink(g->socket_path);
		}
		if (g->notify_fd >= 0) {
			close(g->notify_fd);
			g->notify_fd = -1;
		}
	}
	kill_children(SIGTERM);
	stop_deadline = mono_ms() + KILL_GRACE_MS;
}

static void sig_readable(void)
{
	struct signalfd_siginfo si;
	while (read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			reap();
		else if (si.ssi_signo == SIGTERM)
			begin_stop("SIGTERM");
		else if (si.ssi_signo == SIGINT)
			begin_stop("SIGINT");
		else if (si.ssi_signo == SIGHUP)
			trigger_all("signal", "SIGHUP");
	}
}

static long long min_deadline(long long a, long long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* Poll slots: signals, inotify, netlink, QubesDB, then per group a notify and a listen fd. */
#define MAX_POLL (4 + 2 * MAX_GROUPS)

int main(int argc, char **argv)
{
	sigset_t mask;
	int i;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (cfg.qdb_dir && setenv("QUBESDB_RUN_DIR", cfg.qdb_dir, 1) < 0)
		return 1;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sig_fd < 0) {
		logj(50, "signalfd failed", "error", strerror(errno), NULL);
		return 1;
	}
	for (i = 0; i < cfg.n_groups; i++)
		if (cfg.groups[i].action == ACT_ACTIVATE)
			bind_listen(&cfg.groups[i]);
	if (cfg.n_files) {
		ino_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		if (ino_fd < 0) {
			logj(50, "inotify failed", "error", strerror(errno), NULL);
			return 1;
		}
		for (i = 0; i < cfg.n_files; i++)
			file_watch_add(&cfg.files[i]);
	}
	if (cfg.n_links)
		nl_open();
	if (cfg.n_qdb)
		qdb_connect(1);
	for (i = 0; i < cfg.n_groups; i++) {
		struct group *g = &cfg.groups[i];
		char a[32], b[32], c[32];
		int j, nf = 0, nl = 0;
		read_wake_file(g);
		for (j = 0; j < cfg.n_files; j++)
			nf += cfg.files[j].group == i;
		for (j = 0; j < cfg.n_links; j++)
			nl += cfg.links[j].group == i;
		GLOG(g, 30, "watching", "#qdb", num(a, sizeof(a), g->n_qdb), "#files", num(b, sizeof(b), nf),
		     "#links", num(c, sizeof(c), nl), "action",
		     g->action == ACT_RUN ? "run" : g->action == ACT_NOTIFY ? "notify" : "activate", NULL);
		if (g->run_at_start) {
			g->pending = 1;
			g->first_at = g->due_at = mono_ms();
			snprintf(g->reason, sizeof(g->reason), "start");
		}
	}

	for (;;) {
		struct pollfd pfd[MAX_POLL];
		int nfd = 0, idx_sig, idx_ino = -1, idx_nl = -1, idx_qdb = -1;
		int idx_notify[MAX_GROUPS];
		long long now = mono_ms(), next = -1;
		int timeout;

		if (stopping && !any_child())
			break;
		if (stopping && now >= stop_deadline && any_child()) {
			kill_children(SIGKILL);
			stop_deadline = now + KILL_GRACE_MS;
		}
		/* Timers. */
		if (qdb_retry_at >= 0 && now >= qdb_retry_at)
			qdb_connect(0);
		if (file_retry_at >= 0 && now >= file_retry_at)
			files_retry();
		for (i = 0; i < cfg.n_groups; i++) {
			struct group *g = &cfg.groups[i];
			if (g->wake_at >= 0 && now >= g->wake_at) {
				g->wake_at = -1;
				g->wake_fired = g->wake_value;
				trigger(g, "wake", g->wake_file);
			}
			if (g->notify_fd >= 0 && now >= g->notify_deadline)
				notify_done(g, 0, "no reply in time");
			if (g->pending && !busy(g) && now >= g->due_at)
				start_action(g);
			if (g->action == ACT_ACTIVATE && !stopping && g->child <= 0 && g->listen_fd >= 0 &&
			    (g->respawn_at < 0 || now >= g->respawn_at) && listen_pending(g)) {
				g->respawn_at = -1;
				spawn_child(g, "connection");
			}
		}

		pfd[nfd] = (struct pollfd){ .fd = sig_fd, .events = POLLIN };
		idx_sig = nfd++;
		if (ino_fd >= 0) {
			pfd[nfd] = (struct pollfd){ .fd = ino_fd, .events = POLLIN };
			idx_ino = nfd++;
		}
		if (nl_fd >= 0) {
			pfd[nfd] = (struct pollfd){ .fd = nl_fd, .events = POLLIN };
			idx_nl = nfd++;
		}
		if (qdb_fd >= 0 && qdb_retry_at < 0) {
			pfd[nfd] = (struct pollfd){ .fd = qdb_fd, .events = POLLIN };
			idx_qdb = nfd++;
		}
		for (i = 0; i < cfg.n_groups; i++) {
			struct group *g = &cfg.groups[i];
			idx_notify[i] = -1;
			if (g->notify_fd >= 0) {
				pfd[nfd] = (struct pollfd){ .fd = g->notify_fd, .events = g->notify_sent < strlen(g->notify_req) ? POLLOUT : POLLIN };
				idx_notify[i] = nfd++;
				next = min_deadline(next, g->notify_deadline);
			}
			/* Readiness of a listening socket is checked at the top of the loop. */
			if (g->action == ACT_ACTIVATE && !stopping && g->child <= 0 && g->listen_fd >= 0) {
				if (g->respawn_at >= 0 && g->respawn_at > now) {
					next = min_deadline(next, g->respawn_at);
				} else {
					pfd[nfd] = (struct pollfd){ .fd = g->listen_fd, .events = POLLIN };
					nfd++;
				}
			}
			if (g->pending && !busy(g))
				next = min_deadline(next, g->due_at);
			next = min_deadline(next, g->wake_at);
		}
		next = min_deadline(next, qdb_retry_at);
		next = min_deadline(next, file_retry_at);
		if (stopping)
			next = min_deadline(next, stop_deadline);
		if (next < 0)
			timeout = -1;
		else
			timeout = next - now > INT_MAX ? INT_MAX : (next > now ? (int)(next - now) : 0);

		if (poll(pfd, nfd, timeout) < 0) {
			if (errno == EINTR)
				continue;
			logj(50, "poll failed", "error", strerror(errno), NULL);
			return 1;
		}
		if (pfd[idx_sig].revents)
			sig_readable();
		if (idx_ino >= 0 && pfd[idx_ino].revents)
			ino_readable();
		if (idx_nl >= 0 && pfd[idx_nl].revents)
			nl_read(0);
		if (idx_qdb >= 0 && pfd[idx_qdb].revents && qdb_fd >= 0)
			qdb_readable();
		for (i = 0; i < cfg.n_groups; i++) {
			struct group *g = &cfg.groups[i];
			if (idx_notify[i] >= 0 && g->notify_fd >= 0 && pfd[idx_notify[i]].revents)
				notify_io(g, pfd[idx_notify[i]].revents);
		}
	}
	if (qdb)
		qdb_close(qdb);
	logj(30, "stopped", NULL);
	return 0;
}
