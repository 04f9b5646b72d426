using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>The process's effective uid, and the calling thread's filesystem uid and gid.</summary>
internal static partial class Libc
{
    /// <summary><c>geteuid(2)</c>: cannot fail.</summary>
    [LibraryImport(Name)]
    internal static partial uint geteuid();

    /// <summary>
    /// <c>setfsuid(2)</c>: glibc calls the raw syscall, which changes only the calling thread's credentials (unlike
    /// setuid, which glibc broadcasts to every thread). Returns the previous fsuid whether or not the change was made,
    /// and never sets errno, so it is imported without SetLastError; <see cref="SetFsUid"/> checks the result.
    /// </summary>
    [LibraryImport(Name)]
    internal static partial int setfsuid(uint fsuid);

    /// <summary><c>setfsgid(2)</c>, per thread and reporting like <see cref="setfsuid"/>.</summary>
    [LibraryImport(Name)]
    internal static partial int setfsgid(uint fsgid);

    /// <summary>
    /// Sets the thread's fsuid and reports whether it now is <paramref name="fsuid"/>. setfsuid(2) returns the previous
    /// value even when it fails, so the check is a second call with -1, an invalid id: it changes nothing and returns
    /// the current fsuid (the method setfsuid(2) documents).
    /// </summary>
    internal static bool SetFsUid(uint fsuid)
    {
        _ = setfsuid(fsuid); // the previous fsuid, whether or not the change took: the second call tells
        return (uint)setfsuid(uint.MaxValue) == fsuid;
    }

    /// <summary>Sets the thread's fsgid and reports whether it now is <paramref name="fsgid"/>, as <see cref="SetFsUid"/> does.</summary>
    internal static bool SetFsGid(uint fsgid)
    {
        _ = setfsgid(fsgid); // the previous fsgid, whether or not the change took: the second call tells
        return (uint)setfsgid(uint.MaxValue) == fsgid;
    }
}
