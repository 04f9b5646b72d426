using System.Runtime.CompilerServices;
using Hypervisor.Interop;
using Hypervisor.Protocol.Virtio;

namespace Hypervisor.Vdev.Tests.Frontend;

/// <summary>
/// The driver side of one split virtqueue in <see cref="GuestRam"/>: places descriptor chains (direct or
/// through an indirect table), publishes them in the avail ring, kicks (honouring avail_event / NO_NOTIFY),
/// and takes used elements. One thread per queue. Each in-flight chain owns the buffer slot of its head
/// descriptor: an indirect-table area, then a request area, then a reply area.
/// </summary>
public sealed unsafe class FrontendQueue : IDisposable
{
    private readonly VhostUserFrontend _frontend;
    private readonly Stack<ushort> _free = new();
    private readonly List<ushort>[] _chains;
    private readonly ulong _slotBase;
    private const int IndirectArea = 4096;
    private readonly List<(ulong, uint, VirtqDescFlags)> _pieces = new(16);

    public int Index { get; }
    public int Size { get; }
    public GuestRam Ram { get; }
    public ulong DescGpa { get; }
    public ulong AvailGpa { get; }
    public ulong UsedGpa { get; }
    public int KickFd { get; }
    public int CallFd { get; }
    public bool EventIdx { get; }
    public int SlotBytes { get; }
    /// <summary>Bytes of request (device-readable) space per slot.</summary>
    public int RequestArea => (SlotBytes - IndirectArea) / 2;
    /// <summary>Bytes of reply (device-writable) space per slot.</summary>
    public int ReplyArea => (SlotBytes - IndirectArea) / 2;
    /// <summary>The driver's next avail index (free-running).</summary>
    public ushort NextAvail { get; private set; }
    /// <summary>The driver's next used index to consume (free-running).</summary>
    public ushort LastUsed { get; private set; }
    /// <summary>Kicks actually sent (after suppression).</summary>
    public long KicksSent { get; private set; }
    /// <summary>
    /// With EVENT_IDX, move used_event to the next used index after each completion taken (what Linux's
    /// virtqueue_enable_cb does), so the device interrupts for the next one. Off: the test controls used_event.
    /// </summary>
    public bool AutoUsedEvent { get; set; } = true;
    /// <summary>Chains currently owned by the device.</summary>
    public int InFlight => Size - _free.Count;

    internal FrontendQueue(VhostUserFrontend frontend, GuestRam ram, int index, int size, int slotBytes, bool eventIdx)
    {
        _frontend = frontend;
        Ram = ram;
        Index = index;
        Size = size;
        SlotBytes = slotBytes;
        EventIdx = eventIdx;
        DescGpa = ram.Alloc(SplitVirtqueue.DescTableBytes(size), 4096);
        AvailGpa = ram.Alloc(SplitVirtqueue.AvailRingBytes(size), 4096);
        UsedGpa = ram.Alloc(SplitVirtqueue.UsedRingBytes(size), 4096);
        _slotBase = ram.Alloc((long)slotBytes * size, 4096);
        _chains = new List<ushort>[size];
        for (int i = size - 1; i >= 0; i--) _free.Push((ushort)i);
        KickFd = FrontendFds.NewEventFd();
        CallFd = FrontendFds.NewEventFd();
    }

    // ---- raw ring access (for tests that break the rules on purpose) ----

    /// <summary>Writes descriptor <paramref name="i"/> of the ring's table.</summary>
    public void WriteDesc(int i, ulong addr, uint len, VirtqDescFlags flags, ushort next = 0)
        => WriteDescAt(DescGpa + (ulong)(i * VirtqDesc.Size), addr, len, flags, next);

    /// <summary>Writes a descriptor at any guest address (an indirect table entry).</summary>
    public void WriteDescAt(ulong gpa, ulong addr, uint len, VirtqDescFlags flags, ushort next = 0)
        => Unsafe.WriteUnaligned(ref Ram.At(gpa, VirtqDesc.Size)[0], new VirtqDesc { Addr = addr, Len = len, Flags = flags, Next = next });

    /// <summary>Makes the chain at <paramref name="head"/> available (ring entry, then a release store of idx).</summary>
    public void Publish(ushort head)
    {
        Unsafe.WriteUnaligned(ref Ram.At(AvailGpa + (ulong)SplitVirtqueue.AvailRingEntryOffset(NextAvail & (Size - 1)), 2)[0], head);
        NextAvail++;
        Volatile.Write(ref Unsafe.As<byte, ushort>(ref Ram.At(AvailGpa + SplitVirtqueue.AvailIdxOffset, 2)[0]), NextAvail);
    }

    /// <summary>Overwrites avail->idx (for tests of a corrupt ring).</summary>
    public void SetAvailIdx(ushort idx)
    {
        NextAvail = idx;
        Volatile.Write(ref Unsafe.As<byte, ushort>(ref Ram.At(AvailGpa + SplitVirtqueue.AvailIdxOffset, 2)[0]), idx);
    }

