using Hypervisor.Protocol.Ring;

namespace Hypervisor.Launcher;

/// <summary>
/// What the launcher needs to know about a <c>--ring SPEC</c>: which descriptors it names, so that exactly those
/// stay open in the daemon. The SPEC itself is forwarded to the daemon untouched; its format belongs to
/// <see cref="RingFds"/> in protocol/Ring, and this is the only place that depends on it.
/// </summary>
public static class RingSpec
{
    /// <summary>One descriptor named by the SPEC, with its role ("memfd", "sq0", "sqf0", "cq0", "cqf0", …) for messages.</summary>
    public readonly record struct NamedFd(int Fd, string Role);

    /// <summary>Parses <paramref name="spec"/>; <paramref name="error"/> is the parser's one-sentence reason.</summary>
    public static bool TryGetFds(string spec, out IReadOnlyList<NamedFd> fds, out string? error)
    {
        if (!RingFds.TryParse(spec, out var ring, out error))
        {
            fds = [];
            return false;
        }
        var list = new List<NamedFd>(1 + ring.Doorbells.Count) { new(ring.MemFd, "memfd") };
        for (int q = 0; q < ring.QueueCount; q++)
        {
            list.Add(new(ring.Doorbell(q, completion: false, freed: false), $"sq{q}"));
            list.Add(new(ring.Doorbell(q, completion: false, freed: true), $"sqf{q}"));
            list.Add(new(ring.Doorbell(q, completion: true, freed: false), $"cq{q}"));
            list.Add(new(ring.Doorbell(q, completion: true, freed: true), $"cqf{q}"));
        }
        if (ring.CreatorPidFd is { } creator) list.Add(new(creator, "creator"));
        fds = list;
        return true;
    }
}
