using System.Diagnostics;
using System.Text;
using Hypervisor.Vdev.Tests.Frontend;

namespace Hypervisor.Vdev.Tests.Reference;

/// <summary>
/// Proves the test front-end right against QEMU's C virtiofsd: if these pass, failures against the vdev
/// are the vdev's. Needs root (virtiofsd sandboxes itself) and /usr/lib/qemu/virtiofsd.
/// </summary>
[Trait("Category", "Root")]
public sealed class ReferenceDaemonTests : IDisposable
{
    private const string Virtiofsd = "/usr/lib/qemu/virtiofsd";
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-ref-").FullName;
    private Process? _daemon;
    private readonly StringBuilder _log = new();

    private string StartDaemon(string sandbox)
    {
        var share = Path.Combine(_dir, "share");
        Directory.CreateDirectory(share);
        var sock = Path.Combine(_dir, "vfsd.sock");
        var psi = new ProcessStartInfo(Virtiofsd)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var a in new[] { $"--socket-path={sock}", "-o", $"source={share}", "-o", "cache=none", "-o", $"sandbox={sandbox}" }) psi.ArgumentList.Add(a);
        _daemon = Process.Start(psi)!;
        _daemon.ErrorDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        _daemon.OutputDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        _daemon.BeginErrorReadLine();
        _daemon.BeginOutputReadLine();
        return sock;
    }

    [Fact]
    public void FrontendDrivesVirtiofsdThroughInitLookupGetattrAndRead()
    {
        if (!File.Exists(Virtiofsd)) return;
        var sock = StartDaemon("chroot");
        var content = new byte[10000];
        for (int i = 0; i < content.Length; i++) content[i] = (byte)(i * 7 + 3);
        File.WriteAllBytes(Path.Combine(_dir, "share", "hello.bin"), content);

        using var fe = VhostUserFrontend.Connect(sock, T);
        using var ram = new GuestRam(32 << 20);
        fe.Negotiate();
        fe.SetMemTable(ram);
        var q = fe.SetupQueues(ram, count: 2, size: 64)[1];

        ulong unique = 2;
        var init = q.Transact(FuseFrames.InitRequest(unique), 4096, T);
        var (len, err, u) = FuseFrames.ReadOutHeader(init);
        Assert.True(err == 0, $"INIT failed with {err}; daemon log: {_log}");
        Assert.Equal(unique, u);
        Assert.Equal((uint)init.Length, len);
        var (major, minor, _) = FuseFrames.ReadInit(init);
        Assert.Equal(7u, major);
        Assert.True(minor >= 31);

        unique += 2;
        var lookup = q.Transact(FuseFrames.LookupRequest(unique, FuseFrames.RootId, "hello.bin"), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(lookup).Error);
        var (node, size, mode) = FuseFrames.ReadEntry(lookup);
        Assert.Equal((ulong)content.Length, size);
        Assert.Equal(0x8000u, mode & 0xF000); // S_IFREG

        unique += 2;
        var missing = q.Transact(FuseFrames.LookupRequest(unique, FuseFrames.RootId, "absent"), 4096, T);
        Assert.Equal(-2, FuseFrames.ReadOutHeader(missing).Error); // ENOENT

        unique += 2;
        var attr = q.Transact(FuseFrames.GetattrRequest(unique, node), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(attr).Error);
        Assert.Equal((ulong)content.Length, FuseFrames.ReadAttr(attr).Size);

        unique += 2;
        var open = q.Transact(FuseFrames.OpenRequest(unique, node), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(open).Error);
        ulong fh = FuseFrames.ReadOpenFh(open);

        // A read split over several reply descriptors, through an indirect table.
        unique += 2;
        ushort head = q.Submit(FuseFrames.ReadRequest(unique, node, fh, 1000, 8192), 16 + 8192, indirect: true, replySegments: 3);
        var (h, rlen) = q.WaitUsed(T);
        Assert.Equal(head, h);
        var read = q.ReplyBytes(h, rlen);
        Assert.Equal(0, FuseFrames.ReadOutHeader(read).Error);
        Assert.Equal(content.AsSpan(1000, 8192).ToArray(), read.AsSpan(16).ToArray());

        // FORGET on hiprio gets no reply but its chain comes back.
        var hiprio = fe.Queues[0];
        ushort fhead = hiprio.Submit(FuseFrames.ForgetRequest(unique + 2, node, 1), 0);
        var (fh2, flen) = hiprio.WaitUsed(T);
        Assert.Equal(fhead, fh2);
        Assert.Equal(0u, flen);
    }

    public void Dispose()
    {
        if (_daemon is { HasExited: false }) { _daemon.Kill(); _daemon.WaitForExit(5000); }
        _daemon?.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
