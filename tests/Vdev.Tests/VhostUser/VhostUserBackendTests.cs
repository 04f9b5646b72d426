using Hypervisor.Tests;
using System.Buffers.Binary;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Tests.Device;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.VhostUser;

public sealed class VhostUserBackendTests
{
    private static readonly TimeSpan T = DeviceHarness.T;

    [Fact]
    public void OffersTheFeaturesAndQueuesOfAVirtioFsDevice()
    {
        using var h = new DeviceHarness(requestQueues: 3);
        using var fe = h.Connect();
        ulong f = fe.GetU64(VhostUserRequest.GetFeatures);
        Assert.Equal(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx | VirtioFeatures.RingIndirectDesc | VhostUserFeatures.ProtocolFeatures, f);
        var pf = (VhostUserProtocolFeatures)fe.GetU64(VhostUserRequest.GetProtocolFeatures);
        Assert.True(pf.HasFlag(VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ConfigureMemSlots));
        Assert.False(pf.HasFlag(VhostUserProtocolFeatures.LogShmfd));
        fe.Negotiate();
        Assert.Equal(4ul, fe.GetU64(VhostUserRequest.GetQueueNum));
        Assert.Equal((ulong)VhostUserBackend.MaxMemSlots, fe.GetU64(VhostUserRequest.GetMaxMemSlots));

        // GET_CONFIG: tag[36], num_request_queues.
        var req = new byte[12 + 40];
        new VhostUserConfigHeader(0, 40, 0).WriteTo(req);
        fe.Send(VhostUserRequest.GetConfig, req);
        var (hdr, payload) = fe.Receive();
        Assert.Equal(VhostUserRequest.GetConfig, hdr.Request);
        Assert.True((hdr.Flags & VhostUserHeaderFlags.Reply) != 0);
        Assert.Equal(52, payload.Length);
        Assert.Equal("myfs"u8.ToArray(), payload.AsSpan(12, 4).ToArray());
        Assert.All(payload.AsSpan(16, 32).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(12 + 36)));

