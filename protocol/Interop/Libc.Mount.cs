using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int MNT_DETACH = 2;

    /// <summary>mount(2): set-user-ID and set-group-ID bits are ignored on exec.</summary>
    internal const ulong MS_NOSUID = 2;

    /// <summary>mount(2): device nodes cannot be opened.</summary>
    internal const ulong MS_NODEV = 4;

    /// <summary>mount(2): program files on the mount cannot be executed.</summary>
    internal const ulong MS_NOEXEC = 8;

    /// <summary>mount(2): a bind mount (the source tree appears at the target as well).</summary>
    internal const ulong MS_BIND = 0x1000;

    /// <summary>mount(2): with MS_BIND or a propagation change, the whole subtree.</summary>
    internal const ulong MS_REC = 0x4000;

    /// <summary>mount(2) propagation: receive mount events from the peer group, send none back.</summary>
    internal const ulong MS_SLAVE = 0x80000;

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mount(string source, string target, string fileSystemType, ulong flags, string? data);

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int umount2(string target, int flags);

    /// <summary>pivot_root(2), which glibc does not wrap: the calling process's mount namespace gets <paramref name="newRoot"/> as its root.</summary>
    internal static int pivot_root(string newRoot, string putOld) => SyscallStrings(SYS_pivot_root, newRoot, putOld);

    private const long SYS_pivot_root = 155;

    [LibraryImport(Name, EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SyscallStrings(long number, string first, string second);

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int chroot(string path);

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int chdir(string path);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchdir(int fd);
}
