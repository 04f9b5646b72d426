using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

/// <summary>
/// Linux x86_64 / arm64 constants used by the passthrough filesystem (asm-generic values; x86_64 and arm64 agree on
/// every one used here except where noted).
/// </summary>
internal static partial class Libc
{
    internal const string Name = "libc";

    internal const int AT_FDCWD = -100;
    internal const int AT_SYMLINK_NOFOLLOW = 0x100;
    internal const int AT_REMOVEDIR = 0x200;
    internal const int AT_EACCESS = 0x200;
    internal const int AT_SYMLINK_FOLLOW = 0x400;
    internal const int AT_EMPTY_PATH = 0x1000;

    internal const int O_RDONLY = 0;
    internal const int O_WRONLY = 1;
    internal const int O_RDWR = 2;
    internal const int O_ACCMODE = 3;
    internal const int O_CREAT = 0x40;
    internal const int O_EXCL = 0x80;
    internal const int O_NOCTTY = 0x100;
    internal const int O_TRUNC = 0x200;
    internal const int O_APPEND = 0x400;
    internal const int O_NONBLOCK = 0x800;
    internal const int O_DSYNC = 0x1000;
    internal const int O_DIRECT = 0x4000;
    internal const int O_LARGEFILE = 0x8000;
    internal const int O_DIRECTORY = 0x10000;
    internal const int O_NOFOLLOW = 0x20000;
    internal const int O_NOATIME = 0x40000;
    internal const int O_CLOEXEC = 0x80000;
    internal const int O_SYNC = 0x101000;
    internal const int O_PATH = 0x200000;
    internal const int O_TMPFILE = 0x410000;

    internal const uint S_IFMT = 0xF000;
    internal const uint S_IFSOCK = 0xC000;
    internal const uint S_IFLNK = 0xA000;
    internal const uint S_IFREG = 0x8000;
    internal const uint S_IFBLK = 0x6000;
    internal const uint S_IFDIR = 0x4000;
    internal const uint S_IFCHR = 0x2000;
    internal const uint S_IFIFO = 0x1000;
    internal const uint S_ISUID = 0x800;
    internal const uint S_ISGID = 0x400;
    internal const uint S_IXGRP = 0x8;

    internal const long UTIME_NOW = (1L << 30) - 1;
    internal const long UTIME_OMIT = (1L << 30) - 2;

    internal const int SEEK_SET = 0;
    internal const int SEEK_CUR = 1;
    internal const int SEEK_END = 2;
    internal const int SEEK_DATA = 3;
    internal const int SEEK_HOLE = 4;

    internal const int F_RDLCK = 0;
    internal const int F_WRLCK = 1;
    internal const int F_UNLCK = 2;
    internal const int F_OFD_GETLK = 36;
    internal const int F_OFD_SETLK = 37;
    internal const int F_OFD_SETLKW = 38;
    internal const int LOCK_SH = 1;
    internal const int LOCK_EX = 2;
    internal const int LOCK_NB = 4;
    internal const int LOCK_UN = 8;

    internal const int CLONE_FS = 0x200;

    internal const int MAX_HANDLE_SZ = 128;

    /// <summary>errno of the last failed call on this thread.</summary>
    internal static int Errno() => Marshal.GetLastPInvokeError();

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int close(int fd);
}
