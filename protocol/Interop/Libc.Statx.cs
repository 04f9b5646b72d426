using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>statx(2), for callers that must not depend on the architecture's struct stat.</summary>
internal static partial class Libc
{
    internal const uint STATX_TYPE = 0x1;
    internal const uint STATX_MODE = 0x2;
    internal const uint STATX_INO = 0x100;

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int statx(int dirfd, string path, int flags, uint mask, out Statx statxbuf);

    /// <summary>
    /// The file type bits (S_IFMT) and inode number of <paramref name="path"/> itself, a final symlink not followed.
    /// Returns 0, or the errno (ENOENT: it does not exist).
    /// </summary>
    internal static int FileType(string path, out uint fileType, out ulong inode)
    {
        if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_INO, out var st) != 0)
        {
            fileType = 0;
            inode = 0;
            return LastErrno;
        }
        fileType = st.Mode & S_IFMT;
        inode = st.Ino;
        return 0;
    }
}
