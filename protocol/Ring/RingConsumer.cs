using Hypervisor.Interop;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The reading end of one ring. Peek the next frame (a span straight into the shared memory),
/// use it, then release it so the producer may reuse the space. One thread at a time; frames are
/// released in the order they were peeked, one at a time.
/// </summary>
public sealed unsafe class RingConsumer : RingEnd
{
    private readonly uint _maxFrame;

    // Private copies: the consumer's own position, and the last producer position it validated.
    private ulong _head;
    private ulong _tail;

    // The frame handed out by the last peek, until it is released. Cached so that peeking again
    // returns the same frame even if the peer rewrites its header meanwhile.
    private bool _peeked;
    private RingStatus _peekStatus;
    private ulong _peekOffset;
    private int _peekLength;
    private ulong _peekTag;
    private RingRecordFlags _peekFlags;
    private ulong _next;

    internal RingConsumer(ShmRingSet set, int queue, byte* control, byte* data, int readyBell, int freedBell)
        : base(set, queue, control, data, readyBell, freedBell) => _maxFrame = (uint)set.MaxFrameSize;

    /// <summary>
    /// The eventfd that becomes readable when the producer commits after <see cref="ArmWakeup"/>;
    /// for callers that wait in their own epoll loop.
    /// </summary>
    public int DoorbellFd => _readyBell;

    /// <summary>
    /// Returns the next frame without waiting. Peeking again before <see cref="Release"/> returns
    /// the same frame.
    /// </summary>
    /// <returns>
    /// Ok (a frame), InvalidFrame (a well-framed record with unknown flags: tag only; release it),
    /// WouldBlock (nothing yet), Closed (a side closed and everything committed was consumed) or
    /// Broken (the shared memory lies; the ring is unusable).
    /// </returns>
    public RingStatus TryPeek(out RingFrame frame)
    {
        _set.ThrowIfDisposed();
        if (_peeked) return Current(out frame);
        frame = default;
        if (_broken) return RingStatus.Broken;

        // Acquire: every record before this tail is fully written.
        ulong tail = Volatile.Read(ref SharedTail);
        if (tail != _tail)
        {
            if (tail < _tail || tail - _head > _size || (tail & (RingLayout.RecordAlignment - 1)) != 0)
                return MarkBroken();
            _tail = tail;
        }

        ulong position = _head;
        for (;;)
        {
            if (position == _tail)
            {
                if (position != _head) Publish(position);
                return _set.PeerClosed || _set.IsClosed ? RingStatus.Closed : RingStatus.WouldBlock;
            }
            ulong offset = position & _mask;
            // Safe: offset is 64-aligned (positions only advance by multiples of 64 from 0) and
            // below _size, so the 32-byte header lies inside the data area. Each field is read
            // once into a local; only the locals are checked and used.
            byte* record = _data + offset;
            uint length = Volatile.Read(ref *(uint*)(record + RingLayout.OffRecLength));
            uint flags = *(uint*)(record + RingLayout.OffRecFlags);
            ulong tag = *(ulong*)(record + RingLayout.OffRecTag);
            uint check = *(uint*)(record + RingLayout.OffRecCheck);
            uint reserved1 = *(uint*)(record + RingLayout.OffRecReserved1);
            ulong reserved2 = *(ulong*)(record + RingLayout.OffRecReserved2);

            if (check != (uint)position) return MarkBroken();
            ulong contiguous = _size - offset;
            if ((flags & (uint)RingRecordFlags.Pad) != 0)
            {
                // A pad covers exactly the rest of the data area and precedes the wrapped record.
                if (flags != (uint)RingRecordFlags.Pad || length != contiguous - RingLayout.RecordHeaderSize || contiguous > _tail - position)
                    return MarkBroken();
                position += contiguous;
                continue;
            }
            if (length > _maxFrame) return MarkBroken();
            ulong size = (ulong)RingLayout.RecordSize(length);
            if (size > contiguous || size > _tail - position) return MarkBroken();

            _peeked = true;
            _peekOffset = offset + RingLayout.RecordHeaderSize;
            _peekTag = tag;
            _peekFlags = (RingRecordFlags)flags;
            _next = position + size;
            if ((flags != 0 && flags != (uint)RingRecordFlags.GuestMemory) || reserved1 != 0 || reserved2 != 0)
            {
                _peekStatus = RingStatus.InvalidFrame;
                _peekLength = 0;
            }
            else
            {
                _peekStatus = RingStatus.Ok;
                _peekLength = (int)length;
            }
            return Current(out frame);
        }
    }

