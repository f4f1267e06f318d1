/*
 * The bench baseline's stand-in for upstream's `qubesdb-read`: one small C process per key,
 * linked against our libqubesdb, as upstream's vif-route-qubes pays one process per key.
 *
 *   qdb-read [--default VALUE] PATH
 *
 * Prints the value and a newline; exit 0 when read (or defaulted), 2 when missing, 1 on error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <qubesdb-client.h>

int main(int argc, char **argv)
{
	const char *def = NULL;
	int i = 1;
	if (argc > 3 && strcmp(argv[1], "--default") == 0) {
		def = argv[2];
		i = 3;
	}
	if (i != argc - 1) {
		fprintf(stderr, "usage: qdb-read [--default VALUE] PATH\n");
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
	qdb_close(h);
	if (value) {
		fwrite(value, 1, len, stdout);
		fputc('\n', stdout);
		free(value);
		return 0;
	}
	if (missing && def) {
		printf("%s\n", def);
		return 0;
	}
	return missing ? 2 : 1;
}
