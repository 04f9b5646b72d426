using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace Hypervisor.Interop;

/// <summary>
/// Gives up capabilities on every thread of the process: capabilities, the bounding set and NoNewPrivs belong to each
/// thread in Linux, and a .NET process has threads before Main (the runtime's finalizer thread). So this runs early,
/// while the only other thread is the finalizer thread, which is made to drop them by running a finalizer of ours;
/// then every thread's /proc status is read back, so that a thread that kept anything is an error, not a gap.
/// </summary>
internal static class ThreadConfinement
{
    /// <summary>The process's thread ids now (/proc/self/task).</summary>
    public static List<int> ThreadIds()
    {
        var ids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc/self/task"))
            ids.Add(int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture));
        return ids;
    }

    /// <summary>
    /// Keeps <paramref name="keep"/> (those of them the process has) as the effective, permitted and bounding sets (inheritable and ambient empty) and
    /// sets NoNewPrivs, on this thread and the finalizer thread; then checks <paramref name="threads"/> (the ids taken
    /// before any other thread could start). Returns null, or what went wrong as the end of a sentence.
    /// </summary>
    public static string? Drop(ulong keep, List<int> threads)
    {
        // A capability the process does not have (not in the bounding set it was started with) cannot be kept.
        keep &= Libc.ThreadPermittedCapabilities();
        if (OnThisAndFinalizerThread(() => DropOnThisThread(keep)) is { } problem) return problem;
        var expected = keep.ToString("x16", CultureInfo.InvariantCulture);
        foreach (var tid in threads)
        {
            if (ThreadStatus(tid) is not { } status) continue; // the thread has ended
            foreach (var field in new[] { "CapEff", "CapPrm", "CapBnd" })
            {
                if (Field(status, field) != expected)
                    return $"thread {tid} ({Field(status, "Name")}) still has {field} {Field(status, field)}, not {expected}: it was started before the capabilities were dropped";
            }
            if (Field(status, "NoNewPrivs") != "1") return $"thread {tid} ({Field(status, "Name")}) does not have NoNewPrivs";
        }
        return null;
    }

    /// <summary>Only NoNewPrivs, on this thread and the finalizer thread (for a process that has no capabilities to give up).</summary>
    public static string? NoNewPrivs() => OnThisAndFinalizerThread(SetNoNewPrivs);

    /// <summary>Runs <paramref name="action"/> on this thread, then on the runtime's finalizer thread; null, or what failed where.</summary>
    private static string? OnThisAndFinalizerThread(Func<string?> action)
    {
        if (action() is { } here) return here;
        var result = new StrongBox<string?>("did not run");
        Queue(action, result);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return result.Value is { } there ? $"on the finalizer thread, {there}" : null;
    }

    private static string? DropOnThisThread(ulong keep)
    {
        for (int cap = 0; cap < 64; cap++)
        {
            if ((keep & (1UL << cap)) != 0) continue;
            // EINVAL: a capability this kernel does not have.
            if (Libc.prctl(Libc.PR_CAPBSET_DROP, (nuint)cap, 0, 0, 0) != 0 && Libc.LastErrno != Libc.EINVAL)
                return $"dropping capability {cap} from the bounding set failed with {Libc.Describe(Libc.LastErrno)}";
        }
        if (Libc.prctl(Libc.PR_CAP_AMBIENT, Libc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
            return $"clearing the ambient set failed with {Libc.Describe(Libc.LastErrno)}";
        if (Libc.SetThreadCapabilities(keep) != 0) return $"capset failed with {Libc.Describe(Libc.LastErrno)}";
        return SetNoNewPrivs();
    }

    private static string? SetNoNewPrivs() =>
        Libc.prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? null : $"PR_SET_NO_NEW_PRIVS failed with {Libc.Describe(Libc.LastErrno)}";

    // Allocated in a frame of its own, so that nothing on the caller's stack keeps the object alive.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Queue(Func<string?> action, StrongBox<string?> result) => _ = new OnFinalizerThread(action, result);

    private sealed class OnFinalizerThread(Func<string?> action, StrongBox<string?> result)
    {
        ~OnFinalizerThread() => result.Value = action();
    }

    /// <summary>A thread's /proc status; relative to the working directory once that is the process's /proc/self/fd (<see cref="ProcPath"/>).</summary>
    private static string? ThreadStatus(int tid)
    {
        var path = ProcPath.IsRelative ? $"../task/{tid}/status" : $"/proc/self/task/{tid}/status";
        var fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return null;
        using var file = new SafeFd(fd);
        var buffer = new byte[8192];
        var n = Libc.read(fd, buffer, (nuint)buffer.Length);
        return n <= 0 ? null : Encoding.ASCII.GetString(buffer, 0, (int)n);
    }

    private static string? Field(string status, string name)
    {
        foreach (var line in status.Split('\n'))
        {
            if (line.StartsWith(name + ":", StringComparison.Ordinal)) return line[(name.Length + 1)..].Trim();
        }
        return null;
    }
}
