using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Share;

/// <summary>
/// The host CPUs that serve a share's request queues (<c>queue_cpus</c> in a VM configuration, <c>--queue-cpus</c> on
/// the vdev's, fuse_launcher's and the daemon's command lines). Request queue <c>i</c> (1..N) is served on the
/// <c>i</c>-th CPU of the list by both of its ends: the vdev's worker for that virtqueue and the daemon's dispatcher
/// for the matching ring queue. The hiprio queue is not pinned. Written like <c>taskset -c</c>: CPU numbers and
/// ranges, e.g. <c>2,3</c> or <c>0-1</c>.
/// Why: on a small host, a request handed from one process to the other on the same CPU costs a context switch,
/// but one handed across CPUs also costs the wake-up of the other CPU, and the scheduler moves the threads around.
/// An operator who pins the guest's vCPUs pins each queue's two ends next to the vCPU that submits on it.
/// A share with more than one request queue gets <see cref="Spread"/> when no list is given, and <c>none</c>
/// (<see cref="IsNone"/>) leaves every queue where the scheduler puts it.
/// </summary>
public sealed class QueueCpus
{
    /// <summary>The highest CPU number accepted (the masks passed to the kernel cover 1024 CPUs).</summary>
    public const int MaxCpu = Libc.CpuMaskBytes * 8 - 1;

    private readonly int[] _cpus;

    private QueueCpus(int[] cpus) => _cpus = cpus;

    /// <summary>The CPUs in request-queue order: entry 0 serves request queue 1.</summary>
    public IReadOnlyList<int> Cpus => _cpus;

    /// <summary>The CPU that serves request queue <paramref name="requestQueue"/> (1..<see cref="Cpus"/>.Count).</summary>
    public int CpuOf(int requestQueue) => _cpus[requestQueue - 1];

    /// <summary>The list as the command lines take it, e.g. <c>0,1</c>.</summary>
    public override string ToString() => string.Join(',', _cpus);

    /// <summary>
    /// Parses a list of CPU numbers and ranges (<c>0,1</c>, <c>2-3</c>), each at most <see cref="MaxCpu"/>.
    /// </summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out QueueCpus? cpus)
    {
        cpus = null;
        var list = new List<int>();
        foreach (var item in (text ?? "").Split(','))
        {
            var range = item.Trim().Split('-');
            if (range.Length > 2 || !TryCpu(range[0], out int first) || !TryCpu(range[^1], out int last) || last < first) return false;
            for (int cpu = first; cpu <= last; cpu++) list.Add(cpu);
        }
        cpus = new QueueCpus([.. list]);
        return true;
    }

    /// <summary>The list as the settings model carries it.</summary>
    public CpuList ToList()
    {
        var list = new CpuList();
        foreach (var cpu in _cpus) list.Cpus.Add((uint)cpu);
        return list;
    }

    /// <summary>The list the settings model carries; every CPU was checked against <see cref="MaxCpu"/> when it was parsed.</summary>
    public static QueueCpus FromList(CpuList list)
    {
        var cpus = new int[list.Cpus.Count];
        for (int i = 0; i < cpus.Length; i++) cpus[i] = (int)Math.Min(list.Cpus[i], (uint)MaxCpu);
        return new QueueCpus(cpus);
    }

    /// <summary>The word that asks for no pinning at all, in place of a list.</summary>
    public const string None = "none";

    /// <summary>Whether <paramref name="text"/> is <see cref="None"/>.</summary>
    public static bool IsNone(string? text) => string.Equals(text?.Trim(), None, StringComparison.Ordinal);

