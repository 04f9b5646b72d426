using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct statx</c> (linux/stat.h, 256 bytes): the same layout on every architecture, unlike struct stat.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Statx
{
    public uint Mask;
    public uint Blksize;
    public ulong Attributes;
    public uint Nlink;
    public uint Uid;
    public uint Gid;
    public ushort Mode;
    public ushort Spare0;
    public ulong Ino;
    public ulong Size;
    public ulong Blocks;
    public ulong AttributesMask;
    public StatxTimestamp Atime;
    public StatxTimestamp Btime;
    public StatxTimestamp Ctime;
    public StatxTimestamp Mtime;
    public uint RdevMajor;
    public uint RdevMinor;
    public uint DevMajor;
    public uint DevMinor;
    public ulong MntId;
    public uint DioMemAlign;
    public uint DioOffsetAlign;
    // unsafe only for the fixed-size reserve at the end, which newer kernels fill and this code never reads.
    public fixed ulong Spare3[12];
}

/// <summary><c>struct statx_timestamp</c> (linux/stat.h).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct StatxTimestamp
{
    public long TvSec;
    public uint TvNsec;
    public int Reserved;
}
