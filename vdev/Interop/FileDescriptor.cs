using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Interop;

/// <summary>An owned Linux file descriptor; closed exactly once when disposed or finalized.</summary>
internal sealed class FileDescriptor : SafeHandle
{
    public FileDescriptor() : base(-1, ownsHandle: true) { }

    public FileDescriptor(int fd, bool ownsHandle = true) : base(-1, ownsHandle) => SetHandle(fd);

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw number, for logs and for placing into pollfd/cmsg arrays while a reference is held.</summary>
    public int Number => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => Libc.close((int)handle.ToInt64()) == 0;
}

/// <summary>Error of a failed syscall, carrying errno.</summary>
internal sealed class SyscallException(string call, int errno)
    : IOException($"{call} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})")
{
    public int Errno { get; } = errno;

    public static SyscallException Last(string call) => new(call, Marshal.GetLastPInvokeError());
}
