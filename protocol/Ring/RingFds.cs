using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The file descriptor numbers of one ring set, as passed from the creator to the attaching
/// process on its command line: <c>memfd=5,queues=2,sq0=6,cq0=7,sq1=8,cq1=9</c>.
/// <c>memfd</c> is the shared memory; <c>sqN</c>/<c>cqN</c> are the eventfd doorbells of queue N's
/// submission and completion rings. Keys may come in any order; each must appear exactly once.
/// </summary>
public sealed class RingFds
{
    /// <summary>The memfd holding the whole ring set.</summary>
    public int MemFd { get; }

    /// <summary>Doorbell eventfd of each queue's submission ring.</summary>
    public IReadOnlyList<int> SubmissionDoorbells { get; }

    /// <summary>Doorbell eventfd of each queue's completion ring.</summary>
    public IReadOnlyList<int> CompletionDoorbells { get; }

    /// <summary>Number of queues (submission/completion pairs).</summary>
    public int QueueCount => SubmissionDoorbells.Count;

    /// <summary>Describes a ring set's descriptors; both lists must have one entry per queue.</summary>
    public RingFds(int memFd, IReadOnlyList<int> submissionDoorbells, IReadOnlyList<int> completionDoorbells)
    {
        if (submissionDoorbells.Count != completionDoorbells.Count || submissionDoorbells.Count is < 1 or > RingLayout.MaxQueues)
            throw new ArgumentException($"A ring set needs between 1 and {RingLayout.MaxQueues} queues, each with a submission and a completion doorbell.");
        MemFd = memFd;
        SubmissionDoorbells = submissionDoorbells.ToArray();
        CompletionDoorbells = completionDoorbells.ToArray();
    }

    /// <summary>Formats the descriptor string, e.g. <c>memfd=5,queues=2,sq0=6,cq0=7,sq1=8,cq1=9</c>.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"memfd={MemFd},queues={QueueCount}");
        for (int q = 0; q < QueueCount; q++)
            sb.Append(CultureInfo.InvariantCulture, $",sq{q}={SubmissionDoorbells[q]},cq{q}={CompletionDoorbells[q]}");
        return sb.ToString();
    }

    /// <summary>Parses a descriptor string; throws <see cref="FormatException"/> with a one-sentence reason.</summary>
    public static RingFds Parse(string text)
        => TryParse(text, out var fds, out var error) ? fds : throw new FormatException(error);

    /// <summary>Parses a descriptor string; on failure <paramref name="error"/> says what is wrong and what to pass instead.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out RingFds? fds, [NotNullWhen(false)] out string? error)
    {
        fds = null;
        const string Hint = "pass the string the ring's creator formatted, e.g. memfd=5,queues=1,sq0=6,cq0=7";
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
        var sq = new int[queues];
        var cq = new int[queues];
        for (int q = 0; q < queues; q++)
        {
            string s = "sq" + q.ToString(CultureInfo.InvariantCulture), c = "cq" + q.ToString(CultureInfo.InvariantCulture);
            if (!values.Remove(s, out sq[q]) || !values.Remove(c, out cq[q]))
            {
                error = $"The ring descriptor '{text}' lacks {s}= or {c}= for queue {q} of {queues}; {Hint}.";
                return false;
            }
        }
        if (values.Count > 0)
        {
            error = $"The ring descriptor '{text}' has the unknown item '{values.Keys.First()}'; {Hint}.";
            return false;
        }
        fds = new RingFds(memfd, sq, cq);
        error = null;
        return true;
    }
}
