using System.Buffers.Binary;
using System.Text;

namespace Hypervisor.Vdev.Tests.Frontend;

/// <summary>
/// Minimal FUSE request builders and reply readers (layouts of linux/fuse.h) so the front-end can talk to a
/// real daemon; not the project's FUSE ABI, just enough to drive INIT, LOOKUP, GETATTR, OPEN, READ, FORGET.
/// </summary>
public static class FuseFrames
{
    public const uint Lookup = 1, Forget = 2, Getattr = 3, Open = 14, Read = 15, Write = 16, Release = 18, Init = 26, Interrupt = 36, BatchForget = 42;
    public const int InHeader = 40, OutHeader = 16;
    public const ulong RootId = 1;

    /// <summary>A request: fuse_in_header followed by <paramref name="body"/>.</summary>
    public static byte[] Request(uint opcode, ulong unique, ulong nodeId, ReadOnlySpan<byte> body)
    {
        var f = new byte[InHeader + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(f, (uint)f.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(4), opcode);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(8), unique);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(16), nodeId);
        body.CopyTo(f.AsSpan(InHeader));
        return f;
    }

    /// <summary>FUSE_INIT 7.31 with a 64-byte fuse_init_in (flags2 and the rest zero).</summary>
    public static byte[] InitRequest(ulong unique, uint maxReadahead = 128 << 10)
    {
        var b = new byte[64];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 7);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 31);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), maxReadahead);
        return Request(Init, unique, 0, b);
    }

    /// <summary>FUSE_LOOKUP of <paramref name="name"/> in <paramref name="parent"/>.</summary>
    public static byte[] LookupRequest(ulong unique, ulong parent, string name)
    {
        var n = Encoding.UTF8.GetBytes(name + "\0");
        return Request(Lookup, unique, parent, n);
    }

    /// <summary>FUSE_GETATTR without a file handle.</summary>
    public static byte[] GetattrRequest(ulong unique, ulong node) => Request(Getattr, unique, node, new byte[16]);

    /// <summary>FUSE_OPEN with <paramref name="flags"/> (O_RDONLY = 0).</summary>
    public static byte[] OpenRequest(ulong unique, ulong node, uint flags = 0)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(b, flags);
        return Request(Open, unique, node, b);
    }

    /// <summary>FUSE_READ of <paramref name="size"/> bytes at <paramref name="offset"/>.</summary>
    public static byte[] ReadRequest(ulong unique, ulong node, ulong fh, ulong offset, uint size)
    {
        var b = new byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(b, fh);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), size);
        return Request(Read, unique, node, b);
    }

    /// <summary>FUSE_WRITE of <paramref name="data"/> at <paramref name="offset"/> (the file's open flags in <paramref name="openFlags"/>).</summary>
    public static byte[] WriteRequest(ulong unique, ulong node, ulong fh, ulong offset, ReadOnlySpan<byte> data, uint openFlags = 2)
    {
        var b = new byte[40 + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(b, fh);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), (uint)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(32), openFlags);
        data.CopyTo(b.AsSpan(40));
        return Request(Write, unique, node, b);
    }

    /// <summary>FUSE_RELEASE of <paramref name="fh"/> opened with <paramref name="openFlags"/>.</summary>
    public static byte[] ReleaseRequest(ulong unique, ulong node, ulong fh, uint openFlags = 0)
    {
        var b = new byte[24];
        BinaryPrimitives.WriteUInt64LittleEndian(b, fh);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), openFlags);
        return Request(Release, unique, node, b);
    }

    /// <summary>FUSE_FORGET of <paramref name="nlookup"/> lookups of <paramref name="node"/> (no reply).</summary>
    public static byte[] ForgetRequest(ulong unique, ulong node, ulong nlookup)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, nlookup);
        return Request(Forget, unique, node, b);
    }

    /// <summary>Reads fuse_out_header: (len, error, unique).</summary>
    public static (uint Len, int Error, ulong Unique) ReadOutHeader(ReadOnlySpan<byte> reply)
    {
        if (reply.Length < OutHeader) throw new InvalidDataException($"reply of {reply.Length} bytes is shorter than a fuse_out_header");
        return (BinaryPrimitives.ReadUInt32LittleEndian(reply), BinaryPrimitives.ReadInt32LittleEndian(reply[4..]), BinaryPrimitives.ReadUInt64LittleEndian(reply[8..]));
    }

    /// <summary>From a LOOKUP reply (fuse_entry_out): the node id and the attr's size and mode.</summary>
    public static (ulong NodeId, ulong Size, uint Mode) ReadEntry(ReadOnlySpan<byte> reply)
    {
        var e = reply[OutHeader..];
        const int attr = 40;
        return (BinaryPrimitives.ReadUInt64LittleEndian(e), BinaryPrimitives.ReadUInt64LittleEndian(e[(attr + 8)..]), BinaryPrimitives.ReadUInt32LittleEndian(e[(attr + 60)..]));
    }

    /// <summary>From a GETATTR reply (fuse_attr_out): the attr's ino, size and mode.</summary>
    public static (ulong Ino, ulong Size, uint Mode) ReadAttr(ReadOnlySpan<byte> reply)
    {
        var a = reply[(OutHeader + 16)..];
        return (BinaryPrimitives.ReadUInt64LittleEndian(a), BinaryPrimitives.ReadUInt64LittleEndian(a[8..]), BinaryPrimitives.ReadUInt32LittleEndian(a[60..]));
    }

    /// <summary>From an OPEN reply (fuse_open_out): the file handle.</summary>
    public static ulong ReadOpenFh(ReadOnlySpan<byte> reply) => BinaryPrimitives.ReadUInt64LittleEndian(reply[OutHeader..]);

    /// <summary>From an INIT reply (fuse_init_out): major, minor, max_write.</summary>
    public static (uint Major, uint Minor, uint MaxWrite) ReadInit(ReadOnlySpan<byte> reply)
    {
        var b = reply[OutHeader..];
        return (BinaryPrimitives.ReadUInt32LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b[4..]), BinaryPrimitives.ReadUInt32LittleEndian(b[20..]));
    }
}
