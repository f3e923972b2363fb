/*
 * labguest.c -- /init of the ImEE lab guest.
 *
 * 1. mounts proc, sysfs, devtmpfs;
 * 2. spawns a fixed workload of long-lived processes with known names, uids/gids and
 *    capability sets (see `workers[]`), waits until every one of them reports that its
 *    credentials are final, and prints "LAB READY" on the console (ttyS0);
 * 3. serves a line-based request/response channel on /dev/ttyS1 (raw tty): the host
 *    writes one command line, the guest writes the answer followed by a line "END".
 *
 * Commands: ping [TOKEN] | tasks | kallsyms | kallsyms.gz | syscalls | info | spawn N | flip | rk | help
 * (see tests/lab/README.md for formats).  The server never forks while answering
 * `tasks`, `syscalls` or `info`; `kallsyms.gz` runs busybox gzip as a short-lived child.
 *
 * Static, no threads; build: gcc -O2 -Wall -Wextra -static -o labguest labguest.c
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CHAN_DEV "/dev/ttyS1"
#define LATE_UID 3000
#define LATE_GID 3000

/* ------------------------------------------------------------------ console */

/* Formats one line, truncated to fit, with its newline; returns its length or -1. */
static int format_line(char *buf, size_t size, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, size - 1, fmt, ap);
    if (n < 0)
        return -1;
    if (n > (int)size - 2)
        n = (int)size - 2;
    buf[n++] = '\n';
    return n;
}

static void con(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void con(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = format_line(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    ssize_t w = write(STDOUT_FILENO, buf, (size_t)n);
    (void)w;
}

/* ------------------------------------------------------------------ workload */

enum special {
    SP_NONE = 0,
    SP_CAPBND,   /* root, drops some capabilities from its bounding set */
    SP_CAPEFF,   /* root, effective set reduced with capset() */
    SP_AMBIENT,  /* non-root service with an inheritable+ambient capability (keepcaps) */
    SP_ROOTINH,  /* root with a non-empty inheritable set and an ambient capability */
    SP_LATE,     /* starts as root, sleeps 2 s, then setresgid/setresuid(3000) */
};

struct worker {
    const char *name;       /* <= 15 chars, no blanks */
    int parent;             /* index of parent worker, -1: child of init */
    uid_t ru, eu, su, fsu;
    gid_t rg, eg, sg, fsg;
    enum special sp;
};

#define U4(a, b, c, d) a, b, c, d
static const struct worker workers[] = {
    /*  name               parent  ruid  euid  suid  fsuid        rgid  egid  sgid  fsgid   */
    { "lab-w00",           -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_NONE },
    { "lab-w01",           -1, U4(1000, 1000, 1000, 1000),    U4(1000, 1000, 1000, 1000),    SP_NONE },
    { "lab_w02",           -1, U4(1001, 1001, 1001, 1001),    U4(1001, 1001, 1001, 1001),    SP_NONE },
    { "labw03",            -1, U4(1002, 1002, 1002, 1002),    U4(1002, 1002, 1002, 1002),    SP_NONE },
    { "nobody-job",        -1, U4(65534, 65534, 65534, 65534), U4(65534, 65534, 65534, 65534), SP_NONE },
    { "svc2000",           -1, U4(2000, 2000, 2000, 2000),    U4(2000, 2000, 2000, 2000),    SP_NONE },
    { "mixgid_1000",       -1, U4(1000, 1000, 1000, 1000),    U4(1000, 2000, 1001, 1002),    SP_NONE },
    /* all eight ids pairwise different within uid and within gid */
    { "all-distinct",      -1, U4(1000, 1001, 1002, 2000),    U4(1000, 1001, 1002, 2000),    SP_NONE },
    /* set-uid-root style: real user, effective root */
    { "suidroot-1001",     -1, U4(1001, 0, 1001, 0),          U4(1001, 1001, 1001, 1001),    SP_NONE },
    /* root that temporarily dropped its euid (seteuid style) */
    { "seteuid_drop",      -1, U4(0, 1000, 0, 1000),          U4(0, 1000, 0, 1000),          SP_NONE },
    /* fsuid differs from every other uid */
    { "fsonly.1002",       -1, U4(1002, 1002, 1002, 1000),    U4(1002, 1002, 1002, 2000),    SP_NONE },
    /* a small process tree: 11 -> {12, 13}, 13 -> 14 -> 15 */
    { "tree-root",         -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_NONE },
    { "tree-leaf-a",       11, U4(1000, 1000, 1000, 1000),    U4(1000, 1000, 1000, 1000),    SP_NONE },
    { "tree_mid",          11, U4(1001, 1001, 1001, 1001),    U4(2000, 2000, 2000, 2000),    SP_NONE },
    { "tree-deep1",        13, U4(1002, 1002, 1002, 1002),    U4(1002, 1002, 1002, 1002),    SP_NONE },
    { "tree-deep2",        14, U4(65534, 65534, 65534, 65534), U4(65534, 65534, 65534, 65534), SP_NONE },
    /* a service manager with four children of different users */
    { "supervisor",        -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_NONE },
    { "sup-child0",        16, U4(1000, 1000, 1000, 1000),    U4(1001, 1001, 1001, 1001),    SP_NONE },
    { "sup-child1",        16, U4(1001, 1001, 1001, 1001),    U4(1000, 1000, 1000, 1000),    SP_NONE },
    { "sup_child2",        16, U4(2000, 2000, 2000, 2000),    U4(65534, 65534, 65534, 65534), SP_NONE },
    { "sup-child3",        16, U4(0, 0, 0, 0),                U4(1002, 1002, 1002, 1002),    SP_NONE },
    /* capabilities */
    { "capbnd-root",       -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_CAPBND },
    { "capeff-root",       -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_CAPEFF },
    { "ambient-www",       -1, U4(33, 33, 33, 33),            U4(33, 33, 33, 33),            SP_AMBIENT },
    { "rootinh",           -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_ROOTINH },
    /* credentials change 2 s after start */
    { "late-cred",         -1, U4(0, 0, 0, 0),                U4(0, 0, 0, 0),                SP_LATE },
    /* name edge cases: 15 characters, digits only, one character, dots/underscores */
    { "a23456789012345",   -1, U4(1000, 1000, 1000, 1000),    U4(1000, 1000, 1000, 1000),    SP_NONE },
    { "9000",              -1, U4(2000, 2000, 2000, 2000),    U4(2000, 2000, 2000, 2000),    SP_NONE },
    { "x",                 -1, U4(1001, 1001, 1001, 1001),    U4(1001, 1001, 1001, 1001),    SP_NONE },
    { "db_writer-01",      -1, U4(1002, 1002, 1002, 1002),    U4(2000, 2000, 2000, 2000),    SP_NONE },
    { "net.helper",        -1, U4(0, 0, 0, 0),                U4(65534, 65534, 65534, 65534), SP_NONE },
    { "cache_shard3",      -1, U4(1000, 1000, 1000, 1000),    U4(1002, 1002, 1002, 1002),    SP_NONE },
    { "UPPER-lower_9",     -1, U4(1001, 1001, 1001, 1001),    U4(1001, 1001, 1001, 1001),    SP_NONE },
    { "w-2000-a",          -1, U4(2000, 2000, 2000, 2000),    U4(2000, 2000, 2000, 2000),    SP_NONE },
    { "w-2000-b",          33, U4(2000, 2000, 2000, 2000),    U4(2000, 2000, 2000, 2000),    SP_NONE },
    { "w-65534",           -1, U4(65534, 65534, 65534, 65534), U4(65534, 65534, 65534, 65534), SP_NONE },
    { "idle_0",            -1, U4(0, 0, 0, 0),                U4(1000, 1000, 1000, 1000),    SP_NONE },
    { "idle_1",            -1, U4(1000, 1000, 1000, 1000),    U4(0, 0, 0, 0),                SP_NONE },
    { "rsgid-split",       -1, U4(1002, 1002, 1002, 1002),    U4(1002, 1000, 2000, 1000),    SP_NONE },
    { "ruid-split",        -1, U4(1000, 2000, 1001, 2000),    U4(1000, 1000, 1000, 1000),    SP_NONE },
};
#define NWORKERS ((int)(sizeof workers / sizeof workers[0]))

/* capabilities (numbers from linux/capability.h) */
static int cap_get(uint64_t *eff, uint64_t *prm, uint64_t *inh)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capget, &h, d) != 0)
        return -1;
    *eff = d[0].effective | (uint64_t)d[1].effective << 32;
    *prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
    *inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
    return 0;
}

