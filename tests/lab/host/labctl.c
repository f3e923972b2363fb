/*
 * labctl.c -- host-side client for the lab guest's sockets (no python/socat needed).
 *
 *   labctl chan SOCK CMD [IDLE_TIMEOUT_S]
 *       Connects to the QEMU UNIX-socket chardev behind the guest's ttyS1, first
 *       synchronises with "ping <nonce>" (everything before "pong <nonce>"/"END" is stale
 *       output of an earlier, aborted query and is discarded), then sends CMD and copies
 *       the answer lines, without the final "END", to stdout.
 *       Exit: 0 ok, 3 guest answered "ERR ...", 2 timeout / connection error, 1 usage.
 *       IDLE_TIMEOUT_S (default 60) is the longest silence tolerated.
 *
 *   labctl qmp SOCK COMMAND [ARGUMENTS-JSON]
 *       Negotiates QMP capabilities and runs one command; prints the reply line.
 *       Exit: 0 on {"return":...}, 4 on {"error":...}, 2 on timeout / connection error.
 *
 *   labctl kallsyms-rebase KALLSYMS TEXT
 *       Prints KALLSYMS (of one boot) moved to another boot of the same kernel build whose
 *       _text is TEXT (hex): every kernel-image symbol shifts by the KASLR slide, per-CPU and
 *       other addresses outside the image do not. For guests whose channel is too slow to
 *       send their own (the VT-x lab's L2).
 *
 * Socket paths longer than sun_path are handled by chdir()ing to their directory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "labctl";
static int idle_ms = 60000;

static void die(int code, const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(code);
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    const char *p = path;
    char *copy = NULL;
    if (strlen(path) >= sizeof sa.sun_path) {
        copy = strdup(path);
        char *copy2 = strdup(path);
        if (!copy || !copy2 || chdir(dirname(copy)) != 0)
            die(2, "cannot chdir to the directory of %s", path);
        p = basename(copy2);
        if (strlen(p) >= sizeof sa.sun_path)
            die(2, "socket name too long: %s", path);
    }
    memcpy(sa.sun_path, p, strlen(p) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die(2, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die(2, "connect %s failed (is the guest running?)", path);
    free(copy);
    struct timeval tv = { idle_ms / 1000, (idle_ms % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
        die(2, "setsockopt: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die(2, "send: %s", strerror(errno));
        off += (size_t)n;
    }
}

/* line reader with idle timeout */
static char rbuf[1 << 16];
static size_t rlen, rpos;
static char *line;
static size_t linecap;

/* returns the next line (without \r\n) or NULL on EOF; dies on timeout */
static char *read_line(int fd)
{
    size_t ll = 0;
    for (;;) {
        while (rpos < rlen) {
            char c = rbuf[rpos++];
            if (c == '\r')
                continue;
            if (ll + 1 >= linecap) {
                linecap = linecap ? linecap * 2 : 4096;
                line = realloc(line, linecap);
                if (!line)
                    die(2, "%s", "out of memory");
            }
            if (c == '\n') {
                line[ll] = 0;
                return line;
            }
            line[ll++] = c;
        }
        /* Read promptly and cheaply (one syscall per wake-up; the idle timeout is
         * SO_RCVTIMEO): QEMU's serial backend sends one byte per write(), each costing a
         * socket buffer's worth of accounting, and QEMU stalls once that buffer is full. */
        ssize_t n = read(fd, rbuf, sizeof rbuf);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            char secs[32];
            snprintf(secs, sizeof secs, "%d", idle_ms / 1000);
            die(2, "timeout: no data from the guest for %s s", secs);
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(2, "read: %s", strerror(errno));
        if (n == 0)
            return NULL;
        rlen = (size_t)n;
        rpos = 0;
    }
}

