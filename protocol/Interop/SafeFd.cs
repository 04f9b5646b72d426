using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// An owned Linux file descriptor, the one handle type of the stack. 0 is a valid descriptor, so only a negative value
/// means "none". Closing is deferred by the SafeHandle reference count while a P/Invoke (or an explicit
/// DangerousAddRef) still uses the descriptor, which lets one thread close or evict a descriptor while another is in
/// the middle of a call on it.
/// </summary>
internal sealed class SafeFd : SafeHandle
{
    /// <summary>An invalid handle; the marshaller uses it before it stores a returned descriptor.</summary>
    public SafeFd() : base(-1, ownsHandle: true) { }

    /// <summary>Wraps <paramref name="fd"/>; with <paramref name="ownsHandle"/> it is closed on dispose.</summary>
    public SafeFd(int fd, bool ownsHandle = true) : base(-1, ownsHandle) => SetHandle(fd);

    public override bool IsInvalid => handle < 0;

    /// <summary>The descriptor number, for logs and for pollfd or SCM_RIGHTS arrays; meaningful only while the handle is referenced.</summary>
    public int Value => (int)handle;

    protected override bool ReleaseHandle() => Libc.close((int)handle) == 0;
}

internal static partial class Libc
{
    /// <summary><c>close(2)</c>. Owned descriptors are closed by disposing their <see cref="SafeFd"/>; this is for raw ones.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int close(int fd);
}
