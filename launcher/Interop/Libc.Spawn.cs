using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Interop;

internal static partial class Libc
{
    /// <summary>glibc's posix_spawnattr flags (spawn.h).</summary>
    public const short POSIX_SPAWN_SETSIGDEF = 0x04;
    public const short POSIX_SPAWN_SETSIGMASK = 0x08;
    public const short POSIX_SPAWN_SETSID = 0x80;

    /// <summary>
    /// Bytes reserved for posix_spawn_file_actions_t (80 on x86-64 glibc), posix_spawnattr_t (336) and sigset_t (128).
    /// The buffers are over-sized so that a larger layout on another architecture still fits.
    /// </summary>
    public const int FileActionsSize = 256;
    public const int SpawnAttrSize = 1024;
    public const int SigSetSize = 256;

    // The posix_spawn family returns an error number instead of setting errno, so SetLastError is not used for them.

    [LibraryImport(Lib, EntryPoint = "posix_spawn")]
    public static partial int PosixSpawn(out int pid, nint path, nint fileActions, nint attr, nint argv, nint envp);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_init")]
    public static partial int FileActionsInit(nint actions);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_destroy")]
    public static partial int FileActionsDestroy(nint actions);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_adddup2")]
    public static partial int FileActionsAddDup2(nint actions, int fd, int newFd);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_addopen", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int FileActionsAddOpen(nint actions, int fd, string path, int flags, uint mode);

    /// <summary>glibc 2.34+: closes every descriptor from <paramref name="lowFd"/> up in the child.</summary>
    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_addclosefrom_np")]
    public static partial int FileActionsAddCloseFrom(nint actions, int lowFd);

    /// <summary>glibc 2.29+: chdir in the child before exec.</summary>
    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_addchdir_np", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int FileActionsAddChdir(nint actions, string path);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_init")]
    public static partial int SpawnAttrInit(nint attr);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_destroy")]
    public static partial int SpawnAttrDestroy(nint attr);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setflags")]
    public static partial int SpawnAttrSetFlags(nint attr, short flags);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setsigmask")]
    public static partial int SpawnAttrSetSigMask(nint attr, nint sigset);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setsigdefault")]
    public static partial int SpawnAttrSetSigDefault(nint attr, nint sigset);

    [LibraryImport(Lib, EntryPoint = "sigemptyset", SetLastError = true)]
    public static partial int SigEmptySet(nint set);

    [LibraryImport(Lib, EntryPoint = "sigfillset", SetLastError = true)]
    public static partial int SigFillSet(nint set);

    /// <summary>The address of the C library's <c>environ</c> array, so the daemon gets exactly the launcher's environment.</summary>
    public static nint Environ()
    {
        var libc = NativeLibrary.Load("libc.so.6");
        var variable = NativeLibrary.GetExport(libc, "environ");
        return Marshal.ReadIntPtr(variable);
    }
}
