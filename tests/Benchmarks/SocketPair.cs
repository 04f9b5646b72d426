using Hypervisor.Interop;

namespace Hypervisor.Benchmarks;

/// <summary>The AF_UNIX stream socketpair of the ring benchmark's socket baseline.</summary>
internal static class SocketPair
{
    /// <summary>A connected AF_UNIX stream pair with 4 MiB socket buffers, both ends close-on-exec.</summary>
    internal static (int A, int B) Create()
    {
        Span<int> sv = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0, sv) != 0)
            throw SyscallException.Last("socketpair");
        int size = 4 << 20;
        for (int i = 0; i < 2; i++)
        {
            using var end = new SafeFd(sv[i], ownsHandle: false);
            Libc.setsockopt(end, Libc.SOL_SOCKET, Libc.SO_SNDBUF, size, sizeof(int));
            Libc.setsockopt(end, Libc.SOL_SOCKET, Libc.SO_RCVBUF, size, sizeof(int));
        }
        return (sv[0], sv[1]);
    }

    /// <summary>Reads exactly buffer.Length bytes; false on end of stream.</summary>
    internal static bool ReadExactly(int fd, Span<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            nint n = Libc.read(fd, buffer[done..], (nuint)(buffer.Length - done));
            if (n > 0) { done += (int)n; continue; }
            if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
            return false;
        }
        return true;
    }

    /// <summary>Writes all of buffer; false if the peer went away.</summary>
    internal static bool WriteAll(int fd, ReadOnlySpan<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            nint n = Libc.write(fd, buffer[done..], (nuint)(buffer.Length - done));
            if (n > 0) { done += (int)n; continue; }
            if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
            return false;
        }
        return true;
    }
}
