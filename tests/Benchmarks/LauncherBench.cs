using System.Diagnostics;
using System.Text.Json;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench launcher [--runs N] [--queues Q] [--launcher PATH] [--passthrough PATH]`: how long a share takes
/// from "vdev runs fuse_launcher" to "fuse_launcher printed the daemon's pid", over a shared-memory ring as the
/// vdev does it (no root). Rows: fuse_launcher with a shell script that reports ready at once (the
/// launcher's own cost), fuse_launcher with the real passthrough daemon; the vdev with one share from exec until its
/// vhost-user socket exists and until it answers a VMM's GET_FEATURES (the vdev listens before its share has started
/// and answers once it serves), and, for comparison, QEMU's C virtiofsd measured the same two ways.
/// </summary>
internal static class LauncherBench
{
    public static int Run(string[] args)
    {
        if (!OperatingSystem.IsLinux()) { Console.Error.WriteLine("The launcher suite needs Linux (fuse_launcher uses posix_spawn and pidfds)."); return 2; }
        int runs = 10, queues = 1;
        string? launcher = null, passthrough = null;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--runs": runs = int.Parse(Next()); break;
                case "--queues": queues = int.Parse(Next()); break;
                case "--launcher": launcher = Next(); break;
                case "--passthrough": passthrough = Next(); break;
                default: Console.Error.WriteLine($"unknown option {args[i]}; use --runs N, --queues Q, --launcher PATH, --passthrough PATH."); return 2;
            }
        }
        launcher ??= Path.Combine(Hypervisor.Tests.Executables.Dist, "fuse_launcher");
        passthrough ??= Path.Combine(Hypervisor.Tests.Executables.Dist, "passthrough");
        foreach (var (what, path) in new[] { ("fuse_launcher", launcher), ("passthrough", passthrough) })
        {
            if (!File.Exists(path)) { Console.Error.WriteLine($"{what} is not at {path}; run `bash .ci/build` (it publishes dist/) or pass its path."); return 2; }
        }

        var dir = Directory.CreateTempSubdirectory("hv-bench-launcher-").FullName;
        try
        {
            var share = Path.Combine(dir, "share");
            Directory.CreateDirectory(share);
            var script = Path.Combine(dir, "ready.sh");
            File.WriteAllText(script, "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --ready-fd ] && fd=$2; shift; done\neval \"echo ready pid=\\$\\$ control=- >&$fd\"\nexec sleep 60\n");
            File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

            Console.WriteLine($"start-up latency, {runs} runs each, ring with {queues} queue(s); milliseconds");
            Console.WriteLine($"{"what",-44} {"median",8} {"min",8} {"max",8}");
            Report("fuse_launcher + ready script", Measure(runs, () => LaunchOnce(launcher, script, share, queues)));
            var daemonCpu = new List<double>();
            Report("fuse_launcher + passthrough (ring)", Measure(runs, () => LaunchOnce(launcher, passthrough, share, queues, daemonCpu)));
            // The warm-up run's figure is left out, as its time is.
            daemonCpu.RemoveAt(0);
            daemonCpu.Sort();
            Report("  the daemon's CPU time when it was ready", daemonCpu);
            var vdev = Path.Combine(Path.GetDirectoryName(launcher)!, "vdev");
            string[] vdevArgs = [$"--socket-path={Path.Combine(dir, "vdev.sock")}", "--shared-dir", share, "--log-level", "warn"];
            string[] virtiofsdArgs = [$"--socket-path={Path.Combine(dir, "virtiofsd.sock")}", "-o", $"source={share}", "-o", "cache=none", "-o", "sandbox=chroot"];
            if (File.Exists(vdev))
                Report("vdev exec until its socket exists (1 share)", Measure(runs, () => ExecUntilSocket(dir, vdev, vdevArgs, "vdev.sock")));
            if (File.Exists("/usr/lib/qemu/virtiofsd"))
                Report("virtiofsd exec until its socket exists", Measure(runs, () => ExecUntilSocket(dir, "/usr/lib/qemu/virtiofsd", virtiofsdArgs, "virtiofsd.sock")));
            // The vdev listens before its share has started; it answers a VMM once the share serves.
            if (File.Exists(vdev))
                Report("vdev exec until it answers GET_FEATURES (1 share)", Measure(runs, () => ExecUntilSocket(dir, vdev, vdevArgs, "vdev.sock", answer: true)));
            if (File.Exists("/usr/lib/qemu/virtiofsd"))
                Report("virtiofsd exec until it answers GET_FEATURES", Measure(runs, () => ExecUntilSocket(dir, "/usr/lib/qemu/virtiofsd", virtiofsdArgs, "virtiofsd.sock", answer: true)));
            return 0;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static List<double> Measure(int runs, Func<double> once)
    {
        once(); // warm the page cache and the runtime's files
        var times = new List<double>(runs);
        for (int i = 0; i < runs; i++) times.Add(once());
        times.Sort();
        return times;
    }

    private static void Report(string what, List<double> sorted) =>
        Console.WriteLine($"{what,-44} {sorted[sorted.Count / 2],8:0.0} {sorted[0],8:0.0} {sorted[^1],8:0.0}");

    private static double LaunchOnce(string launcher, string daemon, string share, int queues, List<double>? daemonCpu = null)
    {
        using var rings = ShmRingSet.Create(queues);
        var info = new ProcessStartInfo(launcher) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--shared-dir", share, "--ring", rings.Fds.ToString(), "--passthrough", daemon, "--log-level", "warn", "--timeout", "60" })
            info.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        rings.SetInheritable(true);
        Process process;
        try { process = Process.Start(info)!; }
        finally { rings.SetInheritable(false); }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEnd();
            var stderr = process.StandardError.ReadToEnd();
            process.WaitForExit();
            double ms = clock.Elapsed.TotalMilliseconds;
            if (process.ExitCode != 0) throw new InvalidOperationException($"fuse_launcher failed ({process.ExitCode}): {stderr.Trim()}");
            using var json = JsonDocument.Parse(stdout);
            int pid = json.RootElement.GetProperty("pid").GetInt32();
            daemonCpu?.Add(CpuMilliseconds(pid));
            Stop(pid);
            return ms;
        }
    }

    /// <summary>
    /// User + system time of every thread <paramref name="pid"/> has now, in milliseconds, from /proc/PID/task/*/schedstat
    /// (nanoseconds on the CPU; /proc/PID/stat counts 10 ms ticks, too coarse for a start). Threads that have ended are not
    /// counted.
    /// </summary>
    private static double CpuMilliseconds(int pid)
    {
        long ns = 0;
        foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try { ns += long.Parse(File.ReadAllText(Path.Combine(task, "schedstat")).Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
            catch (IOException) { }
        }
        return ns / 1e6;
    }

    /// <summary>
    /// From exec until <paramref name="socketName"/> appears in <paramref name="dir"/> or, with <paramref name="answer"/>,
    /// until the program has answered a VMM's first message (GET_FEATURES) on it; then the process (and, for vdev, its
    /// daemon) is stopped with SIGTERM.
    /// </summary>
    private static double ExecUntilSocket(string dir, string program, string[] args, string socketName, bool answer = false)
    {
        var socket = Path.Combine(dir, socketName);
        File.Delete(socket);
        var info = new ProcessStartInfo(program) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info)!;
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        while (!File.Exists(socket))
        {
            if (process.HasExited) throw new InvalidOperationException($"{program} exited with {process.ExitCode} before creating its socket.");
            Thread.SpinWait(1000);
        }
        Hypervisor.Vdev.Tests.Frontend.VhostUserFrontend? vmm = null;
        if (answer)
        {
            vmm = Hypervisor.Vdev.Tests.Frontend.VhostUserFrontend.Connect(socket, TimeSpan.FromSeconds(30));
            vmm.GetU64(Hypervisor.Protocol.VhostUser.VhostUserRequest.GetFeatures);
        }
        double ms = clock.Elapsed.TotalMilliseconds;
        vmm?.Dispose();
        Hypervisor.Interop.Libc.kill(process.Id, Hypervisor.Interop.Libc.SIGTERM);
        if (!process.WaitForExit(10_000)) process.Kill();
        return ms;
    }

    private static void Stop(int pid)
    {
        try { using var p = Process.GetProcessById(pid); p.Kill(); } catch (ArgumentException) { return; }
        // Not our child (fuse_launcher started it and exited): wait until /proc shows it gone or a zombie.
        var deadline = Environment.TickCount64 + 10_000;
        while (Environment.TickCount64 < deadline)
        {
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                if (stat[(stat.LastIndexOf(')') + 2)..][0] is 'Z' or 'X') return;
            }
            catch (IOException) { return; }
            Thread.Sleep(5);
        }
    }
}
