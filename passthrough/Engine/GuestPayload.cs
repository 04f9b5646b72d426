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
/// The payload of a request whose bytes stay in guest memory (<see cref="GuestMemoryDirection"/>): the daemon reads
/// into (READ), builds into (READDIR, READDIRPLUS, GETXATTR, LISTXATTR, READLINK) or writes from (WRITE)
/// <see cref="Buffers"/>, <see cref="Length"/> bytes in all, and a reply going to the guest carries the out header alone.
/// </summary>
public readonly ref struct GuestPayload
{
    /// <summary>The buffers in order; the engine may shorten the last ones to the bytes a READ asks for.</summary>
    public readonly Span<IoBuffer> Buffers;

    /// <summary>Total bytes of <see cref="Buffers"/>.</summary>
    public readonly long Length;

    /// <summary>Which way the bytes move.</summary>
    public readonly GuestMemoryDirection Direction;

    /// <summary>
    /// The dispatcher's own buffer (at least <see cref="ScratchSize"/> bytes, made once per dispatcher) for a reply that
    /// is built rather than read from a file when <see cref="Buffers"/> are more than one: it is built here, then copied
    /// into the buffers in order. Empty when the transport has none; such a reply then goes into the first buffer only.
    /// </summary>
    public readonly Span<byte> Scratch;

    /// <summary>
    /// The least a transport gives as <see cref="Scratch"/>: XATTR_SIZE_MAX, so that an extended attribute's value or
    /// list never has to be cut short to fit. A directory listing built there is cut to it, which READDIR allows.
    /// </summary>
    public const int ScratchSize = 64 * 1024;

    /// <summary>A payload of <paramref name="buffers"/>, <paramref name="length"/> bytes in all.</summary>
    public GuestPayload(Span<IoBuffer> buffers, long length, GuestMemoryDirection direction)
        : this(buffers, length, direction, default)
    {
    }

    /// <summary>A payload of <paramref name="buffers"/>, <paramref name="length"/> bytes in all, with a dispatcher's <paramref name="scratch"/>.</summary>
    public GuestPayload(Span<IoBuffer> buffers, long length, GuestMemoryDirection direction, Span<byte> scratch)
    {
        Buffers = buffers;
        Length = length;
        Direction = direction;
        Scratch = scratch;
    }

    /// <summary>True when there is a payload in guest memory (the default value has none).</summary>
    public bool IsPresent => !Buffers.IsEmpty;
}
