using System.Globalization;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Vdev.Control;

/// <summary>
/// A gRPC channel to one share's control socket (Grpc.Net.Client over HTTP/2 on the UNIX socket) and
/// the generated clients of the share's service and of the standard health service.
/// </summary>
/// <remarks>
/// Every failed call throws <see cref="RpcException"/>. A status the server sent arrives as it was
/// sent. Failures of the transport are turned into one sentence that names the socket and what to
/// check: UNAVAILABLE when the socket is missing, nobody listens or the server closes the
/// connection (it accepts only its own user and root), PERMISSION_DENIED when this user may not
/// open the socket file, DEADLINE_EXCEEDED with the deadline that passed. Calls that give no
/// deadline get <see cref="DefaultDeadline"/>. Thread-safe; calls share one HTTP/2 connection.
/// </remarks>
public sealed class ShareControlClient : IDisposable
{
    private readonly GrpcChannel _channel;

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
        };
        // The address only fills the :authority and :path of each request; every connection goes
        // to the socket through the connect callback.
        _channel = GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
        CallInvoker = _channel.Intercept(new TransportFailures(this));
        Control = new ShareControl.ShareControlClient(CallInvoker);
        Health = new Health.HealthClient(CallInvoker);
    }

    /// <summary>The control socket path.</summary>
    public string SocketPath { get; }

    /// <summary>Deadline applied to calls that do not give one.</summary>
    public TimeSpan? DefaultDeadline { get; }

    /// <summary>The channel with this client's deadline and failure handling, for calls of any method.</summary>
    public CallInvoker CallInvoker { get; }

    /// <summary><c>hypervisor.control.v1.ShareControl</c>.</summary>
    public ShareControl.ShareControlClient Control { get; }

    /// <summary><c>grpc.health.v1.Health</c>.</summary>
    public Health.HealthClient Health { get; }

    /// <summary>
    /// The name of <paramref name="code"/> as gRPC documents and other clients print it, e.g. <c>NOT_FOUND</c>: the
    /// enum's name in upper case with an underscore between words; the number for a code gRPC does not define.
    /// </summary>
    public static string StatusName(StatusCode code) => Enum.IsDefined(code) ? UpperSnake(code) : ((int)code).ToString(CultureInfo.InvariantCulture);

    /// <summary>An enum value's name spelled as gRPC spells its constants: upper case, words joined by '_' (NOT_SERVING).</summary>
    public static string UpperSnake(Enum value) => Regex.Replace(value.ToString(), "(?<=[a-z])(?=[A-Z])", "_").ToUpperInvariant();

    private async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), ct).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new ConnectFailedException(e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// connect(2) on the socket failed: a socket error from here is about the path, one from later
    /// (a reset or a broken pipe) is the server closing a connection it had accepted.
    /// </summary>
    private sealed class ConnectFailedException(SocketException inner) : IOException(inner.Message, inner)
    {
        public SocketError SocketErrorCode => inner.SocketErrorCode;
    }

    /// <summary>The status to report instead of <paramref name="e"/>'s, or null when the server's status stands.</summary>
    private Status? Describe(RpcException e, TimeSpan? deadline)
    {
        if (e.StatusCode == StatusCode.DeadlineExceeded)
        {
            return new Status(StatusCode.DeadlineExceeded, deadline is { } t
                ? $"The deadline of {Format(t)} passed before the control service at {SocketPath} answered."
                : $"The deadline passed before the control service at {SocketPath} answered.", e);
        }
        for (Exception? inner = e.Status.DebugException; inner is not null; inner = inner.InnerException)
        {
            if (inner is HttpRequestException http)
                return DescribeTransportFailure(http);
        }
        return null;
    }

    private Status DescribeTransportFailure(HttpRequestException e)
    {
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is ConnectFailedException connect)
            {
                if (!Path.Exists(SocketPath))
                    return new Status(StatusCode.Unavailable,
                        $"The control socket {SocketPath} does not exist; check --socket and that the share's daemon is running.", e);
                return connect.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => new Status(StatusCode.Unavailable,
                        $"Nothing is listening on the control socket {SocketPath}; check that the share's daemon is running.", e),
                    SocketError.AccessDenied => new Status(StatusCode.PermissionDenied,
                        $"This user may not open the control socket {SocketPath}; run the command as the daemon's user or as root.", e),
                    _ => new Status(StatusCode.Unavailable,
                        $"The control socket {SocketPath} cannot be reached ({connect.Message}); check --socket and that the share's daemon is running.", e),
                };
            }
        }
        if (e.HttpRequestError == HttpRequestError.HttpProtocolError)
            return new Status(StatusCode.Internal, $"The control service at {SocketPath} broke the HTTP/2 protocol ({e.Message}).", e);
        return new Status(StatusCode.Unavailable,
            $"The control service at {SocketPath} closed the connection ({e.Message}); it accepts only its own user and root.", e);
    }

    private static string Format(TimeSpan t) => t.TotalSeconds >= 1
        ? t.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + " s"
        : t.TotalMilliseconds.ToString("0.###", CultureInfo.InvariantCulture) + " ms";

    /// <summary>Closes the connection.</summary>
    public void Dispose() => _channel.Dispose();

    /// <summary>Gives asynchronous unary calls the client's default deadline and reports transport failures as <see cref="Describe"/> says.</summary>
    private sealed class TransportFailures(ShareControlClient client) : Interceptor
    {
        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
            ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            TimeSpan? deadline = WithDeadline(ref context);
            AsyncUnaryCall<TResponse> call = continuation(request, context);
            return new AsyncUnaryCall<TResponse>(ResponseAsync(call.ResponseAsync, deadline), call.ResponseHeadersAsync,
                call.GetStatus, call.GetTrailers, call.Dispose);
        }

        private async Task<TResponse> ResponseAsync<TResponse>(Task<TResponse> response, TimeSpan? deadline)
        {
            try
            {
                return await response.ConfigureAwait(false);
            }
            catch (RpcException e) when (client.Describe(e, deadline) is { } status)
            {
                throw new RpcException(status, e.Trailers);
            }
        }

        /// <summary>Applies the default deadline to a call that has none; returns the time the call is given, if any.</summary>
        private TimeSpan? WithDeadline<TRequest, TResponse>(ref ClientInterceptorContext<TRequest, TResponse> context)
            where TRequest : class where TResponse : class
        {
            DateTime now = DateTime.UtcNow;
            if (context.Options.Deadline is { } given)
                return given == DateTime.MaxValue ? null : given - now;
            if (client.DefaultDeadline is not { } timeout)
                return null;
            context = new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, context.Options.WithDeadline(now + timeout));
            return timeout;
        }
    }
}
