/*
 * ABI-level conformance test of libqubesdb against a running QubesDB daemon, driven by
 * test/qubesdb/ffi-native.test.ts. The daemon's socket directory comes in QUBESDB_RUN_DIR.
 *
 * Output: one "ok - what" / "not ok - what (detail)" line per check. When the test needs the
 * daemon restarted it prints "RESTART" and waits for a line on stdin. Exit status 0 only if
 * every check passed. SIGPIPE keeps its default action on purpose: the library must never
 * raise it.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qubesdb-client.h>

static int failures;

static void check(int cond, const char *what, const char *detail)
{
    if (cond)
        printf("ok - %s\n", what);
    else {
        printf("not ok - %s (%s; errno %d %s)\n", what, detail ? detail : "", errno, strerror(errno));
        failures++;
    }
    fflush(stdout);
}

/* Reads path and compares with expected (NULL: expect missing with ENOENT). */
static void expect_value(qdb_handle_t h, const char *path, const char *expected, const char *what)
{
    unsigned int len = 12345;
    char *v;

    errno = 0;
    v = qdb_read(h, (char *)path, &len);
    if (!expected) {
        check(v == NULL && errno == ENOENT, what, v ? v : "not ENOENT");
    } else {
        check(v && len == strlen(expected) && strcmp(v, expected) == 0 && v[len] == '\0', what, v ? v : "NULL");
    }
    free(v);
}

static void expect_event(qdb_handle_t h, const char *expected, const char *what)
{
    char *p = qdb_read_watch(h);

    check(p && strcmp(p, expected) == 0, what, p ? p : "NULL");
    free(p);
}

static int wait_for_restart(void)
{
    char line[64];

    printf("RESTART\n");
    fflush(stdout);
    return fgets(line, sizeof(line), stdin) != NULL;
}

static void test_basic(qdb_handle_t h)
{
    unsigned int n = 99, i;
    char **list;
    unsigned int *lens = NULL;

    check(qdb_write(h, "/t/a", "alpha", 5) == 1, "write returns 1", NULL);
    expect_value(h, "/t/a", "alpha", "read returns the value, NUL-terminated, with its length");
    check(qdb_write(h, "/t/empty", "", 0) == 1, "write of an empty value", NULL);
    expect_value(h, "/t/empty", "", "read of an empty value");
    check(qdb_write(h, "/t/empty2", NULL, 0) == 0 && errno == EINVAL, "write of NULL is refused even with length 0, as upstream does", NULL);
    expect_value(h, "/t/missing", NULL, "read of a missing key: NULL, errno ENOENT");
    check(qdb_write(h, "/t/a", "beta", 4) == 1, "overwrite", NULL);
    expect_value(h, "/t/a", "beta", "read after overwrite");
    /* value_len limits the value even when the buffer is longer */
    check(qdb_write(h, "/t/part", "abcdef", 3) == 1, "write of a partial buffer", NULL);
    expect_value(h, "/t/part", "abc", "only value_len bytes stored");

    qdb_write(h, "/qubes-ip", "10.137.0.7", 10);
    qdb_write(h, "/qubes-ip6", "fd09::7", 7);
    qdb_write(h, "/qubes-gateway", "10.137.0.1", 10);
    list = qdb_list(h, "/qubes-", &n);
    check(list && n == 3 && list[3] == NULL, "list: count and NULL terminator", NULL);
    if (list) {
        check(strcmp(list[0], "/qubes-gateway") == 0 && strcmp(list[1], "/qubes-ip") == 0 &&
                  strcmp(list[2], "/qubes-ip6") == 0,
              "list: ascending full paths", list[0]);
        for (i = 0; list[i]; i++)
            free(list[i]);
        free(list);
    }
    list = qdb_list(h, "/qubes-ip", NULL);
    check(list && list[0] && list[1] && !list[2], "list: raw prefix, no '/' boundary (/qubes-ip6 too)", NULL);
    if (list) {
        for (i = 0; list[i]; i++)
            free(list[i]);
        free(list);
    }
    n = 99;
    list = qdb_list(h, "/nothing-here/", &n);
    check(list && list[0] == NULL && n == 0, "list: empty result is an array holding NULL", NULL);
    free(list);

    n = 99;
    list = qdb_multiread(h, "/qubes-ip", &lens, &n);
    check(list && n == 2 && lens, "multiread: count and lengths", NULL);
    if (list && n == 2 && lens) {
        check(strcmp(list[0], "/qubes-ip") == 0 && strcmp(list[1], "10.137.0.7") == 0 && lens[0] == 10 &&
                  strcmp(list[2], "/qubes-ip6") == 0 && strcmp(list[3], "fd09::7") == 0 && lens[1] == 7 &&
                  list[4] == NULL && list[5] == NULL,
              "multiread: [path, value, ..., NULL, NULL] ascending", list[0]);
        for (i = 0; i < 4; i++)
            free(list[i]);
    }
    free(list);
    free(lens);
    list = qdb_multiread(h, "/nothing-here/", NULL, NULL);
    check(list && list[0] == NULL && list[1] == NULL, "multiread: empty result", NULL);
    free(list);

    check(qdb_rm(h, "/t/missing") == 1, "rm of a missing key counts as success", NULL);
    check(qdb_rm(h, "/t/") == 1, "rm of a directory", NULL);
    expect_value(h, "/t/a", NULL, "rm of a directory removed its entries");
    expect_value(h, "/qubes-ip", "10.137.0.7", "rm of a directory left other keys");
}

