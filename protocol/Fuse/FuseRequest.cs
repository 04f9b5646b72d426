using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Fuse;

/// <summary>Why a frame could not be parsed. A malformed frame is not a failing syscall: it never becomes a random errno.</summary>
public enum FrameErrorKind
{
    /// <summary>Fewer bytes than a <c>fuse_in_header</c>: nothing can be answered, the frame is dropped.</summary>
    ShorterThanHeader,
    /// <summary><c>fuse_in_header.len</c> disagrees with the number of bytes received.</summary>
    LengthMismatch,
    /// <summary>The extension area (<c>total_extlen</c>) is larger than the frame.</summary>
    BadExtensionLength,
    /// <summary>The body is shorter than the opcode's fixed argument struct.</summary>
    BodyTooShort,
    /// <summary>A name or string argument has no terminating NUL inside the frame.</summary>
    MissingNul,
    /// <summary>A variable-length part (write payload, xattr value, forget list) disagrees with its declared size.</summary>
    PayloadMismatch,
    /// <summary>An extension in the extension area runs past it, or one the request needs disagrees with its own size.</summary>
    BadExtension,
}

/// <summary>A malformed-frame failure, with enough detail for one log line.</summary>
public readonly record struct FrameError(FrameErrorKind Kind, uint Opcode, ulong Unique)
{
    /// <summary>Whether a reply can be addressed to the sender (the header was readable).</summary>
    public bool CanReply => Kind != FrameErrorKind.ShorterThanHeader;

    /// <inheritdoc/>
    public override string ToString() => $"malformed frame ({Kind}) opcode {Opcode} unique {Unique}";
}

/// <summary>
/// One FUSE request frame: the validated header and the argument bytes that follow it. Views the caller's buffer;
/// nothing is copied.
/// </summary>
public readonly ref struct FuseRequest
{
    /// <summary>The request header.</summary>
    public readonly InHeader Header;

    /// <summary>The argument bytes after the header, without any extension area.</summary>
    public readonly ReadOnlySpan<byte> Body;

    /// <summary>The extension area at the end of the frame (<c>total_extlen</c> * 8 bytes): <c>fuse_ext_header</c> records.</summary>
    public readonly ReadOnlySpan<byte> Extensions;

    private FuseRequest(InHeader header, ReadOnlySpan<byte> body, ReadOnlySpan<byte> extensions)
    {
        Header = header;
        Body = body;
        Extensions = extensions;
    }

    /// <summary>
    /// Finds the extension of <paramref name="type"/> (a <c>fuse_ext_type</c>) in <paramref name="extensions"/>: its
    /// payload after the <c>fuse_ext_header</c>, or empty when it is absent. False when the records do not add up
    /// (see <see cref="TryFindExtensionRecord"/>).
    /// </summary>
    public static bool TryFindExtension(ReadOnlySpan<byte> extensions, uint type, out ReadOnlySpan<byte> payload)
    {
        payload = default;
        if (!TryFindExtensionRecord(extensions, type, type, out var record)) return false;
        if (!record.IsEmpty) payload = record[Unsafe.SizeOf<ExtHeader>()..];
        return true;
    }

    /// <summary>
    /// Finds the first extension record whose type is from <paramref name="firstType"/> to <paramref name="lastType"/>
    /// (a security context's type is its count, 0 to FUSE_MAX_NR_SECCTX): the whole record, its <c>fuse_ext_header</c>
    /// included, or empty when there is none. False when a record's size is not a multiple of 8 from the header's size
    /// up that fits the area (the kernel aligns every record to 8 bytes, FUSE_REC_ALIGN).
    /// </summary>
    public static bool TryFindExtensionRecord(ReadOnlySpan<byte> extensions, uint firstType, uint lastType, out ReadOnlySpan<byte> record)
    {
        record = default;
        var headerSize = Unsafe.SizeOf<ExtHeader>();
        while (!extensions.IsEmpty)
        {
            if (extensions.Length < headerSize) return false;
            var header = MemoryMarshal.Read<ExtHeader>(extensions);
            if (header.Size < headerSize || header.Size % 8 != 0 || header.Size > (uint)extensions.Length) return false;
            if (header.Type >= firstType && header.Type <= lastType)
            {
                record = extensions[..(int)header.Size];
                return true;
            }
            extensions = extensions[(int)header.Size..];
        }
        return true;
    }

    /// <summary>The opcode.</summary>
    public FuseOpcode Opcode => (FuseOpcode)Header.Opcode;

    /// <summary>The unique id to echo in the reply.</summary>
    public RequestId Unique => new(Header.Unique);

    /// <summary>The node the request is about.</summary>
    public NodeId Node => new(Header.Nodeid);

    /// <summary>Size of <c>fuse_in_header</c>.</summary>
    public static readonly int HeaderSize = Unsafe.SizeOf<InHeader>();

    /// <summary>
    /// Parses a frame. The header is copied out once (the buffer may be shared memory a peer can still change);
    /// its length must equal the number of bytes received.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> frame, out FuseRequest request, out FrameError error)
    {
        request = default;
        if (frame.Length < HeaderSize)
        {
            error = new FrameError(FrameErrorKind.ShorterThanHeader, 0, 0);
            return false;
        }
        var header = MemoryMarshal.Read<InHeader>(frame);
        if (header.Len != (uint)frame.Length)
        {
            error = new FrameError(FrameErrorKind.LengthMismatch, header.Opcode, header.Unique);
            return false;
        }
        // Extensions (security context, supplementary groups) are only sent when negotiated; they sit at the end.
        var extBytes = header.TotalExtlen * 8;
        if (extBytes > frame.Length - HeaderSize)
        {
            error = new FrameError(FrameErrorKind.BadExtensionLength, header.Opcode, header.Unique);
            return false;
        }
        request = new FuseRequest(header, frame[HeaderSize..(frame.Length - extBytes)], frame[(frame.Length - extBytes)..]);
        error = default;
        return true;
    }
}

