using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Interop;

/// <summary>
/// The C library calls the launcher needs and .NET does not expose: posix_spawn with a session and a chosen
/// descriptor set, pipes, fcntl, poll, pidfd, kill/waitpid. Every call that reports failure through errno is
/// imported with SetLastError so that <see cref="Marshal.GetLastPInvokeError"/> yields that errno.
/// </summary>
internal static partial class Libc
{
    private const string Lib = "libc";

    /// <summary>Human-readable text of an errno value, e.g. "No such file or directory (ENOENT 2)".</summary>
    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";

    /// <summary>The errno of the last P/Invoke call made on this thread.</summary>
    public static int LastErrno => Marshal.GetLastPInvokeError();
}
