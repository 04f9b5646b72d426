namespace Hypervisor.Protocol.Ring;

/// <summary>The outcome of a ring operation. Only <see cref="Ok"/> hands out a frame or a reservation.</summary>
public enum RingStatus
{
    /// <summary>A frame was peeked or space was reserved.</summary>
    Ok = 0,

    /// <summary>Non-blocking call: no frame is available, or not enough space is free, right now.</summary>
    WouldBlock,

    /// <summary>A waiting call ran out of time.</summary>
    Timeout,

    /// <summary>A waiting call's cancellation token was cancelled.</summary>
    Canceled,

    /// <summary>The peer process has exited (its pidfd became readable) without closing the ring.</summary>
    PeerDead,

    /// <summary>Either side closed the ring in an orderly way; a consumer sees this only once the ring is drained.</summary>
    Closed,

    /// <summary>
    /// The shared memory holds an index or record header that cannot be true (the peer is broken or
    /// hostile). The direction is unusable from now on; every later call returns this too.
    /// </summary>
    Broken,

    /// <summary>The requested frame is larger than the ring's maximum frame size.</summary>
    TooLarge,

    /// <summary>
    /// The next record is well framed but carries flags or reserved fields this version does not
    /// understand. The frame's tag is valid; its data is empty; <c>Release</c> skips it.
    /// </summary>
    InvalidFrame,
}

/// <summary>Flags in a record header.</summary>
[Flags]
public enum RingRecordFlags : uint
{
    /// <summary>An ordinary frame whose bytes follow the header.</summary>
    None = 0,

    /// <summary>Internal: padding up to the end of the data area; never returned to callers.</summary>
    Pad = 1u << 0,

    /// <summary>
    /// The record's bytes start with a guest-memory prefix (<see cref="GuestMemoryFrame"/>): the payload of a READ
    /// or WRITE stays in guest memory at the guest-physical ranges the prefix lists, and the FUSE frame after the
    /// prefix carries the request without it.
    /// </summary>
    GuestMemory = 1u << 1,
}

/// <summary>Which end of the ring set a process is.</summary>
public enum RingRole
{
    /// <summary>Created the memfd and doorbells (the vdev): produces submissions, consumes completions.</summary>
    Creator,

    /// <summary>Attached from inherited fds (the daemon): consumes submissions, produces completions.</summary>
    Attacher,
}

/// <summary>
/// One frame peeked from a ring. <see cref="Data"/> points straight into the shared memory and
/// stays valid until the consumer's <c>Release</c>; the peer can still write to those bytes, so
/// read each field once before validating and using it.
/// </summary>
public readonly ref struct RingFrame
{
    /// <summary>The frame's bytes in the shared memory.</summary>
    public readonly ReadOnlySpan<byte> Data;

    /// <summary>The opaque value the producer chose; a completion echoes the request's tag.</summary>
    public readonly ulong Tag;

    /// <summary>The record's flags (never <see cref="RingRecordFlags.Pad"/>).</summary>
    public readonly RingRecordFlags Flags;

    /// <summary>
    /// The tag the vdev gives a frame that gets no reply (FORGET, BATCH_FORGET, INTERRUPT), and never a frame that
    /// expects one. The daemon still completes such a frame, emptily and with this tag, but nobody waits for that
    /// completion: on queue 0 (hiprio) the daemon commits it without ringing the vdev's doorbell, and the vdev takes it
    /// at its next wake-up (README.md, "Frames that get no reply").
    /// </summary>
    public const ulong NoReplyTag = ulong.MaxValue;

    internal RingFrame(ReadOnlySpan<byte> data, ulong tag, RingRecordFlags flags)
    {
        Data = data;
        Tag = tag;
        Flags = flags;
    }
}
