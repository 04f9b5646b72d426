using System.Buffers.Binary;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Tests.Device;
using Hypervisor.Vdev.Tests.Frontend;

namespace Hypervisor.Vdev.Tests.Virtio;

/// <summary>The split virtqueue as the guest driver sees it: chain rules, completions, notifications.</summary>
public sealed class VirtqueueTests : IDisposable
{
    private static readonly TimeSpan T = DeviceHarness.T;
    private readonly DeviceHarness _h;
    private readonly GuestRam _ram = new(64 << 20);
    private VhostUserFrontend _fe = null!;
    private FrontendQueue Q => _fe.Queues[1];

    public VirtqueueTests() => _h = new DeviceHarness(requestQueues: 4);

    private void Ready(ulong? features = null, int size = 64) => _fe = _h.Ready(_ram, size, features);

    /// <summary>Proves the queue still serves: a well-formed request gets its echo.</summary>
    private void AssertStillServes(ulong unique = 1000)
    {
        var reply = Q.Transact(FuseFrames.GetattrRequest(unique, 1), 4096, T);
        Assert.Equal(unique, FuseFrames.ReadOutHeader(reply).Unique);
        Assert.Equal(0, FuseFrames.ReadOutHeader(reply).Error);
    }

    /// <summary>Publishes a hand-built chain at <paramref name="head"/>, kicks, and returns its used length.</summary>
    private uint PublishAndWait(ushort head, params ushort[] others)
    {
        Q.TrackChain(head, others);
        Q.Publish(head);
        Q.KickAlways();
        var (h, len) = Q.WaitUsed(T);
        Assert.Equal(head, h);
        return len;
    }

    [Fact]
    public void RequestsRoundTripDirectIndirectAndScatteredOverSegments()
    {
        Ready();
        var read = FuseFrames.ReadRequest(5, 2, 3, 0, 20000);
        foreach (var indirect in new[] { false, true })
            foreach (var (rs, ws) in new[] { (1, 1), (3, 1), (2, 5), (7, 9) })
            {
                ushort head = Q.Submit(read, 16 + 20000, indirect, rs, ws);
                var (h, len) = Q.WaitUsed(T);
                Assert.Equal(head, h);
                Assert.Equal(16u + 20000, len);
                var reply = Q.ReplyBytes(h, len);
                Assert.Equal(5ul, FuseFrames.ReadOutHeader(reply).Unique);
                Assert.Equal(TestTransport.Answer(read), reply);
            }
        // The transport saw the whole frame, gathered in order, each time.
        Assert.All(_h.Transport.Received, r => Assert.Equal(read, r.Frame));
    }

