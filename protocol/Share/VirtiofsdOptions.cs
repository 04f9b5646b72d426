using System.Diagnostics.CodeAnalysis;

namespace Hypervisor.Protocol.Share;

/// <summary>The share settings that both a command line's own options and virtiofsd's <c>-o</c> items can set.</summary>
public readonly record struct ShareFlags(string? Source, string? Cache, bool XAttr, bool ReadOnly, bool Writeback, bool AllowDirectIo);

/// <summary>
/// The settings carried by virtiofsd's <c>-o key[=value],…</c> vocabulary, which the vdev, fuse_launcher and
/// the passthrough daemon all accept so that command lines written for virtiofsd (libvirt's among them) work
/// unchanged. Null means "not given": the caller's own option or default applies.
/// </summary>
public sealed class VirtiofsdOptions
{
    /// <summary><c>source=DIR</c>: the shared directory.</summary>
    public string? Source { get; private set; }

    /// <summary><c>cache=POLICY</c> (virtiofsd's <c>none</c> is reported as <c>never</c>).</summary>
    public string? Cache { get; private set; }

    /// <summary><c>log_level=LEVEL</c> (virtiofsd's <c>err</c> is reported as <c>error</c>).</summary>
    public string? LogLevel { get; private set; }

    /// <summary><c>xattr</c> / <c>no_xattr</c>.</summary>
    public bool? XAttr { get; private set; }

    /// <summary><c>readonly</c>.</summary>
    public bool? ReadOnly { get; private set; }

    /// <summary><c>writeback</c> / <c>no_writeback</c>.</summary>
    public bool? Writeback { get; private set; }

    /// <summary><c>allow_direct_io</c> / <c>no_allow_direct_io</c>.</summary>
    public bool? AllowDirectIo { get; private set; }

    /// <summary>Options accepted for compatibility that change nothing here (locks, READDIRPLUS, sandboxing are built in).</summary>
    public IReadOnlyList<string> Ignored => _ignored;

    private readonly List<string> _ignored = [];

    /// <summary>The keys this class knows, for messages.</summary>
    public const string Known = "source=DIR, cache=POLICY, xattr, no_xattr, readonly, writeback, no_writeback, allow_direct_io, log_level=LEVEL";

    /// <summary>Applies several <c>-o</c> arguments in order; stops at the first item it does not know.</summary>
    public bool TryApply(IEnumerable<string> groups, [NotNullWhen(false)] out string? error)
    {
        foreach (var group in groups)
        {
            if (!TryApply(group, out error)) return false;
        }
        error = null;
        return true;
    }

    /// <summary>The <c>-o</c> items given, laid over <paramref name="given"/> (the command line's own options).</summary>
    public ShareFlags Over(ShareFlags given) => new(
        Source ?? given.Source, Cache ?? given.Cache, XAttr ?? given.XAttr, ReadOnly ?? given.ReadOnly,
        Writeback ?? given.Writeback, AllowDirectIo ?? given.AllowDirectIo);

    /// <summary>
    /// Applies one <c>-o</c> argument (comma-separated items; later items win). Returns false with
    /// <paramref name="error"/> naming the first item it does not know.
    /// </summary>
    public bool TryApply(string group, [NotNullWhen(false)] out string? error)
    {
        foreach (var item in group.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = item.IndexOf('=');
            var key = eq < 0 ? item : item[..eq];
            var value = eq < 0 ? null : item[(eq + 1)..];
            switch (key)
            {
                case "source" when !string.IsNullOrEmpty(value): Source = value; break;
                case "cache" when !string.IsNullOrEmpty(value): Cache = value == "none" ? "never" : value; break;
                case "log_level" when !string.IsNullOrEmpty(value): LogLevel = value == "err" ? "error" : value; break;
                case "xattr": XAttr = true; break;
                case "no_xattr": XAttr = false; break;
                case "readonly": ReadOnly = true; break;
                case "writeback": Writeback = true; break;
                case "no_writeback": Writeback = false; break;
                case "allow_direct_io": AllowDirectIo = true; break;
                case "no_allow_direct_io": AllowDirectIo = false; break;
                case "flock" or "no_flock" or "posix_lock" or "no_posix_lock" or "readdirplus" or "no_readdirplus"
                    or "announce_submounts" or "killpriv_v2" or "no_killpriv_v2" or "sandbox" or "timeout" or "max_idle_threads"
                    or "modcaps" or "xattrmap" or "posix_acl" or "no_posix_acl" or "security_label" or "no_security_label":
                    _ignored.Add(item);
                    break;
                default:
                    error = $"-o {item} is not a known option; use {Known}.";
                    return false;
            }
        }
        error = null;
        return true;
    }
}
