namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The byte layout of a shared-memory ring set, as both processes see it in the memfd.
/// Every offset is derived from the geometry (queue count, direction capacity); nothing but the
/// global header's geometry fields is stored, and those are read once, at attach, and checked.
/// See protocol/Ring/README.md for the picture and the wake-up protocol.
/// </summary>
public static class RingLayout
{
    /// <summary>"HVSHRING" read as a little-endian 64-bit integer.</summary>
    public const ulong Magic = 0x474E495248535648;

    /// <summary>Layout version; bumped on any incompatible change.</summary>
    public const uint Version = 2;

    /// <summary>Size of the global header page at offset 0.</summary>
    public const int HeaderSize = 4096;

    /// <summary>Size of one direction's control block (indices and wake-up flags).</summary>
    public const int ControlBlockSize = 256;

    /// <summary>Size of the header in front of every record in a data area.</summary>
    public const int RecordHeaderSize = 32;

    /// <summary>Every record starts on this boundary (a cache line) and occupies a multiple of it.</summary>
    public const int RecordAlignment = 64;

    /// <summary>Largest number of request queues in one ring set.</summary>
    public const int MaxQueues = 64;

    /// <summary>Default largest frame: the negotiated FUSE max_write (1 MiB) plus room for headers.</summary>
    public const int DefaultMaxFrameSize = (1 << 20) + 4096;

    /// <summary>Largest frame size a ring accepts as a creation parameter (64 MiB).</summary>
    public const int MaxMaxFrameSize = 64 << 20;

    // Global header fields (byte offsets from the start of the memfd).
    internal const int OffMagic = 0;            // u64
    internal const int OffVersion = 8;          // u32
    internal const int OffHeaderSize = 12;      // u32
    internal const int OffQueueCount = 16;      // u32
    internal const int OffRecordAlignment = 20; // u32
    internal const int OffDirectionBytes = 24;  // u64
    internal const int OffMaxFrameSize = 32;    // u32
    internal const int OffRecordHeaderSize = 36;// u32
    internal const int OffTotalSize = 40;       // u64
    internal const int OffCreatorPid = 48;      // i32
    internal const int OffAttacherPid = 52;     // i32
    internal const int OffCreatorClosed = 56;   // u32
    internal const int OffAttacherClosed = 60;  // u32

    // Direction control block fields (byte offsets from the block's start). The producer-owned
    // and consumer-owned halves sit 128 bytes apart so that neither side's stores invalidate the
    // cache line (or the adjacent-line prefetch pair) the other side polls.
    internal const int OffTail = 0;              // u64, written by the producer only
    internal const int OffProducerWaiting = 8;   // u32, set by the producer, cleared by either side
    internal const int OffHead = 128;            // u64, written by the consumer only
    internal const int OffConsumerWaiting = 136; // u32, set by the consumer, cleared by either side

    // Record header fields (byte offsets from the record's start).
    internal const int OffRecLength = 0;    // u32 payload bytes
    internal const int OffRecFlags = 4;     // u32 RingRecordFlags
    internal const int OffRecTag = 8;       // u64 opaque, echoed by the completion
    internal const int OffRecCheck = 16;    // u32 low 32 bits of the record's stream position
    internal const int OffRecReserved1 = 20;// u32 must be zero
    internal const int OffRecReserved2 = 24;// u64 must be zero

    /// <summary>Direction index of the submission (request) ring of a queue.</summary>
    internal const int Submission = 0;

    /// <summary>Direction index of the completion (reply) ring of a queue.</summary>
    internal const int Completion = 1;

    /// <summary>Size of the control area: one block per direction, rounded up to a page.</summary>
    internal static long ControlAreaSize(int queueCount) => AlignUp((long)queueCount * 2 * ControlBlockSize, 4096);

    /// <summary>Offset of a direction's control block.</summary>
    internal static long ControlOffset(int queue, int direction) => HeaderSize + ((long)queue * 2 + direction) * ControlBlockSize;

    /// <summary>Offset of a direction's data area (page aligned, directionBytes long).</summary>
    internal static long DataOffset(int queueCount, long directionBytes, int queue, int direction)
        => HeaderSize + ControlAreaSize(queueCount) + ((long)queue * 2 + direction) * directionBytes;

    /// <summary>Total memfd size for a geometry.</summary>
    internal static long TotalSize(int queueCount, long directionBytes)
        => HeaderSize + ControlAreaSize(queueCount) + (long)queueCount * 2 * directionBytes;

    /// <summary>Bytes a record with a payload of <paramref name="length"/> bytes occupies.</summary>
    internal static long RecordSize(long length) => AlignUp(RecordHeaderSize + length, RecordAlignment);

    /// <summary>
    /// The smallest direction capacity for a largest frame: a power of two holding two largest
    /// records, so that an empty ring always fits one even after a wrap-around pad.
    /// </summary>
    public static long MinDirectionBytes(int maxFrameSize)
    {
        long need = 2 * RecordSize(maxFrameSize);
        long size = 4096;
        while (size < need) size <<= 1;
        return size;
    }

    internal static long AlignUp(long value, long alignment) => (value + alignment - 1) & ~(alignment - 1);
}