    /// <summary>The device's avail_event (with EVENT_IDX).</summary>
    public ushort AvailEvent => Volatile.Read(ref Unsafe.As<byte, ushort>(ref Ram.At(UsedGpa + (ulong)SplitVirtqueue.AvailEventOffset(Size), 2)[0]));
    /// <summary>The device's used->flags.</summary>
    public ushort UsedFlags => Volatile.Read(ref Unsafe.As<byte, ushort>(ref Ram.At(UsedGpa + SplitVirtqueue.UsedFlagsOffset, 2)[0]));
    /// <summary>The device's used->idx.</summary>
    public ushort UsedIdx => Volatile.Read(ref Unsafe.As<byte, ushort>(ref Ram.At(UsedGpa + SplitVirtqueue.UsedIdxOffset, 2)[0]));

    /// <summary>Sets used_event (EVENT_IDX: interrupt me when used->idx passes this).</summary>
    public void SetUsedEvent(ushort v)
        => Volatile.Write(ref Unsafe.As<byte, ushort>(ref Ram.At(AvailGpa + (ulong)SplitVirtqueue.UsedEventOffset(Size), 2)[0]), v);

    /// <summary>Sets avail->flags (VIRTQ_AVAIL_F_NO_INTERRUPT without EVENT_IDX).</summary>
    public void SetAvailFlags(ushort v)
        => Volatile.Write(ref Unsafe.As<byte, ushort>(ref Ram.At(AvailGpa + SplitVirtqueue.AvailFlagsOffset, 2)[0]), v);

    /// <summary>Kicks unconditionally.</summary>
    public void KickAlways()
    {
        FrontendFds.SignalEventFd(KickFd);
        KicksSent++;
    }

    /// <summary>
    /// Kicks unless the device suppressed it: with EVENT_IDX when avail->idx did not cross avail_event
    /// since <paramref name="oldAvail"/>, without it when used->flags has NO_NOTIFY. Returns whether it kicked.
    /// </summary>
    public bool Notify(ushort oldAvail)
    {
        Interlocked.MemoryBarrier();
        bool kick = EventIdx
            ? SplitVirtqueue.NeedEvent(AvailEvent, NextAvail, oldAvail)
            : (UsedFlags & SplitVirtqueue.UsedFlagNoNotify) == 0;
        if (kick) KickAlways();
        return kick;
    }

    /// <summary>Reads and resets the call eventfd: how many interrupts the device sent since the last read.</summary>
    public ulong TakeCalls() => FrontendFds.ReadEventFd(CallFd);

    // ---- chains ----

    /// <summary>Allocates a descriptor index (throws when the queue is full).</summary>
    public ushort AllocDesc() => _free.Count > 0 ? _free.Pop() : throw new InvalidOperationException($"queue {Index} has no free descriptors");

    /// <summary>Guest address of the request area of the slot of <paramref name="head"/>.</summary>
    public ulong RequestGpa(ushort head) => _slotBase + (ulong)head * (ulong)SlotBytes + IndirectArea;
    /// <summary>Guest address of the reply area of the slot of <paramref name="head"/>.</summary>
    public ulong ReplyGpa(ushort head) => RequestGpa(head) + (ulong)RequestArea;
    /// <summary>Guest address of the indirect-table area of the slot of <paramref name="head"/> (256 entries).</summary>
    public ulong IndirectGpa(ushort head) => _slotBase + (ulong)head * (ulong)SlotBytes;

    /// <summary>
    /// Publishes a chain of <paramref name="pieces"/> at guest addresses the caller chose (any memory region), through
    /// an indirect table, and kicks; returns the head.
    /// </summary>
    public ushort SubmitChain(params (ulong Addr, uint Len, bool Writable)[] pieces)
    {
        ushort head = AllocDesc();
        ulong table = IndirectGpa(head);
        for (int i = 0; i < pieces.Length; i++)
        {
            var (a, l, w) = pieces[i];
            bool last = i == pieces.Length - 1;
            WriteDescAt(table + (ulong)(i * VirtqDesc.Size), a, l, (w ? VirtqDescFlags.Write : VirtqDescFlags.None) | (last ? VirtqDescFlags.None : VirtqDescFlags.Next), (ushort)(i + 1));
        }
        WriteDesc(head, table, (uint)(pieces.Length * VirtqDesc.Size), VirtqDescFlags.Indirect);
        TrackChain(head);
        ushort old = NextAvail;
        Publish(head);
        Notify(old);
        return head;
    }

