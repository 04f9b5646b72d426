using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Interop;

internal static partial class Libc
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int WNOHANG = 1;

    [LibraryImport(Lib, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport(Lib, EntryPoint = "waitpid", SetLastError = true)]
    public static partial int WaitPid(int pid, out int status, int options);

    /// <summary>glibc 2.36+: a descriptor that polls readable once the process has exited.</summary>
    [LibraryImport(Lib, EntryPoint = "pidfd_open", SetLastError = true)]
    public static partial int PidFdOpen(int pid, uint flags);

    [LibraryImport(Lib, EntryPoint = "getsid", SetLastError = true)]
    public static partial int GetSid(int pid);

    /// <summary>Describes a waitpid status: "exit code N" or "signal N".</summary>
    public static string DescribeWaitStatus(int status)
    {
        int signal = status & 0x7f;
        if (signal == 0) return $"exit code {(status >> 8) & 0xff}";
        return $"signal {signal}";
    }

    /// <summary>The exit code of a normally exited process, or null when a signal ended it.</summary>
    public static int? ExitCode(int status) => (status & 0x7f) == 0 ? (status >> 8) & 0xff : null;
}
