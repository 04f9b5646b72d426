using System.Diagnostics.CodeAnalysis;
using System.Text;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Protocol.Share;

/// <summary>What an xattr mapping rule does with a name it matches (virtiofsd's rule types).</summary>
public enum XattrRuleType
{
    /// <summary>Client names get <see cref="XattrRule.Prepend"/> in front; server names lose it.</summary>
    Prefix,

    /// <summary>The name passes unchanged.</summary>
    Ok,

    /// <summary>A client name is refused with EPERM; a server name is hidden from listings.</summary>
    Bad,

    /// <summary>A client name is refused with EOPNOTSUPP; a server name is hidden from listings.</summary>
    Unsupported,
}

/// <summary>Which names a rule is tested against.</summary>
[Flags]
public enum XattrScope
{
    /// <summary>Names the guest sends in GETXATTR, SETXATTR and REMOVEXATTR, matched against the key.</summary>
    Client = 1,

    /// <summary>Names the host lists in a LISTXATTR reply, matched against the prepend string.</summary>
    Server = 2,

    /// <summary>Both.</summary>
    All = Client | Server,
}

/// <summary>One rule of an xattr map: <c>:type:scope:key:prepend:</c>.</summary>
public sealed record XattrRule(XattrRuleType Type, XattrScope Scope, byte[] Key, byte[] Prepend)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $":{Type.ToString().ToLowerInvariant()}:{Scope.ToString().ToLowerInvariant()}:{Encoding.UTF8.GetString(Key)}:{Encoding.UTF8.GetString(Prepend)}:";
}

/// <summary>
/// virtiofsd's extended-attribute name mapping (<c>--xattrmap</c>, <c>-o xattrmap=</c>): an ordered list of rules, the
/// first whose scope and prefix match a name deciding what happens to it. Client names (GETXATTR, SETXATTR,
/// REMOVEXATTR) are matched against each rule's key; a <see cref="XattrRuleType.Prefix"/> rule puts its prepend
/// string in front of the whole name. Server names (a LISTXATTR reply) are matched against the prepend string, which a
/// prefix rule strips. A client name that no rule matches is refused with EPERM and a server name that no rule matches
/// is hidden, as virtiofsd does.
/// </summary>
/// <remarks>
/// Syntax: rules one after another, optionally separated by white space; each rule's first character is its
/// separator, used for the whole rule, which it also ends: <c>:type:scope:key:prepend:</c> with type prefix, ok,
/// bad or unsupported and scope client, server or all. <c>:map:key:prepend:</c>, at most once and as the last rule,
/// stands for <c>:prefix:all:key:prepend:</c> followed, when key is empty, by <c>:bad:all:::</c>, otherwise by
/// <c>:bad:all:prepend:key:</c> and <c>:ok:all:::</c>. Parsing happens once, at start-up; mapping allocates nothing.
/// </remarks>
public sealed class XattrMap
{
    /// <summary>XATTR_NAME_MAX: the longest attribute name the host accepts.</summary>
    public const int NameMax = 255;

    private readonly XattrRule[] _rules;

    private XattrMap(XattrRule[] rules) => _rules = rules;

    /// <summary>The rules in the order they are tried, a <c>map</c> rule already expanded.</summary>
    public IReadOnlyList<XattrRule> Rules => _rules;

