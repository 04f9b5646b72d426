using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>open(2) and openat(2), and the O_ flags (x86_64 and arm64 values; the asm-generic ones).</summary>
internal static partial class Libc
{
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
    /// <summary>The kernel's value, as a guest's FUSE open flags carry it (glibc defines 0 on 64-bit, where every open is large).</summary>
    internal const int O_LARGEFILE = 0x8000;
    internal const int O_DIRECTORY = 0x10000;
    internal const int O_NOFOLLOW = 0x20000;
    internal const int O_NOATIME = 0x40000;
    internal const int O_CLOEXEC = 0x80000;
    internal const int O_SYNC = 0x101000;
    internal const int O_PATH = 0x200000;
    internal const int O_TMPFILE = 0x410000;

    /// <summary><c>open(2)</c> of a path given as a string.</summary>
    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int open(string path, int flags, uint mode);

    /// <summary><c>openat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int openat(SafeHandle dirfd, ReadOnlySpan<byte> path, int flags, uint mode);

    /// <summary><c>openat(2)</c> with a raw directory fd (AT_FDCWD for the /proc/self/fd reopen trick).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int openat(int dirfd, ReadOnlySpan<byte> path, int flags, uint mode);
}
