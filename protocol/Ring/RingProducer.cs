using System.Runtime.CompilerServices;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The writing end of one ring. Reserve space for a frame, fill the span (from as many sources
/// as needed), then commit it with a tag. One thread at a time; at most one open reservation.
/// </summary>
public sealed unsafe class RingProducer : RingEnd
{
    private readonly int _maxFrame;

    // Private copies: the producer's own position, and the last consumer position it validated.
    private ulong _tail;
    private ulong _head;

    // The open reservation, if any, and the length a waiting Reserve asks for.
    private bool _reserved;
    private ulong _reservedPad;
    private int _reservedLength;
    private int _waitLength;

    internal RingProducer(ShmRingSet set, int queue, byte* control, byte* data, int readyBell, int freedBell)
        : base(set, queue, control, data, readyBell, freedBell) => _maxFrame = set.MaxFrameSize;

    /// <summary>Largest frame this ring carries.</summary>
    public int MaxFrameSize => _maxFrame;

    /// <summary>
    /// The eventfd that becomes readable when the consumer frees space after
    /// <see cref="ArmWakeup"/>; for callers that wait in their own epoll loop.
    /// </summary>
    public int DoorbellFd => _freedBell;

    /// <summary>
    /// Reserves space for a frame of <paramref name="length"/> bytes without waiting. On
    /// <see cref="RingStatus.Ok"/>, <paramref name="frame"/> is that many bytes of shared memory to
    /// fill, valid until <see cref="Commit(int, ulong)"/> or <see cref="CancelReservation"/>. Reserving again
    /// before committing replaces the reservation.
    /// </summary>
    /// <returns>Ok, WouldBlock (not enough free space yet), TooLarge, Closed or Broken.</returns>
    public RingStatus TryReserve(int length, out Span<byte> frame)
    {
        frame = default;
        _set.ThrowIfDisposed();
        if (_broken) return RingStatus.Broken;
        if ((uint)length > (uint)_maxFrame) return RingStatus.TooLarge;
        if (_set.IsClosed || _set.PeerClosed) return RingStatus.Closed;

        // Acquire: the consumer is done with every byte before the head it published.
        ulong head = Volatile.Read(ref SharedHead);
        if (head != _head)
        {
            if (head < _head || head > _tail || (head & (RingLayout.RecordAlignment - 1)) != 0)
                return MarkBroken();
            _head = head;
        }

        ulong record = (ulong)RingLayout.RecordSize(length);
        ulong offset = _tail & _mask;
        ulong contiguous = _size - offset;
        ulong pad = record > contiguous ? contiguous : 0;
        if (pad + record > _size - (_tail - _head)) return RingStatus.WouldBlock;

        if (pad != 0)
        {
            // Safe: offset is 64-aligned and below _size, so the 32-byte pad header lies in the
            // data area; it becomes visible only with the commit's release store of the tail.
            WriteHeader(_data + offset, (uint)(pad - RingLayout.RecordHeaderSize), RingRecordFlags.Pad, 0, (uint)_tail);
            offset = 0;
        }
        _reserved = true;
        _reservedPad = pad;
        _reservedLength = length;
        // Safe: offset + record <= _size (either it fitted before the end or it starts at 0 and
        // record <= _size / 2), so header and payload lie inside this ring's data area.
        frame = new Span<byte>(_data + offset + RingLayout.RecordHeaderSize, length);
        return RingStatus.Ok;
    }

    /// <summary>
    /// Reserves space for a frame, busy-polling for <see cref="ShmRingSet.SpinDuration"/> and then
    /// sleeping on the doorbell until space is free, the timeout passes, the token is cancelled,
    /// the peer dies or either side closes. <see cref="Timeout.InfiniteTimeSpan"/> waits forever.
    /// </summary>
    /// <returns>Ok, TooLarge, Timeout, Canceled, PeerDead, Closed or Broken.</returns>
    public RingStatus Reserve(int length, out Span<byte> frame, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        RingStatus status = TryReserve(length, out frame);
        if (status != RingStatus.WouldBlock) return status;
        // Frames committed without notifying must reach a sleeping consumer before this side
        // waits for it to free space, or both would sleep.
        Flush();
        _waitLength = length;
        status = Wait(ref ProducerWaiting, _freedBell, SpinsBeforeSleep ? _set.SpinTicks : 0, timeout, cancellationToken);
        // A reservation the wait made is made again, the same (nothing has moved the tail since).
        return status == RingStatus.Ok ? TryReserve(length, out frame) : status;
    }

    private protected override RingStatus Attempt() => TryReserve(_waitLength, out _);

    /// <summary>
    /// Publishes the reserved frame with its first <paramref name="length"/> bytes (at most the
    /// reserved length, so a reply can be reserved at its largest size and committed at its real
    /// one) and the caller's <paramref name="tag"/>, then rings the consumer's doorbell if it is
    /// asleep. The span from the reservation must not be used afterwards.
    /// </summary>
    public void Commit(int length, ulong tag) => Commit(length, tag, notify: true);

    /// <summary>
    /// Publishes the reserved frame like <see cref="Commit(int, ulong)"/>; with
    /// <paramref name="notify"/> false the doorbell is left for a later <see cref="Flush"/>, so a
    /// batch of frames wakes a sleeping consumer once instead of once per frame (a consumer that
    /// is awake sees each frame at once either way). A producer that commits without notifying
    /// must call <see cref="Flush"/> before it goes idle; <see cref="Reserve"/> flushes before it
    /// waits.
    /// </summary>
    public void Commit(int length, ulong tag, bool notify) => Commit(length, tag, notify, RingRecordFlags.None);

    /// <summary>
    /// Publishes the reserved frame like <see cref="Commit(int, ulong, bool)"/> with record <paramref name="flags"/>:
    /// <see cref="RingRecordFlags.None"/> or <see cref="RingRecordFlags.GuestMemory"/> (the frame starts with a
    /// <see cref="GuestMemoryFrame"/> prefix).
    /// </summary>
    public void Commit(int length, ulong tag, bool notify, RingRecordFlags flags)
    {
        if (flags is not (RingRecordFlags.None or RingRecordFlags.GuestMemory))
            throw new ArgumentOutOfRangeException(nameof(flags), $"A frame's flags are None or GuestMemory, not {flags}.");
        _set.ThrowIfDisposed();
        if (!_reserved) throw new InvalidOperationException("Commit needs a reservation; call TryReserve or Reserve first.");
        if ((uint)length > (uint)_reservedLength)
            throw new ArgumentOutOfRangeException(nameof(length), $"Commit length {length} exceeds the reserved {_reservedLength} bytes; reserve the largest size the frame can have.");
        ulong position = _tail + _reservedPad;
        // Safe: the reservation checked that this record lies inside the data area.
        WriteHeader(_data + (position & _mask), (uint)length, flags, tag, (uint)position);
        _tail = position + (ulong)RingLayout.RecordSize(length);
        _reserved = false;
        // Release: the header and payload above are visible before the new tail.
        Volatile.Write(ref SharedTail, _tail);
        if (notify) Flush();
    }

    /// <summary>
    /// Rings the consumer's doorbell if it sleeps waiting for a frame: the wake-up for frames
    /// committed with <c>notify: false</c>. Cheap when the consumer is awake (no system call).
    /// </summary>
    public void Flush()
    {
        _set.ThrowIfDisposed();
        // Full fence between publishing the tail and reading the consumer's flag (Dekker pair
        // with the consumer's flag store and re-check); then ring only a consumer that sleeps.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref ConsumerWaiting) != 0 && Interlocked.Exchange(ref ConsumerWaiting, 0) != 0)
            Libc.EventFdSignal(_readyBell);
    }

    /// <summary>
    /// Whether the consumer has released every frame committed so far (its published head has reached the published
    /// tail). A consumer that releases a frame only once it has acted on it has then acted on every frame. Reads only
    /// the shared indices, so any thread may ask; a frame the producer's thread commits meanwhile may or may not count.
    /// The consumer writes the head, so the answer is only as true as the consumer is.
    /// </summary>
    public bool AllReleased
    {
        get
        {
            _set.ThrowIfDisposed();
            // Head first: the tail read after it is at least the tail of that moment, and never below the head, so
            // equality means every frame committed when the head was read had been released.
            ulong head = Volatile.Read(ref SharedHead);
            return Volatile.Read(ref SharedTail) == head;
        }
    }

    /// <summary>Drops the open reservation, if any; nothing becomes visible to the consumer.</summary>
    public void CancelReservation() => _reserved = false;

    /// <summary>
    /// For callers with their own event loop: asks the consumer to ring <see cref="DoorbellFd"/>
    /// once it frees space. Returns false (and disarms) if <paramref name="length"/> bytes can
    /// already be reserved, or the ring is closed or broken; otherwise the caller waits for
    /// <see cref="DoorbellFd"/> to become readable, then calls <see cref="DisarmWakeup"/>.
    /// </summary>
    public bool ArmWakeup(int length)
    {
        Volatile.Write(ref ProducerWaiting, 1);
        Interlocked.MemoryBarrier();
        if (TryReserve(length, out _) != RingStatus.WouldBlock)
        {
            _reserved = false;
            Volatile.Write(ref ProducerWaiting, 0);
            return false;
        }
        return true;
    }

    /// <summary>Clears the wake-up request and resets the doorbell after the caller's own wait.</summary>
    public void DisarmWakeup()
    {
        Volatile.Write(ref ProducerWaiting, 0);
        Libc.EventFdDrain(_freedBell);
    }

    private RingStatus MarkBroken()
    {
        _broken = true;
        _reserved = false;
        return RingStatus.Broken;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteHeader(byte* record, uint length, RingRecordFlags flags, ulong tag, uint check)
    {
        // Safe: callers pass a 64-aligned record start inside the data area, which has room for
        // the 32-byte header there.
        *(uint*)(record + RingLayout.OffRecLength) = length;
        *(uint*)(record + RingLayout.OffRecFlags) = (uint)flags;
        *(ulong*)(record + RingLayout.OffRecTag) = tag;
        *(uint*)(record + RingLayout.OffRecCheck) = check;
        *(uint*)(record + RingLayout.OffRecReserved1) = 0;
        *(ulong*)(record + RingLayout.OffRecReserved2) = 0;
    }
}
