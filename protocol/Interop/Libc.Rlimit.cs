using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int RLIMIT_NOFILE = 7;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int getrlimit(int resource, out RLimit limit);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int setrlimit(int resource, in RLimit limit);
}
