using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using Google.Protobuf;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Control.Health;
using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Vdev.Control;

/// <summary>
/// Client of one share's control service: gRPC over HTTP/2 (prior knowledge, no TLS) on the
/// share's UNIX socket, with HttpClient doing HTTP/2 and this class doing the gRPC framing,
/// deadlines and status handling of grpc/grpc doc/PROTOCOL-HTTP2.md.
/// </summary>
/// <remarks>
/// Every failed call throws <see cref="GrpcException"/>: the server's status, DEADLINE_EXCEEDED
/// when the deadline passes (sent to the server as <c>grpc-timeout</c> and enforced locally as
/// well), UNAVAILABLE when the socket is missing, nobody listens or the server closes the
/// connection, PERMISSION_DENIED when the socket file is not accessible to this user.
/// Cancelling the caller's token throws <see cref="OperationCanceledException"/>.
/// Thread-safe; calls share one HTTP/2 connection.
/// </remarks>
public sealed class ShareControlClient : IDisposable
{
    private const string ShareControlService = "hypervisor.control.v1.ShareControl";
    private const string HealthService = "grpc.health.v1.Health";
    private static readonly MediaTypeHeaderValue GrpcMediaType = new(GrpcProtocol.ContentType);

    private readonly HttpClient _http;

    /// <summary>Creates a client for the control socket at <paramref name="socketPath"/>; nothing is connected until the first call.</summary>
    /// <param name="socketPath">The share's control socket.</param>
    /// <param name="defaultDeadline">Deadline of calls that do not give one (null: none).</param>
    public ShareControlClient(string socketPath, TimeSpan? defaultDeadline = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        SocketPath = socketPath;
        DefaultDeadline = defaultDeadline;
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = ConnectAsync,
            EnableMultipleHttp2Connections = false,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1),
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
        };
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>The control socket path.</summary>
    public string SocketPath { get; }

    /// <summary>Deadline applied to calls that do not give one.</summary>
    public TimeSpan? DefaultDeadline { get; }

    /// <summary>Largest response message accepted (default 4 MiB); larger ones fail with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; init; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    /// <summary>ShareControl/GetStatus.</summary>
    public Task<ShareStatus> GetStatusAsync(TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "GetStatus", new GetStatusRequest(), ShareStatus.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/SetDirectIo: direct I/O for every open from now on; returns the options after the change.</summary>
    public Task<ShareOptions> SetDirectIoAsync(bool enabled, TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "SetDirectIo", new SetDirectIoRequest { Enabled = enabled }, ShareOptions.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/SetCachePolicy; returns the options after the change.</summary>
    public Task<ShareOptions> SetCachePolicyAsync(CachePolicy policy, TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "SetCachePolicy", new SetCachePolicyRequest { Policy = policy }, ShareOptions.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/AddAllowedPath (path relative to the share root); returns the allowlist after the change.</summary>
    public Task<Allowlist> AddAllowedPathAsync(string path, TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "AddAllowedPath", new AllowedPathRequest { Path = path }, Allowlist.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/RemoveAllowedPath; NOT_FOUND if the path is not listed.</summary>
    public Task<Allowlist> RemoveAllowedPathAsync(string path, TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "RemoveAllowedPath", new AllowedPathRequest { Path = path }, Allowlist.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/ListAllowedPaths.</summary>
    public Task<Allowlist> ListAllowedPathsAsync(TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "ListAllowedPaths", new ListAllowedPathsRequest(), Allowlist.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/SetAllowlistEnabled; returns the allowlist after the change.</summary>
    public Task<Allowlist> SetAllowlistEnabledAsync(bool enabled, TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => CallUnaryAsync(ShareControlService, "SetAllowlistEnabled", new SetAllowlistEnabledRequest { Enabled = enabled }, Allowlist.Parser, deadline, cancellationToken);

    /// <summary>ShareControl/Shutdown: asks the daemon to stop gracefully.</summary>
    public async Task ShutdownAsync(TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        => await CallUnaryAsync(ShareControlService, "Shutdown", new ShutdownRequest(), ShutdownResponse.Parser, deadline, cancellationToken).ConfigureAwait(false);

    /// <summary>grpc.health.v1.Health/Check of <paramref name="service"/> ("" is the server as a whole).</summary>
    public async Task<HealthCheckResponse.Types.ServingStatus> CheckHealthAsync(string service = "", TimeSpan? deadline = null,
        CancellationToken cancellationToken = default)
    {
        HealthCheckResponse response = await CallUnaryAsync(HealthService, "Check", new HealthCheckRequest { Service = service },
            HealthCheckResponse.Parser, deadline, cancellationToken).ConfigureAwait(false);
        return response.Status;
    }

    /// <summary>
    /// Calls any unary method <c>/{service}/{method}</c> and returns its single response message.
    /// </summary>
    /// <exception cref="GrpcException">The call ended with a non-OK status.</exception>
    public async Task<TResponse> CallUnaryAsync<TResponse>(string service, string method, IMessage request,
        MessageParser<TResponse> parser, TimeSpan? deadline = null, CancellationToken cancellationToken = default)
        where TResponse : IMessage<TResponse>
    {
        TimeSpan? timeout = deadline ?? DefaultDeadline;
        if (timeout is { } expired && expired <= TimeSpan.Zero)
            throw new GrpcException(GrpcStatusCode.DeadlineExceeded, "The deadline had passed before the call started.");

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout is { } t && t.TotalMilliseconds < uint.MaxValue - 1)
            cts.CancelAfter(t);

        using var httpRequest = new HttpRequestMessage(HttpMethod.Post, "http://localhost" + GrpcProtocol.MethodPath(service, method))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        byte[] body = new byte[GrpcFraming.HeaderLength + request.CalculateSize()];
        GrpcFraming.WriteHeader(body, body.Length - GrpcFraming.HeaderLength);
        request.WriteTo(body.AsSpan(GrpcFraming.HeaderLength));
        httpRequest.Content = new ByteArrayContent(body);
        httpRequest.Content.Headers.ContentType = GrpcMediaType;
        // "te: trailers" lets intermediaries know trailers must be kept; the spec requires it.
        httpRequest.Headers.TryAddWithoutValidation("te", "trailers");
        httpRequest.Headers.TryAddWithoutValidation("user-agent", "hypervisor-vdev-ctl/1.0");
        httpRequest.Headers.TryAddWithoutValidation(GrpcProtocol.AcceptEncodingHeader, GrpcProtocol.IdentityEncoding);
        if (timeout is { } sent)
            httpRequest.Headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcTimeout.Format(sent));

        try
        {
            using HttpResponseMessage response = await _http.SendAsync(httpRequest, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
            return await ReadResponseAsync(response, parser, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException e) when (cts.IsCancellationRequested)
        {
            throw new GrpcException(GrpcStatusCode.DeadlineExceeded, $"The deadline of {Format(timeout!.Value)} passed before the control service answered.", e);
        }
        catch (HttpRequestException e)
        {
            throw MapTransportFailure(e);
        }
        catch (IOException e)
        {
            throw new GrpcException(GrpcStatusCode.Unavailable, $"The connection to the control service at {SocketPath} broke during the call ({e.Message}).", e);
        }
    }

    private async Task<TResponse> ReadResponseAsync<TResponse>(HttpResponseMessage response, MessageParser<TResponse> parser, CancellationToken ct)
        where TResponse : IMessage<TResponse>
    {
        // A trailers-only response carries grpc-status in its only HEADERS frame.
        GrpcStatus? headerStatus = ReadStatus(response.Headers);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            if (headerStatus is { } s && s.Code != GrpcStatusCode.OK)
                throw new GrpcException(s.Code, s.Message);
            throw new GrpcException(GrpcStatusCodes.FromHttpStatus((int)response.StatusCode),
                $"The server at {SocketPath} answered HTTP {(int)response.StatusCode} instead of a gRPC response; check that --socket names a share's control socket.");
        }
        string? contentType = response.Content.Headers.ContentType?.MediaType;
        if (contentType is null || GrpcProtocol.ClassifyContentType(contentType) == GrpcProtocol.ContentTypeKind.NotGrpc)
            throw new GrpcException(GrpcStatusCode.Unknown,
                $"The server at {SocketPath} answered with content type \"{contentType}\" instead of application/grpc; check that --socket names a share's control socket.");
        if (headerStatus is { } only)
        {
            if (only.Code != GrpcStatusCode.OK)
                throw new GrpcException(only.Code, only.Message);
            throw new GrpcException(GrpcStatusCode.Internal, "The server ended the call without a response message.");
        }

        byte[] body = await ReadBodyAsync(response.Content, ct).ConfigureAwait(false);
        GrpcStatus? trailerStatus = ReadStatus(response.TrailingHeaders);
        if (trailerStatus is null)
            throw new GrpcException(GrpcStatusCode.Internal, "The server ended the call without a grpc-status.");
        if (trailerStatus.Value.Code != GrpcStatusCode.OK)
            throw new GrpcException(trailerStatus.Value.Code, trailerStatus.Value.Message);

        GrpcFrameResult frame = GrpcFraming.TryRead(body, MaxReceiveMessageSize, encodingDeclared: HasEncoding(response),
            out Range message, out int consumed, out GrpcStatus error);
        if (frame == GrpcFrameResult.Invalid)
            throw new GrpcException(error.Code, error.Message);
        if (frame == GrpcFrameResult.Incomplete)
            throw new GrpcException(GrpcStatusCode.Internal, body.Length == 0
                ? "The server ended the call without a response message."
                : "The response ended in the middle of a message.");
        if (consumed != body.Length)
            throw new GrpcException(GrpcStatusCode.Internal, "The server sent more than one response message to a unary call.");
        try
        {
            return parser.ParseFrom(body.AsSpan(message));
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new GrpcException(GrpcStatusCode.Internal, "The response message is not valid protobuf: " + e.Message, e);
        }
    }

    private async Task<byte[]> ReadBodyAsync(HttpContent content, CancellationToken ct)
    {
        Stream stream = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            var buffer = new MemoryStream();
            byte[] chunk = new byte[16 * 1024];
            int limit = MaxReceiveMessageSize + GrpcFraming.HeaderLength;
            int n;
            while ((n = await stream.ReadAsync(chunk, ct).ConfigureAwait(false)) > 0)
            {
                if (buffer.Length + n > limit)
                    throw new GrpcException(GrpcStatusCode.ResourceExhausted,
                        $"The response is larger than the limit of {MaxReceiveMessageSize} bytes.");
                buffer.Write(chunk, 0, n);
            }
            return buffer.ToArray();
        }
    }

    private static bool HasEncoding(HttpResponseMessage response)
        => response.Headers.TryGetValues(GrpcProtocol.EncodingHeader, out IEnumerable<string>? values)
           && values.FirstOrDefault() is { } v && !string.Equals(v, GrpcProtocol.IdentityEncoding, StringComparison.OrdinalIgnoreCase);

    private static GrpcStatus? ReadStatus(HttpHeaders headers)
    {
        if (!headers.TryGetValues(GrpcProtocol.StatusHeader, out IEnumerable<string>? statusValues))
            return null;
        string? raw = statusValues.FirstOrDefault();
        if (raw is null || !GrpcStatusCodes.TryParse(raw, out GrpcStatusCode code))
            return new GrpcStatus(GrpcStatusCode.Unknown, $"The server sent an unparsable grpc-status \"{raw}\".");
        string message = headers.TryGetValues(GrpcProtocol.MessageHeader, out IEnumerable<string>? messageValues)
            ? GrpcMessageEncoding.Decode(messageValues.FirstOrDefault() ?? string.Empty)
            : string.Empty;
        return new GrpcStatus(code, message);
    }

    private async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), ct).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private GrpcException MapTransportFailure(HttpRequestException e)
    {
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is SocketException se)
            {
                if (!Path.Exists(SocketPath))
                    return new GrpcException(GrpcStatusCode.Unavailable,
                        $"The control socket {SocketPath} does not exist; check --socket and that the share's daemon is running.", e);
                return se.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => new GrpcException(GrpcStatusCode.Unavailable,
                        $"Nothing is listening on the control socket {SocketPath}; check that the share's daemon is running.", e),
                    SocketError.AccessDenied => new GrpcException(GrpcStatusCode.PermissionDenied,
                        $"This user may not open the control socket {SocketPath}; run the command as the daemon's user or as root.", e),
                    _ => new GrpcException(GrpcStatusCode.Unavailable,
                        $"The control socket {SocketPath} cannot be reached ({se.Message}); check --socket and that the share's daemon is running.", e),
                };
            }
        }
        if (e.HttpRequestError == HttpRequestError.HttpProtocolError)
            return new GrpcException(GrpcStatusCode.Internal, $"The control service at {SocketPath} broke the HTTP/2 protocol ({e.Message}).", e);
        return new GrpcException(GrpcStatusCode.Unavailable,
            $"The control service at {SocketPath} closed the connection ({e.Message}); it accepts only its own user and root.", e);
    }

    private static string Format(TimeSpan t) => t.TotalSeconds >= 1
        ? t.TotalSeconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + " s"
        : t.TotalMilliseconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + " ms";

    /// <summary>Closes the connection.</summary>
    public void Dispose() => _http.Dispose();
}
