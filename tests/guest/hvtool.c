/*
 * hvtool: the guest-side helper for what busybox lacks.
 *
 * Built with `gcc -static -O2 -pthread` by build-initramfs.sh and installed
 * as /bin/hvtool in the initramfs. Every timing subcommand prints one line
 * of decimal numbers on stdout (nanoseconds first) so the shell scenarios can
 * turn it into an "@@HV" result line without parsing anything else. Any
 * failure prints one line on stderr naming the call and errno, and exits 1.
 *
 * Subcommands:
 *   now                          CLOCK_MONOTONIC in ns
 *   time CMD [ARG...]            run CMD with stdout/stderr to /dev/null; prints "ns exitcode"
 *   mkfiles DIR N                create DIR/f000000.. (O_CREAT|O_EXCL, close); prints ns
 *   statfiles DIR N              lstat each of them; prints ns
 *   unlinkfiles DIR N            unlink each of them; prints ns
 *   seqwrite FILE MIB            write MIB blocks of 1 MiB (O_CREAT|O_TRUNC), fsync; prints "ns bytes"
 *   seqread FILE                 read the file in 1 MiB blocks; prints "ns bytes"
 *   randread FILE QD COUNT [direct]
 *                                COUNT random 4 KiB preads at 4 KiB-aligned offsets from QD
 *                                threads (queue depth QD), O_DIRECT when "direct"; prints "ns count"
 *   rename2 OLD NEW noreplace|exchange
 *                                renameat2(2); prints "0" or the errno number
 *   fsync FILE                   open O_RDWR, fsync, close; prints "0" or the errno number
 *   pattern FILE MIB SEED        write MIB MiB of a deterministic xorshift stream (no fsync)
 *   seek FILE data|hole OFFSET   lseek(SEEK_DATA/SEEK_HOLE); prints the offset or "-errno"
 *   copyrange SRC DST            copy_file_range(2) of the whole of SRC into DST (created);
 *                                prints "bytes" or "-errno"
 *   lock FILE START LEN r|w|u set|wait [UNTIL]
 *                                fcntl F_SETLK (set) or F_SETLKW (wait) of a POSIX byte-range lock
 *                                (LEN 0: to the end); prints "0" or the errno number as soon as the call
 *                                returns; with UNTIL, then keeps the file (and the lock) open until the
 *                                file UNTIL exists
 *   crashload DIR STOP           until the file STOP exists: create DIR/fN (O_CREAT|O_TRUNC) with four
 *                                4 KiB blocks of a pattern the host can recompute (byte k of block b is
 *                                (N*131 + b*7 + k) & 255), fsync, close; re-read fN/2 and compare; list DIR
 *                                every 4th round; write and re-read 8 bytes through one handle opened
 *                                before the first round; read one 4 KiB block (O_DIRECT, so the read reaches
 *                                the daemon) of DIR/ghost, a file opened and unlinked before the first round,
 *                                and compare. EIO from the create is the one failure the vdev's
 *                                crash recovery allows (a CREATE in flight at the crash): counted, retried.
 *                                Prints "rounds eio_create errors"; every other failure is printed on
 *                                stderr and counted; exits 1 when there was any
 *   getlk FILE START LEN r|w     fcntl F_GETLK; prints "unlocked" or "TYPE START LEN PID" of the lock
 *                                in the way (TYPE r or w)
 *   fsop NAME OP ARG...          one call, printed as "NAME ok" or "NAME ERRNO" (ENOENT, EACCES, EEXIST,
 *                                ENOTSUP, or the number): open PATH r|rc|ac|xc|wc (read; read+creat;
 *                                append+creat; creat+excl; write+creat), mkdir PATH, symlink TARGET PATH,
 *                                link OLD NEW, mkfifo PATH, unlink PATH, rmdir PATH, rename OLD NEW,
 *                                exchange OLD NEW, noreplace OLD NEW, setxattr PATH, chmod PATH, tmpfile DIR,
 *                                noatime PATH (read a byte through O_NOATIME), mmap PATH (write a byte
 *                                through a shared writable mapping and msync it; ENODEV when refused)
 *   runas UID GID[,SUPP...] COMMAND ARG...
 *                                setgroups (the SUPP gids, else none), setresgid, setresuid, then runs the
 *                                hvtool COMMAND in this process (no exec: the initramfs's files are root's)
 *   xattr set|get|remove PATH NAME [VALUE]
 *                                one xattr call (l-forms, no symlink followed); prints "ok", the value
 *                                (get), or the errno name
 *   xattr list PATH              listxattr(2); prints the names sorted, comma-separated ("-" for none), or
 *                                the errno name
 *   setacl PATH access|default SPEC
 *                                writes system.posix_acl_access/default in the kernel's binary form from SPEC,
 *                                comma-separated TAG:ID:PERM with TAG u, g, m or o, ID empty for the owner
 *                                entries, PERM an octal digit (u::6,u:1001:6,g::4,m::6,o::0); prints "ok" or
 *                                the errno name
 *   getacl PATH access|default   reads that ACL and prints it in the same form, or the errno name
 *   runexec UID GID CMD [ARG...] drops supplementary groups, sets gid then uid, and execs CMD (any program)
 *   stallwatch MAILBOX           reads the first 4 KiB of MAILBOX with O_DIRECT (each read is a request the
 *                                daemon serves) back to back until it starts with "s"; the host writes
 *                                "b N" into it before its N-th restart and "d N" after. Prints one line
 *                                "N ns reads" per restart: the longest time between two completed reads
 *                                where the earlier one saw "b N" (the read that waited for the new daemon
 *                                ends that gap), then "idle ns reads": the longest gap of all other reads
 *   deadlock FILE                two processes: the parent locks byte 0 and the child byte 1; the parent
 *                                then waits for byte 1, and a second later the child waits for byte 0;
 *                                prints "parent=E child=E" with each F_SETLKW's result (0 or errno)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <grp.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define BLOCK 4096

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int die(const char *what, const char *arg)
{
    fprintf(stderr, "hvtool: %s %s: %s (errno %d)\n", what, arg ? arg : "", strerror(errno), errno);
    exit(1);
}

static int usage(void)
{
    fprintf(stderr, "hvtool: unknown or incomplete subcommand; see the comment at the top of hvtool.c\n");
    return 2;
}

static void name_of(char *buf, size_t len, const char *dir, long i)
{
    snprintf(buf, len, "%s/f%06ld", dir, i);
}

static int cmd_files(const char *op, const char *dir, long n)
{
    char path[4096];
    struct stat st;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        name_of(path, sizeof path, dir, i);
        if (op[0] == 'm') {
            int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
            if (fd < 0) die("open", path);
            close(fd);
        } else if (op[0] == 's') {
            if (lstat(path, &st) != 0) die("lstat", path);
        } else {
            if (unlink(path) != 0) die("unlink", path);
        }
    }
    printf("%llu\n", (unsigned long long)(now_ns() - t0));
    return 0;
}

static int cmd_seqwrite(const char *file, long mib)
{
    char *buf = aligned_alloc(BLOCK, MIB);
    if (!buf) die("aligned_alloc", NULL);
    for (size_t i = 0; i < MIB; i++) buf[i] = (char)(i * 131 + 7);
    uint64_t t0 = now_ns();
    int fd = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) die("open", file);
    long long total = 0;
    for (long i = 0; i < mib; i++) {
        buf[0] = (char)i; /* every block differs, so nothing can dedupe it */
        ssize_t done = 0;
        while (done < MIB) {
            ssize_t w = write(fd, buf + done, MIB - done);
            if (w < 0) die("write", file);
            done += w;
        }
        total += done;
    }
    if (fsync(fd) != 0) die("fsync", file);
    close(fd);
    printf("%llu %lld\n", (unsigned long long)(now_ns() - t0), total);
    return 0;
}

