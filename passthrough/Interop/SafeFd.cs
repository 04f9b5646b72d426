using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

/// <summary>
/// An owned Linux file descriptor. 0 is a valid descriptor, so only -1 means "none". Closing is deferred by the
/// SafeHandle reference count while a P/Invoke (or an explicit DangerousAddRef) still uses the descriptor, which is
/// what lets one thread evict a cached fd while another is in the middle of a syscall on it.
/// </summary>
public sealed class SafeFd : SafeHandle
{
    /// <summary>An invalid handle (used by the marshaller before it stores the returned descriptor).</summary>
    public SafeFd() : base(new IntPtr(-1), ownsHandle: true) { }

    /// <summary>Takes ownership of <paramref name="fd"/>.</summary>
    public SafeFd(int fd) : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    /// <inheritdoc/>
    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw descriptor number (only meaningful while the handle is referenced).</summary>
    public int Value => (int)handle.ToInt64();

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Libc.close((int)handle.ToInt64()) == 0;
}
