using System.Net.Sockets;
using Hypervisor.Interop;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Control;

/// <summary>Tunables of <see cref="ControlServer"/>; the defaults suit a daemon.</summary>
public sealed record ControlServerOptions
{
    /// <summary>Largest request message accepted (default 4 MiB, as gRPC's reference servers); larger ones get RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; init; } = 4 * 1024 * 1024;

    /// <summary>How long <see cref="ControlServer.DisposeAsync"/> lets calls in flight finish (default 5 s).</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(5);
}

/// <summary>
/// The listening control socket before the service starts on it: a sandboxed daemon binds it while it still sees the
/// host's filesystem. Once the daemon's root is the share, <see cref="PathLeftBehind"/> is set: the path no longer
/// names the socket from inside, so the file is left for the vdev to remove (a stale socket is replaced at the next
/// start).
/// </summary>
public sealed class ControlListener : IDisposable
{
    internal ControlListener(SafeFd fd, string path, ulong inode, uint? unmappedPeerUid = null)
    {
        Fd = fd;
        Path = path;
        Inode = inode;
        UnmappedPeerUid = unmappedPeerUid;
    }

    /// <summary>
    /// For a socket made outside the daemon's user namespace (<see cref="Adopt"/>): the uid that peers outside the
    /// namespace's map show as (the kernel's overflow uid), accepted because the socket file's owner and mode (the
    /// vdev's user, 0600) already decide who can connect; null otherwise.
    /// </summary>
    internal uint? UnmappedPeerUid { get; }

    internal SafeFd Fd { get; }

    /// <summary>The socket file's path as the host sees it.</summary>
    public string Path { get; }

    internal ulong Inode { get; }

    /// <summary>Set once the daemon's root is no longer the host's; the server then never unlinks by path.</summary>
    public bool PathLeftBehind { get; set; }

    /// <summary>Binds <paramref name="socketPath"/> (mode 0600) and listens; see <see cref="ControlServer.StartAsync(ControlListener, IShareControl, ControlServerOptions, ILoggerFactory?, CancellationToken)"/>.</summary>
    /// <exception cref="ControlSocketException">The path cannot be used; the message says what to change.</exception>
    public static ControlListener Bind(string socketPath) => new(ControlSocket.BindAndListen(socketPath, backlog: 64, out ulong inode), socketPath, inode);

    /// <summary>
    /// Takes over <paramref name="fd"/>, a socket fuse_launcher bound at <paramref name="socketPath"/> (mode 0600, its
    /// own user) and listens on, when the daemon runs in a user namespace whose root is not the vdev's user: a socket the
    /// daemon bound itself would belong to an id the vdev cannot connect as. The path is the launcher's to remove.
    /// </summary>
    /// <exception cref="ControlSocketException"><paramref name="fd"/> is not an open descriptor.</exception>
    public static ControlListener Adopt(int fd, string socketPath)
    {
        if (fd < 3 || Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC) != 0)
            throw new ControlSocketException($"--control-fd {fd} is not an open descriptor; it is set by fuse_launcher, so start the daemon through it.");
        uint overflow = 65534;
        try { overflow = uint.Parse(File.ReadAllText("/proc/sys/kernel/overflowuid").Trim(), System.Globalization.CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { }
        return new ControlListener(new SafeFd(fd), socketPath, 0, overflow) { PathLeftBehind = true };
    }

    /// <summary>Closes the socket if no server took it.</summary>
    public void Dispose() => Fd.Dispose();
}

/// <summary>
/// The gRPC control service of one share: Grpc.AspNetCore on Kestrel with HTTP/2 only (prior
/// knowledge, no TLS) on a UNIX socket, serving <c>hypervisor.control.v1.ShareControl</c>, the
/// standard <c>grpc.health.v1.Health</c> and server reflection (v1 and v1alpha).
/// </summary>
/// <remarks>
/// Access control is twofold: the socket file is mode 0600 (owner only), and every connection is
/// checked with SO_PEERCRED: a peer whose uid is neither the daemon's effective uid nor root is
/// closed before any HTTP/2 byte is read.
/// </remarks>
public sealed partial class ControlServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ControlServerState _state;
    private readonly ControlListener _listener;
    private readonly TimeSpan _shutdownTimeout;
    private int _disposed;

    private ControlServer(WebApplication app, ControlServerState state, ControlListener listener, TimeSpan shutdownTimeout)
    {
        _app = app;
        _state = state;
        _listener = listener;
        _shutdownTimeout = shutdownTimeout;
    }

    /// <summary>The UNIX socket path the service listens on.</summary>
    public string SocketPath => _listener.Path;

