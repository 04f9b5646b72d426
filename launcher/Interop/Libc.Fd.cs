using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Interop;

internal static partial class Libc
{
    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int F_DUPFD_CLOEXEC = 1030;
    public const int FD_CLOEXEC = 1;
    public const int O_RDONLY = 0;
    public const int O_RDWR = 2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EBADF = 9;
    public const int ESRCH = 3;
    public const int ECHILD = 10;
    public const int ENXIO = 6;

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int cmd, int arg);

    public const int SEEK_END = 2;

    /// <summary>lseek(2); -1 (ESPIPE) on pipes and sockets.</summary>
    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "pipe2", SetLastError = true)]
    private static unsafe partial int Pipe2(int* fds, int flags);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint Read(int fd, byte* buffer, nuint count);

    /// <summary>Whether <paramref name="fd"/> is an open descriptor of this process (fcntl F_GETFD succeeds).</summary>
    public static bool IsOpen(int fd) => Fcntl(fd, F_GETFD, 0) >= 0;

    /// <summary>Whether <paramref name="fd"/> is open without FD_CLOEXEC, i.e. could have been inherited through exec.</summary>
    public static bool IsInherited(int fd)
    {
        int flags = Fcntl(fd, F_GETFD, 0);
        return flags >= 0 && (flags & FD_CLOEXEC) == 0;
    }

    /// <summary>Creates a close-on-exec pipe; the caller places the ends it hands over with spawn file actions.</summary>
    public static (FdHandle Read, FdHandle Write) CreatePipe(bool nonBlockingRead)
    {
        int read, write;
        unsafe
        {
            // Safe: fds is a two-element stack array, exactly what pipe2(2) writes.
            int* fds = stackalloc int[2];
            if (Pipe2(fds, O_CLOEXEC) != 0)
                throw new IOException($"pipe2 failed: {Describe(LastErrno)}.");
            read = fds[0];
            write = fds[1];
        }
        var r = new FdHandle(read);
        var w = new FdHandle(write);
        if (nonBlockingRead)
        {
            // F_SETFL; O_NONBLOCK so a drain after poll never blocks on a pipe another process still holds open.
            if (Fcntl(read, 4 /* F_SETFL */, O_NONBLOCK) != 0)
                throw new IOException($"fcntl(F_SETFL, O_NONBLOCK) failed: {Describe(LastErrno)}.");
        }
        return (r, w);
    }

    /// <summary>read(2) into <paramref name="buffer"/>; returns the byte count, 0 at end of file, -1 with errno set.</summary>
    public static int ReadSome(FdHandle fd, Span<byte> buffer)
    {
        unsafe
        {
            // Safe: the span is pinned for the duration of the call and its length bounds the write.
            fixed (byte* p = buffer)
            {
                return (int)Read(fd.Fd, p, (nuint)buffer.Length);
            }
        }
    }
}

internal static partial class Libc
{
    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint Write(int fd, byte* buffer, nuint count);

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, uint mode = 0);

    public const int O_WRONLY = 1;
    public const int O_CREAT = 0x40;
    public const int O_APPEND = 0x400;

    /// <summary>Writes all of <paramref name="data"/> to a descriptor this code does not own; returns 0 or the errno.</summary>
    public static int WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            nint written;
            unsafe
            {
                // Safe: the span is pinned for the duration of the call and its length bounds the read.
                fixed (byte* p = data) written = Write(fd, p, (nuint)data.Length);
            }
            if (written < 0)
            {
                int errno = LastErrno;
                if (errno == EINTR) continue;
                return errno;
            }
            data = data[(int)written..];
        }
        return 0;
    }

    /// <summary>write(2) of <paramref name="data"/>; returns the byte count or -1 with errno set.</summary>
    public static int WriteSome(FdHandle fd, ReadOnlySpan<byte> data)
    {
        unsafe
        {
            // Safe: the span is pinned for the duration of the call and its length bounds the read.
            fixed (byte* p = data)
            {
                return (int)Write(fd.Fd, p, (nuint)data.Length);
            }
        }
    }

    /// <summary>
    /// Makes sure descriptors 0-2 are open (on /dev/null if not), so that no descriptor the launcher opens later
    /// lands on a standard stream number and is mistaken for one in the daemon.
    /// </summary>
    public static void EnsureStandardStreams()
    {
        for (int fd = 0; fd <= 2; fd++)
        {
            if (IsOpen(fd)) continue;
            // open(2) returns the lowest free number, which is this one.
            int opened = Open("/dev/null", O_RDWR);
            if (opened >= 0 && opened != fd) Close(opened);
        }
    }

    /// <summary>
    /// Sets FD_CLOEXEC on every open descriptor of this process from 3 up that is not in <paramref name="keep"/>,
    /// so that a descriptor fuse_launcher inherited without being told to pass it on does not reach the daemon.
    /// </summary>
    public static void CloseOnExecExcept(IReadOnlyList<int> keep)
    {
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out int fd) || fd <= 2) continue;
            bool kept = false;
            foreach (var k in keep) kept |= k == fd;
            if (kept) continue;
            int flags = Fcntl(fd, F_GETFD, 0);
            if (flags >= 0 && (flags & FD_CLOEXEC) == 0) Fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
}
