using System.Buffers.Binary;

namespace Hypervisor.Protocol.Ring;

/// <summary>Which way a guest-memory payload moves, seen from the daemon.</summary>
public enum GuestMemoryDirection : uint
{
    /// <summary>The daemon reads the payload from guest memory (WRITE).</summary>
    FromGuest = 0,
    /// <summary>The daemon writes the payload into guest memory (READ); its reply carries only the out header.</summary>
    ToGuest = 1,
}

/// <summary>One guest-physical range of a payload that stays in guest memory.</summary>
/// <param name="Address">Guest-physical address of the first byte.</param>
/// <param name="Length">Length in bytes; never 0 in a valid frame.</param>
public readonly record struct GuestRange(ulong Address, ulong Length);

/// <summary>
/// The prefix of a ring record flagged <see cref="RingRecordFlags.GuestMemory"/> (protocol/Ring/README.md, "Payloads
/// in guest memory"): the memory table generation the addresses refer to, the direction, and the payload's ranges in
/// order; the FUSE frame follows, without the payload bytes. All integers little-endian.
/// <code>
/// off 0  u64 generation      the memory table the ranges refer to (announced on the guest-memory channel)
/// off 8  u32 range count     1 .. MaxRanges
/// off 12 u32 direction       GuestMemoryDirection
/// off 16 range count x { u64 guest-physical address; u64 length }
/// then   the FUSE request frame (fuse_in_header.len is the frame's own length)
/// </code>
/// </summary>
public static class GuestMemoryFrame
{
    /// <summary>Bytes before the first range.</summary>
    public const int PrefixSize = 16;

    /// <summary>Bytes per range.</summary>
    public const int RangeSize = 16;

    /// <summary>Most ranges one frame lists: IOV_MAX, so that one preadv/pwritev moves the whole payload.</summary>
    public const int MaxRanges = 1024;

    /// <summary>Bytes of a record with <paramref name="ranges"/> ranges and a FUSE frame of <paramref name="frameLength"/> bytes.</summary>
    public static int Size(int ranges, int frameLength) => PrefixSize + ranges * RangeSize + frameLength;

    /// <summary>Writes the prefix; the ranges follow with <see cref="WriteRange"/>, then the frame at <see cref="FrameOffset"/>.</summary>
    public static void WritePrefix(Span<byte> record, ulong generation, int ranges, GuestMemoryDirection direction)
    {
        if ((uint)ranges - 1 >= MaxRanges) throw new ArgumentOutOfRangeException(nameof(ranges), $"A guest-memory frame lists 1 to {MaxRanges} ranges, not {ranges}.");
        BinaryPrimitives.WriteUInt64LittleEndian(record, generation);
        BinaryPrimitives.WriteUInt32LittleEndian(record[8..], (uint)ranges);
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], (uint)direction);
    }

    /// <summary>Writes range <paramref name="index"/> of the prefix.</summary>
    public static void WriteRange(Span<byte> record, int index, ulong address, ulong length)
    {
        var at = record[(PrefixSize + index * RangeSize)..];
        BinaryPrimitives.WriteUInt64LittleEndian(at, address);
        BinaryPrimitives.WriteUInt64LittleEndian(at[8..], length);
    }

    /// <summary>Where the FUSE frame starts in a record with <paramref name="ranges"/> ranges.</summary>
    public static int FrameOffset(int ranges) => PrefixSize + ranges * RangeSize;

    /// <summary>
    /// Splits a record into its prefix fields, its ranges and its FUSE frame; false when the record is shorter than
    /// its prefix says, lists no range or more than <see cref="MaxRanges"/>, or names an unknown direction. Each field is
    /// read once; the ranges are returned as bytes, to be read once each with <see cref="ReadRange"/>.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> record, out ulong generation, out GuestMemoryDirection direction,
                                out ReadOnlySpan<byte> ranges, out ReadOnlySpan<byte> frame)
    {
        generation = 0;
        direction = default;
        ranges = frame = default;
        if (record.Length < PrefixSize) return false;
        generation = BinaryPrimitives.ReadUInt64LittleEndian(record);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(record[8..]);
        uint dir = BinaryPrimitives.ReadUInt32LittleEndian(record[12..]);
        if (count - 1 >= MaxRanges || dir > (uint)GuestMemoryDirection.ToGuest) return false;
        int offset = FrameOffset((int)count);
        if (record.Length < offset) return false;
        direction = (GuestMemoryDirection)dir;
        ranges = record[PrefixSize..offset];
        frame = record[offset..];
        return true;
    }

    /// <summary>Number of ranges in <paramref name="ranges"/> as <see cref="TryParse"/> returned them.</summary>
    public static int RangeCount(ReadOnlySpan<byte> ranges) => ranges.Length / RangeSize;

    /// <summary>Reads range <paramref name="index"/> of the ranges <see cref="TryParse"/> returned.</summary>
    public static GuestRange ReadRange(ReadOnlySpan<byte> ranges, int index)
    {
        var at = ranges[(index * RangeSize)..];
        return new GuestRange(BinaryPrimitives.ReadUInt64LittleEndian(at), BinaryPrimitives.ReadUInt64LittleEndian(at[8..]));
    }
}
