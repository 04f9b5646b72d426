using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// <c>struct stat</c> of x86_64 Linux glibc (144 bytes; arm64 lays it out differently). InteropLayoutTests checks every
/// field against gcc.
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
