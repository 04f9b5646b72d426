using System.Globalization;

namespace Hypervisor.Benchmarks;

/// <summary>
/// CPU time of the host processes that serve one shared directory: every process with an argument that is the
/// directory itself or ends in "=DIR" (virtiofsd's <c>-o source=DIR</c>; the vdev's and its passthrough daemon's
/// <c>--shared-dir DIR</c>). Read from /proc/PID/stat (user + system time of all threads, in clock ticks of 10 ms),
/// so a row of a second or more is resolved to about 1 %.
/// </summary>
public sealed class BackendCpu(string sharedDirectory)
{
    private const double TickSeconds = 0.01; // USER_HZ is 100 on Linux
    private readonly Dictionary<int, double> _seen = new();

    /// <summary>CPU seconds the directory's server processes used so far (processes that exited keep their last reading).</summary>
    public double Seconds()
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
            if (!_seen.ContainsKey(pid) && !Serves(pid)) continue;
            if (TryReadCpu(pid, out var seconds)) _seen[pid] = seconds;
        }
        var total = 0.0;
        foreach (var s in _seen.Values) total += s;
        return total;
    }

    private bool Serves(int pid)
    {
        string cmdline;
        try { cmdline = File.ReadAllText($"/proc/{pid}/cmdline"); }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
        foreach (var arg in cmdline.Split('\0'))
        {
            if (arg == sharedDirectory || arg.EndsWith("=" + sharedDirectory, StringComparison.Ordinal)) return true;
        }
        return false;
    }

    private static bool TryReadCpu(int pid, out double seconds)
    {
        seconds = 0;
        string stat;
        try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (IOException) { return false; }
        // The command name (field 2) may hold spaces; the fields after its closing parenthesis start at field 3.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        if (fields.Length < 13) return false;
        seconds = (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) * TickSeconds;
        return true;
    }
}