static int cmd_seqread(const char *file)
{
    char *buf = aligned_alloc(BLOCK, MIB);
    if (!buf) die("aligned_alloc", NULL);
    uint64_t t0 = now_ns();
    int fd = open(file, O_RDONLY);
    if (fd < 0) die("open", file);
    long long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, MIB);
        if (r < 0) die("read", file);
        if (r == 0) break;
        total += r;
    }
    close(fd);
    printf("%llu %lld\n", (unsigned long long)(now_ns() - t0), total);
    return 0;
}

struct rr {
    int fd;
    long count;
    uint64_t blocks;
    uint64_t seed;
    int err;
};

static void *rr_thread(void *p)
{
    struct rr *a = p;
    char *buf = aligned_alloc(BLOCK, BLOCK);
    uint64_t x = a->seed;
    for (long i = 0; i < a->count; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        off_t off = (off_t)(x % a->blocks) * BLOCK;
        if (pread(a->fd, buf, BLOCK, off) != BLOCK) { a->err = errno ? errno : EIO; break; }
    }
    free(buf);
    return NULL;
}

static int cmd_randread(const char *file, int qd, long count, int direct)
{
    int fd = open(file, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) die("open", file);
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat", file);
    if (st.st_size < BLOCK) { errno = EINVAL; die("file smaller than 4 KiB", file); }
    if (qd < 1 || qd > 256) { errno = EINVAL; die("queue depth must be 1..256", NULL); }
    pthread_t th[256];
    struct rr args[256];
    uint64_t t0 = now_ns();
    for (int i = 0; i < qd; i++) {
        args[i] = (struct rr){ fd, count / qd, (uint64_t)st.st_size / BLOCK, 0x9e3779b97f4a7c15ull * (i + 1), 0 };
        if (pthread_create(&th[i], NULL, rr_thread, &args[i]) != 0) die("pthread_create", NULL);
    }
    for (int i = 0; i < qd; i++) pthread_join(th[i], NULL);
    uint64_t dt = now_ns() - t0;
    for (int i = 0; i < qd; i++)
        if (args[i].err) { errno = args[i].err; die("pread", file); }
    close(fd);
    printf("%llu %ld\n", (unsigned long long)dt, (count / qd) * qd);
    return 0;
}

