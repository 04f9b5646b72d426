using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Vdev.Virtio;

namespace Hypervisor.Vdev.Device;

/// <summary>
/// One request chain popped from a virtqueue, as handed to <see cref="IFuseTransport.Submit"/>. Objects are
/// pooled per queue slot and reused once the chain is completed; do not keep a reference past completion.
/// </summary>
public sealed class VirtqueueRequest
{
    /// <summary>Size of C <c>struct fuse_in_header</c>.</summary>
    public static readonly int InHeaderSize = Unsafe.SizeOf<InHeader>();
    /// <summary>Size of C <c>struct fuse_out_header</c>.</summary>
    public static readonly int OutHeaderSize = Unsafe.SizeOf<OutHeader>();

    internal GuestBuffer[] ReadableSegments = new GuestBuffer[4];
    internal GuestBuffer[] WritableSegments = new GuestBuffer[4];
    internal int ReadableCount;
    internal int WritableCount;
    private readonly byte[] _header = new byte[InHeaderSize];

    /// <summary>Slot state: 0 free, 1 in flight, 2 being completed or dropped.</summary>
    internal int State;
    internal GuestMemoryTable? Memory;
    internal RingView? View;
    internal uint Generation;
    internal ushort Head;
    internal ulong TagField;

    /// <summary>
    /// Above 0 when the transport asked the daemon to write this request's reply payload (a READ's data, a directory
    /// listing, an attribute value or list, a link target) straight into the chain's writable buffers after the out
    /// header: the most bytes it may write there. The reply is then the out header alone.
    /// </summary>
    internal int DirectReadCapacity;

    /// <summary>
    /// Cancelled when the queue stops (GET_VRING_BASE, reset, disconnect, shutdown). A transport that blocks
    /// in <see cref="IFuseTransport.Submit"/> (a full ring) waits on this token and returns false when it fires.
    /// </summary>
    public CancellationToken Cancellation { get; internal set; }

    /// <summary>Opaque tag identifying this request until it is completed; the ring carries it.</summary>
    public ulong Tag { get => Volatile.Read(ref TagField); internal set => Volatile.Write(ref TagField, value); }
    /// <summary>The queue the chain came from.</summary>
    public QueueIndex Queue { get; internal set; }
    /// <summary>Opcode from the request header, read once from guest memory.</summary>
    public uint Opcode { get; private set; }
    /// <summary>Unique id from the request header, read once from guest memory.</summary>
    public ulong Unique { get; private set; }
    /// <summary>False for FORGET, BATCH_FORGET and INTERRUPT, which get no reply.</summary>
    public bool ExpectsReply { get; private set; }
    /// <summary>Total bytes of the device-readable segments: the request frame.</summary>
    public int ReadableLength { get; internal set; }
    /// <summary>Total bytes of the device-writable segments: the most a reply may hold.</summary>
    public int WritableLength { get; internal set; }

    /// <summary>The request frame's segments in guest memory, in order. Valid only during <see cref="IFuseTransport.Submit"/>.</summary>
    public ReadOnlySpan<GuestBuffer> Readable => ReadableSegments.AsSpan(0, ReadableCount);

    /// <summary>
    /// Copies the whole frame (all readable segments) into <paramref name="dest"/>; returns the bytes copied,
    /// or -1 when <paramref name="dest"/> is shorter than <see cref="ReadableLength"/>. The first
    /// <see cref="InHeaderSize"/> bytes are taken from the private header copy, so the frame's header is the
    /// one the device saw.
    /// </summary>
    public int CopyFrameTo(Span<byte> dest)
    {
        if (dest.Length < ReadableLength) return -1;
        int off = 0;
        foreach (ref readonly var seg in Readable)
        {
            seg.Span.CopyTo(dest[off..]);
            off += seg.Length;
        }
        _header.CopyTo(dest);
        return off;
    }

