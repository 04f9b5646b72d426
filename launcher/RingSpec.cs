using Hypervisor.Protocol.Ring;

namespace Hypervisor.Launcher;

/// <summary>
/// What the launcher needs to know about a <c>--ring SPEC</c>: which descriptors it names, so that exactly those
/// stay open in the daemon. The SPEC itself is forwarded to the daemon untouched; its format belongs to
/// <see cref="RingFds"/> in protocol/Ring, and this is the only place that depends on it.
/// </summary>
public static class RingSpec
{
    /// <summary>One descriptor named by the SPEC, with its role ("memfd", "sq0", "cq0", …) for messages.</summary>
    public readonly record struct NamedFd(int Fd, string Role);

    /// <summary>Parses <paramref name="spec"/>; <paramref name="error"/> is the parser's one-sentence reason.</summary>
    public static bool TryGetFds(string spec, out IReadOnlyList<NamedFd> fds, out string? error)
    {
        if (!RingFds.TryParse(spec, out var ring, out error))
        {
            fds = [];
            return false;
        }
        var list = new List<NamedFd>(1 + 2 * ring.QueueCount) { new(ring.MemFd, "memfd") };
        for (int q = 0; q < ring.QueueCount; q++)
        {
            list.Add(new(ring.SubmissionDoorbells[q], $"sq{q}"));
            list.Add(new(ring.CompletionDoorbells[q], $"cq{q}"));
        }
        fds = list;
        return true;
    }
}
