using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    /// <summary><c>read(2)</c> of at most <paramref name="count"/> bytes, which must not exceed <paramref name="buffer"/>'s length.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint read(SafeHandle fd, Span<byte> buffer, nuint count);

    /// <summary><c>read(2)</c> on a descriptor its caller keeps open (the ring's doorbells, test descriptors).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint read(int fd, Span<byte> buffer, nuint count);

    /// <summary><c>write(2)</c> of at most <paramref name="count"/> bytes, which must not exceed <paramref name="buffer"/>'s length.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint write(SafeHandle fd, ReadOnlySpan<byte> buffer, nuint count);

    /// <summary><c>write(2)</c> on a descriptor its caller keeps open.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint write(int fd, ReadOnlySpan<byte> buffer, nuint count);
}