    /// <summary>Whether health reports SERVING (true until a Shutdown call or <see cref="StopServing"/>).</summary>
    public bool IsServing => _state.IsServing;

    /// <summary>Completes when a client called Shutdown (after <see cref="IShareControl.RequestShutdownAsync"/> was invoked).</summary>
    public Task ShutdownRequested => _state.ShutdownRequested;

    /// <summary>
    /// Turns health to NOT_SERVING and refuses further setting changes with UNAVAILABLE, for a
    /// daemon that is shutting down for another reason (SIGTERM, ring peer gone).
    /// </summary>
    public void StopServing() => _state.StopServing();

    /// <summary>Starts serving with default options. See <see cref="StartAsync(string, IShareControl, ControlServerOptions, ILoggerFactory?, CancellationToken)"/>.</summary>
    public static Task<ControlServer> StartAsync(string socketPath, IShareControl share, ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
        => StartAsync(socketPath, share, new ControlServerOptions(), loggerFactory, cancellationToken);

    /// <summary>Binds <paramref name="socketPath"/> and starts serving on it; see <see cref="StartAsync(ControlListener, IShareControl, ControlServerOptions, ILoggerFactory?, CancellationToken)"/>.</summary>
    /// <exception cref="ControlSocketException">The path cannot be used; the message says what to change.</exception>
    public static Task<ControlServer> StartAsync(string socketPath, IShareControl share, ControlServerOptions options,
        ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
        => StartAsync(ControlListener.Bind(socketPath), share, options, loggerFactory, cancellationToken);

    /// <summary>
    /// Binds <paramref name="socketPath"/> (mode 0600), starts Kestrel on it and returns once it accepts connections.
    /// </summary>
    /// <param name="listener">The bound socket (<see cref="ControlListener.Bind"/>), which the server owns from here on.</param>
    /// <param name="share">The daemon side of every call.</param>
    /// <param name="options">Tunables.</param>
    /// <param name="loggerFactory">Where the server logs, with the filters of whoever made it (the daemon keeps the frameworks' categories to warnings and errors, and turns <see cref="SilentLogCategories"/> off); null logs warnings and errors to stderr.</param>
    /// <param name="cancellationToken">Cancels the start-up.</param>
    /// <exception cref="ControlSocketException">The path cannot be used; the message says what to change.</exception>
    public static async Task<ControlServer> StartAsync(ControlListener listener, IShareControl share, ControlServerOptions options,
        ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(listener);
        ArgumentNullException.ThrowIfNull(share);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxReceiveMessageSize < 0)
            throw new ArgumentOutOfRangeException(nameof(options), "MaxReceiveMessageSize must not be negative.");

        // Kestrel takes ownership of the fd it is given and closes it when it stops.
        SafeFd kestrelFd = listener.Fd;

        uint ownUid = Libc.geteuid();
        WebApplication? app = null;
        try
        {
            WebApplicationBuilder builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions
            {
                ApplicationName = "passthrough-control",
                // Not the working directory: a sandboxed daemon's is /proc/self/fd, outside its root (ProcPath).
                ContentRootPath = "/",
                EnvironmentName = Environments.Production,
            });
            if (loggerFactory is not null)
            {
                // The daemon's own factory, whose filters keep the frameworks' categories to warnings and errors.
                builder.Services.Replace(ServiceDescriptor.Singleton<ILoggerFactory>(loggerFactory));
            }
            else
            {
                builder.Logging.SetMinimumLevel(LogLevel.Warning);
                foreach (string category in SilentLogCategories)
                    builder.Logging.AddFilter(category, LogLevel.None);
                builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
                builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(
                    o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            }

            ILogger connectionLogger = NullLogger.Instance;
            ulong handle = (ulong)kestrelFd.DangerousGetHandle();
            builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
            {
                kestrel.AddServerHeader = false;
                kestrel.ListenHandle(handle, listen =>
                {
                    listen.Protocols = HttpProtocols.Http2;
                    listen.Use(next => connection => CheckPeer(connection, next, ownUid, listener.UnmappedPeerUid, connectionLogger));
                });
            });
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
            // The default lifetime (ConsoleLifetime) would take over SIGTERM/SIGINT and print
            // start-up banners; signals belong to the daemon, which stops this server itself.
            builder.Services.Replace(ServiceDescriptor.Singleton<IHostLifetime, PassiveHostLifetime>());

            builder.Services.AddGrpc(grpc =>
            {
                grpc.MaxReceiveMessageSize = options.MaxReceiveMessageSize;
                grpc.EnableDetailedErrors = false;
                grpc.Interceptors.Add<ControlErrorInterceptor>();
            });
            // Reflection from the services' own descriptors (Grpc.Reflection), v1 and v1alpha: no lookup of
            // descriptors through reflection over types, which a NativeAOT build does not keep.
            Google.Protobuf.Reflection.ServiceDescriptor[] described =
            [
                Hypervisor.Protocol.Control.ShareControl.Descriptor, Grpc.Health.V1.Health.Descriptor,
                Grpc.Reflection.V1.ServerReflection.Descriptor, Grpc.Reflection.V1Alpha.ServerReflection.Descriptor,
            ];
            builder.Services.AddSingleton(new Grpc.Reflection.ReflectionV1ServiceImpl(described));
            builder.Services.AddSingleton(new Grpc.Reflection.ReflectionServiceImpl(described));
            builder.Services.AddSingleton<IShareControl>(share);
            builder.Services.AddSingleton<ControlHealthService>();
            builder.Services.AddSingleton<ControlServerState>();
            builder.Services.AddSingleton<ShareControlService>();
            builder.Services.AddSingleton<ControlErrorInterceptor>();

            app = builder.Build();
            connectionLogger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(LogCategory);
            app.MapGrpcService<ShareControlService>();
            app.MapGrpcService<ControlHealthService>();
            app.MapGrpcService<Grpc.Reflection.ReflectionV1ServiceImpl>();
            app.MapGrpcService<Grpc.Reflection.ReflectionServiceImpl>();
            ControlServerState state = app.Services.GetRequiredService<ControlServerState>();

            // Kestrel owns the fd from here on, even if starting fails part-way: it may already
            // have wrapped it in its own socket, and leaking a descriptor on that path is safer
            // than closing a number that may by then belong to something else.
            kestrelFd.SetHandleAsInvalid();
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            return new ControlServer(app, state, listener, options.ShutdownTimeout);
        }
        catch
        {
            if (app is not null)
                await app.DisposeAsync().ConfigureAwait(false);
            kestrelFd.Dispose();
            if (!listener.PathLeftBehind) ControlSocket.UnlinkIfOurs(listener.Path, listener.Inode);
            throw;
        }
    }

