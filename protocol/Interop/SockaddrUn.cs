using System.Runtime.InteropServices;
using System.Text;

namespace Hypervisor.Interop;

/// <summary><c>struct sockaddr_un</c> (sys/un.h, 110 bytes): the address of a UNIX socket.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SockaddrUn
{
    public ushort Family;
    public fixed byte Path[108];

    /// <summary>The longest filesystem path an address holds: sun_path less the terminating NUL.</summary>
    public const int MaxPathBytes = 107;

    /// <summary>
    /// An AF_UNIX address for the filesystem path <paramref name="path"/>. Returns the length to pass to bind or connect
    /// (family, path and NUL), or -1 when the path does not fit (<see cref="MaxPathBytes"/>).
    /// </summary>
    public static int Create(string path, out SockaddrUn address)
    {
        address = default;
        address.Family = 1; // AF_UNIX
        if (Encoding.UTF8.GetByteCount(path) > MaxPathBytes) return -1;
        int n;
        // Safe: p points at the 108 bytes of sun_path, pinned for the statement; the span covers the first 107, so the
        // last byte stays the NUL that `default` wrote.
        fixed (byte* p = address.Path) n = Encoding.UTF8.GetBytes(path, new Span<byte>(p, MaxPathBytes));
        return 2 + n + 1;
    }

    /// <summary>
    /// The filesystem path of an address <paramref name="length"/> bytes long as getsockname returned it, or null for an
    /// unnamed socket, an abstract name, or another family.
    /// </summary>
    public readonly string? FilesystemPath(uint length)
    {
        if (Family != 1 || length <= 2 || length > 110) return null;
        // Safe: p points at sun_path of this struct, pinned for the block; the span covers length - 2 <= 108 bytes of it.
        fixed (byte* p = Path)
        {
            if (p[0] == 0) return null;
            var path = new ReadOnlySpan<byte>(p, (int)length - 2);
            int nul = path.IndexOf((byte)0);
            return Encoding.UTF8.GetString(nul >= 0 ? path[..nul] : path);
        }
    }
}
