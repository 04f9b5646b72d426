using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>Runs <see cref="VhostUserDevice.RunAsync"/> on a temporary socket with a <see cref="TestTransport"/>.</summary>
internal sealed class DeviceHarness : IDisposable
{
    public static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-test-").FullName;
    private readonly CancellationTokenSource _cts = new();
    public readonly TestTransport Transport = new();
    public readonly ListLogger Log = new();
    public readonly DeviceOptions Options;
    public readonly Task<int> Run;
    public string SocketPath => Options.SocketPath!;

    public DeviceHarness(int requestQueues = 1, bool keepListening = false, string? tag = "myfs", int maxQueueSize = 1024)
    {
        Options = new DeviceOptions
        {
            SocketPath = Path.Combine(_dir, "vdev.sock"),
            RequestQueues = requestQueues,
            KeepListening = keepListening,
            Tag = tag,
            MaxQueueSize = maxQueueSize,
            DrainTimeout = TimeSpan.FromSeconds(2),
        };
        Run = VhostUserDevice.RunAsync(Options, Transport, Log, _cts.Token);
    }

    public VhostUserFrontend Connect() => VhostUserFrontend.Connect(SocketPath, T);

    /// <summary>Connects, negotiates, installs <paramref name="ram"/> and sets up hiprio plus every request queue.</summary>
    public VhostUserFrontend Ready(GuestRam ram, int queueSize = 64, ulong? features = null)
    {
        var fe = Connect();
        fe.Negotiate(features);
        fe.SetMemTable(ram);
        fe.SetupQueues(ram, 1 + Options.RequestQueues, queueSize);
        return fe;
    }

    public void Stop() => _cts.Cancel();

    /// <summary>The exit status, failing when the device has not stopped within the timeout.</summary>
    public int WaitExit()
    {
        Assert.True(Run.Wait(T), "the device did not stop; log:\n" + Log);
        return Run.Result;
    }

    public void Dispose()
    {
        _cts.Cancel();
        Run.Wait(T);
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
