namespace Hypervisor.Protocol.Virtio;

/// <summary>
/// Device-independent virtio feature bits (virtio 1.2, section 6 "Reserved Feature Bits") as bit
/// numbers and as masks. A feature word is a 64-bit little-endian value where bit <c>n</c> is feature <c>n</c>.
/// </summary>
public static class VirtioFeatures
{
    /// <summary>Bit number of VIRTIO_RING_F_INDIRECT_DESC: the driver may use indirect descriptor tables.</summary>
    public const int RingIndirectDescBit = 28;
    /// <summary>Bit number of VIRTIO_RING_F_EVENT_IDX: used_event/avail_event suppress notifications.</summary>
    public const int RingEventIdxBit = 29;
    /// <summary>Bit number of VIRTIO_F_VERSION_1: the device conforms to virtio 1.x (little-endian rings).</summary>
    public const int Version1Bit = 32;

    /// <summary>Mask of VIRTIO_RING_F_INDIRECT_DESC.</summary>
    public const ulong RingIndirectDesc = 1UL << RingIndirectDescBit;
    /// <summary>Mask of VIRTIO_RING_F_EVENT_IDX.</summary>
    public const ulong RingEventIdx = 1UL << RingEventIdxBit;
    /// <summary>Mask of VIRTIO_F_VERSION_1.</summary>
    public const ulong Version1 = 1UL << Version1Bit;
}