static int cap_set(uint64_t eff, uint64_t prm, uint64_t inh)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    d[0].effective = (uint32_t)eff;   d[1].effective = (uint32_t)(eff >> 32);
    d[0].permitted = (uint32_t)prm;   d[1].permitted = (uint32_t)(prm >> 32);
    d[0].inheritable = (uint32_t)inh; d[1].inheritable = (uint32_t)(inh >> 32);
    return (int)syscall(SYS_capset, &h, d);
}

#define CAPBIT(c) ((uint64_t)1 << (c))

/* Set the 8 ids of the calling (root, fully capable) process. Returns 0 or -1. */
static int set_ids(const struct worker *w)
{
    if (setgroups(0, NULL) != 0)
        return con("labguest: %s: setgroups: %s", w->name, strerror(errno)), -1;
    if (setresgid(w->rg, w->eg, w->sg) != 0)
        return con("labguest: %s: setresgid: %s", w->name, strerror(errno)), -1;
    setfsgid(w->fsg);  /* still privileged: always succeeds */
    /* keep permitted caps across the uid change so that setfsuid() may pick any value */
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        return con("labguest: %s: KEEPCAPS: %s", w->name, strerror(errno)), -1;
    if (setresuid(w->ru, w->eu, w->su) != 0)
        return con("labguest: %s: setresuid: %s", w->name, strerror(errno)), -1;
    uint64_t eff, prm, inh;
    if (w->fsu != w->eu) {
        if (cap_get(&eff, &prm, &inh) != 0 || cap_set(eff | CAPBIT(CAP_SETUID), prm, inh) != 0)
            return con("labguest: %s: capset(SETUID): %s", w->name, strerror(errno)), -1;
        setfsuid(w->fsu);
        if (cap_get(&eff, &prm, &inh) != 0 || cap_set(eff & ~CAPBIT(CAP_SETUID), prm, inh) != 0)
            return con("labguest: %s: capset(restore): %s", w->name, strerror(errno)), -1;
    }
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    /* Without any root uid, end up with what a plain setresuid() would have given. */
    if (w->ru != 0 && w->eu != 0 && w->su != 0 && cap_set(0, 0, 0) != 0)
        return con("labguest: %s: capset(0): %s", w->name, strerror(errno)), -1;
    /* verify */
    uid_t r, e, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &e, &s) != 0 || getresgid(&gr, &ge, &gs) != 0)
        return -1;
    if (r != w->ru || e != w->eu || s != w->su || (uid_t)setfsuid((uid_t)-1) != w->fsu ||
        gr != w->rg || ge != w->eg || gs != w->sg || (gid_t)setfsgid((gid_t)-1) != w->fsg)
        return con("labguest: %s: credential check failed", w->name), -1;
    return 0;
}

