using System.Runtime.InteropServices;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Passthrough.Engine;

/// <summary>
/// One buffer of a payload that stays in guest memory, laid out as C <c>struct iovec</c> so that a list of them goes
/// to preadv/pwritev as it is. Made only by the transport, from a range it checked against its own mapping of the
/// guest's memory; the mapping stays while the request is being handled.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public readonly struct IoBuffer
{
    /// <summary>Address of the first byte in this process.</summary>
    public readonly nint Address;

    /// <summary>Length in bytes.</summary>
    public readonly nuint Length;

    /// <summary>A buffer of <paramref name="length"/> bytes at <paramref name="address"/>.</summary>
    public IoBuffer(nint address, nuint length)
    {
        Address = address;
        Length = length;
    }
}

/// <summary>
/// The payload of a READ or WRITE whose bytes stay in guest memory (<see cref="GuestMemoryDirection"/>): the daemon
/// reads into (READ) or writes from (WRITE) <see cref="Buffers"/>, <see cref="Length"/> bytes in all, and a READ's
/// reply carries the out header alone.
/// </summary>
public readonly ref struct GuestPayload
{
    /// <summary>The buffers in order; the engine may shorten the last ones to the bytes a READ asks for.</summary>
    public readonly Span<IoBuffer> Buffers;

    /// <summary>Total bytes of <see cref="Buffers"/>.</summary>
    public readonly long Length;

    /// <summary>Which way the bytes move.</summary>
    public readonly GuestMemoryDirection Direction;

    /// <summary>A payload of <paramref name="buffers"/>, <paramref name="length"/> bytes in all.</summary>
    public GuestPayload(Span<IoBuffer> buffers, long length, GuestMemoryDirection direction)
    {
        Buffers = buffers;
        Length = length;
        Direction = direction;
    }

    /// <summary>True when there is a payload in guest memory (the default value has none).</summary>
    public bool IsPresent => !Buffers.IsEmpty;
}
