using System.Buffers.Binary;

namespace Hypervisor.Protocol.VhostUser;

/// <summary>Header flags of a vhost-user message ("Message Specification": <c>flags</c>).</summary>
[Flags]
public enum VhostUserHeaderFlags : uint
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>Bits 0-1 hold the protocol version; this is version 1, the only one defined.</summary>
    Version1 = 0x1,
    /// <summary>Mask of the version bits.</summary>
    VersionMask = 0x3,
    /// <summary>Set on every message sent back-end to front-end in answer to a request.</summary>
    Reply = 0x4,
    /// <summary>The front-end asks for a REPLY_ACK u64 answer (0 success, non-zero failure).</summary>
    NeedReply = 0x8,
}

/// <summary>
/// The 12-byte header of every vhost-user message: <c>u32 request</c>, <c>u32 flags</c>, <c>u32 size</c>
/// (the number of payload bytes that follow), all in the host's (little-endian) byte order.
/// </summary>
public readonly record struct VhostUserHeader(VhostUserRequest Request, VhostUserHeaderFlags Flags, uint Size)
{
    /// <summary>Size of the header on the wire.</summary>
    public const int WireSize = 12;

    /// <summary>
    /// Largest payload any defined message carries: a config space description (12 + 256) or a memory
    /// table of 8 regions (8 + 8 * 32). A header announcing more cannot be resynchronised on a stream
    /// socket, so the connection must be dropped.
    /// </summary>
    public const int MaxPayloadSize = 4096;

    /// <summary>True when the front-end set <see cref="VhostUserHeaderFlags.NeedReply"/>.</summary>
    public bool NeedsReply => (Flags & VhostUserHeaderFlags.NeedReply) != 0;

    /// <summary>
    /// Parses a header from exactly <see cref="WireSize"/> bytes, rejecting a wrong version, a set REPLY
    /// bit (the front-end never sends replies on this channel) and a payload larger than
    /// <see cref="MaxPayloadSize"/>.
    /// </summary>
    /// <exception cref="VhostUserProtocolException">The header is malformed.</exception>
    public static VhostUserHeader Parse(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < WireSize)
            throw new VhostUserProtocolException(VhostUserError.ShortHeader, VhostUserRequest.None,
                $"a message header is {WireSize} bytes but only {bytes.Length} arrived");
        var request = (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(bytes);
        var flags = (VhostUserHeaderFlags)BinaryPrimitives.ReadUInt32LittleEndian(bytes[4..]);
        var size = BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]);
        if ((flags & VhostUserHeaderFlags.VersionMask) != VhostUserHeaderFlags.Version1)
            throw new VhostUserProtocolException(VhostUserError.BadVersion, request,
                $"header version is {(uint)(flags & VhostUserHeaderFlags.VersionMask)}, only version 1 exists");
        if (size > MaxPayloadSize)
            throw new VhostUserProtocolException(VhostUserError.PayloadTooLarge, request,
                $"payload size {size} exceeds the largest message ({MaxPayloadSize} bytes)");
        if ((flags & VhostUserHeaderFlags.Reply) != 0)
            throw new VhostUserProtocolException(VhostUserError.UnexpectedReply, request,
                "the front-end sent a message with the REPLY flag set");
        return new VhostUserHeader(request, flags, size);
    }

    /// <summary>Writes this header into the first <see cref="WireSize"/> bytes of <paramref name="dest"/>.</summary>
    public void WriteTo(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dest, (uint)Request);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[4..], (uint)Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[8..], Size);
    }

    /// <summary>The header of the back-end's reply to <paramref name="request"/> with a payload of <paramref name="size"/> bytes.</summary>
    public static VhostUserHeader ReplyTo(VhostUserRequest request, uint size)
        => new(request, VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.Reply, size);
}