static int cmd_time(char **argv)
{
    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) die("fork", NULL);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) { dup2(null, 1); dup2(null, 2); }
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) die("waitpid", NULL);
    printf("%llu %d\n", (unsigned long long)(now_ns() - t0), WIFEXITED(status) ? WEXITSTATUS(status) : 128);
    return 0;
}

static int cmd_pattern(const char *file, long mib, uint64_t seed)
{
    uint64_t *buf = malloc(MIB);
    if (!buf) die("malloc", NULL);
    int fd = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) die("open", file);
    uint64_t x = seed ? seed : 1;
    for (long i = 0; i < mib; i++) {
        for (size_t j = 0; j < MIB / 8; j++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; buf[j] = x; }
        if (write(fd, buf, MIB) != MIB) die("write", file);
    }
    if (close(fd) != 0) die("close", file);
    return 0;
}

static void crash_block(unsigned char *b, long n, int block)
{
    for (int k = 0; k < 4096; k++) b[k] = (unsigned char)((n * 131 + block * 7 + k) & 255);
}

static int cmd_crashload(const char *dir, const char *stop)
{
    char path[4096], keep[4096];
    unsigned char want[4096], got[4096];
    long rounds = 0, eio = 0, errors = 0;
    snprintf(keep, sizeof keep, "%s/keep", dir);
    int kfd = open(keep, O_CREAT | O_RDWR, 0644);
    if (kfd < 0) die("open", keep);
    /* The unlinked-but-open file: 16 KiB of the pattern of round -1, then unlinked while open. Its reads bypass the
     * page cache (O_DIRECT), so each one is served by whichever daemon runs then. */
    char ghost[4096];
    snprintf(ghost, sizeof ghost, "%s/ghost", dir);
    unsigned char *gbuf = NULL;
    if (posix_memalign((void **)&gbuf, 4096, 4096) != 0) die("posix_memalign", ghost);
    int gfd = open(ghost, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (gfd < 0) die("open", ghost);
    for (int b = 0; b < 4; b++) {
        crash_block(want, -1, b);
        if (pwrite(gfd, want, 4096, (off_t)b * 4096) != 4096) die("pwrite", ghost);
    }
    if (fsync(gfd) != 0 || close(gfd) != 0) die("fsync", ghost);
    gfd = open(ghost, O_RDONLY | O_DIRECT);
    if (gfd < 0) die("open O_DIRECT", ghost);
    if (unlink(ghost) != 0) die("unlink", ghost);
#define CRASH_ERR(what, p) do { fprintf(stderr, "crashload: round %ld: %s %s: %s\n", rounds, what, p, strerror(errno)); errors++; } while (0)
    while (access(stop, F_OK) != 0) {
        if (errno != ENOENT) { CRASH_ERR("access", stop); if (errors > 50) break; }
        long n = rounds;
        snprintf(path, sizeof path, "%s/f%06ld", dir, n);
        int fd = -1;
        for (int tries = 0; tries < 5 && fd < 0; tries++) {
            fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
            if (fd < 0 && errno == EIO) { eio++; continue; }
            if (fd < 0) break;
        }
        if (fd < 0) { CRASH_ERR("create", path); rounds++; continue; }
        for (int b = 0; b < 4; b++) {
            crash_block(want, n, b);
            if (pwrite(fd, want, 4096, (off_t)b * 4096) != 4096) CRASH_ERR("pwrite", path);
        }
        if (fsync(fd) != 0) CRASH_ERR("fsync", path);
        if (close(fd) != 0) CRASH_ERR("close", path);
        long old = n / 2;
        snprintf(path, sizeof path, "%s/f%06ld", dir, old);
        fd = open(path, O_RDONLY);
        if (fd < 0) CRASH_ERR("open", path);
        else {
            for (int b = 0; b < 4; b++) {
                crash_block(want, old, b);
                if (pread(fd, got, 4096, (off_t)b * 4096) != 4096) { CRASH_ERR("pread", path); break; }
                if (memcmp(want, got, 4096) != 0) { errno = EILSEQ; CRASH_ERR("compare", path); break; }
            }
            if (close(fd) != 0) CRASH_ERR("close", path);
        }
        if (n % 4 == 0) {
            DIR *d = opendir(dir);
            long seen = 0;
            if (!d) CRASH_ERR("opendir", dir);
            else {
                struct dirent *e;
                errno = 0;
                while ((e = readdir(d)) != NULL) if (e->d_name[0] == 'f') seen++;
                if (errno != 0) CRASH_ERR("readdir", dir);
                closedir(d);
                if (seen < n + 1) { errno = ENOENT; fprintf(stderr, "crashload: listed %ld files, expected at least %ld\n", seen, n + 1); errors++; }
            }
        }
        uint64_t v = (uint64_t)n * 0x9e3779b97f4a7c15ULL, r = 0;
        off_t at = (off_t)(n % 512) * 8;
        if (pwrite(kfd, &v, 8, at) != 8) CRASH_ERR("pwrite", keep);
        else if (pread(kfd, &r, 8, at) != 8) CRASH_ERR("pread", keep);
        else if (r != v) { errno = EILSEQ; CRASH_ERR("compare", keep); }
        int gb = (int)(n % 4);
        crash_block(want, -1, gb);
        if (pread(gfd, gbuf, 4096, (off_t)gb * 4096) != 4096) CRASH_ERR("pread", ghost);
        else if (memcmp(want, gbuf, 4096) != 0) { errno = EILSEQ; CRASH_ERR("compare", ghost); }
        rounds++;
    }
#undef CRASH_ERR
    if (close(gfd) != 0) { fprintf(stderr, "crashload: close %s: %s\n", ghost, strerror(errno)); errors++; }
    free(gbuf);
    if (close(kfd) != 0) { fprintf(stderr, "crashload: close %s: %s\n", keep, strerror(errno)); errors++; }
    printf("%ld %ld %ld\n", rounds, eio, errors);
    return errors ? 1 : 0;
}

#define STALL_MAX 1000
static int cmd_stallwatch(const char *mailbox)
{
    static uint64_t gap[STALL_MAX], reads[STALL_MAX];
    uint64_t idle_gap = 0, idle_reads = 0;
    int fd = open(mailbox, O_RDONLY | O_DIRECT);
    if (fd < 0) die("open", mailbox);
    void *buf;
    if (posix_memalign(&buf, BLOCK, BLOCK) != 0) die("posix_memalign", NULL);
    char *text = buf;
    uint64_t prev = now_ns();
    int prev_round = -1;
    for (;;) {
        memset(text, 0, BLOCK);
        if (pread(fd, text, BLOCK, 0) < 0) die("pread", mailbox);
        uint64_t t = now_ns(), d = t - prev;
        prev = t;
        if (prev_round >= 0) {
            if (d > gap[prev_round]) gap[prev_round] = d;
            reads[prev_round]++;
        } else {
            if (d > idle_gap) idle_gap = d;
            idle_reads++;
        }
        if (text[0] == 's') break;
        prev_round = -1;
        if (text[0] == 'b') {
            int n = atoi(text + 2);
            if (n >= 0 && n < STALL_MAX) prev_round = n;
        }
    }
    for (int n = 0; n < STALL_MAX; n++)
        if (reads[n]) printf("%d %llu %llu\n", n, (unsigned long long)gap[n], (unsigned long long)reads[n]);
    printf("idle %llu %llu\n", (unsigned long long)idle_gap, (unsigned long long)idle_reads);
    free(buf);
    close(fd);
    return 0;
}

static int lock_at(int fd, int cmd, short type, long long start, long long len)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    return fcntl(fd, cmd, &fl) == 0 ? 0 : errno;
}

