using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct iovec</c> (LP64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    public void* Base;
    public nuint Len;
}

/// <summary><c>struct msghdr</c> of LP64 Linux.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLen;
    public IoVec* Iov;
    public nuint IovLen;
    public void* Control;
    public nuint ControlLen;
    public int Flags;
}

/// <summary><c>struct cmsghdr</c> of LP64 Linux; the data follows at <see cref="Size"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CmsgHdr
{
    public nuint Len;
    public int Level;
    public int Type;

    /// <summary>CMSG_LEN(0): the header, aligned to 8.</summary>
    public const int Size = 16;

    /// <summary>CMSG_LEN(<paramref name="dataBytes"/>): the value of <see cref="Len"/>.</summary>
    public static int Length(int dataBytes) => Size + dataBytes;

    /// <summary>CMSG_SPACE(<paramref name="dataBytes"/>): the header plus the data rounded up to 8.</summary>
    public static int Space(int dataBytes) => Size + ((dataBytes + 7) & ~7);
}
