using System.Globalization;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench guest`: boots one Linux guest under QEMU (TCG) with one virtio-fs device per backend
/// (QEMU's C virtiofsd as the reference, the project's vdev side by side when it is built) and runs
/// tests/guest/scenarios/bench.sh inside it: create/stat/unlink rates, `ls -l` of a large directory,
/// sequential 1 MiB write and read (caches dropped in between), random 4 KiB O_DIRECT reads at a
/// queue depth. The backends take turns going first from run to run, and each share is on a new ext4 of its own
/// (`--fs work`: directories in /tmp). Each backend's rows run on the vCPU that takes its device's request
/// interrupts (`--guest-cpu irq`, the default), on another vCPU (`other`) or wherever the guest's scheduler puts
/// them (`any`, which gives the two backends different mixes of both cases). Prints the median of the runs per
/// backend and the vdev/virtiofsd ratio.
/// </summary>
public static class GuestBench
{
    public const string Help = "guest-side virtio-fs benchmark: vdev vs QEMU's virtiofsd in one TCG guest (needs root)";

    private static readonly (string Key, string Label, bool HigherIsBetter)[] Metrics =
    [
        ("create_per_s", "file create (files/s)", true),
        ("stat_per_s", "stat, cold dentries (files/s)", true),
        ("unlink_per_s", "unlink (files/s)", true),
        ("ls_l_ms", "ls -l of the large dir (ms)", false),
        ("seq_write_mib_s", "seq write 1 MiB + fsync (MiB/s)", true),
        ("seq_read_mib_s", "seq read 1 MiB, cold (MiB/s)", true),
        ("rand_read_4k_iops", "rand read 4 KiB O_DIRECT (IOPS)", true),
    ];

    public static int Run(string[] args)
    {
        int runs = 3, files = 2000, lsFiles = 10000, mib = 128, rand = 4000, qd = 16, queues = 1, mem = 768;
        string cache = "auto", guestCpu = "irq";
        string? vdevPath = null;
        var vdevArgs = new List<string>();
        bool referenceOnly = false, verbose = false, freshExt4 = true;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option {args[i]} needs a value.");
            switch (args[i])
            {
                case "--runs": runs = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--files": files = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--ls-files": lsFiles = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--mib": mib = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--rand": rand = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--qd": qd = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--queues": queues = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--memory": mem = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--cache": cache = Next(); break;
                case "--guest-cpu" when i + 1 < args.Length && args[i + 1] is "irq" or "other" or "any": guestCpu = Next(); break;
                case "--vdev": vdevPath = Next(); break;
                case "--vdev-arg": vdevArgs.Add(Next()); break;
                case "--reference-only": referenceOnly = true; break;
                case "--fs" when i + 1 < args.Length && args[i + 1] is "fresh-ext4" or "work": freshExt4 = Next() == "fresh-ext4"; break;
                case "-v" or "--verbose": verbose = true; break;
                default:
                    Console.Error.WriteLine(
                        "usage: hv-bench guest [--runs 3] [--files 2000] [--ls-files 10000] [--mib 128] [--rand 4000] [--qd 16]\n" +
                        "                      [--queues 1] [--memory 768] [--cache auto] [--vdev PATH] [--vdev-arg ARG]... [--fs fresh-ext4|work]\n" +
                        "                      [--guest-cpu irq|other|any] [--reference-only] [-v]");
                    return 2;
            }
        }

        var temp = Directory.CreateTempSubdirectory("hvbench-").FullName;
        using var removeTemp = Interruption.Register(() => { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); });
        // Each share on a new ext4 of its own unless --fs work: neither inherits the host filesystem's history.
        var filesystems = new List<FreshExt4>();
        string ShareDir(string name)
        {
            var dir = Path.Combine(temp, name);
            if (freshExt4) filesystems.Add(new FreshExt4($"{Path.GetFileName(temp)}-{name}", dir, 2L << 30));
            else Directory.CreateDirectory(dir);
            return dir;
        }
        try
        {
            var shares = new List<GuestShare>();
            shares.Add(new GuestShare("ref", ShareDir("ref"), GuestBackend.Virtiofsd(cache)));
            string? note = null;
            if (!referenceOnly)
            {
                try
                {
                    var exe = vdevPath ?? GuestBackend.ResolveVdev();
                    shares.Add(new GuestShare("vdev", ShareDir("vdev"), GuestBackend.Vdev(exe, cache, [.. vdevArgs])));
                }
                catch (GuestSetupException ex)
                {
                    note = $"vdev not measured: {ex.Message}";
                }
            }
            if (note is not null) Console.WriteLine(note);
            Console.WriteLine($"guest: TCG, {mem} MiB, {queues} request queue(s), cache={cache}, shares on {(freshExt4 ? "a new ext4 each" : "the host's /tmp")}; runs={runs} files={files} ls-files={lsFiles} seq={mib} MiB rand={rand}x4KiB qd={qd}");

            // The CPU each backend's processes use during each row: from the end of the scenario's set-up (every
            // backend serves by then), attributed at each "@@HV val bench.TAG.METRIC" line to TAG's METRIC as the time
            // since the previous such line (the row and its own set-up).
            var pids = new Dictionary<string, int[]>();
            var lastCpu = new Dictionary<string, double>();
            var cpuPerRow = new Dictionary<string, List<double>>();
            void OnLine(string line)
            {
                if (verbose) Console.WriteLine(line);
                if (line.StartsWith("@@HV ok setup", StringComparison.Ordinal))
                {
                    foreach (var s in shares)
                    {
                        pids[s.Tag] = ProcessCpu.FindPids(Path.GetFullPath(s.HostDirectory));
                        lastCpu[s.Tag] = ProcessCpu.Seconds(pids[s.Tag]);
                    }
                    return;
                }
                const string prefix = "@@HV val bench.";
                if (!line.StartsWith(prefix, StringComparison.Ordinal)) return;
                var key = line[prefix.Length..].Split(' ')[0]; // TAG.METRIC
                var tag = key[..key.IndexOf('.')];
                if (!pids.ContainsKey(tag)) return;
                foreach (var (t, tagPids) in pids)
                {
                    var seconds = ProcessCpu.Seconds(tagPids);
                    if (t == tag)
                    {
                        if (!cpuPerRow.TryGetValue(key, out var list)) cpuPerRow[key] = list = [];
                        list.Add(seconds - lastCpu[t]);
                    }
                    lastCpu[t] = seconds;
                }
            }

            var options = new GuestOptions
            {
                MemoryMiB = mem,
                RequestQueues = queues,
                Timeout = TimeSpan.FromMinutes(30),
                Environment = new Dictionary<string, string>
                {
                    ["HV_RUNS"] = runs.ToString(CultureInfo.InvariantCulture),
                    ["HV_FILES"] = files.ToString(CultureInfo.InvariantCulture),
                    ["HV_LS_FILES"] = lsFiles.ToString(CultureInfo.InvariantCulture),
                    ["HV_SEQ_MIB"] = mib.ToString(CultureInfo.InvariantCulture),
                    ["HV_RAND_COUNT"] = rand.ToString(CultureInfo.InvariantCulture),
                    ["HV_QD"] = qd.ToString(CultureInfo.InvariantCulture),
                    ["HV_GUEST_CPU"] = guestCpu,
                },
                OnConsoleLine = OnLine,
            };
            GuestResult result;
            try
            {
                result = GuestVm.Run(GuestVm.LoadScenario("bench.sh"), shares, options);
            }
            catch (GuestSetupException ex) when (shares.Count == 2 && ex.Message.StartsWith("Backend vdev", StringComparison.Ordinal))
            {
                // The reference figures are still worth having while vdev cannot serve yet.
                Console.WriteLine($"vdev not measured, it could not be started: {ex.Message}");
                shares.RemoveAt(1);
                result = GuestVm.Run(GuestVm.LoadScenario("bench.sh"), shares, options);
            }
            if (!result.Succeeded)
            {
                Console.Error.WriteLine("The benchmark guest failed:\n" + result.Describe());
                return 1;
            }
            Console.WriteLine($"boot {result.BootSeconds:0.00} s (guest uptime at scenario start), whole boot {result.Elapsed.TotalSeconds:0.0} s");
            Console.WriteLine(guestCpu switch
            {
                "irq" => "each backend's rows run on the vCPU that takes its device's request interrupts",
                "other" => "each backend's rows run on a vCPU other than the one that takes its device's request interrupts",
                _ => "the rows run wherever the guest's scheduler puts them",
            } + ": " + string.Join(", ", shares.Select(s =>
                $"{s.Tag} interrupts on vCPU {string.Join('/', result.Values($"bench.{s.Tag}.irq_cpu"))}, rows on {string.Join('/', result.Values($"bench.{s.Tag}.runs_on"))}")));

            bool both = shares.Count == 2;
            Console.WriteLine(both
                ? $"{"metric",-34} {"virtiofsd",12} {"vdev",12} {"vdev/ref",9}   (each run: virtiofsd | vdev)"
                : $"{"metric",-34} {"virtiofsd",12}   (each run)");
            foreach (var (key, label, higher) in Metrics)
            {
                var r = Median(result, $"bench.ref.{key}");
                if (!both)
                {
                    Console.WriteLine($"{label,-34} {r,12:0.0}   runs: {string.Join(' ', result.Values($"bench.ref.{key}"))}");
                    continue;
                }
                var v = Median(result, $"bench.vdev.{key}");
                // The ratio is always "how many times better vdev is": >1 means vdev wins.
                var ratio = higher ? v / r : r / v;
                Console.WriteLine($"{label,-34} {r,12:0.0} {v,12:0.0} {ratio,9:0.00}   runs: "
                    + $"{string.Join(' ', result.Values($"bench.ref.{key}"))} | {string.Join(' ', result.Values($"bench.vdev.{key}"))}");
            }
            Console.WriteLine($"medians of {runs} run(s); ratio > 1 means vdev is better (for ls -l: faster)");
            Console.WriteLine();
            Console.WriteLine($"{"host CPU seconds per row (median)",-34} {"virtiofsd",12} {"vdev",12} {"vdev/ref",9}   (the backend's processes, during the row and its set-up)");
            foreach (var (key, label, _) in Metrics)
            {
                var r = MedianOf(cpuPerRow.GetValueOrDefault($"ref.{key}"));
                if (!both)
                {
                    Console.WriteLine($"{label,-34} {r,12:0.00}");
                    continue;
                }
                var v = MedianOf(cpuPerRow.GetValueOrDefault($"vdev.{key}"));
                Console.WriteLine($"{label,-34} {r,12:0.00} {v,12:0.00} {v / r,9:0.00}");
            }
            return 0;
        }
        catch (GuestSetupException ex)
        {
            Console.Error.WriteLine(ex.Message);
            return 1;
        }
        finally
        {
            foreach (var fs in filesystems) fs.Dispose();
            Directory.Delete(temp, recursive: true);
        }
    }

    private static double Median(GuestResult result, string key)
    {
        var values = new List<double>();
        foreach (var s in result.Values(key)) values.Add(double.Parse(s, CultureInfo.InvariantCulture));
        return MedianOf(values);
    }

    private static double MedianOf(List<double>? values)
    {
        if (values is null || values.Count == 0) return double.NaN;
        values.Sort();
        int n = values.Count;
        return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    }
}
