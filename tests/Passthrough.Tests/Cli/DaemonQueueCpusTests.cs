using Hypervisor.Interop;
using Hypervisor.Passthrough.Cli;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Transport;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Share;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Tests.Cli;

/// <summary>
/// The daemon's own checks of <c>--queue-cpus</c>: the command line (it places the ring's request queues, so it needs
/// <c>--ring</c>), and the count against the ring it attaches to. The vdev and fuse_launcher check before the daemon
/// starts; these are the daemon's checks for anyone who starts it by hand.
/// </summary>
public sealed class DaemonQueueCpusTests : IDisposable
{
    private readonly string _share = Directory.CreateTempSubdirectory("daemon-cpus-").FullName;

    private (DaemonCommand.Settings? Settings, string? Error) Build(params string[] args)
    {
        _ = DaemonCommand.TryParse(["--shared-dir", _share, .. args], out var settings, out var error);
        return (settings, error);
    }

    [Fact]
    public void QueueCpusNeedsTheRing_AndACpuList()
    {
        Assert.Equal("--queue-cpus places the ring's request queues; it needs --ring.", Build("--sandbox", "none", "--mount", "/mnt", "--queue-cpus", "0").Error);
        Assert.Equal("--queue-cpus 'x' is not a CPU list; give one host CPU per request queue, as numbers from 0 to 1023 or ranges, e.g. 0,1 or 2-3, or none.",
            Build("--ring", "memfd=3", "--queue-cpus", "x").Error);
        Assert.Null(Build("--ring", "memfd=3", "--queue-cpus", "none").Settings!.QueueCpus);
        var (settings, error) = Build("--ring", "memfd=3", "--queue-cpus", "1,0");
        Assert.Null(error);
        Assert.Equal([1, 0], settings!.QueueCpus!.Cpus);
        Assert.Null(Build("--ring", "memfd=3").Settings!.QueueCpus);
    }

    [Fact]
    public void AListThatDoesNotGiveOneCpuPerRingRequestQueue_IsRefusedWhenTheDaemonAttaches()
    {
        var allowed = QueueCpus.AllowedCpus();
        using var rings = ShmRingSet.Create(2); // hiprio and one request queue
        // The daemon's side gets its own descriptors, as it would by inheritance: attaching and giving up closes them.
        var fds = new RingFds(Libc.dup(rings.Fds.MemFd), [.. rings.Fds.Doorbells.Select(fd => Libc.dup(fd))]);
        Assert.True(QueueCpus.TryParse($"{allowed[0]},{allowed[0]}", out var two));
        var refused = Assert.Throws<TransportException>(() =>
            RingTransport.Start(new FuseEngine(new NullFileSystem()), NullLogger.Instance, fds.ToString(), two));
        Assert.Equal($"--queue-cpus {allowed[0]},{allowed[0]} lists 2 CPUs for 1 request queue; give one CPU per request queue.", refused.Message);
    }

    public void Dispose() => Directory.Delete(_share, recursive: true);
}
