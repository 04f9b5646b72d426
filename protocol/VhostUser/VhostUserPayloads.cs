using System.Buffers.Binary;

namespace Hypervisor.Protocol.VhostUser;

/// <summary>"A vring state description": <c>u32 index</c>, <c>u32 num</c> (8 bytes).</summary>
public readonly record struct VringState(uint Index, uint Num)
{
    /// <summary>Size on the wire.</summary>
    public const int WireSize = 8;

    /// <summary>Writes the state into <paramref name="dest"/>.</summary>
    public void WriteTo(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dest, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[4..], Num);
    }
}

/// <summary>
/// "A vring address description": <c>u32 index</c>, <c>u32 flags</c> (bit 0 VHOST_VRING_F_LOG),
/// <c>u64 descriptor</c>, <c>u64 used</c>, <c>u64 available</c>, <c>u64 log</c> (40 bytes). The three ring
/// addresses are in the front-end's virtual address space, translated through the memory table's
/// <c>userspace_addr</c>; the log address is guest-physical.
/// </summary>
public readonly record struct VringAddress(uint Index, uint Flags, ulong Descriptor, ulong Used, ulong Available, ulong Log)
{
    /// <summary>Size on the wire.</summary>
    public const int WireSize = 40;
    /// <summary>VHOST_VRING_F_LOG: the front-end asks for used-ring dirty logging.</summary>
    public const uint FlagLog = 1;
}

