/*
 * qubes-net's libqubesdb: a client of the QubesDB daemon's local socket with the same ABI
 * and semantics as Qubes OS' libqubesdb (see include/qubesdb-client.h), written from the
 * protocol description. Where upstream loses state on a reconnect we keep it:
 *   - watch registrations are remembered and sent again after every reconnect;
 *   - a request that failed to go out with EPIPE is resent whole on the new connection;
 *   - watch events that arrive while we wait for a reply are queued oldest first;
 *   - sends use MSG_NOSIGNAL, so a dead daemon gives EPIPE instead of killing the process.
 *
 * File descriptor lifetime: after an EOF or a protocol error the handle is only marked
 * disconnected; its descriptor stays open until the next reconnect or qdb_close. That way a
 * descriptor handed out by qdb_watch_fd (which another thread may be polling or shutting
 * down) never silently becomes some other file.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <qubesdb-client.h>
#include "ctl-client.h"

/* Directory override, read once per qdb_open (our extension, used by tests and the lab). */
#define RUN_DIR_ENV "QUBESDB_RUN_DIR"

struct queued_event {
    struct queued_event *next;
    char path[QDB_MAX_PATH];
};

struct qdb_handle {
    int fd;          /* -1 when no socket is open */
    int connected;   /* 0: reconnect before the next request */
    int read_only;   /* the current connection is the .ro socket */
    char rw_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char ro_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    /* Watch registrations in the order made (duplicates kept: the daemon counts them). */
    char **watches;
    size_t n_watches, cap_watches;
    /* Events seen while waiting for a reply, delivered oldest first by qdb_read_watch. */
    struct queued_event *ev_head, *ev_tail;
};

/* ---- paths ---- */

static int path_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '/' || c == '.' || c == ':' || c == '@';
}

enum path_kind {
    PATH_KEY,     /* a single entry: "/..." not ending in '/' (read, write) */
    PATH_TARGET,  /* an entry or a directory ending in '/' (rm, watch, unwatch) */
    PATH_PREFIX,  /* any raw prefix, possibly empty (list, multiread) */
};

/* The daemon's character rules plus the client's leading '/' and length rules, checked
 * before sending so that a bad path never costs the connection. */
static int path_ok(const char *path, enum path_kind kind)
{
    size_t len, i;

    if (!path)
        return 0;
    len = strnlen(path, QDB_MAX_PATH);
    if (len >= QDB_MAX_PATH)
        return 0;
    if (len == 0)
        return kind == PATH_PREFIX;
    if (path[0] != '/')
        return 0;
    for (i = 0; i < len; i++)
        if (!path_char_ok(path[i]))
            return 0;
    if (kind == PATH_KEY && path[len - 1] == '/')
        return 0;
    return 1;
}

/* ---- event queue ---- */

static int queue_event(qdb_handle_t h, const char *path)
{
    struct queued_event *ev = malloc(sizeof(*ev));

    if (!ev)
        return 0;
    ev->next = NULL;
    memcpy(ev->path, path, QDB_MAX_PATH);
    if (h->ev_tail)
        h->ev_tail->next = ev;
    else
        h->ev_head = ev;
    h->ev_tail = ev;
    return 1;
}

static char *pop_event(qdb_handle_t h)
{
    struct queued_event *ev = h->ev_head;
    char *path;

    if (!ev)
        return NULL;
    path = strdup(ev->path);
    if (!path)
        return NULL; /* keep the event for a later try */
    h->ev_head = ev->next;
    if (!h->ev_head)
        h->ev_tail = NULL;
    free(ev);
    return path;
}

static void drop_events(qdb_handle_t h)
{
    while (h->ev_head) {
        struct queued_event *ev = h->ev_head;
        h->ev_head = ev->next;
        free(ev);
    }
    h->ev_tail = NULL;
}

/* ---- watch registrations ---- */

static int remember_watch(qdb_handle_t h, const char *path)
{
    char *copy;

    if (h->n_watches == h->cap_watches) {
        size_t cap = h->cap_watches ? h->cap_watches * 2 : 8;
        char **grown = realloc(h->watches, cap * sizeof(*grown));
        if (!grown)
            return 0;
        h->watches = grown;
        h->cap_watches = cap;
    }
    copy = strdup(path);
    if (!copy)
        return 0;
    h->watches[h->n_watches++] = copy;
    return 1;
}

