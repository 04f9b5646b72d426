using System.Buffers.Binary;
using Hypervisor.Protocol.VhostUser;

namespace Hypervisor.Tests;

/// <summary>The front-end's side of the wire format: the descriptions only a VMM sends (the back-end only reads them).</summary>
internal static class FrontEndWriters
{
    /// <summary>Writes a vring address description (40 bytes).</summary>
    public static void WriteTo(this VringAddress a, Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dest, a.Index);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[4..], a.Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], a.Descriptor);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[16..], a.Used);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[24..], a.Available);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[32..], a.Log);
    }

    /// <summary>Writes a memory region description (32 bytes).</summary>
    public static void WriteTo(this VhostUserMemoryRegion m, Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(dest, m.GuestPhysAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], m.MemorySize);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[16..], m.UserspaceAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[24..], m.MmapOffset);
    }
}
