using System.Diagnostics;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>The guest harness itself: result parsing, failure reporting, timeouts and clean-up.</summary>
[Collection(GuestVm.Collection)]
public sealed class GuestVmTests
{
    [Fact]
    public void Parse_ReadsResultLines_EvenAfterKernelNoise()
    {
        var r = GuestResult.Parse(
        [
            "[    1.0] virtio_pci 0000:00:02.0: enabling device",
            "@@HV val boot_s 1.25",
            "@@HV ok mount",
            "[    1.2] fuse: something@@HV fail big.readback expected 'a' but got 'b'",
            "@@HV val rate 10 20",
            "@@HV val rate 30",
            "@@HV end 0",
        ], new Dictionary<string, string>(), TimeSpan.FromSeconds(3), timedOut: false, qemuExit: 0);

        Assert.Equal(["mount"], r.Passed);
        Assert.Equal([("big.readback", "expected 'a' but got 'b'")], r.Failed);
        Assert.Equal(1.25, r.BootSeconds);
        Assert.Equal(["10 20", "30"], r.Values("rate"));
        Assert.Equal("30", r.Value("rate"));
        Assert.Equal(0, r.ExitCode);
        Assert.False(r.Succeeded); // one check failed even though the scenario exited 0
        Assert.Contains("FAIL big.readback", r.Describe());
    }

    [Fact]
    public void Parse_WithoutEndLine_IsNotSuccess()
    {
        var r = GuestResult.Parse(["@@HV ok mount"], new Dictionary<string, string>(), TimeSpan.Zero, false, 0);
        Assert.Null(r.ExitCode);
        Assert.False(r.Succeeded);
    }

    [Fact]
    [Trait("Category", "Guest")]
    public void Run_ReportsScenarioFailuresAndExitCode()
    {
        var r = GuestVm.Run("hv_ok first\nhv_fail second 'went wrong'\nexit 3\n", []);
        Assert.Equal(3, r.ExitCode);
        Assert.Equal(["first"], r.Passed);
        Assert.Equal([("second", "went wrong")], r.Failed);
        Assert.False(r.TimedOut);
        Assert.True(r.BootSeconds is > 0 and < 60, r.Describe());
    }

    [Fact]
    [Trait("Category", "Guest")]
    public void Run_KillsEverythingItStarted_WhenTheGuestTimesOut()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-t-").FullName;
        try
        {
            var r = GuestVm.Run("hv_mount \"$HV_TAG0\" /mnt/s && hv_ok mounted\nsleep 100000\n",
                [new GuestShare("t0", dir, GuestBackend.Virtiofsd())],
                new GuestOptions { Timeout = TimeSpan.FromSeconds(40) });
            Assert.True(r.TimedOut, r.Describe());
            Assert.Null(r.ExitCode);
            Assert.Contains("mounted", r.Passed);
            Assert.Equal(2, r.ProcessIds.Count);
            foreach (var pid in r.ProcessIds)
            {
                Assert.False(Directory.Exists($"/proc/{pid}") && !IsZombieOrOther(pid), $"process {pid} is still running");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    [Trait("Category", "Guest")]
    public void Run_BackendThatExitsEarly_FailsWithItsOutput()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-f-").FullName;
        try
        {
            var broken = new GuestBackend("broken", _ => new ProcessStartInfo("/bin/sh") { ArgumentList = { "-c", "echo no such option >&2; exit 9" } });
            var ex = Assert.Throws<GuestSetupException>(() => GuestVm.Run("hv_ok never\n", [new GuestShare("b0", dir, broken)]));
            Assert.Contains("exited with code 9 before creating its vhost-user socket", ex.Message);
            Assert.Contains("no such option", ex.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // A recycled pid would belong to an unrelated command; ours were qemu or virtiofsd.
    private static bool IsZombieOrOther(int pid)
    {
        try
        {
            var cmd = File.ReadAllText($"/proc/{pid}/cmdline");
            return !(cmd.Contains("qemu-system") || cmd.Contains("virtiofsd"));
        }
        catch (IOException) { return true; }
    }
}