static int do_chan(const char *sock, const char *cmd)
{
    if (!*cmd || strchr(cmd, '\n') || strchr(cmd, '\r'))
        die(1, "bad command: %s", cmd);
    int fd = connect_unix(sock);
    char nonce[64], ping[96], pong[96];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(nonce, sizeof nonce, "%ld-%ld-%ld", (long)getpid(), (long)ts.tv_sec, (long)ts.tv_nsec);
    /* The leading newline terminates any partial line left in the guest by a client that
     * went away mid-request (e.g. while the VM was paused); the guest ignores empty lines. */
    snprintf(ping, sizeof ping, "\nping %s\n", nonce);
    snprintf(pong, sizeof pong, "pong %s", nonce);
    send_all(fd, ping);
    char *l;
    while ((l = read_line(fd)) && strcmp(l, pong) != 0)
        ;  /* stale output */
    if (!l || !(l = read_line(fd)) || strcmp(l, "END") != 0)
        die(2, "%s", "channel closed or out of sync during ping");
    send_all(fd, cmd);
    send_all(fd, "\n");
    int first = 1, err = 0;
    while ((l = read_line(fd))) {
        if (strcmp(l, "END") == 0) {
            if (fflush(stdout) != 0)
                die(2, "%s", "write to stdout failed");
            close(fd);
            return err ? 3 : 0;
        }
        if (first && strncmp(l, "ERR ", 4) == 0) {
            err = 1;
            fprintf(stderr, "%s: guest: %s\n", prog, l);
        }
        first = 0;
        fputs(l, stdout);
        fputc('\n', stdout);
    }
    die(2, "%s", "channel closed before END");
    return 2;
}

static int do_qmp(const char *sock, const char *cmd, const char *args)
{
    int fd = connect_unix(sock);
    char *l = read_line(fd);  /* greeting */
    if (!l || !strstr(l, "\"QMP\""))
        die(2, "no QMP greeting on %s", sock);
    send_all(fd, "{\"execute\":\"qmp_capabilities\"}\n");
    while ((l = read_line(fd)) && !strstr(l, "\"return\"") && !strstr(l, "\"error\""))
        ;
    if (!l || strstr(l, "\"error\""))
        die(2, "qmp_capabilities failed: %s", l ? l : "EOF");
    char req[4096];
    if (args && *args)
        snprintf(req, sizeof req, "{\"execute\":\"%s\",\"arguments\":%s}\n", cmd, args);
    else
        snprintf(req, sizeof req, "{\"execute\":\"%s\"}\n", cmd);
    send_all(fd, req);
    while ((l = read_line(fd))) {
        if (strstr(l, "\"return\"")) {
            puts(l);
            return 0;
        }
        if (strstr(l, "\"error\"")) {
            puts(l);
            return 4;
        }
        /* asynchronous events: ignore */
    }
    if (strcmp(cmd, "quit") == 0)
        return 0;  /* QEMU may close before answering */
    die(2, "%s", "QMP connection closed");
    return 2;
}

/* x86-64: the kernel image lives in [__START_KERNEL_map, MODULES_VADDR) */
#define KERNEL_IMAGE_START 0xffffffff80000000ULL
#define KERNEL_IMAGE_END 0xffffffffc0000000ULL

static int kallsyms_rebase(const char *path, const char *text_hex)
{
    char line[512], name[400], type;
    unsigned long long addr, ref = 0, want = strtoull(text_hex, NULL, 16);
    FILE *f = fopen(path, "r");

    if (!f)
        die(1, "cannot open %s", path);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%llx %c %399s", &addr, &type, name) == 3 && strcmp(name, "_text") == 0)
            ref = addr;
    if (!ref || !want)
        die(1, "%s", "no _text in the symbol list, or no TEXT");
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        char *rest;
        addr = strtoull(line, &rest, 16);
        if (addr >= KERNEL_IMAGE_START && addr < KERNEL_IMAGE_END)
            addr += want - ref;
        printf("%016llx%s", addr, rest);
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "kallsyms-rebase") == 0)
        return kallsyms_rebase(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "chan") == 0) {
        if (argc >= 5)
            idle_ms = atoi(argv[4]) * 1000;
        if (idle_ms <= 0)
            idle_ms = 60000;
        return do_chan(argv[2], argv[3]);
    }
    if (argc >= 4 && strcmp(argv[1], "qmp") == 0) {
        idle_ms = 30000;
        return do_qmp(argv[2], argv[3], argc >= 5 ? argv[4] : NULL);
    }
    fprintf(stderr,
            "usage: %s chan SOCK CMD [IDLE_TIMEOUT_S]\n"
            "       %s qmp SOCK COMMAND [ARGUMENTS-JSON]\n"
            "       %s kallsyms-rebase KALLSYMS TEXT\n",
            prog, prog, prog);
    return 1;
}
