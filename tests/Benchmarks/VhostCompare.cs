using System.Buffers.Binary;
using System.Buffers.Text;
using System.Diagnostics;
using System.Text;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Tests.Frontend;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench vhost --compare [--runs N] [--seconds S] [--warmup S] [--depth D] [--big-mib M] [--dir-entries E] [--readdir-size B]
/// [--vdev PATH] [--vdev-arg ARG]... [--virtiofsd PATH] [--work DIR] [--fs fresh-ext4|work] [--targets virtiofsd,vdev,vdev-2q,vdev-2q-unpinned] [--rows lookup+getattr,...]
/// [--view unpinned|one-cpu] [--builds NAME=PATH[:ARGS],NAME=PATH[:ARGS]...] [--perf]`: the real vdev process (vdev → shared-memory ring → passthrough
/// daemon started by fuse_launcher) against QEMU's C virtiofsd, both driven from the test vhost-user front-end
/// over their sockets, interleaved run by run, each run on a fresh copy of one source tree, by default on a new ext4 filesystem of its own (`--fs fresh-ext4`;
/// `--fs work` copies into the work directory instead). Every row keeps
/// D requests in flight (pipelined across descriptor chains on one request queue; the vdev-2q target uses two
/// request queues with D/2 each, metadata rows only, each queue's two ends on one CPU as the vdev places them by
/// default; vdev-2q-unpinned, asked for by name, the same with `--queue-cpus none`). Each row is served unmeasured for the warm-up seconds (default 1)
/// before it is measured, on every backend alike; the warm-up rate is printed with each run. Prints medians, ratios and the CPU seconds of each backend's
/// process tree per row (user+system from /proc/PID/stat of every process whose command line names the share), and
/// each side's CPU per unit (µs per operation, file or entry; ms per MiB for the 1 MiB rows) with the vdev's CPU per
/// unit over virtiofsd's.
/// <c>--view</c> says where the processes run. <c>unpinned</c> (the default) leaves every process where the
/// scheduler puts it. <c>one-cpu</c> gives the backend one CPU: each backend process is started with its affinity
/// set to the last CPU this process may run on (fuse_launcher and the daemon, or virtiofsd's child, inherit it), and
/// every front-end thread runs on another CPU, as a guest's vCPUs would beside a backend confined to one host CPU.
/// <c>--builds</c> measures two or more vdev builds (each PATH a vdev with its fuse_launcher and passthrough beside it)
/// instead of the targets: each run measures every build once, in turn forward and backward, and the summary gives per
/// build the median and range over the runs and per other build its per-run ratios to the first. A build may name
/// options of its own after a colon, separated by spaces (<c>nosandbox=dist/vdev:--sandbox none --seccomp none</c>), given
/// to that build's vdev after the common ones; two builds may then name the same executable. <c>--perf</c> adds
/// each backend process's task clock and system calls over every measured row (<see cref="PerfCount"/>).
/// </summary>
internal static class VhostCompare
{
    private const int QueueSize = 32;
    private const int Mib = 1 << 20;

    /// <summary>A backend to measure; <paramref name="Unpinned"/>: the vdev with <c>--queue-cpus none</c> (its default pins each request queue's two ends to one CPU when there are two or more).</summary>
    /// <summary><paramref name="Exe"/>: the executable of this target (a build named by <c>--builds</c>); null for the option's default.
    /// <paramref name="ExeArgs"/>: that build's own vdev options (after a colon in <c>--builds</c>).</summary>
    private sealed record Target(string Name, bool Vdev, int Queues, string[] Rows, bool Unpinned = false, string? Exe = null, string[]? ExeArgs = null);

    private static readonly string[] AllRows = ["lookup+getattr", "create+write4k+release", "readdirplus", "seqread-1m", "randread-4k", "seqwrite-1m"];
    private static readonly string[] MetaRows = ["lookup+getattr", "create+write4k+release", "readdirplus"];
    private static readonly Dictionary<string, string> Units = new()
    {
        ["lookup+getattr"] = "ops/s", ["create+write4k+release"] = "files/s", ["readdirplus"] = "entries/s",
        ["seqread-1m"] = "MiB/s", ["randread-4k"] = "IOPS", ["seqwrite-1m"] = "MiB/s",
    };

    private sealed class Options
    {
        public int Runs = 5, Seconds = 3, Warmup = 1, Depth = 16, BigMib = 256, DirEntries = 10_000, MetaFiles = 1000, ReaddirSize = 4096;
        public string? VdevPath, VirtiofsdPath = "/usr/lib/qemu/virtiofsd", Work;
        public bool FreshExt4 = true;
        /// <summary>--pin: request queue i's frontend thread runs on CPU (i-1) mod CPUs, and a vdev's two ends of it too (--queue-cpus).</summary>
        public int[]? QueueCpus;
        public string[]? Targets, Rows;
        /// <summary>--vdev-arg ARG (repeatable): more options for every vdev target, e.g. --queue-cpus 1.</summary>
        public List<string> VdevArgs = [];
        /// <summary>--view one-cpu: the CPU every backend process is confined to; null for the unpinned view.</summary>
        public int? BackendCpu;
        /// <summary>--view one-cpu: the CPU every front-end thread runs on.</summary>
        public int FrontendCpu;
        /// <summary>--builds NAME=PATH[:ARGS],...: vdev builds (or one build with different options) measured against each other, alternated run by run.</summary>
        public List<(string Name, string Path, string[] Args)> Builds = [];
        /// <summary>--perf: each process's task clock and system calls over each measured row, counted by perf stat.</summary>
        public bool Perf;
    }

