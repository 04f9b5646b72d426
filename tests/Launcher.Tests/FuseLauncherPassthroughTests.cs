using System.Net.Sockets;
using System.Text.Json;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Launcher.Tests.Support;

namespace Hypervisor.Launcher.Tests;

/// <summary>fuse_launcher starting the real passthrough daemon from the same build.</summary>
public class FuseLauncherPassthroughTests
{
    [Fact]
    [Trait("Category", "Root")]
    public void RealDaemon_MountsTheShare_InItsOwnSession_WithTheNamedFds()
    {
        using var share = new TempShare();
        File.WriteAllText(Path.Combine(share.Share, "hello.txt"), "from the host");
        var mount = Path.Combine(share.Root, "mnt");
        Directory.CreateDirectory(mount);
        int leak = InheritableFds.Memfd("launcher-test-real-not-named");
        int extra = InheritableFds.Memfd("launcher-test-real-extra");
        var control = Path.Combine(share.Root, "c.sock");
        int pid = 0;
        try
        {
            var run = LauncherRun.Start([
                "--shared-dir", share.Share, "--sandbox", "none", "--mount", mount, "--tag", "real", "--control-socket", control,
                "--inherit-fd", extra.ToString(), "--passthrough", LauncherRun.PassthroughPath, "--timeout", "30"]);

            Assert.True(run.ExitCode == 0, run.Stderr);
            using var json = JsonDocument.Parse(Assert.Single(run.StdoutLines));
            pid = json.RootElement.GetProperty("pid").GetInt32();
            Assert.Equal("real", json.RootElement.GetProperty("tag").GetString());
            // The control service listens before the daemon says ready, so the endpoint reported can be used at once.
            Assert.Equal(control, json.RootElement.GetProperty("control").GetString());
            using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
                probe.Connect(new UnixDomainSocketEndPoint(control));

            Assert.True(ProcFs.IsRunning(pid));
            Assert.Equal(pid, Libc.getsid(pid));
            Assert.Equal(pid, Libc.getpgid(pid));

            // The daemon opens many descriptors of its own; of the launcher's world it has exactly stdin
            // (/dev/null), stdout/stderr (the start-up pipe) and the named descriptor, under its number.
            var fds = ProcFs.Fds(pid);
            Assert.Equal("/dev/null", fds[0]);
            Assert.StartsWith("pipe:", fds[1]);
            Assert.Equal(fds[1], fds[2]);
            Assert.Contains("launcher-test-real-extra", fds[extra]);
            Assert.DoesNotContain(fds.Values, v => v.Contains("launcher-test-real-not-named"));

            // The mount serves the share both ways.
            Assert.Equal("from the host", File.ReadAllText(Path.Combine(mount, "hello.txt")));
            File.WriteAllText(Path.Combine(mount, "from-guest.txt"), "through FUSE");
            Assert.Equal("through FUSE", File.ReadAllText(Path.Combine(share.Share, "from-guest.txt")));

            // Stopping it by pid unmounts.
            Libc.kill(pid, Libc.SIGTERM);
            Assert.True(ProcFs.WaitGone(pid, 10_000), "the daemon did not exit on SIGTERM");
            Assert.DoesNotContain(File.ReadAllLines("/proc/mounts"), l => l.Split(' ')[1] == mount);
        }
        finally
        {
            Libc.close(extra);
            Libc.close(leak);
            if (pid > 0 && ProcFs.IsRunning(pid)) Libc.kill(pid, Libc.SIGKILL);
            if (File.ReadAllLines("/proc/mounts").Any(l => l.Split(' ')[1] == mount)) Libc.umount2(mount, Libc.MNT_DETACH);
        }
    }

    [Fact]
    public void RealDaemon_OnTheVdevsRing_GetsTheRingFdsAndAttaches()
    {
        using var share = new TempShare();
        using var rings = ShmRingSet.Create(queueCount: 2);
        int pid = 0;
        try
        {
            // As the vdev does: the ring's descriptors are inheritable only while fuse_launcher is started.
            rings.SetInheritable(true);
            LauncherRun run;
            try
            {
                run = LauncherRun.Start(["--shared-dir", share.Share, "--ring", rings.Fds.ToString(), "--passthrough", LauncherRun.PassthroughPath, "--timeout", "30"]);
            }
            finally
            {
                rings.SetInheritable(false);
            }

            Assert.True(run.ExitCode == 0, run.Stderr);
            using var json = JsonDocument.Parse(Assert.Single(run.StdoutLines));
            pid = json.RootElement.GetProperty("pid").GetInt32();
            Assert.Equal(pid, Libc.getsid(pid));

            var fds = ProcFs.Fds(pid);
            Assert.StartsWith("/memfd:", fds[rings.Fds.MemFd]);
            foreach (var bell in rings.Fds.Doorbells) Assert.Equal("anon_inode:[eventfd]", fds[bell]);
            // The daemon attached to the ring (it records its pid in the ring's header) before it said ready: pid 1, the
            // first process of the pid namespace fuse_launcher made for it.
            Assert.Equal(1, rings.PeerPid);

            Libc.kill(pid, Libc.SIGTERM);
            Assert.True(ProcFs.WaitGone(pid, 10_000), "the daemon did not exit on SIGTERM");
        }
        finally
        {
            if (pid > 0 && ProcFs.IsRunning(pid)) Libc.kill(pid, Libc.SIGKILL);
        }
    }

    [Fact]
    public void RealDaemon_ThatCannotMount_GivesExit1_WithItsReason_AndLeavesNoProcess()
    {
        using var share = new TempShare();
        var missing = Path.Combine(share.Root, "no-such-mount-point");
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", missing, "--passthrough", LauncherRun.PassthroughPath, "--timeout", "30"]);

        Assert.Equal(1, run.ExitCode);
        Assert.Empty(run.Stdout);
        var line = Assert.Single(run.StderrLines);
        Assert.StartsWith("fuse_launcher: the daemon exited with exit code 1 before it was ready: ", line);
        // The daemon's own sentence: as root it is the missing mount point, otherwise the missing privilege.
        Assert.Contains(Libc.geteuid() == 0 ? $"The mount point {missing} does not exist" : "needs root", line);
        Assert.Empty(ProcFs.FindByCommandLine("passthrough", share.Share));
    }

    [Fact]
    public void RealDaemon_AsADll_RunsThroughDotnet()
    {
        using var share = new TempShare();
        var missing = Path.Combine(share.Root, "no-such-mount-point");
        var dll = Path.Combine(LauncherRun.RepoRoot, "passthrough", "bin", LauncherRun.Configuration, "net10.0", "passthrough.dll");
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", missing, "--passthrough", dll, "--timeout", "30"]);

        // It ran (its own reason comes back), so the .dll was started through the dotnet host.
        Assert.Equal(1, run.ExitCode);
        Assert.Contains(Libc.geteuid() == 0 ? "does not exist" : "needs root", Assert.Single(run.StderrLines));
        Assert.Empty(ProcFs.FindByCommandLine("passthrough", share.Share));
    }
}
