using System.Runtime.InteropServices;

namespace Hypervisor.Benchmarks.Interop;

/// <summary>The system calls the socketpair baseline of the ring benchmark needs.</summary>
internal static unsafe partial class SocketPairInterop
{
    internal const int AF_UNIX = 1;
    internal const int SOCK_STREAM = 1;
    internal const int SOCK_CLOEXEC = 0x80000;
    internal const int SOL_SOCKET = 1;
    internal const int SO_SNDBUF = 7;
    internal const int SO_RCVBUF = 8;
    internal const int F_SETFD = 2;
    internal const int EINTR = 4;

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    internal static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    internal static partial int SetSockOpt(int fd, int level, int name, int* value, uint length);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    internal static partial nint Read(int fd, byte* buf, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    internal static partial nint Write(int fd, byte* buf, nuint count);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    /// <summary>A connected AF_UNIX stream pair with 4 MiB socket buffers, both ends close-on-exec.</summary>
    internal static (int A, int B) Create()
    {
        int* sv = stackalloc int[2];
        // Safe: sv points at two ints on this stack frame, as socketpair requires.
        if (SocketPair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw new IOException($"socketpair failed: errno {Marshal.GetLastPInvokeError()}.");
        int size = 4 << 20;
        for (int i = 0; i < 2; i++)
        {
            SetSockOpt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, 4);
            SetSockOpt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, 4);
        }
        return (sv[0], sv[1]);
    }

    /// <summary>Reads exactly buffer.Length bytes; false on end of stream.</summary>
    internal static bool ReadExactly(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                // Safe: p + done .. p + Length lies inside the pinned buffer.
                nint n = Read(fd, p + done, (nuint)(buffer.Length - done));
                if (n > 0) { done += (int)n; continue; }
                if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
                return false;
            }
            return true;
        }
    }

    /// <summary>Writes all of buffer; false if the peer went away.</summary>
    internal static bool WriteAll(int fd, ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                // Safe: p + done .. p + Length lies inside the pinned buffer.
                nint n = Write(fd, p + done, (nuint)(buffer.Length - done));
                if (n > 0) { done += (int)n; continue; }
                if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
                return false;
            }
            return true;
        }
    }
}