static void forget_watch(qdb_handle_t h, const char *path)
{
    size_t i;

    for (i = h->n_watches; i-- > 0;) {
        if (strcmp(h->watches[i], path) == 0) {
            free(h->watches[i]);
            memmove(&h->watches[i], &h->watches[i + 1], (h->n_watches - i - 1) * sizeof(char *));
            h->n_watches--;
            return;
        }
    }
}

/* ---- socket I/O ---- */

static void mark_disconnected(qdb_handle_t h)
{
    h->connected = 0;
}

/* Paths fit sun_path: qdb_open builds them into buffers of its size. */
static int connect_one(const char *path)
{
    return ctl_connect(path);
}

/* Opens a fresh connection (read-write socket, else read-only), replacing any old one. */
static int open_socket(qdb_handle_t h)
{
    int fd;

    if (h->fd >= 0) {
        close(h->fd);
        h->fd = -1;
    }
    h->connected = 0;
    fd = connect_one(h->rw_path);
    h->read_only = 0;
    if (fd < 0) {
        fd = connect_one(h->ro_path);
        h->read_only = 1;
    }
    if (fd < 0)
        return 0;
    h->fd = fd;
    h->connected = 1;
    return 1;
}

/* Sends header and payload completely. On failure errno tells why (EPIPE: peer gone). */
static int send_all(int fd, const struct qdb_hdr *hdr, const char *data, size_t len)
{
    struct iovec iov[2];
    struct msghdr msg;
    size_t total = sizeof(*hdr) + len, sent = 0;

    while (sent < total) {
        ssize_t n;
        size_t skip = sent;
        int cnt = 0;

        if (skip < sizeof(*hdr)) {
            iov[cnt].iov_base = (char *)hdr + skip;
            iov[cnt].iov_len = sizeof(*hdr) - skip;
            cnt++;
            skip = 0;
        } else {
            skip -= sizeof(*hdr);
        }
        if (len > skip) {
            iov[cnt].iov_base = (char *)data + skip;
            iov[cnt].iov_len = len - skip;
            cnt++;
        }
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = cnt;
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        sent += (size_t)n;
    }
    return 1;
}

/* Reads exactly len bytes. 0 on EOF (errno EPIPE) or error. */
static int recv_all(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* A reset is a disconnect like any other: report it the way upstream does. */
            if (errno == ECONNRESET)
                errno = EPIPE;
            return 0;
        }
        if (n == 0) {
            errno = EPIPE;
            return 0;
        }
        got += (size_t)n;
    }
    return 1;
}

/* Reads one message. The payload (if any) is returned malloc'd and NUL-terminated in
 * *data (NULL when data is NULL: the payload is then discarded). */
static int read_message(qdb_handle_t h, struct qdb_hdr *hdr, char **data)
{
    char *buf = NULL;

    if (data)
        *data = NULL;
    if (!recv_all(h->fd, hdr, sizeof(*hdr)))
        goto broken;
    hdr->path[QDB_MAX_PATH - 1] = '\0';
    if (hdr->type > QDB_RESP_WATCH || hdr->data_len > QDB_MAX_DATA) {
        errno = EPROTO;
        goto broken;
    }
    buf = malloc(hdr->data_len + 1);
    if (!buf) {
        /* We can no longer stay in step with the stream. */
        errno = ENOMEM;
        goto broken;
    }
    if (hdr->data_len && !recv_all(h->fd, buf, hdr->data_len)) {
        free(buf);
        goto broken;
    }
    buf[hdr->data_len] = '\0';
    if (data)
        *data = buf;
    else
        free(buf);
    return 1;
broken:
    mark_disconnected(h);
    return 0;
}

/* Waits for the reply to the request just sent; watch events met on the way are queued. */
static int get_response(qdb_handle_t h, struct qdb_hdr *hdr, char **data)
{
    for (;;) {
        if (!read_message(h, hdr, data))
            return 0;
        if (hdr->type != QDB_RESP_WATCH)
            break;
        if (data) {
            free(*data);
            *data = NULL;
        }
        if (!queue_event(h, hdr->path)) {
            errno = ENOMEM;
            return 0;
        }
    }
    if (hdr->type < QDB_RESP_OK) {
        /* A command type as a reply: the stream is not what we think it is. */
        if (data) {
            free(*data);
            *data = NULL;
        }
        mark_disconnected(h);
        errno = EPROTO;
        return 0;
    }
    return 1;
}

