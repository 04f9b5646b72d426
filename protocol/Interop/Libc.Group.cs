using System.Globalization;
using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>Group names, and the owner and mode of a path (the vhost-user socket's group, --socket-group).</summary>
internal static partial class Libc
{
    /// <summary><c>getgrnam(3)</c>: a <c>struct group</c> in static storage, or null when there is no such group.</summary>
    [LibraryImport(Name, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint getgrnam(string name);

    /// <summary><c>chown(2)</c>; uint.MaxValue leaves an id as it is.</summary>
    [LibraryImport(Name, EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int chown(string path, uint owner, uint group);

    /// <summary><c>chmod(2)</c>.</summary>
    [LibraryImport(Name, EntryPoint = "chmod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int chmod(string path, uint mode);

    /// <summary>
    /// The gid of the group named <paramref name="group"/> (through NSS, as getgrnam(3)), or of a decimal gid; null
    /// when there is no such group. Call it before a seccomp filter is loaded: NSS may open files and libraries.
    /// </summary>
    internal static uint? GroupId(string group)
    {
        if (uint.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out var gid)) return gid;
        var entry = getgrnam(group);
        if (entry == 0) return null;
        // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; char **gr_mem; }: gr_gid follows two pointers.
        return (uint)Marshal.ReadInt32(entry, 2 * nint.Size);
    }
}