        // The config space is read-only.
        var set = new byte[12 + 4];
        new VhostUserConfigHeader(36, 4, 0).WriteTo(set);
        Assert.False(fe.SendWithAck(VhostUserRequest.SetConfig, set));
    }

    [Fact]
    public void WithoutATagConfigIsNotOffered()
    {
        using var h = new DeviceHarness(tag: null);
        using var fe = h.Connect();
        var pf = (VhostUserProtocolFeatures)fe.GetU64(VhostUserRequest.GetProtocolFeatures);
        Assert.False(pf.HasFlag(VhostUserProtocolFeatures.Config));
    }

    [Fact]
    public void MalformedAndUnsupportedMessagesAreRefusedAndTheConnectionKeepsServing()
    {
        using var h = new DeviceHarness();
        using var ram = new GuestRam(32 << 20);
        using var fe = h.Connect();
        fe.Negotiate();

        // Lying size: SET_FEATURES carries a u64, this one says 4 bytes.
        Assert.False(fe.SendWithAck(VhostUserRequest.SetFeatures, new byte[4]));
        // Features that were not offered.
        var bad = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bad, 1UL << 40);
        Assert.False(fe.SendWithAck(VhostUserRequest.SetFeatures, bad));
        // Unknown request code.
        Assert.False(fe.SendWithAck((VhostUserRequest)99, default));
        Assert.True(h.Log.Contains("request 99"));
        // Not offered: dirty logging.
        Assert.False(fe.SendWithAck(VhostUserRequest.SetLogBase, new byte[16]));
        // Wrong fd count: a kick without its eventfd, a memory table with fewer fds than regions, fds where none belong.
        var kick = new byte[8];
        Assert.False(fe.SendWithAck(VhostUserRequest.SetVringKick, kick));
        var table = new byte[8 + 64];
        BinaryPrimitives.WriteUInt32LittleEndian(table, 2);
        new VhostUserMemoryRegion(0, 4096, 0x1000, 0).WriteTo(table.AsSpan(8));
        new VhostUserMemoryRegion(0x10000, 4096, 0x20000, 0).WriteTo(table.AsSpan(40));
        Assert.False(fe.SendWithAck(VhostUserRequest.SetMemTable, table, [ram.Fd]));
        Assert.False(fe.SendWithAck(VhostUserRequest.SetOwner, default, [ram.Fd]));
        // Out-of-range queue index and a queue size that is not a power of two.
        var state = new byte[8];
        new VringState(7, 64).WriteTo(state);
        Assert.False(fe.SendWithAck(VhostUserRequest.SetVringNum, state));
        new VringState(1, 100).WriteTo(state);
        Assert.False(fe.SendWithAck(VhostUserRequest.SetVringNum, state));
        // Overlapping regions.
        new VhostUserMemoryRegion(0, 8192, 0x1000, 0).WriteTo(table.AsSpan(8));
        new VhostUserMemoryRegion(4096, 4096, 0x20000, 0).WriteTo(table.AsSpan(40));
        Assert.False(fe.SendWithAck(VhostUserRequest.SetMemTable, table, [ram.Fd, ram.Fd]));

        // Still serving: the device works end to end on the same connection.
        Assert.Equal(2ul, fe.GetU64(VhostUserRequest.GetQueueNum));
        fe.SetMemTable(ram);
        var q = fe.SetupQueues(ram, 2, 64)[1];
        var reply = q.Transact(FuseFrames.GetattrRequest(42, 1), 4096, T);
        Assert.Equal(42ul, FuseFrames.ReadOutHeader(reply).Unique);
        Assert.False(h.Run.IsCompleted);
    }

    [Fact]
    public void AHeaderAnnouncingAnImpossiblePayloadDropsTheConnectionAndExits()
    {
        using var h = new DeviceHarness();
        using var fe = h.Connect();
        var hdr = new byte[12];
        new VhostUserHeader(VhostUserRequest.SetFeatures, VhostUserHeaderFlags.Version1, 1 << 20).WriteTo(hdr);
        fe.SendRaw(hdr);
        Assert.True(fe.WaitClosed(T));
        Assert.Equal(VhostUserDevice.ExitProtocolError, h.WaitExit());
        Assert.True(h.Log.Contains("payload size"));
        Assert.False(File.Exists(h.SocketPath));
    }

    [Fact]
    public void AShortHeaderThenDisconnectEndsTheConnectionAndWithKeepListeningTheNextVmmIsServed()
    {
        using var h = new DeviceHarness(keepListening: true);
        using (var fe = h.Connect())
        {
            fe.SendRaw(new byte[] { 1, 0, 0, 0, 1, 0 });
            fe.Disconnect();
        }
        using var ram = new GuestRam(32 << 20);
        using var fe2 = h.Ready(ram);
        var reply = fe2.Queues[1].Transact(FuseFrames.GetattrRequest(7, 1), 4096, T);
        Assert.Equal(7ul, FuseFrames.ReadOutHeader(reply).Unique);
        Assert.True(h.Log.Contains("header bytes"));
        Assert.False(h.Run.IsCompleted);
    }

    [Fact]
    public void AVmmDisconnectingMidRequestEndsTheDeviceCleanlyAndLateRepliesAreIgnored()
    {
        using var h = new DeviceHarness();
        using var ram = new GuestRam(32 << 20);
        h.Transport.Hold = true;
        var fe = h.Ready(ram);
        fe.Queues[1].Submit(FuseFrames.GetattrRequest(9, 1), 4096);
        SpinWait.SpinUntil(() => !h.Transport.Held.IsEmpty, T);
        Assert.Single(h.Transport.Held);
        fe.Dispose();
        Assert.Equal(VhostUserDevice.ExitOk, h.WaitExit());
        Assert.Equal(0, h.Transport.ReleaseHeld()); // the device state is gone; the reply is dropped, not written
        Assert.Equal(1, h.Transport.Disposed);
        Assert.False(File.Exists(h.SocketPath));
    }

    [Fact]
    public void WithKeepListeningAReconnectingVmmGetsAFreshDevice()
    {
        using var h = new DeviceHarness(keepListening: true);
        using var ram = new GuestRam(32 << 20);
        h.Transport.Hold = true;
        var fe = h.Ready(ram);
        fe.Queues[1].Submit(FuseFrames.GetattrRequest(9, 1), 4096);
        SpinWait.SpinUntil(() => !h.Transport.Held.IsEmpty, T);
        fe.Dispose();
        h.Transport.Hold = false;
        using var ram2 = new GuestRam(32 << 20);
        using var fe2 = h.Ready(ram2);
        Assert.Equal(0, h.Transport.ReleaseHeld());
        var reply = fe2.Queues[1].Transact(FuseFrames.GetattrRequest(11, 1), 4096, T);
        Assert.Equal(11ul, FuseFrames.ReadOutHeader(reply).Unique);
    }

    [Fact]
    public void CancellationStopsTheDeviceAndRemovesTheSocket()
    {
        using var h = new DeviceHarness();
        using var ram = new GuestRam(32 << 20);
        using var fe = h.Ready(ram);
        Assert.True(File.Exists(h.SocketPath));
        h.Stop();
        Assert.Equal(VhostUserDevice.ExitOk, h.WaitExit());
        Assert.False(File.Exists(h.SocketPath));
        Assert.True(fe.WaitClosed(T));
    }

    private static int Mappings(GuestRam ram) => File.ReadAllLines("/proc/self/maps").Count(l => l.Contains("/memfd:" + ram.Name + " ", StringComparison.Ordinal));

    [Fact]
    public void ReplacingTheMemoryTableUnmapsTheOldMappingsAndDisconnectUnmapsAll()
    {
        using var h = new DeviceHarness();
        var name = $"ram-{Guid.NewGuid():N}";
        using var ram = new GuestRam(32 << 20, name: name);
        using var other = new GuestRam(1 << 20, guestBase: 0x9000_0000, name: name + "-b");
        Assert.Equal(1, Mappings(ram)); // the front-end's own
        var fe = h.Ready(ram);
        Assert.Equal(2, Mappings(ram));
        for (int i = 0; i < 3; i++) fe.SetMemTable(ram);
        fe.Queues[1].Transact(FuseFrames.GetattrRequest(5, 1), 4096, T); // the ring re-translates through the new table
        // Idle rings let go of the old table once their worker, woken by the change, re-translates.
        SpinWait.SpinUntil(() => Mappings(ram) == 2, T);
        Assert.Equal(2, Mappings(ram));
        fe.ChangeMemRegion(other, remove: false);
        Assert.Equal(2, Mappings(other));
        fe.ChangeMemRegion(other, remove: true);
        SpinWait.SpinUntil(() => Mappings(other) == 1, T);
        Assert.Equal(1, Mappings(other));
        fe.Dispose();
        Assert.Equal(VhostUserDevice.ExitOk, h.WaitExit());
        Assert.Equal(1, Mappings(ram));
    }

    [Fact]
    public async Task BadConfigurationFailsWithOneSentence()
    {
        var log = new ListLogger();
        var rc = await VhostUserDevice.RunAsync(new DeviceOptions(), new TestTransport(), log, default);
        Assert.Equal(VhostUserDevice.ExitConfig, rc);
        Assert.Contains(log.Lines, l => l.Text.Contains("--socket-path"));

        rc = await VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = "/nonexistent-dir/x.sock" }, new TestTransport(), log, default);
        Assert.Equal(VhostUserDevice.ExitConfig, rc);
        Assert.True(log.Contains("does not exist"));

        rc = await VhostUserDevice.RunAsync(new DeviceOptions { ListenFd = 0 }, new TestTransport(), log, default);
        Assert.Equal(VhostUserDevice.ExitConfig, rc);
        Assert.True(log.Contains("--fd 0"));
    }

    [Fact]
    public async Task ASecondBackendOnALiveSocketIsRefusedButAStaleSocketIsReplaced()
    {
        using var h = new DeviceHarness();
        using var fe = h.Connect(); // makes sure it is listening
        var log = new ListLogger();
        var rc = await VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = h.SocketPath }, new TestTransport(), log, default);
        Assert.Equal(VhostUserDevice.ExitConfig, rc);
        Assert.True(log.Contains("already in use"), log.ToString());

        var stale = Path.Combine(Path.GetTempPath(), $"vdev-stale-{Environment.ProcessId}.sock");
        using (var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, 0))
            s.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(stale));
        using var cts = new CancellationTokenSource();
        var run = VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = stale }, new TestTransport(), log, cts.Token);
        using (VhostUserFrontend.Connect(stale, T)) { }
        Assert.Equal(VhostUserDevice.ExitOk, await run.WaitAsync(T));
    }

    [Fact]
    public async Task AnInheritedListeningFdIsServed()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vdev-fd-{Environment.ProcessId}.sock");
        File.Delete(path);
        var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, 0);
        s.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        s.Listen(1);
        int fd = (int)s.SafeHandle.DangerousGetHandle();
        s.SafeHandle.SetHandleAsInvalid(); // the device owns it now
        var log = new ListLogger();
        var transport = new TestTransport();
        using var cts = new CancellationTokenSource();
        var run = VhostUserDevice.RunAsync(new DeviceOptions { ListenFd = fd }, transport, log, cts.Token);
        using (var fe = VhostUserFrontend.Connect(path, T))
        {
            Assert.Equal(2ul, fe.GetU64(VhostUserRequest.GetQueueNum));
        }
        Assert.Equal(0, await run.WaitAsync(T));
        File.Delete(path);
    }

    [Fact]
    public void CapabilitiesAreTheVhostUserJsonOfAnFsBackend()
    {
        var sw = new StringWriter();
        VhostUserDevice.PrintCapabilities(sw);
        using var doc = System.Text.Json.JsonDocument.Parse(sw.ToString());
        Assert.Equal("fs", doc.RootElement.GetProperty("type").GetString());
    }
}
