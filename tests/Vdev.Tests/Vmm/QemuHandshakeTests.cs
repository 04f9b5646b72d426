using System.Diagnostics;
using Hypervisor.Vdev.Tests.Device;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.Vmm;

/// <summary>
/// Starts QEMU (paused, no guest) with <c>vhost-user-fs-pci</c> against the vdev: QEMU's own vhost-user
/// front-end negotiates at device realize time, and quitting QEMU must end the device cleanly.
/// </summary>
[Trait("Category", "Guest")]
public sealed class QemuHandshakeTests
{
    private const string Qemu = "/usr/bin/qemu-system-x86_64";

    [Fact]
    public async Task QemuVhostUserFsPciNegotiatesWithTheVdevAndQuitsCleanly()
    {
        if (!File.Exists(Qemu)) return;
        using var h = new DeviceHarness(requestQueues: 2);
        var psi = new ProcessStartInfo(Qemu) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] {
            "-M", "q35", "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-S", "-monitor", "stdio",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem",
            "-chardev", $"socket,id=vfs,path={h.SocketPath}",
            "-device", "vhost-user-fs-pci,chardev=vfs,tag=myfs,num-request-queues=2,queue-size=256" })
            psi.ArgumentList.Add(a);
        using var qemu = Process.Start(psi)!;
        var stderr = qemu.StandardError.ReadToEndAsync();
        _ = qemu.StandardOutput.ReadToEndAsync();
        try
        {
            Assert.True(SpinWait.SpinUntil(() => h.Log.Contains("GetQueueNum") && h.Log.Contains("SetOwner") || qemu.HasExited, DeviceHarness.T),
                "QEMU did not negotiate; log:\n" + h.Log);
            if (qemu.HasExited) Assert.Fail("QEMU exited: " + await stderr);
            qemu.StandardInput.WriteLine("quit");
            Assert.True(qemu.WaitForExit(10000));
        }
        finally
        {
            if (!qemu.HasExited) qemu.Kill();
        }
        Assert.Equal(VhostUserDevice.ExitOk, h.WaitExit());
        Assert.DoesNotContain(h.Log.Lines, l => l.Level >= Microsoft.Extensions.Logging.LogLevel.Warning);
        Assert.True(h.Log.Contains("GetProtocolFeatures"));
    }
}
