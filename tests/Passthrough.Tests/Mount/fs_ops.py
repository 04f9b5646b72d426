#!/usr/bin/env python3
"""Runs named filesystem cases in a directory and prints, as JSON, what every call returned.

usage: fs_ops.py BASE [--uid N] [--case NAME ...] [--list]

The same script runs against the passthrough mount and against a plain local directory, as root and as an
ordinary user; the caller compares the outputs case by case. Every logged value must be the same on any
correct filesystem: results, errno names, modes, owners, sizes, contents, and relations (two inodes equal,
a time close to now), never absolute inode numbers, devices, pids or paths.
"""
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
import struct
import sys
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.listxattr.restype = ctypes.c_ssize_t
libc.access.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
libc.syncfs.argtypes = [ctypes.c_int]
libc.opendir.argtypes = [ctypes.c_char_p]
libc.opendir.restype = ctypes.c_void_p
libc.readdir64.argtypes = [ctypes.c_void_p]
libc.readdir64.restype = ctypes.c_void_p
libc.telldir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
OTHER = 1001          # a second ordinary user, used by root runs
OTHER2 = 1002
ROOT = False          # set in main


def ename(code):
    return errno.errorcode.get(code, str(code))


class Log:
    def __init__(self):
        self.entries = []

    def call(self, name, fn, *args, **kwargs):
        """Calls fn; logs its (normalised) result or the errno name; returns the result or None."""
        try:
            r = fn(*args, **kwargs)
        except OSError as e:
            self.entries.append([name, ename(e.errno)])
            return None
        if fn is os.open and isinstance(r, int):
            os.close(r)  # descriptor numbers are not comparable; that the open succeeded is
            self.entries.append([name, "fd"])
            return None
        self.entries.append([name, norm(r)])
        return r

    def c(self, name, ret):
        """Logs a libc return value: the errno name when it is -1."""
        if ret == -1:
            self.entries.append([name, ename(ctypes.get_errno())])
        else:
            self.entries.append([name, ret])
        return ret

    def note(self, name, value):
        self.entries.append([name, norm(value)])


def norm(v):
    if isinstance(v, os.stat_result):
        return st(v)
    if isinstance(v, bytes):
        return v.hex() if len(v) <= 64 else "sha256:" + hashlib.sha256(v).hexdigest()
    if isinstance(v, dict):
        return v
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if v is None or isinstance(v, (int, str, bool, float)):
        return v
    return repr(type(v).__name__)


def st(s):
    return {"type": oct(stat.S_IFMT(s.st_mode)), "mode": oct(stat.S_IMODE(s.st_mode)), "nlink": s.st_nlink,
            "uid": s.st_uid, "gid": s.st_gid, "size": s.st_size if not stat.S_ISDIR(s.st_mode) else "dir",
            "rdev": s.st_rdev}


