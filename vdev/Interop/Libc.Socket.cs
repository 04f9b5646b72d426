using System.Runtime.InteropServices;
using System.Text;

namespace Hypervisor.Vdev.Interop;

/// <summary>UNIX stream sockets with SCM_RIGHTS: the vhost-user channel.</summary>
internal static unsafe partial class Libc
{
    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int SO_ACCEPTCONN = 30;
    public const int SO_TYPE = 3;
    public const int SO_DOMAIN = 39;
    public const int MSG_CTRUNC = 0x8;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int ENOTSOCK = 88;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Len;
    }

    /// <summary>struct msghdr on LP64 Linux.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    /// <summary>struct cmsghdr on LP64 Linux; data follows at offset 16.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public nuint Len;
        public int Level;
        public int Type;
    }

    public const int CmsgHdrSize = 16;

    /// <summary>CMSG_SPACE for <paramref name="dataBytes"/>: header plus data rounded up to 8.</summary>
    public static int CmsgSpace(int dataBytes) => CmsgHdrSize + ((dataBytes + 7) & ~7);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int bind(SafeHandle fd, byte* addr, uint len);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int listen(SafeHandle fd, int backlog);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int accept4(SafeHandle fd, void* addr, void* len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint recvmsg(SafeHandle fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint sendmsg(SafeHandle fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int getsockopt(SafeHandle fd, int level, int name, void* value, uint* len);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int getsockname(SafeHandle fd, byte* addr, uint* len);

    /// <summary>
    /// The filesystem path a UNIX socket is bound to (getsockname), or null when <paramref name="fd"/> is not
    /// a socket, not AF_UNIX, unbound or bound to an abstract name.
    /// </summary>
    public static string? BoundUnixPath(SafeHandle fd)
    {
        byte* addr = stackalloc byte[112];
        uint len = 112;
        // Safe: the buffer holds a whole sockaddr_un (110 bytes) and len tells the kernel its size; the kernel
        // writes at most len bytes and returns the address's real length in len.
        if (getsockname(fd, addr, &len) < 0 || len <= 2 || len > 110 || *(ushort*)addr != AF_UNIX || addr[2] == 0) return null;
        var path = new ReadOnlySpan<byte>(addr + 2, (int)len - 2);
        int nul = path.IndexOf((byte)0);
        return Encoding.UTF8.GetString(nul >= 0 ? path[..nul] : path);
    }

    /// <summary>Fills a sockaddr_un (110 bytes) for <paramref name="path"/>; returns its length or -1 if the path is too long.</summary>
    public static int FillSockaddrUn(Span<byte> addr, string path)
    {
        addr[..110].Clear();
        addr[0] = AF_UNIX;
        if (Encoding.UTF8.GetByteCount(path) > 107) return -1;
        int n = Encoding.UTF8.GetBytes(path, addr[2..109]);
        return n >= 107 ? -1 : 2 + n + 1;
    }
}

/// <summary>lstat(2), only to tell whether a path is a socket.</summary>
internal static unsafe partial class Libc
{
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lstat(string path, byte* buf);

    /// <summary>True when <paramref name="path"/> exists and is a UNIX socket (S_IFSOCK; st_mode is at offset 24 of x86-64 struct stat).</summary>
    public static bool IsSocket(string path)
    {
        byte* st = stackalloc byte[256];
        // Safe: struct stat is 144 bytes on x86-64; the buffer is 256.
        if (lstat(path, st) < 0) return false;
        return (*(uint*)(st + 24) & 0xF000) == 0xC000;
    }
}
