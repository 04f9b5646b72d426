using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The file descriptor numbers of one ring set, as passed from the creator to the attaching
/// process on its command line: <c>memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9</c>.
/// <c>memfd</c> is the shared memory. Each ring has two eventfd doorbells: <c>sqN</c>/<c>cqN</c>
/// ring when queue N's submission/completion ring gets a frame (its consumer sleeps on it), and
/// <c>sqfN</c>/<c>cqfN</c> ring when space is freed in it (its producer sleeps on it). Keys may
/// come in any order; each must appear exactly once. An optional <c>creator=N</c> is a pidfd of the creator, an
/// optional <c>guestmem=N</c> the attacher's end of the guest-memory channel (a SOCK_SEQPACKET socket on which the
/// creator hands over guest memory tables; without it every payload travels in the ring), an optional
/// <c>state=N</c> the share's state store, and an optional <c>fdstore=N</c> the daemon's end of the descriptor store's
/// channel (<see cref="Recovery.DescriptorStoreMessage"/>).
/// </summary>
public sealed class RingFds
{
    private static readonly string[] Keys = { "sq", "sqf", "cq", "cqf" };

    /// <summary>The memfd holding the whole ring set.</summary>
    public int MemFd { get; }

    /// <summary>
    /// Every doorbell eventfd, four per queue in the order submission-ready, submission-freed,
    /// completion-ready, completion-freed (the order of <see cref="Doorbell"/>'s index).
    /// </summary>
    public IReadOnlyList<int> Doorbells { get; }

    /// <summary>A pidfd of the creating process (<c>creator=N</c>), by which the attacher notices its exit even from another pid namespace; null when not passed.</summary>
    public int? CreatorPidFd { get; init; }

    /// <summary>
    /// The share's state store (<c>state=N</c>, a <see cref="Recovery.StateStore"/> memfd the vdev keeps across daemon
    /// restarts); null when not passed. It travels with the ring so that fuse_launcher passes it on untouched.
    /// </summary>
    public int? StateFd { get; init; }

    /// <summary>
    /// The vdev's restart bell (<c>restart=N</c>, a <see cref="Recovery.Bell"/>): a daemon rings it after writing a planned
    /// restart request into the state store. Null when not passed.
    /// </summary>
    public int? RestartFd { get; init; }

    /// <summary>
    /// A standby daemon's takeover bell (<c>takeover=N</c>): the daemon reports ready but takes over the state store and
    /// serves the ring only once the vdev rings it (a planned restart). Null for a daemon that serves at once.
    /// </summary>
    public int? TakeoverFd { get; init; }

    /// <summary>The attacher's end of the guest-memory channel (<c>guestmem=N</c>); null when not passed.</summary>
    public int? GuestMemoryFd { get; init; }

    /// <summary>
    /// The daemon's end of the descriptor store's channel (<c>fdstore=N</c>, a SOCK_SEQPACKET socket on which the daemon
    /// hands the vdev the descriptors that must outlive it, <see cref="Recovery.DescriptorStoreMessage"/>); null when not
    /// passed.
    /// </summary>
    public int? DescriptorStoreFd { get; init; }

    /// <summary>Number of queues (submission/completion pairs).</summary>
    public int QueueCount => Doorbells.Count / 4;

    /// <summary>Describes a ring set's descriptors: the memfd and four doorbells per queue (see <see cref="Doorbells"/>).</summary>
    public RingFds(int memFd, IReadOnlyList<int> doorbells)
    {
        if (doorbells.Count % 4 != 0 || doorbells.Count / 4 is < 1 or > RingLayout.MaxQueues)
            throw new ArgumentException($"A ring set needs between 1 and {RingLayout.MaxQueues} queues, each with four doorbells (sq, sqf, cq, cqf).", nameof(doorbells));
        MemFd = memFd;
        Doorbells = doorbells.ToArray();
    }

    /// <summary>Every descriptor of the set with its key, for messages: memfd, then sq0, sqf0, cq0, cqf0, sq1, …, then creator when passed.</summary>
    public IEnumerable<(int Fd, string Key)> Named()
    {
        yield return (MemFd, "memfd");
        for (int i = 0; i < Doorbells.Count; i++) yield return (Doorbells[i], DoorbellKey(i));
        if (CreatorPidFd is { } creator) yield return (creator, "creator");
        if (StateFd is { } state) yield return (state, "state");
        if (GuestMemoryFd is { } guestmem) yield return (guestmem, "guestmem");
        if (RestartFd is { } restart) yield return (restart, "restart");
        if (TakeoverFd is { } takeover) yield return (takeover, "takeover");
        if (DescriptorStoreFd is { } fdstore) yield return (fdstore, "fdstore");
    }

