using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>Settings of one guest boot; the defaults suit the scenarios in tests/guest/scenarios.</summary>
public sealed class GuestOptions
{
    /// <summary>Guest RAM in MiB (a shared memfd, as vhost-user requires). Default 512.</summary>
    public int MemoryMiB { get; init; } = 512;

    /// <summary>Guest vCPUs (TCG threads). Default 2.</summary>
    public int Cpus { get; init; } = 2;

    /// <summary>Request queues per virtio-fs device (<c>num-request-queues</c>). Default 1.</summary>
    public int RequestQueues { get; init; } = 1;

    /// <summary>Wall-clock limit for the whole boot; QEMU is killed when it is reached. Default 300 s (TCG on a loaded 2-core machine).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>How long a backend may take to create its socket. Default 15 s.</summary>
    public TimeSpan BackendStartTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>Variables exported to the scenario (names must be shell identifiers).</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>Called with every console line as it arrives (e.g. to stream a benchmark); may be null.</summary>
    public Action<string>? OnConsoleLine { get; init; }

    /// <summary>More kernel command-line arguments (e.g. <c>security=selinux</c>); empty by default.</summary>
    public string KernelArguments { get; init; } = "";

    /// <summary>
    /// Boot the image that also holds fio and its libraries (build-initramfs.sh --with-fio), a separate cached
    /// image since it is several times larger; fio must be installed on the host. Default false.
    /// </summary>
    public bool WithFio { get; init; }
}

/// <summary>
/// Boots a Linux guest under QEMU (TCG) with one vhost-user-fs-pci device per share, runs a shell
/// scenario inside it and returns the parsed "@@HV" result lines. The initramfs is built once by
/// tests/guest/build-initramfs.sh and cached by content hash; the scenario is appended to it as a
/// second cpio member per boot. Every process started here (backends, QEMU) is ended by pid in a
/// finally block, and the per-boot temporary directory is removed.
/// </summary>
public static class GuestVm
{
    /// <summary>
    /// xunit collection name for test classes that boot guests: they run one after another, since
    /// two TCG guests on a 2-core machine slow each other down past their timeouts.
    /// </summary>
    public const string Collection = "Guest VM";

    private static readonly object BuildLock = new();
    private static string? _root;

    /// <summary>The repository root (the directory holding tests/guest/build-initramfs.sh).</summary>
    public static string RepositoryRoot => _root ??= FindRoot();

    /// <summary>tests/guest in the repository.</summary>
    public static string GuestDirectory => Path.Combine(RepositoryRoot, "tests", "guest");

    /// <summary>Reads tests/guest/scenarios/NAME.</summary>
    public static string LoadScenario(string name) => File.ReadAllText(Path.Combine(GuestDirectory, "scenarios", name));

    /// <summary>
    /// Boots the guest with <paramref name="shares"/> (tags exported to the scenario as HV_TAG0,
    /// HV_TAG1, …) and runs <paramref name="scenario"/> (a busybox sh script; /lib/hv.sh is sourced
    /// first). Throws <see cref="GuestSetupException"/> when the host cannot start the guest or a
    /// backend; otherwise returns the result even if the scenario failed or timed out.
    /// </summary>
    public static GuestResult Run(string scenario, IReadOnlyList<GuestShare> shares, GuestOptions? options = null)
    {
        var devices = new List<GuestDevice>(shares.Count);
        foreach (var share in shares) devices.Add(new GuestDevice(share.Tag, share.HostDirectory, share.Backend.Name));
        return RunCore(scenario, devices, options ?? new GuestOptions(), (temp, sockets, start) =>
        {
            for (int i = 0; i < shares.Count; i++)
            {
                var share = shares[i];
                var psi = share.Backend.CreateStartInfo(new GuestBackendContext(sockets[i], share.HostDirectory, share.Tag));
                start($"{share.Backend.Name}[{share.Tag}]", psi, [sockets[i]]);
            }
        });
    }

