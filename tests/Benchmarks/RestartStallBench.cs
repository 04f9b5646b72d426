using System.Diagnostics;
using System.Globalization;
using System.Text;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench restart-stall`: the stall a guest sees when the share's daemon is replaced by `vdev ctl restart`. One
/// TCG guest runs tests/guest/scenarios/restart-stall.sh: `hvtool stallwatch` reads a 4 KiB mailbox file with O_DIRECT
/// back to back (every read is a request the daemon serves). The host writes "b N" into the mailbox, runs
/// `vdev ctl --timeout 60 restart`, writes "d N", waits, and so on; the guest reports per restart the longest time
/// between two completed reads where the earlier one saw "b N", and the longest gap outside restarts for comparison.
/// Prints each restart's guest gap, the vdev's own figure (its "waited at most" log line) and the ctl call's duration,
/// and the medians.
/// </summary>
public static class RestartStallBench
{
    public const string Help = "guest-visible stall of `vdev ctl restart` in a TCG guest, per restart and median [--restarts 10] [--spacing-ms 2000] [--vdev PATH] [-v]";

    public static int Run(string[] args)
    {
        int restarts = 10, spacingMs = 2000;
        string? vdevPath = null;
        bool verbose = false;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option {args[i]} needs a value.");
            switch (args[i])
            {
                case "--restarts": restarts = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--spacing-ms": spacingMs = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--vdev": vdevPath = Next(); break;
                case "-v" or "--verbose": verbose = true; break;
                default:
                    Console.Error.WriteLine("usage: hv-bench restart-stall [--restarts 10] [--spacing-ms 2000] [--vdev PATH] [-v]");
                    return 2;
            }
        }

        var dir = Directory.CreateTempSubdirectory("hvbench-stall-").FullName;
        void CleanUp()
        {
            // The harness ends the vdev; a daemon it leaves behind is found by this run's unique directory.
            foreach (var pid in ProcessCpu.FindPids(dir))
            {
                try { using var p = Process.GetProcessById(pid); p.Kill(); p.WaitForExit(5000); }
                catch (ArgumentException) { }
                catch (InvalidOperationException) { }
            }
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
        using var cleanUp = Interruption.Register(CleanUp);
        try
        {
            var mailbox = Path.Combine(dir, "mailbox");
            WriteMailbox(mailbox, "i");
            var exe = vdevPath ?? GuestBackend.ResolveVdev();
            var vdev = GuestBackend.Vdev(exe);
            string? socket = null;
            var backend = new GuestBackend("vdev", ctx =>
            {
                socket = ctx.SocketPath;
                return vdev.CreateStartInfo(ctx);
            });
            var errors = new List<string>();
            var ctlMs = new List<double>();
            Thread? driver = null;
            Console.WriteLine($"guest: TCG, 512 MiB, 1 request queue, cache=auto; {restarts} restarts {spacingMs} ms apart; vdev {exe}");
            var result = GuestVm.Run(GuestVm.LoadScenario("restart-stall.sh"), [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(15),
                OnConsoleLine = line =>
                {
                    if (verbose) Console.WriteLine(line);
                    if (!line.Contains("@@HV val phase 1", StringComparison.Ordinal)) return;
                    driver = new Thread(() =>
                    {
                        try
                        {
                            Thread.Sleep(spacingMs);
                            for (int n = 0; n < restarts; n++)
                            {
                                WriteMailbox(mailbox, $"b {n}");
                                var sw = Stopwatch.StartNew();
                                var (code, text) = Ctl(exe, ["--socket", socket + ".ctl", "--timeout", "60", "restart"]);
                                sw.Stop();
                                WriteMailbox(mailbox, $"d {n}");
                                if (code != 0) { lock (errors) errors.Add($"restart {n}: vdev ctl restart exited {code}: {text}"); break; }
                                lock (ctlMs) ctlMs.Add(sw.Elapsed.TotalMilliseconds);
                                if (verbose) Console.WriteLine($"restart {n}: {text.Trim()} ({sw.Elapsed.TotalMilliseconds:F0} ms)");
                                Thread.Sleep(spacingMs);
                            }
                        }
                        catch (Exception e) { lock (errors) errors.Add(e.ToString()); }
                        finally { WriteMailbox(mailbox, "s"); }
                    }) { IsBackground = true };
                    driver.Start();
                },
            });
            driver?.Join(TimeSpan.FromMinutes(5));
            if (errors.Count > 0 || !result.Succeeded)
            {
                Console.Error.WriteLine(string.Join('\n', errors));
                Console.Error.WriteLine(result.Describe());
                return 1;
            }

            var guestMs = new List<double>();
            double idleMs = double.NaN;
            long idleReads = 0;
            foreach (var line in result.Values("stall"))
            {
                var f = line.Split(' ');
                if (f.Length != 3) continue;
                double ms = long.Parse(f[1], CultureInfo.InvariantCulture) / 1e6;
                if (f[0] == "idle") { idleMs = ms; idleReads = long.Parse(f[2], CultureInfo.InvariantCulture); }
                else guestMs.Add(ms);
            }
            var vdevMs = new List<double>();
            var log = result.ProcessLogs.First(kv => kv.Key.StartsWith("vdev[", StringComparison.Ordinal)).Value;
            const string marker = "waited at most ";
            foreach (var l in log.Split('\n'))
            {
                int at = l.IndexOf(marker, StringComparison.Ordinal);
                if (at < 0) continue;
                var rest = l[(at + marker.Length)..];
                vdevMs.Add(double.Parse(rest[..rest.IndexOf(' ')], CultureInfo.InvariantCulture));
            }

            var table = new StringBuilder();
            table.AppendLine("| restart | guest: longest gap between reads (ms) | vdev: requests waited at most (ms) | `vdev ctl restart` call (ms) |");
            table.AppendLine("| ---: | ---: | ---: | ---: |");
            for (int n = 0; n < Math.Max(guestMs.Count, ctlMs.Count); n++)
                table.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {n} | {Cell(guestMs, n)} | {Cell(vdevMs, n)} | {Cell(ctlMs, n)} |"));
            table.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| median | {Median(guestMs):F1} | {Median(vdevMs):F1} | {Median(ctlMs):F0} |"));
            Console.Write(table);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"outside restarts: longest gap {idleMs:F1} ms over {idleReads} reads; restarts seen by the guest: {guestMs.Count} of {restarts}"));
            return guestMs.Count == restarts ? 0 : 1;
        }
        finally
        {
            CleanUp();
        }
    }

    private static string Cell(List<double> values, int n) =>
        n < values.Count ? values[n].ToString("F1", CultureInfo.InvariantCulture) : "-";

    private static double Median(List<double> values)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToList();
        int mid = sorted.Count / 2;
        return sorted.Count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    /// <summary>Rewrites the mailbox in place at its constant size of 4 KiB (an O_DIRECT read stops at the size the guest caches).</summary>
    private static void WriteMailbox(string path, string text)
    {
        var block = new byte[4096];
        Array.Fill(block, (byte)' ');
        Encoding.ASCII.GetBytes(text).CopyTo(block, 0);
        using var f = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite);
        f.Write(block);
        f.Flush(flushToDisk: true);
    }

    private static (int Code, string Output) Ctl(string exe, string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("ctl");
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"{exe} could not be started.");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromSeconds(90)))
        {
            p.Kill();
            p.WaitForExit();
            return (-1, "timed out after 90 s");
        }
        return (p.ExitCode, stdout.Result + stderr);
    }
}
