using Hypervisor.Tests;
using System.Diagnostics;
using System.Globalization;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Share;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// The published vdev, started as an operator starts it (root, one share, no VMM yet): what it has given up once its
/// share is started, read from /proc of every one of its threads, and its daemon's sandbox beside it.
/// </summary>
[Trait("Category", "Root")]
public sealed class VdevConfinementTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-confined-").FullName;

    [Fact]
    public void OnceItsShareIsStarted_EveryVdevThreadHasNoNewPrivs_ASeccompFilter_AndOnlyTheCapabilitiesItsDaemonsNeed()
    {
        var share = Directory.CreateDirectory(Path.Combine(_dir, "share")).FullName;
        var socket = Path.Combine(_dir, "s.sock");
        var info = new ProcessStartInfo(Hypervisor.Tests.Executables.Vdev) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--socket-path", socket, "--shared-dir", share, "--modcaps", "+lease" }) info.ArgumentList.Add(a);
        using var vdev = Process.Start(info)!;
        vdev.BeginErrorReadLine();
        vdev.BeginOutputReadLine();
        Frontend.VhostUserFrontend? vmm = null;
        try
        {
            // Answered once the share serves: the vdev has given up what it gives up by then.
            vmm = VdevServing.Connect(vdev, socket);

            Assert.True(Capabilities.TryModify(0, "+lease", out var lease, out _));
            ulong permitted = ulong.Parse(ProcStatus.Read("/proc/self/status")["CapPrm"], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            var keep = VdevConfinement.Keep([new ShareSettings { Modcaps = "+lease" }]) & permitted;
            Assert.NotEqual(0UL, keep & lease);
            Assert.Equal(0UL, keep & Bit("sys_ptrace") & Bit("net_admin") & Bit("sys_module"));
            foreach (var task in Directory.GetDirectories($"/proc/{vdev.Id}/task"))
            {
                var status = ProcStatus.Read($"{task}/status");
                Assert.Equal(keep.ToString("x16", CultureInfo.InvariantCulture), status["CapEff"]);
                Assert.Equal(keep.ToString("x16", CultureInfo.InvariantCulture), status["CapBnd"]);
                Assert.Equal("1", status["NoNewPrivs"]);
                Assert.Equal("2", status["Seccomp"]);
            }
            // Its daemon: its own set with +lease, and its own filter (started before the vdev loaded its filter).
            var daemon = Directory.GetDirectories("/proc").Select(Path.GetFileName)
                .Where(p => int.TryParse(p, out _) && ReadCmdline(p!) is var cmdline
                    && cmdline.Contains(share, StringComparison.Ordinal) && cmdline.Contains("passthrough", StringComparison.Ordinal))
                .Single();
            var daemonStatus = ProcStatus.Read($"/proc/{daemon}/status");
            Assert.True(Capabilities.TryModify(Capabilities.DaemonDefault, "+lease", out var daemonSet, out _));
            Assert.Equal((daemonSet & permitted).ToString("x16", CultureInfo.InvariantCulture), daemonStatus["CapEff"]);
            Assert.Equal("2", daemonStatus["Seccomp"]);
            Assert.Equal("1", daemonStatus["NoNewPrivs"]);

            // Stopped, the vdev leaves no socket behind: the daemon, rooted in the share, cannot name its control
            // socket any more, so the vdev removes it.
            Hypervisor.Interop.Libc.kill(vdev.Id, Hypervisor.Interop.Libc.SIGTERM);
            Assert.True(vdev.WaitForExit(20_000), "the vdev did not stop on SIGTERM");
            Assert.False(File.Exists(socket), "the vhost-user socket was left behind");
            Assert.False(File.Exists(socket + ".ctl"), "the control socket was left behind");
        }
        finally
        {
            vmm?.Dispose();
            if (!vdev.HasExited)
            {
                // SIGTERM: the vdev stops its daemon and removes its sockets.
                Hypervisor.Interop.Libc.kill(vdev.Id, Hypervisor.Interop.Libc.SIGTERM);
                if (!vdev.WaitForExit(10_000)) vdev.Kill();
            }
        }
    }

    private static ulong Bit(string name) => Capabilities.TryParse(name, out var bit) ? bit : throw new ArgumentException(name);

    private static string ReadCmdline(string pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '); }
        catch (IOException) { return ""; }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
