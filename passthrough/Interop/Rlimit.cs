using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    internal const int RLIMIT_NOFILE = 7;

    /// <summary><c>struct rlimit</c> (two <c>rlim_t</c>, 64-bit on x86_64 and arm64).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    /// <summary><c>getrlimit(2)</c>.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int getrlimit(int resource, out RLimit limit);
}
