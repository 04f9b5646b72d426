using Hypervisor.Protocol.Share;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Hypervisor.Vdev.Config;
using Hypervisor.Vdev.Share;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// The split as the vdev runs it, without a VMM: a ring, fuse_launcher, the real passthrough daemon on a temporary
/// share, FUSE frames driven through the ring, and gRPC control of the running daemon.
/// </summary>
public sealed class LaunchedShareTests : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-share-").FullName;
    private ulong _unique = 100;

    /// <summary>The published fuse_launcher (passthrough is next to it).</summary>
    private static string Launcher => Hypervisor.Tests.Executables.Launcher;

    private static DeclaredShare Declare(string host, string tag, string control, string origin = "command line")
    {
        var settings = ShareVocabulary.Defaults();
        settings.SharedDir = host;
        settings.Tag = tag;
        settings.ControlSocket = control;
        return new DeclaredShare(settings, origin);
    }

    [Fact]
    public async Task FramesThroughTheRingReachTheShareAndDirectIoTogglesOverGrpc()
    {
        var host = Directory.CreateDirectory(Path.Combine(_dir, "share")).FullName;
        var config = Declare(host, "ringtest", Path.Combine(_dir, "ctl.sock"));
        await using var share = await LaunchedShare.StartAsync(config, Launcher, NullLogger.Instance, CancellationToken.None);
        Assert.True(share.DaemonPid > 0);
        var queue = share.Rings.GetQueue(1);

        var init = Call(queue, FuseOpcode.Init, 0, Bytes(new InitIn { Major = 7, Minor = 31, MaxReadahead = 1 << 17, Flags = (uint)(InitFlags.MaxPages | InitFlags.BigWrites) }).AsSpan(0, 16));
        Assert.Equal(0, Header(init).Error);
        Assert.Equal(31u, Payload<InitOut>(init).Minor);

        // CREATE + WRITE + RELEASE through the ring; the file appears on the host with the bytes written.
        var create = Call(queue, FuseOpcode.Create, 1, Concat(Bytes(new CreateIn { Flags = 0x42 /* O_RDWR|O_CREAT */, Mode = 0x81a4 }), Name("hello.txt")));
        Assert.Equal(0, Header(create).Error);
        var entry = Payload<EntryOut>(create);
        var created = MemoryMarshal.Read<OpenOut>(create.AsSpan(16 + Unsafe.SizeOf<EntryOut>()));
        Assert.Equal(0u, created.OpenFlags & (uint)OpenOutFlags.DirectIo);
        var data = "hello through the ring"u8.ToArray();
        var write = Call(queue, FuseOpcode.Write, entry.Nodeid, Concat(Bytes(new WriteIn { Fh = created.Fh, Size = (uint)data.Length }), data));
        Assert.Equal((uint)data.Length, Payload<WriteOut>(write).Size);
        Assert.Equal(0, Header(Call(queue, FuseOpcode.Release, entry.Nodeid, Bytes(new ReleaseIn { Fh = created.Fh }))).Error);
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(host, "hello.txt")));

        // Direct I/O is off: OPEN replies without FOPEN_DIRECT_IO.
        var before = Open(queue, entry.Nodeid);
        Assert.Equal(0u, before.OpenFlags & (uint)OpenOutFlags.DirectIo);
        Call(queue, FuseOpcode.Release, entry.Nodeid, Bytes(new ReleaseIn { Fh = before.Fh }));

        // The operator switches it on over gRPC: the next OPEN carries FOPEN_DIRECT_IO and still reads the file.
        var options = await share.Client.Control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = true });
        Assert.True(options.DirectIo);
        var after = Open(queue, entry.Nodeid);
        Assert.NotEqual(0u, after.OpenFlags & (uint)OpenOutFlags.DirectIo);
        var read = Call(queue, FuseOpcode.Read, entry.Nodeid, Bytes(new ReadIn { Fh = after.Fh, Size = 4096 }));
        Assert.Equal(data, read.AsSpan(16).ToArray());
        Call(queue, FuseOpcode.Release, entry.Nodeid, Bytes(new ReleaseIn { Fh = after.Fh }));
        Assert.True((await share.Client.Control.GetStatusAsync(new GetStatusRequest())).Options.DirectIo);

        // Shut down over gRPC: the daemon exits and the ring reports it.
        await share.Client.Control.ShutdownAsync(new ShutdownRequest());
        var deadline = DateTime.UtcNow + Wait;
        while (Directory.Exists($"/proc/{share.DaemonPid}") && !IsZombie(share.DaemonPid) && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.False(Directory.Exists($"/proc/{share.DaemonPid}") && !IsZombie(share.DaemonPid), "the daemon is still running after Shutdown");
        var status = queue.Consumer.Peek(out _, TimeSpan.FromSeconds(5));
        Assert.True(status is RingStatus.Closed or RingStatus.PeerDead, $"ring reported {status}");
    }

    [Fact]
    public async Task AMissingHostPathIsAClearErrorAndStartsNothing()
    {
        var config = Declare(Path.Combine(_dir, "missing"), "t", Path.Combine(_dir, "c.sock"), "vm.conf:3");
        var e = await Assert.ThrowsAsync<ShareStartException>(() => LaunchedShare.StartAsync(config, Launcher, NullLogger.Instance, CancellationToken.None));
        Assert.Equal($"vm.conf:3: the shared directory (host_path, --shared-dir) {config.Settings.SharedDir} does not exist; create it or fix the path.", e.Message);
        Assert.False(File.Exists(config.Settings.ControlSocket));
    }

    [Fact]
    public async Task ADaemonThatCannotStartIsReportedWithTheLaunchersExitStatus()
    {
        var host = Directory.CreateDirectory(Path.Combine(_dir, "share2")).FullName;
        // A control socket path longer than sun_path allows is refused by fuse_launcher (exit 2) before anything starts.
        var config = Declare(host, "t2", Path.Combine(_dir, new string('x', 120)));
        var e = await Assert.ThrowsAsync<ShareStartException>(() => LaunchedShare.StartAsync(config, Launcher, NullLogger.Instance, CancellationToken.None));
        Assert.Contains("a setting was refused (fuse_launcher exit 2", e.Message);
    }

    [Fact]
    public async Task AnFdCacheSizeThatDoesNotFitUnderTheDaemonsDescriptorLimitIsPassedOnAndRefused()
    {
        var host = Directory.CreateDirectory(Path.Combine(_dir, "share3")).FullName;
        var config = Declare(host, "t3", Path.Combine(_dir, "c3.sock"));
        config.Settings.FdCacheSize = 1 << 20;
        Assert.Contains(["--fd-cache-size", "1048576"], LaunchedShare.LauncherArguments(config.Settings, "RING", "CTL").Chunk(2).Select(p => p.ToArray()));
        // The daemon runs under the same descriptor limit as this process (both are .NET: soft raised to hard).
        var limit = long.Parse(File.ReadAllLines("/proc/self/limits").First(l => l.StartsWith("Max open files", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[3], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(limit - 256 < 1 << 20, $"this test needs RLIMIT_NOFILE below 1048832, not {limit}");
        var e = await Assert.ThrowsAsync<ShareStartException>(() => LaunchedShare.StartAsync(config, Launcher, NullLogger.Instance, CancellationToken.None));
        // The daemon's one-line reason goes to the vdev's stderr, the line above this one (its text is checked by
        // MountLimitsTests in the passthrough tests).
        Assert.Contains("the daemon of share 't3' did not start: ", e.Message);
        Assert.False(File.Exists(config.Settings.ControlSocket));
    }

    private OpenOut Open(RingQueue queue, ulong node)
    {
        var reply = Call(queue, FuseOpcode.Open, node, Bytes(new OpenIn { Flags = 2 /* O_RDWR */ }));
        Assert.Equal(0, Header(reply).Error);
        return Payload<OpenOut>(reply);
    }

    /// <summary>Sends one request on the ring and waits for its completion (matched by tag).</summary>
    private byte[] Call(RingQueue queue, FuseOpcode opcode, ulong node, ReadOnlySpan<byte> body)
    {
        var unique = ++_unique;
        var length = 40 + body.Length;
        Assert.Equal(RingStatus.Ok, queue.Producer.Reserve(length, out var frame, Wait));
        var header = new InHeader { Len = (uint)length, Opcode = (uint)opcode, Unique = unique, Nodeid = node, Pid = 1 };
        MemoryMarshal.Write(frame, in header);
        body.CopyTo(frame[40..]);
        queue.Producer.Commit(length, unique);
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var completion, Wait));
        Assert.Equal(unique, completion.Tag);
        var reply = completion.Data.ToArray();
        queue.Consumer.Release();
        Assert.Equal(unique, Header(reply).Unique);
        Assert.Equal((uint)reply.Length, Header(reply).Len);
        return reply;
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2] == 'Z';
        }
        catch (IOException)
        {
            return true;
        }
    }

    private static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();
    private static byte[] Name(string name) => [.. Encoding.UTF8.GetBytes(name), 0];
    private static byte[] Concat(byte[] a, byte[] b) => [.. a, .. b];
    private static OutHeader Header(byte[] reply) => MemoryMarshal.Read<OutHeader>(reply);
    private static T Payload<T>(byte[] reply) where T : unmanaged => MemoryMarshal.Read<T>(reply.AsSpan(16));

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
