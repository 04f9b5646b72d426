using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>Child processes: waitpid(2) and its status, sessions and process groups.</summary>
internal static partial class Libc
{
    internal const int WNOHANG = 1;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int waitpid(int pid, out int status, int options);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int getsid(int pid);

    /// <summary>getpid(2): the process id in the caller's own pid namespace (1 for the first process of a new one).</summary>
    [LibraryImport(Name)]
    internal static partial int getpid();

    [LibraryImport(Name)]
    internal static partial int gettid();

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int getpgid(int pid);

    /// <summary>Describes a waitpid status: "exit code N" or "signal N" (WIFEXITED / WTERMSIG).</summary>
    internal static string DescribeWaitStatus(int status)
    {
        int signal = status & 0x7f;
        if (signal == 0) return $"exit code {(status >> 8) & 0xff}";
        return $"signal {signal}";
    }

    /// <summary>WEXITSTATUS of a normally exited process, or null when a signal ended it.</summary>
    internal static int? ExitCode(int status) => (status & 0x7f) == 0 ? (status >> 8) & 0xff : null;
}
