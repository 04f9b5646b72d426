using System.Diagnostics;
using System.Text;
using Hypervisor.Vdev.Tests.Device;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.Vmm;

/// <summary>
/// Boots a Linux guest under QEMU (TCG) with <c>vhost-user-fs-pci</c> served by the vdev, whose transport
/// forwards to QEMU's virtiofsd: the guest kernel's virtio-fs driver exercises the real thing (memory
/// table, EVENT_IDX, indirect descriptors, hiprio FORGETs, several request queues).
/// </summary>
[Trait("Category", "Guest")]
public sealed class GuestMountTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-guest-").FullName;

    private static string? Kernel() => Directory.Exists("/boot") ? Directory.GetFiles("/boot", "vmlinuz-*").OrderBy(f => f).LastOrDefault() : null;

    private static void Sh(string script)
    {
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"'{script}' failed: {err}");
    }

    /// <summary>An initramfs with busybox, the virtio-fs modules, and an init that runs <paramref name="commands"/> then powers off.</summary>
    private string BuildInitramfs(string kernel, string commands)
    {
        var version = Path.GetFileName(kernel)["vmlinuz-".Length..];
        var root = Path.Combine(_dir, "root");
        foreach (var d in new[] { "bin", "dev", "proc", "sys", "mnt", "mods" }) Directory.CreateDirectory(Path.Combine(root, d));
        File.Copy("/bin/busybox", Path.Combine(root, "bin/busybox"));
        var mods = new[] { "drivers/virtio/virtio_ring", "drivers/virtio/virtio", "drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci_modern_dev", "drivers/virtio/virtio_pci", "fs/fuse/fuse", "fs/fuse/virtiofs" };
        var init = new StringBuilder("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n");
        foreach (var m in mods)
        {
            var name = Path.GetFileName(m) + ".ko";
            File.Copy($"/lib/modules/{version}/kernel/{m}.ko", Path.Combine(root, "mods", name));
            init.Append($"insmod /mods/{name}\n");
        }
        init.Append(commands).Append("\necho GUEST-DONE\npoweroff -f\n");
        File.WriteAllText(Path.Combine(root, "init"), init.ToString());
        Sh($"chmod 755 '{root}/init' && cd '{root}' && find . | cpio -o -H newc --quiet > '{_dir}/initrd.cpio'");
        return Path.Combine(_dir, "initrd.cpio");
    }

    private const string Script = """
        mount -t virtiofs myfs /mnt && echo MOUNT-OK
        ls /mnt
        md5sum /mnt/hello.txt
        echo written-by-guest > /mnt/from-guest.txt && sync && echo WRITE-OK
        mkdir /mnt/dir && i=0; while [ $i -lt 200 ]; do echo $i > /mnt/dir/f$i; i=$((i+1)); done; ls /mnt/dir | wc -l
        echo 3 > /proc/sys/vm/drop_caches
        cat /mnt/dir/f150
        dd if=/dev/zero of=/mnt/big bs=1M count=8 2>/dev/null && md5sum /mnt/big
        umount /mnt && echo UMOUNT-OK
        rmmod virtiofs && insmod /mods/virtiofs.ko && mount -t virtiofs myfs /mnt && cat /mnt/from-guest.txt && umount /mnt && echo REMOUNT-OK
        """;

    [Fact]
    public void AGuestMountsTheShareThroughTheVdevReadsAndWrites()
    {
        var kernel = Kernel();
        if (kernel == null || !File.Exists("/usr/lib/qemu/virtiofsd")) return;
        var share = MakeShare(out var content);
        using var proxy = new VirtiofsdProxyTransport(share);
        RunGuest(kernel, share, content, proxy);
    }

    /// <summary>The product path: vdev, the shared-memory ring, and the project's passthrough daemon.</summary>
    [Fact]
    public void AGuestMountsTheShareThroughTheVdevTheRingAndThePassthroughDaemon()
    {
        var kernel = Kernel();
        if (kernel == null) return;
        var daemonPath = Hypervisor.Tests.Executables.Passthrough;
        var share = MakeShare(out var content);
        using var rings = Hypervisor.Protocol.Ring.ShmRingSet.Create(3);
        var psi = new ProcessStartInfo(daemonPath) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--shared-dir", share, "--ring", rings.Fds.ToString(), "--log-level", "warn", "--sandbox", "chroot" }) psi.ArgumentList.Add(a);
        var daemonLog = new StringBuilder();
        rings.SetInheritable(true);
        Process daemon;
        try { daemon = Process.Start(psi)!; }
        finally { rings.SetInheritable(false); }
        using var _ = daemon;
        daemon.ErrorDataReceived += (_, e) => { lock (daemonLog) daemonLog.AppendLine(e.Data); };
        daemon.OutputDataReceived += (_, e) => { lock (daemonLog) daemonLog.AppendLine(e.Data); };
        daemon.BeginErrorReadLine();
        daemon.BeginOutputReadLine();
        rings.SetPeerProcess(daemon.Id);
        try
        {
            var log = new ListLogger();
            RunGuest(kernel, share, content, Hypervisor.Vdev.Device.ShmRingTransport.Factory(rings, log), log, () => { lock (daemonLog) return daemonLog.ToString(); });
        }
        finally
        {
            if (!daemon.HasExited) { daemon.Kill(); daemon.WaitForExit(); }
        }
    }

    private string MakeShare(out string content)
    {
        var share = Path.Combine(_dir, "share");
        Directory.CreateDirectory(share);
        content = string.Concat(Enumerable.Range(0, 20000).Select(i => (char)('a' + i % 26)));
        File.WriteAllText(Path.Combine(share, "hello.txt"), content);
        return share;
    }

    private void RunGuest(string kernel, string share, string content, Hypervisor.Vdev.Device.IFuseTransportFactory transport, ListLogger? log = null, Func<string>? daemonLog = null)
    {
        var initrd = BuildInitramfs(kernel, Script);
        log ??= new ListLogger();
        var sock = Path.Combine(_dir, "vdev.sock");
        using var cts = new CancellationTokenSource();
        var device = VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = sock, RequestQueues = 2 }, transport, log, cts.Token);

        var psi = new ProcessStartInfo("qemu-system-x86_64") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] {
            "-M", "q35", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "512", "-nodefaults", "-nographic", "-no-reboot",
            "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet",
            "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-numa", "node,memdev=mem",
            "-chardev", $"socket,id=vfs,path={sock}",
            "-device", "vhost-user-fs-pci,chardev=vfs,tag=myfs,num-request-queues=2,queue-size=128" })
            psi.ArgumentList.Add(a);
        using var qemu = Process.Start(psi)!;
        var output = new StringBuilder();
        qemu.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        qemu.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        qemu.BeginOutputReadLine();
        qemu.BeginErrorReadLine();
        bool exited = qemu.WaitForExit(180_000);
        if (!exited) qemu.Kill();
        else qemu.WaitForExit(); // with asynchronous reads, only this overload waits for the last output lines
        string console;
        lock (output) console = output.ToString();
        string context = "\nconsole:\n" + console + "\nvdev log:\n" + log + "\ndaemon log:\n" + daemonLog?.Invoke();
        Assert.True(exited, "the guest did not finish in 180 s" + context);
        Assert.True(device.Wait(TimeSpan.FromSeconds(10)), "the vdev did not exit after QEMU quit" + context);
        Assert.Equal(VhostUserDevice.ExitOk, device.Result);

        Assert.True(console.Contains("MOUNT-OK"), "mount failed" + context);
        Assert.Contains("hello.txt", console);
        var md5 = Convert.ToHexString(System.Security.Cryptography.MD5.HashData(Encoding.ASCII.GetBytes(content))).ToLowerInvariant();
        Assert.True(console.Contains(md5), "read back wrong" + context);
        Assert.Contains("WRITE-OK", console);
        Assert.Equal("written-by-guest\n", File.ReadAllText(Path.Combine(share, "from-guest.txt")));
        Assert.Equal(200, Directory.GetFiles(Path.Combine(share, "dir")).Length);
        Assert.Contains("150", console);
        Assert.Equal(8 << 20, new FileInfo(Path.Combine(share, "big")).Length);
        Assert.Contains("96995b58d4cbf6aaa9041b4f00c7f6ae", console); // md5 of 8 MiB of zeros, read back by the guest
        Assert.True(console.Contains("UMOUNT-OK"), "umount failed" + context);
        // Unloading the driver resets the device (GET_VRING_BASE on every ring); loading it starts them again.
        Assert.True(console.Contains("REMOUNT-OK"), "remount after a driver reload failed" + context);
        Assert.True(log.Contains("GetVringBase"), "QEMU never stopped the rings" + context);
        Assert.DoesNotContain(log.Lines, l => l.Level >= Microsoft.Extensions.Logging.LogLevel.Warning);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