    private RingStatus Current(out RingFrame frame)
    {
        // Safe: _peekOffset + _peekLength was checked to lie inside the data area when peeked.
        frame = new RingFrame(new ReadOnlySpan<byte>(_data + _peekOffset, _peekLength), _peekTag, _peekFlags);
        return _peekStatus;
    }

    /// <summary>
    /// When above 0, <see cref="Peek"/> spends at most one part in this many of the time that passes spinning
    /// (default 0: no limit). For a consumer that is one of as many spinning threads as there are CPUs: a thread
    /// that always spins keeps its CPU from ever looking idle, so the threads it waits for get crowded onto the
    /// other CPUs.
    /// </summary>
    public int SpinCpuShare
    {
        get => _spin.CpuShare;
        set => _spin.CpuShare = Math.Max(0, value);
    }

    /// <summary>
    /// Returns the next frame, busy-polling for <see cref="ShmRingSet.SpinDuration"/> and then
    /// sleeping on the doorbell until a frame arrives, the timeout passes, the token is cancelled,
    /// the peer dies or closes. Frames committed before the peer died or closed are still returned
    /// first. <see cref="Timeout.InfiniteTimeSpan"/> waits forever.
    /// </summary>
    /// <returns>Ok, InvalidFrame, Timeout, Canceled, PeerDead, Closed or Broken.</returns>
    public RingStatus Peek(out RingFrame frame, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        RingStatus status = TryPeek(out frame);
        if (status != RingStatus.WouldBlock) return status;
        status = Wait(ref ConsumerWaiting, _readyBell, SpinsBeforeSleep ? _set.SpinTicks : 0, timeout, cancellationToken);
        // A frame the wait peeked is handed out again by the peek (it stays peeked until Release).
        return status is RingStatus.Ok or RingStatus.InvalidFrame ? TryPeek(out frame) : status;
    }

    private protected override RingStatus Attempt() => TryPeek(out _);

    /// <summary>
    /// Gives the peeked frame's space back to the producer (its span must not be used afterwards)
    /// and rings the producer's doorbell if it sleeps waiting for space.
    /// </summary>
    public void Release()
    {
        _set.ThrowIfDisposed();
        if (!_peeked) throw new InvalidOperationException("Release needs a peeked frame; call TryPeek or Peek first.");
        _peeked = false;
        Publish(_next);
    }

    private void Publish(ulong head)
    {
        _head = head;
        // Release: this side's reads of the frame complete before the producer may reuse it.
        Volatile.Write(ref SharedHead, head);
        // Full fence between publishing the head and reading the producer's flag (Dekker pair
        // with the producer's flag store and re-check); then ring only a producer that sleeps.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref ProducerWaiting) != 0 && Interlocked.Exchange(ref ProducerWaiting, 0) != 0)
            Libc.EventFdSignal(_freedBell);
    }

    /// <summary>
    /// For callers with their own event loop: asks the producer to ring <see cref="DoorbellFd"/>
    /// at its next commit. Returns false (and disarms) if a frame or a final status is already
    /// there, or the set is closed or disposed; otherwise the caller waits for
    /// <see cref="DoorbellFd"/>, then calls <see cref="DisarmWakeup(bool)"/> (exactly once) and
    /// peeks again. Between the two the set counts the caller as a waiter: Dispose leaves the
    /// memory and doorbells mapped and open rather than pull them from under it.
    /// </summary>
    public bool ArmWakeup()
    {
        // Registered as a waiter until DisarmWakeup, so that Dispose on another thread does not
        // unmap the ring or close the doorbell while the caller sleeps on it.
        if (!_set.EnterWait()) return false;
        Volatile.Write(ref ConsumerWaiting, 1);
        Interlocked.MemoryBarrier();
        if (TryPeek(out _) != RingStatus.WouldBlock)
        {
            Volatile.Write(ref ConsumerWaiting, 0);
            _set.ExitWait();
            return false;
        }
        return true;
    }

    /// <summary>Clears the wake-up request and resets the doorbell after the caller's own wait.</summary>
    public void DisarmWakeup() => DisarmWakeup(rang: true);

    /// <summary>
    /// Clears the wake-up request after the caller's own wait; resets the doorbell only when
    /// <paramref name="rang"/> (the wait saw it readable), saving a system call when something
    /// else woke the caller. A doorbell rung after the wait stays set and costs one spurious
    /// wake-up later.
    /// </summary>
    public void DisarmWakeup(bool rang)
    {
        Volatile.Write(ref ConsumerWaiting, 0);
        if (rang) Libc.EventFdDrain(_readyBell);
        _set.ExitWait();
    }

    private RingStatus MarkBroken()
    {
        _broken = true;
        return RingStatus.Broken;
    }
}