    /// <summary>
    /// Boots the guest with one virtio-fs device per entry of <paramref name="devices"/>, all served by
    /// ONE process started from <paramref name="backend"/> (e.g. <c>vdev --config FILE</c> with one block
    /// per device). The harness waits until that process has created every device's socket, then starts
    /// QEMU; the process is ended by pid like any other. Same results and exceptions as
    /// <see cref="Run(string, IReadOnlyList{GuestShare}, GuestOptions?)"/>.
    /// </summary>
    public static GuestResult Run(string scenario, GuestMultiBackend backend, IReadOnlyList<GuestDevice> devices, GuestOptions? options = null)
    {
        var named = new List<GuestDevice>(devices.Count);
        foreach (var d in devices) named.Add(d with { BackendName = backend.Name });
        return RunCore(scenario, named, options ?? new GuestOptions(), (temp, sockets, start) =>
        {
            var psi = backend.CreateStartInfo(new GuestMultiBackendContext(temp, sockets, devices));
            start($"{backend.Name}[{string.Join(',', ListTags(devices))}]", psi, sockets);
        });
    }

    private static IEnumerable<string> ListTags(IReadOnlyList<GuestDevice> devices)
    {
        foreach (var d in devices) yield return d.Tag;
    }

    /// <summary>Starts a backend process and waits for the sockets it must create.</summary>
    private delegate void StartBackend(string name, ProcessStartInfo psi, IReadOnlyList<string> sockets);

    private static GuestResult RunCore(string scenario, List<GuestDevice> devices, GuestOptions options,
        Action<string, IReadOnlyList<string>, StartBackend> startBackends)
    {
        if (!IsRoot())
            throw new GuestSetupException("Guest tests start virtiofsd, which must run as root: run them as root.");
        var (kernel, initramfs) = EnsureInitramfs(options.WithFio);
        var temp = Directory.CreateTempSubdirectory("hvg-").FullName;
        var started = new List<(string Name, Process Process, StringBuilder Log)>();
        var console = new List<string>();
        var startedPids = new List<int>();
        var sw = Stopwatch.StartNew();
        bool timedOut = false;
        int? qemuExit = null;
        try
        {
            var initrd = Path.Combine(temp, "initrd.cpio.gz");
            WriteInitrd(initramfs, initrd, scenario, devices, options.Environment);

            var qemu = new ProcessStartInfo("qemu-system-x86_64");
            foreach (var a in new[]
            {
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", options.Cpus.ToString(),
                "-m", $"{options.MemoryMiB}M",
                "-object", $"memory-backend-memfd,id=mem,size={options.MemoryMiB}M,share=on",
                "-machine", "q35,memory-backend=mem",
                "-kernel", kernel, "-initrd", initrd,
                "-append", ("console=ttyS0 quiet loglevel=3 panic=-1 tsc=reliable i8042.noaux i8042.nokbd " + options.KernelArguments).TrimEnd(),
                "-serial", "stdio",
            }) qemu.ArgumentList.Add(a);

            var sockets = new string[devices.Count];
            for (int i = 0; i < devices.Count; i++)
            {
                if (!Directory.Exists(devices[i].HostDirectory))
                    throw new GuestSetupException($"Share '{devices[i].Tag}' points to {devices[i].HostDirectory}, which does not exist: create it first.");
                sockets[i] = Path.Combine(temp, $"fs{i}.sock");
            }
            startBackends(temp, sockets, (name, psi, waitFor) =>
            {
                var (proc, log) = Start(psi);
                started.Add((name, proc, log));
                startedPids.Add(proc.Id);
                foreach (var sock in waitFor) WaitForSocket(name, sock, proc, log, options.BackendStartTimeout);
            });
            for (int i = 0; i < devices.Count; i++)
            {
                qemu.ArgumentList.Add("-chardev");
                qemu.ArgumentList.Add($"socket,id=fs{i},path={sockets[i]}");
                qemu.ArgumentList.Add("-device");
                qemu.ArgumentList.Add($"vhost-user-fs-pci,chardev=fs{i},tag={devices[i].Tag},num-request-queues={options.RequestQueues}");
            }

            qemu.RedirectStandardOutput = true;
            qemu.RedirectStandardError = true;
            qemu.RedirectStandardInput = true;
            qemu.UseShellExecute = false;
            var vm = new Process { StartInfo = qemu };
            var qemuErr = new StringBuilder();
            vm.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                var line = e.Data.TrimEnd('\r');
                lock (console) console.Add(line);
                options.OnConsoleLine?.Invoke(line);
            };
            vm.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (qemuErr) qemuErr.AppendLine(e.Data); };
            try { vm.Start(); }
            catch (System.ComponentModel.Win32Exception ex)
            {
                vm.Dispose();
                throw new GuestSetupException($"qemu-system-x86_64 could not be started ({ex.Message}): install qemu-system-x86.");
            }
            started.Add(("qemu", vm, qemuErr));
            startedPids.Add(vm.Id);
            vm.BeginOutputReadLine();
            vm.BeginErrorReadLine();
            if (!vm.WaitForExit(options.Timeout))
            {
                timedOut = true;
                TryKill(vm);
            }
            vm.WaitForExit(); // flushes the asynchronous readers
            qemuExit = timedOut ? null : vm.ExitCode;

