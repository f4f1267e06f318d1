/*
 * libqubesdb client API (qubes-net's implementation). Same functions, signatures and
 * semantics as Qubes OS' libqubesdb, so programs built against either work with the other.
 *
 * Memory: every string and array returned is malloc'd and owned by the caller (free()).
 * Paths: start with '/', at most 63 characters from [a-zA-Z0-9_/.:@-]. "Directories" are
 * plain string prefixes; a trailing '/' makes rm and watch act on the whole prefix.
 * A handle is not thread-safe: use it from one thread at a time.
 *
 * Differences from upstream that keep the ABI: watches are registered again after the
 * library reconnects; a request whose sending failed with EPIPE is resent whole (header and
 * payload); queued watch events come back oldest first; SIGPIPE is never raised; the
 * environment variable QUBESDB_RUN_DIR, read by qdb_open, replaces /var/run/qubes.
 */
#ifndef QUBES_NET_QUBESDB_CLIENT_H
#define QUBES_NET_QUBESDB_CLIENT_H

#include <qubesdb.h>

#ifdef __cplusplus
extern "C" {
#endif

struct qdb_handle;
typedef struct qdb_handle *qdb_handle_t;

/* Connects to the local daemon (vmname NULL: qubesdb.sock) or to domain vmname's database
 * (qubesdb.VMNAME.sock); falls back to the read-only socket. NULL on failure (errno set). */
qdb_handle_t qdb_open(char *vmname);

/* Disconnects and frees the handle, including any queued watch events. */
void qdb_close(qdb_handle_t h);

/* The value of path (NUL-terminated; its length, NUL excluded, in *value_len when given).
 * NULL when path does not exist (errno ENOENT) or on failure (errno EPROTO, EPIPE, EINVAL). */
char *qdb_read(qdb_handle_t h, char *path, unsigned int *value_len);

/* Every path starting with the raw prefix path, ascending, NULL-terminated (count in
 * *list_len when given). An empty result is an array holding only NULL. NULL on failure. */
char **qdb_list(qdb_handle_t h, char *path, unsigned int *list_len);

/* Every entry under the raw prefix path, ascending, as a flat array
 * [path0, value0, path1, value1, ..., NULL, NULL]; *values_len (when given) receives a
 * malloc'd array of the value lengths, *list_len the number of entries. NULL on failure. */
char **qdb_multiread(qdb_handle_t h, char *path, unsigned int **values_len, unsigned int *list_len);

/* Creates or overwrites path. 1 on success, 0 on failure (value_len > QDB_MAX_DATA is
 * refused before anything is sent). */
int qdb_write(qdb_handle_t h, char *path, char *value, unsigned int value_len);

/* Removes path, or every entry under it when it ends in '/'. 1 on success, also when nothing
 * existed; 0 on failure. */
int qdb_rm(qdb_handle_t h, char *path);

/* Registers a watch: exactly path, or everything under it when it ends in '/'. 1 or 0. */
int qdb_watch(qdb_handle_t h, char *path);

/* Drops one registration of path (a missing one counts as success). 1 or 0. */
int qdb_unwatch(qdb_handle_t h, char *path);

/* The connection's file descriptor, to poll for watch events; reconnects first if the
 * connection was lost. -1 on error. */
int qdb_watch_fd(qdb_handle_t h);

/* The next watch event (a malloc'd path): a queued one if any, else blocks until one
 * arrives. NULL on failure; errno EPIPE when the daemon closed the connection. */
char *qdb_read_watch(qdb_handle_t h);

#ifdef __cplusplus
}
#endif

#endif /* QUBES_NET_QUBESDB_CLIENT_H */
