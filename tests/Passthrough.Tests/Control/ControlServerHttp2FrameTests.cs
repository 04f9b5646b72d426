using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Hypervisor.Protocol.Control;
using Google.Protobuf;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// The control server's responses at the HTTP/2 frame level, where HttpClient cannot look: a
/// failed call must be a trailers-only response (one HEADERS frame with END_STREAM), a successful
/// one HEADERS, DATA, then a trailing HEADERS frame with END_STREAM (PROTOCOL-HTTP2.md).
/// </summary>
public sealed class ControlServerHttp2FrameTests
{
    private const byte Data = 0, Headers = 1, RstStream = 3, Settings = 4, GoAway = 7;
    private const byte EndStream = 0x1, EndHeaders = 0x4, Ack = 0x1;

    [Fact]
    public async Task Error_IsASingleHeadersFrameWithEndStream()
    {
        await using var server = await RunningControlServer.StartAsync();
        List<(byte Type, byte Flags, int Length)> frames = await ExchangeAsync(server.SocketPath,
            "/hypervisor.control.v1.ShareControl/NoSuchMethod", new GetStatusRequest().ToByteArray());
        Assert.Equal([(Headers, (byte)(EndStream | EndHeaders))], frames.Where(f => f.Type != RstStream).Select(f => (f.Type, f.Flags)));
    }

    [Fact]
    public async Task Success_IsHeadersDataAndTrailers()
    {
        await using var server = await RunningControlServer.StartAsync();
        List<(byte Type, byte Flags, int Length)> frames = await ExchangeAsync(server.SocketPath,
            "/hypervisor.control.v1.ShareControl/ListAllowedPaths", new ListAllowedPathsRequest().ToByteArray());
        var types = frames.Where(f => f.Type != RstStream && !(f.Type == Data && f.Length == 0 && (f.Flags & EndStream) == 0)).ToList();
        Assert.Equal(Headers, types[0].Type);
        Assert.Equal(0, types[0].Flags & EndStream);
        Assert.Equal(Data, types[1].Type);
        Assert.Equal(Headers, types[^1].Type);
        Assert.Equal(EndStream, types[^1].Flags & EndStream);
    }

    /// <summary>Sends one gRPC request on stream 1 and returns the frames the server sent on stream 1 until it ended.</summary>
    private static async Task<List<(byte, byte, int)>> ExchangeAsync(string socketPath, string path, byte[] message)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
        await using var stream = new NetworkStream(socket, ownsSocket: false);

        var output = new MemoryStream();
        output.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        WriteFrame(output, Settings, 0, 0, []);
        var block = new MemoryStream();
        foreach ((string name, string value) in new[]
                 {
                     (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                     ("content-type", "application/grpc"), ("te", "trailers"),
                 })
        {
            // HPACK literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2).
            block.WriteByte(0);
            block.WriteByte((byte)name.Length);
            block.Write(Encoding.ASCII.GetBytes(name));
            block.WriteByte((byte)value.Length);
            block.Write(Encoding.ASCII.GetBytes(value));
        }
        WriteFrame(output, Headers, EndHeaders, 1, block.ToArray());
        WriteFrame(output, Data, EndStream, 1, RunningControlServer.Frame(message));
        await stream.WriteAsync(output.ToArray());

        var frames = new List<(byte, byte, int)>();
        byte[] header = new byte[9];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (true)
        {
            await stream.ReadExactlyAsync(header, timeout.Token);
            int length = (header[0] << 16) | (header[1] << 8) | header[2];
            byte type = header[3], flags = header[4];
            int streamId = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5)) & 0x7FFFFFFF;
            byte[] payload = new byte[length];
            await stream.ReadExactlyAsync(payload, timeout.Token);
            if (type == Settings && (flags & Ack) == 0)
            {
                WriteFrame(output = new MemoryStream(), Settings, Ack, 0, []);
                await stream.WriteAsync(output.ToArray());
            }
            Assert.NotEqual(GoAway, type);
            if (streamId != 1)
                continue;
            frames.Add((type, flags, length));
            if ((flags & EndStream) != 0 || type == RstStream)
                return frames;
        }
    }

    private static void WriteFrame(Stream output, byte type, byte flags, int streamId, byte[] payload)
    {
        Span<byte> header = stackalloc byte[9];
        header[0] = (byte)(payload.Length >> 16);
        header[1] = (byte)(payload.Length >> 8);
        header[2] = (byte)payload.Length;
        header[3] = type;
        header[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(header[5..], streamId);
        output.Write(header);
        output.Write(payload);
    }
}
