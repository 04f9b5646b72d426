using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int SEEK_SET = 0;
    internal const int SEEK_CUR = 1;
    internal const int SEEK_END = 2;
    internal const int SEEK_DATA = 3;
    internal const int SEEK_HOLE = 4;

    /// <summary><c>lseek(2)</c>; -1 with ESPIPE on pipes and sockets.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial long lseek(SafeHandle fd, long offset, int whence);

    /// <summary><c>lseek(2)</c> of a descriptor its caller keeps open (<c>lseek(fd, 0, SEEK_END)</c>: a memfd's size without struct stat).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial long lseek(int fd, long offset, int whence);
}
