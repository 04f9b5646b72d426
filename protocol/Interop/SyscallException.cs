namespace Hypervisor.Interop;

/// <summary>A system call failed. The message names the call and the errno: "eventfd failed: Too many open files (errno 24)."</summary>
internal sealed class SyscallException(string call, int errno) : IOException($"{call} failed: {Libc.Describe(errno)}.")
{
    /// <summary>The errno the call returned.</summary>
    public int Errno { get; } = errno;

    /// <summary>The failure of <paramref name="call"/> with the errno it just left on this thread.</summary>
    public static SyscallException Last(string call) => new(call, Libc.LastErrno);
}
