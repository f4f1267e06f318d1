/*
 * QubesDB wire protocol, as spoken on the daemon's local Unix sockets (and, between daemons,
 * over the vchan). Written for qubes-net from the protocol description; binary compatible
 * with Qubes OS' own header of the same name.
 *
 * Every message is a fixed header in native layout and byte order, followed by data_len
 * payload bytes (only WRITE, RESP_READ and RESP_MULTIREAD carry a payload).
 */
#ifndef QUBES_NET_QUBESDB_H
#define QUBES_NET_QUBESDB_H

#include <stdint.h>

/* Path buffer size, NUL included: usable paths have at most 63 characters. */
#define QDB_MAX_PATH 64
/* Largest payload the client library accepts. The daemon itself only takes data_len < 3072,
 * so 3071 bytes is the largest value that can actually be stored. */
#define QDB_MAX_DATA 3072
/* How many local clients one daemon serves at once. */
#define QDB_MAX_CLIENTS 256

/* Default directory of the sockets, and the socket names in it. */
#define QDB_DAEMON_DIR "/var/run/qubes"
#define QDB_DAEMON_LOCAL_PATH QDB_DAEMON_DIR "/qubesdb.sock"
#define QDB_DAEMON_LOCAL_RO_PATH QDB_DAEMON_DIR "/qubesdb.ro.sock"
/* dom0: database of domain NAME is qubesdb.NAME.sock / qubesdb.NAME.ro.sock in that dir. */
#define QDB_DAEMON_PATH_PATTERN QDB_DAEMON_DIR "/qubesdb.%s.sock"
#define QDB_DAEMON_RO_PATH_PATTERN QDB_DAEMON_DIR "/qubesdb.%s.ro.sock"

/* vchan port linking a VM's daemon with its dom0 counterpart. */
#define QUBESDB_VCHAN_PORT 111

/* Message types; the numeric values are the protocol. */
enum qdb_msg {
    QDB_CMD_READ = 0,       /* read one value */
    QDB_CMD_WRITE = 1,      /* create or overwrite one value (payload = value) */
    QDB_CMD_MULTIREAD = 2,  /* every entry under a raw prefix, with values */
    QDB_CMD_LIST = 3,       /* every path under a raw prefix */
    QDB_CMD_RM = 4,         /* remove one entry, or a whole prefix when the path ends in '/' */
    QDB_CMD_WATCH = 5,      /* register a watch (exact path, or prefix ending in '/') */
    QDB_CMD_UNWATCH = 6,    /* drop one matching watch registration */
    QDB_RESP_OK = 7,
    QDB_RESP_ERROR_NOENT = 8,
    QDB_RESP_ERROR = 9,
    QDB_RESP_READ = 10,      /* payload = value */
    QDB_RESP_MULTIREAD = 11, /* one per entry; an empty path ends the stream */
    QDB_RESP_LIST = 12,      /* one per entry; an empty path ends the stream */
    QDB_RESP_WATCH = 13,     /* asynchronous: this path changed; may come at any time */
};

/* Internal marker for "no header pending"; never sent. */
#define QDB_INVALID_CMD 0xff

struct qdb_hdr {
    uint8_t type;              /* enum qdb_msg */
    char path[QDB_MAX_PATH];   /* NUL-terminated; bytes after the NUL are meaningless */
    uint32_t data_len;         /* payload bytes following the header */
};

#endif /* QUBES_NET_QUBESDB_H */