    private static Task CheckPeer(ConnectionContext connection, ConnectionDelegate next, uint ownUid, uint? unmappedPeerUid, ILogger logger)
    {
        Socket? socket = connection.Features.Get<IConnectionSocketFeature>()?.Socket;
        if (socket is null || !ControlSocket.TryGetPeerCredentials(socket, out int pid, out uint uid, out _))
        {
            LogPeerUnknown(logger);
            return Task.CompletedTask;
        }
        if (uid != 0 && uid != ownUid && uid != unmappedPeerUid)
        {
            // Returning without calling next closes the connection before any HTTP/2 exchange.
            LogPeerRefused(logger, pid, uid, ownUid);
            return Task.CompletedTask;
        }
        return next(connection);
    }

    /// <summary>
    /// Stops accepting connections, lets calls in flight finish (up to
    /// <see cref="ControlServerOptions.ShutdownTimeout"/>), and removes the socket file if it is
    /// still ours.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _state.StopServing();
        using (var timeout = new CancellationTokenSource(_shutdownTimeout))
        {
            try
            {
                await _app.StopAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
        await _app.DisposeAsync().ConfigureAwait(false);
        if (!_listener.PathLeftBehind) ControlSocket.UnlinkIfOurs(_listener.Path, _listener.Inode);
    }

    /// <summary>A host lifetime that neither listens to signals nor prints anything.</summary>
    private sealed class PassiveHostLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    /// <summary>
    /// Framework categories a daemon's logger factory turns off altogether. ASP.NET Core's request diagnostics start an
    /// activity and a logging scope for every call while their logger is enabled at any level, and write nothing a
    /// daemon keeps: their lines are below warnings, but for a start-up failure, which reaches the daemon as the
    /// exception <see cref="StartAsync(ControlListener, IShareControl, ControlServerOptions, ILoggerFactory?, CancellationToken)"/> throws.
    /// </summary>
    public static string[] SilentLogCategories { get; } = ["Microsoft.AspNetCore.Hosting.Diagnostics"];

    /// <summary>The log category of the control service's own lines (connections refused, calls that failed).</summary>
    internal const string LogCategory = "Hypervisor.Passthrough.Control";

    [LoggerMessage(EventId = 500, Level = LogLevel.Warning, Message = "Control connection refused: peer pid {Pid} has uid {PeerUid}, only uid {OwnUid} and root may control this share")]
    private static partial void LogPeerRefused(ILogger logger, int pid, uint peerUid, uint ownUid);

    [LoggerMessage(EventId = 501, Level = LogLevel.Warning, Message = "Control connection refused: the peer's credentials cannot be read")]
    private static partial void LogPeerUnknown(ILogger logger);
}
