using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Interop;

internal static partial class Libc
{
    public const int W_OK = 2;
    public const int X_OK = 1;
    private const int AT_FDCWD = -100;
    private const int AT_SYMLINK_NOFOLLOW = 0x100;
    private const uint STATX_TYPE = 0x1;
    public const int S_IFMT = 0xF000;
    public const int S_IFSOCK = 0xC000;
    public const int S_IFDIR = 0x4000;

    [LibraryImport(Lib, EntryPoint = "access", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Access(string path, int mode);

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);

    /// <summary>
    /// The file type bits (S_IFMT) of <paramref name="path"/> itself (a symlink is not followed), or null when
    /// it does not exist. statx is used because its layout is the same on every architecture, unlike struct stat.
    /// </summary>
    public static int? FileType(string path)
    {
        unsafe
        {
            // Safe: struct statx is 256 bytes; stx_mode is the u16 at offset 28 of it.
            byte* buffer = stackalloc byte[256];
            if (Statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE, buffer) != 0)
                return null;
            return *(ushort*)(buffer + 28) & S_IFMT;
        }
    }
}
