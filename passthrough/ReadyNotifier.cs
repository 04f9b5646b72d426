using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Passthrough;

/// <summary>
/// Tells the process that started the daemon (fuse_launcher) that it serves: one line
/// <c>ready pid=PID control=PATH</c> on an inherited pipe, which is then closed.
/// </summary>
public static class ReadyNotifier
{
    /// <summary>Writes the ready line to <paramref name="fd"/> and closes it.</summary>
    /// <exception cref="IOException">The descriptor is not open or its reader has gone.</exception>
    public static void Notify(int fd, string? controlSocket)
    {
        var line = Encoding.UTF8.GetBytes($"ready pid={Environment.ProcessId} control={controlSocket ?? "-"}\n");
        // Disposing the handle closes the fd, which is the launcher's end-of-file signal.
        using var handle = new SafeFd(fd);
        if (handle.IsInvalid) throw new IOException($"The ready fd {fd} is not valid; pass the descriptor the launcher gave.");
        ReadOnlySpan<byte> rest = line;
        while (!rest.IsEmpty)
        {
            // The fd is a pipe: a write may be short, and EPIPE (the runtime ignores SIGPIPE) means the launcher is gone.
            nint written = Libc.write(handle, rest, (nuint)rest.Length);
            if (written < 0)
            {
                int errno = Libc.LastErrno;
                if (errno == Libc.EINTR) continue;
                throw new IOException($"Writing the ready line to fd {fd} failed: {Libc.Describe(errno)}.");
            }
            rest = rest[(int)written..];
        }
    }
}
