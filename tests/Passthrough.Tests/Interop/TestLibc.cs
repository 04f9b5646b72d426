using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Tests.Interop;

/// <summary>The few syscalls the mount tests need that .NET does not expose (unmount, signals by pid).</summary>
internal static partial class TestLibc
{
    public const int MNT_DETACH = 2;
    public const int SIGTERM = 15;
    public const int SIGKILL = 9;

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();
}
