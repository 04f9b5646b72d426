using System.Runtime.InteropServices;
using Hypervisor.Interop;

namespace Hypervisor.Benchmarks;

/// <summary>
/// What a benchmark leaves behind if it is stopped with Ctrl-C or SIGTERM: the processes it started (QEMU, virtiofsd,
/// the vdev, FUSE daemons), the filesystems it mounted and its work directories. On the first such signal this stops
/// every process descended from hv-bench (SIGTERM, then SIGKILL after 5 s), runs the registered clean-ups, newest
/// first, and exits with 128 + the signal's number. A second signal ends hv-bench at once.
/// </summary>
internal static class Interruption
{
    private static readonly object Gate = new();
    private static readonly List<(int Id, Action CleanUp)> CleanUps = [];
    private static int _nextId, _signalled;
    private static PosixSignalRegistration? _int, _term;

    /// <summary>Whether a signal has started the clean-up.</summary>
    public static bool Interrupted => Volatile.Read(ref _signalled) != 0;

    /// <summary>
    /// Called as the suite returns or fails: after an interruption, waits for the clean-up to finish (it then ends
    /// the process), so that a suite ending because its processes were stopped does not cut it short.
    /// </summary>
    public static void WaitIfInterrupted()
    {
        if (Interrupted) Thread.Sleep(Timeout.Infinite);
    }

    /// <summary>Starts watching for SIGINT and SIGTERM.</summary>
    public static void Install()
    {
        _int = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    /// <summary>Registers a clean-up for an interruption until the returned handle is disposed (the normal path ran it).</summary>
    public static IDisposable Register(Action cleanUp)
    {
        lock (Gate)
        {
            int id = ++_nextId;
            CleanUps.Add((id, cleanUp));
            return new Registration(id);
        }
    }

    private sealed class Registration(int id) : IDisposable
    {
        public void Dispose()
        {
            lock (Gate) CleanUps.RemoveAll(c => c.Id == id);
        }
    }

    private static void OnSignal(PosixSignalContext context)
    {
        // The second signal takes the default action: the process ends at once.
        if (Interlocked.Exchange(ref _signalled, 1) != 0) return;
        context.Cancel = true;
        int signal = context.Signal == PosixSignal.SIGINT ? 2 : 15;
        new Thread(() => CleanUpAndExit(signal)) { IsBackground = true, Name = "interrupted" }.Start();
    }

    private static void CleanUpAndExit(int signal)
    {
        try
        {
            Console.Error.WriteLine("hv-bench: interrupted; stopping the processes it started and undoing its set-up");
            int stopped = StopDescendants();
            (int Id, Action CleanUp)[] cleanUps;
            lock (Gate) cleanUps = [.. CleanUps];
            foreach (var (_, cleanUp) in cleanUps.Reverse())
            {
                try
                {
                    cleanUp();
                }
                catch (Exception e)
                {
                    Console.Error.WriteLine($"hv-bench: a clean-up failed: {e.Message}");
                }
            }
            // The main thread may have started another process meanwhile.
            stopped += StopDescendants();
            Console.Error.WriteLine($"hv-bench: stopped {stopped} process(es), ran {cleanUps.Length} clean-up(s)");
        }
        finally
        {
            // Ends the process, the main thread included (it waits in WaitIfInterrupted once the suite returns).
            Environment.Exit(128 + signal);
        }
    }

    /// <summary>Sends SIGTERM to every process descended from this one, SIGKILL to those left after 5 s; returns how many.</summary>
    private static int StopDescendants()
    {
        var pids = Descendants(Environment.ProcessId);
        foreach (int pid in pids) Libc.kill(pid, Libc.SIGTERM);
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (DateTime.UtcNow < deadline && pids.Any(Alive)) Thread.Sleep(50);
        foreach (int pid in pids.Where(Alive)) Libc.kill(pid, Libc.SIGKILL);
        return pids.Count;
    }

    private static bool Alive(int pid) => ReadStat(pid) is { } stat && stat.State != 'Z';

    /// <summary>The processes whose chain of parents leads to <paramref name="root"/>, children before grandchildren.</summary>
    private static List<int> Descendants(int root)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || ReadStat(pid) is not { } stat) continue;
            if (!children.TryGetValue(stat.Parent, out var list)) children[stat.Parent] = list = [];
            list.Add(pid);
        }
        var found = new List<int>();
        var queue = new Queue<int>([root]);
        while (queue.TryDequeue(out int pid))
        {
            if (!children.TryGetValue(pid, out var list)) continue;
            foreach (int child in list)
            {
                found.Add(child);
                queue.Enqueue(child);
            }
        }
        return found;
    }

    /// <summary>State and parent pid from /proc/PID/stat; null once the process is gone.</summary>
    private static (char State, int Parent)? ReadStat(int pid)
    {
        try
        {
            var fields = ProcessCpu.StatFields(pid);
            return (fields[0][0], int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }
}
