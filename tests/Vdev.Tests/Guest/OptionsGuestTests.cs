using System.Security.Cryptography;
using System.Text.Json;
using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// virtiofsd options seen from both sides in one boot (tests/guest/scenarios/options.sh), each against a share
/// without it: <c>--preserve-noatime</c> (the guest's O_NOATIME read leaves the host's atime, where the share without
/// it updates it), <c>--no-readdirplus</c> (the guest lists a directory through READDIR only, as the daemon's
/// counters show) and <c>--thread-pool-size 2</c> (the daemon runs requests on two pool threads; the data the guest
/// wrote through them is intact). QEMU's C virtiofsd has none of the three in this form, so there is no reference
/// run. <c>--allow-mmap</c> needs FUSE_DIRECT_IO_ALLOW_MMAP, which the guest kernel (6.1) predates: the daemon's
/// /dev/fuse mount shows it (Passthrough.Tests' MountOptionsTests). Needs root, QEMU and the guest kernel.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class OptionsGuestTests(ITestOutputHelper output)
{
    private static readonly DateTime OldAtime = new(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public void PreserveNoatime_NoReaddirplus_AndAThreadPool_DoWhatTheySay_BesideAShareWithoutThem()
    {
        var root = Directory.CreateTempSubdirectory("hvg-options-").FullName;
        var sockets = new Dictionary<string, string>();
        JsonElement? statusA = null, statusB = null;
        List<string>? threadsA = null, threadsB = null;
        try
        {
            var dirs = new Dictionary<string, string>();
            foreach (var s in new[] { "a", "b" })
            {
                var dir = Directory.CreateDirectory(Path.Combine(root, s)).FullName;
                dirs[s] = dir;
                File.WriteAllText(Path.Combine(dir, "old.txt"), "old\n");
                File.SetLastAccessTimeUtc(Path.Combine(dir, "old.txt"), OldAtime);
                Directory.CreateDirectory(Path.Combine(dir, "many"));
                for (int i = 0; i < 50; i++) File.WriteAllText(Path.Combine(dir, "many", $"f{i:00}"), "x");
                GuestScenarios.WriteMailbox(Path.Combine(dir, "mailbox"), "wait");
            }
            GuestBackend Backend(string share, params string[] extra) => new("vdev", ctx =>
            {
                sockets[share] = ctx.SocketPath;
                return GuestBackend.Vdev(cache: "never", extraArgs: ["--direct-io", .. extra]).CreateStartInfo(ctx);
            });
            var scenario = GuestVm.LoadScenario("options.sh");
            var result = GuestVm.Run(scenario,
            [
                new GuestShare("opted", dirs["a"], Backend("a", "--preserve-noatime", "--no-readdirplus", "--thread-pool-size", "2")),
                new GuestShare("plain", dirs["b"], Backend("b")),
            ], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(3),
                OnConsoleLine = line =>
                {
                    if (!line.Contains("@@HV val phase 1", StringComparison.Ordinal)) return;
                    statusA = Status(sockets["a"]);
                    statusB = Status(sockets["b"]);
                    threadsA = DaemonThreads(dirs["a"]);
                    threadsB = DaemonThreads(dirs["b"]);
                    GuestScenarios.WriteMailbox(Path.Combine(dirs["a"], "mailbox"), "go1");
                },
            });
            output.WriteLine($"boot {result.BootSeconds:0.00} s, whole run {result.Elapsed.TotalSeconds:0.0} s");
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            var ops = result.Values("op").ToList();
            Assert.Equal(["a.noatime x ok", "a.list 50", "b.noatime x ok", "b.list 50"], ops);

            // --preserve-noatime: the host's atime stays; without it the daemon drops O_NOATIME and the read sets it.
            Assert.Equal(OldAtime, File.GetLastAccessTimeUtc(Path.Combine(dirs["a"], "old.txt")));
            Assert.True(File.GetLastAccessTimeUtc(Path.Combine(dirs["b"], "old.txt")) > OldAtime.AddYears(10),
                "the read through the share without --preserve-noatime left the host's atime");

            // --no-readdirplus: the listing came through READDIR alone; the other share used READDIRPLUS.
            Assert.NotNull(statusA);
            Assert.Equal(0, Requests(statusA!.Value, "READDIRPLUS"));
            Assert.True(Requests(statusA.Value, "READDIR") > 0, "share a listed its directory without READDIR");
            Assert.True(Requests(statusB!.Value, "READDIRPLUS") > 0, "share b did not use READDIRPLUS");

            // --thread-pool-size 2: two pool threads in the daemon of share a, none in share b's.
            Assert.Equal(["ring-pool-0", "ring-pool-1"], threadsA!.Where(t => t.StartsWith("ring-pool", StringComparison.Ordinal)).Order().ToList());
            Assert.DoesNotContain(threadsB!, t => t.StartsWith("ring-pool", StringComparison.Ordinal));
            Assert.Equal(2u, statusA.Value.GetProperty("settings").GetProperty("thread_pool_size").GetUInt32());

            var data = GuestScenarios.Pattern(8, 7);
            var sha = Convert.ToHexStringLower(SHA256.HashData(data));
            foreach (var s in new[] { "a", "b" })
            {
                Assert.Equal(sha, result.Value($"{s}.sha"));
                Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dirs[s], "data.bin"))), $"data.bin of share {s} differs on the host");
            }
        }
        finally
        {
            foreach (var s in new[] { "a", "b" })
                foreach (var pid in HostProcesses.FindPassthroughDaemons(Path.Combine(root, s))) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(root, recursive: true);
        }
    }

    private static JsonElement Status(string socket)
    {
        var run = HostProcesses.Run(GuestBackend.ResolveVdev(), ["ctl", "--socket", socket + ".ctl", "status", "--json"], TimeSpan.FromSeconds(30));
        Assert.True(run.ExitCode == 0, run.ToString());
        return JsonDocument.Parse(run.Stdout).RootElement.Clone();
    }

    private static long Requests(JsonElement status, string opcode)
    {
        foreach (var c in status.GetProperty("opcodes").EnumerateArray())
            if (c.GetProperty("name").GetString() == opcode) return c.GetProperty("requests").GetInt64();
        return 0;
    }

    private static List<string> DaemonThreads(string dir)
    {
        var pid = Assert.Single(HostProcesses.FindPassthroughDaemons(dir));
        return [.. Directory.GetDirectories($"/proc/{pid}/task").Select(t => File.ReadAllText(Path.Combine(t, "comm")).Trim())];
    }
}
