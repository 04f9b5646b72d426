using System.Buffers.Binary;
using System.Collections.Concurrent;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>
/// The vdev's side of payloads in guest memory, with a stand-in daemon in this process: each memory table reaches the
/// daemon over the ring set's guest-memory channel with its descriptors, a READ of a mapped table arrives as a
/// guest-memory frame listing the checked guest addresses (split where the regions meet), the reply is the out header
/// alone, and a replaced table is dropped only once the request that named it has completed.
/// </summary>
public sealed class GuestMemoryFrameTransportTests : IDisposable
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-gm-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    /// <summary>The stand-in daemon's guest-memory channel: acknowledges every table, records tables and drops in order.</summary>
    private static Thread ServeChannel(ShmRingSet daemon, BlockingCollection<(GuestMemoryMessageKind Kind, ulong Generation, GuestMemoryRegion[] Regions, int Fds)> seen)
    {
        var thread = new Thread(() =>
        {
            var buffer = new byte[GuestMemoryMessage.MaxSize];
            var fds = new int[GuestMemoryMessage.MaxRegions];
            while (true)
            {
                nint n;
                int count;
                try
                {
                    n = Libc.ReceiveWithFds(daemon.GuestMemoryChannel!, buffer, fds, 0, out count, out _);
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
                for (int i = 0; i < count; i++) Libc.close(fds[i]);
                if (n <= 0) return;
                Assert.True(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, (int)n), out var kind, out uint regions, out ulong generation));
                var list = kind == GuestMemoryMessageKind.Table ? Enumerable.Range(0, (int)regions).Select(i => GuestMemoryMessage.ReadRegion(buffer.AsSpan(0, (int)n), i)).ToArray() : [];
                try
                {
                    seen.Add((kind, generation, list, count));
                }
                catch (ObjectDisposedException)
                {
                    return; // the test is over
                }
                if (kind != GuestMemoryMessageKind.Table) continue;
                var ack = new byte[GuestMemoryMessage.HeaderSize];
                GuestMemoryMessage.WriteHeader(ack, GuestMemoryMessageKind.Ack, 0, generation);
                Libc.SendWithFds(daemon.GuestMemoryChannel!, ack, default, Libc.MSG_NOSIGNAL);
            }
        }) { IsBackground = true };
        thread.Start();
        return thread;
    }

    [Fact]
    public async Task AReadOfAMappedTable_ListsItsCheckedRanges_AndAReplacedTableIsDroppedOnlyAfterItsRequestCompleted()
    {
        using var rings = ShmRingSet.Create(2);
        var f = rings.Fds;
        var daemon = ShmRingSet.Attach(new RingFds(Libc.dup(f.MemFd), f.Doorbells.Select(fd => Libc.dup(fd)).ToArray()) { GuestMemoryFd = Libc.dup(f.GuestMemoryFd!.Value) });
        using var seen = new BlockingCollection<(GuestMemoryMessageKind Kind, ulong Generation, GuestMemoryRegion[] Regions, int Fds)>();
        var channel = ServeChannel(daemon, seen);

        var log = new ListLogger();
        using var ram1 = new GuestRam(8 << 20, 0x1000_0000, "gm-ram1");
        using var ram2 = new GuestRam(8 << 20, 0x1080_0000, "gm-ram2");
        var sock = Path.Combine(_dir, "s.sock");
        var run = VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = sock, RequestQueues = 1 }, ShmRingTransport.Factory(rings, log), log, default);
        using var fe = VhostUserFrontend.Connect(sock, T);
        fe.Negotiate();
        fe.SetMemTable(ram1, ram2);
        var first = seen.Take();
        Assert.Equal(GuestMemoryMessageKind.Table, first.Kind);
        Assert.Equal([new GuestMemoryRegion(ram1.GuestBase, 8 << 20, 0), new GuestMemoryRegion(ram2.GuestBase, 8 << 20, 0)], first.Regions);
        Assert.Equal(2, first.Fds);
        var qs = fe.SetupQueues(ram1, 2, 64, 16 << 10);
        var q = qs[1];

        // A READ whose data descriptor crosses from region 1 into region 2.
        var read = FuseFrames.ReadRequest(7, 2, 3, 0, 12288);
        ulong req = ram1.GuestBase + (4 << 20), hdr = req + 4096, data = ram2.GuestBase - 4096;
        read.CopyTo(ram1.At(req, read.Length));
        ushort head = q.SubmitChain((req, (uint)read.Length, false), (hdr, 16, true), (data, 12288, true));
        var queue = daemon.GetQueue(1);
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var frame, T, default));
        Assert.Equal(RingRecordFlags.GuestMemory, frame.Flags);
        Assert.True(GuestMemoryFrame.TryParse(frame.Data, out ulong generation, out var direction, out var ranges, out var fuse));
        Assert.Equal(first.Generation, generation);
        Assert.Equal(GuestMemoryDirection.ToGuest, direction);
        var listed = new GuestRange[GuestMemoryFrame.RangeCount(ranges)];
        for (int i = 0; i < listed.Length; i++) listed[i] = GuestMemoryFrame.ReadRange(ranges, i);
        Assert.Equal([new GuestRange(data, 4096), new GuestRange(ram2.GuestBase, 8192)], listed);
        Assert.Equal(read, fuse.ToArray());
        ulong tag = frame.Tag;
        queue.Consumer.Release();

        // The table is replaced while the READ is in flight: the new one is announced, the old one not dropped yet.
        fe.SetMemTable(ram1, ram2);
        var second = seen.Take();
        Assert.Equal((GuestMemoryMessageKind.Table, true), (second.Kind, second.Generation > first.Generation));
        Assert.False(seen.TryTake(out _, 300), "a table was dropped while a request naming it was in flight");

        // The daemon wrote the data itself and answers with the header alone; the used length counts the data.
        var reply = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(reply, 16 + 12288);
        BinaryPrimitives.WriteUInt64LittleEndian(reply.AsSpan(8), 7);
        Assert.Equal(RingStatus.Ok, queue.Producer.Reserve(16, out var span, T, default));
        reply.CopyTo(span);
        queue.Producer.Commit(16, tag);
        var (h, len) = q.WaitUsed(T);
        Assert.Equal((head, 16u + 12288), (h, len));
        Assert.Equal((16u + 12288, 0, 7ul), FuseFrames.ReadOutHeader(ram1.At(hdr, 16)));
        Assert.True(seen.TryTake(out var drop, T));
        Assert.Equal((GuestMemoryMessageKind.Drop, first.Generation), (drop.Kind, drop.Generation));

        // A buffer outside every region is refused by the vdev itself: the chain comes back unanswered, nothing reaches the ring.
        read.CopyTo(ram1.At(req, read.Length));
        head = q.SubmitChain((req, (uint)read.Length, false), (hdr, 16, true), (ram2.GuestBase + (8 << 20) - 4096, 8192, true));
        Assert.Equal((head, 0u), q.WaitUsed(T));
        Assert.Equal(RingStatus.WouldBlock, queue.Consumer.TryPeek(out _));

        // ADD_MEM_REG makes a table of three regions, each handed over with its own descriptor again.
        using var ram3 = new GuestRam(4 << 20, 0x2000_0000, "gm-ram3");
        fe.ChangeMemRegion(ram3, remove: false);
        // (The replaced table's drop may come first: it goes as soon as nothing holds that table.)
        var third = seen.Take();
        while (third.Kind == GuestMemoryMessageKind.Drop) third = seen.Take();
        Assert.Equal((GuestMemoryMessageKind.Table, 3, 3), (third.Kind, third.Regions.Length, third.Fds));
        Assert.Equal(new GuestMemoryRegion(ram3.GuestBase, 4 << 20, 0), third.Regions[2]);

        fe.Disconnect();
        Assert.Equal(0, await run.WaitAsync(T));
        daemon.Dispose();
        channel.Join(T);
    }

    [Fact]
    public async Task ReplyPayloadsTheDaemonBuilds_GoToGuestMemory_ExceptASizeQuery_AndTheUsedLengthIsChecked()
    {
        using var rings = ShmRingSet.Create(2);
        var f = rings.Fds;
        var daemon = ShmRingSet.Attach(new RingFds(Libc.dup(f.MemFd), f.Doorbells.Select(fd => Libc.dup(fd)).ToArray()) { GuestMemoryFd = Libc.dup(f.GuestMemoryFd!.Value) });
        using var seen = new BlockingCollection<(GuestMemoryMessageKind Kind, ulong Generation, GuestMemoryRegion[] Regions, int Fds)>();
        var channel = ServeChannel(daemon, seen);
        var log = new ListLogger();
        using var ram1 = new GuestRam(8 << 20, 0x1000_0000, "gmb-ram1");
        using var ram2 = new GuestRam(8 << 20, 0x1080_0000, "gmb-ram2");
        var sock = Path.Combine(_dir, "b.sock");
        var run = VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = sock, RequestQueues = 1 }, ShmRingTransport.Factory(rings, log), log, default);
        using var fe = VhostUserFrontend.Connect(sock, T);
        fe.Negotiate();
        fe.SetMemTable(ram1, ram2);
        var table = seen.Take();
        var q = fe.SetupQueues(ram1, 2, 64, 16 << 10)[1];
        var queue = daemon.GetQueue(1);
        ulong req = ram1.GuestBase + (4 << 20), hdr = req + 4096, d1 = ram2.GuestBase - 1000, d2 = ram2.GuestBase + 8192;

        // READDIRPLUS: header in its own descriptor, the room in two more, one of them over the region boundary.
        var readdir = FuseFrames.Request(44, 8, 1, new byte[40]);
        BinaryPrimitives.WriteUInt32LittleEndian(readdir.AsSpan(FuseFrames.InHeader + 16), 8192);
        readdir.CopyTo(ram1.At(req, readdir.Length));
        ushort head = q.SubmitChain((req, (uint)readdir.Length, false), (hdr, 16, true), (d1, 4096, true), (d2, 4096, true));
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var frame, T, default));
        Assert.Equal(RingRecordFlags.GuestMemory, frame.Flags);
        Assert.True(GuestMemoryFrame.TryParse(frame.Data, out ulong generation, out var direction, out var ranges, out var fuse));
        Assert.Equal((table.Generation, GuestMemoryDirection.ToGuest), (generation, direction));
        var listed = new GuestRange[GuestMemoryFrame.RangeCount(ranges)];
        for (int i = 0; i < listed.Length; i++) listed[i] = GuestMemoryFrame.ReadRange(ranges, i);
        Assert.Equal([new GuestRange(d1, 1000), new GuestRange(ram2.GuestBase, 3096), new GuestRange(d2, 4096)], listed);
        Assert.Equal(readdir, fuse.ToArray());
        // The daemon built 5000 bytes there: the used length counts them.
        Answer(queue, frame.Tag, 16 + 5000, 8);
        Assert.Equal((head, 16u + 5000), q.WaitUsed(T));
        Assert.Equal((16u + 5000, 0, 8ul), FuseFrames.ReadOutHeader(ram1.At(hdr, 16)));

        // A header claiming more than the room: EIO.
        readdir.CopyTo(ram1.At(req, readdir.Length));
        head = q.SubmitChain((req, (uint)readdir.Length, false), (hdr, 16, true), (d2, 4096, true));
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out frame, T, default));
        Assert.Equal(RingRecordFlags.GuestMemory, frame.Flags);
        Answer(queue, frame.Tag, 16 + 4097, 8);
        Assert.Equal((head, 16u), q.WaitUsed(T));
        Assert.Equal((16u, -5, 8ul), FuseFrames.ReadOutHeader(ram1.At(hdr, 16)));

        // GETXATTR asking for the value goes the same way; a size query (size 0) goes the copy path.
        var getx = FuseFrames.Request(22, 9, 1, [.. new byte[8], .. "user.v\0"u8]);
        BinaryPrimitives.WriteUInt32LittleEndian(getx.AsSpan(FuseFrames.InHeader), 4096);
        getx.CopyTo(ram1.At(req, getx.Length));
        head = q.SubmitChain((req, (uint)getx.Length, false), (hdr, 16, true), (d1, 4096, true));
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out frame, T, default));
        Assert.Equal(RingRecordFlags.GuestMemory, frame.Flags);
        Answer(queue, frame.Tag, 16 + 3000, 9);
        Assert.Equal((head, 16u + 3000), q.WaitUsed(T));
        BinaryPrimitives.WriteUInt32LittleEndian(getx.AsSpan(FuseFrames.InHeader), 0);
        getx.CopyTo(ram1.At(req, getx.Length));
        head = q.SubmitChain((req, (uint)getx.Length, false), (hdr, 24, true));
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out frame, T, default));
        Assert.Equal(RingRecordFlags.None, frame.Flags);
        Assert.Equal(getx, frame.Data.ToArray());
        var sizeReply = new byte[24];
        BinaryPrimitives.WriteUInt32LittleEndian(sizeReply, 24);
        BinaryPrimitives.WriteUInt64LittleEndian(sizeReply.AsSpan(8), 9);
        BinaryPrimitives.WriteUInt32LittleEndian(sizeReply.AsSpan(16), 3000);
        ulong tag = frame.Tag;
        queue.Consumer.Release();
        Assert.Equal(RingStatus.Ok, queue.Producer.Reserve(24, out var span, T, default));
        sizeReply.CopyTo(span);
        queue.Producer.Commit(24, tag);
        Assert.Equal((head, 24u), q.WaitUsed(T));
        Assert.Equal(3000u, BinaryPrimitives.ReadUInt32LittleEndian(ram1.At(hdr + 16, 4)));

        fe.Disconnect();
        Assert.Equal(0, await run.WaitAsync(T));
        daemon.Dispose();
        channel.Join(T);
    }

    /// <summary>Releases the frame of <paramref name="tag"/> and answers it with an out header alone, <c>len</c> = <paramref name="len"/>.</summary>
    private static void Answer(RingQueue queue, ulong tag, uint len, ulong unique)
    {
        queue.Consumer.Release();
        var reply = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(reply, len);
        BinaryPrimitives.WriteUInt64LittleEndian(reply.AsSpan(8), unique);
        Assert.Equal(RingStatus.Ok, queue.Producer.Reserve(16, out var span, T, default));
        reply.CopyTo(span);
        queue.Producer.Commit(16, tag);
    }
}