            // virtiofsd exits by itself once QEMU has disconnected; other backends may wait for a
            // signal, so whatever still runs after a grace period is killed, and its log says so.
            foreach (var (_, p, log) in started)
            {
                if (p.WaitForExit(TimeSpan.FromSeconds(5))) continue;
                TryKill(p);
                lock (log) log.AppendLine("[killed by the guest harness: still running 5 s after QEMU exited]");
            }
        }
        finally
        {
            foreach (var (_, p, _) in started)
            {
                TryKill(p);
                p.Dispose();
            }
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        sw.Stop();
        string[] lines;
        lock (console) lines = console.ToArray();
        var pids = new List<int>();
        var logs = new Dictionary<string, string>();
        foreach (var (name, _, log) in started) lock (log) logs[name] = log.ToString();
        foreach (var pid in startedPids) pids.Add(pid);
        return GuestResult.Parse(lines, logs, sw.Elapsed, timedOut, qemuExit, pids);
    }

    /// <summary>
    /// Builds (once per content hash of tests/guest and kernel) and returns the kernel and base
    /// initramfs paths. The cache lives in $HV_GUEST_CACHE or /tmp/hv-guest-cache. With
    /// <paramref name="withFio"/> the image also holds fio (build-initramfs.sh --with-fio); a host without
    /// fio gets a <see cref="GuestSetupException"/> saying so.
    /// </summary>
    public static (string Kernel, string Initramfs) EnsureInitramfs(bool withFio = false)
    {
        lock (BuildLock)
        {
            var dir = GuestDirectory;
            var hash = SHA256.Create();
            foreach (var f in new[] { "build-initramfs.sh", "hvtool.c", "init", "hv.sh" })
            {
                var bytes = File.ReadAllBytes(Path.Combine(dir, f));
                hash.TransformBlock(bytes, 0, bytes.Length, null, 0);
            }
            var kver = Environment.GetEnvironmentVariable("HV_KVER") ?? "";
            var kb = Encoding.UTF8.GetBytes(withFio ? kver + "\0with-fio" : kver);
            hash.TransformFinalBlock(kb, 0, kb.Length);
            var key = Convert.ToHexString(hash.Hash!)[..16].ToLowerInvariant();
            var cache = Environment.GetEnvironmentVariable("HV_GUEST_CACHE") ?? "/tmp/hv-guest-cache";
            Directory.CreateDirectory(cache);
            var image = Path.Combine(cache, $"initramfs-{key}.cpio.gz");
            var kverFile = image + ".kver";
            // A file lock serialises builds between test processes running at the same time.
            using (var fileLock = new FileStream(Path.Combine(cache, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None))
            {
                if (!File.Exists(image) || !File.Exists(kverFile))
                {
                    var tmp = Path.Combine(cache, $"build-{Environment.ProcessId}.cpio.gz");
                    var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
                    psi.ArgumentList.Add(Path.Combine(dir, "build-initramfs.sh"));
                    if (withFio) psi.ArgumentList.Add("--with-fio");
                    psi.ArgumentList.Add(tmp);
                    using var p = Process.Start(psi)!;
                    var stdout = p.StandardOutput.ReadToEndAsync();
                    var stderr = p.StandardError.ReadToEnd();
                    p.WaitForExit();
                    if (p.ExitCode != 0)
                        throw new GuestSetupException($"build-initramfs.sh failed (exit {p.ExitCode}): {stderr.Trim()}");
                    File.WriteAllText(kverFile, stdout.Result.Trim());
                    File.Move(tmp, image, overwrite: true);
                    // Images of other versions of tests/guest untouched for a day are not in use (another
                    // checkout may be booting a newer one right now, so recent ones stay).
                    foreach (var stale in Directory.EnumerateFiles(cache, "initramfs-*"))
                        if (!stale.StartsWith(image, StringComparison.Ordinal) && File.GetLastAccessTimeUtc(stale) < DateTime.UtcNow.AddDays(-1))
                            File.Delete(stale);
                }
            }
            var kernel = "/boot/vmlinuz-" + File.ReadAllText(kverFile).Trim();
            if (!File.Exists(kernel))
                throw new GuestSetupException($"{kernel} is missing: install linux-image-cloud-amd64 or set HV_KVER.");
            return (kernel, image);
        }
    }

    /// <summary>Base image plus a gzip member holding /scenario.sh (the kernel unpacks concatenated archives in order).</summary>
    private static void WriteInitrd(string baseImage, string path, string scenario, List<GuestDevice> devices,
        IReadOnlyDictionary<string, string> env)
    {
        var script = new StringBuilder();
        var tags = new StringBuilder();
        for (int i = 0; i < devices.Count; i++)
        {
            script.Append($"export HV_TAG{i}={ShellQuote(devices[i].Tag)} HV_BACKEND{i}={ShellQuote(devices[i].BackendName)}\n");
            if (i > 0) tags.Append(' ');
            tags.Append(devices[i].Tag);
        }
        script.Append($"export HV_TAGS={ShellQuote(tags.ToString())}\n");
        foreach (var (k, v) in env) script.Append($"export {k}={ShellQuote(v)}\n");
        script.Append(scenario.Replace("\r\n", "\n"));
        if (!scenario.EndsWith('\n')) script.Append('\n');

        using var output = File.Create(path);
        using (var input = File.OpenRead(baseImage)) input.CopyTo(output);
        using var gz = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true);
        Cpio.WriteFile(gz, "scenario.sh", Encoding.UTF8.GetBytes(script.ToString()), mode: 0x81ED /* S_IFREG | 0755 */);
        Cpio.WriteTrailer(gz);
    }

    private static string ShellQuote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    private static (Process, StringBuilder) Start(ProcessStartInfo psi)
    {
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        psi.UseShellExecute = false;
        var log = new StringBuilder();
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        try { p.Start(); }
        catch (System.ComponentModel.Win32Exception ex)
        {
            p.Dispose();
            throw new GuestSetupException($"Backend {psi.FileName} could not be started ({ex.Message}): check that it is built and executable.");
        }
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return (p, log);
    }

    private static void WaitForSocket(string name, string sock, Process proc, StringBuilder log, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (File.Exists(sock)) return;
            if (proc.WaitForExit(20))
            {
                proc.WaitForExit();
                string text;
                lock (log) text = log.ToString().Trim();
                throw new GuestSetupException(
                    $"Backend {name} exited with code {proc.ExitCode} before creating its vhost-user socket {sock}; its output: {text}");
            }
        }
        throw new GuestSetupException(
            $"Backend {name} did not create its vhost-user socket {sock} within {timeout.TotalSeconds:0} s: check its command line.");
    }

    private static void TryKill(Process p)
    {
        try
        {
            // Kills this process and the children it forked (virtiofsd's sandbox forks once), by pid.
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit(5000);
        }
        catch (InvalidOperationException) { }
        catch (System.ComponentModel.Win32Exception) { }
    }

    private static bool IsRoot()
    {
        try { return File.ReadAllText("/proc/self/status").Contains("\nUid:\t0\t"); }
        catch (IOException) { return false; }
    }

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "tests", "guest", "build-initramfs.sh"))) return d.FullName;
        throw new GuestSetupException(
            $"tests/guest/build-initramfs.sh was not found above {AppContext.BaseDirectory}: run the tests from the repository's build output.");
    }
}

/// <summary>Writes "newc" cpio entries (the format the kernel's initramfs unpacker reads).</summary>
internal static class Cpio
{
    private static int _ino = 900000;

    public static void WriteFile(Stream s, string name, byte[] data, int mode)
    {
        WriteHeader(s, name, mode, data.Length);
        s.Write(data);
        Pad(s, data.Length);
    }

    public static void WriteTrailer(Stream s) => WriteHeader(s, "TRAILER!!!", 0, 0);

    private static void WriteHeader(Stream s, string name, int mode, int size)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        var h = new StringBuilder("070701");
        foreach (var v in new long[] { Interlocked.Increment(ref _ino), mode, 0, 0, 1, 0, size, 0, 0, 0, 0, nameBytes.Length, 0 })
            h.Append(v.ToString("x8"));
        var hb = Encoding.ASCII.GetBytes(h.ToString());
        s.Write(hb);
        s.Write(nameBytes);
        Pad(s, hb.Length + nameBytes.Length);
    }

    private static void Pad(Stream s, int written)
    {
        var pad = (4 - written % 4) % 4;
        for (int i = 0; i < pad; i++) s.WriteByte(0);
    }
}
