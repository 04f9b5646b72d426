using Hypervisor.Passthrough.Control;
using Hypervisor.Passthrough.Tests.Control;

namespace Hypervisor.Vdev.Tests.Control;

/// <summary>The real <see cref="ControlServer"/> over an in-memory share, in a private directory.</summary>
public sealed class ControlTestServer : IAsyncDisposable
{
    private ControlTestServer(string directory, ControlServer server, InMemoryShareControl share)
    {
        Directory = directory;
        Server = server;
        Share = share;
    }

    public string Directory { get; }
    public ControlServer Server { get; }
    public InMemoryShareControl Share { get; }
    public string SocketPath => Server.SocketPath;

    public static string NewDirectory()
    {
        string directory = Path.Combine(Path.GetTempPath(), "hv-vctl-" + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(directory);
        return directory;
    }

    public static async Task<ControlTestServer> StartAsync(InMemoryShareControl? share = null)
    {
        string directory = NewDirectory();
        share ??= new InMemoryShareControl();
        ControlServer server = await ControlServer.StartAsync(Path.Combine(directory, "c.sock"), share,
            new ControlServerOptions { ShutdownTimeout = TimeSpan.FromSeconds(2) });
        return new ControlTestServer(directory, server, share);
    }

    public async ValueTask DisposeAsync()
    {
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
