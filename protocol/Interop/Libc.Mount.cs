using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int MNT_DETACH = 2;

    /// <summary>mount(2): set-user-ID and set-group-ID bits are ignored on exec.</summary>
    internal const ulong MS_NOSUID = 2;

    /// <summary>mount(2): device nodes cannot be opened.</summary>
    internal const ulong MS_NODEV = 4;

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mount(string source, string target, string fileSystemType, ulong flags, string? data);

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int umount2(string target, int flags);
}
