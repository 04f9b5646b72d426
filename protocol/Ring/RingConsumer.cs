using System.Diagnostics;
using System.Runtime.CompilerServices;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The reading end of one ring. Peek the next frame (a span straight into the shared memory),
/// use it, then release it so the producer may reuse the space. One thread at a time; frames are
/// released in the order they were peeked, one at a time.
/// </summary>
public sealed unsafe class RingConsumer
{
    private readonly ShmRingSet _set;
    private readonly byte* _control;
    private readonly byte* _data;
    private readonly ulong _size;
    private readonly ulong _mask;
    private readonly uint _maxFrame;
    private readonly int _readyBell; // rung by the producer after a commit; the consumer sleeps on it
    private readonly int _freedBell; // rung by the consumer after a release; the producer sleeps on it
    private SafeFd? _cancelFd;
    private AdaptiveSpin _spin = new();

    // Private copies: the consumer's own position, and the last producer position it validated.
    private ulong _head;
    private ulong _tail;
    private bool _broken;

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
    {
        _set = set;
        Queue = queue;
        _control = control;
        _data = data;
        _size = (ulong)set.DirectionBytes;
        _mask = _size - 1;
        _maxFrame = (uint)set.MaxFrameSize;
        _readyBell = readyBell;
        _freedBell = freedBell;
    }

    /// <summary>The queue this ring belongs to.</summary>
    public int Queue { get; }

    /// <summary>
    /// The eventfd that becomes readable when the producer commits after <see cref="ArmWakeup"/>;
    /// for callers that wait in their own epoll loop.
    /// </summary>
    public int DoorbellFd => _readyBell;

    /// <summary>Whether the shared memory was found impossible; the ring is then unusable.</summary>
    public bool IsBroken => _broken;

    // Safe: _control points at this ring's 256-byte control block inside the mapping, whose
    // fields are naturally aligned; the mapping outlives every call (Dispose waits for waiters).
    private ref ulong SharedTail => ref Unsafe.AsRef<ulong>(_control + RingLayout.OffTail);
    private ref ulong SharedHead => ref Unsafe.AsRef<ulong>(_control + RingLayout.OffHead);
    private ref int ProducerWaiting => ref Unsafe.AsRef<int>(_control + RingLayout.OffProducerWaiting);
    private ref int ConsumerWaiting => ref Unsafe.AsRef<int>(_control + RingLayout.OffConsumerWaiting);

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
            if (flags != 0 || reserved1 != 0 || reserved2 != 0)
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
    /// Whether <see cref="Peek"/> busy-polls before it sleeps (default true). A queue whose frames
    /// gain nothing from a quick pick-up (the virtio-fs hiprio queue: FORGET, INTERRUPT) turns it
    /// off, so that its thread does not take CPU time from the request queues after each batch.
    /// </summary>
    public bool SpinsBeforeSleep { get; set; } = true;

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

        long deadline = RingProducer.Deadline(timeout);
        _spin.Begin(SpinsBeforeSleep ? _set.SpinTicks : 0);
        while (_spin.Spin())
        {
            status = TryPeek(out frame);
            if (status != RingStatus.WouldBlock) return status;
        }
        // Registered as a waiter so that Dispose on another thread does not unmap the ring
        // while this thread sleeps; once closed, the set refuses new waiters.
        if (!_set.EnterWait()) return TryPeek(out frame);
        try
        {
            for (;;)
            {
                // Publish "wake me", then look again: a commit the producer made before seeing the
                // flag is caught by the re-check, one made after it rings the doorbell.
                Volatile.Write(ref ConsumerWaiting, 1);
                Interlocked.MemoryBarrier();
                status = TryPeek(out frame);
                if (status != RingStatus.WouldBlock) break;
                status = _set.Sleep(_readyBell, ref _cancelFd, deadline, cancellationToken);
                Libc.EventFdDrain(_readyBell);
                if (status != RingStatus.Ok)
                {
                    RingStatus last = TryPeek(out frame);
                    if (last != RingStatus.WouldBlock) status = last;
                    break;
                }
            }
            Volatile.Write(ref ConsumerWaiting, 0);
            _spin.Slept();
            return status;
        }
        finally
        {
            _set.ExitWait();
        }
    }

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

    internal void DisposeCancelFd() => _cancelFd?.Dispose();
}