static short lock_type(const char *t)
{
    return !strcmp(t, "r") ? F_RDLCK : !strcmp(t, "w") ? F_WRLCK : F_UNLCK;
}

static int cmd_lock(char **argv, int argc)
{
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) die("open", argv[2]);
    int r = lock_at(fd, !strcmp(argv[6], "wait") ? F_SETLKW : F_SETLK, lock_type(argv[5]), atoll(argv[3]), atoll(argv[4]));
    printf("%d\n", r);
    fflush(stdout);
    if (argc == 8) {
        struct stat st;
        while (stat(argv[7], &st) != 0) usleep(20000);
    }
    close(fd);
    return 0;
}

static int cmd_getlk(char **argv)
{
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) die("open", argv[2]);
    struct flock fl = { .l_type = lock_type(argv[5]), .l_whence = SEEK_SET, .l_start = atoll(argv[3]), .l_len = atoll(argv[4]) };
    if (fcntl(fd, F_GETLK, &fl) != 0) die("fcntl F_GETLK", argv[2]);
    if (fl.l_type == F_UNLCK) printf("unlocked\n");
    else printf("%s %lld %lld %d\n", fl.l_type == F_RDLCK ? "r" : "w", (long long)fl.l_start, (long long)fl.l_len, (int)fl.l_pid);
    close(fd);
    return 0;
}

