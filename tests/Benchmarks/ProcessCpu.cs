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
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        // The command name (field 2) may hold spaces; after its closing parenthesis come field 3 (state) on, so
        // utime and stime (fields 14 and 15) are at 11 and 12.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) * TickSeconds;
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
