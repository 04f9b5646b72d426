using System.Diagnostics;
using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// Byte-range and flock locks in a real guest (tests/guest/scenarios/locks.sh): stress-ng's lock stressors finish,
/// two guest processes' locks behave as on the guest's own tmpfs, and through the vdev a guest waits behind a host
/// process's lock until the host releases it. QEMU's virtiofsd (remote POSIX locks off by default, so the guest
/// kernel keeps locks to itself) runs the guest-only part as the reference. Needs root, QEMU, the guest kernel and
/// stress-ng.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class LockGuestTests(ITestOutputHelper output)
{
    [Fact]
    public void Locks_Vdev_StressNgFinishes_TwoGuestProcessesConflictLocally_GuestWaitsBehindAHostLock()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-locks-").FullName;
        var errors = new List<string>();
        var host = new Dictionary<int, string>();
        FileStream? held = null;
        var mailbox = Path.Combine(dir, "mailbox");
        var target = Path.Combine(dir, "host.txt");
        try
        {
            File.WriteAllText(target, "host-locked\n");
            GuestScenarios.WriteMailbox(mailbox, "wait");
            var scenario = GuestVm.LoadScenario("locks.sh");
            var sw = Stopwatch.StartNew();
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, GuestBackend.Vdev())], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(6),
                Environment = new Dictionary<string, string> { ["HV_HOSTLOCKS"] = "1" },
                OnConsoleLine = line =>
                {
                    const string prefix = "@@HV val phase ";
                    var at = line.IndexOf(prefix, StringComparison.Ordinal);
                    if (at < 0 || !int.TryParse(line.AsSpan(at + prefix.Length).Trim(), out var phase)) return;
                    try
                    {
                        switch (phase)
                        {
                            case 1 or 4:
                                // A POSIX lock of this (host) process: it conflicts with the daemon's OFD locks.
                                held = new FileStream(target, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
                                held.Lock(0, 1);
                                break;
                            case 2 or 5:
                                held!.Unlock(0, 1);
                                held.Dispose();
                                held = null;
                                break;
                            case 3 or 6:
                                host[phase] = TryLockOnHost(target);
                                break;
                        }
                        output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: phase {phase}{(host.TryGetValue(phase, out var r) ? ": " + r : "")}");
                    }
                    catch (Exception e) { lock (errors) errors.Add($"phase {phase}: {e}"); }
                    GuestScenarios.WriteMailbox(mailbox, "go" + phase);
                },
            });
            output.WriteLine(Summary(result));
            Assert.True(errors.Count == 0, "the host side failed: " + string.Join("\n", errors) + "\n" + result.Describe());
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            // While the guest held the lock the host could not take it; after the killed waiter left, it could.
            Assert.Equal("busy", host.GetValueOrDefault(3));
            Assert.Equal("locked", host.GetValueOrDefault(6));
            Assert.Equal("gone", result.Value("killed_after"));
            Assert.Equal("w 0 10 HOLDER", result.Value("two_getlk"));
            Assert.Equal("parent=0 child=35", result.Value("two_deadlock"));
        }
        finally
        {
            held?.Dispose();
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Locks_Virtiofsd_Reference_StressNgFinishes_TwoGuestProcessesConflictLocally()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-locks-ref-").FullName;
        try
        {
            var scenario = GuestVm.LoadScenario("locks.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, GuestBackend.Virtiofsd())], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(6),
            });
            output.WriteLine(Summary(result));
            // HV_HOSTLOCKS is unset, so every check of the scenario that runs is one that must pass.
            GuestScenarios.AssertAllChecksPassed(result, scenario.Split("if [ \"${HV_HOSTLOCKS:-0}\" = 1 ]")[0]);
            Assert.Equal("parent=0 child=35", result.Value("two_deadlock"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string Summary(GuestResult result) =>
        $"stress-ng ms: lockf {result.Value("stress_lockf_ms")}, flock {result.Value("stress_flock_ms")}, " +
        $"fcntl {result.Value("stress_fcntl_ms")}, all three {result.Value("stress_all_ms")}; a waiter killed behind a guest " +
        $"lock left after {result.Value("killed_guest_waiter_ms")} ms; one killed behind a host lock: " +
        $"{result.Value("killed_state")} then {result.Value("killed_after")}; whole run {result.Elapsed.TotalSeconds:0.0} s";

    /// <summary>"locked" when this process could take (and then dropped) a write lock on byte 0, "busy" when not.</summary>
    private static string TryLockOnHost(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        try
        {
            f.Lock(0, 1);
        }
        catch (IOException)
        {
            return "busy";
        }
        f.Unlock(0, 1);
        return "locked";
    }
}
