using System.Diagnostics;
using System.Text.Json;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// Runs Mount/fs_ops.py (copied next to the test assembly): named cases of ordinary syscalls whose JSON log of
/// (call, result or errno) must be the same on the passthrough mount and on a plain local directory.
/// </summary>
internal static class FsOpsScript
{
    /// <summary>Debian's interpreter (it has every module the script needs); else whatever python3 is on PATH.</summary>
    public static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    public static string ScriptPath => Path.Combine(AppContext.BaseDirectory, "Mount", "fs_ops.py");

    /// <summary>Runs every case in <paramref name="baseDir"/> (created by the script) as <paramref name="uid"/>; returns case → log.</summary>
    public static Dictionary<string, JsonElement> RunAll(string baseDir, int uid)
    {
        var output = Run(TimeSpan.FromSeconds(90), ScriptPath, baseDir, "--uid", uid.ToString());
        using var doc = JsonDocument.Parse(output);
        var result = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var property in doc.RootElement.EnumerateObject()) result[property.Name] = property.Value.Clone();
        return result;
    }

    /// <summary>Runs python with <paramref name="args"/>; returns stdout, or throws with stderr on failure or timeout.</summary>
    public static string Run(TimeSpan timeout, params string[] args)
    {
        var info = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"python {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s (a filesystem call hung?).");
        }
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"python {string.Join(' ', args)} exited with {process.ExitCode}:\n{stderr.Result}");
        return stdout.Result;
    }

    /// <summary>
    /// Compares two logs of one case entry by entry; returns null when equal, else a message naming the first call
    /// that differs with both results.
    /// </summary>
    public static string? Difference(string caseName, JsonElement local, JsonElement mounted)
    {
        var l = local.EnumerateArray().ToArray();
        var m = mounted.EnumerateArray().ToArray();
        for (var i = 0; i < Math.Min(l.Length, m.Length); i++)
        {
            var a = l[i].GetRawText();
            var b = m[i].GetRawText();
            if (a != b)
                return $"case {caseName}, call #{i} {l[i][0].GetString()} differs:\n  local dir: {a}\n  mount:     {b}";
        }
        if (l.Length != m.Length)
        {
            var extra = l.Length > m.Length ? $"local dir continues with {l[m.Length].GetRawText()}" : $"mount continues with {m[l.Length].GetRawText()}";
            return $"case {caseName}: the local dir logged {l.Length} calls and the mount {m.Length}; {extra}";
        }
        return null;
    }
}
