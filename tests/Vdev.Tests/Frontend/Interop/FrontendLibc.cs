using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Tests.Frontend;

/// <summary>
/// The syscalls the test/benchmark vhost-user front-end needs. Kept apart from the vdev's own interop so
/// that this folder compiles on its own into the benchmark project.
/// </summary>
internal static unsafe partial class FrontendLibc
{
    public const int EINTR = 4, EAGAIN = 11;
    public const int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SCM_RIGHTS = 1, MSG_NOSIGNAL = 0x4000;
    public const int PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;
    public const int EFD_CLOEXEC = 0x80000, EFD_NONBLOCK = 0x800;
    public const uint MFD_CLOEXEC = 1;
    public const short POLLIN = 1;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Len; }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name; public uint NameLen; public IoVec* Iov; public nuint IovLen;
        public void* Control; public nuint ControlLen; public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd { public int Fd; public short Events; public short Revents; }

    [LibraryImport("libc", SetLastError = true)] public static partial int close(int fd);
    [LibraryImport("libc", SetLastError = true)] public static partial nint read(int fd, void* buf, nuint count);
    [LibraryImport("libc", SetLastError = true)] public static partial nint write(int fd, void* buf, nuint count);
    [LibraryImport("libc", SetLastError = true)] public static partial int eventfd(uint initval, int flags);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int memfd_create(string name, uint flags);
    [LibraryImport("libc", SetLastError = true)] public static partial int ftruncate(int fd, long length);
    [LibraryImport("libc", SetLastError = true)] public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport("libc", SetLastError = true)] public static partial int munmap(nint addr, nuint length);
    [LibraryImport("libc", SetLastError = true)] public static partial int socket(int domain, int type, int protocol);
    [LibraryImport("libc", SetLastError = true)] public static partial int connect(int fd, byte* addr, uint len);
    [LibraryImport("libc", SetLastError = true)] public static partial int shutdown(int fd, int how);
    [LibraryImport("libc", SetLastError = true)] public static partial nint sendmsg(int fd, MsgHdr* msg, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial nint recv(int fd, void* buf, nuint len, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial int poll(PollFd* fds, nuint n, int timeout);

    public static IOException Error(string call) => new($"{call} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");

    /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="fd"/> to be readable.</summary>
    public static bool WaitReadable(int fd, int timeoutMs)
    {
        PollFd p = new() { Fd = fd, Events = POLLIN };
        while (true)
        {
            // Safe: p is a local pollfd.
            int r = poll(&p, 1, timeoutMs);
            if (r > 0) return true;
            if (r == 0) return false;
            if (Marshal.GetLastPInvokeError() != EINTR) throw Error("poll");
        }
    }

    public static int NewEventFd(bool nonBlocking = true)
    {
        int fd = eventfd(0, EFD_CLOEXEC | (nonBlocking ? EFD_NONBLOCK : 0));
        if (fd < 0) throw Error("eventfd");
        return fd;
    }

    /// <summary>Reads and resets an eventfd; 0 when it was not signalled (non-blocking).</summary>
    public static ulong ReadEventFd(int fd)
    {
        ulong v = 0;
        // Safe: v is an 8-byte local.
        return read(fd, &v, 8) == 8 ? v : 0;
    }

    public static void SignalEventFd(int fd)
    {
        ulong one = 1;
        // Safe: one is an 8-byte local.
        if (write(fd, &one, 8) != 8) throw Error("eventfd write");
    }
}
