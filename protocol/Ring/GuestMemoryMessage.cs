using System.Buffers.Binary;

namespace Hypervisor.Protocol.Ring;

/// <summary>The kinds of message on a ring set's guest-memory channel.</summary>
public enum GuestMemoryMessageKind : uint
{
    /// <summary>vdev → daemon: a memory table (regions, one descriptor each as SCM_RIGHTS) and its generation.</summary>
    Table = 1,
    /// <summary>daemon → vdev: the table of that generation is mapped (status 0) or could not be (status = errno).</summary>
    Ack = 2,
    /// <summary>vdev → daemon: no frame names that generation any more; its mappings may go once no request uses them.</summary>
    Drop = 3,
}

/// <summary>One region of a memory table as the guest-memory channel carries it.</summary>
/// <param name="GuestPhysAddr">Guest-physical address of the region's first byte.</param>
/// <param name="Size">Length of the region in bytes.</param>
/// <param name="MmapOffset">Offset of the region's first byte in its descriptor.</param>
public readonly record struct GuestMemoryRegion(ulong GuestPhysAddr, ulong Size, ulong MmapOffset);

/// <summary>
/// Encoding of the guest-memory channel's messages (a SOCK_SEQPACKET socketpair made with the ring set; one message
/// per packet; protocol/Ring/README.md, "Payloads in guest memory"). All integers little-endian.
/// <code>
/// off 0  u32 kind          GuestMemoryMessageKind
/// off 4  u32 count/status  Table: region count (1 .. MaxRegions); Ack: 0 or an errno; Drop: 0
/// off 8  u64 generation
/// Table only: count x { u64 guest-physical address; u64 size; u64 mmap offset; u64 reserved 0 }, and exactly count
/// descriptors attached, in the same order
/// </code>
/// </summary>
public static class GuestMemoryMessage
{
    /// <summary>Bytes of the header every message starts with.</summary>
    public const int HeaderSize = 16;

    /// <summary>Bytes per region of a table message.</summary>
    public const int RegionSize = 32;

    /// <summary>Most regions one table holds (vhost-user's largest memory slot count).</summary>
    public const int MaxRegions = 32;

    /// <summary>Size of the largest message.</summary>
    public const int MaxSize = HeaderSize + MaxRegions * RegionSize;

    /// <summary>Encodes a table message; returns its length.</summary>
    public static int WriteTable(Span<byte> dest, ulong generation, ReadOnlySpan<GuestMemoryRegion> regions)
    {
        if ((uint)regions.Length - 1 >= MaxRegions) throw new ArgumentOutOfRangeException(nameof(regions), $"A memory table has 1 to {MaxRegions} regions, not {regions.Length}.");
        int length = HeaderSize + regions.Length * RegionSize;
        WriteHeader(dest, GuestMemoryMessageKind.Table, (uint)regions.Length, generation);
        for (int i = 0; i < regions.Length; i++)
        {
            var at = dest[(HeaderSize + i * RegionSize)..];
            BinaryPrimitives.WriteUInt64LittleEndian(at, regions[i].GuestPhysAddr);
            BinaryPrimitives.WriteUInt64LittleEndian(at[8..], regions[i].Size);
            BinaryPrimitives.WriteUInt64LittleEndian(at[16..], regions[i].MmapOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(at[24..], 0);
        }
        return length;
    }

    /// <summary>Encodes an ack (status 0 or an errno) or a drop message; returns its length.</summary>
    public static int WriteHeader(Span<byte> dest, GuestMemoryMessageKind kind, uint countOrStatus, ulong generation)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dest, (uint)kind);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[4..], countOrStatus);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], generation);
        return HeaderSize;
    }

    /// <summary>
    /// Decodes a message's header; false when it is too short, of an unknown kind, or (a table) lists no region, more
    /// than <see cref="MaxRegions"/>, a region of size 0, a region whose end overflows, or a length that disagrees with
    /// its count.
    /// </summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> message, out GuestMemoryMessageKind kind, out uint countOrStatus, out ulong generation)
    {
        kind = default;
        countOrStatus = 0;
        generation = 0;
        if (message.Length < HeaderSize) return false;
        uint k = BinaryPrimitives.ReadUInt32LittleEndian(message);
        countOrStatus = BinaryPrimitives.ReadUInt32LittleEndian(message[4..]);
        generation = BinaryPrimitives.ReadUInt64LittleEndian(message[8..]);
        kind = (GuestMemoryMessageKind)k;
        switch (kind)
        {
            case GuestMemoryMessageKind.Table:
                if (countOrStatus - 1 >= MaxRegions || message.Length != HeaderSize + (int)countOrStatus * RegionSize) return false;
                for (int i = 0; i < (int)countOrStatus; i++)
                {
                    var r = ReadRegion(message, i);
                    if (r.Size == 0 || r.GuestPhysAddr + r.Size < r.GuestPhysAddr || r.MmapOffset + r.Size < r.MmapOffset) return false;
                }
                return true;
            case GuestMemoryMessageKind.Ack:
            case GuestMemoryMessageKind.Drop:
                return message.Length == HeaderSize;
            default:
                return false;
        }
    }

    /// <summary>Region <paramref name="index"/> of a table message <see cref="TryReadHeader"/> accepted.</summary>
    public static GuestMemoryRegion ReadRegion(ReadOnlySpan<byte> message, int index)
    {
        var at = message[(HeaderSize + index * RegionSize)..];
        return new GuestMemoryRegion(BinaryPrimitives.ReadUInt64LittleEndian(at), BinaryPrimitives.ReadUInt64LittleEndian(at[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(at[16..]));
    }
}
