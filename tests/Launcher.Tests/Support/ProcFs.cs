namespace Hypervisor.Launcher.Tests.Support;

/// <summary>What /proc tells about a process.</summary>
internal static class ProcFs
{
    /// <summary>Whether the process exists and is not a zombie (a zombie has exited; only its parent's wait is missing).</summary>
    public static bool IsRunning(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            // Field 3 (state) follows the ')' that ends the command name.
            var state = stat[(stat.LastIndexOf(')') + 2)..][0];
            return state is not ('Z' or 'X');
        }
        catch (IOException) { return false; }
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for the process to be gone; returns whether it is.</summary>
    public static bool WaitGone(int pid, int timeoutMs)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (IsRunning(pid))
        {
            if (Environment.TickCount64 > deadline) return false;
            Thread.Sleep(20);
        }
        return true;
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> until the process runs <paramref name="command"/> (its /proc comm, set by
    /// exec); returns whether it does. A script daemon reports ready before it has closed its ready pipe and exec'ed
    /// its last command, and fuse_launcher may exit in between: its descriptors are final only after that exec.
    /// </summary>
    public static bool WaitForCommand(int pid, string command, int timeoutMs)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (true)
        {
            try
            {
                if (File.ReadAllText($"/proc/{pid}/comm").TrimEnd('\n') == command) return true;
            }
            catch (IOException) { return false; }
            if (Environment.TickCount64 > deadline) return false;
            Thread.Sleep(5);
        }
    }

    /// <summary>The open descriptors of a process: number → link target.</summary>
    public static Dictionary<int, string> Fds(int pid)
    {
        var fds = new Dictionary<int, string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            try
            {
                var target = new FileInfo(entry).LinkTarget;
                if (target is not null) fds[int.Parse(Path.GetFileName(entry))] = target;
            }
            catch (IOException) { }
        }
        return fds;
    }

    /// <summary>
    /// The open descriptors of a process once <paramref name="settled"/> holds for them, or as they are after
    /// <paramref name="timeoutMs"/>: for a process that opens and closes files of its own while it starts.
    /// </summary>
    public static Dictionary<int, string> FdsOnceSettled(int pid, Func<Dictionary<int, string>, bool> settled, int timeoutMs)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (true)
        {
            var fds = Fds(pid);
            if (settled(fds) || Environment.TickCount64 > deadline) return fds;
            Thread.Sleep(5);
        }
    }

    /// <summary>Pids of running processes whose command line contains every one of <paramref name="parts"/>.</summary>
    public static List<int> FindByCommandLine(params string[] parts)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string cmdline;
            try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' '); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            bool all = true;
            foreach (var part in parts) all &= cmdline.Contains(part, StringComparison.Ordinal);
            if (all && IsRunning(pid)) found.Add(pid);
        }
        return found;
    }
}
