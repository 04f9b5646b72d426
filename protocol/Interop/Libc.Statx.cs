using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>statx(2), for callers that must not depend on the architecture's struct stat.</summary>
internal static partial class Libc
{
    internal const uint STATX_TYPE = 0x1;
    internal const uint STATX_MODE = 0x2;
    internal const uint STATX_INO = 0x100;
    internal const uint STATX_MNT_ID = 0x1000;

    /// <summary><c>stx_attributes</c>: the file is the root of a mount.</summary>
    internal const ulong STATX_ATTR_MOUNT_ROOT = 0x2000;

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int statx(int dirfd, string path, int flags, uint mask, out Statx statxbuf);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int statx(SafeHandle dirfd, ReadOnlySpan<byte> path, int flags, uint mask, out Statx statxbuf);

    /// <summary>
    /// Whether the inode behind <paramref name="fd"/> is the root of a mount (STATX_ATTR_MOUNT_ROOT, Linux 5.8), with
    /// its mount id; false where statx cannot say.
    /// </summary>
    internal static bool IsMountRoot(SafeHandle fd, out ulong mountId)
    {
        if (statx(fd, "\0"u8, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, out var st) != 0)
        {
            mountId = 0;
            return false;
        }
        mountId = (st.Mask & STATX_MNT_ID) != 0 ? st.MntId : 0;
        return (st.AttributesMask & STATX_ATTR_MOUNT_ROOT) != 0 && (st.Attributes & STATX_ATTR_MOUNT_ROOT) != 0;
    }

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