    /// <summary>
    /// The placement a share gets when its configuration gives none: with two or more request queues and two or
    /// more CPUs to run on, request queue <c>i</c> goes to the <c>i</c>-th CPU this process may run on, counted from
    /// the <paramref name="first"/>-th (several shares of one VM configuration take the CPUs in turn), round the
    /// list again when there are more queues than CPUs. Null (nothing pinned) for one request queue, which then
    /// has both CPUs of a small host for its two ends, or when this process may run on one CPU only.
    /// Why a default: unpinned, the scheduler often puts a queue's two ends on different CPUs, and every request
    /// then costs a cross-CPU wake-up each way (the measurements are in tests/Benchmarks/VdevBench.md).
    /// </summary>
    public static QueueCpus? Spread(int requestQueues, int first = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(first);
        var allowed = AllowedCpus();
        if (requestQueues < 2 || allowed.Count < 2) return null;
        var cpus = new int[requestQueues];
        for (int i = 0; i < cpus.Length; i++) cpus[i] = allowed[(first + i) % allowed.Count];
        return new QueueCpus(cpus);
    }

    private static bool TryCpu(string s, out int cpu) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out cpu) && cpu <= MaxCpu;

    /// <summary>
    /// Checks the list against the share: one CPU per request queue, each one this process may run on. Returns null
    /// when it fits, else one sentence naming <paramref name="option"/> and what to change.
    /// </summary>
    public string? Check(int requestQueues, string option)
    {
        if (_cpus.Length != requestQueues)
            return $"{option} {this} lists {_cpus.Length} CPU{(_cpus.Length == 1 ? "" : "s")} for {requestQueues} request queue{(requestQueues == 1 ? "" : "s")}; give one CPU per request queue.";
        return CheckAllowed(option);
    }

    /// <summary>Checks that this process may run on every CPU of the list; null when it may, else what to change.</summary>
    public string? CheckAllowed(string option)
    {
        var allowed = AllowedCpus();
        foreach (int cpu in _cpus)
        {
            if (!allowed.Contains(cpu))
                return $"{option} {this} names CPU {cpu}, which this process may not run on (allowed: {Ranges(allowed)}); choose among those.";
        }
        return null;
    }

    /// <summary>The CPUs the calling thread may run on (its affinity mask, which cpusets and taskset narrow).</summary>
    public static IReadOnlyList<int> AllowedCpus()
    {
        Span<byte> mask = stackalloc byte[Libc.CpuMaskBytes];
        // glibc zeroes the part of the mask beyond the kernel's.
        if (Libc.sched_getaffinity(0, Libc.CpuMaskBytes, mask) != 0) throw SyscallException.Last("sched_getaffinity");
        var cpus = new List<int>();
        for (int cpu = 0; cpu <= MaxCpu; cpu++)
            if ((mask[cpu >> 3] & (1 << (cpu & 7))) != 0) cpus.Add(cpu);
        return cpus;
    }

    /// <summary>
    /// Moves the calling thread onto <paramref name="cpu"/> alone. Returns false with the errno when the kernel
    /// refuses (the CPU went offline, or a cpuset no longer includes it); the thread then stays where it was.
    /// </summary>
    public static bool TryPinCurrentThread(int cpu, out int errno)
    {
        Span<byte> mask = stackalloc byte[Libc.CpuMaskBytes];
        mask.Clear();
        // cpu is at most MaxCpu (checked when the list was parsed), so the bit lies inside the mask.
        mask[cpu >> 3] = (byte)(1 << (cpu & 7));
        errno = Libc.sched_setaffinity(0, Libc.CpuMaskBytes, mask) == 0 ? 0 : Libc.LastErrno;
        return errno == 0;
    }

    /// <summary>CPU numbers written as ranges: 0-3,6.</summary>
    private static string Ranges(IReadOnlyList<int> cpus)
    {
        var text = new StringBuilder();
        for (int i = 0; i < cpus.Count; i++)
        {
            int start = cpus[i];
            while (i + 1 < cpus.Count && cpus[i + 1] == cpus[i] + 1) i++;
            if (text.Length > 0) text.Append(',');
            text.Append(start.ToString(CultureInfo.InvariantCulture));
            if (cpus[i] != start) text.Append('-').Append(cpus[i].ToString(CultureInfo.InvariantCulture));
        }
        return text.Length == 0 ? "none" : text.ToString();
    }
}
