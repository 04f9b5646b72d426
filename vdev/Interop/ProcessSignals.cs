using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Interop;

/// <summary>kill(2) for the daemons the vdev's launchers started (never anything else: callers pass only those pids).</summary>
internal static partial class ProcessSignals
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillNative(int pid, int signal);

    public static bool Kill(int pid, int signal) => pid > 0 && KillNative(pid, signal) == 0;

    /// <summary>True while the process exists and is not a zombie.</summary>
    public static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }
}