static void test_limits(qdb_handle_t h)
{
    char path[80], value[QDB_MAX_DATA + 2];

    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[63] = '\0';
    check(qdb_write(h, path, "x", 1) == 1, "path of 63 characters accepted", NULL);
    expect_value(h, path, "x", "path of 63 characters read back");
    path[63] = 'p';
    path[64] = '\0';
    errno = 0;
    check(qdb_write(h, path, "x", 1) == 0 && errno == EINVAL, "path of 64 characters refused (EINVAL)", NULL);
    errno = 0;
    check(qdb_read(h, path, NULL) == NULL && errno == EINVAL, "read of a 64-character path refused", NULL);
    check(qdb_write(h, "no-slash", "x", 1) == 0, "path without leading '/' refused", NULL);
    check(qdb_write(h, "/bad path", "x", 1) == 0, "path with a space refused", NULL);
    check(qdb_write(h, "/dir/", "x", 1) == 0, "write to a path ending in '/' refused", NULL);
    check(qdb_write(h, "/ok-chars_1.2:3@x", "x", 1) == 1, "every allowed character accepted", NULL);

    memset(value, 'v', sizeof(value));
    value[QDB_MAX_DATA - 1] = '\0';
    check(qdb_write(h, "/big", value, QDB_MAX_DATA - 1) == 1, "value of 3071 bytes stored", NULL);
    expect_value(h, "/big", value, "value of 3071 bytes read back");
    value[QDB_MAX_DATA - 1] = 'v';
    check(qdb_write(h, "/big", value, QDB_MAX_DATA) == 0, "value of 3072 bytes refused by the daemon", NULL);
    errno = 0;
    check(qdb_write(h, "/big", value, QDB_MAX_DATA + 1) == 0 && errno == EMSGSIZE,
          "value of 3073 bytes refused by the library (EMSGSIZE)", NULL);
    check(qdb_write(h, "/nul", "a\0b", 3) == 0, "value with a NUL byte refused", NULL);
    check(qdb_write(h, "/after-limits", "fine", 4) == 1, "handle still usable after refusals", NULL);
    expect_value(h, "/after-limits", "fine", "value written after refusals");
}

static void test_watches(qdb_handle_t h, qdb_handle_t other)
{
    struct pollfd pfd;
    unsigned int n = 0, i;
    char **list;

    check(qdb_watch(h, "/w/exact") == 1, "watch on an exact path", NULL);
    check(qdb_watch(h, "/wd/") == 1, "watch on a directory", NULL);
    check(qdb_watch(h, "/sentinel") == 1, "watch on a sentinel", NULL);

    qdb_write(other, "/w/exact", "1", 1);
    expect_event(h, "/w/exact", "exact watch fires on write");
    qdb_write(other, "/w/exact", "1", 1);
    expect_event(h, "/w/exact", "exact watch fires on an unchanged write");
    qdb_write(other, "/w/exact2", "1", 1);
    qdb_write(other, "/wd/child", "1", 1);
    expect_event(h, "/wd/child", "exact watch ignores a longer path; directory watch fires");
    qdb_rm(other, "/w/exact");
    expect_event(h, "/w/exact", "exact watch fires on rm");

    /* Events arriving while a multiread is answered are queued and come back oldest first. */
    qdb_write(other, "/wd/1", "a", 1);
    qdb_write(other, "/wd/2", "b", 1);
    qdb_write(other, "/wd/3", "c", 1);
    list = qdb_multiread(h, "/wd/", NULL, &n);
    check(list && n == 4, "multiread while events are pending", NULL);
    if (list) {
        for (i = 0; list[i]; i++)
            free(list[i]);
        free(list);
    }
    expect_event(h, "/wd/1", "queued events: first");
    expect_event(h, "/wd/2", "queued events: second");
    expect_event(h, "/wd/3", "queued events: third (FIFO)");

    qdb_rm(other, "/wd/");
    expect_event(h, "/wd/", "rm of a directory fires the directory path");

    /* Exact watches on children do not fire when their directory is removed. */
    qdb_watch(h, "/kid/x");
    qdb_write(other, "/kid/x", "1", 1);
    expect_event(h, "/kid/x", "exact watch on a child fires on write");
    qdb_rm(other, "/kid/");
    qdb_write(other, "/sentinel", "1", 1);
    expect_event(h, "/sentinel", "rm of the directory did not fire the child's exact watch");

    check(qdb_unwatch(h, "/kid/x") == 1, "unwatch", NULL);
    check(qdb_unwatch(h, "/never-watched") == 1, "unwatch of an unknown path counts as success", NULL);
    qdb_write(other, "/kid/x", "2", 1);
    qdb_write(other, "/sentinel", "2", 1);
    expect_event(h, "/sentinel", "no event after unwatch");

    pfd.fd = qdb_watch_fd(h);
    pfd.events = POLLIN;
    check(pfd.fd >= 0, "qdb_watch_fd returns the socket", NULL);
    qdb_write(other, "/sentinel", "3", 1);
    check(poll(&pfd, 1, 10000) == 1 && (pfd.revents & POLLIN), "the watch fd polls readable on an event", NULL);
    expect_event(h, "/sentinel", "event read after poll");
}