/// <summary>Sequential, bounds-checked reads of a request body. Every method fails instead of reading past the end.</summary>
public ref struct FuseArgReader
{
    private ReadOnlySpan<byte> _rest;

    /// <summary>Reads from <paramref name="body"/>.</summary>
    public FuseArgReader(ReadOnlySpan<byte> body) => _rest = body;

    /// <summary>The bytes not consumed yet.</summary>
    public readonly ReadOnlySpan<byte> Rest => _rest;

    /// <summary>Copies the next <typeparamref name="T"/> out of the body.</summary>
    public bool TryRead<T>(out T value) where T : unmanaged
    {
        var size = Unsafe.SizeOf<T>();
        if (_rest.Length < size)
        {
            value = default;
            return false;
        }
        value = MemoryMarshal.Read<T>(_rest);
        _rest = _rest[size..];
        return true;
    }

    /// <summary>
    /// Reads a struct that older protocol minors sent shorter (e.g. <c>fuse_setxattr_in</c> without SETXATTR_EXT):
    /// <paramref name="size"/> bytes are consumed and the remainder of <typeparamref name="T"/> is zero.
    /// </summary>
    public bool TryReadPrefix<T>(int size, out T value) where T : unmanaged
    {
        value = default;
        if (size > Unsafe.SizeOf<T>() || _rest.Length < size) return false;
        _rest[..size].CopyTo(MemoryMarshal.AsBytes(new Span<T>(ref value)));
        _rest = _rest[size..];
        return true;
    }

    /// <summary>Reads a NUL-terminated byte string; the span excludes the NUL.</summary>
    public bool TryReadString(out ReadOnlySpan<byte> value)
    {
        var nul = _rest.IndexOf((byte)0);
        if (nul < 0)
        {
            value = default;
            return false;
        }
        value = _rest[..nul];
        _rest = _rest[(nul + 1)..];
        return true;
    }

    /// <summary>Takes exactly <paramref name="count"/> bytes.</summary>
    public bool TryReadBytes(int count, out ReadOnlySpan<byte> value)
    {
        if (count < 0 || _rest.Length < count)
        {
            value = default;
            return false;
        }
        value = _rest[..count];
        _rest = _rest[count..];
        return true;
    }
}