static int cmd_deadlock(const char *file)
{
    int up[2], down[2], result[2];
    if (pipe(up) || pipe(down) || pipe(result)) die("pipe", NULL);
    char c = 0;
    pid_t pid = fork();
    if (pid < 0) die("fork", NULL);
    if (pid == 0) {
        int fd = open(file, O_RDWR);
        if (fd < 0) die("open", file);
        int r = lock_at(fd, F_SETLK, F_WRLCK, 1, 1);
        if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1) _exit(1);
        sleep(1); /* the parent's wait for byte 1 is in place by then */
        r = r ? r : lock_at(fd, F_SETLKW, F_WRLCK, 0, 1);
        if (write(result[1], &r, sizeof r) != sizeof r) _exit(1);
        _exit(0); /* closing releases the child's locks, which lets a waiting parent go on */
    }
    int fd = open(file, O_RDWR);
    if (fd < 0) die("open", file);
    int mine = lock_at(fd, F_SETLK, F_WRLCK, 0, 1);
    if (read(up[0], &c, 1) != 1 || write(down[1], &c, 1) != 1) die("pipe", NULL);
    int parent = mine ? mine : lock_at(fd, F_SETLKW, F_WRLCK, 1, 1);
    int child = -1;
    if (read(result[0], &child, sizeof child) != sizeof child) child = -1;
    waitpid(pid, NULL, 0);
    close(fd);
    printf("parent=%d child=%d\n", parent, child);
    return 0;
}

int main(int argc, char **argv);

static int cmd_runas(int argc, char **argv)
{
    gid_t groups[16];
    size_t n = 0;
    char *rest;
    uid_t uid = (uid_t)strtoul(argv[2], NULL, 10);
    gid_t gid = (gid_t)strtoul(argv[3], &rest, 10);
    while (*rest == ',' && n < 16) groups[n++] = (gid_t)strtoul(rest + 1, &rest, 10);
    if (setgroups(n, groups) != 0) die("setgroups", NULL);
    if (setresgid(gid, gid, gid) != 0) die("setresgid", NULL);
    if (setresuid(uid, uid, uid) != 0) die("setresuid", NULL);
    return main(argc - 3, argv + 3);
}