/* After the daemon restarted under our feet (its database now empty). */
static void test_after_restart(qdb_handle_t h, qdb_handle_t other, qdb_handle_t idle, qdb_handle_t blocked)
{
    char *p;

    /* h still has /sentinel and /wd-less watches registered from before. The write goes out
     * on a dead socket (EPIPE), reconnects, re-registers, and resends the whole request. */
    check(qdb_write(h, "/after", "payload", 7) == 1, "write after restart (EPIPE, reconnect, resend)", NULL);
    expect_value(other, "/after", "payload", "payload of the resent write arrived intact");
    expect_value(idle, "/missing-after", NULL, "idle handle: read after restart reconnects (ENOENT)");
    expect_value(idle, "/after", "payload", "idle handle reads after restart");

    qdb_write(other, "/sentinel", "4", 1);
    expect_event(h, "/sentinel", "watch re-registered after reconnect fires");

    /* A handle waiting for events sees the connection end, then reconnects. */
    errno = 0;
    p = qdb_read_watch(blocked);
    check(p == NULL && errno == EPIPE, "read_watch on a dropped connection: NULL, EPIPE", p);
    free(p);
    check(qdb_watch_fd(blocked) >= 0, "qdb_watch_fd reconnects", NULL);
    qdb_write(other, "/blk", "1", 1);
    expect_event(blocked, "/blk", "its watch was registered again");
}

static void test_read_only(const char *run_dir)
{
    char rw[512];
    qdb_handle_t ro;

    snprintf(rw, sizeof(rw), "%s/qubesdb.sock", run_dir);
    check(unlink(rw) == 0, "remove the read-write socket", rw);
    ro = qdb_open(NULL);
    check(ro != NULL, "qdb_open falls back to the read-only socket", NULL);
    if (!ro)
        return;
    expect_value(ro, "/after", "payload", "read through the read-only socket");
    errno = 0;
    check(qdb_write(ro, "/ro-write", "x", 1) == 0, "write through the read-only socket refused", NULL);
    check(qdb_rm(ro, "/after") == 0, "rm through the read-only socket refused", NULL);
    expect_value(ro, "/after", "payload", "read-only connection still usable after refusals");
    qdb_close(ro);
}

int main(void)
{
    const char *run_dir = getenv("QUBESDB_RUN_DIR");
    qdb_handle_t h, other, idle, blocked;

    signal(SIGPIPE, SIG_DFL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!run_dir) {
        printf("not ok - QUBESDB_RUN_DIR not set\n");
        return 1;
    }
    errno = 0;
    check(qdb_open("../etc") == NULL && errno == EINVAL, "qdb_open refuses a name with '/'", NULL);
    check(qdb_open("no-such-domain") == NULL, "qdb_open of a missing database fails", NULL);

    h = qdb_open(NULL);
    other = qdb_open(NULL);
    idle = qdb_open(NULL);
    blocked = qdb_open(NULL);
    check(h && other && idle && blocked, "qdb_open(NULL) through QUBESDB_RUN_DIR", NULL);
    if (!h || !other || !idle || !blocked)
        return 1;

    test_basic(h);
    test_limits(h);
    test_watches(h, other);
    check(qdb_watch(blocked, "/blk") == 1, "watch before the restart", NULL);

    if (!wait_for_restart()) {
        printf("not ok - no answer to RESTART\n");
        return 1;
    }
    test_after_restart(h, other, idle, blocked);
    test_read_only(run_dir);

    qdb_close(h);
    qdb_close(other);
    qdb_close(idle);
    qdb_close(blocked);
    qdb_close(NULL);
    printf("%s\n", failures ? "FAILED" : "PASSED");
    return failures ? 1 : 0;
}
