namespace Hypervisor.Tests;

/// <summary>The fields of a /proc/PID/status or /proc/PID/task/TID/status file, by name.</summary>
internal static class ProcStatus
{
    public static Dictionary<string, string> Read(string path)
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in File.ReadAllLines(path))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0) fields[line[..colon]] = line[(colon + 1)..].Trim();
        }
        return fields;
    }
}
