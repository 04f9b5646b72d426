using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    /// <summary><c>pipe2(2)</c>: <paramref name="fds"/> (two entries) receives the read end, then the write end.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int pipe2(Span<int> fds, int flags);
}