static void fill_header(struct qdb_hdr *hdr, enum qdb_msg type, const char *path, uint32_t len)
{
    memset(hdr, 0, sizeof(*hdr));
    hdr->type = (uint8_t)type;
    if (path)
        strncpy(hdr->path, path, QDB_MAX_PATH - 1);
    hdr->data_len = len;
}

/* Registers every remembered watch on the (new) connection. */
static int reregister_watches(qdb_handle_t h)
{
    struct qdb_hdr hdr;
    size_t i;

    for (i = 0; i < h->n_watches; i++) {
        fill_header(&hdr, QDB_CMD_WATCH, h->watches[i], 0);
        if (!send_all(h->fd, &hdr, NULL, 0) || !get_response(h, &hdr, NULL))
            goto failed;
        if (hdr.type != QDB_RESP_OK) {
            errno = EPROTO;
            goto failed;
        }
    }
    return 1;
failed:
    mark_disconnected(h);
    return 0;
}

static int reconnect(qdb_handle_t h)
{
    if (!open_socket(h))
        return 0;
    return reregister_watches(h);
}

/* Sends one request, reconnecting first when the connection is known to be gone, and once
 * more (with the whole request) when the daemon turns out to have gone while sending. */
static int send_request(qdb_handle_t h, enum qdb_msg type, const char *path, const char *data,
                        unsigned int len)
{
    struct qdb_hdr hdr;

    if (!h->connected && !reconnect(h)) {
        errno = EPIPE;
        return 0;
    }
    fill_header(&hdr, type, path, len);
    if (send_all(h->fd, &hdr, data, len))
        return 1;
    if (errno != EPIPE && errno != ECONNRESET && errno != ENOTCONN) {
        mark_disconnected(h);
        return 0;
    }
    if (!reconnect(h) || !send_all(h->fd, &hdr, data, len)) {
        mark_disconnected(h);
        errno = EPIPE;
        return 0;
    }
    return 1;
}

/* ---- public API ---- */

qdb_handle_t qdb_open(char *vmname)
{
    const char *dir = getenv(RUN_DIR_ENV);
    struct qdb_handle *h;
    int n1, n2, saved;

    if (!dir || !*dir)
        dir = QDB_DAEMON_DIR;
    if (vmname && (!*vmname || strchr(vmname, '/'))) {
        errno = EINVAL;
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->fd = -1;
    if (vmname) {
        n1 = snprintf(h->rw_path, sizeof(h->rw_path), "%s/qubesdb.%s.sock", dir, vmname);
        n2 = snprintf(h->ro_path, sizeof(h->ro_path), "%s/qubesdb.%s.ro.sock", dir, vmname);
    } else {
        n1 = snprintf(h->rw_path, sizeof(h->rw_path), "%s/qubesdb.sock", dir);
        n2 = snprintf(h->ro_path, sizeof(h->ro_path), "%s/qubesdb.ro.sock", dir);
    }
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof(h->rw_path) || (size_t)n2 >= sizeof(h->ro_path)) {
        free(h);
        errno = ENAMETOOLONG;
        return NULL;
    }
    if (!open_socket(h)) {
        saved = errno;
        free(h);
        errno = saved;
        return NULL;
    }
    return h;
}

void qdb_close(qdb_handle_t h)
{
    size_t i;

    if (!h)
        return;
    if (h->fd >= 0) {
        shutdown(h->fd, SHUT_RDWR);
        close(h->fd);
    }
    drop_events(h);
    for (i = 0; i < h->n_watches; i++)
        free(h->watches[i]);
    free(h->watches);
    free(h);
}

/* errno for a failed read must never look like "missing key". */
static void not_enoent(void)
{
    if (errno == 0 || errno == ENOENT)
        errno = EPROTO;
}

char *qdb_read(qdb_handle_t h, char *path, unsigned int *value_len)
{
    struct qdb_hdr hdr;
    char *data;

    if (!h || !path_ok(path, PATH_KEY)) {
        errno = EINVAL;
        return NULL;
    }
    if (!send_request(h, QDB_CMD_READ, path, NULL, 0) || !get_response(h, &hdr, &data)) {
        not_enoent();
        return NULL;
    }
    if (hdr.type == QDB_RESP_READ) {
        if (value_len)
            *value_len = hdr.data_len;
        return data;
    }
    free(data);
    errno = hdr.type == QDB_RESP_ERROR_NOENT ? ENOENT : EPROTO;
    return NULL;
}

