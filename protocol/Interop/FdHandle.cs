using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Interop;

/// <summary>Owns one file descriptor and closes it exactly once.</summary>
internal sealed class FdHandle : SafeHandle
{
    public FdHandle() : base(new IntPtr(-1), ownsHandle: true) { }

    public FdHandle(int fd, bool ownsHandle = true) : base(new IntPtr(-1), ownsHandle) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw descriptor number; valid only while the handle is not closed.</summary>
    public int Fd => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => ShmInterop.Close((int)handle.ToInt64()) == 0;
}