    public static int Run(string[] args)
    {
        var o = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--runs": o.Runs = int.Parse(Next()); break;
                case "--seconds": o.Seconds = int.Parse(Next()); break;
                case "--warmup": o.Warmup = int.Parse(Next()); break;
                case "--depth": o.Depth = int.Parse(Next()); break;
                case "--big-mib": o.BigMib = int.Parse(Next()); break;
                case "--dir-entries": o.DirEntries = int.Parse(Next()); break;
                case "--readdir-size": o.ReaddirSize = int.Parse(Next()); break;
                case "--vdev": o.VdevPath = Next(); break;
                case "--vdev-arg": o.VdevArgs.Add(Next()); break;
                case "--virtiofsd": o.VirtiofsdPath = Next(); break;
                case "--work": o.Work = Next(); break;
                case "--fs":
                    string fs = Next();
                    if (fs is not ("fresh-ext4" or "work")) { Console.Error.WriteLine("--fs takes fresh-ext4 (a new ext4 per run and backend) or work (a copy in the work directory)."); return 2; }
                    o.FreshExt4 = fs == "fresh-ext4";
                    break;
                case "--targets": o.Targets = Next().Split(','); break;
                case "--pin":
                    var allowed = QueueCpus.AllowedCpus();
                    o.QueueCpus = [.. Enumerable.Range(0, 16).Select(i => allowed[i % allowed.Count])];
                    break;
                case "--rows": o.Rows = Next().Split(','); break;
                case "--builds":
                    foreach (var b in Next().Split(','))
                    {
                        int eq = b.IndexOf('=');
                        if (eq <= 0 || eq == b.Length - 1) { Console.Error.WriteLine("--builds takes NAME=PATH[:ARGS],NAME=PATH[:ARGS] (each PATH a vdev executable, its fuse_launcher and passthrough beside it; ARGS that build's own vdev options, separated by spaces)."); return 2; }
                        int colon = b.IndexOf(':', eq + 1);
                        string path = colon < 0 ? b[(eq + 1)..] : b[(eq + 1)..colon];
                        string[] buildArgs = colon < 0 ? [] : b[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                        o.Builds.Add((b[..eq], Path.GetFullPath(path), buildArgs));
                    }
                    break;
                case "--perf": o.Perf = true; break;
                case "--view":
                    string view = Next();
                    if (view is not ("one-cpu" or "unpinned")) { Console.Error.WriteLine("--view takes unpinned (every process where the scheduler puts it) or one-cpu (the backend on one CPU, the front-end on another)."); return 2; }
                    if (view == "one-cpu")
                    {
                        var cpus = QueueCpus.AllowedCpus();
                        if (cpus.Count < 2) { Console.Error.WriteLine("--view one-cpu needs two CPUs to run on: one for the backend, one for the front-end."); return 2; }
                        o.BackendCpu = cpus[^1];
                        o.FrontendCpu = cpus[0];
                    }
                    else o.BackendCpu = null;
                    break;
                default: Console.Error.WriteLine($"unknown option {args[i]} for vhost --compare"); return 2;
            }
        }
        if (o.BackendCpu is not null && o.QueueCpus is not null) { Console.Error.WriteLine("--pin and --view one-cpu place the same threads differently; give one of them."); return 2; }
        if (o.Depth < 1 || o.Depth > QueueSize) { Console.Error.WriteLine($"--depth must be between 1 and {QueueSize}."); return 2; }
        var root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../.."));
        o.VdevPath ??= Path.Combine(Hypervisor.Tests.Executables.Dist, "vdev");
        if (o.Builds.Count == 1 || (o.Builds.Count > 0 && (o.Targets != null || args.Contains("--vdev"))))
        { Console.Error.WriteLine("--builds takes two or more builds and replaces --targets and --vdev: every build is run as the vdev target."); return 2; }
        if (o.Builds.Count == 0 && !File.Exists(o.VdevPath)) { Console.Error.WriteLine($"{o.VdevPath} does not exist: run `bash .ci/build` in {root} or pass --vdev PATH."); return 2; }
        foreach (var (name, path, _) in o.Builds)
            if (!File.Exists(path)) { Console.Error.WriteLine($"{path} (build {name}) does not exist."); return 2; }
        if (o.Builds.Count > 0 && o.Builds.Select(b => b.Name).Distinct().Count() != o.Builds.Count) { Console.Error.WriteLine("--builds names must differ."); return 2; }
        if (!File.Exists(o.VirtiofsdPath)) { Console.Error.WriteLine($"{o.VirtiofsdPath} does not exist; install qemu-system-common or pass --virtiofsd PATH."); return 2; }

        var work = o.Work ?? Directory.CreateTempSubdirectory("hv-bench-compare-").FullName;
        using var removeWork = o.Work == null ? Interruption.Register(() => HostCommand.RunQuiet("rm", "-rf", work)) : null;
        Directory.CreateDirectory(work);
        var src = Path.Combine(work, "src");
        Console.WriteLine($"vhost --compare: {(o.Builds.Count > 0 ? "builds=" + string.Join(',', o.Builds.Select(b => $"{b.Name}={b.Path}{ArgsSuffix(b.Args)}")) : $"vdev={o.VdevPath}")} virtiofsd={o.VirtiofsdPath} runs={o.Runs} seconds/row={o.Seconds} depth={o.Depth} big={o.BigMib} MiB dir={o.DirEntries} entries readdir buffer={o.ReaddirSize} B work={work}");
        Console.WriteLine(ViewLine(o));
        Console.WriteLine($"load average at start: {File.ReadAllText("/proc/loadavg").Trim()}");
        BuildSource(src, o);

        var targets = new[]
        {
            new Target("virtiofsd", false, 1, AllRows),
            new Target("vdev", true, 1, AllRows),
            new Target("vdev-2q", true, 2, MetaRows),
            new Target("vdev-2q-unpinned", true, 2, MetaRows, Unpinned: true),
        };
        // The unpinned variant is there to be asked for.
        if (o.Targets == null) targets = targets.Where(t => !t.Unpinned).ToArray();
        if (o.Targets != null) targets = targets.Where(t => o.Targets.Contains(t.Name)).ToArray();
        if (o.Builds.Count > 0) targets = [.. o.Builds.Select(b => new Target(b.Name, true, 1, AllRows, Exe: b.Path, ExeArgs: b.Args))];
        if (o.Rows != null) targets = targets.Select(t => t with { Rows = t.Rows.Where(o.Rows.Contains).ToArray() }).ToArray();
        if (targets.Length == 0 || targets.All(t => t.Rows.Length == 0)) { Console.Error.WriteLine($"--targets takes virtiofsd,vdev,vdev-2q,vdev-2q-unpinned and --rows some of {string.Join(',', AllRows)}."); return 2; }
        var results = new Dictionary<(string, string), List<Sample>>();
        var loads = new List<string>();
        try
        {
            for (int run = 1; run <= o.Runs; run++)
            {
                // Builds compared with --builds go in turn forward and backward (A B, B A, A B, ...), so that neither
                // always runs right after the other or first after the source tree was built.
                var order = o.Builds.Count > 0 && run % 2 == 0 ? targets.Reverse().ToArray() : targets;
                foreach (var t in order)
                {
                    var copy = Path.Combine(work, $"{t.Name}-run{run}");
                    using var fresh = o.FreshExt4 ? new FreshExt4($"{Path.GetFileName(work)}-{t.Name}-run{run}", copy, 2L * o.BigMib * Mib + (4L << 30)) : null;
                    HostCommand.Run("cp", "-a", o.FreshExt4 ? src + "/." : src, copy);
                    try
                    {
                        var rows = RunTarget(t, copy, o, run == 1);
                        foreach (var (row, rate, cpu, warm, units, counts) in rows)
                        {
                            if (!results.TryGetValue((t.Name, row), out var l)) results[(t.Name, row)] = l = [];
                            var sample = new Sample(rate, cpu, CpuPerUnit(row, cpu, units), run, counts);
                            l.Add(sample);
                            Console.WriteLine($"run {run} {t.Name,-16} {row,-24} {rate,12:F1} {Units[row],-9} cpu {cpu,6:F2} s {PerUnit(row, sample.CpuPerUnit),8} {CpuUnit(row),-9} warm-up {warm,12:F1}" +
                                (counts is null ? "" : $" task clock {PerUnit(row, CpuPerUnit(row, counts.TotalClockNs / 1e9, units))} {CpuUnit(row)}; syscalls/unit " +
                                    string.Join(" ", counts.Processes.Select(p => $"{p.Name} {SyscallsPerUnit(p.Syscalls, units)}"))));
                        }
                    }
                    finally
                    {
                        if (fresh == null) HostCommand.Run("rm", "-rf", copy);
                    }
                }
                loads.Add(File.ReadAllText("/proc/loadavg").Trim());
                Console.WriteLine($"load average after run {run}: {loads[^1]}");
            }
        }
        finally
        {
            if (o.Work == null) HostCommand.Run("rm", "-rf", work);
        }

