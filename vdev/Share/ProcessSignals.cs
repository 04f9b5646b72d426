using Hypervisor.Interop;

namespace Hypervisor.Vdev.Share;

/// <summary>Signals for the daemons the vdev's launchers started (never anything else: callers pass only those pids).</summary>
internal static class ProcessSignals
{
    /// <summary>kill(2) of one process; false for a pid that names no single process (0 or negative) or when kill fails.</summary>
    public static bool Kill(int pid, int signal) => pid > 0 && Libc.kill(pid, signal) == 0;

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