    /// <summary>Parses <paramref name="text"/>, or says in <paramref name="error"/> what is wrong, as the end of a sentence about the map (e.g. "rule 2 has no scope ...").</summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out XattrMap? map, [NotNullWhen(false)] out string? error)
    {
        map = null;
        var rules = new List<XattrRule>();
        var i = 0;
        var number = 0;
        var mapRule = 0;
        while (true)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            if (i == text.Length) break;
            number++;
            if (mapRule > 0)
            {
                error = $"rule {mapRule} is a map rule, which must be the only map rule and the last rule.";
                return false;
            }
            var separator = text[i++];
            if (!TryField(text, ref i, separator, out var typeWord))
            {
                error = $"rule {number} ends before its type; write it as {separator}type{separator}scope{separator}key{separator}prepend{separator}.";
                return false;
            }
            if (typeWord == "map")
            {
                if (!TryField(text, ref i, separator, out var mapKey) || !TryField(text, ref i, separator, out var mapPrepend))
                {
                    error = $"rule {number} (map) is incomplete; write it as {separator}map{separator}key{separator}prepend{separator}, ending with the separator.";
                    return false;
                }
                if (!TryBytes(mapKey, number, out var k, out error) || !TryBytes(mapPrepend, number, out var p, out error)) return false;
                mapRule = number;
                rules.Add(new XattrRule(XattrRuleType.Prefix, XattrScope.All, k, p));
                if (k.Length == 0) rules.Add(new XattrRule(XattrRuleType.Bad, XattrScope.All, [], []));
                else
                {
                    rules.Add(new XattrRule(XattrRuleType.Bad, XattrScope.All, p, k));
                    rules.Add(new XattrRule(XattrRuleType.Ok, XattrScope.All, [], []));
                }
                continue;
            }
            XattrRuleType type;
            switch (typeWord)
            {
                case "prefix": type = XattrRuleType.Prefix; break;
                case "ok": type = XattrRuleType.Ok; break;
                case "bad": type = XattrRuleType.Bad; break;
                case "unsupported": type = XattrRuleType.Unsupported; break;
                default:
                    error = $"rule {number} has type \"{typeWord}\"; use prefix, ok, bad, unsupported or map.";
                    return false;
            }
            if (!TryField(text, ref i, separator, out var scopeWord) || !TryField(text, ref i, separator, out var key)
                || !TryField(text, ref i, separator, out var prepend))
            {
                error = $"rule {number} is incomplete; write it as {separator}type{separator}scope{separator}key{separator}prepend{separator}, ending with the separator.";
                return false;
            }
            XattrScope scope;
            switch (scopeWord)
            {
                case "client": scope = XattrScope.Client; break;
                case "server": scope = XattrScope.Server; break;
                case "all": scope = XattrScope.All; break;
                default:
                    error = $"rule {number} has scope \"{scopeWord}\"; use client, server or all.";
                    return false;
            }
            if (!TryBytes(key, number, out var keyBytes, out error) || !TryBytes(prepend, number, out var prependBytes, out error)) return false;
            rules.Add(new XattrRule(type, scope, keyBytes, prependBytes));
        }
        if (rules.Count == 0)
        {
            error = "it has no rules; give at least one, e.g. :map::user.virtiofs.:";
            return false;
        }
        map = new XattrMap([.. rules]);
        error = null;
        return true;
    }

    private static bool TryField(string text, ref int i, char separator, out string field)
    {
        var end = text.IndexOf(separator, i);
        if (end < 0)
        {
            field = "";
            return false;
        }
        field = text[i..end];
        i = end + 1;
        return true;
    }

    private static bool TryBytes(string field, int number, out byte[] bytes, [NotNullWhen(false)] out string? error)
    {
        bytes = Encoding.UTF8.GetBytes(field);
        if (field.Contains('\0') || bytes.Length > NameMax)
        {
            error = $"rule {number} has a key or prefix that is not an attribute name prefix (NUL, or longer than {NameMax} bytes).";
            return false;
        }
        error = null;
        return true;
    }

    /// <summary>
    /// Maps a name the guest sent (without its NUL) to the host's name, written into <paramref name="destination"/>
    /// (at least <see cref="NameMax"/> bytes); <paramref name="length"/> is its length. EPERM for a name a bad rule or
    /// no rule matches, EOPNOTSUPP for an unsupported one, ERANGE when the mapped name is longer than XATTR_NAME_MAX.
    /// </summary>
    public Errno MapClient(ReadOnlySpan<byte> name, Span<byte> destination, out int length)
    {
        length = 0;
        foreach (var rule in _rules)
        {
            if ((rule.Scope & XattrScope.Client) == 0 || !name.StartsWith(rule.Key)) continue;
            switch (rule.Type)
            {
                case XattrRuleType.Bad: return Errno.EPERM;
                case XattrRuleType.Unsupported: return Errno.EOPNOTSUPP;
                case XattrRuleType.Ok:
                    if (name.Length > destination.Length) return Errno.ERANGE;
                    name.CopyTo(destination);
                    length = name.Length;
                    return Errno.Ok;
                default:
                    var total = rule.Prepend.Length + name.Length;
                    if (total > NameMax || total > destination.Length) return Errno.ERANGE;
                    rule.Prepend.CopyTo(destination);
                    name.CopyTo(destination[rule.Prepend.Length..]);
                    length = total;
                    return Errno.Ok;
            }
        }
        return Errno.EPERM;
    }

    /// <summary>
    /// Maps a name the host listed to what the guest sees: false when the name is hidden (a bad or unsupported rule,
    /// or no rule, matches it, or stripping leaves nothing); otherwise the guest's name is
    /// <paramref name="name"/> from <paramref name="start"/> on.
    /// </summary>
    public bool TryMapServer(ReadOnlySpan<byte> name, out int start)
    {
        start = 0;
        foreach (var rule in _rules)
        {
            if ((rule.Scope & XattrScope.Server) == 0 || !name.StartsWith(rule.Prepend)) continue;
            switch (rule.Type)
            {
                case XattrRuleType.Ok: return true;
                case XattrRuleType.Prefix:
                    start = rule.Prepend.Length;
                    return start < name.Length;
                default: return false;
            }
        }
        return false;
    }

    /// <summary>
    /// Maps a LISTXATTR result (NUL-terminated names) for the guest into <paramref name="destination"/>, dropping hidden
    /// names. With an empty <paramref name="destination"/> only the size is computed. Returns the mapped size, or -1
    /// when <paramref name="destination"/> is not empty and too small for it.
    /// </summary>
    public int MapServerList(ReadOnlySpan<byte> list, Span<byte> destination)
    {
        var size = 0;
        while (!list.IsEmpty)
        {
            var nul = list.IndexOf((byte)0);
            var name = nul < 0 ? list : list[..nul];
            list = nul < 0 ? default : list[(nul + 1)..];
            if (name.IsEmpty || !TryMapServer(name, out var start)) continue;
            var mapped = name[start..];
            if (!destination.IsEmpty)
            {
                if (size + mapped.Length + 1 > destination.Length) return -1;
                mapped.CopyTo(destination[size..]);
                destination[size + mapped.Length] = 0;
            }
            size += mapped.Length + 1;
        }
        return size;
    }

    /// <inheritdoc/>
    public override string ToString() => string.Concat(_rules.Select(r => r.ToString()));
}
