/*
 * Baseline for the QubesDB bench (bench/qubesdb/qubesdb.bench.ts): a native client that
 * blocks in qdb_read_watch. For each event on /bench/lat it notes CLOCK_MONOTONIC, reads the
 * value (the writer's CLOCK_MONOTONIC in ns when it started the write) and prints the
 * difference in milliseconds, one line per event. Prints "ready" once the watch is set.
 * The socket directory comes from QUBESDB_RUN_DIR; argv[1] is the number of events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <qubesdb-client.h>

int main(int argc, char **argv)
{
    long i, count = argc > 1 ? atol(argv[1]) : 1;
    qdb_handle_t h = qdb_open(NULL);

    if (!h || !qdb_watch(h, "/bench/lat")) {
        perror("qubesdb");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (i = 0; i < count; i++) {
        struct timespec now;
        char *path = qdb_read_watch(h), *value;

        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!path)
            return 1;
        free(path);
        value = qdb_read(h, "/bench/lat", NULL);
        if (!value)
            return 1;
        printf("%.6f\n", ((double)now.tv_sec * 1e9 + (double)now.tv_nsec - strtod(value, NULL)) / 1e6);
        fflush(stdout);
        free(value);
    }
    qdb_close(h);
    return 0;
}
