using System.Diagnostics;
using System.Globalization;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Benchmarks;

/// <summary>
/// <c>hv-bench fs</c>: the passthrough daemon mounted through /dev/fuse against bindfs (another FUSE passthrough,
/// libfuse 3) and against the plain host directory, on the same host filesystem, with the same workloads issued by
/// the same code (plain POSIX calls). Every row is a rate (higher is better), measured <c>--runs</c> times with the
/// runs of the three targets interleaved; the median is printed with the ratios daemon/bindfs and daemon/plain.
/// Then the daemon's memory after 100,000 files were looked up and forgotten. Needs root (mounts, drop_caches).
/// </summary>
public static class FsBench
{
    public const string Help = "FUSE passthrough daemon vs bindfs vs plain directory (root; --help for options)";

    private sealed record Options(int SizeMiB, int Files, int ListEntries, int ForgetFiles, int Runs, double RandomSeconds, string? Passthrough, string? Bindfs, string WorkDir, string[] DaemonArgs, string[] Rows);

    public static int Run(string[] args)
    {
        if (!TryParse(args, out var options, out var error))
        {
            if (args.Contains("--help") || args.Contains("-h"))
            {
                Console.WriteLine($"hv-bench fs {error}");
                return 0;
            }
            Console.Error.WriteLine($"hv-bench fs: {error}");
            return 2;
        }
        if (!IsRoot())
        {
            Console.Error.WriteLine("hv-bench fs: needs root (it mounts through /dev/fuse and drops the page cache); run it with sudo.");
            return 2;
        }
        var passthrough = options.Passthrough ?? LocatePassthrough();
        if (passthrough is null || !File.Exists(passthrough))
        {
            Console.Error.WriteLine("hv-bench fs: the passthrough executable was not found; build it (dotnet build passthrough -c Release) or pass --passthrough PATH.");
            return 2;
        }
        var bindfs = options.Bindfs ?? "/usr/bin/bindfs";
        if (!File.Exists(bindfs))
        {
            Console.Error.WriteLine("hv-bench fs: bindfs is not installed; apt-get install bindfs or pass --bindfs PATH.");
            return 2;
        }

        var root = Path.Combine(options.WorkDir, $"hv-bench-fs-{Environment.ProcessId}");
        Directory.CreateDirectory(root);
        var targets = new List<Target>();
        try
        {
            Console.WriteLine($"hv-bench fs: work dir {root} ({FsType(root)}), passthrough {passthrough}, {Environment.ProcessorCount} CPUs");
            targets.Add(Target.Passthrough(root, passthrough, options.DaemonArgs));
            targets.Add(Target.Bindfs(root, bindfs));
            targets.Add(Target.Plain(root));
            foreach (var t in targets) Console.WriteLine($"  {t.Name,-8} {t.Description}");

            var rows = new List<Row>();
            if (options.Rows.Contains("ls")) Prepare(targets, options);
            var wanted = options.Rows;
            if (wanted.Contains("create"))
                rows.Add(Measure("create+stat+unlink", "files/s", targets, options.Runs, t => CreateStatUnlink(t.Dir, options.Files)));
            if (wanted.Contains("write"))
                rows.Add(Measure($"seq write 1 MiB blocks ({options.SizeMiB} MiB)", "MiB/s", targets, options.Runs, t => SequentialWrite(t.Dir, options.SizeMiB)));
            if (wanted.Contains("read"))
                rows.Add(Measure("seq read 1 MiB blocks, cold cache", "MiB/s", targets, options.Runs, t => SequentialRead(t.Dir)));
            if (wanted.Contains("random"))
                rows.Add(Measure($"random 4 KiB pread, cold cache ({options.RandomSeconds:0.#} s)", "reads/s", targets, options.Runs, t => RandomRead(t.Dir, options.SizeMiB, options.RandomSeconds)));
            if (wanted.Contains("ls"))
                rows.Add(Measure($"ls -l of {options.ListEntries:N0} entries, cold", "entries/s", targets, options.Runs, t => Listing(t.Dir, options.ListEntries)));

            PrintTable(targets, rows, options);
            if (wanted.Contains("memory")) PrintMemory(targets, options);
            return 0;
        }
        finally
        {
            foreach (var t in targets) t.Dispose();
            try { Directory.Delete(root, recursive: true); }
            catch (IOException e) { Console.Error.WriteLine($"hv-bench fs: could not remove {root}: {e.Message}"); }
        }
    }

