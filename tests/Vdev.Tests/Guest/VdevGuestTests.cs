using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// End-to-end proofs of what the vdev adds over a plain virtiofsd, each with a real Linux guest (QEMU,
/// TCG): one <c>vdev --config</c> process serving two devices, direct I/O switched over gRPC while the
/// guest runs, the death of a share's daemon, and the vdev started exactly as libvirt starts virtiofsd.
/// Every check runs in the guest (tests/guest/scenarios) and again on the host; every process started
/// here (backends, QEMU, <c>vdev ctl</c>, left-over daemons) is ended by pid. Needs root, qemu-system-x86,
/// linux-image-cloud-amd64 and a built vdev.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class VdevGuestTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CtlTimeout = TimeSpan.FromSeconds(30);

    [Fact]
    public void TwoShares_FromOneVmConfigFile_OneVdevProcessServesBoth()
    {
        string? config = null;
        var leftovers = new List<int>();
        try
        {
            var result = GuestScenarios.RunTwoSharesOneProcess(
                GuestMultiBackend.VdevConfig(configWritten: (_, text) => config = text), output.WriteLine,
                (result, a, b) =>
                {
                    // One backend process (the vdev) plus QEMU, and the vdev started a daemon for each block.
                    Assert.Equal(2, result.ProcessIds.Count);
                    var log = Assert.Single(result.ProcessLogs, kv => kv.Key.StartsWith("vdev[", StringComparison.Ordinal)).Value;
                    Assert.Contains("share 'sharea': daemon", log);
                    Assert.Contains("share 'shareb': daemon", log);
                    output.WriteLine(log.Contains("[killed by the guest harness", StringComparison.Ordinal)
                        ? "the vdev was still running 5 s after QEMU exited and was killed"
                        : "the vdev exited by itself after QEMU disconnected");
                    Assert.Contains("host_path " + a, config);
                    Assert.Contains("host_path " + b, config);
                    leftovers.AddRange(HostProcesses.FindPassthroughDaemons(a));
                    leftovers.AddRange(HostProcesses.FindPassthroughDaemons(b));
                });
            Assert.True(leftovers.Count == 0, $"passthrough daemons {string.Join(", ", leftovers)} still run after the vdev was stopped.");
        }
        finally
        {
            foreach (var pid in leftovers) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
        }
    }

    [Fact]
    public void DirectIo_ToggledOverGrpcWhileTheGuestRuns_NextOpenReadsTheHostsNewData()
    {
        string? socket = null;
        var vdev = GuestBackend.Vdev(cache: "always");
        var backend = new GuestBackend("vdev", ctx =>
        {
            socket = ctx.SocketPath;
            return vdev.CreateStartInfo(ctx);
        });
        HostProcesses.Outcome? toggle = null, status = null;
        var run = RunDirectIoExperiment(backend, toggle: true, onPhase2: () =>
        {
            var ctl = socket + ".ctl";
            var exe = GuestBackend.ResolveVdev();
            toggle = HostProcesses.Run(exe, ["ctl", "--socket", ctl, "direct-io", "on"], CtlTimeout);
            status = HostProcesses.Run(exe, ["ctl", "--socket", ctl, "--json", "status"], CtlTimeout);
        });

        Assert.Equal(DataB, run.Value("third_read"));
        Assert.NotNull(toggle);
        Assert.True(toggle.Value.ExitCode == 0, $"vdev ctl direct-io on failed: {toggle}");
        Assert.Contains("direct-io on", toggle.Value.Stdout);
        Assert.NotNull(status);
        Assert.True(status.Value.ExitCode == 0, $"vdev ctl --json status failed: {status}");
        using var json = JsonDocument.Parse(status.Value.Stdout);
        var options = json.RootElement.GetProperty("options");
        Assert.True(options.GetProperty("direct_io").GetBoolean(), $"status after the toggle: {status.Value.Stdout}");
        Assert.Equal("always", options.GetProperty("cache").GetString());
    }

    [Fact]
    public void CacheAlways_StaleReadAfterHostRewrite_IsTheGuestsOwnBehaviour_WithVirtiofsd()
    {
        // The reference daemon with the same policy shows the same stale read, so the step the vdev test
        // relies on is the guest kernel's caching and not something the vdev does.
        RunDirectIoExperiment(GuestBackend.Virtiofsd(cache: "always"), toggle: false, onPhase2: null);
    }

    [Fact]
    public void DaemonDeath_WithRelaunchOff_GuestGetsEioPromptly_AndVdevSaysSo()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-death-").FullName;
        var killed = new List<int>();
        var errors = new List<string>();
        try
        {
            File.WriteAllText(Path.Combine(dir, "hello.txt"), "hello\n");
            File.WriteAllText(Path.Combine(dir, "never-read.txt"), "never read before the daemon died\n");
            var scenario = GuestVm.LoadScenario("daemon-death.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, GuestBackend.Vdev(extraArgs: "--no-relaunch"))], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(3),
                OnConsoleLine = line =>
                {
                    if (!line.Contains("@@HV val phase 1", StringComparison.Ordinal)) return;
                    try
                    {
                        var pids = HostProcesses.FindPassthroughDaemons(dir);
                        if (pids.Count != 1) { lock (errors) errors.Add($"expected one passthrough daemon for {dir}, found [{string.Join(", ", pids)}]"); return; }
                        lock (killed) killed.Add(pids[0]);
                        if (!HostProcesses.KillAndWait(pids[0], TimeSpan.FromSeconds(10))) lock (errors) errors.Add($"daemon {pids[0]} survived SIGKILL for 10 s");
                    }
                    catch (Exception e) { lock (errors) errors.Add(e.ToString()); }
                },
            });
            output.WriteLine($"killed daemon {string.Join(",", killed)}; first error after {result.Value("seconds_to_error")} s " +
                $"({result.Value("probes")} probes): {result.Value("first_error")}; read: {result.Value("read_error")} in {result.Value("read_seconds")} s; " +
                $"umount: {result.Value("umount")}; whole run {result.Elapsed.TotalSeconds:0.0} s");
            Assert.True(errors.Count == 0, string.Join("\n", errors) + "\n" + result.Describe());
            Assert.Single(killed);
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            Assert.Contains("alive.enoent", result.Passed);
            Assert.True(double.Parse(result.Value("seconds_to_error")!, System.Globalization.CultureInfo.InvariantCulture) < 10,
                $"the guest saw the first error only after {result.Value("seconds_to_error")} s.\n{result.Describe()}");
            Assert.True(double.Parse(result.Value("read_seconds")!, System.Globalization.CultureInfo.InvariantCulture) < 5,
                $"reading after the daemon died took {result.Value("read_seconds")} s.\n{result.Describe()}");

            var log = Assert.Single(result.ProcessLogs, kv => kv.Key.StartsWith("vdev[", StringComparison.Ordinal)).Value;
            var gone = log.Split('\n').Where(l => l.Contains("the FUSE daemon is gone", StringComparison.Ordinal)).ToList();
            Assert.True(gone.Count == 1, $"the vdev should log exactly one line about the daemon's death; it logged {gone.Count}:\n{log}");
            output.WriteLine("vdev: " + gone[0].Trim());
            // The host file the guest could not reach is untouched.
            Assert.Equal("never read before the daemon died\n", File.ReadAllText(Path.Combine(dir, "never-read.txt")));
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void DaemonKilledThreeTimes_WhileTheGuestWritesAndReads_GuestKeepsItsMount_AndTheHostHasWhatItWrote()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-crash-").FullName;
        var killed = new List<int>();
        var errors = new List<string>();
        string? socket = null;
        HostProcesses.Outcome? status = null;
        var vdev = GuestBackend.Vdev();
        var backend = new GuestBackend("vdev", ctx =>
        {
            socket = ctx.SocketPath;
            return vdev.CreateStartInfo(ctx);
        });
        try
        {
            File.WriteAllText(Path.Combine(dir, "hello.txt"), "hello\n");
            var scenario = GuestVm.LoadScenario("crash-recovery.sh");
            Thread? killer = null;
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(8),
                OnConsoleLine = line =>
                {
                    if (!line.Contains("@@HV val phase 1", StringComparison.Ordinal)) return;
                    killer = new Thread(() =>
                    {
                        try
                        {
                            for (int round = 0; round < 3; round++)
                            {
                                Thread.Sleep(TimeSpan.FromSeconds(4));
                                // The daemon serving now: a new one after each kill (wait for it to be there).
                                int pid = -1;
                                var deadline = Stopwatch.StartNew();
                                while (deadline.Elapsed < TimeSpan.FromSeconds(20))
                                {
                                    var pids = HostProcesses.FindPassthroughDaemons(dir).Where(p => !killed.Contains(p)).ToList();
                                    if (pids.Count == 1) { pid = pids[0]; break; }
                                    Thread.Sleep(100);
                                }
                                if (pid < 0) { lock (errors) errors.Add($"round {round}: no new passthrough daemon for {dir}"); break; }
                                lock (killed) killed.Add(pid);
                                if (!HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(10))) lock (errors) errors.Add($"daemon {pid} survived SIGKILL for 10 s");
                            }
                            Thread.Sleep(TimeSpan.FromSeconds(4));
                            status = HostProcesses.Run(GuestBackend.ResolveVdev(), ["ctl", "--socket", socket + ".ctl", "--json", "status"], CtlTimeout);
                        }
                        catch (Exception e) { lock (errors) errors.Add(e.ToString()); }
                        finally { File.WriteAllText(Path.Combine(dir, "stop"), ""); }
                    }) { IsBackground = true };
                    killer.Start();
                },
            });
            killer?.Join(TimeSpan.FromMinutes(2));
            output.WriteLine($"killed daemons {string.Join(",", killed)}; crashload (rounds eio_create errors): {result.Value("crashload")}; " +
                $"its first errors: {result.Value("crashload_log")}; whole run {result.Elapsed.TotalSeconds:0.0} s");
            Assert.True(errors.Count == 0, string.Join("\n", errors) + "\n" + result.Describe());
            Assert.True(killed.Count == 3, $"killed {killed.Count} daemons, not 3\n{result.Describe()}");
            GuestScenarios.AssertAllChecksPassed(result, scenario);

            // Every file the guest finished is on the host with the bytes it wrote.
            var counts = result.Value("crashload")!.Split(' ');
            long rounds = long.Parse(counts[0], System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(rounds > 3, $"the guest finished only {rounds} rounds.\n{result.Describe()}");
            var want = new byte[4 * 4096];
            for (long n = 0; n < rounds; n++)
            {
                for (int b = 0; b < 4; b++)
                    for (int k = 0; k < 4096; k++) want[b * 4096 + k] = (byte)((n * 131 + b * 7 + k) & 255);
                var file = Path.Combine(dir, "load", $"f{n:000000}");
                Assert.True(want.AsSpan().SequenceEqual(File.ReadAllBytes(file)), $"{file} differs from what the guest wrote");
            }

            var log = Assert.Single(result.ProcessLogs, kv => kv.Key.StartsWith("vdev[", StringComparison.Ordinal)).Value;
            var replaced = log.Split('\n').Where(l => l.Contains("was replaced by daemon", StringComparison.Ordinal)).ToList();
            foreach (var line in replaced) output.WriteLine("vdev: " + line.Trim());
            Assert.True(replaced.Count == 3, $"the vdev should have replaced the daemon 3 times:\n{log}");
            Assert.NotNull(status);
            Assert.True(status.Value.ExitCode == 0, $"vdev ctl --json status failed: {status}");
            using var json = JsonDocument.Parse(status.Value.Stdout);
            var restarts = json.RootElement.GetProperty("restarts");
            Assert.Equal(3, restarts.GetProperty("count").GetInt32());
            Assert.Contains("exited", restarts.GetProperty("last_cause").GetString(), StringComparison.Ordinal);
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void PlannedRestartThreeTimes_WhileTheGuestRunsFioRandomReadWrite_FioReportsNoErrorAndItsVerifyPasses()
    {
        // Issue 18's proof of a planned restart: a guest keeps doing verified random I/O through three daemon
        // replacements and sees no error at all (fio stops a job at its first I/O error or crc mismatch).
        var dir = Directory.CreateTempSubdirectory("hvg-restart-fio-").FullName;
        var errors = new List<string>();
        var replaced = new List<(int Old, int New, double GoneSeconds)>();
        string? socket = null;
        HostProcesses.Outcome? status = null;
        bool fioDone = false;
        var vdev = GuestBackend.Vdev();
        var backend = new GuestBackend("vdev", ctx =>
        {
            socket = ctx.SocketPath;
            return vdev.CreateStartInfo(ctx);
        });
        try
        {
            File.WriteAllText(Path.Combine(dir, "hello.txt"), "hello\n");
            var scenario = GuestVm.LoadScenario("restart-fio.sh");
            Thread? restarter = null;
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                WithFio = true,
                Timeout = TimeSpan.FromMinutes(8),
                // Three restarts eight seconds apart take well under a minute even on a loaded host; the test
                // checks below that each one ended while fio was still running.
                Environment = new Dictionary<string, string> { ["HV_FIO_SECONDS"] = "60" },
                OnConsoleLine = line =>
                {
                    if (line.Contains("@@HV val fio_done", StringComparison.Ordinal)) Volatile.Write(ref fioDone, true);
                    if (!line.Contains("@@HV val phase 1", StringComparison.Ordinal)) return;
                    restarter = new Thread(() =>
                    {
                        try
                        {
                            for (int round = 0; round < 3; round++)
                            {
                                Thread.Sleep(TimeSpan.FromSeconds(8));
                                var before = HostProcesses.FindPassthroughDaemons(dir);
                                if (before.Count != 1) { lock (errors) errors.Add($"round {round}: expected one daemon for {dir}, found [{string.Join(", ", before)}]"); break; }
                                var outcome = HostProcesses.Run(GuestBackend.ResolveVdev(),
                                    ["ctl", "--socket", socket + ".ctl", "--timeout", "60", "--json", "restart"], TimeSpan.FromSeconds(90));
                                if (Volatile.Read(ref fioDone)) lock (errors) errors.Add($"round {round}: the restart ended after fio had finished, not during its run");
                                if (outcome.ExitCode != 0) { lock (errors) errors.Add($"round {round}: vdev ctl restart failed: {outcome}"); break; }
                                int newPid = JsonDocument.Parse(outcome.Stdout).RootElement.GetProperty("new_pid").GetInt32();
                                if (newPid == before[0]) { lock (errors) errors.Add($"round {round}: the daemon pid did not change ({newPid})"); break; }
                                // The replaced daemon stops once its ring is closed (the vdev signals it after 5 s).
                                var gone = Stopwatch.StartNew();
                                while (HostProcesses.IsAlive(before[0]) && gone.Elapsed < TimeSpan.FromSeconds(15)) Thread.Sleep(50);
                                if (HostProcesses.IsAlive(before[0])) lock (errors) errors.Add($"round {round}: the replaced daemon {before[0]} still runs 15 s later");
                                lock (replaced) replaced.Add((before[0], newPid, gone.Elapsed.TotalSeconds));
                                var now = HostProcesses.FindPassthroughDaemons(dir);
                                if (now.Count != 1 || now[0] != newPid) lock (errors) errors.Add($"round {round}: vdev ctl restart named daemon {newPid}, but [{string.Join(", ", now)}] serve(s) {dir}");
                            }
                            status = HostProcesses.Run(GuestBackend.ResolveVdev(), ["ctl", "--socket", socket + ".ctl", "--json", "status"], CtlTimeout);
                        }
                        catch (Exception e) { lock (errors) errors.Add(e.ToString()); }
                    }) { IsBackground = true };
                    restarter.Start();
                },
            });
            restarter?.Join(TimeSpan.FromMinutes(4));

            var fioJson = string.Join('\n', result.Values("fio_json").SkipWhile(l => !l.StartsWith('{')));
            var report = $"fio exit status {result.Value("fio_done")}; its stderr: {result.Value("fio_stderr")}\nfio's report:\n{fioJson}\n{result.Describe()}";
            output.WriteLine($"replaced daemons {string.Join(", ", replaced.Select(r => $"{r.Old}->{r.New} (old one gone {r.GoneSeconds:0.00} s after the call returned)"))}; whole run {result.Elapsed.TotalSeconds:0.0} s");
            Assert.True(errors.Count == 0, string.Join("\n", errors) + "\n" + report);
            Assert.True(replaced.Count == 3, $"restarted {replaced.Count} times, not 3\n{report}");
            Assert.True(result.Value("fio_done") == "0", $"fio did not exit 0\n{report}");
            GuestScenarios.AssertAllChecksPassed(result, scenario);

            // Both jobs ran to their time limit with no I/O or verify error (fio stops a job at its first error
            // and reports its errno; a crc32c mismatch is EILSEQ), and both read and wrote.
            using var fio = JsonDocument.Parse(fioJson);
            var jobs = fio.RootElement.GetProperty("jobs").EnumerateArray().ToList();
            Assert.True(jobs.Count == 3, $"expected the direct, buffered and aio jobs\n{report}");
            foreach (var job in jobs)
            {
                var name = job.GetProperty("jobname").GetString();
                Assert.True(job.GetProperty("error").GetInt32() == 0, $"fio job {name} reports error {job.GetProperty("error")}\n{report}");
                long read = job.GetProperty("read").GetProperty("io_bytes").GetInt64();
                long written = job.GetProperty("write").GetProperty("io_bytes").GetInt64();
                Assert.True(read > 0 && written > 0, $"fio job {name} read {read} and wrote {written} bytes\n{report}");
                output.WriteLine($"fio {name}: read {read >> 20} MiB, wrote {written >> 20} MiB, error 0, " +
                    $"completion latency max {job.GetProperty("read").GetProperty("clat_ns").GetProperty("max").GetInt64() / 1e6:0.0} ms (read), " +
                    $"{job.GetProperty("write").GetProperty("clat_ns").GetProperty("max").GetInt64() / 1e6:0.0} ms (write)");
            }
            // The host holds every job's file at its full size.
            var files = Directory.GetFiles(Path.Combine(dir, "fio"));
            Assert.True(files.Length == 3 && files.All(f => new FileInfo(f).Length == 16 << 20), $"host files: {string.Join(", ", files.Select(f => $"{f} {new FileInfo(f).Length}"))}");

            var log = Assert.Single(result.ProcessLogs, kv => kv.Key.StartsWith("vdev[", StringComparison.Ordinal)).Value;
            // A replaced daemon that outlived its closed ring (the vdev ends it by signal after 5 s, vdev/README.md): its
            // story is in the log.
            if (replaced.Any(r => r.GoneSeconds > 1)) output.WriteLine("a replaced daemon lingered; the vdev's log:\n" + log);
            var planned = log.Split('\n').Where(l => l.Contains("planned restart: daemon", StringComparison.Ordinal)).ToList();
            foreach (var line in planned) output.WriteLine("vdev: " + line.Trim());
            Assert.True(planned.Count == 3, $"the vdev should have logged 3 planned restarts:\n{log}");
            Assert.NotNull(status);
            Assert.True(status.Value.ExitCode == 0, $"vdev ctl --json status failed: {status}");
            using var json = JsonDocument.Parse(status.Value.Stdout);
            var restarts = json.RootElement.GetProperty("restarts");
            Assert.Equal(3, restarts.GetProperty("count").GetInt32());
            Assert.Equal(3, restarts.GetProperty("planned").GetInt32());
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void LibvirtStyle_InheritedListeningFdAndDashO_GuestMountsReadsAndWrites()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-libvirt-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "host.txt"), "from-host\n");
            var scenario = GuestVm.LoadScenario("libvirt.sh");
            string? socket = null;
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, LibvirtStyleVdev(path => socket = path))]);
            output.WriteLine($"libvirt-style vdev: boot {result.BootSeconds:0.00} s, whole run {result.Elapsed.TotalSeconds:0.0} s");
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            // libvirt passes no tag: the control socket sits next to the socket libvirt bound.
            var log = result.ProcessLogs["vdev-libvirt[share0]"];
            Assert.Contains($"settings confirmed on {socket}.ctl", log);

            Assert.Equal("from-guest\n", File.ReadAllText(Path.Combine(dir, "dir", "guest.txt")));
            var data = GuestScenarios.Pattern(4, 4242);
            Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "dir", "data.bin"))), "data.bin on the host differs from what the guest wrote.");
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), result.Value("data_sha256"));
            var leftovers = HostProcesses.FindPassthroughDaemons(dir);
            Assert.True(leftovers.Count == 0, $"passthrough daemons {string.Join(", ", leftovers)} still run after the vdev was stopped.");
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void NotRoot_TheGuestReadsAndWrites_ThroughADaemonInAUserNamespace_AndItsFilesBelongToTheVdevsUser()
    {
        // A uid with no account and no capabilities; the daemon is root of its own user namespace, which maps that uid
        // to 0, so what the guest's root writes belongs to it on the host.
        const uint user = 4242;
        var dir = Directory.CreateTempSubdirectory("hvg-userns-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "host.txt"), "from-host\n");
            Chown(dir, user);
            Chown(Path.Combine(dir, "host.txt"), user);
            var backend = new GuestBackend("vdev-user", ctx =>
            {
                // The vdev's user creates the vhost-user socket in the boot's directory.
                Chown(Path.GetDirectoryName(ctx.SocketPath)!, user);
                var vdev = GuestBackend.Vdev().CreateStartInfo(ctx);
                var psi = new ProcessStartInfo("/usr/bin/setpriv");
                foreach (var a in new[] { $"--reuid={user}", $"--regid={user}", "--clear-groups", "--", vdev.FileName }) psi.ArgumentList.Add(a);
                foreach (var a in vdev.ArgumentList) psi.ArgumentList.Add(a);
                return psi;
            });
            var scenario = GuestVm.LoadScenario("libvirt.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)]);
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            Assert.Contains("Confined: sandbox Namespace", result.ProcessLogs["vdev-user[share0]"]);

            Assert.Equal("from-guest\n", File.ReadAllText(Path.Combine(dir, "dir", "guest.txt")));
            var data = GuestScenarios.Pattern(4, 4242);
            Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "dir", "data.bin"))), "data.bin on the host differs from what the guest wrote.");
            foreach (var path in new[] { "dir", "dir/guest.txt", "dir/data.bin" })
            {
                var stat = HostProcesses.Run("/usr/bin/stat", ["-c", "%u:%g", Path.Combine(dir, path)], TimeSpan.FromSeconds(10));
                Assert.Equal($"{user}:{user}", stat.Stdout.Trim());
            }
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }

        static void Chown(string path, uint id)
        {
            var chown = HostProcesses.Run("/bin/chown", [$"{id}:{id}", path], TimeSpan.FromSeconds(10));
            Assert.True(chown.ExitCode == 0, chown.ToString());
        }
    }

    [Fact]
    public void LibvirtStyle_TwoFilesystemsOfOneDomain_EachVdevGetsItsOwnControlSocket()
    {
        // libvirt starts one backend per <filesystem>, all with the same options and no tag; two of them must
        // be able to run side by side (their control sockets must not collide).
        GuestScenarios.RunTwoShares(LibvirtStyleVdev(), LibvirtStyleVdev(), output.WriteLine);
    }

    [Fact]
    public void LibvirtStyle_ThroughAWrapperWithMandatoryFileHandlesAndSubmounts_PassesTheBasicScenario()
    {
        // A common libvirt <binary path='…'/> wrapper: it adds options libvirt has no XML for and passes libvirt's on.
        var dir = Directory.CreateTempSubdirectory("hvg-wrapper-").FullName;
        try
        {
            var wrapper = Path.Combine(dir, "virtiofsd-wrapper");
            File.WriteAllText(wrapper, $"#!/bin/sh\nexec '{GuestBackend.ResolveVdev()}' --inode-file-handles=mandatory --announce-submounts \"$@\"\n");
            File.SetUnixFileMode(wrapper, (UnixFileMode)0b111_101_101);
            GuestScenarios.RunBasic(LibvirtStyleVdev(executable: wrapper), output.WriteLine);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// The vdev as libvirt 9.x starts virtiofsd (src/qemu/qemu_virtiofs.c): libvirt creates and binds the
    /// listening socket itself, passes it as <c>--fd=N</c>, and gives the share as one <c>-o</c> list
    /// (<c>source=DIR,cache=MODE,xattr</c> from &lt;source dir&gt;, &lt;cache mode&gt; and
    /// &lt;binary xattr='on'&gt;). .NET cannot hand a descriptor to a child, so /usr/bin/python3 binds
    /// the socket at the harness's path and execs the vdev in place (same pid, so it is ended by pid).
    /// </summary>
    private static GuestBackend LibvirtStyleVdev(Action<string>? socketPath = null, string? executable = null) => new("vdev-libvirt", ctx =>
    {
        socketPath?.Invoke(ctx.SocketPath);
        const string Wrapper = """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(sys.argv[1])
            s.listen(1)
            os.set_inheritable(s.fileno(), True)
            argv = [a.replace("@FD@", str(s.fileno())) for a in sys.argv[2:]]
            os.execv(argv[0], argv)
            """;
        var psi = new ProcessStartInfo("/usr/bin/python3");
        foreach (var a in new[] { "-c", Wrapper, ctx.SocketPath, executable ?? GuestBackend.ResolveVdev(), "--fd=@FD@", "-o", $"source={ctx.SharedDirectory},cache=auto,xattr" })
            psi.ArgumentList.Add(a);
        return psi;
    });

    private const string DataA = "AAAA-original-content-0001";
    private const string DataB = "BBBB-rewritten-by-host-002";

    /// <summary>
    /// Runs tests/guest/scenarios/direct-io-toggle.sh against <paramref name="backend"/>: at phase 1 the host
    /// rewrites data.txt in place (A → B, same size); at phase 2 (only when <paramref name="toggle"/>) it
    /// calls <paramref name="onPhase2"/> (which switches direct I/O on). Asserts the stale read, returns the result.
    /// </summary>
    private GuestResult RunDirectIoExperiment(GuestBackend backend, bool toggle, Action? onPhase2)
    {
        Assert.Equal(DataA.Length, DataB.Length);
        var dir = Directory.CreateTempSubdirectory("hvg-dio-").FullName;
        var errors = new List<string>();
        var mailbox = Path.Combine(dir, "mailbox");
        try
        {
            File.WriteAllText(Path.Combine(dir, "data.txt"), DataA);
            GuestScenarios.WriteMailbox(mailbox, "wait");
            var scenario = GuestVm.LoadScenario("direct-io-toggle.sh");
            var sw = Stopwatch.StartNew();
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(3),
                Environment = new Dictionary<string, string> { ["HV_A"] = DataA, ["HV_B"] = DataB, ["HV_TOGGLE"] = toggle ? "1" : "0" },
                OnConsoleLine = line =>
                {
                    try
                    {
                        if (line.Contains("@@HV val phase 1", StringComparison.Ordinal))
                        {
                            // In place, same size: only the data changes, as an editor writing in place would do.
                            using (var f = new FileStream(Path.Combine(dir, "data.txt"), FileMode.Open, FileAccess.Write))
                                f.Write(System.Text.Encoding.ASCII.GetBytes(DataB));
                            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: phase 1, data.txt rewritten");
                            GuestScenarios.WriteMailbox(mailbox, "go1");
                        }
                        else if (line.Contains("@@HV val phase 2", StringComparison.Ordinal))
                        {
                            onPhase2?.Invoke();
                            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: phase 2, direct I/O switched");
                            GuestScenarios.WriteMailbox(mailbox, "go2");
                        }
                    }
                    catch (Exception e) { lock (errors) errors.Add(e.ToString()); }
                },
            });
            output.WriteLine($"{backend.Name}: second read '{result.Value("second_read")}', third read '{result.Value("third_read")}', whole run {result.Elapsed.TotalSeconds:0.0} s");
            Assert.True(errors.Count == 0, "the host side failed: " + string.Join("\n", errors) + "\n" + result.Describe());
            Assert.Equal(DataB, File.ReadAllText(Path.Combine(dir, "data.txt")));
            Assert.Equal(DataA, result.Value("second_read"));
            if (toggle) GuestScenarios.AssertAllChecksPassed(result, scenario);
            else
            {
                Assert.True(result.Succeeded, result.Describe());
                foreach (var check in new[] { "mount", "read.first", "read.stale", "umount" })
                    Assert.True(result.Passed.Contains(check), $"check {check} did not pass.\n{result.Describe()}");
            }
            return result;
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }
}