    /// <summary>The key of the doorbell at <paramref name="index"/> in <see cref="Doorbells"/>, e.g. <c>sqf0</c>.</summary>
    public static string DoorbellKey(int index) => Keys[index % 4] + (index / 4).ToString(CultureInfo.InvariantCulture);

    /// <summary>The doorbell of a queue's ring: <paramref name="completion"/> picks the completion ring, <paramref name="freed"/> the space-freed bell.</summary>
    public int Doorbell(int queue, bool completion, bool freed) => Doorbells[queue * 4 + (completion ? 2 : 0) + (freed ? 1 : 0)];

    /// <summary>Formats the descriptor string, e.g. <c>memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9</c>.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"memfd={MemFd},queues={QueueCount}");
        for (int i = 0; i < Doorbells.Count; i++)
            sb.Append(CultureInfo.InvariantCulture, $",{DoorbellKey(i)}={Doorbells[i]}");
        if (CreatorPidFd is { } creator) sb.Append(CultureInfo.InvariantCulture, $",creator={creator}");
        if (StateFd is { } state) sb.Append(CultureInfo.InvariantCulture, $",state={state}");
        if (GuestMemoryFd is { } guestmem) sb.Append(CultureInfo.InvariantCulture, $",guestmem={guestmem}");
        if (RestartFd is { } restart) sb.Append(CultureInfo.InvariantCulture, $",restart={restart}");
        if (TakeoverFd is { } takeover) sb.Append(CultureInfo.InvariantCulture, $",takeover={takeover}");
        if (DescriptorStoreFd is { } fdstore) sb.Append(CultureInfo.InvariantCulture, $",fdstore={fdstore}");
        return sb.ToString();
    }

    /// <summary>Parses a descriptor string; throws <see cref="FormatException"/> with a one-sentence reason.</summary>
    public static RingFds Parse(string text)
        => TryParse(text, out var fds, out var error) ? fds : throw new FormatException(error);

    /// <summary>Parses a descriptor string; on failure <paramref name="error"/> says what is wrong and what to pass instead.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out RingFds? fds, [NotNullWhen(false)] out string? error)
    {
        fds = null;
        const string Hint = "pass the string the ring's creator formatted, e.g. memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9";
        if (string.IsNullOrWhiteSpace(text))
        {
            error = $"The ring descriptor is empty; {Hint}.";
            return false;
        }
        int memfd = -1, queues = -1;
        var values = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var part in text.Split(','))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0 || !int.TryParse(part.AsSpan(eq + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int value))
            {
                error = $"The ring descriptor item '{part}' is not KEY=NUMBER; {Hint}.";
                return false;
            }
            string key = part[..eq];
            if (!values.TryAdd(key, value))
            {
                error = $"The ring descriptor names '{key}' twice; {Hint}.";
                return false;
            }
        }
        if (!values.Remove("memfd", out memfd))
        {
            error = $"The ring descriptor '{text}' lacks memfd=; {Hint}.";
            return false;
        }
        if (!values.Remove("queues", out queues) || queues < 1 || queues > RingLayout.MaxQueues)
        {
            error = $"The ring descriptor '{text}' needs queues=N with N between 1 and {RingLayout.MaxQueues}; {Hint}.";
            return false;
        }
        var bells = new int[queues * 4];
        for (int i = 0; i < bells.Length; i++)
        {
            string key = DoorbellKey(i);
            if (!values.Remove(key, out bells[i]))
            {
                error = $"The ring descriptor '{text}' lacks {key}= for queue {i / 4} of {queues}; {Hint}.";
                return false;
            }
        }
        int? creator = values.Remove("creator", out var c) ? c : null;
        int? state = values.Remove("state", out var st) ? st : null;
        int? guestMemory = values.Remove("guestmem", out var g) ? g : null;
        int? restart = values.Remove("restart", out var r) ? r : null;
        int? takeover = values.Remove("takeover", out var t) ? t : null;
        int? descriptorStore = values.Remove("fdstore", out var d) ? d : null;
        if (values.Count > 0)
        {
            error = $"The ring descriptor '{text}' has the unknown item '{values.Keys.First()}'; {Hint}.";
            return false;
        }
        fds = new RingFds(memfd, bells) { CreatorPidFd = creator, StateFd = state, GuestMemoryFd = guestMemory, RestartFd = restart, TakeoverFd = takeover, DescriptorStoreFd = descriptorStore };
        error = null;
        return true;
    }
}
