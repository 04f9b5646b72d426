using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using Google.Protobuf;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>A <see cref="ControlServer"/> on a fresh socket in a private directory, with a raw HTTP/2 client.</summary>
public sealed class RunningControlServer : IAsyncDisposable
{
    private RunningControlServer(string directory, ControlServer server, InMemoryShareControl share)
    {
        Directory = directory;
        Server = server;
        Share = share;
        Http = CreateHttpClient(server.SocketPath);
    }

    public string Directory { get; }
    public ControlServer Server { get; }
    public InMemoryShareControl Share { get; }
    public HttpClient Http { get; }
    public string SocketPath => Server.SocketPath;

    public static async Task<RunningControlServer> StartAsync(InMemoryShareControl? share = null, ControlServerOptions? options = null,
        Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null)
    {
        string directory = CreateTempDirectory();
        share ??= new InMemoryShareControl();
        ControlServer server = await ControlServer.StartAsync(Path.Combine(directory, "control.sock"), share,
            options ?? new ControlServerOptions { ShutdownTimeout = TimeSpan.FromSeconds(2) }, loggerFactory);
        return new RunningControlServer(directory, server, share);
    }

    public static string CreateTempDirectory()
    {
        string directory = Path.Combine(Path.GetTempPath(), "hv-ctl-" + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(directory);
        return directory;
    }

    public static HttpClient CreateHttpClient(string socketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(30) };
    }

    /// <summary>Sends one HTTP/2 request and collects everything about the response.</summary>
    public async Task<RawResponse> SendAsync(string path, byte[]? body, string? contentType = GrpcProtocol.ContentType,
        HttpMethod? method = null, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(method ?? HttpMethod.Post, "http://localhost" + path)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        if (body is not null)
        {
            request.Content = new ByteArrayContent(body);
            if (contentType is not null)
                request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        }
        request.Headers.TryAddWithoutValidation("te", "trailers");
        foreach ((string name, string value) in headers)
            request.Headers.TryAddWithoutValidation(name, value);
        using HttpResponseMessage response = await Http.SendAsync(request);
        byte[] responseBody = await response.Content.ReadAsByteArrayAsync();
        return new RawResponse(
            (int)response.StatusCode,
            response.Content.Headers.ContentType?.ToString(),
            Flatten(response.Headers, response.Content.Headers),
            responseBody,
            Flatten(response.TrailingHeaders));
    }

    /// <summary>Sends one framed request message.</summary>
    public Task<RawResponse> CallAsync(string path, IMessage request, params (string Name, string Value)[] headers)
        => SendAsync(path, Frame(request.ToByteArray()), GrpcProtocol.ContentType, null, headers);

    public static byte[] Frame(byte[] message, byte flag = 0)
    {
        byte[] framed = new byte[GrpcFraming.HeaderLength + message.Length];
        GrpcFraming.Encode(message, framed);
        framed[0] = flag;
        return framed;
    }

    private static Dictionary<string, string> Flatten(HttpHeaders headers, HttpHeaders? more = null)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (KeyValuePair<string, IEnumerable<string>> header in headers)
            result[header.Key] = string.Join(",", header.Value);
        if (more is not null)
        {
            foreach (KeyValuePair<string, IEnumerable<string>> header in more)
            {
                if (!header.Key.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
                    result[header.Key] = string.Join(",", header.Value);
            }
        }
        return result;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>An HTTP/2 response as seen on the wire: status, headers, body and trailers.</summary>
public sealed record RawResponse(int HttpStatus, string? ContentType, Dictionary<string, string> Headers, byte[] Body,
    Dictionary<string, string> Trailers)
{
    /// <summary>A trailers-only response: grpc-status in the headers, no body, no trailers.</summary>
    public bool IsTrailersOnly => Headers.ContainsKey("grpc-status") && Body.Length == 0 && Trailers.Count == 0;

    /// <summary>The gRPC status, from the headers of a trailers-only response or from the trailers.</summary>
    public GrpcStatusCode Status
    {
        get
        {
            string? raw = Headers.GetValueOrDefault("grpc-status") ?? Trailers.GetValueOrDefault("grpc-status");
            Assert.NotNull(raw);
            Assert.True(GrpcStatusCodes.TryParse(raw, out GrpcStatusCode code));
            return code;
        }
    }

    public string Message => GrpcMessageEncoding.Decode(
        Headers.GetValueOrDefault("grpc-message") ?? Trailers.GetValueOrDefault("grpc-message") ?? string.Empty);

    /// <summary>The single response message of a successful unary call.</summary>
    public T Single<T>(MessageParser<T> parser) where T : IMessage<T>
    {
        Assert.Equal(GrpcStatusCode.OK, Status);
        Assert.Equal(GrpcFrameResult.Complete, GrpcFraming.TryRead(Body, 1 << 20, false, out Range message, out int consumed, out _));
        Assert.Equal(Body.Length, consumed);
        return parser.ParseFrom(Body.AsSpan(message));
    }
}
