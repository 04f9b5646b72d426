using System.Net.Sockets;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Control;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>A <see cref="ControlServer"/> on a fresh socket in a private directory, with a gRPC channel to it.</summary>
public sealed class RunningControlServer : IAsyncDisposable
{
    private RunningControlServer(string directory, ControlServer server, InMemoryShareControl share)
    {
        Directory = directory;
        Server = server;
        Share = share;
        Channel = CreateChannel(server.SocketPath);
        Control = new ShareControl.ShareControlClient(Channel);
        Health = new Health.HealthClient(Channel);
    }

    public string Directory { get; }
    public ControlServer Server { get; }
    public InMemoryShareControl Share { get; }
    public GrpcChannel Channel { get; }
    public ShareControl.ShareControlClient Control { get; }
    public Health.HealthClient Health { get; }
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

    /// <summary>A plain Grpc.Net.Client channel over the UNIX socket at <paramref name="socketPath"/>.</summary>
    public static GrpcChannel CreateChannel(string socketPath)
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
        return GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
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
