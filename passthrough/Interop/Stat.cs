using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

/// <summary>
/// <c>struct stat</c> of x86_64 Linux glibc (144 bytes); StatLayoutTests checks every offset against gcc.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Stat
{
    public ulong Dev;
    public ulong Ino;
    public ulong Nlink;
    public uint Mode;
    public uint Uid;
    public uint Gid;
    public int Pad0;
    public ulong Rdev;
    public long Size;
    public long Blksize;
    public long Blocks;
    public long Atime;
    public long AtimeNsec;
    public long Mtime;
    public long MtimeNsec;
    public long Ctime;
    public long CtimeNsec;
    public long Reserved0;
    public long Reserved1;
    public long Reserved2;
}

/// <summary><c>struct statvfs</c> of x86_64 Linux glibc (112 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct StatVfs
{
    public ulong Bsize;
    public ulong Frsize;
    public ulong Blocks;
    public ulong Bfree;
    public ulong Bavail;
    public ulong Files;
    public ulong Ffree;
    public ulong Favail;
    public ulong Fsid;
    public ulong Flag;
    public ulong Namemax;
    public fixed int Spare[6];
}

/// <summary><c>struct timespec</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Timespec
{
    public long Sec;
    public long Nsec;
}

/// <summary><c>struct flock</c> of x86_64 Linux (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Flock
{
    public short Type;
    public short Whence;
    public long Start;
    public long Len;
    public int Pid;
}

internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstat(SafeFd fd, out Stat st);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstat(int fd, out Stat st);

    /// <summary><c>fstatat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstatat(SafeFd dirfd, ReadOnlySpan<byte> path, out Stat st, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstatvfs(SafeFd fd, out StatVfs st);
}