static int cmd_fsop(int argc, char **argv)
{
    const char *name = argv[2], *op = argv[3], *a = argv[4], *b = argc > 5 ? argv[5] : "";
    long r = -1;
    errno = 0;
    if (!strcmp(op, "open")) {
        int flags = !strcmp(b, "r") ? O_RDONLY : !strcmp(b, "rc") ? O_RDONLY | O_CREAT
                  : !strcmp(b, "ac") ? O_WRONLY | O_APPEND | O_CREAT : !strcmp(b, "xc") ? O_WRONLY | O_CREAT | O_EXCL
                  : O_WRONLY | O_CREAT;
        int fd = open(a, flags, 0644);
        r = fd < 0 ? -1 : close(fd);
    }
    else if (!strcmp(op, "mkdir")) r = mkdir(a, 0755);
    else if (!strcmp(op, "symlink")) r = symlink(a, b);
    else if (!strcmp(op, "link")) r = link(a, b);
    else if (!strcmp(op, "mkfifo")) r = mkfifo(a, 0644);
    else if (!strcmp(op, "unlink")) r = unlink(a);
    else if (!strcmp(op, "rmdir")) r = rmdir(a);
    else if (!strcmp(op, "rename")) r = rename(a, b);
    else if (!strcmp(op, "exchange")) r = syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2u);
    else if (!strcmp(op, "noreplace")) r = syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 1u);
    else if (!strcmp(op, "setxattr")) r = syscall(SYS_setxattr, a, "user.x", "1", (size_t)1, 0);
    else if (!strcmp(op, "chmod")) r = chmod(a, 0600);
    else if (!strcmp(op, "noatime")) {
        /* Reads one byte through an O_NOATIME descriptor. */
        char c;
        int fd = open(a, O_RDONLY | O_NOATIME);
        r = fd < 0 ? -1 : read(fd, &c, 1) < 0 ? -1 : close(fd);
    }
    else if (!strcmp(op, "mmap")) {
        /* Maps the file's first page shared and writable, writes one byte and syncs it. */
        int fd = open(a, O_RDWR);
        if (fd >= 0) {
            char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (m == MAP_FAILED) { int e = errno; close(fd); errno = e; }
            else { m[0] = 'M'; r = msync(m, 4096, MS_SYNC); munmap(m, 4096); close(fd); }
        }
    }
    else if (!strcmp(op, "tmpfile")) {
        int fd = open(a, O_WRONLY | O_TMPFILE, 0644);
        r = fd < 0 ? -1 : close(fd);
    }
    else return usage();
    if (r == 0) { printf("%s ok\n", name); return 0; }
    int e = errno;
    const char *en = e == ENOENT ? "ENOENT" : e == EACCES ? "EACCES" : e == EEXIST ? "EEXIST" : e == EOPNOTSUPP ? "ENOTSUP" : e == EPERM ? "EPERM"
                   : e == ENODEV ? "ENODEV" : NULL;
    if (en) printf("%s %s\n", name, en);
    else printf("%s %d\n", name, e);
    return 0;
}

static const char *errno_name(int e)
{
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL";
    case ERANGE: return "ERANGE";
    case ENODATA: return "ENODATA";
    case EOPNOTSUPP: return "ENOTSUP";
    case ENOSYS: return "ENOSYS";
    default: return NULL;
    }
}

