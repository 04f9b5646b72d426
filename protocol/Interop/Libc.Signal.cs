using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int SIGKILL = 9;
    internal const int SIGTERM = 15;

    /// <summary><c>kill(2)</c>; a negative <paramref name="pid"/> signals that process group.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int kill(int pid, int sig);
}
