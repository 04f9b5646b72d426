using System.Buffers.Binary;
using System.Collections.Concurrent;
using Hypervisor.Vdev.Device;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>
/// A transport that answers FUSE frames itself, standing in for the daemon in tests: replies carry the
/// request's unique and echo its body, a READ gets <c>size</c> bytes of a pattern. It can hold replies back,
/// block submissions, or die.
/// </summary>
internal sealed class TestTransport : IFuseTransport, IFuseTransportFactory
{
    public IFuseCompletionSink Sink = null!;
    public FuseDeviceInfo? Info;
    public readonly ConcurrentQueue<(ulong Tag, int Queue, uint Opcode, byte[] Frame, bool ExpectsReply)> Received = new();
    public readonly ConcurrentDictionary<ulong, byte[]> Held = new();
    /// <summary>When set, replies are kept in <see cref="Held"/> until <see cref="ReleaseHeld"/>.</summary>
    public volatile bool Hold;
    /// <summary>When set, Submit returns false (daemon gone).</summary>
    public volatile bool Dead;
    /// <summary>Called inside Submit (on the queue's worker thread) before answering.</summary>
    public Action<VirtqueueRequest>? OnSubmit;
    /// <summary>Overrides the reply for a request.</summary>
    public Func<byte[], byte[]>? MakeReply;
    public int Disposed;

    public IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink)
    {
        Info = device;
        Sink = sink;
        return this;
    }

    /// <summary>When set, Submit blocks like a full ring until the request's cancellation fires, then fails.</summary>
    public volatile bool BlockUntilCancelled;

    public bool Submit(VirtqueueRequest request)
    {
        if (Dead) return false;
        if (BlockUntilCancelled)
        {
            request.Cancellation.WaitHandle.WaitOne();
            return false;
        }
        OnSubmit?.Invoke(request);
        var frame = new byte[request.ReadableLength];
        Assert.Equal(frame.Length, request.CopyFrameTo(frame));
        Received.Enqueue((request.Tag, request.Queue.Value, request.Opcode, frame, request.ExpectsReply));
        if (!request.ExpectsReply) return true;
        var reply = MakeReply?.Invoke(frame) ?? Answer(frame);
        if (Hold) { Held[request.Tag] = reply; return true; }
        ulong tag = request.Tag;
        ThreadPool.UnsafeQueueUserWorkItem(_ => Sink.Complete(tag, reply), null);
        return true;
    }

    /// <summary>Completes every held request; returns how many completions the device accepted.</summary>
    public int ReleaseHeld()
    {
        int n = 0;
        foreach (var (tag, reply) in Held)
        {
            Held.TryRemove(tag, out _);
            if (Sink.Complete(tag, reply)) n++;
        }
        return n;
    }

    /// <summary>The reply: out header (len, 0, unique), then the body echoed, or READ's size bytes of pattern.</summary>
    public static byte[] Answer(byte[] frame)
    {
        uint opcode = BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(4));
        ulong unique = BinaryPrimitives.ReadUInt64LittleEndian(frame.AsSpan(8));
        byte[] body;
        if (opcode == 15 && frame.Length >= 40 + 24)
        {
            uint size = Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(40 + 16)), 1u << 20);
            body = new byte[size];
            for (int i = 0; i < body.Length; i++) body[i] = (byte)(i * 13 + 1);
        }
        else body = frame.AsSpan(40).ToArray();
        var r = new byte[16 + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(r, (uint)r.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(8), unique);
        body.CopyTo(r, 16);
        return r;
    }

    public void Dispose() => Interlocked.Increment(ref Disposed);
}
