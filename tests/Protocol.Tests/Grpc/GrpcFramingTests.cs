using System.Buffers;
using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Protocol.Tests.Grpc;

public sealed class GrpcFramingTests
{
    [Fact]
    public void Encode_WritesFlagZeroAndBigEndianLength()
    {
        byte[] message = new byte[300];
        message[0] = 0xAB;
        byte[] framed = new byte[305];
        Assert.Equal(305, GrpcFraming.Encode(message, framed));
        Assert.Equal(new byte[] { 0, 0, 0, 0x01, 0x2C, 0xAB }, framed[..6]);
    }

    [Fact]
    public void TryRead_ReturnsTheMessageAndConsumedLength()
    {
        byte[] buffer = [0, 0, 0, 0, 3, 1, 2, 3, 0, 0];
        Assert.Equal(GrpcFrameResult.Complete, GrpcFraming.TryRead(buffer, 100, false, out Range message, out int consumed, out _));
        Assert.Equal(new byte[] { 1, 2, 3 }, buffer[message]);
        Assert.Equal(8, consumed);
    }

    [Fact]
    public void TryRead_EmptyMessageIsComplete()
    {
        Assert.Equal(GrpcFrameResult.Complete, GrpcFraming.TryRead([0, 0, 0, 0, 0], 0, false, out Range message, out int consumed, out _));
        Assert.Equal(5, consumed);
        Assert.Equal(0, message.GetOffsetAndLength(5).Length);
    }

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { 0, 0, 0, 0 })]
    [InlineData(new byte[] { 0, 0, 0, 0, 4, 1, 2, 3 })]
    public void TryRead_ShortBufferIsIncomplete(byte[] buffer)
    {
        Assert.Equal(GrpcFrameResult.Incomplete, GrpcFraming.TryRead(buffer, 100, false, out _, out int consumed, out GrpcStatus error));
        Assert.Equal(0, consumed);
        Assert.Equal(GrpcStatusCode.OK, error.Code);
    }

    [Fact]
    public void TryRead_OversizedPrefixIsResourceExhaustedBeforeTheBodyArrives()
    {
        byte[] prefixOnly = [0, 0, 0x40, 0, 1]; // 4 MiB + 1
        Assert.Equal(GrpcFrameResult.Invalid, GrpcFraming.TryRead(prefixOnly, GrpcProtocol.DefaultMaxReceiveMessageSize, false, out _, out _, out GrpcStatus error));
        Assert.Equal(GrpcStatusCode.ResourceExhausted, error.Code);
        Assert.Contains("4194305", error.Message);

        byte[] atLimit = [0, 0, 0x40, 0, 0];
        Assert.Equal(GrpcFrameResult.Incomplete, GrpcFraming.TryRead(atLimit, GrpcProtocol.DefaultMaxReceiveMessageSize, false, out _, out _, out _));

        byte[] huge = [0, 0xFF, 0xFF, 0xFF, 0xFF];
        Assert.Equal(GrpcFrameResult.Invalid, GrpcFraming.TryRead(huge, int.MaxValue, false, out _, out _, out error));
        Assert.Equal(GrpcStatusCode.ResourceExhausted, error.Code);
    }

    [Fact]
    public void CompressedFlag_IsInternalWithoutEncodingAndUnimplementedWithOne()
    {
        byte[] compressed = [1, 0, 0, 0, 1, 7];
        Assert.Equal(GrpcFrameResult.Invalid, GrpcFraming.TryRead(compressed, 100, encodingDeclared: false, out _, out _, out GrpcStatus error));
        Assert.Equal(GrpcStatusCode.Internal, error.Code);
        Assert.Equal(GrpcFrameResult.Invalid, GrpcFraming.TryRead(compressed, 100, encodingDeclared: true, out _, out _, out error));
        Assert.Equal(GrpcStatusCode.Unimplemented, error.Code);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(0x80)]
    [InlineData(0xFF)]
    public void ReservedFlagBits_AreInternal(byte flag)
    {
        Assert.Equal(GrpcFrameResult.Invalid, GrpcFraming.TryRead([flag, 0, 0, 0, 0], 100, true, out _, out _, out GrpcStatus error));
        Assert.Equal(GrpcStatusCode.Internal, error.Code);
    }

    [Fact]
    public void TryRead_SequenceSplitAcrossSegmentsMatchesTheSpanForm()
    {
        byte[] framed = new byte[5 + 10];
        GrpcFraming.Encode([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], framed);
        for (int split = 0; split <= framed.Length; split++)
        {
            ReadOnlySequence<byte> sequence = Segments(framed[..split], framed[split..]);
            Assert.Equal(GrpcFrameResult.Complete, GrpcFraming.TryRead(sequence, 100, false, out ReadOnlySequence<byte> message, out long consumed, out _));
            Assert.Equal(15, consumed);
            Assert.Equal(framed[5..], message.ToArray());
            Assert.Equal(GrpcFrameResult.Incomplete, GrpcFraming.TryRead(sequence.Slice(0, Math.Min(split, 14)), 100, false, out _, out _, out _));
        }
    }

    private static ReadOnlySequence<byte> Segments(byte[] a, byte[] b)
    {
        var first = new Segment(a, 0);
        var second = first.Append(b);
        return new ReadOnlySequence<byte>(first, 0, second, b.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(byte[] data, long runningIndex)
        {
            Memory = data;
            RunningIndex = runningIndex;
        }

        public Segment Append(byte[] data)
        {
            var next = new Segment(data, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