static int print_errno(int e)
{
    const char *n = errno_name(e);
    if (n) printf("%s\n", n);
    else printf("%d\n", e);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmd_xattr(int argc, char **argv)
{
    const char *op = argv[2], *path = argv[3];
    static char buf[65536];
    if (!strcmp(op, "list")) {
        ssize_t n = llistxattr(path, buf, sizeof buf);
        if (n < 0) return print_errno(errno);
        char *names[4096];
        int count = 0;
        for (char *p = buf; p < buf + n && count < 4096; p += strlen(p) + 1) names[count++] = p;
        qsort(names, count, sizeof names[0], cmp_str);
        if (count == 0) printf("-");
        for (int i = 0; i < count; i++) printf("%s%s", i ? "," : "", names[i]);
        printf("\n");
        return 0;
    }
    if (argc < 5) return usage();
    const char *name = argv[4];
    if (!strcmp(op, "get")) {
        ssize_t n = lgetxattr(path, name, buf, sizeof buf - 1);
        if (n < 0) return print_errno(errno);
        buf[n] = 0;
        printf("%s\n", buf);
        return 0;
    }
    int r;
    if (!strcmp(op, "set") && argc == 6) r = lsetxattr(path, name, argv[5], strlen(argv[5]), 0);
    else if (!strcmp(op, "remove")) r = lremovexattr(path, name);
    else return usage();
    if (r != 0) return print_errno(errno);
    printf("ok\n");
    return 0;
}

/* The kernel's POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h): a version, then entries. */
struct acl_entry_xattr { uint16_t tag; uint16_t perm; uint32_t id; };
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER_OBJ 0x01
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_GROUP 0x08
#define ACL_TAG_MASK 0x10
#define ACL_TAG_OTHER 0x20
#define ACL_UNDEFINED_ID 0xffffffffu

static const char *acl_name(const char *which)
{
    return !strcmp(which, "default") ? "system.posix_acl_default" : "system.posix_acl_access";
}

static int cmd_setacl(const char *path, const char *which, const char *spec)
{
    unsigned char buf[4 + 64 * sizeof(struct acl_entry_xattr)];
    uint32_t version = ACL_XATTR_VERSION;
    memcpy(buf, &version, 4);
    size_t len = 4;
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", spec);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *c1 = strchr(item, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || len + sizeof(struct acl_entry_xattr) > sizeof buf) return usage();
        *c1 = *c2 = 0;
        int named = c1[1] != 0;
        struct acl_entry_xattr e = { 0, (uint16_t)strtoul(c2 + 1, NULL, 8), named ? (uint32_t)strtoul(c1 + 1, NULL, 10) : ACL_UNDEFINED_ID };
        switch (item[0]) {
        case 'u': e.tag = named ? ACL_TAG_USER : ACL_TAG_USER_OBJ; break;
        case 'g': e.tag = named ? ACL_TAG_GROUP : ACL_TAG_GROUP_OBJ; break;
        case 'm': e.tag = ACL_TAG_MASK; break;
        case 'o': e.tag = ACL_TAG_OTHER; break;
        default: return usage();
        }
        memcpy(buf + len, &e, sizeof e);
        len += sizeof e;
    }
    if (lsetxattr(path, acl_name(which), buf, len, 0) != 0) return print_errno(errno);
    printf("ok\n");
    return 0;
}

static int cmd_getacl(const char *path, const char *which)
{
    unsigned char buf[4096];
    ssize_t n = lgetxattr(path, acl_name(which), buf, sizeof buf);
    if (n < 0) return print_errno(errno);
    for (ssize_t off = 4; off + (ssize_t)sizeof(struct acl_entry_xattr) <= n; off += sizeof(struct acl_entry_xattr)) {
        struct acl_entry_xattr e;
        memcpy(&e, buf + off, sizeof e);
        char tag = e.tag & (ACL_TAG_USER_OBJ | ACL_TAG_USER) ? 'u' : e.tag & (ACL_TAG_GROUP_OBJ | ACL_TAG_GROUP) ? 'g'
                 : e.tag == ACL_TAG_MASK ? 'm' : 'o';
        printf("%s%c:", off > 4 ? "," : "", tag);
        if (e.tag == ACL_TAG_USER || e.tag == ACL_TAG_GROUP) printf("%u", e.id);
        printf(":%o", e.perm);
    }
    printf("\n");
    return 0;
}

