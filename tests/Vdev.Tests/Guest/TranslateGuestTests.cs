using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// <c>--translate-uid</c> / <c>--translate-gid</c> in a real guest (tests/guest/scenarios/translate.sh): every rule form
/// in one boot, checked from both sides: the owners the guest sees for files the host made (by stat and in a listing),
/// the owners the host sees for files the guest chowned or created as another user, and forbid-guest ids refused with
/// EPERM, leaving nothing behind on the host. QEMU's C virtiofsd has no id translation, so there is no reference run;
/// the same rules on the daemon's /dev/fuse mount are Passthrough.Tests' MountIdTranslationTests. The guest kernel (6.1)
/// predates FUSE_CREATE_SUPP_GROUP, which that class covers with the host's kernel. Needs root, QEMU and the guest kernel.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class TranslateGuestTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);

    private static readonly string[] Rules =
    [
        "--translate-uid", "map:1000:2000:10", "--translate-uid", "squash-host:5000:65534:100", "--translate-uid", "forbid-guest:4000:10",
        "--translate-gid", "squash-guest:500:7000:100", "--translate-gid", "guest:100:200:5", "--translate-gid", "host:300:400:5",
        "--translate-gid", "forbid-guest:4000:10",
    ];

    [Fact]
    public void Translate_Vdev_EveryFormMapsOwnersBothWays_ForbiddenIdsGetEperm()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-translate-").FullName;
        string? socket = null;
        string? status = null;
        var vdev = GuestBackend.Vdev(extraArgs: Rules);
        var backend = new GuestBackend("vdev", ctx =>
        {
            socket = ctx.SocketPath;
            return vdev.CreateStartInfo(ctx);
        });
        try
        {
            foreach (var (name, owner) in new[] { ("h-map", "2005:0"), ("h-squash", "5050:302"), ("h-guest", "1102:202"), ("h-none", "1003:7000") })
            {
                File.WriteAllText(Path.Combine(dir, name), name);
                Host("chown", owner, Path.Combine(dir, name));
            }
            // Guest users other than root must reach pub/ through the share's root (a temporary directory is 0700).
            File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
            Directory.CreateDirectory(Path.Combine(dir, "pub"));
            File.SetUnixFileMode(Path.Combine(dir, "pub"), (UnixFileMode)0b111_111_111);

            var scenario = GuestVm.LoadScenario("translate.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(3),
                OnConsoleLine = line =>
                {
                    // While the share is mounted: the operator's view of the rules.
                    if (status is null && line.Contains("@@HV ok mount", StringComparison.Ordinal))
                        status = HostProcesses.Run(GuestBackend.ResolveVdev(), ["ctl", "--socket", socket + ".ctl", "status"], CommandTimeout).ToString();
                },
            });
            output.WriteLine(result.Describe());
            GuestScenarios.AssertAllChecksPassed(result, scenario);

            // The guest's view of what the host made: map back, squash-host, host; guest rules never apply this way.
            string[] seen = ["h-map 1005:0", "h-squash 65534:402", "h-guest 1102:202", "h-none 1003:7000"];
            Assert.Equal(seen, result.Values("seen"));
            Assert.Equal(seen.Order(StringComparer.Ordinal), result.Values("listed")); // ls sorts by name
            Assert.Equal(
            [
                "c-map 1003:0", "c-squash 0:7000", "c-guest 0:202", "c-none 77:88",
                "u-file ok", "u-dir ok", "u-fifo ok", "u-link ok",
                "u-file 1002:201", "u-dir 1002:201", "u-fifo 1002:201", "u-link 1002:201", "u-hard 1002:201",
            ], result.Values("made"));
            Assert.Equal(["uid EPERM", "gid EPERM", "chown-uid 1", "chown-gid 1", "c-none 77:88"], result.Values("forbidden"));

            // The host's view of what the guest made.
            foreach (var (name, owner) in new[]
            {
                ("c-map", "2003:0"), ("c-squash", "0:7000"), ("c-guest", "0:202"), ("c-none", "77:88"),
                ("u-file", "2002:201"), ("u-dir", "2002:201"), ("u-fifo", "2002:201"), ("u-link", "2002:201"),
            })
                Assert.Equal($"{name} {owner}", $"{name} {Host("stat", "-c", "%u:%g", Path.Combine(dir, "pub", name)).Trim()}");
            Assert.False(Path.Exists(Path.Combine(dir, "pub", "f-uid")));
            Assert.False(Path.Exists(Path.Combine(dir, "pub", "f-gid")));

            Assert.NotNull(status);
            Assert.Contains("--translate-uid map:1000:2000:10 --translate-uid squash-host:5000:65534:100 --translate-uid forbid-guest:4000:10 "
                + "--translate-gid squash-guest:500:7000:100 --translate-gid guest:100:200:5 --translate-gid host:300:400:5 --translate-gid forbid-guest:4000:10", status);
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string Host(string command, params string[] args)
    {
        var outcome = HostProcesses.Run(command, args, CommandTimeout);
        if (outcome.ExitCode != 0) throw new InvalidOperationException($"{command} {string.Join(' ', args)} failed: {outcome}");
        return outcome.Stdout;
    }
}
