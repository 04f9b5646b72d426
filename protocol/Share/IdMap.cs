using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Hypervisor.Protocol.Share;

/// <summary>The forms of a <c>--translate-uid</c> / <c>--translate-gid</c> rule (virtiofsd's words).</summary>
public enum IdRuleKind
{
    /// <summary><c>guest:GUEST_BASE:HOST_BASE:COUNT</c>: guest ids of the range to the host range, one to one.</summary>
    Guest,

    /// <summary><c>host:HOST_BASE:GUEST_BASE:COUNT</c>: host ids of the range to the guest range, one to one.</summary>
    Host,

    /// <summary><c>squash-guest:GUEST_BASE:HOST_ID:COUNT</c>: every guest id of the range to one host id.</summary>
    SquashGuest,

    /// <summary><c>squash-host:HOST_BASE:GUEST_ID:COUNT</c>: every host id of the range to one guest id.</summary>
    SquashHost,

    /// <summary><c>forbid-guest:GUEST_BASE:COUNT</c>: a guest id of the range cannot own a file (EPERM).</summary>
    ForbidGuest,

    /// <summary><c>map:GUEST_BASE:HOST_BASE:COUNT</c>: <see cref="Guest"/> and <see cref="Host"/> together.</summary>
    Map,
}

/// <summary>
/// One rule of virtiofsd's id translation: a <see cref="Kind"/>, the first id of the source range, the target (first id
/// of the target range, or the one id a squash maps to; unused by forbid-guest) and the range's length. The range
/// <c>[From, From + Count)</c> must fit in 32 bits (virtiofsd's check), so the id 4294967295 (-1, "no id") is never in one.
/// </summary>
public readonly record struct IdRule(IdRuleKind Kind, uint From, uint To, uint Count)
{
    /// <summary>The forms, for messages.</summary>
    public const string Forms = "guest:GUEST_BASE:HOST_BASE:COUNT, host:HOST_BASE:GUEST_BASE:COUNT, squash-guest:GUEST_BASE:HOST_ID:COUNT, "
        + "squash-host:HOST_BASE:GUEST_ID:COUNT, forbid-guest:GUEST_BASE:COUNT or map:GUEST_BASE:HOST_BASE:COUNT";

    /// <summary>The end of the source range (exclusive).</summary>
    public uint End => From + Count;

    /// <summary>Whether the rule maps guest ids (to the host, or forbids them).</summary>
    public bool FromGuest => Kind is IdRuleKind.Guest or IdRuleKind.SquashGuest or IdRuleKind.ForbidGuest or IdRuleKind.Map;

    /// <summary>Whether the rule maps host ids to the guest.</summary>
    public bool FromHost => Kind is IdRuleKind.Host or IdRuleKind.SquashHost or IdRuleKind.Map;

    /// <summary>
    /// Parses one rule as virtiofsd writes it: the form's name, then its numbers, each after the same separator (a
    /// colon, or any other character that is not a letter, digit, '-' or '_'). Returns false with
    /// <paramref name="why"/>: the end of a sentence that starts with the rule, e.g. "is not a translation rule; ...".
    /// </summary>
    public static bool TryParse(string text, out IdRule rule, [NotNullWhen(false)] out string? why)
    {
        rule = default;
        var sep = 0;
        while (sep < text.Length && (char.IsAsciiLetterOrDigit(text[sep]) || text[sep] is '-' or '_')) sep++;
        var name = text[..sep];
        IdRuleKind kind;
        switch (name)
        {
            case "guest": kind = IdRuleKind.Guest; break;
            case "host": kind = IdRuleKind.Host; break;
            case "squash-guest": kind = IdRuleKind.SquashGuest; break;
            case "squash-host": kind = IdRuleKind.SquashHost; break;
            case "forbid-guest": kind = IdRuleKind.ForbidGuest; break;
            case "map": kind = IdRuleKind.Map; break;
            default:
                why = $"is not a translation rule; use {Forms}.";
                return false;
        }
        var expected = kind == IdRuleKind.ForbidGuest ? 2 : 3;
        var fields = sep < text.Length ? text[(sep + 1)..].Split(text[sep]) : [];
        if (fields.Length != expected)
        {
            why = $"has {fields.Length} numbers after '{name}', which takes {expected}; use {Forms}.";
            return false;
        }
        Span<uint> n = stackalloc uint[3];
        for (var i = 0; i < fields.Length; i++)
        {
            if (!uint.TryParse(fields[i], NumberStyles.None, CultureInfo.InvariantCulture, out n[i]))
            {
                why = $"has '{fields[i]}' where an id from 0 to 4294967295 belongs.";
                return false;
            }
        }
        rule = kind == IdRuleKind.ForbidGuest ? new IdRule(kind, n[0], 0, n[1]) : new IdRule(kind, n[0], n[1], n[2]);
        if (rule.Count == 0)
        {
            why = "covers no id; give a count of 1 or more.";
            return false;
        }
        if ((ulong)rule.From + rule.Count > uint.MaxValue)
        {
            why = $"runs past the last id: {rule.From} + {rule.Count} is more than 4294967295.";
            return false;
        }
        if (kind is IdRuleKind.Guest or IdRuleKind.Host or IdRuleKind.Map && (ulong)rule.To + rule.Count > uint.MaxValue)
        {
            why = $"maps onto ids past the last one: {rule.To} + {rule.Count} is more than 4294967295.";
            return false;
        }
        why = null;
        return true;
    }

    /// <summary>The rule as the command line takes it, with colons.</summary>
    public override string ToString() => Kind switch
    {
        IdRuleKind.Guest => $"guest:{From}:{To}:{Count}",
        IdRuleKind.Host => $"host:{From}:{To}:{Count}",
        IdRuleKind.SquashGuest => $"squash-guest:{From}:{To}:{Count}",
        IdRuleKind.SquashHost => $"squash-host:{From}:{To}:{Count}",
        IdRuleKind.ForbidGuest => $"forbid-guest:{From}:{Count}",
        _ => $"map:{From}:{To}:{Count}",
    };
}

