using System.Globalization;
using System.Text;

namespace Hypervisor.Benchmarks;

/// <summary>
/// CPU time of benchmarked server processes from /proc: user + system time of all their threads (/proc/PID/stat,
/// in clock ticks of 10 ms), and the processes that serve a given share.
/// </summary>
internal static class ProcessCpu
{
    private const double TickSeconds = 0.01; // USER_HZ is 100 on Linux

    /// <summary>User + system seconds of <paramref name="pid"/> so far; <see cref="IOException"/> once it is gone.</summary>
    public static double Seconds(int pid)
    {
        // utime and stime are fields 14 and 15.
        var fields = StatFields(pid);
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) * TickSeconds;
    }

    /// <summary>
    /// The fields of /proc/PID/stat from field 3 (state) on: index 0 is the state, 1 the parent's pid, 11 and 12 utime
    /// and stime. The command name (field 2) may hold spaces, so the split starts after its closing parenthesis.
    /// <see cref="IOException"/> once the process is gone.
    /// </summary>
    public static string[] StatFields(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    }

    /// <summary>The sum of <see cref="Seconds(int)"/> over <paramref name="pids"/>; a process that has gone counts 0.</summary>
    public static double Seconds(int[] pids)
    {
        double total = 0;
        foreach (var pid in pids)
        {
            try { total += Seconds(pid); }
            catch (IOException) { }
        }
        return total;
    }

    /// <summary>
    /// Every process but this one whose command line contains <paramref name="share"/> (the backend, its forked
    /// child, the daemon the vdev's launcher started), in pid order.
    /// </summary>
    public static int[] FindPids(string share)
    {
        var needle = Encoding.UTF8.GetBytes(share);
        var pids = new List<int>();
        int self = Environment.ProcessId;
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid) || pid == self) continue;
            try
            {
                var cmd = File.ReadAllBytes(Path.Combine(d, "cmdline"));
                if (cmd.AsSpan().IndexOf(needle) >= 0) pids.Add(pid);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        pids.Sort();
        return pids.ToArray();
    }
}
