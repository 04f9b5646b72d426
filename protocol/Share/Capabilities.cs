using System.Diagnostics.CodeAnalysis;

namespace Hypervisor.Protocol.Share;

/// <summary>
/// Linux capability names (capabilities(7), without the <c>CAP_</c> prefix, in lower case as virtiofsd's
/// <c>--modcaps</c> takes them), the daemon's default set, and <c>--modcaps</c> itself. A set is a bit per capability.
/// </summary>
public static class Capabilities
{
    private static readonly string[] Names =
    [
        "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
        "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
        "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
        "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
        "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
        "checkpoint_restore",
    ];

    /// <summary>Every capability this table knows (the kernel's last is checkpoint_restore, 40).</summary>
    public static ulong All => (1UL << Names.Length) - 1;

    /// <summary>
    /// What the passthrough daemon keeps, as virtiofsd keeps it, plus dac_read_search: chown (owners the guest sets
    /// and creates with), dac_override and fowner (a guest root's requests, which the host must not refuse where the
    /// guest's own kernel allowed them), dac_read_search (open_by_handle_at, by which every node is reopened),
    /// fsetid (a guest root's chmod keeps set-group-ID), setuid and setgid (each request runs with the caller's fsuid
    /// and fsgid), mknod (device nodes a guest root creates), setfcap (security.capability attributes).
    /// </summary>
    public static ulong DaemonDefault { get; } = Set("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "setgid", "setuid", "mknod", "setfcap");

    /// <summary>The bit of capability <paramref name="name"/> (with or without <c>cap_</c>, any case); false when unknown.</summary>
    public static bool TryParse(string name, out ulong bit)
    {
        var n = name.Trim().ToLowerInvariant();
        if (n.StartsWith("cap_", StringComparison.Ordinal)) n = n[4..];
        var i = Array.IndexOf(Names, n);
        bit = i < 0 ? 0 : 1UL << i;
        return i >= 0;
    }

    /// <summary>
    /// Applies <c>--modcaps</c> (virtiofsd's form: colon-separated <c>+name</c> to add, <c>-name</c> to remove) to
    /// <paramref name="set"/>; <paramref name="error"/> ends a sentence that starts with the option and its value.
    /// </summary>
    public static bool TryModify(ulong set, string modcaps, out ulong result, [NotNullWhen(false)] out string? error)
    {
        result = set;
        foreach (var item in modcaps.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            if (item.Length < 2 || item[0] is not ('+' or '-'))
            {
                error = $"has \"{item}\", which is neither +NAME nor -NAME; use e.g. +sys_admin:-mknod.";
                return false;
            }
            if (!TryParse(item[1..], out var bit))
            {
                error = $"names \"{item[1..]}\", which is not a capability; use names from capabilities(7) such as sys_admin or mknod.";
                return false;
            }
            result = item[0] == '+' ? result | bit : result & ~bit;
        }
        error = null;
        return true;
    }

    /// <summary>The names in <paramref name="set"/>, comma-separated, for messages and documentation.</summary>
    public static string Describe(ulong set) =>
        string.Join(',', Names.Where((_, i) => (set & (1UL << i)) != 0));

    private static ulong Set(params string[] names)
    {
        ulong set = 0;
        foreach (var name in names) set |= 1UL << Array.IndexOf(Names, name);
        return set;
    }
}