/// <summary>
/// "A memory region description": <c>u64 guest_address</c>, <c>u64 size</c>, <c>u64 user_address</c>,
/// <c>u64 mmap_offset</c> (32 bytes). The region's bytes start <c>mmap_offset</c> bytes into the fd sent with it.
/// </summary>
public readonly record struct VhostUserMemoryRegion(ulong GuestPhysAddr, ulong MemorySize, ulong UserspaceAddr, ulong MmapOffset)
{
    /// <summary>Size on the wire.</summary>
    public const int WireSize = 32;

    /// <summary>Reads a region from 32 bytes.</summary>
    public static VhostUserMemoryRegion Read(ReadOnlySpan<byte> src) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(src),
        BinaryPrimitives.ReadUInt64LittleEndian(src[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(src[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(src[24..]));
}

/// <summary>"A config space description": <c>u32 offset</c>, <c>u32 size</c>, <c>u32 flags</c>, then <c>size</c> bytes.</summary>
public readonly record struct VhostUserConfigHeader(uint Offset, uint Size, uint Flags)
{
    /// <summary>Size of the three header fields.</summary>
    public const int WireSize = 12;
    /// <summary>Largest config payload (VHOST_USER_MAX_CONFIG_SIZE).</summary>
    public const int MaxConfigSize = 256;

    /// <summary>Writes the three fields into <paramref name="dest"/>.</summary>
    public void WriteTo(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dest, Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[4..], Size);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[8..], Flags);
    }
}

/// <summary>
/// Validating payload readers for each front-end request. Each checks the payload size the request type
/// carries (the header's <c>size</c> must match it exactly) and field ranges, and throws
/// <see cref="VhostUserProtocolException"/> otherwise. None performs I/O.
/// </summary>
public static class VhostUserPayload
{
    /// <summary>Most regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS); also the most fds one message carries.</summary>
    public const int MaxMemTableRegions = 8;
    /// <summary>Bits 0-7 of a vring fd payload: the queue index.</summary>
    public const ulong VringFdIndexMask = 0xff;
    /// <summary>Bit 8 of a vring fd payload (VHOST_USER_VRING_NOFD_MASK): no fd accompanies the message.</summary>
    public const ulong VringNoFdFlag = 1UL << 8;

    /// <summary>Requires an empty payload (SET_OWNER, RESET_*, GET_FEATURES, ...).</summary>
    public static void ReadEmpty(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 0) throw SizeError(request, payload.Length, "no payload");
    }

    /// <summary>Reads a u64 payload (SET_FEATURES, SET_PROTOCOL_FEATURES, vring fd messages).</summary>
    public static ulong ReadU64(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 8) throw SizeError(request, payload.Length, "an 8-byte u64");
        return BinaryPrimitives.ReadUInt64LittleEndian(payload);
    }

    /// <summary>Reads a vring state payload.</summary>
    public static VringState ReadVringState(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != VringState.WireSize) throw SizeError(request, payload.Length, "an 8-byte vring state");
        return new VringState(BinaryPrimitives.ReadUInt32LittleEndian(payload), BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]));
    }

    /// <summary>Reads a vring address payload.</summary>
    public static VringAddress ReadVringAddress(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != VringAddress.WireSize) throw SizeError(request, payload.Length, "a 40-byte vring address");
        return new VringAddress(
            BinaryPrimitives.ReadUInt32LittleEndian(payload),
            BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]),
            BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]),
            BinaryPrimitives.ReadUInt64LittleEndian(payload[32..]));
    }

    /// <summary>
    /// Reads a vring fd payload (SET_VRING_KICK/CALL/ERR): the queue index and whether an fd must accompany
    /// it. Bits other than 0-8 must be zero.
    /// </summary>
    public static (uint Index, bool HasFd) ReadVringFd(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        var v = ReadU64(request, payload);
        if ((v & ~(VringFdIndexMask | VringNoFdFlag)) != 0)
            throw new VhostUserProtocolException(VhostUserError.BadField, request, $"vring fd payload 0x{v:x} sets reserved bits");
        return ((uint)(v & VringFdIndexMask), (v & VringNoFdFlag) == 0);
    }

    /// <summary>
    /// Reads a memory regions description: <c>u32 nregions</c>, <c>u32 padding</c>, then <c>nregions</c>
    /// regions (1..8). Each region must be non-empty and not wrap the 64-bit address spaces.
    /// </summary>
    public static VhostUserMemoryRegion[] ReadMemoryTable(ReadOnlySpan<byte> payload)
    {
        const VhostUserRequest r = VhostUserRequest.SetMemTable;
        if (payload.Length < 8) throw SizeError(r, payload.Length, "at least 8 bytes");
        var n = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (n == 0 || n > MaxMemTableRegions)
            throw new VhostUserProtocolException(VhostUserError.BadField, r, $"{n} regions given, 1 to {MaxMemTableRegions} allowed");
        if (payload.Length != 8 + (int)n * VhostUserMemoryRegion.WireSize)
            throw SizeError(r, payload.Length, $"{8 + n * VhostUserMemoryRegion.WireSize} bytes for {n} regions");
        var regions = new VhostUserMemoryRegion[n];
        for (int i = 0; i < regions.Length; i++)
        {
            regions[i] = VhostUserMemoryRegion.Read(payload.Slice(8 + i * VhostUserMemoryRegion.WireSize));
            CheckRegion(r, regions[i]);
        }
        return regions;
    }

    /// <summary>Reads a single memory region description (ADD_MEM_REG, REM_MEM_REG): <c>u64 padding</c> then a region.</summary>
    public static VhostUserMemoryRegion ReadSingleRegion(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 8 + VhostUserMemoryRegion.WireSize) throw SizeError(request, payload.Length, "40 bytes");
        var region = VhostUserMemoryRegion.Read(payload[8..]);
        CheckRegion(request, region);
        return region;
    }

    /// <summary>Reads a config space description; returns its header and the <c>size</c> bytes that follow.</summary>
    public static VhostUserConfigHeader ReadConfig(VhostUserRequest request, ReadOnlySpan<byte> payload, out ReadOnlySpan<byte> data)
    {
        if (payload.Length < VhostUserConfigHeader.WireSize) throw SizeError(request, payload.Length, "at least 12 bytes");
        var h = new VhostUserConfigHeader(
            BinaryPrimitives.ReadUInt32LittleEndian(payload),
            BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]),
            BinaryPrimitives.ReadUInt32LittleEndian(payload[8..]));
        if (h.Size > VhostUserConfigHeader.MaxConfigSize)
            throw new VhostUserProtocolException(VhostUserError.BadField, request, $"config size {h.Size} exceeds {VhostUserConfigHeader.MaxConfigSize}");
        if (payload.Length != VhostUserConfigHeader.WireSize + h.Size)
            throw SizeError(request, payload.Length, $"{VhostUserConfigHeader.WireSize + h.Size} bytes for a config size of {h.Size}");
        data = payload.Slice(VhostUserConfigHeader.WireSize, (int)h.Size);
        return h;
    }

    /// <summary>Writes a u64 into <paramref name="dest"/>.</summary>
    public static void WriteU64(Span<byte> dest, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(dest, value);

    private static void CheckRegion(VhostUserRequest r, VhostUserMemoryRegion m)
    {
        if (m.MemorySize == 0)
            throw new VhostUserProtocolException(VhostUserError.BadField, r, "a memory region has size 0");
        if (m.GuestPhysAddr + m.MemorySize < m.GuestPhysAddr || m.UserspaceAddr + m.MemorySize < m.UserspaceAddr
            || m.MmapOffset + m.MemorySize < m.MmapOffset)
            throw new VhostUserProtocolException(VhostUserError.BadField, r,
                $"memory region at guest 0x{m.GuestPhysAddr:x} of size 0x{m.MemorySize:x} wraps the address space");
    }

    private static VhostUserProtocolException SizeError(VhostUserRequest r, int got, string expected)
        => new(VhostUserError.BadPayloadSize, r, $"payload is {got} bytes, expected {expected}");
}
