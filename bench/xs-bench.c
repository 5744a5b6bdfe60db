/*
 * The C side of `npm run bench -- xenstore`: libxenstore, one request at a time (its API
 * is synchronous), against the xenstored at $XENSTORED_PATH.
 *
 * usage: xs-bench <ops> <path>
 * Prints one JSON object: {"ops":N,"write_ops_per_sec":W,"read_ops_per_sec":R}.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xenstore.h>

/* Same value as the TypeScript side writes, so both move the same bytes. */
static const char value[] = "xenode-bench-value";

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "xs-bench: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    struct xs_handle *h;
    unsigned long ops, i;
    const char *path;
    unsigned int len;
    double t0, t1, t2;
    void *got;

    if (argc != 3) {
        fprintf(stderr, "usage: xs-bench <ops> <path>\n");
        return 2;
    }
    ops = strtoul(argv[1], NULL, 10);
    path = argv[2];
    if (ops == 0) {
        fprintf(stderr, "xs-bench: ops must be a positive integer\n");
        return 2;
    }

    h = xs_open(0);
    if (!h) {
        const char *sock = getenv("XENSTORED_PATH");

        fprintf(stderr, "xs-bench: xs_open (XENSTORED_PATH=%s): %s\n", sock ? sock : "(unset)", strerror(errno));
        return 1;
    }

    t0 = now();
    for (i = 0; i < ops; i++)
        if (!xs_write(h, XBT_NULL, path, value, sizeof(value) - 1))
            return fail("xs_write", path);
    t1 = now();
    for (i = 0; i < ops; i++) {
        got = xs_read(h, XBT_NULL, path, &len);
        if (!got)
            return fail("xs_read", path);
        free(got);
    }
    t2 = now();

    xs_close(h);
    printf("{\"ops\":%lu,\"write_ops_per_sec\":%.1f,\"read_ops_per_sec\":%.1f}\n",
           ops, ops / (t1 - t0), ops / (t2 - t1));
    return 0;
}