static int cmd_runexec(char **argv)
{
    gid_t gid = (gid_t)atol(argv[3]);
    if (setgroups(0, NULL) != 0) die("setgroups", argv[3]);
    if (setgid(gid) != 0) die("setgid", argv[3]);
    if (setuid((uid_t)atol(argv[2])) != 0) die("setuid", argv[2]);
    execvp(argv[4], argv + 4);
    return die("exec", argv[4]);
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    const char *c = argv[1];
    if (!strcmp(c, "now")) { printf("%llu\n", (unsigned long long)now_ns()); return 0; }
    if (!strcmp(c, "time") && argc >= 3) return cmd_time(argv + 2);
    if ((!strcmp(c, "mkfiles") || !strcmp(c, "statfiles") || !strcmp(c, "unlinkfiles")) && argc == 4)
        return cmd_files(c, argv[2], atol(argv[3]));
    if (!strcmp(c, "seqwrite") && argc == 4) return cmd_seqwrite(argv[2], atol(argv[3]));
    if (!strcmp(c, "seqread") && argc == 3) return cmd_seqread(argv[2]);
    if (!strcmp(c, "randread") && (argc == 5 || argc == 6))
        return cmd_randread(argv[2], atoi(argv[3]), atol(argv[4]), argc == 6 && !strcmp(argv[5], "direct"));
    if (!strcmp(c, "rename2") && argc == 5) {
        unsigned flags = !strcmp(argv[4], "exchange") ? 2u /* RENAME_EXCHANGE */ : 1u /* RENAME_NOREPLACE */;
        long r = syscall(SYS_renameat2, AT_FDCWD, argv[2], AT_FDCWD, argv[3], flags);
        printf("%d\n", r == 0 ? 0 : errno);
        return 0;
    }
    if (!strcmp(c, "fsync") && argc == 3) {
        int fd = open(argv[2], O_RDWR);
        if (fd < 0) { printf("%d\n", errno); return 0; }
        int r = fsync(fd);
        printf("%d\n", r == 0 ? 0 : errno);
        close(fd);
        return 0;
    }
    if (!strcmp(c, "seek") && argc == 5) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) die("open", argv[2]);
        off_t r = lseek(fd, atoll(argv[4]), !strcmp(argv[3], "hole") ? SEEK_HOLE : SEEK_DATA);
        printf("%lld\n", r < 0 ? -(long long)errno : (long long)r);
        close(fd);
        return 0;
    }
    if (!strcmp(c, "copyrange") && argc == 4) {
        int in = open(argv[2], O_RDONLY);
        if (in < 0) die("open", argv[2]);
        int out = open(argv[3], O_CREAT | O_TRUNC | O_WRONLY, 0644);
        if (out < 0) die("open", argv[3]);
        struct stat st;
        if (fstat(in, &st) != 0) die("fstat", argv[2]);
        long long total = 0;
        while (total < st.st_size) {
            ssize_t n = copy_file_range(in, NULL, out, NULL, st.st_size - total, 0);
            if (n < 0) { printf("%d\n", -errno); return 0; }
            if (n == 0) break;
            total += n;
        }
        close(in);
        if (close(out) != 0) die("close", argv[3]);
        printf("%lld\n", total);
        return 0;
    }
    if (!strcmp(c, "lock") && (argc == 7 || argc == 8)) return cmd_lock(argv, argc);
    if (!strcmp(c, "getlk") && argc == 6) return cmd_getlk(argv);
    if (!strcmp(c, "stallwatch") && argc == 3) return cmd_stallwatch(argv[2]);
    if (!strcmp(c, "crashload") && argc == 4) return cmd_crashload(argv[2], argv[3]);
    if (!strcmp(c, "fsop") && (argc == 5 || argc == 6)) return cmd_fsop(argc, argv);
    if (!strcmp(c, "runas") && argc >= 5) return cmd_runas(argc, argv);
    if (!strcmp(c, "deadlock") && argc == 3) return cmd_deadlock(argv[2]);
    if (!strcmp(c, "xattr") && argc >= 4) return cmd_xattr(argc, argv);
    if (!strcmp(c, "setacl") && argc == 5) return cmd_setacl(argv[2], argv[3], argv[4]);
    if (!strcmp(c, "getacl") && argc == 4) return cmd_getacl(argv[2], argv[3]);
    if (!strcmp(c, "runexec") && argc >= 5) return cmd_runexec(argv);
    if (!strcmp(c, "pattern") && argc == 5) return cmd_pattern(argv[2], atol(argv[3]), strtoull(argv[4], NULL, 0));
    return usage();
}
