using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// libseccomp (Debian's libseccomp2), which compiles a syscall allowlist into the kernel's BPF filter for this
/// architecture. The library is loaded by the first call, which the daemon makes before it gives up its view of the
/// host's /usr.
/// </summary>
internal static partial class Libc
{
    internal const string Seccomp = "libseccomp.so.2";

    internal const uint SCMP_ACT_KILL_PROCESS = 0x80000000;
    internal const uint SCMP_ACT_TRAP = 0x00030000;
    internal const uint SCMP_ACT_LOG = 0x7ffc0000;
    internal const uint SCMP_ACT_ALLOW = 0x7fff0000;

    /// <summary>seccomp_attr_set: apply the filter to every thread of the process (SECCOMP_FILTER_FLAG_TSYNC).</summary>
    internal const int SCMP_FLTATR_CTL_TSYNC = 4;

    /// <summary>seccomp_attr_set: leave no_new_privs to the caller (it sets it itself, on every thread).</summary>
    internal const int SCMP_FLTATR_CTL_NNP = 3;

    [LibraryImport(Seccomp)]
    internal static partial nint seccomp_init(uint defaultAction);

    [LibraryImport(Seccomp)]
    internal static partial void seccomp_release(nint context);

    [LibraryImport(Seccomp)]
    internal static partial int seccomp_attr_set(nint context, int attribute, uint value);

    [LibraryImport(Seccomp, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int seccomp_syscall_resolve_name(string name);

    [LibraryImport(Seccomp)]
    internal static partial int seccomp_rule_add(nint context, uint action, int syscall, uint argumentCount);

    [LibraryImport(Seccomp)]
    internal static partial int seccomp_load(nint context);
}
