using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Vdev.Device;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>
/// The creator's side of ring sets whose "daemon" end is attached in this process: each relaunch opens a new set, and
/// the test plays that daemon on <see cref="Daemons"/>.
/// </summary>
internal sealed class InProcessRelauncher : IDaemonRelauncher, IDisposable
{
    /// <summary>The creator's ends, oldest first.</summary>
    public readonly List<ShmRingSet> Sets = [];

    /// <summary>The daemon's ends of <see cref="Sets"/>, in the same order.</summary>
    public readonly List<ShmRingSet> Daemons = [];

    /// <summary>Set once a relaunch was asked for.</summary>
    public readonly ManualResetEventSlim Relaunched = new();

    public InProcessRelauncher() => Rings = Open();

    /// <summary>The newest set.</summary>
    public ShmRingSet Rings { get; private set; }

    /// <summary>A new ring set (two queues) and its daemon end (the last of <see cref="Daemons"/>).</summary>
    public ShmRingSet Open()
    {
        var rings = ShmRingSet.Create(2);
        Sets.Add(rings);
        Daemons.Add(ShmRingSet.Attach(Duplicate(rings.Fds)));
        return rings;
    }

    public void ReleaseRings(ShmRingSet rings)
    {
    }

    public Task<ShmRingSet?> RelaunchAsync(ShmRingSet dead, string cause, long noticed)
    {
        Rings = Open();
        Relaunched.Set();
        return Task.FromResult<ShmRingSet?>(Rings);
    }

    public void Dispose()
    {
        foreach (var set in Daemons) set.Dispose();
        foreach (var set in Sets) set.Dispose();
        Relaunched.Dispose();
    }

    private static RingFds Duplicate(RingFds f) => new(Libc.dup(f.MemFd), f.Doorbells.Select(fd => Libc.dup(fd)).ToArray());
}
