using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Fuse;

/// <summary>
/// Encodes replies: a <c>fuse_out_header</c> followed by the payload, with <c>len</c> set to the exact number of
/// bytes and the request's unique echoed. The payload is written by the caller into <see cref="Payload"/> first
/// (e.g. straight from <c>pread</c>), then the header is stamped.
/// </summary>
public static class FuseReply
{
    /// <summary>Size of <c>fuse_out_header</c>.</summary>
    public static readonly int HeaderSize = Unsafe.SizeOf<OutHeader>();

    /// <summary>The part of a reply buffer after the header.</summary>
    public static Span<byte> Payload(Span<byte> reply) => reply[HeaderSize..];

    /// <summary>Stamps the header of a successful reply whose payload (already in place) is <paramref name="payloadLength"/> bytes.</summary>
    public static int Finish(Span<byte> reply, RequestId unique, int payloadLength)
    {
        var total = HeaderSize + payloadLength;
        var header = new OutHeader { Len = (uint)total, Error = 0, Unique = unique.Value };
        MemoryMarshal.Write(reply, in header);
        return total;
    }

    /// <summary>Writes an error reply (header only, negative errno).</summary>
    public static int Error(Span<byte> reply, RequestId unique, Errno error)
    {
        var header = new OutHeader { Len = (uint)HeaderSize, Error = -error.Value, Unique = unique.Value };
        MemoryMarshal.Write(reply, in header);
        return HeaderSize;
    }

    /// <summary>Writes a reply whose payload is one struct, truncated to <paramref name="size"/> bytes for older protocol minors.</summary>
    public static int Struct<T>(Span<byte> reply, RequestId unique, in T value, int size = -1) where T : unmanaged
    {
        var full = Unsafe.SizeOf<T>();
        if (size < 0 || size > full) size = full;
        var bytes = MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value));
        bytes[..size].CopyTo(reply[HeaderSize..]);
        return Finish(reply, unique, size);
    }

    /// <summary>Writes a reply of two structs back to back (CREATE: entry then open).</summary>
    public static int Structs<T1, T2>(Span<byte> reply, RequestId unique, in T1 first, in T2 second)
        where T1 : unmanaged where T2 : unmanaged
    {
        MemoryMarshal.Write(reply[HeaderSize..], in first);
        MemoryMarshal.Write(reply[(HeaderSize + Unsafe.SizeOf<T1>())..], in second);
        return Finish(reply, unique, Unsafe.SizeOf<T1>() + Unsafe.SizeOf<T2>());
    }
}

/// <summary>
/// Appends <c>fuse_dirent</c> / <c>fuse_direntplus</c> records (8-byte aligned, name not NUL-terminated) into a
/// READDIR/READDIRPLUS reply until the buffer is full.
/// </summary>
/// <param name="buffer">Where the records go: the reply payload, sized to the request's <c>size</c>.</param>
public ref struct DirentWriter(Span<byte> buffer)
{
    private readonly Span<byte> _buffer = buffer;
    private int _length;

    /// <summary>Bytes written so far.</summary>
    public readonly int Length => _length;

    /// <summary>Size of <c>fuse_dirent</c> without the name.</summary>
    public static readonly int DirentSize = Unsafe.SizeOf<Dirent>();

    /// <summary>Size of <c>fuse_direntplus</c> without the name.</summary>
    public static readonly int DirentPlusSize = Unsafe.SizeOf<DirentPlus>();

    /// <summary>The 8-byte aligned size of a record (FUSE_DIRENT_ALIGN).</summary>
    public static int Align(int size) => (size + 7) & ~7;

    /// <summary>Appends a READDIR entry; false (nothing written) when it does not fit.</summary>
    public bool TryAdd(ulong ino, ulong nextOffset, uint type, ReadOnlySpan<byte> name) =>
        Append(new Dirent { Ino = ino, Off = nextOffset, Namelen = (uint)name.Length, Type = type }, name);

    /// <summary>True if a READDIRPLUS record with a name of <paramref name="nameLength"/> bytes still fits.</summary>
    public readonly bool FitsPlus(int nameLength) => _length + Align(DirentPlusSize + nameLength) <= _buffer.Length;

    /// <summary>Appends a READDIRPLUS entry; false (nothing written) when it does not fit.</summary>
    public bool TryAddPlus(in EntryOut entry, ulong nextOffset, uint type, ReadOnlySpan<byte> name) =>
        Append(new DirentPlus { EntryOut = entry, Dirent = new Dirent { Ino = entry.Attr.Ino, Off = nextOffset, Namelen = (uint)name.Length, Type = type } }, name);

    /// <summary>Writes the fixed part, the name and the padding to the 8-byte boundary, if the record fits.</summary>
    private bool Append<T>(in T fixedPart, ReadOnlySpan<byte> name) where T : unmanaged
    {
        int size = Unsafe.SizeOf<T>();
        var record = Align(size + name.Length);
        if (_length + record > _buffer.Length) return false;
        var dst = _buffer.Slice(_length, record);
        MemoryMarshal.Write(dst, in fixedPart);
        name.CopyTo(dst[size..]);
        dst[(size + name.Length)..].Clear();
        _length += record;
        return true;
    }
}