/// <summary>
/// virtiofsd's <c>--translate-uid</c> or <c>--translate-gid</c>: the rules of one kind of id, in two independent
/// directions (guest to host, host to guest). An id no rule covers keeps its number. Within one direction the
/// source ranges of the rules must not overlap (virtiofsd refuses that too); a rule whose source range is in the
/// other direction never conflicts. Built once; a lookup is a binary search over a sorted array, without allocation.
/// </summary>
public sealed class IdMap
{
    private const byte Shift = 0, Squash = 1, Forbid = 2;

    private readonly Entry[] _toHost;
    private readonly Entry[] _toGuest;

    private IdMap(Entry[] toHost, Entry[] toGuest)
    {
        _toHost = toHost;
        _toGuest = toGuest;
    }

    /// <summary>The map without rules: every id is itself on both sides.</summary>
    public static IdMap Identity { get; } = new([], []);

    /// <summary>Whether no rule is set.</summary>
    public bool IsIdentity => _toHost.Length == 0 && _toGuest.Length == 0;

    /// <summary>
    /// Builds the map of <paramref name="rules"/> (each as <see cref="IdRule.TryParse"/> reads it). Returns false with
    /// <paramref name="why"/>, the end of a sentence that starts with the offending rule.
    /// </summary>
    public static bool TryCreate(IEnumerable<string> rules, [NotNullWhen(true)] out IdMap? map, [NotNullWhen(false)] out string? why,
        out string? offending)
    {
        var toHost = new List<Entry>();
        var toGuest = new List<Entry>();
        map = null;
        foreach (var text in rules)
        {
            offending = text;
            if (!IdRule.TryParse(text, out var rule, out why)) return false;
            if (rule.FromGuest)
            {
                var mode = rule.Kind switch { IdRuleKind.SquashGuest => Squash, IdRuleKind.ForbidGuest => Forbid, _ => Shift };
                if (!TryAdd(toHost, new Entry(rule.From, rule.End, rule.To, mode, rule), "guest", out why)) return false;
            }
            if (rule.FromHost)
            {
                var from = rule.Kind == IdRuleKind.Map ? rule.To : rule.From;
                var to = rule.Kind == IdRuleKind.Map ? rule.From : rule.To;
                if (!TryAdd(toGuest, new Entry(from, from + rule.Count, to, rule.Kind == IdRuleKind.SquashHost ? Squash : Shift, rule), "host", out why))
                    return false;
            }
        }
        offending = null;
        why = null;
        toHost.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        toGuest.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        map = toHost.Count == 0 && toGuest.Count == 0 ? Identity : new IdMap([.. toHost], [.. toGuest]);
        return true;
    }

    private static bool TryAdd(List<Entry> entries, Entry entry, string side, [NotNullWhen(false)] out string? why)
    {
        foreach (var e in entries)
        {
            if (entry.Start < e.End && e.Start < entry.End)
            {
                why = $"maps {side} ids {Math.Max(entry.Start, e.Start)} to {Math.Min(entry.End, e.End) - 1} that '{e.Rule}' maps already; "
                    + $"the {side} ranges of two rules must not overlap.";
                return false;
            }
        }
        entries.Add(entry);
        why = null;
        return true;
    }

    /// <summary>
    /// The host id for guest id <paramref name="guest"/>; false when a forbid-guest rule covers it (the request then
    /// fails with EPERM, as virtiofsd answers).
    /// </summary>
    public bool TryToHost(uint guest, out uint host)
    {
        host = guest;
        if (_toHost.Length == 0) return true;
        var i = Find(_toHost, guest);
        if (i < 0) return true;
        ref readonly var e = ref _toHost[i];
        if (e.Mode == Forbid) return false;
        host = e.Mode == Squash ? e.Target : e.Target + (guest - e.Start);
        return true;
    }

    /// <summary>The guest id for host id <paramref name="host"/> (itself when no rule covers it).</summary>
    public uint ToGuest(uint host)
    {
        if (_toGuest.Length == 0) return host;
        var i = Find(_toGuest, host);
        if (i < 0) return host;
        ref readonly var e = ref _toGuest[i];
        return e.Mode == Squash ? e.Target : e.Target + (host - e.Start);
    }

    private static int Find(Entry[] entries, uint id)
    {
        int lo = 0, hi = entries.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            ref readonly var e = ref entries[mid];
            if (id < e.Start) hi = mid - 1;
            else if (id >= e.End) lo = mid + 1;
            else return mid;
        }
        return -1;
    }

    private readonly record struct Entry(uint Start, uint End, uint Target, byte Mode, IdRule Rule);
}
