/*
 * The bench baselines' stand-in for upstream's `qubesdb-read`: one small C process per key,
 * linked against our libqubesdb, so a baseline pays what upstream's scripts (setup-ip,
 * vif-route-qubes) pay per key. Shared by the guest-agent and driver-agent benches, which
 * compile it themselves.
 *
 *   qdb-read [-q] [--default VALUE] PATH
 *
 * Prints the value and a newline. Exit 0 when read (or defaulted), 2 when the key is missing
 * (and no default was given), 1 on any other failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <qubesdb-client.h>

int main(int argc, char **argv)
{
    const char *def = NULL;
    int quiet = 0;
    int i = 1;
    for (; i < argc - 1; i++) {
        if (strcmp(argv[i], "-q") == 0)
            quiet = 1;
        else if (strcmp(argv[i], "--default") == 0)
            def = argv[++i];
        else
            break;
    }
    if (i != argc - 1) {
        fprintf(stderr, "usage: qdb-read [-q] [--default VALUE] PATH\n");
        return 1;
    }
    qdb_handle_t h = qdb_open(NULL);
    if (!h) {
        perror("qdb_open");
        return 1;
    }
    unsigned int len = 0;
    char *value = qdb_read(h, argv[i], &len);
    int missing = value == NULL && errno == ENOENT;
    int rc = 0;
    if (value) {
        if (!quiet) {
            fwrite(value, 1, len, stdout);
            fputc('\n', stdout);
        }
        free(value);
    } else if (missing && def) {
        if (!quiet)
            printf("%s\n", def);
    } else {
        rc = missing ? 2 : 1;
    }
    qdb_close(h);
    return rc;
}