def p(d, *names):
    return os.path.join(d, *names)


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def as_user(uid, fn, gid=None):
    """Runs fn() in a forked child with uid/gid switched (root runs only); returns the child's log entries."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        log = Log()
        try:
            os.setgroups([])
            os.setgid(uid if gid is None else gid)
            os.setuid(uid)
            fn(log)
        except Exception as e:  # noqa: BLE001 - reported to the parent as a value
            log.note("exception", type(e).__name__ + ": " + str(e))
        os.write(w, json.dumps(log.entries).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


# ---------------------------------------------------------------------------------------------------- cases

def case_stat_lookup(d, log):
    write_file(p(d, "f"), b"hello")
    os.mkdir(p(d, "sub"))
    log.call("stat f", os.stat, p(d, "f"))
    log.call("lstat f", os.lstat, p(d, "f"))
    log.call("stat sub", os.stat, p(d, "sub"))
    log.call("stat missing", os.stat, p(d, "missing"))
    log.call("stat f/x", os.stat, p(d, "f", "x"))
    log.call("stat sub/..", lambda: os.stat(p(d, "sub", "..")).st_ino == os.stat(d).st_ino)
    log.call("stat name 255", os.stat, p(d, "a" * 255))
    log.call("stat name 256", os.stat, p(d, "a" * 256))
    log.call("create name 255", write_file, p(d, "b" * 255), b"x")
    log.call("stat created 255", os.stat, p(d, "b" * 255))


def case_chmod(d, log):
    f = p(d, "f")
    write_file(f, b"x")
    log.call("chmod 640", os.chmod, f, 0o640)
    log.call("stat", os.stat, f)
    before = os.stat(f).st_ctime_ns
    time.sleep(0.02)
    log.call("chmod 4755", os.chmod, f, 0o4755)
    log.call("stat after suid", os.stat, f)
    log.note("ctime advanced", os.stat(f).st_ctime_ns > before)
    log.call("chmod 7777", os.chmod, f, 0o7777)
    log.call("stat 7777", os.stat, f)
    log.call("chmod missing", os.chmod, p(d, "missing"), 0o600)
    os.mkdir(p(d, "dir"))
    log.call("chmod dir 1777", os.chmod, p(d, "dir"), 0o1777)
    log.call("stat dir", os.stat, p(d, "dir"))


def case_chown(d, log):
    f = p(d, "f")
    write_file(f, b"x")
    os.symlink("f", p(d, "l"))
    log.call("chown other", os.chown, f, OTHER, OTHER)
    log.call("stat", os.stat, f)
    log.call("chown keep", os.chown, f, -1, -1)
    log.call("chown gid only", os.chown, f, -1, os.getegid())
    log.call("stat gid", os.stat, f)
    log.call("lchown link", os.lchown, p(d, "l"), OTHER2, OTHER2)
    log.call("lstat link", os.lstat, p(d, "l"))
    log.call("stat target", os.stat, p(d, "l"))
    log.call("chown missing", os.chown, p(d, "missing"), 0, 0)


def case_truncate(d, log):
    f = p(d, "f")
    write_file(f, b"0123456789")
    log.call("truncate grow", os.truncate, f, 100000)
    log.call("stat", os.stat, f)
    log.call("read tail zero", lambda: read_file(f)[10:] == b"\0" * (100000 - 10))
    log.call("truncate shrink", os.truncate, f, 4)
    log.call("content", read_file, f)
    log.call("truncate 0", os.truncate, f, 0)
    log.call("stat 0", os.stat, f)
    os.mkdir(p(d, "dir"))
    log.call("truncate dir", os.truncate, p(d, "dir"), 0)
    log.call("truncate negative", os.truncate, f, -1)
    log.call("truncate missing", os.truncate, p(d, "missing"), 0)


def case_utimens(d, log):
    f = p(d, "f")
    write_file(f, b"x")
    os.symlink("f", p(d, "l"))
    log.call("utime ns", os.utime, f, ns=(1_000_000_123, 2_000_000_456))
    s = os.stat(f)
    log.note("atime", s.st_atime_ns)
    log.note("mtime", s.st_mtime_ns)
    log.call("utime now", os.utime, f, None)
    s = os.stat(f)
    now = time.time_ns()
    log.note("atime now", abs(s.st_atime_ns - now) < 10_000_000_000)
    log.note("mtime now", abs(s.st_mtime_ns - now) < 10_000_000_000)
    # UTIME_OMIT for atime, explicit mtime; then UTIME_NOW for atime only.
    ts = (ctypes.c_long * 4)(0, UTIME_OMIT, 5, 6)
    log.c("utimensat omit atime", libc.utimensat(AT_FDCWD, f.encode(), ts, 0))
    s = os.stat(f)
    log.note("atime kept", abs(s.st_atime_ns - now) < 10_000_000_000)
    log.note("mtime set", s.st_mtime_ns)
    ts = (ctypes.c_long * 4)(0, UTIME_NOW, 0, UTIME_OMIT)
    log.c("utimensat now atime", libc.utimensat(AT_FDCWD, f.encode(), ts, 0))
    s = os.stat(f)
    log.note("atime now 2", abs(s.st_atime_ns - time.time_ns()) < 10_000_000_000)
    log.note("mtime kept", s.st_mtime_ns)
    log.call("utime symlink nofollow", os.utime, p(d, "l"), ns=(3_000_000_000, 4_000_000_000), follow_symlinks=False)
    log.note("link mtime", os.lstat(p(d, "l")).st_mtime_ns)
    log.note("target mtime unchanged", os.stat(f).st_mtime_ns)
    log.call("utime missing", os.utime, p(d, "missing"), None)
    # mtime moves on write.
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    with open(f, "ab") as h:
        h.write(b"more")
    log.note("mtime after write advanced", os.stat(f).st_mtime_ns > 1_000_000_000)


def case_fd_attrs(d, log):
    f = p(d, "f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        log.call("write", os.write, fd, b"abcdefgh")
        log.call("fchmod 604", os.fchmod, fd, 0o604)
        log.call("fstat", os.fstat, fd)
        log.call("ftruncate 3", os.ftruncate, fd, 3)
        log.call("fstat after ftruncate", os.fstat, fd)
        log.call("futimens", os.utime, fd, ns=(7_000_000_000, 8_000_000_000))
        s = os.fstat(fd)
        log.note("times", [s.st_atime_ns, s.st_mtime_ns])
        log.call("futimens now", os.utime, fd, None)
        log.note("mtime now", abs(os.fstat(fd).st_mtime_ns - time.time_ns()) < 10_000_000_000)
        log.call("fchown self", os.fchown, fd, os.geteuid(), os.getegid())
        log.call("fchown other", os.fchown, fd, OTHER, OTHER)
        log.call("stat by path", os.stat, f)
    finally:
        os.close(fd)
    fd = os.open(f, os.O_RDONLY)
    try:
        log.call("ftruncate read-only fd", os.ftruncate, fd, 0)
    finally:
        os.close(fd)


def case_symlink(d, log):
    log.call("symlink dangling", os.symlink, "no/such/target", p(d, "dangling"))
    log.call("readlink dangling", os.readlink, p(d, "dangling"))
    log.call("lstat dangling", os.lstat, p(d, "dangling"))
    log.call("stat dangling", os.stat, p(d, "dangling"))
    write_file(p(d, "f"), b"data")
    log.call("symlink to f", os.symlink, "f", p(d, "lf"))
    log.call("stat via link", os.stat, p(d, "lf"))
    log.call("read via link", read_file, p(d, "lf"))
    log.call("readlink regular", os.readlink, p(d, "f"))
    log.call("symlink existing", os.symlink, "x", p(d, "f"))
    long_target = "t" * 4095
    log.call("symlink 4095", os.symlink, long_target, p(d, "long"))
    log.call("readlink 4095 length", lambda: len(os.readlink(p(d, "long"))))
    log.call("symlink 4096", os.symlink, "t" * 4096, p(d, "toolong"))
    log.call("symlink absolute", os.symlink, "/etc/hostname", p(d, "abs"))
    log.call("readlink absolute", os.readlink, p(d, "abs"))
    os.symlink("loop2", p(d, "loop1"))
    os.symlink("loop1", p(d, "loop2"))
    log.call("stat loop", os.stat, p(d, "loop1"))
    log.call("open nofollow", os.open, p(d, "lf"), os.O_RDONLY | os.O_NOFOLLOW)


def case_mknod(d, log):
    log.call("mkfifo", os.mkfifo, p(d, "fifo"), 0o640)
    log.call("lstat fifo", os.lstat, p(d, "fifo"))
    log.call("mknod socket", os.mknod, p(d, "sock"), stat.S_IFSOCK | 0o600)
    log.call("lstat socket", os.lstat, p(d, "sock"))
    log.call("mknod chr 1,3", os.mknod, p(d, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    log.call("lstat chr", os.lstat, p(d, "null"))
    log.call("mknod blk 7,0", os.mknod, p(d, "blk"), stat.S_IFBLK | 0o600, os.makedev(7, 0))
    log.call("mknod regular", os.mknod, p(d, "reg"), stat.S_IFREG | 0o600)
    log.call("lstat regular", os.lstat, p(d, "reg"))
    log.call("mknod existing", os.mkfifo, p(d, "fifo"))
    log.call("mkfifo in missing", os.mkfifo, p(d, "missing", "x"))
    # The kernel, not the daemon, serves a FIFO's data once it is open.
    r = log.call("open fifo nonblock", lambda: os.open(p(d, "fifo"), os.O_RDONLY | os.O_NONBLOCK))
    if r is not None:
        w = os.open(p(d, "fifo"), os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"through the pipe")
        log.call("read fifo", os.read, r, 100)
        os.close(w)
        os.close(r)
    if os.path.exists(p(d, "null")):
        fd = log.call("open chr", lambda: os.open(p(d, "null"), os.O_RDWR))
        if fd is not None:
            log.call("write chr", os.write, fd, b"discarded")
            log.call("read chr", os.read, fd, 10)
            os.close(fd)


def case_unix_socket(d, log):
    path = p(d, "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        log.call("bind", srv.bind, path)
        log.call("lstat", os.lstat, path)
        srv.listen(1)
        log.call("connect", cli.connect, path)
        conn, _ = srv.accept()
        cli.sendall(b"ping")
        log.call("recv", conn.recv, 10)
        conn.close()
        log.call("bind again", socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind, path)
    finally:
        cli.close()
        srv.close()


def case_mkdir_rmdir(d, log):
    log.call("mkdir a", os.mkdir, p(d, "a"), 0o750)
    log.call("stat a", os.stat, p(d, "a"))
    log.call("mkdir a again", os.mkdir, p(d, "a"))
    log.call("mkdir a/b", os.mkdir, p(d, "a", "b"))
    log.call("stat a nlink", lambda: os.stat(p(d, "a")).st_nlink)
    log.call("rmdir nonempty", os.rmdir, p(d, "a"))
    write_file(p(d, "f"), b"x")
    log.call("rmdir file", os.rmdir, p(d, "f"))
    log.call("unlink dir", os.unlink, p(d, "a"))
    log.call("rmdir missing", os.rmdir, p(d, "missing"))
    log.call("mkdir in missing", os.mkdir, p(d, "missing", "x"))
    log.call("mkdir under file", os.mkdir, p(d, "f", "x"))
    log.call("mkdir over file", os.mkdir, p(d, "f"))
    log.call("rmdir dot", os.rmdir, p(d, "a", "b", "."))
    log.call("rmdir a/b", os.rmdir, p(d, "a", "b"))
    log.call("stat a nlink after", lambda: os.stat(p(d, "a")).st_nlink)
    log.call("rmdir a", os.rmdir, p(d, "a"))
    log.call("stat a gone", os.stat, p(d, "a"))
    log.call("mkdir 2777", os.mkdir, p(d, "sg"), 0o2777)
    log.call("stat sg", os.stat, p(d, "sg"))
    log.call("subdir of setgid", os.mkdir, p(d, "sg", "child"))
    log.call("stat child", os.stat, p(d, "sg", "child"))


def case_unlink(d, log):
    write_file(p(d, "f"), b"x")
    log.call("unlink", os.unlink, p(d, "f"))
    log.call("stat after", os.stat, p(d, "f"))
    log.call("unlink again", os.unlink, p(d, "f"))
    log.call("unlink in missing", os.unlink, p(d, "missing", "f"))
    write_file(p(d, "g"), b"x")
    log.call("unlink g/", os.unlink, p(d, "g") + "/")
    log.call("create after unlink", write_file, p(d, "f"), b"new")
    log.call("content", read_file, p(d, "f"))


def case_rename(d, log):
    write_file(p(d, "a"), b"A")
    write_file(p(d, "b"), b"B")
    os.mkdir(p(d, "d1"))
    os.mkdir(p(d, "d2"))
    write_file(p(d, "d2", "inner"), b"I")
    log.call("rename a c", os.rename, p(d, "a"), p(d, "c"))
    log.call("stat a", os.stat, p(d, "a"))
    log.call("read c", read_file, p(d, "c"))
    log.call("rename c over b", os.rename, p(d, "c"), p(d, "b"))
    log.call("read b", read_file, p(d, "b"))
    log.call("rename dir over nonempty dir", os.rename, p(d, "d1"), p(d, "d2"))
    log.call("rename file over dir", os.rename, p(d, "b"), p(d, "d1"))
    log.call("rename dir over file", os.rename, p(d, "d1"), p(d, "b"))
    log.call("rename missing", os.rename, p(d, "missing"), p(d, "x"))
    log.call("rename dir into itself", os.rename, p(d, "d2"), p(d, "d2", "sub"))
    log.call("rename across dirs", os.rename, p(d, "b"), p(d, "d1", "b"))
    log.call("read moved", read_file, p(d, "d1", "b"))
    os.mkdir(p(d, "empty"))
    log.call("rename dir over empty dir", os.rename, p(d, "d1"), p(d, "empty"))
    log.call("read after dir rename", read_file, p(d, "empty", "b"))
    log.call("rename to same", os.rename, p(d, "empty"), p(d, "empty"))
    log.call("list", lambda: sorted(os.listdir(d)))


def case_renameat2(d, log):
    write_file(p(d, "a"), b"A")
    write_file(p(d, "b"), b"B")
    os.mkdir(p(d, "dir"))
    enc = lambda n: p(d, n).encode()  # noqa: E731
    log.c("noreplace existing", libc.renameat2(AT_FDCWD, enc("a"), AT_FDCWD, enc("b"), RENAME_NOREPLACE))
    log.call("a still", read_file, p(d, "a"))
    log.c("noreplace new", libc.renameat2(AT_FDCWD, enc("a"), AT_FDCWD, enc("c"), RENAME_NOREPLACE))
    log.call("read c", read_file, p(d, "c"))
    log.c("exchange files", libc.renameat2(AT_FDCWD, enc("b"), AT_FDCWD, enc("c"), RENAME_EXCHANGE))
    log.call("read b", read_file, p(d, "b"))
    log.call("read c", read_file, p(d, "c"))
    log.c("exchange file and dir", libc.renameat2(AT_FDCWD, enc("b"), AT_FDCWD, enc("dir"), RENAME_EXCHANGE))
    log.call("lstat b", os.lstat, p(d, "b"))
    log.call("lstat dir", os.lstat, p(d, "dir"))
    log.c("exchange missing", libc.renameat2(AT_FDCWD, enc("c"), AT_FDCWD, enc("missing"), RENAME_EXCHANGE))
    log.c("both flags", libc.renameat2(AT_FDCWD, enc("c"), AT_FDCWD, enc("b"), RENAME_EXCHANGE | RENAME_NOREPLACE))


def case_link(d, log):
    write_file(p(d, "f"), b"shared")
    log.call("link f g", os.link, p(d, "f"), p(d, "g"))
    log.call("stat f", os.stat, p(d, "f"))
    log.call("stat g", os.stat, p(d, "g"))
    log.call("same ino", lambda: os.stat(p(d, "f")).st_ino == os.stat(p(d, "g")).st_ino)
    os.mkdir(p(d, "sub"))
    log.call("link into sub", os.link, p(d, "f"), p(d, "sub", "h"))
    log.call("nlink 3", lambda: [os.stat(p(d, n)).st_nlink for n in ("f", "g", "sub/h")])
    log.call("same ino 3", lambda: len({os.stat(p(d, n)).st_ino for n in ("f", "g", "sub/h")}))
    if ROOT:
        # Forget every cached dentry (the kernel sends FORGETs): the links must still be one inode when looked up anew.
        with open("/proc/sys/vm/drop_caches", "w") as h:
            h.write("2")
        log.call("same ino after forget", lambda: len({os.stat(p(d, n)).st_ino for n in ("sub/h", "g", "f")}))
        log.call("nlink after forget", lambda: os.stat(p(d, "sub", "h")).st_nlink)
    with open(p(d, "g"), "ab") as h:
        h.write(b"+more")
    log.call("write via one name seen via other", read_file, p(d, "sub", "h"))
    log.call("link existing", os.link, p(d, "f"), p(d, "g"))
    log.call("link dir", os.link, p(d, "sub"), p(d, "subl"))
    log.call("link missing", os.link, p(d, "missing"), p(d, "x"))
    log.call("unlink f", os.unlink, p(d, "f"))
    log.call("nlink after unlink", lambda: [os.stat(p(d, n)).st_nlink for n in ("g", "sub/h")])
    os.symlink("g", p(d, "sym"))
    log.call("link symlink itself", os.link, p(d, "sym"), p(d, "sym2"))
    log.call("lstat sym2", os.lstat, p(d, "sym2"))


def case_open_flags(d, log):
    f = p(d, "f")
    log.call("creat 0640", lambda: os.close(os.open(f, os.O_WRONLY | os.O_CREAT, 0o640)))
    log.call("stat", os.stat, f)
    log.call("O_EXCL existing", os.open, f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    log.call("O_EXCL new", lambda: os.close(os.open(p(d, "n"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)))
    write_file(f, b"0123456789", 0o640)
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    log.call("append write", os.write, fd, b"abc")
    log.call("append lseek", os.lseek, fd, 0, os.SEEK_CUR)
    os.lseek(fd, 0, os.SEEK_SET)
    log.call("append write after seek 0", os.write, fd, b"X")
    os.close(fd)
    log.call("content after append", read_file, f)
    log.call("O_TRUNC", lambda: os.close(os.open(f, os.O_WRONLY | os.O_TRUNC)))
    log.call("size after trunc", lambda: os.stat(f).st_size)
    log.call("open missing", os.open, p(d, "missing"), os.O_RDONLY)
    os.mkdir(p(d, "dir"))
    log.call("open dir O_WRONLY", os.open, p(d, "dir"), os.O_WRONLY)
    log.call("O_DIRECTORY on file", os.open, f, os.O_RDONLY | os.O_DIRECTORY)
    os.symlink("f", p(d, "l"))
    log.call("O_NOFOLLOW symlink", os.open, p(d, "l"), os.O_RDONLY | os.O_NOFOLLOW)
    log.call("O_CREAT|O_EXCL on symlink", os.open, p(d, "l"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    log.call("O_CREAT through dangling symlink", lambda: (os.symlink("made", p(d, "dl")),
                                                          os.close(os.open(p(d, "dl"), os.O_WRONLY | os.O_CREAT, 0o600)),
                                                          os.lstat(p(d, "made")).st_size)[2])
    log.call("O_RDONLY|O_TRUNC", lambda: os.close(os.open(f, os.O_RDONLY | os.O_TRUNC)))
    log.call("create mode 0777 umask 022", lambda: (os.close(os.open(p(d, "m"), os.O_CREAT | os.O_WRONLY, 0o777)),
                                                    oct(stat.S_IMODE(os.stat(p(d, "m")).st_mode)))[1])


def case_read_write(d, log):
    f = p(d, "f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        log.call("write", os.write, fd, b"hello world")
        log.call("pread 6", os.pread, fd, 5, 6)
        log.call("pwrite at 20", os.pwrite, fd, b"tail", 20)
        log.call("size", lambda: os.fstat(fd).st_size)
        log.call("pread hole", os.pread, fd, 9, 11)
        log.call("pread eof", os.pread, fd, 10, 24)
        log.call("pread beyond", os.pread, fd, 10, 1000)
        os.lseek(fd, 0, os.SEEK_SET)
        log.call("read all", os.read, fd, 100)
        log.call("read at eof", os.read, fd, 100)
        log.call("lseek end", os.lseek, fd, 0, os.SEEK_END)
        log.call("lseek negative", os.lseek, fd, -100, os.SEEK_SET)
        big = bytes((i * 7 + 3) % 251 for i in range(3 * 1024 * 1024 + 17))
        log.call("pwrite 3MiB", os.pwrite, fd, big, 4096)
        log.call("pread 3MiB", lambda: os.pread(fd, len(big), 4096) == big)
    finally:
        os.close(fd)
    fd = os.open(f, os.O_RDONLY)
    try:
        log.call("write to read-only fd", os.write, fd, b"x")
    finally:
        os.close(fd)
    fd = os.open(f, os.O_WRONLY)
    try:
        log.call("read from write-only fd", os.read, fd, 1)
    finally:
        os.close(fd)
    log.call("whole file hash", lambda: hashlib.sha256(read_file(f)).hexdigest())


def case_fsync(d, log):
    f = p(d, "f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"durable")
        log.call("fsync", os.fsync, fd)
        log.call("fdatasync", os.fdatasync, fd)
    finally:
        os.close(fd)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        log.call("fsync dir", os.fsync, dfd)
        log.call("fdatasync dir", os.fdatasync, dfd)
    finally:
        os.close(dfd)
    fd = os.open(f, os.O_RDONLY)
    try:
        log.call("fsync read-only fd", os.fsync, fd)
        log.c("syncfs", libc.syncfs(fd))
    finally:
        os.close(fd)


class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]


def read_entries(dirp, limit=None):
    out = []
    while limit is None or len(out) < limit:
        ctypes.set_errno(0)
        ent = libc.readdir64(dirp)
        if not ent:
            break
        e = ctypes.cast(ent, ctypes.POINTER(Dirent)).contents
        out.append((e.d_name.decode("utf-8", "surrogateescape"), e.d_type))
    return out


def case_readdir(d, log):
    os.mkdir(p(d, "dir"))
    for i in range(300):
        write_file(p(d, "dir", "file-%03d-%s" % (i, "x" * (i % 60))), b"")
    os.mkdir(p(d, "dir", "subdir"))
    os.symlink("file-000-", p(d, "dir", "link"))
    os.mkfifo(p(d, "dir", "fifo"))
    dirp = libc.opendir(p(d, "dir").encode())
    log.note("opendir", bool(dirp))
    entries = read_entries(dirp)
    log.note("count", len(entries))
    log.note("names+types", sorted(entries))
    log.note("no duplicates", len(set(entries)) == len(entries))
    # telldir/seekdir: remember a position mid-way, read on, go back, the rest must repeat.
    libc.rewinddir(ctypes.c_void_p(dirp))
    first = read_entries(dirp, 100)
    pos = libc.telldir(dirp)
    rest = read_entries(dirp)
    libc.seekdir(dirp, pos)
    again = read_entries(dirp)
    log.note("resume after seekdir", again == rest)
    log.note("first+rest complete", sorted(first + rest) == sorted(entries))
    libc.closedir(dirp)
    log.call("listdir empty", os.listdir, p(d, "dir", "subdir"))
    log.call("listdir file", os.listdir, p(d, "dir", "link"))
    # Entries created or removed while a listing is open are not required to show, but the listing must complete.
    dirp = libc.opendir(p(d, "dir").encode())
    part = read_entries(dirp, 10)
    os.unlink(p(d, "dir", "file-299-" + "x" * (299 % 60)))
    rest = read_entries(dirp)
    log.note("listing completes while changing", len(part) + len(rest) >= 300)
    libc.closedir(dirp)
    log.call("scandir is_dir", lambda: sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink())
                                              for e in os.scandir(p(d, "dir")) if not e.name.startswith("file")))


def case_statfs(d, log):
    s = os.statvfs(d)
    log.note("bsize", s.f_bsize)
    log.note("frsize", s.f_frsize)
    log.note("namemax", s.f_namemax)
    log.note("blocks", s.f_blocks)
    log.note("files", s.f_files)
    log.note("bavail <= bfree", s.f_bavail <= s.f_bfree)
    log.call("statvfs file", lambda: os.statvfs(os.path.join(d, ".")).f_namemax)


def case_access(d, log):
    f = p(d, "f")
    write_file(f, b"x", 0o644)
    os.chmod(f, 0o644)
    x = p(d, "x")
    write_file(x, b"#!/bin/sh\n", 0o755)
    os.chmod(x, 0o755)
    enc = lambda n: n.encode()  # noqa: E731
    for name, path in (("f", f), ("x", x), ("dir", d), ("missing", p(d, "missing"))):
        for mode, m in (("F", os.F_OK), ("R", os.R_OK), ("W", os.W_OK), ("X", os.X_OK)):
            log.c("access %s %s" % (name, mode), libc.access(enc(path), m))
    os.chmod(f, 0o000)
    log.c("access 000 R", libc.access(enc(f), os.R_OK))
    log.c("access 000 X", libc.access(enc(f), os.X_OK))
    log.call("open 000", os.open, f, os.O_RDONLY)


def case_xattr(d, log):
    f = p(d, "f")
    write_file(f, b"x")
    log.call("set", os.setxattr, f, "user.a", b"value-a")
    log.call("get", os.getxattr, f, "user.a")
    log.call("set empty", os.setxattr, f, "user.empty", b"")
    log.call("get empty", os.getxattr, f, "user.empty")
    log.call("list", lambda: sorted(os.listxattr(f)))
    log.call("get missing", os.getxattr, f, "user.none")
    buf = ctypes.create_string_buffer(3)
    log.c("get ERANGE", libc.getxattr(f.encode(), b"user.a", buf, 3))
    log.c("get size query", libc.getxattr(f.encode(), b"user.a", None, 0))
    log.c("list size query", libc.listxattr(f.encode(), None, 0))
    log.c("list ERANGE", libc.listxattr(f.encode(), buf, 3))
    log.call("create existing", os.setxattr, f, "user.a", b"v", os.XATTR_CREATE)
    log.call("replace missing", os.setxattr, f, "user.zz", b"v", os.XATTR_REPLACE)
    log.call("replace existing", os.setxattr, f, "user.a", b"new", os.XATTR_REPLACE)
    log.call("get replaced", os.getxattr, f, "user.a")
    log.call("big value", os.setxattr, f, "user.big", bytes(range(256)) * 8)
    log.call("get big", os.getxattr, f, "user.big")
    log.call("remove", os.removexattr, f, "user.a")
    log.call("remove again", os.removexattr, f, "user.a")
    log.call("get removed", os.getxattr, f, "user.a")
    log.call("trusted set", os.setxattr, f, "trusted.t", b"t")
    log.call("unknown namespace", os.setxattr, f, "bogus.x", b"t")
    os.symlink("f", p(d, "l"))
    log.call("user xattr on symlink", os.setxattr, p(d, "l"), "user.x", b"1", follow_symlinks=False)
    os.mkdir(p(d, "dir"))
    log.call("set on dir", os.setxattr, p(d, "dir"), "user.d", b"dir")
    log.call("get on dir", os.getxattr, p(d, "dir"), "user.d")
    log.call("get on missing", os.getxattr, p(d, "missing"), "user.d")
    fd = os.open(f, os.O_RDONLY)
    try:
        log.call("fsetxattr", os.setxattr, fd, "user.fd", b"by-fd")
        log.call("fgetxattr", os.getxattr, fd, "user.fd")
    finally:
        os.close(fd)
    os.chmod(f, 0o444)
    log.call("set on read-only file", os.setxattr, f, "user.ro", b"x")


FLOCK = "hh4xqqi4x"


def getlk(fd, ltype, start, length):
    res = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(FLOCK, ltype, os.SEEK_SET, start, length, 0))
    t, w, s, l, pid = struct.unpack(FLOCK, res)
    return t, s, l, pid


def case_posix_locks(d, log):
    f = p(d, "f")
    write_file(f, b"x" * 1000, 0o666)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        fd = os.open(f, os.O_RDWR)
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 100, 0))
        os.write(ready_w, b"1")
        os.read(done_r, 1)
        os._exit(0)
    os.read(ready_r, 1)
    fd = os.open(f, os.O_RDWR)
    try:
        log.call("setlk conflicting", fcntl.fcntl, fd, fcntl.F_SETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 50, 10, 0))
        t, s, l, pid = getlk(fd, fcntl.F_WRLCK, 0, 0)
        log.note("getlk type", t)
        log.note("getlk range", [s, l])
        log.note("getlk pid is holder", pid == child)
        log.call("setlk read conflicting", fcntl.fcntl, fd, fcntl.F_SETLK, struct.pack(FLOCK, fcntl.F_RDLCK, os.SEEK_SET, 0, 1, 0))
        log.call("setlk free range", lambda: fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 200, 10, 0)) and 0)
        log.note("getlk free range", getlk(fd, fcntl.F_WRLCK, 300, 10)[0])
        os.write(done_w, b"1")
        os.waitpid(child, 0)
        log.call("setlk after holder exit", lambda: fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 100, 0)) and 0)
        # A blocking lock waits for the holder and then succeeds.
        ready2_r, ready2_w = os.pipe()
        child2 = os.fork()
        if child2 == 0:
            fd2 = os.open(f, os.O_RDWR)
            os.write(ready2_w, b"1")
            fcntl.fcntl(fd2, fcntl.F_SETLKW, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 10, 0))
            os._exit(7)
        os.read(ready2_r, 1)
        time.sleep(0.2)
        log.note("waiter still blocked", os.waitpid(child2, os.WNOHANG)[0] == 0)
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(FLOCK, fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))
        _, status = os.waitpid(child2, 0)
        log.note("waiter got lock", os.WEXITSTATUS(status))
    finally:
        os.close(fd)


def case_flock(d, log):
    f = p(d, "f")
    write_file(f, b"x", 0o666)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        fd = os.open(f, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(ready_w, b"1")
        os.read(done_r, 1)
        os._exit(0)
    os.read(ready_r, 1)
    fd = os.open(f, os.O_RDONLY)
    try:
        log.call("flock EX NB conflicting", fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        log.call("flock SH NB conflicting", fcntl.flock, fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.write(done_w, b"1")
        os.waitpid(child, 0)
        # The child's last close releases its lock, but on FUSE that RELEASE travels asynchronously after the exit:
        # give it up to 2 s to arrive before the attempt that is logged.
        for _ in range(200):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                break
            except BlockingIOError:
                time.sleep(0.01)
        log.call("flock EX NB after release", fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fd2 = os.open(f, os.O_RDONLY)
        log.call("flock second open file", fcntl.flock, fd2, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.close(fd2)
        log.call("unlock", fcntl.flock, fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def case_fallocate(d, log):
    f = p(d, "f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        log.c("fallocate 1MiB", libc.fallocate(fd, 0, 0, 1 << 20))
        log.call("size", lambda: os.fstat(fd).st_size)
        log.call("allocated", lambda: os.fstat(fd).st_blocks * 512 >= 1 << 20)
        log.c("keep size beyond", libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20))
        log.call("size kept", lambda: os.fstat(fd).st_size)
        os.pwrite(fd, b"\xff" * 65536, 0)
        log.c("punch hole", libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192))
        log.call("punched reads zero", lambda: os.pread(fd, 8192, 4096) == b"\0" * 8192)
        log.call("around intact", lambda: os.pread(fd, 4096, 0) == b"\xff" * 4096 and os.pread(fd, 4096, 12288) == b"\xff" * 4096)
        log.call("size after punch", lambda: os.fstat(fd).st_size)
        log.c("punch without keep size", libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096))
        log.c("negative length", libc.fallocate(fd, 0, 0, -1))
        log.call("posix_fallocate grow", os.posix_fallocate, fd, 0, 3 << 20)
        log.call("size grown", lambda: os.fstat(fd).st_size)
    finally:
        os.close(fd)
    fd = os.open(f, os.O_RDONLY)
    try:
        log.c("fallocate read-only fd", libc.fallocate(fd, 0, 0, 4096))
    finally:
        os.close(fd)


def case_seek_data_hole(d, log):
    f = p(d, "f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a" * 4096, 0)
        os.pwrite(fd, b"b" * 4096, 1 << 20)
        os.fsync(fd)
        log.call("size", lambda: os.fstat(fd).st_size)
        log.call("SEEK_DATA 0", os.lseek, fd, 0, os.SEEK_DATA)
        log.call("SEEK_HOLE 0", os.lseek, fd, 0, os.SEEK_HOLE)
        log.call("SEEK_DATA 8192", os.lseek, fd, 8192, os.SEEK_DATA)
        log.call("SEEK_HOLE 1MiB", os.lseek, fd, 1 << 20, os.SEEK_HOLE)
        log.call("SEEK_DATA at eof", os.lseek, fd, (1 << 20) + 4096, os.SEEK_DATA)
        log.call("SEEK_HOLE beyond eof", os.lseek, fd, 10 << 20, os.SEEK_HOLE)
        log.call("SEEK_DATA negative", os.lseek, fd, -1, os.SEEK_DATA)
        log.call("position after", os.lseek, fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)


def case_copy_file_range(d, log):
    src = p(d, "src")
    data = bytes((i * 13) % 256 for i in range(10 * 1024 + 5))
    write_file(src, data)
    write_file(p(d, "dst"), b"")
    a = os.open(src, os.O_RDONLY)
    b = os.open(p(d, "dst"), os.O_RDWR)
    try:
        log.call("copy all", os.copy_file_range, a, b, len(data), 0, 0)
        log.call("copy at offset", os.copy_file_range, a, b, 100, 10, 20000)
        log.call("copy beyond eof", os.copy_file_range, a, b, 100, 1 << 20, 0)
        log.call("dst size", lambda: os.fstat(b).st_size)
        log.call("dst content", lambda: os.pread(b, 30000, 0))
        log.call("copy into read-only fd", os.copy_file_range, b, a, 10, 0, 0)
    finally:
        os.close(a)
        os.close(b)


def case_syncfs(d, log):
    write_file(p(d, "f"), b"x")
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        log.c("syncfs dir", libc.syncfs(dfd))
    finally:
        os.close(dfd)
    log.c("syncfs bad fd", libc.syncfs(9999))


def case_unlinked_open(d, log):
    f = p(d, "f")
    write_file(f, b"still here")
    fd = os.open(f, os.O_RDWR)
    try:
        log.call("unlink", os.unlink, f)
        log.call("stat name", os.stat, f)
        log.call("fstat", os.fstat, fd)
        log.call("pread", os.pread, fd, 100, 0)
        log.call("pwrite", os.pwrite, fd, b"+later", 10)
        log.call("pread again", os.pread, fd, 100, 0)
        log.call("ftruncate", os.ftruncate, fd, 5)
        log.call("fstat after", os.fstat, fd)
        log.call("recreate name", write_file, f, b"other")
        log.call("old fd unaffected", os.pread, fd, 100, 0)
    finally:
        os.close(fd)
    os.mkdir(p(d, "dir"))
    dfd = os.open(p(d, "dir"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        log.call("rmdir open dir", os.rmdir, p(d, "dir"))
        log.call("fstat removed dir", lambda: os.fstat(dfd).st_nlink)
        log.call("create in removed dir", os.open, p(d, "dir", "x"), os.O_CREAT | os.O_WRONLY)
    finally:
        os.close(dfd)


def case_ownership(d, log):
    write_file(p(d, "mine"), b"x")
    log.call("new file owner", lambda: [os.stat(p(d, "mine")).st_uid == os.geteuid(), os.stat(p(d, "mine")).st_gid == os.getegid()])
    os.mkdir(p(d, "mydir"))
    log.call("new dir owner", lambda: os.stat(p(d, "mydir")).st_uid == os.geteuid())
    os.symlink("x", p(d, "mylink"))
    log.call("new symlink owner", lambda: os.lstat(p(d, "mylink")).st_uid == os.geteuid())
    if not ROOT:
        return
    os.chmod(d, 0o777)
    os.mkdir(p(d, "sgid"), 0o2777)
    os.chown(p(d, "sgid"), 0, 4321)
    os.chmod(p(d, "sgid"), 0o2777)

    def other(lg):
        write_file(p(d, "other"), b"o")
        lg.call("stat other file", os.stat, p(d, "other"))
        os.mkdir(p(d, "otherdir"))
        lg.call("stat other dir", os.stat, p(d, "otherdir"))
        os.symlink("t", p(d, "otherlink"))
        lg.call("lstat other link", os.lstat, p(d, "otherlink"))
        os.mkfifo(p(d, "otherfifo"))
        lg.call("stat other fifo", os.stat, p(d, "otherfifo"))
        write_file(p(d, "sgid", "f"), b"x")
        lg.call("file in setgid dir", os.stat, p(d, "sgid", "f"))
        os.mkdir(p(d, "sgid", "sub"))
        lg.call("dir in setgid dir", os.stat, p(d, "sgid", "sub"))
        lg.call("chown to root", os.chown, p(d, "other"), 0, 0)
        lg.call("chgrp to foreign group", os.chown, p(d, "other"), -1, 4321)
        lg.call("chmod root's file", os.chmod, p(d, "mine"), 0o777)
        lg.call("utime root's file explicit", os.utime, p(d, "mine"), ns=(1, 1))
        lg.call("utime root's file now", os.utime, p(d, "mine"), None)
    log.note("as other", as_user(OTHER, other))


def case_setuid_cleared(d, log):
    f = p(d, "f")
    write_file(f, b"0123456789", 0o777)
    os.chmod(d, 0o777)
    os.chmod(f, 0o6777)
    log.call("mode before", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))
    if ROOT:
        def writer(lg):
            fd = os.open(f, os.O_WRONLY)
            lg.call("write as other", os.write, fd, b"x")
            os.close(fd)
            lg.call("mode after write", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))
            os.chmod(f, 0o6777) if os.stat(f).st_uid == os.geteuid() else None
        log.note("other writes", as_user(OTHER, writer))
        os.chmod(f, 0o6777)
        log.note("other truncates", as_user(OTHER, lambda lg: (lg.call("truncate", os.truncate, f, 3),
                                                                 lg.call("mode", lambda: oct(stat.S_IMODE(os.stat(f).st_mode))))))
        os.chmod(f, 0o6777)
        fd = os.open(f, os.O_WRONLY)
        os.write(fd, b"r")
        os.close(fd)
        log.call("mode after root write", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))
        os.chown(f, OTHER, OTHER)
        log.call("mode after chown", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))
    else:
        fd = os.open(f, os.O_WRONLY)
        log.call("owner write", os.write, fd, b"x")
        os.close(fd)
        log.call("mode after owner write", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))
        os.chmod(f, 0o6777)
        log.call("owner truncate", os.truncate, f, 2)
        log.call("mode after owner truncate", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))


def case_permissions(d, log):
    os.mkdir(p(d, "private"), 0o700)
    os.chmod(p(d, "private"), 0o700)
    write_file(p(d, "private", "f"), b"secret")
    write_file(p(d, "ro"), b"read only", 0o444)
    os.chmod(p(d, "ro"), 0o444)
    write_file(p(d, "noread"), b"x", 0o200)
    os.chmod(p(d, "noread"), 0o200)
    os.mkdir(p(d, "rx"), 0o555)
    os.chmod(p(d, "rx"), 0o555)
    write_file(p(d, "noexec"), b"#!/bin/sh\nexit 0\n", 0o644)
    os.chmod(p(d, "noexec"), 0o644)

    def probe(lg):
        lg.call("stat in private", os.stat, p(d, "private", "f"))
        lg.call("open in private", os.open, p(d, "private", "f"), os.O_RDONLY)
        lg.call("list private", os.listdir, p(d, "private"))
        lg.call("open ro for write", os.open, p(d, "ro"), os.O_WRONLY)
        lg.call("truncate ro", os.truncate, p(d, "ro"), 0)
        lg.call("open noread", os.open, p(d, "noread"), os.O_RDONLY)
        lg.call("create in rx", os.open, p(d, "rx", "new"), os.O_CREAT | os.O_WRONLY, 0o644)
        lg.call("mkdir in rx", os.mkdir, p(d, "rx", "newdir"))
        lg.c("access noexec X", libc.access(p(d, "noexec").encode(), os.X_OK))
    if ROOT:
        log.note("as root", (lambda lg: (probe(lg), lg.entries)[1])(Log()))
        os.chmod(d, 0o755)
        log.note("as other", as_user(OTHER, probe))
        # Sticky directory: another user may not remove a file it does not own.
        os.mkdir(p(d, "tmp"), 0o1777)
        os.chmod(p(d, "tmp"), 0o1777)
        log.note("other creates", as_user(OTHER, lambda lg: lg.call("create", write_file, p(d, "tmp", "of"), b"x")))
        log.note("third removes", as_user(OTHER2, lambda lg: lg.call("unlink others file in sticky", os.unlink, p(d, "tmp", "of"))))
        log.note("third renames", as_user(OTHER2, lambda lg: lg.call("rename others file in sticky", os.rename, p(d, "tmp", "of"), p(d, "tmp", "x"))))
    else:
        os.chmod(p(d, "private"), 0o000)
        probe(log)


def case_many_files(d, log):
    for i in range(500):
        write_file(p(d, "n%04d" % i), str(i).encode())
    ok = all(read_file(p(d, "n%04d" % i)) == str(i).encode() for i in range(500))
    log.note("all readable", ok)
    for i in range(0, 500, 2):
        os.unlink(p(d, "n%04d" % i))
    log.note("remaining", len(os.listdir(d)))


def case_mmap(d, log):
    import mmap
    f = p(d, "f")
    write_file(f, b"\0" * 8192)
    fd = os.open(f, os.O_RDWR)
    try:
        m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        m[100:105] = b"hello"
        m[5000:5003] = b"xyz"
        log.call("msync", m.flush)
        m.close()
        log.call("pread after msync", os.pread, fd, 5, 100)
        log.call("pread second page", os.pread, fd, 3, 5000)
        m = mmap.mmap(fd, 8192, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
        m[0:4] = b"priv"
        m.close()
        log.call("private mapping not written back", os.pread, fd, 4, 0)
    finally:
        os.close(fd)
    log.call("content hash", lambda: hashlib.sha256(read_file(f)).hexdigest())


def case_byte_names(d, log):
    names = [b"caf\xe9", b"\xff\xfe", b"new\nline", b" lead space", b"trail space ", b"back\\slash", b"...",
             b"-dash", b"\xe2\x98\x83 snowman", b"tab\tname", b"#hash", b"*star?"]
    bd = os.fsencode(d)
    for n in names:
        log.call("create " + n.hex(), write_file, os.path.join(bd, n), n)
    log.call("listdir bytes", lambda: sorted(x.hex() for x in os.listdir(bd)))
    for n in names:
        log.call("read " + n.hex(), lambda n=n: read_file(os.path.join(bd, n)) == n)
    log.call("rename non-utf8", os.rename, os.path.join(bd, b"\xff\xfe"), os.path.join(bd, b"\xfe\xff"))
    log.call("stat renamed", lambda: os.stat(os.path.join(bd, b"\xfe\xff")).st_size)
    for n in names:
        log.call("unlink " + n.hex(), os.unlink, os.path.join(bd, n if n != b"\xff\xfe" else b"\xfe\xff"))
    log.call("empty again", lambda: os.listdir(bd))


def case_big_offsets(d, log):
    f = p(d, "f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for off in (2**31 - 2, 2**32 + 5, 5 * 2**30, 2**40):
            log.call("pwrite at %d" % off, os.pwrite, fd, b"edge", off)
            log.call("pread at %d" % off, os.pread, fd, 8, off)
        log.call("size", lambda: os.fstat(fd).st_size)
        # With --writeback the data may still be dirty in the client's cache, where LSEEK (answered by the host) cannot
        # see it; the kernel does not write back before LSEEK. seek_data_hole covers that; here the offsets matter.
        os.fsync(fd)
        log.call("SEEK_DATA from 4GiB", os.lseek, fd, 2**32, os.SEEK_DATA)
        log.call("pwrite beyond max", os.pwrite, fd, b"x", 2**63 - 1)
        log.call("truncate to 16 TiB", os.ftruncate, fd, 2**44)
        log.call("truncate beyond ext4 max", os.ftruncate, fd, 2**62)
    finally:
        os.close(fd)


def case_link_rename(d, log):
    write_file(p(d, "a"), b"one inode")
    os.link(p(d, "a"), p(d, "b"))
    log.call("rename onto own hard link", os.rename, p(d, "a"), p(d, "b"))
    log.call("both names remain", lambda: sorted(os.listdir(d)))
    log.call("nlink", lambda: os.stat(p(d, "a")).st_nlink)
    log.c("exchange two links", libc.renameat2(AT_FDCWD, p(d, "a").encode(), AT_FDCWD, p(d, "b").encode(), RENAME_EXCHANGE))
    os.mkdir(p(d, "x"))
    os.mkdir(p(d, "x", "y"))
    log.call("rename parent into child", os.rename, p(d, "x"), p(d, "x", "y", "z"))
    log.call("rename dir to .", os.rename, p(d, "x", "y"), p(d, "x", "."))
    log.call("rename . away", os.rename, p(d, "x", "."), p(d, "w"))
    log.call("rename over ..", os.rename, p(d, "a"), p(d, "x", ".."))


def case_perm_changes(d, log):
    if not ROOT:
        f = p(d, "mine")
        write_file(f, b"x")
        log.call("chmod g+s own file, own group", os.chmod, f, 0o2755)
        log.call("mode", lambda: oct(stat.S_IMODE(os.stat(f).st_mode)))
        log.call("chgrp to a group not held", os.chown, f, -1, 0)
        return
    os.chmod(d, 0o777)
    f = p(d, "shared")
    write_file(f, b"x", 0o666)
    os.chmod(f, 0o666)
    g = p(d, "foreign-group")
    write_file(g, b"x")
    os.chown(g, OTHER, 4321)

    def other(lg):
        lg.call("utime now on writable foreign file", os.utime, f, None)
        lg.call("utime explicit on writable foreign file", os.utime, f, ns=(5, 5))
        ts = (ctypes.c_long * 4)(0, UTIME_NOW, 0, UTIME_OMIT)
        lg.c("utimensat atime now, mtime omit", libc.utimensat(AT_FDCWD, f.encode(), ts, 0))
        lg.call("chmod g+s with a group not held", os.chmod, g, 0o2755)
        lg.call("mode after", lambda: oct(stat.S_IMODE(os.stat(g).st_mode)))
        lg.call("truncate writable foreign file", os.truncate, f, 0)
        lg.call("chmod foreign file", os.chmod, f, 0o600)
    log.note("as other", as_user(OTHER, other))


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def main():
    global ROOT
    args = sys.argv[1:]
    if args and args[0] == "--list":
        print(json.dumps(sorted(CASES)))
        return
    base = args[0]
    uid = 0
    wanted = []
    i = 1
    while i < len(args):
        if args[i] == "--uid":
            uid = int(args[i + 1])
            i += 2
        elif args[i] == "--case":
            wanted.append(args[i + 1])
            i += 2
        else:
            sys.exit("unknown argument " + args[i])
    os.umask(0o022)
    os.makedirs(base, exist_ok=True)
    if uid:
        os.chown(base, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    ROOT = os.geteuid() == 0
    results = {}
    for name in (wanted or sorted(CASES)):
        d = os.path.join(base, name)
        os.mkdir(d)
        log = Log()
        try:
            CASES[name](d, log)
        except Exception as e:  # noqa: BLE001 - an unexpected failure is part of the case's result
            log.note("exception", type(e).__name__ + ": " + str(e))
        results[name] = log.entries
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