static int do_special(const struct worker *w)
{
    uint64_t eff, prm, inh;
    switch (w->sp) {
    case SP_NONE:
        return 0;
    case SP_CAPBND: {
        static const int drop[] = { CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_BOOT, CAP_NET_RAW,
                                    CAP_MKNOD, CAP_SYS_TIME, CAP_BPF };
        for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
            if (prctl(PR_CAPBSET_DROP, drop[i], 0, 0, 0) != 0)
                return con("labguest: %s: CAPBSET_DROP %d: %s", w->name, drop[i], strerror(errno)), -1;
        return 0;
    }
    case SP_CAPEFF:
        if (cap_get(&eff, &prm, &inh) != 0)
            return -1;
        eff = CAPBIT(CAP_CHOWN) | CAPBIT(CAP_DAC_OVERRIDE) | CAPBIT(CAP_KILL) |
              CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_SETUID) | CAPBIT(CAP_SETGID);
        if (cap_set(eff, prm, inh) != 0)
            return con("labguest: %s: capset: %s", w->name, strerror(errno)), -1;
        return 0;
    case SP_AMBIENT:
    case SP_ROOTINH:
        if (w->sp == SP_AMBIENT) {
            /* non-root: only NET_BIND_SERVICE, in all of prm/inh/eff/ambient */
            uint64_t c = CAPBIT(CAP_NET_BIND_SERVICE);
            if (cap_set(c, c, c) != 0)
                return con("labguest: %s: capset: %s", w->name, strerror(errno)), -1;
        } else {
            if (cap_get(&eff, &prm, &inh) != 0 ||
                cap_set(eff, prm, CAPBIT(CAP_NET_ADMIN) | CAPBIT(CAP_SYS_PTRACE) | CAPBIT(CAP_NET_BIND_SERVICE)) != 0)
                return con("labguest: %s: capset: %s", w->name, strerror(errno)), -1;
            if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_PTRACE, 0, 0) != 0)
                return con("labguest: %s: ambient raise: %s", w->name, strerror(errno)), -1;
        }
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) != 0)
            return con("labguest: %s: ambient raise: %s", w->name, strerror(errno)), -1;
        return 0;
    case SP_LATE:
        sleep(2);
        if (setresgid(LATE_GID, LATE_GID, LATE_GID) != 0 || setresuid(LATE_UID, LATE_UID, LATE_UID) != 0)
            return con("labguest: %s: late setresuid: %s", w->name, strerror(errno)), -1;
        return 0;
    }
    return 0;
}

static int ready_wfd = -1;

static void spawn(int idx);

static void worker_main(int idx)
{
    const struct worker *w = &workers[idx];
    char ok = 'R';
    /* children first, while this process is still root */
    for (int j = 0; j < NWORKERS; j++)
        if (workers[j].parent == idx)
            spawn(j);
    if (prctl(PR_SET_NAME, w->name, 0, 0, 0) != 0)
        ok = 'E';
    /* SP_AMBIENT: the uid change must keep the permitted set, so set ids by hand */
    if (w->sp == SP_AMBIENT) {
        if (setgroups(0, NULL) != 0 || setresgid(w->rg, w->eg, w->sg) != 0 ||
            prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || setresuid(w->ru, w->eu, w->su) != 0 ||
            prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 || do_special(w) != 0)
            ok = 'E';
    } else if (w->sp == SP_LATE) {
        if (set_ids(w) != 0)
            ok = 'E';
        /* report "started" so the console shows progress; the real ready byte follows */
        if (ok == 'R' && do_special(w) != 0)
            ok = 'E';
    } else {
        if (do_special(w) != 0 || set_ids(w) != 0)
            ok = 'E';
    }
    if (ok != 'R')
        con("labguest: worker %s setup FAILED", w->name);
    ssize_t n = write(ready_wfd, &ok, 1);
    (void)n;
    close(ready_wfd);
    for (;;)
        pause();
}

static void spawn(int idx)
{
    pid_t pid = fork();
    if (pid < 0) {
        con("labguest: fork: %s", strerror(errno));
        char e = 'E';
        ssize_t n = write(ready_wfd, &e, 1);
        (void)n;
        return;
    }
    if (pid == 0)
        worker_main(idx);  /* never returns */
}

/* ------------------------------------------------------------------ output buffer */

static int out_fd = -1;
static char obuf[1 << 16];
static size_t olen;

static void out_flush(void)
{
    size_t off = 0;
    while (off < olen) {
        ssize_t n = write(out_fd, obuf + off, olen - off);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            break;  /* nothing sensible to do */
        }
        off += (size_t)n;
    }
    olen = 0;
}

static void out_write(const char *p, size_t n)
{
    while (n) {
        size_t room = sizeof obuf - olen;
        size_t k = n < room ? n : room;
        memcpy(obuf + olen, p, k);
        olen += k, p += k, n -= k;
        if (olen == sizeof obuf)
            out_flush();
    }
}

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n >= (int)sizeof buf)
        n = sizeof buf - 1;
    out_write(buf, (size_t)n);
}

/* ------------------------------------------------------------------ helpers */

/* read a whole (small or large) file into a malloc'ed, NUL-terminated buffer */
static char *slurp(const char *path, size_t *lenp)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 8192, len = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b)
            break;
        if (cap - len < 4096) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb, cap *= 2;
        }
        ssize_t n = read(fd, b + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(b);
            b = NULL;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (b) {
        b[len] = 0;
        if (lenp)
            *lenp = len;
    }
    return b;
}

