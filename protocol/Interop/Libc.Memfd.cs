using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>memfd_create(2) and the file seals (fcntl F_ADD_SEALS / F_GET_SEALS) that fix a memfd's size.</summary>
internal static partial class Libc
{
    internal const uint MFD_CLOEXEC = 0x0001;
    internal const uint MFD_ALLOW_SEALING = 0x0002;

    internal const int F_ADD_SEALS = 1033;
    internal const int F_GET_SEALS = 1034;
    internal const int F_SEAL_SEAL = 0x0001;
    internal const int F_SEAL_SHRINK = 0x0002;
    internal const int F_SEAL_GROW = 0x0004;

    /// <summary><c>memfd_create(2)</c>; the name shows in /proc/PID/fd and /proc/PID/maps as <c>/memfd:NAME</c>.</summary>
    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int memfd_create(string name, uint flags);
}
