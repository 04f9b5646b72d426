using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// posix_spawn(3) with file actions and attributes, which .NET's Process does not offer (a new session, a chosen
/// descriptor set). The posix_spawn family returns an error number instead of setting errno, so SetLastError is not
/// used for it. The opaque glibc types live in native memory the caller allocates with the sizes below.
/// </summary>
internal static partial class Libc
{
    /// <summary>glibc's posix_spawnattr flags (spawn.h).</summary>
    internal const short POSIX_SPAWN_SETSIGDEF = 0x04;
    internal const short POSIX_SPAWN_SETSIGMASK = 0x08;
    internal const short POSIX_SPAWN_SETSID = 0x80;

    /// <summary>
    /// Bytes reserved for posix_spawn_file_actions_t (80 on x86_64 glibc), posix_spawnattr_t (336) and sigset_t (128).
    /// The buffers are over-sized so that a larger layout on another architecture still fits.
    /// </summary>
    internal const int FileActionsSize = 256;
    internal const int SpawnAttrSize = 1024;
    internal const int SigSetSize = 256;

    [LibraryImport(Name)]
    internal static partial int posix_spawn(out int pid, nint path, nint fileActions, nint attr, nint argv, nint envp);

    [LibraryImport(Name)]
    internal static partial int posix_spawn_file_actions_init(nint actions);

    [LibraryImport(Name)]
    internal static partial int posix_spawn_file_actions_destroy(nint actions);

    [LibraryImport(Name)]
    internal static partial int posix_spawn_file_actions_adddup2(nint actions, int fd, int newFd);

    [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int posix_spawn_file_actions_addopen(nint actions, int fd, string path, int flags, uint mode);

    /// <summary>glibc 2.34+: closes every descriptor from <paramref name="lowFd"/> up in the child.</summary>
    [LibraryImport(Name)]
    internal static partial int posix_spawn_file_actions_addclosefrom_np(nint actions, int lowFd);

    /// <summary>glibc 2.29+: chdir in the child before exec.</summary>
    [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int posix_spawn_file_actions_addchdir_np(nint actions, string path);

    [LibraryImport(Name)]
    internal static partial int posix_spawnattr_init(nint attr);

    [LibraryImport(Name)]
    internal static partial int posix_spawnattr_destroy(nint attr);

    [LibraryImport(Name)]
    internal static partial int posix_spawnattr_setflags(nint attr, short flags);

    [LibraryImport(Name)]
    internal static partial int posix_spawnattr_setsigmask(nint attr, nint sigset);

    [LibraryImport(Name)]
    internal static partial int posix_spawnattr_setsigdefault(nint attr, nint sigset);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int sigemptyset(nint set);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int sigfillset(nint set);

    /// <summary>A zeroed block of native memory for an opaque posix_spawn type or an argv array; freed with <see cref="FreeSpawnBlock"/>.</summary>
    internal static unsafe nint AllocSpawnBlock(nuint bytes)
    {
        // Safe: only allocates; the block is handed out as an address that only the C library dereferences.
        return (nint)NativeMemory.AllocZeroed(bytes);
    }

    /// <summary>Frees a block of <see cref="AllocSpawnBlock"/>, once nothing refers to it; 0 is accepted and ignored.</summary>
    internal static unsafe void FreeSpawnBlock(nint block)
    {
        // Safe: block is 0 or came from AllocSpawnBlock, and the caller frees it once, after posix_spawn returned.
        NativeMemory.Free((void*)block);
    }

    /// <summary>The C library's <c>environ</c> array, so that a child gets exactly this process's environment.</summary>
    internal static nint Environ()
    {
        var libc = NativeLibrary.Load("libc.so.6");
        var variable = NativeLibrary.GetExport(libc, "environ");
        return Marshal.ReadIntPtr(variable);
    }
}
