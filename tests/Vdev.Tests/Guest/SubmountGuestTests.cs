using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// Host mounts inside a share as the guest sees them (tests/guest/scenarios/submounts.sh): a tmpfs mounted below the
/// shared directory before the backend starts reaches the guest as a submount with its own st_dev when submounts are
/// announced (the vdev's default; QEMU's virtiofsd with <c>-o announce_submounts</c> is the reference), and with the
/// share's st_dev when they are not (<c>--no-announce-submounts</c>). The vdev's daemon serves the share pivoted into
/// it in its own mount namespace, so this also proves the tmpfs is visible there.
/// </summary>
[Trait("Category", "Guest")]
[Trait("Category", "Root")]
[Collection(GuestVm.Collection)]
public sealed class SubmountGuestTests(ITestOutputHelper output)
{
    public static TheoryData<string, bool> Backends => new()
    {
        { "vdev", true },
        { "vdev --no-announce-submounts", false },
        { "vdev --inode-file-handles=mandatory", true },
        { "virtiofsd -o announce_submounts", true },
    };

    [Theory]
    [MemberData(nameof(Backends))]
    public void ATmpfsInsideTheShare_HasItsOwnDeviceNumberInTheGuest_OnlyWhenSubmountsAreAnnounced(string backendName, bool announced)
    {
        var backend = backendName switch
        {
            "vdev" => GuestBackend.Vdev(),
            "vdev --no-announce-submounts" => GuestBackend.Vdev(extraArgs: "--no-announce-submounts"),
            "vdev --inode-file-handles=mandatory" => GuestBackend.Vdev(extraArgs: "--inode-file-handles=mandatory"),
            _ => GuestBackend.Virtiofsd(extraArgs: ["-o", "announce_submounts"]),
        };
        var dir = Directory.CreateTempSubdirectory("hvg-submount-").FullName;
        var sub = Path.Combine(dir, "sub");
        Directory.CreateDirectory(sub);
        Directory.CreateDirectory(Path.Combine(dir, "plain"));
        File.WriteAllText(Path.Combine(dir, "plain", "g.txt"), "on-share\n");
        var mounted = HostProcesses.Run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "hvg-submount", sub], TimeSpan.FromSeconds(30));
        Assert.True(mounted.ExitCode == 0, $"mounting a tmpfs at {sub} failed: {mounted}");
        try
        {
            File.WriteAllText(Path.Combine(sub, "f.txt"), "on-tmpfs\n");
            var scenario = GuestVm.LoadScenario("submounts.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)]);
            output.WriteLine($"{backendName}: share st_dev {result.Value("share_dev")}, plain/ {result.Value("plain_dev")}, sub/ {result.Value("sub_dev")}, " +
                $"sub/f.txt {result.Value("subfile_dev")}; /proc/mounts lists sub/ as '{result.Value("sub_mounted")}'; whole run {result.Elapsed.TotalSeconds:0.0} s");
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            Assert.Equal(result.Value("share_dev"), result.Value("plain_dev"));
            Assert.Equal(result.Value("sub_dev"), result.Value("subfile_dev"));
            if (announced)
            {
                Assert.NotEqual(result.Value("share_dev"), result.Value("sub_dev"));
                Assert.Equal("virtiofs", result.Value("sub_mounted"));
            }
            else
            {
                Assert.Equal(result.Value("share_dev"), result.Value("sub_dev"));
                Assert.Equal("", result.Value("sub_mounted") ?? "");
            }
            Assert.Equal("from-guest\n", File.ReadAllText(Path.Combine(sub, "guest.txt")));
        }
        finally
        {
            HostProcesses.Run("/usr/bin/umount", ["-l", sub], TimeSpan.FromSeconds(30));
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }
}