    /// <summary>
    /// Copies the frame's first bytes (up to <paramref name="dest"/>'s length) into <paramref name="dest"/>, the header
    /// from the private copy as in <see cref="CopyFrameTo"/>; returns the bytes copied. The chain must still be in flight.
    /// </summary>
    public int CopyFrameStart(Span<byte> dest)
    {
        int want = Math.Min(dest.Length, ReadableLength), off = 0;
        foreach (ref readonly var seg in Readable)
        {
            if (off == want) break;
            int n = Math.Min(seg.Length, want - off);
            seg.Span[..n].CopyTo(dest[off..]);
            off += n;
        }
        int header = Math.Min(off, InHeaderSize);
        _header.AsSpan(0, header).CopyTo(dest);
        return off;
    }

    /// <summary>
    /// Copies the first <paramref name="length"/> bytes of the frame (at least the header, at most
    /// <see cref="ReadableLength"/>) into <paramref name="dest"/>, the header from the private copy, with the header's
    /// <c>len</c> set to <paramref name="length"/>: the frame of a request whose payload stays in guest memory.
    /// </summary>
    public void CopyFramePrefixTo(Span<byte> dest, int length)
    {
        if (length < InHeaderSize || length > ReadableLength || dest.Length < length) throw new ArgumentOutOfRangeException(nameof(length));
        int off = 0;
        foreach (ref readonly var seg in Readable)
        {
            int n = Math.Min(seg.Length, length - off);
            seg.Span[..n].CopyTo(dest[off..]);
            off += n;
            if (off == length) break;
        }
        _header.CopyTo(dest);
        BinaryPrimitives.WriteUInt32LittleEndian(dest, (uint)length);
    }

    /// <summary>The device-writable segments, in order. Valid only while the request is in flight.</summary>
    internal ReadOnlySpan<GuestBuffer> Writable => WritableSegments.AsSpan(0, WritableCount);

    /// <summary>Reads the header once (gathering across segments); false when the frame is shorter than a header.</summary>
    internal bool CaptureHeader()
    {
        if (ReadableLength < InHeaderSize) return false;
        int off = 0;
        foreach (ref readonly var seg in Readable)
        {
            int n = Math.Min(seg.Length, InHeaderSize - off);
            seg.Span[..n].CopyTo(_header.AsSpan(off));
            off += n;
            if (off == InHeaderSize) break;
        }
        Opcode = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(4));
        Unique = BinaryPrimitives.ReadUInt64LittleEndian(_header.AsSpan(8));
        ExpectsReply = (FuseOpcode)Opcode is not (FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt);
        return true;
    }

    internal void AddReadable(GuestBuffer b) => ReadableLength += Add(ref ReadableSegments, ref ReadableCount, b);

    internal void AddWritable(GuestBuffer b) => WritableLength += Add(ref WritableSegments, ref WritableCount, b);

    private static int Add(ref GuestBuffer[] segments, ref int count, GuestBuffer b)
    {
        if (count == segments.Length) Array.Resize(ref segments, count * 2);
        segments[count++] = b;
        return b.Length;
    }

    internal void ResetChain()
    {
        ReadableCount = WritableCount = 0;
        ReadableLength = WritableLength = 0;
        DirectReadCapacity = 0;
        Opcode = 0;
        Unique = 0;
        ExpectsReply = false;
    }

    /// <summary>Scatters <paramref name="reply"/> into the writable segments; returns bytes written or -1 if it does not fit.</summary>
    internal int Scatter(ReadOnlySpan<byte> reply)
    {
        if (reply.Length > WritableLength) return -1;
        var src = reply;
        for (int seg = 0; !src.IsEmpty; seg++)
        {
            int n = Math.Min(WritableSegments[seg].Length, src.Length);
            src[..n].CopyTo(WritableSegments[seg].Span);
            src = src[n..];
        }
        return reply.Length;
    }

    /// <summary>Writes a bare out header with <paramref name="negErrno"/>; returns bytes written (0 when no header fits).</summary>
    internal int WriteError(int negErrno)
    {
        if (WritableLength < OutHeaderSize) return 0;
        Span<byte> h = stackalloc byte[OutHeaderSize];
        BinaryPrimitives.WriteUInt32LittleEndian(h, (uint)OutHeaderSize);
        BinaryPrimitives.WriteInt32LittleEndian(h[4..], negErrno);
        BinaryPrimitives.WriteUInt64LittleEndian(h[8..], Unique);
        return Scatter(h);
    }
}