    private static bool TryParse(string[] args, out Options options, out string? error)
    {
        int size = 256, files = 5000, list = 10_000, forget = 100_000, runs = 5;
        double seconds = 3;
        string? passthrough = null, bindfs = null;
        var work = "/var/tmp";
        var daemonArgs = new List<string>();
        string[] rows = ["create", "write", "read", "random", "ls", "memory"];
        options = null!;
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            try
            {
                switch (args[i])
                {
                    case "--size-mib": size = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--files": files = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--list-entries": list = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--forget-files": forget = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--runs": runs = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--random-seconds": seconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--passthrough": passthrough = Next(); break;
                    case "--bindfs": bindfs = Next(); break;
                    case "--work-dir": work = Next(); break;
                    case "--daemon-arg": daemonArgs.Add(Next()); break;
                    case "--rows": rows = Next().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                    case "--quick": size = 32; files = 1000; list = 2000; forget = 10_000; runs = 3; seconds = 1; break;
                    case "--help" or "-h":
                        error = "options: --size-mib N (256) --files N (5000) --list-entries N (10000) --forget-files N (100000) --runs N (5) "
                            + "--random-seconds S (3) --passthrough PATH --bindfs PATH --work-dir DIR (/var/tmp, a disk filesystem) "
                            + "--daemon-arg ARG (repeatable, e.g. --daemon-arg --thread-pool-size --daemon-arg 8) "
                            + "--rows create,write,read,random,ls,memory (all; read and random need write) --quick";
                        return false;
                    default:
                        error = $"unknown option {args[i]}; see --help.";
                        return false;
                }
            }
            catch (Exception e) when (e is FormatException or ArgumentException or OverflowException)
            {
                error = $"bad value for {args[i - 1]}: {e.Message}; see --help.";
                return false;
            }
        }
        if (size < 1 || files < 1 || list < 1 || forget < 0 || runs < 1 || seconds <= 0)
        {
            error = "every count, size and duration must be positive; see --help.";
            return false;
        }
        if (!Directory.Exists(work))
        {
            error = $"the work directory {work} does not exist; pass --work-dir DIR on a disk filesystem.";
            return false;
        }
        foreach (var row in rows)
        {
            if (row is not ("create" or "write" or "read" or "random" or "ls" or "memory"))
            {
                error = $"unknown row '{row}' in --rows; use create, write, read, random, ls, memory.";
                return false;
            }
        }
        if ((rows.Contains("read") || rows.Contains("random")) && !rows.Contains("write"))
        {
            error = "the read and random rows read the file the write row writes; add write to --rows.";
            return false;
        }
        options = new Options(size, files, list, forget, runs, seconds, passthrough, bindfs, work, daemonArgs.ToArray(), rows);
        error = null;
        return true;
    }

    private static bool IsRoot()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("Uid:", StringComparison.Ordinal)) return line.Split('\t', StringSplitOptions.RemoveEmptyEntries)[2] == "0";
        return false;
    }

    /// <summary>The published daemon (dist/passthrough), when it has been published.</summary>
    private static string? LocatePassthrough()
    {
        var path = Path.Combine(Hypervisor.Tests.Executables.Dist, "passthrough");
        return File.Exists(path) ? path : null;
    }

    private static string FsType(string path)
    {
        string best = "?";
        var bestLength = -1;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            var dash = Array.IndexOf(f, "-", 6);
            if (dash < 0) continue;
            var mp = f[4];
            if ((path == mp || path.StartsWith(mp.TrimEnd('/') + "/", StringComparison.Ordinal)) && mp.Length > bestLength)
            {
                best = f[dash + 1];
                bestLength = mp.Length;
            }
        }
        return best;
    }

    // ------------------------------------------------------------------------------------------------ targets

    private sealed class Target : IDisposable
    {
        private Process? _process;
        private string? _mountPoint;
        private IDisposable? _interruption;

        public required string Name { get; init; }
        public required string Dir { get; init; }
        public required string Source { get; init; }
        public required string Description { get; init; }
        public int? Pid => _process?.Id;

        public static Target Passthrough(string root, string exe, string[] extra)
        {
            var (src, mnt) = Dirs(root, "passthrough");
            var t = new Target
            {
                Name = "daemon", Dir = mnt, Source = src,
                Description = $"passthrough --shared-dir {src} --mount {mnt} {string.Join(' ', extra)}" + (extra.Length == 0 ? "(defaults: cache auto, threads max(2, CPUs))" : ""),
            };
            t.Start(exe, ["--shared-dir", src, "--sandbox", "none", "--mount", mnt, "--log-level", "warn", .. extra], mnt, "fuse.passthrough");
            return t;
        }

        public static Target Bindfs(string root, string exe)
        {
            // bindfs 1.14 runs single-threaded unless told otherwise; the daemon serves on several threads, so
            // bindfs gets --multithreaded too. allow_other is bindfs's default as root; default_permissions as the daemon.
            var (src, mnt) = Dirs(root, "bindfs");
            var t = new Target { Name = "bindfs", Dir = mnt, Source = src, Description = $"bindfs -f --multithreaded -o default_permissions {src} {mnt}" };
            t.Start(exe, ["-f", "--multithreaded", "-o", "default_permissions", src, mnt], mnt, "fuse");
            return t;
        }

        public static Target Plain(string root)
        {
            var (src, _) = Dirs(root, "plain");
            return new Target { Name = "plain", Dir = src, Source = src, Description = $"{src} directly, no FUSE" };
        }

        private static (string Src, string Mnt) Dirs(string root, string name)
        {
            var src = Path.Combine(root, name, "src");
            var mnt = Path.Combine(root, name, "mnt");
            Directory.CreateDirectory(src);
            Directory.CreateDirectory(mnt);
            return (src, mnt);
        }

        private void Start(string exe, string[] args, string mountPoint, string fsTypePrefix)
        {
            var info = new ProcessStartInfo(exe) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args) info.ArgumentList.Add(a);
            _process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {exe}");
            _process.OutputDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine($"[{Name}] {e.Data}"); };
            _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine($"[{Name}] {e.Data}"); };
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
            _mountPoint = mountPoint;
            _interruption = Interruption.Register(Dispose);
            var clock = Stopwatch.StartNew();
            while (!(MountType(mountPoint)?.StartsWith(fsTypePrefix, StringComparison.Ordinal) ?? false))
            {
                if (_process.HasExited) throw new InvalidOperationException($"{exe} exited with {_process.ExitCode} before mounting {mountPoint}");
                if (clock.Elapsed > TimeSpan.FromSeconds(30)) throw new TimeoutException($"{exe} did not mount {mountPoint} within 30 s");
                Thread.Sleep(20);
            }
        }

        private static string? MountType(string mountPoint)
        {
            string? type = null;
            foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            {
                var f = line.Split(' ');
                if (f.Length > 6 && f[4] == mountPoint)
                {
                    var dash = Array.IndexOf(f, "-", 6);
                    if (dash > 0) type = f[dash + 1];
                }
            }
            return type;
        }

        /// <summary>User + system CPU time of the server process so far (all its threads), from /proc/PID/stat.</summary>
        public double CpuSeconds()
        {
            return _process is null ? 0 : ProcessCpu.Seconds(_process.Id);
        }

        public (long PeakKiB, long RssKiB) Memory()
        {
            long hwm = 0, rss = 0;
            if (_process is null) return (0, 0);
            foreach (var line in File.ReadLines($"/proc/{_process.Id}/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            }
            return (hwm, rss);
        }

        public void Dispose()
        {
            _interruption?.Dispose();
            if (_mountPoint is not null && MountType(_mountPoint) is not null && Libc.umount2(_mountPoint, 0) != 0)
                Libc.umount2(_mountPoint, Libc.MNT_DETACH);
            if (_process is { HasExited: false })
            {
                Libc.kill(_process.Id, Libc.SIGTERM);
                if (!_process.WaitForExit(5000))
                {
                    Libc.kill(_process.Id, Libc.SIGKILL);
                    _process.WaitForExit(5000);
                }
            }
            _process?.Dispose();
        }
    }

    // ------------------------------------------------------------------------------------------------ workloads

    private static void DropCaches(string what = "3")
    {
        // Dirty pages are not dropped, so write them out first; "3" = page cache + dentries and inodes.
        Libc.sync();
        File.WriteAllText("/proc/sys/vm/drop_caches", what);
    }

    /// <summary>Creates the listing directory (through the host path: setup, not measured) for every target.</summary>
    private static void Prepare(List<Target> targets, Options options)
    {
        foreach (var t in targets)
        {
            var list = Path.Combine(t.Source, "list");
            Directory.CreateDirectory(list);
            for (var i = 0; i < options.ListEntries; i++) CreateEmpty(Path.Combine(list, $"entry-{i:D6}"));
        }
    }

    // The workloads use the plain POSIX calls: .NET's FileStream adds calls of its own (fstat, advisory flock for
    // FileShare), which would put requests on a FUSE mount that `cp` or `ls` never send.

    private static void CreateEmpty(string path)
    {
        var fd = Libc.open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_CLOEXEC, 0x1a4);
        if (fd < 0) throw new IOException($"create {path}: {LastError()}");
        Libc.close(fd);
    }

    private static string LastError() => System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(Libc.LastErrno);

    /// <summary>The *at calls' directory for paths as the path calls take them: relative to the working directory.</summary>
    private static readonly SafeFd WorkingDirectory = new(Libc.open(".", Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0));

    /// <summary>lstat(2) of <paramref name="path"/>, as fstatat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW).</summary>
    private static int LStat(string path)
    {
        Span<byte> z = stackalloc byte[Encoding.UTF8.GetMaxByteCount(path.Length) + 1];
        int n = Encoding.UTF8.GetBytes(path, z);
        z[n] = 0;
        return Libc.fstatat(Libc.AT_FDCWD, z[..(n + 1)], out _, Libc.AT_SYMLINK_NOFOLLOW);
    }

    /// <summary>unlink(2) of <paramref name="path"/>, as unlinkat(AT_FDCWD, path, 0).</summary>
    private static int Unlink(string path)
    {
        Span<byte> z = stackalloc byte[Encoding.UTF8.GetMaxByteCount(path.Length) + 1];
        int n = Encoding.UTF8.GetBytes(path, z);
        z[n] = 0;
        return Libc.unlinkat(WorkingDirectory, z[..(n + 1)], 0);
    }

    /// <summary>One workload: the median rate per target and the CPU time its FUSE server spent over all runs.</summary>
    private sealed record Row(string Name, string Unit, double[] Medians, double[] ServerCpuSeconds);

    private static Row Measure(string name, string unit, List<Target> targets, int runs, Func<Target, double> run)
    {
        Console.Write($"  {name} ");
        var samples = targets.Select(_ => new List<double>()).ToArray();
        var cpu = new double[targets.Count];
        for (var r = 0; r < runs; r++)
        {
            for (var i = 0; i < targets.Count; i++)
            {
                var before = targets[i].CpuSeconds();
                samples[i].Add(run(targets[i]));
                cpu[i] += targets[i].CpuSeconds() - before;
            }
            Console.Write('.');
        }
        Console.WriteLine();
        return new Row(name, unit, samples.Select(Median).ToArray(), cpu);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static double CreateStatUnlink(string dir, int files)
    {
        var d = Path.Combine(dir, "csu");
        Directory.CreateDirectory(d);
        var names = new string[files];
        for (var i = 0; i < files; i++) names[i] = Path.Combine(d, $"f{i:D6}");
        var clock = Stopwatch.StartNew();
        foreach (var name in names) CreateEmpty(name);
        foreach (var name in names)
            if (LStat(name) != 0) throw new IOException($"stat {name}: {LastError()}");
        foreach (var name in names)
            if (Unlink(name) != 0) throw new IOException($"unlink {name}: {LastError()}");
        return files / clock.Elapsed.TotalSeconds;
    }

    private static double SequentialWrite(string dir, int sizeMiB)
    {
        var path = Path.Combine(dir, "seq");
        var block = GC.AllocateUninitializedArray<byte>(1 << 20, pinned: true);
        Random.Shared.NextBytes(block);
        DropCaches();
        var clock = Stopwatch.StartNew();
        var fd = Libc.open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_TRUNC | Libc.O_CLOEXEC, 0x1a4);
        if (fd < 0) throw new IOException($"open {path}: {LastError()}");
        for (var i = 0; i < sizeMiB; i++)
            if (Libc.write(fd, block, (nuint)block.Length) != block.Length) throw new IOException($"write {path}: {LastError()}");
        Libc.close(fd);
        return sizeMiB / clock.Elapsed.TotalSeconds;
    }

    private static double SequentialRead(string dir)
    {
        var path = Path.Combine(dir, "seq");
        var block = GC.AllocateUninitializedArray<byte>(1 << 20, pinned: true);
        DropCaches();
        var clock = Stopwatch.StartNew();
        var fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw new IOException($"open {path}: {LastError()}");
        long total = 0;
        nint n;
        while ((n = Libc.read(fd, block, (nuint)block.Length)) > 0) total += n;
        if (n < 0) throw new IOException($"read {path}: {LastError()}");
        Libc.close(fd);
        return total / (double)(1 << 20) / clock.Elapsed.TotalSeconds;
    }

    private static double RandomRead(string dir, int sizeMiB, double seconds)
    {
        var path = Path.Combine(dir, "seq");
        var blocks = (long)sizeMiB * 256;
        var buffer = GC.AllocateUninitializedArray<byte>(4096, pinned: true);
        var random = new Random(42);
        DropCaches();
        var fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw new IOException($"open {path}: {LastError()}");
        using var file = new SafeFd(fd);
        long reads = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            for (var i = 0; i < 64; i++, reads++)
                if (Libc.pread(file, buffer, 4096, random.NextInt64(blocks) * 4096) != 4096) throw new IOException($"pread {path}: {LastError()}");
        }
        var elapsed = clock.Elapsed.TotalSeconds;
        file.Dispose();
        return reads / elapsed;
    }

    private static double Listing(string dir, int expected)
    {
        var list = Path.Combine(dir, "list");
        DropCaches();
        var clock = Stopwatch.StartNew();
        var count = 0;
        foreach (var entry in Directory.EnumerateFileSystemEntries(list))
        {
            if (LStat(entry) != 0) throw new IOException($"lstat {entry}: {LastError()}");
            count++;
        }
        var elapsed = clock.Elapsed.TotalSeconds;
        if (count != expected) throw new InvalidDataException($"{list} listed {count} entries, expected {expected}");
        return count / elapsed;
    }

    // ------------------------------------------------------------------------------------------------ report

    private static void PrintTable(List<Target> targets, List<Row> rows, Options options)
    {
        Console.WriteLine();
        Console.WriteLine($"Medians of {options.Runs} runs (higher is better). Cold cache = sync + echo 3 > /proc/sys/vm/drop_caches before the run;");
        Console.WriteLine("writes go to the page cache (no fsync), after dropping the caches.");
        var header = $"{"workload",-44} {"unit",-9}";
        foreach (var t in targets) header += $" {t.Name,11}";
        header += $" {"daemon/bindfs",14} {"daemon/plain",13}";
        Console.WriteLine(header);
        Console.WriteLine(new string('-', header.Length));
        foreach (var row in rows)
        {
            var line = $"{row.Name,-44} {row.Unit,-9}";
            foreach (var m in row.Medians) line += $" {m,11:N0}";
            line += $" {row.Medians[0] / row.Medians[1],14:0.00} {row.Medians[0] / row.Medians[2],13:0.00}";
            Console.WriteLine(line);
        }

        // Wall-clock rates move with whatever else the machine runs; the CPU a server burns for the same work does not.
        Console.WriteLine();
        Console.WriteLine($"CPU time of the FUSE server process over all {options.Runs} runs (user+system, lower is better):");
        Console.WriteLine($"{"workload",-44} {"daemon s",9} {"bindfs s",9} {"daemon/bindfs",14}");
        foreach (var row in rows)
            Console.WriteLine($"{row.Name,-44} {row.ServerCpuSeconds[0],9:0.00} {row.ServerCpuSeconds[1],9:0.00} {(row.ServerCpuSeconds[1] > 0 ? row.ServerCpuSeconds[0] / row.ServerCpuSeconds[1] : double.NaN),14:0.00}");
    }

    private static void PrintMemory(List<Target> targets, Options options)
    {
        if (options.ForgetFiles == 0) return;
        Console.WriteLine();
        Console.WriteLine($"Memory after {options.ForgetFiles:N0} files were looked up (lstat through the mount) and forgotten (echo 2 > drop_caches):");
        foreach (var t in targets.Where(t => t.Pid is not null))
        {
            var many = Path.Combine(t.Source, "many");
            Directory.CreateDirectory(many);
            for (var i = 0; i < options.ForgetFiles; i++) CreateEmpty(Path.Combine(many, $"m{i:D6}"));
            DropCaches();
            var before = t.Memory();
            LookUpAll(Path.Combine(t.Dir, "many"), options.ForgetFiles);
            var afterLookups = t.Memory();
            DropCaches("2");
            Thread.Sleep(2000); // FORGETs are queued by the kernel and answered asynchronously
            var end = t.Memory();
            Console.WriteLine($"  {t.Name,-8} VmRSS before {before.RssKiB / 1024.0,7:0.0} MiB, after lookups {afterLookups.RssKiB / 1024.0,7:0.0} MiB, "
                + $"after forget {end.RssKiB / 1024.0,7:0.0} MiB; peak (VmHWM) {end.PeakKiB / 1024.0,7:0.0} MiB");
        }
    }

    private static void LookUpAll(string dir, int files)
    {
        for (var i = 0; i < files; i++)
        {
            var name = Path.Combine(dir, $"m{i:D6}");
            if (LStat(name) != 0) throw new IOException($"lstat {name}: {LastError()}");
        }
    }
}
