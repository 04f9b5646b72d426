using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// unshare(2) and umask(2): a thread's own fs_struct (CLONE_FS) makes its umask its own; new namespaces (CLONE_NEW*)
/// are the calling thread's, and the processes it then starts are created in them.
/// </summary>
internal static partial class Libc
{
    internal const int CLONE_FS = 0x200;
    internal const int CLONE_NEWNS = 0x20000;
    internal const int CLONE_NEWUTS = 0x4000000;
    internal const int CLONE_NEWIPC = 0x8000000;
    internal const int CLONE_NEWPID = 0x20000000;
    internal const int CLONE_NEWNET = 0x40000000;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int unshare(int flags);

    /// <summary><c>umask(2)</c>: per fs_struct, so per thread after <c>unshare(CLONE_FS)</c>; cannot fail.</summary>
    [LibraryImport(Name)]
    internal static partial uint umask(uint mask);
}
