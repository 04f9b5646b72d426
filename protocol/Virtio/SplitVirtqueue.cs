using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Virtio;

/// <summary>Flags of a split-virtqueue descriptor (virtio 1.2, 2.7.5 "The Virtqueue Descriptor Table").</summary>
[Flags]
public enum VirtqDescFlags : ushort
{
    /// <summary>No flag set: device-readable, last in its chain.</summary>
    None = 0,
    /// <summary>VIRTQ_DESC_F_NEXT: the chain continues at <see cref="VirtqDesc.Next"/>.</summary>
    Next = 1,
    /// <summary>VIRTQ_DESC_F_WRITE: the buffer is device-writable (otherwise device-readable).</summary>
    Write = 2,
    /// <summary>VIRTQ_DESC_F_INDIRECT: the buffer holds a table of descriptors (needs VIRTIO_RING_F_INDIRECT_DESC).</summary>
    Indirect = 4,
}

/// <summary>One descriptor: C <c>struct virtq_desc</c> (16 bytes, little-endian).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct VirtqDesc
{
    /// <summary>Size of the structure in bytes.</summary>
    public const int Size = 16;
    /// <summary>Guest-physical address of the buffer (<c>le64 addr</c>).</summary>
    public ulong Addr;
    /// <summary>Length of the buffer in bytes (<c>le32 len</c>).</summary>
    public uint Len;
    /// <summary>Descriptor flags (<c>le16 flags</c>).</summary>
    public VirtqDescFlags Flags;
    /// <summary>Index of the next descriptor when <see cref="VirtqDescFlags.Next"/> is set (<c>le16 next</c>).</summary>
    public ushort Next;
}

/// <summary>One used-ring element: C <c>struct virtq_used_elem</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct VirtqUsedElem
{
    /// <summary>Size of the structure in bytes.</summary>
    public const int Size = 8;
    /// <summary>Index of the head descriptor of the completed chain (<c>le32 id</c>).</summary>
    public uint Id;
    /// <summary>Number of bytes written into the device-writable part of the chain (<c>le32 len</c>).</summary>
    public uint Len;
}

/// <summary>
/// Layout of a split virtqueue of a given size (virtio 1.2, 2.7): byte offsets and sizes of the three
/// parts, the avail/used flags, and the event-index rule. The parts are separately placed by the driver.
/// </summary>
public static class SplitVirtqueue
{
    /// <summary>Largest queue size a split virtqueue may have (2.7: "Queue Size ... maximum 32768").</summary>
    public const int MaxSize = 32768;

    /// <summary>VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks not to be interrupted (ignored with EVENT_IDX).</summary>
    public const ushort AvailFlagNoInterrupt = 1;
    /// <summary>VIRTQ_USED_F_NO_NOTIFY: the device asks not to be kicked (ignored with EVENT_IDX).</summary>
    public const ushort UsedFlagNoNotify = 1;

    /// <summary>Bytes of the descriptor table of a queue of <paramref name="size"/> entries.</summary>
    public static long DescTableBytes(int size) => (long)VirtqDesc.Size * size;

    /// <summary>Bytes of the avail ring including <c>used_event</c>: flags, idx, ring[size], used_event.</summary>
    public static long AvailRingBytes(int size) => 4 + 2L * size + 2;

    /// <summary>Bytes of the used ring including <c>avail_event</c>: flags, idx, ring[size], avail_event.</summary>
    public static long UsedRingBytes(int size) => 4 + (long)VirtqUsedElem.Size * size + 2;

    /// <summary>Offset of the avail ring's <c>flags</c> field.</summary>
    public const int AvailFlagsOffset = 0;
    /// <summary>Offset of the avail ring's <c>idx</c> field.</summary>
    public const int AvailIdxOffset = 2;
    /// <summary>Offset of avail <c>ring[i]</c>.</summary>
    public static int AvailRingEntryOffset(int i) => 4 + 2 * i;
    /// <summary>Offset of <c>used_event</c> (after avail <c>ring[size]</c>).</summary>
    public static int UsedEventOffset(int size) => 4 + 2 * size;

    /// <summary>Offset of the used ring's <c>flags</c> field.</summary>
    public const int UsedFlagsOffset = 0;
    /// <summary>Offset of the used ring's <c>idx</c> field.</summary>
    public const int UsedIdxOffset = 2;
    /// <summary>Offset of used <c>ring[i]</c>.</summary>
    public static int UsedRingEntryOffset(int i) => 4 + VirtqUsedElem.Size * i;
    /// <summary>Offset of <c>avail_event</c> (after used <c>ring[size]</c>).</summary>
    public static int AvailEventOffset(int size) => 4 + VirtqUsedElem.Size * size;

    /// <summary>Required alignment of the descriptor table (2.7 "Virtqueue Alignment").</summary>
    public const int DescAlign = 16;
    /// <summary>Required alignment of the avail ring.</summary>
    public const int AvailAlign = 2;
    /// <summary>Required alignment of the used ring.</summary>
    public const int UsedAlign = 4;

    /// <summary>True when <paramref name="size"/> is a valid split-queue size: a power of two in 1..32768.</summary>
    public static bool IsValidSize(int size) => size > 0 && size <= MaxSize && (size & (size - 1)) == 0;

    /// <summary>
    /// The event-index rule (C <c>vring_need_event</c>): with VIRTIO_RING_F_EVENT_IDX, a notification is
    /// needed when the index moved from <paramref name="oldIdx"/> to <paramref name="newIdx"/> across
    /// <paramref name="eventIdx"/>, all arithmetic modulo 2^16.
    /// </summary>
    public static bool NeedEvent(ushort eventIdx, ushort newIdx, ushort oldIdx)
        => (ushort)(newIdx - eventIdx - 1) < (ushort)(newIdx - oldIdx);
}