    /// <summary>
    /// Places <paramref name="request"/> (split into <paramref name="requestSegments"/> descriptors) and a reply
    /// buffer of <paramref name="replyCapacity"/> bytes (split into <paramref name="replySegments"/>), directly in
    /// the ring or through an indirect table, publishes it and kicks as needed. Returns the head.
    /// </summary>
    public ushort Submit(ReadOnlySpan<byte> request, int replyCapacity, bool indirect = false, int requestSegments = 1, int replySegments = 1, bool kick = true)
    {
        if (request.Length > RequestArea || replyCapacity > ReplyArea) throw new ArgumentException("frame larger than the queue's slot");
        if (replyCapacity == 0) replySegments = 0;
        int total = requestSegments + replySegments;
        ushort head = AllocDesc();
        var chain = _chains[head] ??= [];
        chain.Clear();
        chain.Add(head);
        request.CopyTo(Ram.At(RequestGpa(head), request.Length));
        var pieces = _pieces;
        pieces.Clear();
        Split(RequestGpa(head), request.Length, requestSegments, VirtqDescFlags.None, pieces);
        if (replyCapacity > 0) Split(ReplyGpa(head), replyCapacity, replySegments, VirtqDescFlags.Write, pieces);
        if (indirect)
        {
            ulong table = IndirectGpa(head);
            for (int i = 0; i < pieces.Count; i++)
            {
                var (a, l, f) = pieces[i];
                bool last = i == pieces.Count - 1;
                WriteDescAt(table + (ulong)(i * VirtqDesc.Size), a, l, f | (last ? 0 : VirtqDescFlags.Next), (ushort)(i + 1));
            }
            WriteDesc(head, table, (uint)(pieces.Count * VirtqDesc.Size), VirtqDescFlags.Indirect);
        }
        else
        {
            Span<ushort> idx = stackalloc ushort[pieces.Count];
            idx[0] = head;
            for (int i = 1; i < idx.Length; i++) { idx[i] = AllocDesc(); chain.Add(idx[i]); }
            for (int i = 0; i < pieces.Count; i++)
            {
                var (a, l, f) = pieces[i];
                bool last = i == pieces.Count - 1;
                WriteDesc(idx[i], a, l, f | (last ? 0 : VirtqDescFlags.Next), last ? (ushort)0 : idx[i + 1]);
            }
        }
        ushort old = NextAvail;
        Publish(head);
        if (kick) Notify(old);
        return head;
    }

    private static void Split(ulong gpa, int length, int segments, VirtqDescFlags flags, List<(ulong, uint, VirtqDescFlags)> into)
    {
        segments = Math.Max(1, Math.Min(segments, Math.Max(1, length)));
        int each = length / segments, off = 0;
        for (int i = 0; i < segments; i++)
        {
            int n = i == segments - 1 ? length - off : each;
            into.Add((gpa + (ulong)off, (uint)n, flags));
            off += n;
        }
    }

    /// <summary>Registers a hand-built chain so that <see cref="TryTakeUsed"/> frees its descriptors.</summary>
    public void TrackChain(ushort head, params ushort[] others)
    {
        var chain = _chains[head] ??= [];
        chain.Clear();
        chain.Add(head);
        chain.AddRange(others);
    }

    /// <summary>Takes the next used element if the device published one; frees its descriptors.</summary>
    public bool TryTakeUsed(out ushort head, out uint length)
    {
        if (UsedIdx == LastUsed) { head = 0; length = 0; return false; }
        Interlocked.MemoryBarrier();
        var e = Unsafe.ReadUnaligned<VirtqUsedElem>(ref Ram.At(UsedGpa + (ulong)SplitVirtqueue.UsedRingEntryOffset(LastUsed & (Size - 1)), 8)[0]);
        LastUsed++;
        if (EventIdx && AutoUsedEvent) SetUsedEvent(LastUsed);
        head = (ushort)e.Id;
        length = e.Len;
        if (head < Size && _chains[head] is { Count: > 0 } chain)
        {
            foreach (var d in chain) _free.Push(d);
            chain.Clear();
        }
        return true;
    }

    /// <summary>Waits (on the call eventfd, polling the ring too) for the next used element.</summary>
    public (ushort Head, uint Length) WaitUsed(TimeSpan timeout)
    {
        var deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (true)
        {
            if (TryTakeUsed(out var h, out var l)) return (h, l);
            long left = deadline - Environment.TickCount64;
            if (left <= 0) throw new TimeoutException($"queue {Index}: no used element within {timeout.TotalMilliseconds} ms");
            if (FrontendFds.WaitReadable(CallFd, (int)Math.Min(left, 50))) FrontendFds.ReadEventFd(CallFd);
        }
    }

    /// <summary>The first <paramref name="length"/> reply bytes of <paramref name="head"/>'s slot.</summary>
    public byte[] ReplyBytes(ushort head, uint length) => Ram.At(ReplyGpa(head), (int)length).ToArray();

    /// <summary>Submits a request and waits for its completion; returns the reply bytes the device wrote.</summary>
    public byte[] Transact(ReadOnlySpan<byte> request, int replyCapacity, TimeSpan timeout, bool indirect = false)
    {
        ushort head = Submit(request, replyCapacity, indirect);
        var (h, len) = WaitUsed(timeout);
        if (h != head) throw new InvalidDataException($"queue {Index}: expected head {head} back, got {h}");
        return ReplyBytes(h, len);
    }

    public void Dispose()
    {
        Libc.close(KickFd);
        Libc.close(CallFd);
    }
}