        Console.WriteLine();
        if (o.Builds.Count > 0)
        {
            PrintBuilds(o, results, loads);
            return 0;
        }
        if (o.QueueCpus is not null)
            Console.WriteLine($"Pinned (--pin): request queue i's frontend thread on CPU {string.Join(",", o.QueueCpus.Take(2))} for i = 1, 2, and the vdev's worker and the daemon's dispatcher of that queue with it (--queue-cpus; vdev-2q-unpinned excepted); virtiofsd has no such option and runs where the scheduler puts it.");
        Console.WriteLine(ViewLine(o));
        Console.WriteLine($"Medians of {o.Runs} runs, {o.Depth} requests in flight ({PerQueueDepth(o.Depth, 2)} per queue for vdev-2q); cpu = user+system seconds of the backend's processes during the row ({o.Seconds} s rows, each after {o.Warmup} s of the same row unmeasured); " +
            "cpu/unit = those seconds over the units done (µs per op, file or entry; ms per MiB for the 1 MiB rows), c/vfsd = the vdev's cpu/unit over virtiofsd's (< 1: the vdev spends less).");
        // One column group per vdev target run, each with its ratio to virtiofsd.
        var vdevs = targets.Where(t => t.Vdev).ToArray();
        var header = new StringBuilder($"| {"row",-24} | {"unit",-9} | {"virtiofsd",10} | {"cpu s",6} | {"cpu/unit",9} |");
        var rule = new StringBuilder($"|{new string('-', 26)}|{new string('-', 11)}|{new string('-', 12)}|{new string('-', 8)}|{new string('-', 11)}|");
        foreach (var t in vdevs)
        {
            header.Append($" {t.Name,16} | {"cpu s",6} | {"cpu/unit",9} | {"/vfsd",6} | {"c/vfsd",6} |");
            rule.Append($"{new string('-', 18)}|{new string('-', 8)}|{new string('-', 11)}|{new string('-', 8)}|{new string('-', 8)}|");
        }
        Console.WriteLine(header);
        Console.WriteLine(rule);
        foreach (var row in AllRows)
        {
            if (!targets.Any(t => t.Rows.Contains(row))) continue;
            var (vr, vc, vu) = Median(results, "virtiofsd", row);
            var line = new StringBuilder($"| {row,-24} | {Units[row],-9} | {vr,10:F0} | {vc,6:F2} | {PerUnit(row, vu),9} |");
            foreach (var t in vdevs)
            {
                var (dr, dc, du) = Median(results, t.Name, row);
                line.Append(double.IsNaN(dr) ? $" {"-",16} | {"-",6} | {"-",9} | {"-",6} | {"-",6} |" : $" {dr,16:F0} | {dc,6:F2} | {PerUnit(row, du),9} | {dr / vr,6:F2} | {du / vu,6:F2} |");
            }
            Console.WriteLine(line);
        }
        Console.WriteLine($"load averages after each run: {string.Join("; ", loads)}");
        return 0;
    }

    /// <summary>One measured row of one run: its rate, the backend's CPU seconds, and those per unit of the row.</summary>
    /// <summary><paramref name="Run"/>: the run it was measured in; <paramref name="Counts"/>: perf's counts over it (--perf).</summary>
    private readonly record struct Sample(double Rate, double Cpu, double CpuPerUnit, int Run = 0, PerfCounts? Counts = null);

    /// <summary>What perf counted per process over one measured row, and the units done in it.</summary>
    private sealed record PerfCounts(double Units, (string Name, double ClockNs, double Syscalls)[] Processes)
    {
        public double TotalClockNs => Processes.Sum(p => double.IsNaN(p.ClockNs) ? 0 : p.ClockNs);
    }

    /// <summary>
    /// A process's system calls per unit, or "not counted" when perf saw none of it in the window (virtiofsd's parent,
    /// which only waits for its sandboxed child).
    /// </summary>
    private static string SyscallsPerUnit(double syscalls, double units) =>
        double.IsNaN(syscalls) ? "not counted" : (syscalls / units).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);

    private static double MedianOf(IEnumerable<double> values)
    {
        var a = values.Where(v => !double.IsNaN(v)).Order().ToArray();
        if (a.Length == 0) return double.NaN;
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }

    /// <summary>"median [min-max]" of <paramref name="values"/>, formatted with <paramref name="format"/>.</summary>
    private static string Spread(IEnumerable<double> values, string format)
    {
        var a = values.Where(v => !double.IsNaN(v)).Order().ToArray();
        if (a.Length == 0) return "-";
        string F(double v) => v.ToString(format, System.Globalization.CultureInfo.InvariantCulture);
        return $"{F(MedianOf(a))} [{F(a[0])}-{F(a[^1])}]";
    }

    /// <summary>
    /// The --builds summary: per row and build the medians and ranges over the runs (rate, CPU per unit from /proc,
    /// and with --perf the task clock and system calls per unit of each process), then each build against the first
    /// as the median and range of the per-run ratios (each run measured both builds one after the other, so a ratio
    /// compares two measurements under nearly the same load).
    /// </summary>
    private static void PrintBuilds(Options o, Dictionary<(string, string), List<Sample>> results, List<string> loads)
    {
        var names = o.Builds.Select(b => b.Name).ToArray();
        Console.WriteLine($"Builds: {string.Join(", ", o.Builds.Select(b => $"{b.Name} = {b.Path}{ArgsSuffix(b.Args)}"))}; {o.Runs} runs, the builds alternated within each run (forward, then backward), {o.Depth} requests in flight, one request queue, {o.Seconds} s rows after {o.Warmup} s unmeasured.");
        Console.WriteLine("Per build: median [min-max] over the runs. cpu/unit: user+system of /proc (10 ms ticks); task clock/unit: perf's task-clock of the backend's processes; syscalls/unit: raw_syscalls:sys_enter of each process over the units done.");
        foreach (var row in AllRows)
        {
            if (!names.Any(n => results.ContainsKey((n, row)))) continue;
            Console.WriteLine();
            Console.WriteLine($"{row} ({Units[row]}, cpu in {CpuUnit(row)})");
            foreach (var n in names)
            {
                if (!results.TryGetValue((n, row), out var l)) continue;
                var line = new StringBuilder($"  {n,-12} rate {Spread(l.Select(x => x.Rate), "F0")}  cpu/unit {Spread(l.Select(x => x.CpuPerUnit), "F2")}");
                if (l.Any(x => x.Counts is not null))
                {
                    line.Append($"  task clock/unit {Spread(l.Select(x => x.Counts is { } c ? CpuPerUnit(row, c.TotalClockNs / 1e9, c.Units) : double.NaN), "F2")}  syscalls/unit");
                    foreach (var p in l.SelectMany(x => x.Counts?.Processes ?? []).Select(p => p.Name).Distinct())
                        line.Append($" {p} {Spread(l.Select(x => x.Counts?.Processes.FirstOrDefault(q => q.Name == p) is { Name: not null } q ? q.Syscalls / x.Counts.Units : double.NaN), "F2")}");
                }
                Console.WriteLine(line);
            }
            if (!results.TryGetValue((names[0], row), out var first)) continue;
            foreach (var n in names.Skip(1))
            {
                if (!results.TryGetValue((n, row), out var l)) continue;
                var pairs = l.Join(first, x => x.Run, y => y.Run, (x, y) => (x, y)).ToArray();
                var line = new StringBuilder($"  {n}/{names[0]} per run: rate {Spread(pairs.Select(p => p.x.Rate / p.y.Rate), "F3")}  cpu/unit {Spread(pairs.Select(p => p.x.CpuPerUnit / p.y.CpuPerUnit), "F3")}");
                if (pairs.All(p => p.x.Counts is not null && p.y.Counts is not null))
                    line.Append($"  task clock/unit {Spread(pairs.Select(p => p.x.Counts!.TotalClockNs / p.x.Counts.Units / (p.y.Counts!.TotalClockNs / p.y.Counts.Units)), "F3")}");
                Console.WriteLine(line);
            }
        }
        Console.WriteLine();
        Console.WriteLine($"load averages after each run: {string.Join("; ", loads)}");
    }

    private static string ViewLine(Options o) => o.BackendCpu is { } cpu
        ? $"view one-cpu: every backend process confined to CPU {cpu} (taskset -c {cpu}, inherited by its children), every front-end thread on CPU {o.FrontendCpu}"
        : "view unpinned: every process where the scheduler puts it" + (o.QueueCpus is null ? "" : " (but --pin)");

    /// <summary>The unit of <see cref="CpuPerUnit"/> for <paramref name="row"/>.</summary>
    private static string CpuUnit(string row) => row.EndsWith("-1m") ? "ms/MiB" : "µs/" + Units[row].Split('/')[0] switch { "ops" or "IOPS" => "op", "files" => "file", "entries" => "entry", var u => u };

    /// <summary>A CPU-per-unit figure as printed: three decimals for ms per MiB, two for µs.</summary>
    private static string PerUnit(string row, double value) => value.ToString(row.EndsWith("-1m") ? "F3" : "F2", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>CPU per unit of the row: µs per operation, file or entry, or ms per MiB for the 1 MiB rows (whose units done are bytes).</summary>
    private static double CpuPerUnit(string row, double cpuSeconds, double unitsDone)
    {
        if (unitsDone <= 0) return double.NaN;
        return row.EndsWith("-1m") ? cpuSeconds * 1e3 / (unitsDone / Mib) : cpuSeconds * 1e6 / unitsDone;
    }

    private static (double, double, double) Median(Dictionary<(string, string), List<Sample>> r, string target, string row)
    {
        if (!r.TryGetValue((target, row), out var l) || l.Count == 0) return (double.NaN, double.NaN, double.NaN);
        var rates = l.Select(x => x.Rate).Order().ToArray();
        var cpus = l.Select(x => x.Cpu).Order().ToArray();
        var perUnit = l.Select(x => x.CpuPerUnit).Order().ToArray();
        static double M(double[] a) => a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
        return (M(rates), M(cpus), M(perUnit));
    }

    private static void BuildSource(string src, Options o)
    {
        var sw = Stopwatch.StartNew();
        Directory.CreateDirectory(src);
        var block = new byte[Mib];
        new Random(42).NextBytes(block);
        using (var f = new FileStream(Path.Combine(src, "big"), FileMode.Create, FileAccess.Write))
            for (int i = 0; i < o.BigMib; i++) f.Write(block);
        var meta = Directory.CreateDirectory(Path.Combine(src, "meta")).FullName;
        for (int i = 0; i < o.MetaFiles; i++) File.WriteAllBytes(Path.Combine(meta, $"f{i:D5}"), block.AsSpan(0, 100).ToArray());
        var dir = Directory.CreateDirectory(Path.Combine(src, "dir")).FullName;
        for (int i = 0; i < o.DirEntries; i++) File.WriteAllBytes(Path.Combine(dir, $"entry-{i:D6}"), []);
        Directory.CreateDirectory(Path.Combine(src, "new"));
        Console.WriteLine($"source tree built in {sw.Elapsed.TotalSeconds:F1} s: big ({o.BigMib} MiB, stays in the host page cache: RAM {GC.GetGCMemoryInfo().TotalAvailableMemoryBytes >> 30} GiB), meta/ ({o.MetaFiles} files), dir/ ({o.DirEntries} entries)");
    }

    /// <summary>A build's own options as printed after its path: empty, or a colon and the options.</summary>
    private static string ArgsSuffix(string[] args) => args.Length == 0 ? "" : ":" + string.Join(' ', args);

    // ---- one backend, one run ----

    private static List<(string Row, double Rate, double Cpu, double WarmupRate, double Units, PerfCounts? Counts)> RunTarget(Target t, string share, Options o, bool verbose)
    {
        var sock = share + ".sock";
        var exe = t.Exe ?? (t.Vdev ? o.VdevPath! : o.VirtiofsdPath!);
        // one-cpu: taskset sets the affinity before it executes the backend, whose children inherit it.
        var psi = new ProcessStartInfo(o.BackendCpu is null ? exe : "taskset") { RedirectStandardError = true, RedirectStandardOutput = true };
        if (o.BackendCpu is { } backendCpu)
        {
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add(backendCpu.ToString(System.Globalization.CultureInfo.InvariantCulture));
            psi.ArgumentList.Add(exe);
        }
        string[] argv = t.Vdev
            ? ["--socket-path", sock, "--shared-dir", share, "--tag", "bench", "--request-queues", t.Queues.ToString(), "--cache", "auto",
                .. t.Unpinned ? ["--queue-cpus", "none"] : o.QueueCpus is null ? Array.Empty<string>() : ["--queue-cpus", string.Join(',', o.QueueCpus.Take(t.Queues))],
                .. o.VdevArgs, .. t.ExeArgs ?? []]
            : [$"--socket-path={sock}", "-o", $"source={share}", "-o", "cache=auto", "--rlimit-nofile=0"];
        foreach (var a in argv) psi.ArgumentList.Add(a);
        var stderr = new StringBuilder();
        using var backend = Process.Start(psi)!;
        backend.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (stderr) stderr.AppendLine(e.Data); };
        backend.OutputDataReceived += (_, e) => { };
        backend.BeginErrorReadLine();
        backend.BeginOutputReadLine();
        var result = new List<(string, double, double, double, double, PerfCounts?)>();
        int[]? frontendCpus = o.BackendCpu is null ? o.QueueCpus : [.. Enumerable.Repeat(o.FrontendCpu, t.Queues)];
        int[] pids = [];
        try
        {
            int slot = 4096 + 2 * (Mib + 8192);
            using var fe = VhostUserFrontend.Connect(sock, TimeSpan.FromSeconds(30));
            using var ram = new GuestRam((long)(1 + t.Queues) * QueueSize * slot + (16 << 20));
            fe.Negotiate();
            fe.SetMemTable(ram);
            var qs = fe.SetupQueues(ram, 1 + t.Queues, QueueSize, slot);
            var session = new Session(qs[0]);
            var setup = new Client(qs[1], session, 1);
            var init = setup.Call(BuildInit(setup.Buffer, setup.NextUnique()), 4096);
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(init.AsSpan(16 + 12));
            uint maxWrite = BinaryPrimitives.ReadUInt32LittleEndian(init.AsSpan(16 + 20));
            ushort maxPages = (flags & (1u << 22)) != 0 ? BinaryPrimitives.ReadUInt16LittleEndian(init.AsSpan(16 + 28)) : (ushort)32;
            int io = (int)Math.Min(Mib, Math.Min(maxWrite, (uint)maxPages * 4096));
            session.IoSize = io;
            session.BigSize = (long)o.BigMib * Mib;
            session.ReaddirSize = o.ReaddirSize;
            session.Meta = setup.Lookup(FuseFrames.RootId, "meta");
            session.Dir = setup.Lookup(FuseFrames.RootId, "dir");
            session.New = setup.Lookup(FuseFrames.RootId, "new");
            session.Big = setup.Lookup(FuseFrames.RootId, "big");
            session.MetaNames = Enumerable.Range(0, o.MetaFiles).Select(i => Encoding.ASCII.GetBytes($"f{i:D5}\0")).ToArray();

            pids = ProcessCpu.FindPids(share);
            if (verbose)
                Console.WriteLine($"{t.Name}: INIT reply 7.{BinaryPrimitives.ReadUInt32LittleEndian(init.AsSpan(20))} flags 0x{flags:x} max_write {maxWrite} max_pages {maxPages} -> I/O size {io} B; " +
                    $"processes counted for cpu: {string.Join(", ", pids.Select(p => $"{Comm(p)}({p}, CPUs {AllowedList(p)})"))}");

            var clients = new Client[t.Queues];
            for (int q = 0; q < t.Queues; q++) clients[q] = q == 0 ? setup : new Client(qs[q + 1], session, (ulong)(q + 1));
            for (int q = 0; q < t.Queues; q++)
            {
                clients[q].Big = clients[q].Open(session.Big, 0);
                clients[q].WriteTarget = clients[q].Create(FuseFrames.RootId, $"wbig{q}", 0x241 /* O_WRONLY|O_CREAT|O_TRUNC */);
            }
            foreach (var row in t.Rows)
            {
                // Unmeasured: the backend serves the row first, so every side is measured in its steady state
                // (a .NET backend's code is still being recompiled by the runtime's tiers in its first second).
                double warm = double.NaN;
                // perf attaches while the warm-up runs (its counters off), and counts only the measured phase.
                var perfs = o.Perf ? pids.Select(PerfCount.Attach).ToArray() : [];
                try
                {
                    if (o.Warmup > 0) warm = Rate(row, RunRowOnAll(t.Name, clients, row, PerQueueDepth(o.Depth, t.Queues), TimeSpan.FromSeconds(o.Warmup), frontendCpus, out double warmElapsed), warmElapsed);
                    foreach (var p in perfs) p.Enable();
                    double cpu0 = ProcessCpu.Seconds(pids);
                    double done = RunRowOnAll(t.Name, clients, row, PerQueueDepth(o.Depth, t.Queues), TimeSpan.FromSeconds(o.Seconds), frontendCpus, out double elapsed);
                    double cpu = ProcessCpu.Seconds(pids) - cpu0;
                    foreach (var p in perfs) p.Disable();
                    PerfCounts? counts = perfs.Length == 0 ? null
                        : new PerfCounts(done, [.. perfs.Select(p => { var (clock, calls) = p.Stop(); return (Comm(p.Pid), clock, calls); })]);
                    result.Add((row, Rate(row, done, elapsed), cpu, warm, done, counts));
                }
                finally
                {
                    foreach (var p in perfs) p.Dispose();
                }
            }
            fe.Dispose();
        }
        catch (Exception) when (Dump(stderr, t.Name)) { throw; }
        finally
        {
            Stop(backend, pids);
        }
        return result;
    }

    private static bool Dump(StringBuilder stderr, string name)
    {
        lock (stderr) if (stderr.Length > 0) Console.Error.WriteLine($"{name} stderr:\n{stderr}");
        return false;
    }

    private static void Stop(Process backend, int[] pids)
    {
        if (!backend.HasExited)
        {
            HostCommand.RunQuiet("kill", "-TERM", backend.Id.ToString());
            if (!backend.WaitForExit(5000)) { backend.Kill(); backend.WaitForExit(); }
        }
        // The daemon vdev's launcher started (or virtiofsd's child) may outlive the backend for a moment.
        var deadline = Environment.TickCount64 + 5000;
        foreach (var p in pids)
        {
            if (p == backend.Id) continue;
            while (Directory.Exists($"/proc/{p}") && Environment.TickCount64 < deadline) Thread.Sleep(20);
            if (Directory.Exists($"/proc/{p}")) HostCommand.RunQuiet("kill", "-KILL", p.ToString());
        }
    }

    /// <summary>The CPUs <paramref name="pid"/>'s main thread may run on, as /proc/PID/status lists them.</summary>
    private static string AllowedList(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)) return line["Cpus_allowed_list:".Length..].Trim();
        }
        catch (IOException) { }
        return "?";
    }

    private static string Comm(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); } catch (IOException) { return "?"; }
    }

    /// <summary>Requests in flight on each of <paramref name="queues"/> request queues: the depth shared out, at least one each.</summary>
    private static int PerQueueDepth(int depth, int queues) => Math.Max(1, depth / queues);

    /// <summary>The row's figure in its unit (MiB/s for the 1 MiB rows, whose units done are bytes).</summary>
    private static double Rate(string row, double done, double seconds) => done / seconds / (row.EndsWith("-1m") ? Mib : 1);

    /// <summary>
    /// Runs <paramref name="row"/> on every client at once (one thread per request queue, <paramref name="depth"/>
    /// chains in flight each) for <paramref name="length"/>; returns the units done and the time they took, with the
    /// clients' pending FORGETs sent. With <paramref name="cpus"/>, client q's thread runs on cpus[q] alone, as a
    /// vCPU pinned by its operator would.
    /// </summary>
    private static double RunRowOnAll(string target, Client[] clients, string row, int depth, TimeSpan length, int[]? cpus, out double elapsed)
    {
        var sw = Stopwatch.StartNew();
        var threads = new Thread[clients.Length];
        var counts = new double[clients.Length];
        Exception? failure = null;
        for (int q = 0; q < clients.Length; q++)
        {
            int qi = q;
            threads[q] = new Thread(() =>
            {
                try
                {
                    if (cpus is not null && !QueueCpus.TryPinCurrentThread(cpus[qi], out int errno))
                        throw new InvalidOperationException($"cannot pin the frontend of queue {qi + 1} to CPU {cpus[qi]} (errno {errno})");
                    counts[qi] = clients[qi].RunRow(row, depth, sw, length);
                }
                catch (Exception e) { failure = e; }
            });
            threads[q].Start();
        }
        foreach (var th in threads) th.Join();
        elapsed = sw.Elapsed.TotalSeconds;
        foreach (var c in clients) c.FlushForgets();
        if (failure != null) throw new InvalidOperationException($"{target} {row}: {failure.Message}", failure);
        return counts.Sum();
    }

    /// <summary>
    /// FUSE_INIT as a Linux 6.1 guest sends it: 7.36 with the flags the kernel offers to a virtio-fs daemon
    /// (including MAX_PAGES, so the daemon may allow 1 MiB requests) and INIT_EXT with flags2 zero.
    /// </summary>
    private static int BuildInit(Span<byte> b, ulong unique)
    {
        const uint flags = (1u << 0) | (1u << 1) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9)
            | (1u << 10) | (1u << 11) | (1u << 12) | (1u << 13) | (1u << 14) | (1u << 15) | (1u << 16) | (1u << 17) | (1u << 18)
            | (1u << 19) | (1u << 20) | (1u << 21) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25) | (1u << 27) | (1u << 28)
            | (1u << 29) | (1u << 30);
        int len = Header(b, FuseFrames.Init, unique, 0, 64);
        b.Slice(40, 64).Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(b[40..], 7);
        BinaryPrimitives.WriteUInt32LittleEndian(b[44..], 36);
        BinaryPrimitives.WriteUInt32LittleEndian(b[48..], 128 << 10);
        BinaryPrimitives.WriteUInt32LittleEndian(b[52..], flags);
        return len;
    }

    /// <summary>Writes fuse_in_header for a request of <paramref name="body"/> bytes; returns the frame length.</summary>
    private static int Header(Span<byte> b, uint opcode, ulong unique, ulong node, int body)
    {
        int len = 40 + body;
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)len);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], opcode);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], unique);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], node);
        b.Slice(24, 16).Clear(); // uid, gid, pid, total_extlen/padding: root
        return len;
    }

    /// <summary>State shared by the queues of one backend: the hiprio queue (for BATCH_FORGET) and the tree's nodes.</summary>
    private sealed class Session(FrontendQueue hiprio)
    {
        public readonly FrontendQueue Hiprio = hiprio;
        public readonly byte[] ForgetFrame = new byte[48 + 16 * 512];
        public int IoSize, ReaddirSize;
        public long BigSize;
        public ulong Meta, Dir, New, Big;
        public byte[][] MetaNames = [];

        /// <summary>Sends BATCH_FORGET of <paramref name="count"/> (node, 1) pairs on the hiprio queue, as Linux does.</summary>
        public void Forget(ulong[] nodes, int count)
        {
            lock (this)
            {
                var f = ForgetFrame.AsSpan();
                int len = Header(f, FuseFrames.BatchForget, 0, 0, 8 + 16 * count);
                BinaryPrimitives.WriteUInt32LittleEndian(f[40..], (uint)count);
                BinaryPrimitives.WriteUInt32LittleEndian(f[44..], 0);
                for (int i = 0; i < count; i++)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(f[(48 + 16 * i)..], nodes[i]);
                    BinaryPrimitives.WriteUInt64LittleEndian(f[(56 + 16 * i)..], 1);
                }
                // Reclaim the chains the device has finished with; wait if all are still in flight.
                while (Hiprio.TryTakeUsed(out _, out _)) { }
                while (Hiprio.InFlight >= Hiprio.Size - 1) { if (!Hiprio.TryTakeUsed(out _, out _)) Thread.Yield(); }
                Hiprio.Submit(f[..len], 0);
            }
        }
    }

    /// <summary>One request queue driven by one thread: setup calls, then rows with several chains in flight.</summary>
    private sealed class Client(FrontendQueue q, Session s, ulong tag)
    {
        public readonly byte[] Buffer = new byte[64 << 10];
        private readonly ulong[] _forgets = new ulong[512];
        private int _forgetCount;
        private ulong _unique = tag << 48;
        private readonly int[] _streamOfHead = new int[QueueSize];
        public (ulong Node, ulong Fh) Big, WriteTarget;
        private readonly TimeSpan _timeout = TimeSpan.FromSeconds(30);

        public ulong NextUnique() => _unique += 2;

        // Per-stream state (index = stream).
        private int[] _phase = [];
        private ulong[] _node = [], _fh = [], _off = [];
        private long _counter;
        private ulong _rng = 0x9E3779B97F4A7C15UL ^ tag;

        /// <summary>Places a request of <paramref name="frameLen"/> bytes whose first <paramref name="headerLen"/> bytes are in Buffer (the rest is whatever the slot holds), with a reply buffer of <paramref name="replyCap"/>.</summary>
        private ushort Submit(int headerLen, int frameLen, int replyCap)
        {
            ushort head = q.AllocDesc();
            q.TrackChain(head);
            ulong rq = q.RequestGpa(head);
            Buffer.AsSpan(0, headerLen).CopyTo(q.Ram.At(rq, headerLen));
            ulong table = q.IndirectGpa(head);
            q.WriteDescAt(table, rq, (uint)frameLen, VirtqDescFlags.Next, 1);
            q.WriteDescAt(table + (ulong)VirtqDesc.Size, q.ReplyGpa(head), (uint)replyCap, VirtqDescFlags.Write, 0);
            q.WriteDesc(head, table, (uint)(2 * VirtqDesc.Size), VirtqDescFlags.Indirect);
            ushort old = q.NextAvail;
            q.Publish(head);
            q.Notify(old);
            return head;
        }

        private Span<byte> Reply(ushort head, uint len)
        {
            var r = q.Ram.At(q.ReplyGpa(head), (int)len);
            int err = FuseFrames.ReadOutHeader(r).Error;
            if (err != 0) throw new InvalidOperationException($"request failed with errno {-err}");
            return r;
        }

        public byte[] Call(int len, int replyCap)
        {
            ushort head = Submit(len, len, replyCap);
            var (h, l) = q.WaitUsed(_timeout);
            if (h != head) throw new InvalidDataException("unexpected completion during setup");
            return Reply(h, l).ToArray();
        }

        public ulong Lookup(ulong parent, string name)
        {
            var b = Buffer.AsSpan();
            int n = Encoding.UTF8.GetBytes(name + "\0", b[40..]);
            int len = Header(b, FuseFrames.Lookup, NextUnique(), parent, n);
            return FuseFrames.ReadEntry(Call(len, 4096)).NodeId;
        }

        public (ulong, ulong) Open(ulong node, uint flags)
        {
            var b = Buffer.AsSpan();
            int len = Header(b, FuseFrames.Open, NextUnique(), node, 8);
            BinaryPrimitives.WriteUInt32LittleEndian(b[40..], flags);
            BinaryPrimitives.WriteUInt32LittleEndian(b[44..], 0);
            return (node, FuseFrames.ReadOpenFh(Call(len, 4096)));
        }

        public (ulong, ulong) Create(ulong parent, string name, uint flags)
        {
            var b = Buffer.AsSpan();
            int n = Encoding.UTF8.GetBytes(name + "\0", b[56..]);
            int len = CreateHeader(b, parent, flags, n);
            var r = Call(len, 4096);
            return (FuseFrames.ReadEntry(r).NodeId, BinaryPrimitives.ReadUInt64LittleEndian(r.AsSpan(16 + 128)));
        }

        private int CreateHeader(Span<byte> b, ulong parent, uint flags, int nameLen)
        {
            int len = Header(b, 35 /* CREATE */, NextUnique(), parent, 16 + nameLen);
            BinaryPrimitives.WriteUInt32LittleEndian(b[40..], flags);
            BinaryPrimitives.WriteUInt32LittleEndian(b[44..], 0x81A4); // S_IFREG | 0644
            BinaryPrimitives.WriteUInt32LittleEndian(b[48..], 0x12);   // umask 022
            BinaryPrimitives.WriteUInt32LittleEndian(b[52..], 0);
            return len;
        }

        /// <summary>fuse_read_in / fuse_write_in (same leading layout); for WRITE the frame length counts the payload of <paramref name="size"/> bytes.</summary>
        private int ReadHeader(uint opcode, ulong node, ulong fh, ulong offset, uint size)
        {
            var b = Buffer.AsSpan();
            Header(b, opcode, NextUnique(), node, opcode == 16 ? 40 + (int)size : 40);
            const int len = 80;
            b.Slice(40, 40).Clear();
            BinaryPrimitives.WriteUInt64LittleEndian(b[40..], fh);
            BinaryPrimitives.WriteUInt64LittleEndian(b[48..], offset);
            BinaryPrimitives.WriteUInt32LittleEndian(b[56..], size);
            return len;
        }

        private int ReleaseHeader(uint opcode, ulong node, ulong fh)
        {
            var b = Buffer.AsSpan();
            int len = Header(b, opcode, NextUnique(), node, 24);
            b.Slice(40, 24).Clear();
            BinaryPrimitives.WriteUInt64LittleEndian(b[40..], fh);
            return len;
        }

        private void AddForget(ulong node)
        {
            _forgets[_forgetCount++] = node;
            if (_forgetCount == _forgets.Length) FlushForgets();
        }

        public void FlushForgets()
        {
            if (_forgetCount > 0) s.Forget(_forgets, _forgetCount);
            _forgetCount = 0;
        }

        /// <summary>Runs <paramref name="row"/> with <paramref name="depth"/> chains in flight until <paramref name="deadline"/>; returns the units done (ops, files, entries or bytes).</summary>
        public double RunRow(string row, int depth, Stopwatch sw, TimeSpan deadline)
        {
            _phase = new int[depth]; _node = new ulong[depth]; _fh = new ulong[depth]; _off = new ulong[depth];
            double done = 0;
            int outstanding = 0;
            for (int st = 0; st < depth; st++) { SubmitNext(row, st); outstanding++; }
            while (outstanding > 0)
            {
                var (head, len) = q.WaitUsed(_timeout);
                int st = _streamOfHead[head];
                var r = Reply(head, len);
                done += Complete(row, st, r);
                // Finish multi-step operations already started so no file handle is left open; a directory
                // stream past the deadline skips to RELEASEDIR.
                bool over = sw.Elapsed >= deadline;
                if (over && row == "readdirplus" && _phase[st] == 1) _phase[st] = 2;
                if (!over || _phase[st] != 0) SubmitNext(row, st);
                else outstanding--;
            }
            return done;
        }

        private void SubmitNext(string row, int st)
        {
            int hdr, frame, reply;
            var b = Buffer.AsSpan();
            switch (row)
            {
                case "lookup+getattr":
                    if (_phase[st] == 0)
                    {
                        var name = s.MetaNames[(int)(_counter++ % s.MetaNames.Length)];
                        name.CopyTo(b[40..]);
                        hdr = frame = Header(b, FuseFrames.Lookup, NextUnique(), s.Meta, name.Length);
                        reply = 16 + 128;
                    }
                    else
                    {
                        hdr = frame = Header(b, FuseFrames.Getattr, NextUnique(), _node[st], 16);
                        b.Slice(40, 16).Clear();
                        reply = 16 + 104;
                    }
                    break;
                case "create+write4k+release":
                    if (_phase[st] == 0)
                    {
                        b[56] = (byte)'c';
                        b[57] = (byte)('a' + (int)tag);
                        Utf8Formatter.TryFormat(_counter++, b[58..], out int digits);
                        b[58 + digits] = 0;
                        hdr = frame = CreateHeader(b, s.New, 0xC1 /* O_WRONLY|O_CREAT|O_EXCL */, 3 + digits);
                        reply = 16 + 128 + 16;
                    }
                    else if (_phase[st] == 1)
                    {
                        hdr = ReadHeader(16 /* WRITE */, _node[st], _fh[st], 0, 4096);
                        frame = hdr + 4096;
                        reply = 16 + 8;
                    }
                    else
                    {
                        hdr = frame = ReleaseHeader(FuseFrames.Release, _node[st], _fh[st]);
                        reply = 16;
                    }
                    break;
                case "readdirplus":
                    if (_phase[st] == 0)
                    {
                        hdr = frame = Header(b, 27 /* OPENDIR */, NextUnique(), s.Dir, 8);
                        b.Slice(40, 8).Clear();
                        reply = 16 + 16;
                    }
                    else if (_phase[st] == 1)
                    {
                        hdr = frame = ReadHeader(44 /* READDIRPLUS */, s.Dir, _fh[st], _off[st], (uint)s.ReaddirSize);
                        reply = 16 + s.ReaddirSize;
                    }
                    else
                    {
                        hdr = frame = ReleaseHeader(29 /* RELEASEDIR */, s.Dir, _fh[st]);
                        reply = 16;
                    }
                    break;
                case "seqread-1m":
                    {
                        ulong off = (ulong)(_counter++ * s.IoSize % s.BigSize);
                        hdr = frame = ReadHeader(FuseFrames.Read, Big.Node, Big.Fh, off, (uint)s.IoSize);
                        reply = 16 + s.IoSize;
                        break;
                    }
                case "randread-4k":
                    {
                        _rng ^= _rng << 13; _rng ^= _rng >> 7; _rng ^= _rng << 17;
                        ulong off = (_rng % (ulong)(s.BigSize / 4096)) * 4096;
                        hdr = frame = ReadHeader(FuseFrames.Read, Big.Node, Big.Fh, off, 4096);
                        reply = 16 + 4096;
                        break;
                    }
                case "seqwrite-1m":
                    {
                        ulong off = (ulong)(_counter++ * s.IoSize % s.BigSize);
                        hdr = ReadHeader(16 /* WRITE */, WriteTarget.Node, WriteTarget.Fh, off, (uint)s.IoSize);
                        frame = hdr + s.IoSize;
                        reply = 16 + 8;
                        break;
                    }
                default: throw new ArgumentException($"unknown row {row}");
            }
            ushort head = Submit(hdr, frame, reply);
            _streamOfHead[head] = st;
        }

        /// <summary>Consumes a reply and advances the stream; returns the units it completed.</summary>
        private double Complete(string row, int st, Span<byte> r)
        {
            switch (row)
            {
                case "lookup+getattr":
                    if (_phase[st] == 0) { _node[st] = FuseFrames.ReadEntry(r).NodeId; _phase[st] = 1; return 0; }
                    // Forget only after the last request naming the node, or a batch could drop it while in use.
                    AddForget(_node[st]);
                    _phase[st] = 0;
                    return 1;
                case "create+write4k+release":
                    if (_phase[st] == 0)
                    {
                        _node[st] = FuseFrames.ReadEntry(r).NodeId;
                        _fh[st] = BinaryPrimitives.ReadUInt64LittleEndian(r[(16 + 128)..]);
                        _phase[st] = 1;
                        return 0;
                    }
                    if (_phase[st] == 1)
                    {
                        if (BinaryPrimitives.ReadUInt32LittleEndian(r[16..]) != 4096) throw new InvalidDataException("short WRITE");
                        _phase[st] = 2;
                        return 0;
                    }
                    AddForget(_node[st]);
                    _phase[st] = 0;
                    return 1;
                case "readdirplus":
                    if (_phase[st] == 0) { _fh[st] = BinaryPrimitives.ReadUInt64LittleEndian(r[16..]); _off[st] = 0; _phase[st] = 1; return 0; }
                    if (_phase[st] == 2) { _phase[st] = 0; return 0; }
                    {
                        int entries = 0, p = 16;
                        while (p + 152 <= r.Length)
                        {
                            ulong node = BinaryPrimitives.ReadUInt64LittleEndian(r[p..]);
                            ulong off = BinaryPrimitives.ReadUInt64LittleEndian(r[(p + 136)..]);
                            int namelen = (int)BinaryPrimitives.ReadUInt32LittleEndian(r[(p + 144)..]);
                            var name = r.Slice(p + 152, namelen);
                            bool dots = (namelen == 1 && name[0] == '.') || (namelen == 2 && name[0] == '.' && name[1] == '.');
                            if (!dots)
                            {
                                entries++;
                                if (node != 0) AddForget(node);
                            }
                            _off[st] = off;
                            p += 152 + ((namelen + 7) & ~7);
                        }
                        if (p == 16) _phase[st] = 2; // end of directory
                        return entries;
                    }
                case "seqread-1m":
                    return r.Length - 16;
                case "randread-4k":
                    if (r.Length != 16 + 4096) throw new InvalidDataException("short READ");
                    return 1;
                case "seqwrite-1m":
                    return BinaryPrimitives.ReadUInt32LittleEndian(r[16..]);
            }
            return 0;
        }
    }
}
