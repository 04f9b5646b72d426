using System.Buffers;
using System.Buffers.Binary;

namespace Hypervisor.Protocol.Grpc;

/// <summary>Outcome of looking for one length-prefixed message at the start of a buffer.</summary>
public enum GrpcFrameResult
{
    /// <summary>A whole message is present.</summary>
    Complete,
    /// <summary>The buffer ends before the prefix or the message does; read more.</summary>
    Incomplete,
    /// <summary>The prefix is invalid; the call must end with the reported status.</summary>
    Invalid,
}

/// <summary>
/// The gRPC message framing of PROTOCOL-HTTP2.md: every message on a stream is
/// <c>Compressed-Flag (1 byte) | Message-Length (4 bytes, big-endian) | Message</c>.
/// </summary>
/// <remarks>
/// Flag 0 means the bytes are not compressed, whatever <c>grpc-encoding</c> says. Flag 1 means
/// they are compressed with the call's <c>grpc-encoding</c>; this implementation supports no
/// compression, so a flag of 1 ends the call with UNIMPLEMENTED when an encoding was declared
/// (an algorithm we lack, doc/compression.md) and INTERNAL when none was (a protocol violation).
/// The other seven flag bits are reserved and must be zero, or the frame is INTERNAL.
/// </remarks>
public static class GrpcFraming
{
    /// <summary>Length of the prefix: 1 flag byte and a 4-byte big-endian length.</summary>
    public const int HeaderLength = 5;

    /// <summary>
    /// Writes the prefix of an uncompressed message of <paramref name="messageLength"/> bytes.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than <see cref="HeaderLength"/>.</exception>
    public static void WriteHeader(Span<byte> destination, int messageLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(messageLength);
        if (destination.Length < HeaderLength)
            throw new ArgumentException("The destination is shorter than a gRPC message prefix.", nameof(destination));
        destination[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], (uint)messageLength);
    }

    /// <summary>
    /// Frames <paramref name="message"/> (uncompressed) into <paramref name="destination"/> and
    /// returns the bytes written (<see cref="HeaderLength"/> + message length).
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> message, Span<byte> destination)
    {
        if (destination.Length < HeaderLength + message.Length)
            throw new ArgumentException("The destination is too short for the framed message.", nameof(destination));
        WriteHeader(destination, message.Length);
        message.CopyTo(destination[HeaderLength..]);
        return HeaderLength + message.Length;
    }

    /// <summary>
    /// Validates a message prefix.
    /// </summary>
    /// <param name="header">At least <see cref="HeaderLength"/> bytes; fewer gives <see cref="GrpcFrameResult.Incomplete"/>.</param>
    /// <param name="maxMessageSize">Largest message accepted; a larger one gives RESOURCE_EXHAUSTED.</param>
    /// <param name="encodingDeclared">Whether the call's <c>grpc-encoding</c> names an algorithm other than identity.</param>
    /// <param name="messageLength">The message length when the result is <see cref="GrpcFrameResult.Complete"/>.</param>
    /// <param name="error">The status to end the call with when the result is <see cref="GrpcFrameResult.Invalid"/>.</param>
    /// <returns><see cref="GrpcFrameResult.Complete"/> when the prefix is valid (the message itself may still be incomplete).</returns>
    public static GrpcFrameResult ReadHeader(ReadOnlySpan<byte> header, int maxMessageSize, bool encodingDeclared,
        out int messageLength, out GrpcStatus error)
    {
        messageLength = 0;
        error = GrpcStatus.Ok;
        if (header.Length < HeaderLength)
            return GrpcFrameResult.Incomplete;

        byte flag = header[0];
        if (flag > 1)
        {
            error = new GrpcStatus(GrpcStatusCode.Internal, "The message prefix has reserved flag bits set.");
            return GrpcFrameResult.Invalid;
        }
        if (flag == 1)
        {
            error = encodingDeclared
                ? new GrpcStatus(GrpcStatusCode.Unimplemented, "Compressed messages are not supported; send them uncompressed (grpc-encoding identity).")
                : new GrpcStatus(GrpcStatusCode.Internal, "The message is flagged as compressed but the call declares no grpc-encoding.");
            return GrpcFrameResult.Invalid;
        }

        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxMessageSize)
        {
            error = new GrpcStatus(GrpcStatusCode.ResourceExhausted,
                $"The message of {length} bytes exceeds the limit of {maxMessageSize} bytes.");
            return GrpcFrameResult.Invalid;
        }
        messageLength = (int)length;
        return GrpcFrameResult.Complete;
    }

    /// <summary>
    /// Looks for one whole message at the start of <paramref name="buffer"/>.
    /// </summary>
    /// <param name="buffer">Received bytes, starting at a message boundary.</param>
    /// <param name="maxMessageSize">Largest message accepted; a larger one gives RESOURCE_EXHAUSTED as soon as its prefix is seen.</param>
    /// <param name="encodingDeclared">Whether the call's <c>grpc-encoding</c> names an algorithm other than identity.</param>
    /// <param name="message">The message bytes (without prefix) when the result is <see cref="GrpcFrameResult.Complete"/>.</param>
    /// <param name="consumed">Prefix plus message length when complete; 0 otherwise.</param>
    /// <param name="error">The status to end the call with when the result is <see cref="GrpcFrameResult.Invalid"/>.</param>
    public static GrpcFrameResult TryRead(in ReadOnlySequence<byte> buffer, int maxMessageSize, bool encodingDeclared,
        out ReadOnlySequence<byte> message, out long consumed, out GrpcStatus error)
    {
        message = default;
        consumed = 0;
        Span<byte> header = stackalloc byte[HeaderLength];
        if (buffer.Length < HeaderLength)
        {
            error = GrpcStatus.Ok;
            return GrpcFrameResult.Incomplete;
        }
        buffer.Slice(0, HeaderLength).CopyTo(header);
        GrpcFrameResult result = ReadHeader(header, maxMessageSize, encodingDeclared, out int length, out error);
        if (result != GrpcFrameResult.Complete)
            return result;
        if (buffer.Length - HeaderLength < length)
            return GrpcFrameResult.Incomplete;
        message = buffer.Slice(HeaderLength, length);
        consumed = HeaderLength + length;
        return GrpcFrameResult.Complete;
    }

    /// <summary>Span form of <see cref="TryRead(in ReadOnlySequence{byte}, int, bool, out ReadOnlySequence{byte}, out long, out GrpcStatus)"/>.</summary>
    public static GrpcFrameResult TryRead(ReadOnlySpan<byte> buffer, int maxMessageSize, bool encodingDeclared,
        out Range message, out int consumed, out GrpcStatus error)
    {
        message = default;
        consumed = 0;
        GrpcFrameResult result = ReadHeader(buffer, maxMessageSize, encodingDeclared, out int length, out error);
        if (result != GrpcFrameResult.Complete)
            return result;
        if (buffer.Length - HeaderLength < length)
            return GrpcFrameResult.Incomplete;
        message = new Range(HeaderLength, HeaderLength + length);
        consumed = HeaderLength + length;
        return GrpcFrameResult.Complete;
    }
}