/* One entry of a LIST/MULTIREAD answer, before it is laid out for the caller. */
struct entry {
    char *path;
    char *value;
    unsigned int len;
};

struct entries {
    struct entry *v;
    size_t n, cap;
};

static void free_entries(struct entries *e)
{
    size_t i;

    for (i = 0; i < e->n; i++) {
        free(e->v[i].path);
        free(e->v[i].value);
    }
    free(e->v);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->path, ((const struct entry *)b)->path);
}

/* Sends LIST or MULTIREAD and collects the stream up to its empty-path terminator, in
 * ascending order (the daemon sends ascending, except a full dump which comes descending). */
static int collect(qdb_handle_t h, enum qdb_msg cmd, const char *path, struct entries *out)
{
    enum qdb_msg want = cmd == QDB_CMD_LIST ? QDB_RESP_LIST : QDB_RESP_MULTIREAD;
    struct qdb_hdr hdr;
    char *data;
    size_t i;
    int sorted = 1;

    memset(out, 0, sizeof(*out));
    if (!send_request(h, cmd, path, NULL, 0))
        return 0;
    for (;;) {
        if (!get_response(h, &hdr, &data))
            goto failed;
        if (hdr.type != want) {
            free(data);
            /* An error instead of the first answer leaves the stream in step; anything
             * unexpected later means we lost track of it. */
            if (out->n > 0 || hdr.type != QDB_RESP_ERROR)
                mark_disconnected(h);
            errno = EPROTO;
            goto failed;
        }
        if (hdr.path[0] == '\0') {
            free(data);
            break;
        }
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 16;
            struct entry *grown = realloc(out->v, cap * sizeof(*grown));
            if (!grown) {
                free(data);
                goto oom;
            }
            out->v = grown;
            out->cap = cap;
        }
        out->v[out->n].path = strdup(hdr.path);
        out->v[out->n].value = data;
        out->v[out->n].len = hdr.data_len;
        out->n++;
        if (!out->v[out->n - 1].path)
            goto oom;
    }
    for (i = 1; i < out->n; i++)
        if (strcmp(out->v[i - 1].path, out->v[i].path) > 0)
            sorted = 0;
    if (!sorted)
        qsort(out->v, out->n, sizeof(*out->v), cmp_entry);
    return 1;
oom:
    /* The rest of the stream is still on its way; resynchronising is not worth it. */
    mark_disconnected(h);
    errno = ENOMEM;
failed:
    free_entries(out);
    memset(out, 0, sizeof(*out));
    return 0;
}

char **qdb_list(qdb_handle_t h, char *path, unsigned int *list_len)
{
    struct entries e;
    char **result;
    size_t i;

    if (!h || !path_ok(path, PATH_PREFIX)) {
        errno = EINVAL;
        return NULL;
    }
    if (!collect(h, QDB_CMD_LIST, path, &e))
        return NULL;
    result = malloc((e.n + 1) * sizeof(*result));
    if (!result) {
        free_entries(&e);
        return NULL;
    }
    for (i = 0; i < e.n; i++) {
        result[i] = e.v[i].path;
        free(e.v[i].value);
    }
    result[e.n] = NULL;
    if (list_len)
        *list_len = (unsigned int)e.n;
    free(e.v);
    return result;
}

char **qdb_multiread(qdb_handle_t h, char *path, unsigned int **values_len, unsigned int *list_len)
{
    struct entries e;
    char **result;
    unsigned int *lens = NULL;
    size_t i;

    if (!h || !path_ok(path, PATH_PREFIX)) {
        errno = EINVAL;
        return NULL;
    }
    if (!collect(h, QDB_CMD_MULTIREAD, path, &e))
        return NULL;
    result = malloc((2 * e.n + 2) * sizeof(*result));
    if (values_len)
        lens = calloc(e.n + 1, sizeof(*lens));
    if (!result || (values_len && !lens)) {
        free(result);
        free(lens);
        free_entries(&e);
        errno = ENOMEM;
        return NULL;
    }
    for (i = 0; i < e.n; i++) {
        result[2 * i] = e.v[i].path;
        result[2 * i + 1] = e.v[i].value;
        if (lens)
            lens[i] = e.v[i].len;
    }
    result[2 * e.n] = NULL;
    result[2 * e.n + 1] = NULL;
    if (values_len)
        *values_len = lens;
    if (list_len)
        *list_len = (unsigned int)e.n;
    free(e.v);
    return result;
}

