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
        // The fd is a pipe: not seekable, so no RandomAccess (which needs offsets); an unbuffered FileStream
        // writes sequentially and retries short writes. Disposing it closes the fd, which is the launcher's
        // end-of-file signal.
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (handle.IsInvalid) throw new IOException($"The ready fd {fd} is not valid; pass the descriptor the launcher gave.");
        using var stream = new FileStream(handle, FileAccess.Write, bufferSize: 0);
        stream.Write(line);
    }
}
