using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using Google.Protobuf;
using Hypervisor.Protocol.Control;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// A minimal gRPC client for the daemon's control socket (unary calls, HTTP/2 prior knowledge over a UNIX socket),
/// enough to read the share's counters from a test.
/// </summary>
internal sealed class ControlClient : IDisposable
{
    private readonly HttpClient _http;

    public ControlClient(string socketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        _http = new HttpClient(handler)
        {
            BaseAddress = new Uri("http://localhost"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(10),
        };
    }

    public ShareStatus GetStatus() => Call("GetStatus", new GetStatusRequest(), ShareStatus.Parser);

    public Allowlist AddAllowedPath(string path) => Call("AddAllowedPath", new AllowedPathRequest { Path = path }, Allowlist.Parser);

    public Allowlist RemoveAllowedPath(string path) => Call("RemoveAllowedPath", new AllowedPathRequest { Path = path }, Allowlist.Parser);

    public Allowlist SetAllowlistEnabled(bool enabled) => Call("SetAllowlistEnabled", new SetAllowlistEnabledRequest { Enabled = enabled }, Allowlist.Parser);

    private TResponse Call<TResponse>(string method, IMessage request, MessageParser<TResponse> parser) where TResponse : IMessage<TResponse>
    {
        var payload = request.ToByteArray();
        var body = new byte[5 + payload.Length];
        BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(body, 5);
        using var message = new HttpRequestMessage(HttpMethod.Post, $"/hypervisor.control.v1.ShareControl/{method}")
        {
            Content = new ByteArrayContent(body),
            // A hand-built request does not take the client's default version: gRPC needs HTTP/2.
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        message.Headers.TryAddWithoutValidation("te", "trailers");
        // HTTP/2 has no synchronous path in SocketsHttpHandler; the tests call this from synchronous code.
        using var response = _http.SendAsync(message).GetAwaiter().GetResult();
        var bytes = response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult();
        var status = response.TrailingHeaders.TryGetValues("grpc-status", out var values) ? values.First()
            : response.Headers.TryGetValues("grpc-status", out var early) ? early.First() : "missing";
        if (status != "0" || bytes.Length < 5)
            throw new InvalidOperationException($"{method}: grpc-status {status}, HTTP {(int)response.StatusCode}, {bytes.Length} bytes");
        var length = (int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(1));
        return parser.ParseFrom(bytes, 5, length);
    }

    public void Dispose() => _http.Dispose();
}