/* value after "Key:" at the start of a line in a /proc status buffer, up to end of line */
static const char *status_field(const char *buf, const char *key, char *dst, size_t dstsz)
{
    size_t kl = strlen(key);
    const char *p = buf;
    while (p && *p) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            p += kl + 1;
            while (*p == '\t' || *p == ' ')
                p++;
            size_t i = 0;
            while (p[i] && p[i] != '\n' && i + 1 < dstsz) {
                dst[i] = p[i];
                i++;
            }
            dst[i] = 0;
            return dst;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return NULL;
}

/* ------------------------------------------------------------------ kallsyms / kcore */

struct sym { uint64_t addr; char name[64]; };

/* Look up several symbols at once; also returns the lowest address above `after->addr`
 * for the symbol named in `after` (0 if none). Returns 0 on success. */
static int kallsyms_lookup(struct sym *syms, int nsyms, const char *after_name, uint64_t *after_next)
{
    size_t len;
    char *ks = slurp("/proc/kallsyms", &len);
    if (!ks)
        return -1;
    uint64_t after_addr = 0;
    int have_after = 0;
    for (int i = 0; i < nsyms; i++)
        syms[i].addr = 0;
    /* pass 1: find the named symbols */
    for (char *p = ks; *p;) {
        char *nl = strchr(p, '\n');
        char *e;
        uint64_t a = strtoull(p, &e, 16);
        if (e != p && e[0] == ' ' && e[1] && e[2] == ' ') {
            char *name = e + 3;
            size_t nlen = nl ? (size_t)(nl - name) : strlen(name);
            char *tab = memchr(name, '\t', nlen);  /* module symbols: "name\t[mod]" */
            if (tab)
                nlen = (size_t)(tab - name);
            for (int i = 0; i < nsyms; i++)
                if (!syms[i].addr && strlen(syms[i].name) == nlen && memcmp(name, syms[i].name, nlen) == 0)
                    syms[i].addr = a;
            if (after_name && !have_after && strlen(after_name) == nlen && memcmp(name, after_name, nlen) == 0)
                after_addr = a, have_after = 1;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    /* pass 2: next higher address */
    if (after_next) {
        uint64_t best = 0;
        if (have_after)
            for (char *p = ks; *p;) {
                char *nl = strchr(p, '\n');
                char *e;
                uint64_t a = strtoull(p, &e, 16);
                if (e != p && a > after_addr && (best == 0 || a < best))
                    best = a;
                if (!nl)
                    break;
                p = nl + 1;
            }
        *after_next = best;
    }
    free(ks);
    return 0;
}

/* read `len` bytes of kernel virtual memory at `va` through /proc/kcore */
static int kcore_read(uint64_t va, void *dst, size_t len)
{
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    Elf64_Ehdr eh;
    int rc = -1;
    if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
        goto done;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + (uint64_t)i * sizeof ph)) != (ssize_t)sizeof ph)
            goto done;
        if (ph.p_type != PT_LOAD || va < ph.p_vaddr || va - ph.p_vaddr + len > ph.p_memsz)
            continue;
        size_t got = 0;
        while (got < len) {
            ssize_t n = pread(fd, (char *)dst + got, len - got, (off_t)(ph.p_offset + (va - ph.p_vaddr) + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                goto done;
            got += (size_t)n;
        }
        rc = 0;
        goto done;
    }
    errno = ENOENT;
done:
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------ commands */

static int cmp_pid(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void cmd_tasks(void)
{
    /* collect pids first (no allocation-heavy work while iterating) */
    int *pids = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir("/proc");
    if (!d) {
        out("ERR opendir /proc: %s\n", strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        if (!*s)
            continue;
        int numeric = 1;
        for (const char *q = s; *q; q++)
            if (!isdigit((unsigned char)*q))
                numeric = 0;
        if (!numeric)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            int *np = realloc(pids, cap * sizeof *np);
            if (!np)
                break;
            pids = np;
        }
        pids[n++] = atoi(s);
    }
    closedir(d);
    qsort(pids, n, sizeof *pids, cmp_pid);
    for (size_t i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
        char *st = slurp(path, NULL);
        if (!st)
            continue;  /* exited meanwhile */
        char name[128], ppid[32], uid[128], gid[128], ci[32], cp[32], ce[32], cb[32], ca[32];
        if (status_field(st, "Name", name, sizeof name) && status_field(st, "PPid", ppid, sizeof ppid) &&
            status_field(st, "Uid", uid, sizeof uid) && status_field(st, "Gid", gid, sizeof gid) &&
            status_field(st, "CapInh", ci, sizeof ci) && status_field(st, "CapPrm", cp, sizeof cp) &&
            status_field(st, "CapEff", ce, sizeof ce) && status_field(st, "CapBnd", cb, sizeof cb) &&
            status_field(st, "CapAmb", ca, sizeof ca)) {
            unsigned long u[4], g[4];
            if (sscanf(uid, "%lu %lu %lu %lu", &u[0], &u[1], &u[2], &u[3]) == 4 &&
                sscanf(gid, "%lu %lu %lu %lu", &g[0], &g[1], &g[2], &g[3]) == 4)
                out("%d %s %lu %lu %lu %lu %lu %lu %lu %lu %s %s %s %s %s %s\n", pids[i], ppid, u[0], u[1], u[2],
                    u[3], g[0], g[1], g[2], g[3], ci, cp, ce, cb, ca, name);
        }
        free(st);
    }
    free(pids);
}

static void cmd_kallsyms(void)
{
    size_t len;
    char *ks = slurp("/proc/kallsyms", &len);
    if (!ks) {
        out("ERR /proc/kallsyms: %s\n", strerror(errno));
        return;
    }
    out_write(ks, len);
    if (len && ks[len - 1] != '\n')
        out_write("\n", 1);
    free(ks);
}

/* kallsyms, gzip-compressed by busybox and base64-encoded (76 chars per line) */
static void cmd_kallsyms_gz(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        out("ERR pipe: %s\n", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        out("ERR fork: %s\n", strerror(errno));
        close(p[0]), close(p[1]);
        return;
    }
    if (pid == 0) {
        int in = open("/proc/kallsyms", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0 || dup2(p[1], 1) < 0)
            _exit(127);
        execl("/bin/busybox", "gzip", "-c", "-1", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char in[57 * 64];
    size_t have = 0;
    int eof = 0;
    while (!eof || have) {
        while (!eof && have < sizeof in) {
            ssize_t n = read(p[0], in + have, sizeof in - have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                eof = 1;
                break;
            }
            have += (size_t)n;
        }
        size_t use = eof ? have : have - have % 57;
        for (size_t off = 0; off < use; off += 57) {
            size_t k = use - off < 57 ? use - off : 57;
            char line[80];
            size_t o = 0;
            for (size_t i = 0; i < k; i += 3) {
                unsigned v = (unsigned)in[off + i] << 16;
                if (i + 1 < k)
                    v |= (unsigned)in[off + i + 1] << 8;
                if (i + 2 < k)
                    v |= in[off + i + 2];
                line[o++] = b64[(v >> 18) & 63];
                line[o++] = b64[(v >> 12) & 63];
                line[o++] = i + 1 < k ? b64[(v >> 6) & 63] : '=';
                line[o++] = i + 2 < k ? b64[v & 63] : '=';
            }
            line[o++] = '\n';
            out_write(line, o);
        }
        memmove(in, in + use, have - use);
        have -= use;
    }
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        out("ERR gzip failed (status %d)\n", status);
}

static void cmd_syscalls(void)
{
    struct sym s = { 0, "sys_call_table" };
    uint64_t next = 0;
    if (kallsyms_lookup(&s, 1, "sys_call_table", &next) != 0) {
        out("ERR /proc/kallsyms: %s\n", strerror(errno));
        return;
    }
    if (!s.addr || !next || next <= s.addr || next - s.addr > 8 * 4096) {
        out("ERR sys_call_table not found or no sane next symbol (0x%016" PRIx64 ", 0x%016" PRIx64 ")\n", s.addr,
            next);
        return;
    }
    size_t count = (size_t)((next - s.addr) / 8);
    uint64_t *tab = calloc(count, 8);
    if (!tab || kcore_read(s.addr, tab, count * 8) != 0) {
        out("ERR reading /proc/kcore at 0x%016" PRIx64 ": %s\n", s.addr, strerror(errno));
        free(tab);
        return;
    }
    out("count %zu\n", count);
    for (size_t i = 0; i < count; i++)
        out("%zu 0x%016" PRIx64 "\n", i, tab[i]);
    free(tab);
}

struct kinfo {
    char release[128], version[256], machine[128];
    int la57_cpu;
    int have_l5; unsigned l5;
    int have_pgdir; unsigned pgdir_shift;
    int have_pob; uint64_t page_offset_base;
    uint64_t text;
};

static void get_kinfo(struct kinfo *k)
{
    memset(k, 0, sizeof *k);
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(k->release, sizeof k->release, "%s", u.release);
        snprintf(k->version, sizeof k->version, "%s", u.version);
        snprintf(k->machine, sizeof k->machine, "%s", u.machine);
    }
    char *ci = slurp("/proc/cpuinfo", NULL);
    if (ci) {
        /* first "flags\t\t: ..." line */
        for (char *p = ci; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            if (strncmp(p, "flags", 5) != 0 || (p[5] != '\t' && p[5] != ' ' && p[5] != ':'))
                continue;
            char *nl = strchr(p, '\n');
            if (nl)
                *nl = 0;
            char *c = strchr(p, ':');
            for (char *t = c ? strtok(c + 1, " ") : NULL; t; t = strtok(NULL, " "))
                if (strcmp(t, "la57") == 0)
                    k->la57_cpu = 1;
            break;
        }
        free(ci);
    }
    struct sym s[4] = { { 0, "__pgtable_l5_enabled" }, { 0, "pgdir_shift" }, { 0, "page_offset_base" },
                        { 0, "_text" } };
    if (kallsyms_lookup(s, 4, NULL, NULL) == 0) {
        if (s[0].addr && kcore_read(s[0].addr, &k->l5, 4) == 0)
            k->have_l5 = 1;
        if (s[1].addr && kcore_read(s[1].addr, &k->pgdir_shift, 4) == 0)
            k->have_pgdir = 1;
        if (s[2].addr && kcore_read(s[2].addr, &k->page_offset_base, 8) == 0)
            k->have_pob = 1;
        k->text = s[3].addr;
    }
}

static void print_kinfo(const struct kinfo *k, void (*pr)(const char *, ...))
{
    pr("release %s", k->release);
    pr("version %s", k->version);
    pr("machine %s", k->machine);
    pr("cpu_la57 %d", k->la57_cpu);
    if (k->have_l5)
        pr("pgtable_l5_enabled %u", k->l5);
    else
        pr("pgtable_l5_enabled unknown");
    if (k->have_pgdir)
        pr("pgdir_shift %u", k->pgdir_shift);
    else
        pr("pgdir_shift unknown");
    if (k->have_pob)
        pr("page_offset_base 0x%016" PRIx64, k->page_offset_base);
    else
        pr("page_offset_base unknown");
    pr("paging_levels %s", k->have_pgdir ? (k->pgdir_shift == 48 ? "5" : k->pgdir_shift == 39 ? "4" : "?")
                                          : "unknown");
    pr("_text 0x%016" PRIx64, k->text);
}

static void out_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out_line(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = format_line(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    out_write(buf, (size_t)n);
}

static char con_prefix_buf[16];
static void con_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void con_info(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    con("%s%s", con_prefix_buf, buf);
}

/* spawn N: N more sleeping processes ("extra-NNNNN"), to grow the task list for benchmarks. */
static void cmd_spawn(const char *arg)
{
    static int extras;
    long n = arg ? strtol(arg, NULL, 10) : 0;
    if (n <= 0 || n > 20000) {
        out("ERR spawn needs a count between 1 and 20000\n");
        return;
    }
    for (long i = 0; i < n; ++i) {
        pid_t pid = fork();
        if (pid < 0) {
            out("ERR fork: %s\n", strerror(errno));
            return;
        }
        if (pid == 0) {
            char name[16];
            snprintf(name, sizeof name, "extra-%05d", extras % 100000);
            prctl(PR_SET_NAME, name, 0, 0, 0);
            for (;;)
                pause();
        }
        ++extras;
    }
    out("spawned %ld, %d extra processes in all\n", n, extras);
}

/*
 * flip start | flip stop: the consistency experiment's guest side. A process "flipper" maps, at
 * a high rate, a fresh anonymous page over FLIP_VA (mremap MREMAP_FIXED: the previous page is
 * unmapped and freed) holding its generation g and FLIP_TAG ^ g, then stores g at FLIP_CTL_VA.
 * An introspector that reads ctl, then FLIP_VA, then ctl again (g0, v, g1) must find
 * g0 <= v <= g1 + 1 with a valid tag, or nothing mapped; anything else is a stale translation.
 * Reply: "flip PID FLIP_VA FLIP_CTL_VA".
 */
#define FLIP_VA 0x7e0000000000UL
#define FLIP_CTL_VA 0x7e0000001000UL /* next page: another slot of a 64-entry TLB */
#define FLIP_TAG 0x50494c4645454d49ULL /* "IMEEFLIP" */
static pid_t flipper;

/* `ready` gets one byte once the control word and the first page are in place */
static void flipper_main(int ready)
{
    volatile uint64_t *ctl;

    prctl(PR_SET_NAME, "flipper", 0, 0, 0);
    ctl = mmap((void *)FLIP_CTL_VA, 4096, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (ctl == MAP_FAILED)
        _exit(1);
    for (uint64_t g = 1;; ++g) {
        uint64_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(1);
        p[0] = g;
        p[1] = FLIP_TAG ^ g;
        if (mremap(p, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)FLIP_VA) == MAP_FAILED)
            _exit(1);
        ctl[0] = g;
        if (g == 1) {
            if (write(ready, "r", 1) != 1)
                _exit(1);
            close(ready);
        }
    }
}

static void cmd_flip(const char *arg)
{
    if (arg && strcmp(arg, "stop") == 0) {
        if (flipper > 0) {
            kill(flipper, SIGKILL);
            waitpid(flipper, NULL, 0);
            flipper = 0;
        }
        out("flip stopped\n");
        return;
    }
    if (!arg || strcmp(arg, "start") != 0) {
        out("ERR flip start | flip stop\n");
        return;
    }
    if (flipper <= 0) {
        /* reply only once the flipper runs: an introspector may read its pages at once */
        int ready[2];
        char c;

        if (pipe(ready) != 0) {
            out("ERR pipe: %s\n", strerror(errno));
            return;
        }
        flipper = fork();
        if (flipper < 0) {
            out("ERR fork: %s\n", strerror(errno));
            close(ready[0]);
            close(ready[1]);
            return;
        }
        if (flipper == 0) {
            close(ready[0]);
            flipper_main(ready[1]);
        }
        close(ready[1]);
        if (read(ready[0], &c, 1) != 1) {
            close(ready[0]);
            waitpid(flipper, NULL, 0);
            flipper = 0;
            out("ERR flipper did not start\n");
            return;
        }
        close(ready[0]);
    }
    out("flip %d 0x%lx 0x%lx\n", (int)flipper, FLIP_VA, FLIP_CTL_VA);
}


/*
 * rk load [hide] [sct] [ftrace] [kprobe] [steal] [write] [write_now] | rk write | rk report | rk unload:
 * the lab rootkit (tests/lab/rootkit/imee_rk.ko, in the initramfs at RK_PATH). `load` forks one
 * victim per attack that needs a process (uid/gid 1000, sleeping): rk-hidden (hide: unlinked
 * from the task list; ftrace: kill() on it fails with ESRCH), rk-steal (steal: its cred pointers
 * set to init_cred), rk-write (write: its own cred's ids written to root, at load with write_now,
 * else on `rk write`); loads the module with those pids, and answers with "victim ROLE PID" lines,
 * the module's own report (/proc/imee_rk) and "kill_probe PID ERRNO" (kill(rk-hidden, 0) as the
 * guest sees it). `unload` removes the module (which restores everything) and kills the victims.
 */
#define RK_PATH "/lib/modules/imee_rk.ko"
#define RK_UID 1000
enum { RK_HIDDEN, RK_STEAL, RK_WRITE, RK_NVICTIMS };
static const char *const rk_names[RK_NVICTIMS] = { "rk-hidden", "rk-steal", "rk-write" };
static pid_t rk_victims[RK_NVICTIMS];
static int rk_loaded;

static pid_t rk_victim(const char *name)
{
    int ready[2];
    if (pipe(ready) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(ready[0]), close(ready[1]);
        return -1;
    }
    if (pid == 0) {
        close(ready[0]);
        prctl(PR_SET_NAME, name, 0, 0, 0);
        char ok = (setgroups(0, NULL) == 0 && setresgid(RK_UID, RK_UID, RK_UID) == 0 &&
                   setresuid(RK_UID, RK_UID, RK_UID) == 0) ? 'R' : 'E';
        if (write(ready[1], &ok, 1) != 1)
            _exit(1);
        close(ready[1]);
        for (;;)
            pause();
    }
    close(ready[1]);
    char c = 0;
    ssize_t n = read(ready[0], &c, 1);
    close(ready[0]);
    if (n != 1 || c != 'R') {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

static void rk_kill_victims(void)
{
    for (int i = 0; i < RK_NVICTIMS; i++)
        if (rk_victims[i] > 0) {
            kill(rk_victims[i], SIGKILL);
            waitpid(rk_victims[i], NULL, 0);
            rk_victims[i] = 0;
        }
}

static void rk_report(void)
{
    for (int i = 0; i < RK_NVICTIMS; i++)
        if (rk_victims[i] > 0)
            out("victim %s %d\n", rk_names[i], (int)rk_victims[i]);
    char *r = slurp("/proc/imee_rk", NULL);
    if (r) {
        out_write(r, strlen(r));
        free(r);
    }
    if (rk_victims[RK_HIDDEN] > 0) {
        int rc = kill(rk_victims[RK_HIDDEN], 0);
        out("kill_probe %d %d\n", (int)rk_victims[RK_HIDDEN], rc == 0 ? 0 : errno);
    }
}

static void cmd_rk(char *arg)
{
    char *sub = arg ? strtok(arg, " ") : NULL;
    if (!sub) {
        out("ERR rk load [hide] [sct] [ftrace] [kprobe] [steal] [write] [write_now] | rk write | rk report | rk unload\n");
        return;
    }
    if (strcmp(sub, "report") == 0) {
        rk_report();
        return;
    }
    if (strcmp(sub, "unload") == 0) {
        if (rk_loaded && syscall(SYS_delete_module, "imee_rk", O_NONBLOCK) != 0) {
            out("ERR delete_module: %s\n", strerror(errno));
            return;
        }
        rk_loaded = 0;
        rk_kill_victims();
        out("unloaded\n");
        return;
    }
    if (strcmp(sub, "write") == 0) {
        int fd = open("/sys/module/imee_rk/parameters/write_now", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "1", 1) != 1) {
            out("ERR write_now: %s\n", strerror(errno));
            if (fd >= 0)
                close(fd);
            return;
        }
        close(fd);
        rk_report();
        return;
    }
    if (strcmp(sub, "load") != 0) {
        out("ERR rk: unknown subcommand %s\n", sub);
        return;
    }
    if (rk_loaded) {
        out("ERR rk: already loaded (rk unload first)\n");
        return;
    }
    int hide = 0, sct = 0, ftr = 0, kp = 0, steal = 0, wr = 0, wnow = 0;
    for (char *w; (w = strtok(NULL, " "));) {
        if (strcmp(w, "hide") == 0) hide = 1;
        else if (strcmp(w, "sct") == 0) sct = 1;
        else if (strcmp(w, "ftrace") == 0) ftr = 1;
        else if (strcmp(w, "kprobe") == 0) kp = 1;
        else if (strcmp(w, "steal") == 0) steal = 1;
        else if (strcmp(w, "write") == 0) wr = 1;
        else if (strcmp(w, "write_now") == 0) wr = wnow = 1;
        else {
            out("ERR rk load: unknown attack %s\n", w);
            return;
        }
    }
    int need[RK_NVICTIMS] = { hide || ftr, steal, wr };
    for (int i = 0; i < RK_NVICTIMS; i++)
        if (need[i] && rk_victims[i] <= 0 && (rk_victims[i] = rk_victim(rk_names[i])) <= 0) {
            rk_victims[i] = 0;
            rk_kill_victims();
            out("ERR rk: victim %s did not start\n", rk_names[i]);
            return;
        }
    char params[256];
    snprintf(params, sizeof params,
             "hide_pid=%d sct=%d ftrace=%d kprobe=%d steal_pid=%d write_pid=%d write_now=%d",
             hide ? (int)rk_victims[RK_HIDDEN] : 0, sct, ftr, kp, steal ? (int)rk_victims[RK_STEAL] : 0,
             wr ? (int)rk_victims[RK_WRITE] : 0, wnow);
    /* the ftrace hook alone still needs to know whose kill() to refuse, without hiding it */
    if (ftr && !hide) {
        out("ERR rk load: ftrace needs hide (it refuses kill() on the hidden process)\n");
        rk_kill_victims();
        return;
    }
    int fd = open(RK_PATH, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, params, 0) != 0) {
        out("ERR finit_module %s (%s): %s\n", RK_PATH, params, strerror(errno));
        if (fd >= 0)
            close(fd);
        rk_kill_victims();
        return;
    }
    close(fd);
    rk_loaded = 1;
    out("params %s\n", params);
    rk_report();
}

static void handle(char *line)
{
    char *arg = strchr(line, ' ');
    if (arg)
        *arg++ = 0;
    if (strcmp(line, "ping") == 0) {
        if (arg && *arg)
            out("pong %s\n", arg);
        else
            out("pong\n");
    } else if (strcmp(line, "tasks") == 0) {
        cmd_tasks();
    } else if (strcmp(line, "kallsyms") == 0) {
        cmd_kallsyms();
    } else if (strcmp(line, "kallsyms.gz") == 0) {
        cmd_kallsyms_gz();
    } else if (strcmp(line, "syscalls") == 0) {
        cmd_syscalls();
    } else if (strcmp(line, "info") == 0) {
        struct kinfo k;
        get_kinfo(&k);
        print_kinfo(&k, out_line);
    } else if (strcmp(line, "spawn") == 0) {
        cmd_spawn(arg);
    } else if (strcmp(line, "flip") == 0) {
        cmd_flip(arg);
    } else if (strcmp(line, "rk") == 0) {
        cmd_rk(arg);
    } else if (strcmp(line, "help") == 0) {
        out("commands: ping [TOKEN] | tasks | kallsyms | kallsyms.gz | syscalls | info | spawn N | flip start|stop | rk ... | help\n");
    } else {
        out("ERR unknown command: %s\n", line);
    }
    out("END\n");
    out_flush();
}

/* ------------------------------------------------------------------ main */

static void mount_fs(void)
{
    mkdir("/proc", 0555);
    mkdir("/sys", 0555);
    mkdir("/dev", 0755);
    if (mount("proc", "/proc", "proc", 0, NULL) != 0)
        con("labguest: mount /proc: %s", strerror(errno));
    if (mount("sysfs", "/sys", "sysfs", 0, NULL) != 0)
        con("labguest: mount /sys: %s", strerror(errno));
    if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) != 0 && errno != EBUSY)
        con("labguest: mount /dev: %s", strerror(errno));
}

static int open_chan(void)
{
    int fd;
    for (int tries = 0; (fd = open(CHAN_DEV, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0; tries++) {
        if (tries == 50) {
            con("labguest: open %s: %s", CHAN_DEV, strerror(errno));
            return -1;
        }
        usleep(100000);
    }
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);  /* no echo, no ICRNL/ONLCR, 8 bit */
        t.c_cflag |= CLOCAL | CREAD;
        t.c_cflag &= ~(tcflag_t)CRTSCTS;
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        cfsetispeed(&t, B115200);
        cfsetospeed(&t, B115200);
        if (tcsetattr(fd, TCSANOW, &t) != 0)
            con("labguest: tcsetattr: %s", strerror(errno));
    } else {
        con("labguest: tcgetattr %s: %s", CHAN_DEV, strerror(errno));
    }
    tcflush(fd, TCIOFLUSH);
    return fd;
}

int main(void)
{
    /* stdio on the console even if the initramfs lacks /dev/console */
    mount_fs();
    if (fcntl(STDOUT_FILENO, F_GETFD) < 0) {
        int c = open("/dev/console", O_RDWR | O_NOCTTY);
        if (c >= 0) {
            dup2(c, 0), dup2(c, 1), dup2(c, 2);
            if (c > 2)
                close(c);
        }
    }
    setenv("PATH", "/bin:/sbin", 1);
    signal(SIGPIPE, SIG_IGN);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    con("labguest: starting %d workers", NWORKERS);

    int rp[2];
    if (pipe(rp) != 0) {
        con("labguest: pipe: %s", strerror(errno));
        for (;;)
            pause();
    }
    ready_wfd = rp[1];
    for (int i = 0; i < NWORKERS; i++)
        if (workers[i].parent < 0)
            spawn(i);
    close(rp[1]);
    ready_wfd = -1;

    /* wait for one status byte per worker (or EOF/timeout) */
    int good = 0, bad = 0;
    while (good + bad < NWORKERS) {
        struct pollfd pf = { rp[0], POLLIN, 0 };
        int r = poll(&pf, 1, 30000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        char buf[64];
        ssize_t n = read(rp[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            buf[i] == 'R' ? good++ : bad++;
    }
    close(rp[0]);

    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    struct kinfo k;
    get_kinfo(&k);
    snprintf(con_prefix_buf, sizeof con_prefix_buf, "LAB INFO ");
    print_kinfo(&k, con_info);

    out_fd = open_chan();
    if (good == NWORKERS && out_fd >= 0) {
        con("LAB READY workers=%d setup=%.1fs", good, dt);
    } else {
        con("LAB FAILED workers ok=%d failed=%d missing=%d chan=%s", good, bad, NWORKERS - good - bad,
            out_fd >= 0 ? "ok" : "none");
    }
    if (out_fd < 0)
        for (;;)
            pause();

    /* serve */
    char line[4096];
    size_t ll = 0;
    int overflow = 0;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)  /* reap anything that died */
            ;
        /* a partial line older than 2 s (guest time) is a leftover of a vanished client */
        if (ll > 0 || overflow) {
            struct pollfd pf = { out_fd, POLLIN, 0 };
            if (poll(&pf, 1, 2000) == 0) {
                ll = 0;
                overflow = 0;
                continue;
            }
        }
        char buf[512];
        ssize_t n = read(out_fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            con("labguest: read %s: %s", CHAN_DEV, strerror(errno));
            sleep(1);
            continue;
        }
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\r')
                continue;
            if (c != '\n') {
                if (ll + 1 < sizeof line)
                    line[ll++] = c;
                else
                    overflow = 1;
                continue;
            }
            line[ll] = 0;
            if (overflow) {
                out("ERR line too long\nEND\n");
                out_flush();
            } else if (ll > 0) {
                handle(line);
            }
            ll = 0;
            overflow = 0;
        }
    }
}
