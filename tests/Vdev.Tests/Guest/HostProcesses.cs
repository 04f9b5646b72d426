using System.Diagnostics;
using System.Text;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// Host-side process helpers for the guest tests: running a command with a deadline (ended by pid when
/// it overruns) and finding the passthrough daemon that serves one particular shared directory.
/// </summary>
public static class HostProcesses
{
    /// <summary>What a finished command printed and how it exited.</summary>
    public readonly record struct Outcome(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}; stdout: {Stdout.Trim()}; stderr: {Stderr.Trim()}";
    }

    /// <summary>Runs <paramref name="exe"/> with <paramref name="args"/>; kills it by pid and throws if it takes longer than <paramref name="timeout"/>.</summary>
    public static Outcome Run(string exe, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"{exe} could not be started.");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit();
            throw new TimeoutException($"{exe} {string.Join(' ', psi.ArgumentList)} did not finish within {timeout.TotalSeconds:0} s.");
        }
        p.WaitForExit();
        return new Outcome(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>
    /// Pids of running passthrough daemons whose command line names <paramref name="sharedDirectory"/>
    /// (tests use a fresh temporary directory, so this finds only the daemon of that test's share, never
    /// another engineer's). A daemon is a process whose argv[0] or first .dll argument is "passthrough".
    /// </summary>
    public static List<int> FindPassthroughDaemons(string sharedDirectory)
    {
        var found = new List<int>();
        var full = Path.GetFullPath(sharedDirectory).TrimEnd('/');
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == Environment.ProcessId) continue;
            string[] argv;
            try { argv = File.ReadAllText(Path.Combine(dir, "cmdline"), Encoding.UTF8).Split('\0', StringSplitOptions.RemoveEmptyEntries); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (argv.Length == 0) continue;
            bool isDaemon = Path.GetFileName(argv[0]) == "passthrough"
                || (argv.Length > 1 && Path.GetFileName(argv[1]) == "passthrough.dll");
            if (!isDaemon) continue;
            foreach (var a in argv)
            {
                if (a.TrimEnd('/') == full || a == "source=" + full) { found.Add(pid); break; }
            }
        }
        return found;
    }

    /// <summary>True while <paramref name="pid"/> exists and is not a zombie.</summary>
    public static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] != 'Z';
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>SIGKILLs <paramref name="pid"/> and waits up to <paramref name="timeout"/> for it to be gone; true when it is.</summary>
    public static bool KillAndWait(int pid, TimeSpan timeout)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            p.Kill();
        }
        catch (ArgumentException) { return true; }       // already gone
        catch (InvalidOperationException) { return true; }
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (!IsAlive(pid)) return true;
            Thread.Sleep(20);
        }
        return !IsAlive(pid);
    }
}
