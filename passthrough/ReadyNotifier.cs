using System.Text;
using Microsoft.Win32.SafeHandles;

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
        // Disposing the stream closes the fd, which is the launcher's end-of-file signal. The write goes on until the
        // whole line is in the pipe (which may take it in pieces); EPIPE (the runtime ignores SIGPIPE) means the
        // launcher is gone.
        try
        {
            using var pipe = new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, bufferSize: 0);
            pipe.Write(line);
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            throw new IOException($"Writing the ready line to fd {fd} failed: {e.Message}", e);
        }
    }
}