    [Fact]
    public void ADescriptorOutsideGuestMemoryIsReturnedEmptyAndTheQueueKeepsServing()
    {
        Ready();
        ushort d0 = Q.AllocDesc(), d1 = Q.AllocDesc();
        var frame = FuseFrames.GetattrRequest(1, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(d0), frame.Length));
        Q.WriteDesc(d0, Q.RequestGpa(d0), (uint)frame.Length, VirtqDescFlags.Next, d1);
        // Reply buffer starts inside RAM but runs past its end.
        ulong end = _ram.GuestBase + (ulong)_ram.Size;
        Q.WriteDesc(d1, end - 100, 4096, VirtqDescFlags.Write);
        Assert.Equal(0u, PublishAndWait(d0, d1));
        // Entirely outside, below the RAM.
        Q.WriteDesc(d0, 0x1000, (uint)frame.Length, VirtqDescFlags.Next, d1);
        Q.WriteDesc(d1, Q.ReplyGpa(d0), 4096, VirtqDescFlags.Write);
        Assert.Equal(0u, PublishAndWait(d0, d1));
        Assert.True(_h.Transport.Received.IsEmpty);
        Assert.True(_h.Log.Contains("outside guest memory"));
        AssertStillServes();
    }

    [Fact]
    public void ADescriptorLoopIsCaught()
    {
        Ready();
        ushort a = Q.AllocDesc(), b = Q.AllocDesc(), c = Q.AllocDesc();
        var frame = FuseFrames.GetattrRequest(1, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(a), frame.Length));
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)frame.Length, VirtqDescFlags.Next, b);
        Q.WriteDesc(b, Q.ReplyGpa(a), 64, VirtqDescFlags.Write | VirtqDescFlags.Next, c);
        Q.WriteDesc(c, Q.ReplyGpa(a) + 64, 64, VirtqDescFlags.Write | VirtqDescFlags.Next, b);
        Assert.Equal(0u, PublishAndWait(a, b, c));
        Assert.True(_h.Log.Contains("loop"));
        AssertStillServes();
    }

    [Fact]
    public void AFloodOfBadChainsIsLoggedABoundedNumberOfTimes()
    {
        Ready();
        for (int i = 0; i < 50; i++)
        {
            ushort a = Q.AllocDesc();
            Q.WriteDesc(a, 0x10, 64, VirtqDescFlags.None); // outside guest memory
            Assert.Equal(0u, PublishAndWait(a));
        }
        Assert.Equal(10, _h.Log.Count("rejected ("));
        AssertStillServes();
    }

    [Fact]
    public void ANextIndexOutsideTheQueueIsCaught()
    {
        Ready();
        ushort a = Q.AllocDesc();
        var frame = FuseFrames.GetattrRequest(1, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(a), frame.Length));
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)frame.Length, VirtqDescFlags.Next, 5000);
        Assert.Equal(0u, PublishAndWait(a));
        AssertStillServes();
    }

    [Fact]
    public void NestedIndirectTablesAreRejected()
    {
        Ready();
        ushort head = Q.AllocDesc();
        ulong outer = Q.IndirectGpa(head), inner = outer + 1024;
        var frame = FuseFrames.GetattrRequest(1, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(head), frame.Length));
        Q.WriteDescAt(inner, Q.RequestGpa(head), (uint)frame.Length, VirtqDescFlags.None);
        Q.WriteDescAt(outer, inner, 16, VirtqDescFlags.Indirect);
        Q.WriteDesc(head, outer, 16, VirtqDescFlags.Indirect);
        Assert.Equal(0u, PublishAndWait(head));
        Assert.True(_h.Log.Contains("nested indirect"));
        AssertStillServes();
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(24u)]
    public void IndirectTablesMustBeANonZeroMultipleOf16(uint len)
    {
        Ready();
        ushort head = Q.AllocDesc();
        Q.WriteDesc(head, Q.IndirectGpa(head), len, VirtqDescFlags.Indirect);
        Assert.Equal(0u, PublishAndWait(head));
        AssertStillServes();
    }

    [Fact]
    public void IndirectDescriptorsNeedTheFeature()
    {
        Ready(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx);
        Assert.Equal(0ul, _fe.Features & VirtioFeatures.RingIndirectDesc);
        ushort head = Q.Submit(FuseFrames.GetattrRequest(1, 1), 4096, indirect: true);
        var (h, len) = Q.WaitUsed(T);
        Assert.Equal(head, h);
        Assert.Equal(0u, len);
        Assert.True(_h.Log.Contains("without VIRTIO_RING_F_INDIRECT_DESC"));
        AssertStillServes();
    }

    [Fact]
    public void AnOversizedIndirectTableIsRejected()
    {
        Ready();
        ushort head = Q.AllocDesc();
        // 32769 entries: more than 16-bit indices can address, all pointing at one small buffer chained in order.
        const int n = 32769;
        ulong table = _ram.Alloc((long)n * 16, 16);
        var frame = FuseFrames.GetattrRequest(1, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(head), frame.Length));
        for (int i = 0; i < n; i++)
            Q.WriteDescAt(table + (ulong)i * 16, Q.RequestGpa(head), 1, i == n - 1 ? 0 : VirtqDescFlags.Next, (ushort)(i + 1));
        Q.WriteDesc(head, table, n * 16, VirtqDescFlags.Indirect);
        Assert.Equal(0u, PublishAndWait(head));
        Assert.True(_h.Log.Contains("indirect table of 32769 entries"));
        AssertStillServes();
    }

    [Fact]
    public void ADirectChainLongerThanTheQueueIsRejected()
    {
        Ready(size: 8);
        // All 8 descriptors chained, the last pointing back to the first: 9 steps exceed the queue size.
        var frame = FuseFrames.GetattrRequest(1, 1);
        ushort[] d = new ushort[8];
        for (int i = 0; i < 8; i++) d[i] = Q.AllocDesc();
        frame.CopyTo(_ram.At(Q.RequestGpa(d[0]), frame.Length));
        for (int i = 0; i < 8; i++) Q.WriteDesc(d[i], Q.RequestGpa(d[0]), 5, VirtqDescFlags.Next, d[(i + 1) % 8]);
        Assert.Equal(0u, PublishAndWait(d[0], d[1..]));
        AssertStillServes();
    }

    [Fact]
    public void AReadableDescriptorAfterAWritableOneIsRejected()
    {
        Ready();
        ushort a = Q.AllocDesc(), b = Q.AllocDesc(), c = Q.AllocDesc();
        var frame = FuseFrames.GetattrRequest(1, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(a), frame.Length));
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)frame.Length, VirtqDescFlags.Next, b);
        Q.WriteDesc(b, Q.ReplyGpa(a), 64, VirtqDescFlags.Write | VirtqDescFlags.Next, c);
        Q.WriteDesc(c, Q.RequestGpa(a), 8, VirtqDescFlags.None);
        Assert.Equal(0u, PublishAndWait(a, b, c));
        Assert.True(_h.Log.Contains("readable descriptor after"));
        AssertStillServes();
    }

    [Fact]
    public void AFrameShorterThanAFuseHeaderIsReturnedEmpty()
    {
        Ready();
        ushort head = Q.Submit(new byte[12], 64);
        var (h, len) = Q.WaitUsed(T);
        Assert.Equal((head, 0u), (h, len));
        AssertStillServes();
    }

    [Fact]
    public void HiprioForgetChainsAreReturnedWithoutAReply()
    {
        Ready();
        var hp = _fe.Queues[0];
        for (int i = 0; i < 100; i++)
        {
            ushort head = hp.Submit(FuseFrames.ForgetRequest((ulong)(i + 1), 5, 1), 0);
            var (h, len) = hp.WaitUsed(T);
            Assert.Equal((head, 0u), (h, len));
        }
        Assert.Equal(100, _h.Transport.Received.Count(r => r.Queue == 0 && r.Opcode == FuseFrames.Forget && !r.ExpectsReply));
        Assert.Equal(0, hp.InFlight);
    }

    [Fact]
    public void EventIdxSuppressesInterruptsUntilUsedEventIsPassed()
    {
        Ready();
        Q.AutoUsedEvent = false;
        Q.TakeCalls();
        // Ask for an interrupt only once the used index passes 3 (i.e. after the 4th completion).
        Q.SetUsedEvent(3);
        for (ulong i = 0; i < 3; i++) Q.Submit(FuseFrames.GetattrRequest(i + 1, 1), 4096);
        SpinWait.SpinUntil(() => Q.UsedIdx == 3, T);
        Assert.Equal(3, Q.UsedIdx);
        Thread.Sleep(50);
        Assert.Equal(0ul, Q.TakeCalls());
        Q.Submit(FuseFrames.GetattrRequest(4, 1), 4096);
        Assert.True(FrontendFds.WaitReadable(Q.CallFd, 5000), "no interrupt when used_event was crossed");
        Assert.Equal(1ul, Q.TakeCalls());
    }

    [Fact]
    public void EventIdxLetsTheDeviceSuppressKicksAndItPublishesAvailEvent()
    {
        Ready();
        for (ulong i = 0; i < 20; i++) Q.Transact(FuseFrames.GetattrRequest(i + 1, 1), 4096, T);
        // After consuming everything the device asks to be kicked at the next new entry.
        Assert.Equal(Q.NextAvail, Q.AvailEvent);
        // Two entries published at once: the first crosses avail_event (kick), the second does not.
        ushort old = Q.NextAvail;
        Q.Submit(FuseFrames.GetattrRequest(100, 1), 4096, kick: false);
        Q.Submit(FuseFrames.GetattrRequest(101, 1), 4096, kick: false);
        Assert.True(Q.Notify(old));
        Q.WaitUsed(T);
        Q.WaitUsed(T);
        SpinWait.SpinUntil(() => Q.AvailEvent == Q.NextAvail, T);
        old = Q.NextAvail;
        var before = Q.KicksSent;
        Q.Submit(FuseFrames.GetattrRequest(102, 1), 4096, kick: false);
        // A driver that already published past avail_event without kicking... the next publish needs no kick.
        ushort mid = Q.NextAvail;
        Q.Submit(FuseFrames.GetattrRequest(103, 1), 4096, kick: false);
        Assert.False(Q.Notify(mid));
        Assert.True(Q.Notify(old));
        Assert.Equal(before + 1, Q.KicksSent);
        Q.WaitUsed(T);
        Q.WaitUsed(T);
    }

    [Fact]
    public void WithoutEventIdxNoInterruptIsHonoured()
    {
        Ready(VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc);
        Q.TakeCalls();
        Q.SetAvailFlags(SplitVirtqueue.AvailFlagNoInterrupt);
        Q.Submit(FuseFrames.GetattrRequest(1, 1), 4096);
        SpinWait.SpinUntil(() => Q.UsedIdx == 1, T);
        Thread.Sleep(50);
        Assert.Equal(0ul, Q.TakeCalls());
        Q.SetAvailFlags(0);
        Q.Submit(FuseFrames.GetattrRequest(2, 1), 4096);
        Assert.True(FrontendFds.WaitReadable(Q.CallFd, 5000));
        Assert.Equal(2, Q.UsedIdx);
        // NO_NOTIFY is clear while the device is idle, so the driver kicks.
        Assert.Equal(0, Q.UsedFlags & SplitVirtqueue.UsedFlagNoNotify);
    }

    [Fact]
    public void RequestQueuesAreServedInParallel()
    {
        Ready();
        // Each queue's first request waits inside Submit until all four queues are inside Submit at once:
        // this can only finish if the four queues have their own workers.
        using var all = new CountdownEvent(4);
        int timedOut = 0;
        _h.Transport.OnSubmit = r =>
        {
            if (r.Unique >= 500) return;
            all.Signal();
            if (!all.Wait(T)) Interlocked.Increment(ref timedOut);
        };
        for (int q = 1; q <= 4; q++) _fe.Queues[q].Submit(FuseFrames.GetattrRequest((ulong)q, 1), 4096);
        for (int q = 1; q <= 4; q++)
        {
            var (h, len) = _fe.Queues[q].WaitUsed(T);
            Assert.Equal((ulong)q, FuseFrames.ReadOutHeader(_fe.Queues[q].ReplyBytes(h, len)).Unique);
        }
        Assert.Equal(0, timedOut);
        var threads = new List<Thread>();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        for (int q = 1; q <= 4; q++)
        {
            var queue = _fe.Queues[q];
            var t = new Thread(() =>
            {
                try
                {
                    for (ulong i = 0; i < 200; i++)
                    {
                        ulong u = 500 + (ulong)queue.Index * 1000 + i;
                        var reply = queue.Transact(FuseFrames.GetattrRequest(u, 1), 4096, T, indirect: (i & 1) == 0);
                        Assert.Equal(u, FuseFrames.ReadOutHeader(reply).Unique);
                    }
                }
                catch (Exception e) { errors.Enqueue(e); }
            });
            t.Start();
            threads.Add(t);
        }
        foreach (var t in threads) t.Join();
        Assert.Empty(errors);
        Assert.Equal(4, _h.Transport.Received.Where(r => r.Unique() >= 500).Select(r => r.Queue).Distinct().Count());
    }

    [Fact]
    public void WhenTheDaemonDiesEveryOutstandingAndLaterRequestGetsEio()
    {
        Ready();
        _h.Transport.Hold = true;
        var heads = new HashSet<ushort>();
        for (ulong i = 0; i < 5; i++) heads.Add(Q.Submit(FuseFrames.GetattrRequest(10 + i, 1), 4096));
        ushort tiny = Q.Submit(FuseFrames.GetattrRequest(20, 1), 8); // no room for an out header
        SpinWait.SpinUntil(() => _h.Transport.Held.Count == 6, T);
        _h.Transport.Dead = true;
        _h.Transport.Sink.TransportFailed("daemon exited");
        var seen = new Dictionary<ushort, (uint, byte[])>();
        for (int i = 0; i < 6; i++)
        {
            var (h, len) = Q.WaitUsed(T);
            seen[h] = (len, Q.ReplyBytes(h, len));
        }
        foreach (var h in heads)
        {
            var (len, reply) = seen[h];
            Assert.Equal(16u, len);
            var (l, err, u) = FuseFrames.ReadOutHeader(reply);
            Assert.Equal((16u, -5), (l, err));
            Assert.InRange(u, 10ul, 14ul);
        }
        Assert.Equal(0u, seen[tiny].Item1);
        // Late replies from the dead daemon are ignored.
        Assert.Equal(0, _h.Transport.ReleaseHeld());
        // Later requests are answered EIO straight away.
        var later = Q.Transact(FuseFrames.GetattrRequest(30, 1), 4096, T);
        Assert.Equal((16u, -5, 30ul), FuseFrames.ReadOutHeader(later));
        Assert.Equal(1, _h.Log.Count("FUSE daemon is gone"));
        _h.Transport.Sink.TransportFailed("again");
        Assert.Equal(1, _h.Log.Count("FUSE daemon is gone"));
    }

    [Fact]
    public void AReplyLargerThanTheGuestBufferBecomesEio()
    {
        Ready();
        _h.Transport.MakeReply = f => { var r = TestTransport.Answer(f); Array.Resize(ref r, 5000); BinaryPrimitives.WriteUInt32LittleEndian(r, 5000); return r; };
        var reply = Q.Transact(FuseFrames.GetattrRequest(77, 1), 4096, T);
        Assert.Equal((16u, -5, 77ul), FuseFrames.ReadOutHeader(reply));
        Assert.True(_h.Log.Contains("does not fit"));
    }

    [Fact]
    public async Task GetVringBaseDrainsStopsAndTheRingResumesWhereItLeftOff()
    {
        Ready();
        for (ulong i = 0; i < 5; i++) Q.Transact(FuseFrames.GetattrRequest(i + 1, 1), 4096, T);
        _h.Transport.Hold = true;
        Q.Submit(FuseFrames.GetattrRequest(6, 1), 4096);
        SpinWait.SpinUntil(() => _h.Transport.Held.Count == 1, T);
        // Release the held reply while GET_VRING_BASE is draining.
        var release = Task.Run(() => { Thread.Sleep(200); _h.Transport.ReleaseHeld(); });
        _h.Transport.Hold = false;
        Assert.Equal(6u, _fe.GetVringBase(1));
        await release;
        var (h, len) = Q.WaitUsed(T);
        Assert.Equal(6ul, FuseFrames.ReadOutHeader(Q.ReplyBytes(h, len)).Unique);
        // Stopped: a new request is not processed...
        ushort head = Q.Submit(FuseFrames.GetattrRequest(7, 1), 4096);
        Thread.Sleep(100);
        Assert.Equal(6, Q.UsedIdx);
        // ...until the ring is restarted at the index the device returned.
        _fe.StartQueue(Q, 6);
        var (h2, len2) = Q.WaitUsed(T);
        Assert.Equal(head, h2);
        Assert.Equal(7ul, FuseFrames.ReadOutHeader(Q.ReplyBytes(h2, len2)).Unique);
    }

    [Fact]
    public void StoppingARingReleasesASubmitBlockedOnAFullTransport()
    {
        Ready();
        _h.Transport.BlockUntilCancelled = true;
        ushort head = Q.Submit(FuseFrames.GetattrRequest(61, 1), 4096);
        Thread.Sleep(100);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(1u, _fe.GetVringBase(1));
        Assert.True(sw.Elapsed < _h.Options.DrainTimeout, $"GET_VRING_BASE took {sw.Elapsed}, as long as the drain it must not wait for");
        // The request that could not be delivered was answered EIO before the ring stopped.
        var (h, len) = Q.WaitUsed(T);
        Assert.Equal(head, h);
        Assert.Equal((16u, -5, 61ul), FuseFrames.ReadOutHeader(Q.ReplyBytes(h, len)));
    }

    [Fact]
    public void ATransportThatThrowsCostsTheGuestOneEioNotTheQueue()
    {
        Ready();
        _h.Transport.OnSubmit = r => { if (r.Unique == 13) throw new InvalidOperationException("transport bug"); };
        var reply = Q.Transact(FuseFrames.GetattrRequest(13, 1), 4096, T);
        Assert.Equal((16u, -5, 13ul), FuseFrames.ReadOutHeader(reply));
        Assert.True(_h.Log.Contains("the transport failed on opcode 3 unique 13"));
        AssertStillServes();
    }

    [Fact]
    public void MemoryRegionsCanBeAddedAndRemovedWhileRunning()
    {
        Ready();
        using var extra = new GuestRam(1 << 20, guestBase: 0x8000_0000);
        _fe.ChangeMemRegion(extra, remove: false);
        // A reply buffer in the added region.
        ushort a = Q.AllocDesc(), b = Q.AllocDesc();
        var frame = FuseFrames.GetattrRequest(55, 1);
        frame.CopyTo(_ram.At(Q.RequestGpa(a), frame.Length));
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)frame.Length, VirtqDescFlags.Next, b);
        Q.WriteDesc(b, extra.GuestBase + 4096, 4096, VirtqDescFlags.Write);
        Assert.Equal((uint)(16 + 16), PublishAndWait(a, b));
        Assert.Equal(55ul, FuseFrames.ReadOutHeader(extra.At(extra.GuestBase + 4096, 16)).Unique);
        _fe.ChangeMemRegion(extra, remove: true);
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)frame.Length, VirtqDescFlags.Next, b);
        Q.WriteDesc(b, extra.GuestBase + 4096, 4096, VirtqDescFlags.Write);
        Assert.Equal(0u, PublishAndWait(a, b));
        AssertStillServes();
        Assert.False(_fe.SendWithAck(VhostUserRequest.RemMemReg, new byte[40]));
    }

    [Fact]
    public void ABufferSpanningAdjacentRegionsIsSplitAcrossThem()
    {
        // Two memfds back contiguous guest-physical ranges (as two NUMA nodes do); the reply buffer straddles the seam.
        using var high = new GuestRam(1 << 20, guestBase: _ram.GuestBase + (ulong)_ram.Size);
        _fe = _h.Connect();
        _fe.Negotiate();
        _fe.SetMemTable(_ram, high);
        _fe.SetupQueues(_ram, 2, 64);
        var read = FuseFrames.ReadRequest(8, 2, 3, 0, 3000);
        ushort a = Q.AllocDesc(), b = Q.AllocDesc();
        read.CopyTo(_ram.At(Q.RequestGpa(a), read.Length));
        ulong seam = high.GuestBase;
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)read.Length, VirtqDescFlags.Next, b);
        Q.WriteDesc(b, seam - 1000, 4000, VirtqDescFlags.Write);
        Assert.Equal(16u + 3000, PublishAndWait(a, b));
        var expected = TestTransport.Answer(read);
        Assert.Equal(expected[..1000], _ram.At(seam - 1000, 1000).ToArray());
        Assert.Equal(expected[1000..], high.At(seam, expected.Length - 1000).ToArray());
        // One byte past the second region is still refused.
        Q.WriteDesc(a, Q.RequestGpa(a), (uint)read.Length, VirtqDescFlags.Next, b);
        Q.WriteDesc(b, seam - 1000, (uint)(1000 + high.Size + 1), VirtqDescFlags.Write);
        Assert.Equal(0u, PublishAndWait(a, b));
    }

    [Fact]
    public void RandomDescriptorTablesNeverCrashTheDeviceOrStopOtherQueues()
    {
        Ready();
        var rng = new Random(12345);
        ulong scratch = _ram.Alloc(1 << 20, 4096);
        ulong ramEnd = _ram.GuestBase + (ulong)_ram.Size;
        int rounds = 0, broken = 0;
        for (; rounds < 300; rounds++)
        {
            // Random bytes in the scratch area double as random indirect tables and frames.
            rng.NextBytes(_ram.At(scratch, 1 << 20));
            for (int i = 0; i < Q.Size; i++)
            {
                ulong addr = rng.Next(6) switch
                {
                    0 => 0,
                    1 => ramEnd - (ulong)rng.Next(0, 4096),
                    2 => (ulong)rng.NextInt64(),
                    _ => scratch + (ulong)rng.Next(0, 1 << 20),
                };
                uint len = rng.Next(4) == 0 ? (uint)rng.Next() : (uint)rng.Next(0, 70000);
                Q.WriteDesc(i, addr, len, (VirtqDescFlags)rng.Next(8), (ushort)rng.Next(0, Q.Size + 4));
            }
            int n = rng.Next(1, 8);
            // After a restart the device resumes at the driver's avail index: entries skipped then are never used,
            // so count completions from the used index as it stands now.
            ushort target = (ushort)(Q.UsedIdx + n);
            for (int i = 0; i < n; i++) Q.Publish((ushort)rng.Next(0, Q.Size + 2));
            Q.KickAlways();
            bool done = SpinWait.SpinUntil(() => Q.UsedIdx == target || _h.Log.Contains("queue 1 marked broken") || _h.Log.Contains("queue 1: worker failed"), T);
            Assert.True(done, "queue 1 neither completed nor broke; log:\n" + _h.Log);
            if (Q.UsedIdx != target)
            {
                // Broken (a repeated or out-of-range head): restart the ring where the driver stands.
                broken++;
                _fe.GetVringBase(1);
                Assert.False(_h.Log.Contains("worker failed"), _h.Log.ToString());
                _h.Log.Lines.Clear();
                _fe.StartQueue(Q, Q.NextAvail);
            }
            while (Q.TryTakeUsed(out _, out _)) { }
        }
        Assert.True(broken < rounds, "every round broke the ring; the chains never reached validation");
        Assert.False(_h.Log.Contains("worker failed"), _h.Log.ToString());
        // Other queues were never disturbed.
        var other = _fe.Queues[2];
        var reply = other.Transact(FuseFrames.GetattrRequest(4242, 1), 4096, T);
        Assert.Equal(4242ul, FuseFrames.ReadOutHeader(reply).Unique);
        Assert.False(_h.Run.IsCompleted);
    }

    [Fact]
    public void ACorruptAvailIndexBreaksOnlyThatQueue()
    {
        Ready();
        Q.SetAvailIdx(1000);
        Q.KickAlways();
        SpinWait.SpinUntil(() => _h.Log.Contains("marked broken"), T);
        Assert.True(_h.Log.Contains("queue 1 marked broken"));
        var other = _fe.Queues[2];
        var reply = other.Transact(FuseFrames.GetattrRequest(9, 1), 4096, T);
        Assert.Equal(9ul, FuseFrames.ReadOutHeader(reply).Unique);
    }

    public void Dispose()
    {
        _fe?.Dispose();
        _h.Dispose();
        _ram.Dispose();
    }
}

internal static class ReceivedExtensions
{
    public static ulong Unique(this (ulong Tag, int Queue, uint Opcode, byte[] Frame, bool ExpectsReply) r)
        => BinaryPrimitives.ReadUInt64LittleEndian(r.Frame.AsSpan(8));
}