/* Sends a request answered by OK / NOENT / ERROR and returns the answer type (0: failed). */
static int simple_command(qdb_handle_t h, enum qdb_msg cmd, const char *path, const char *data,
                          unsigned int len)
{
    struct qdb_hdr hdr;

    if (!send_request(h, cmd, path, data, len) || !get_response(h, &hdr, NULL))
        return 0;
    if (hdr.type != QDB_RESP_OK && hdr.type != QDB_RESP_ERROR_NOENT && hdr.type != QDB_RESP_ERROR) {
        mark_disconnected(h);
        errno = EPROTO;
        return 0;
    }
    return hdr.type;
}

int qdb_write(qdb_handle_t h, char *path, char *value, unsigned int value_len)
{
    int r;

    /* Like upstream, a NULL value is refused even with length 0, so that callers (our koffi
     * binding among them) that work against this library also work against upstream's. */
    if (!h || !path_ok(path, PATH_KEY) || !value) {
        errno = EINVAL;
        return 0;
    }
    if (value_len > QDB_MAX_DATA) {
        errno = EMSGSIZE;
        return 0;
    }
    if (value_len && memchr(value, '\0', value_len)) {
        /* The daemon refuses NUL bytes in values; say so without a round trip. */
        errno = EINVAL;
        return 0;
    }
    r = simple_command(h, QDB_CMD_WRITE, path, value, value_len);
    if (r == QDB_RESP_OK)
        return 1;
    if (r)
        errno = h->read_only ? EACCES : EPROTO;
    return 0;
}

int qdb_rm(qdb_handle_t h, char *path)
{
    int r;

    if (!h || !path_ok(path, PATH_TARGET)) {
        errno = EINVAL;
        return 0;
    }
    r = simple_command(h, QDB_CMD_RM, path, NULL, 0);
    if (r == QDB_RESP_OK || r == QDB_RESP_ERROR_NOENT)
        return 1;
    if (r)
        errno = h->read_only ? EACCES : EPROTO;
    return 0;
}

int qdb_watch(qdb_handle_t h, char *path)
{
    int r;

    if (!h || !path_ok(path, PATH_TARGET)) {
        errno = EINVAL;
        return 0;
    }
    r = simple_command(h, QDB_CMD_WATCH, path, NULL, 0);
    if (r != QDB_RESP_OK) {
        if (r)
            errno = EPROTO;
        return 0;
    }
    if (!remember_watch(h, path)) {
        /* Keep the daemon's view and ours the same. */
        simple_command(h, QDB_CMD_UNWATCH, path, NULL, 0);
        errno = ENOMEM;
        return 0;
    }
    return 1;
}

int qdb_unwatch(qdb_handle_t h, char *path)
{
    int r;

    if (!h || !path_ok(path, PATH_TARGET)) {
        errno = EINVAL;
        return 0;
    }
    /* Forget it first: even if the daemon cannot be told now, a reconnect must not bring
     * the registration back. */
    forget_watch(h, path);
    r = simple_command(h, QDB_CMD_UNWATCH, path, NULL, 0);
    if (r == QDB_RESP_OK || r == QDB_RESP_ERROR_NOENT)
        return 1;
    if (r)
        errno = EPROTO;
    return 0;
}

int qdb_watch_fd(qdb_handle_t h)
{
    if (!h) {
        errno = EINVAL;
        return -1;
    }
    if (!h->connected && !reconnect(h))
        return -1;
    return h->fd;
}

char *qdb_read_watch(qdb_handle_t h)
{
    struct qdb_hdr hdr;
    char *path;

    if (!h) {
        errno = EINVAL;
        return NULL;
    }
    if (h->ev_head)
        return pop_event(h);
    if (!h->connected) {
        if (!reconnect(h)) {
            errno = EPIPE;
            return NULL;
        }
        /* Re-registering may itself have queued events. */
        if (h->ev_head)
            return pop_event(h);
    }
    if (!read_message(h, &hdr, NULL))
        return NULL;
    if (hdr.type != QDB_RESP_WATCH) {
        /* Nothing else may arrive unasked. */
        mark_disconnected(h);
        errno = EPROTO;
        return NULL;
    }
    path = strdup(hdr.path);
    if (!path)
        errno = ENOMEM;
    return path;
}
