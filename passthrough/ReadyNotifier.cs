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
    public static void Notify(int fd, string? controlSocket)
    {
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        var line = Encoding.UTF8.GetBytes($"ready pid={Environment.ProcessId} control={controlSocket ?? "-"}\n");
        RandomAccess.Write(handle, line, 0);
    }
}
