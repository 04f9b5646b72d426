using Hypervisor.Interop;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// The allowlist applied to every operation, not only to LOOKUP and READDIR. A share-relative path is
/// <see cref="AllowlistReach.Inside"/> an allowed path (the path or below it), on the <see cref="AllowlistReach.PathOnly"/>
/// way down to one (a strict ancestor, the share root among them), or <see cref="AllowlistReach.Hidden"/>.
/// <list type="bullet">
/// <item>A node is checked at every use (<see cref="CheckReach"/>, from <c>Acquire</c>): a path removed from the
/// allowlist is refused (ENOENT) for nodes the guest looked up before, as for new lookups. Open handles are not
/// revoked, as a descriptor survives a chmod on a local filesystem.</item>
/// <item>A hidden name behaves as absent: unlinking, removing or renaming it is ENOENT, and nothing can be created
/// over it (EACCES, the same whether it exists or not, so a refusal tells nothing about the host).</item>
/// <item>In a path-only directory nothing new can be created: EACCES, as in a directory without write permission.
/// Names that exist there and are visible keep their usual answers (EEXIST for mkdir, an open for CREATE without
/// O_EXCL).</item>
/// </list>
/// Paths are compared as UTF-8 bytes read from /proc/self/fd, so the checks allocate nothing per request.
/// </summary>
public sealed partial class PassthroughFileSystem
{
    /// <summary>How an operation uses the child name it is given.</summary>
    private enum ChildUse
    {
        /// <summary>The name must exist (UNLINK, RMDIR, RENAME's source).</summary>
        Existing,
        /// <summary>The name is made (CREATE, MKNOD, MKDIR, SYMLINK, LINK).</summary>
        Create,
        /// <summary>The name is made or replaced (RENAME's target).</summary>
        Replace,
        /// <summary>The name is swapped with the source, so it must exist (RENAME_EXCHANGE's target).</summary>
        Exchange,
    }

    /// <summary>
    /// Writes the share-relative path of the inode behind <paramref name="fd"/> (a descriptor the caller keeps open)
    /// into <paramref name="destination"/> (<see cref="PathMax"/> bytes): its length, 0 for the root, or -1 when it
    /// lies outside the share or is deleted.
    /// </summary>
    private int RelativePathBytes(int fd, Span<byte> destination)
    {
        Span<byte> proc = stackalloc byte[ProcPath.Size];
        var n = (int)Libc.readlinkat(Libc.AT_FDCWD, ProcPath.Format(fd, proc), destination, (nuint)destination.Length);
        if (n <= 0 || n >= destination.Length) return -1;
        var root = _rootPathBytes;
        var full = destination[..n];
        if (full.SequenceEqual(root)) return 0;
        // The share root "/" is its own prefix; any other root is followed by '/'.
        var prefix = root.Length == 1 ? 1 : root.Length + 1;
        if (n <= prefix || !full.StartsWith(root) || (root.Length > 1 && full[root.Length] != (byte)'/')) return -1;
        full[prefix..].CopyTo(destination);
        return n - prefix;
    }

    /// <summary>
    /// Appends '/' (unless <paramref name="length"/> is 0, the root) and <paramref name="name"/> to the relative path
    /// of <paramref name="length"/> bytes in <paramref name="path"/>; returns the new length, or -1 when it does not fit.
    /// </summary>
    private static int AppendChild(Span<byte> path, int length, ReadOnlySpan<byte> name)
    {
        var total = length == 0 ? name.Length : length + 1 + name.Length;
        if (total >= path.Length) return -1;
        if (length > 0) path[length++] = (byte)'/';
        name.CopyTo(path[length..]);
        return total;
    }

    /// <summary>ENOENT when the allowlist hides the node behind <paramref name="fd"/> (refused at use).</summary>
    private Errno CheckReach(int fd)
    {
        var allow = _settings.Allowlist;
        if (allow is null) return Errno.Ok;
        Span<byte> path = stackalloc byte[PathMax];
        var n = RelativePathBytes(fd, path);
        return n < 0 || !allow.Permits(path[..n]) ? Errno.ENOENT : Errno.Ok;
    }

    /// <summary>
    /// Checks <paramref name="name"/> below the directory <paramref name="dirFd"/> for an operation that uses it as
    /// <paramref name="use"/> says (see the class summary for the answers).
    /// </summary>
    private Errno CheckChild(SafeFd dirFd, ReadOnlySpan<byte> name, ChildUse use)
    {
        var allow = _settings.Allowlist;
        if (allow is null || IsDots(name)) return Errno.Ok;
        Span<byte> path = stackalloc byte[PathMax];
        var n = RelativePathBytes(dirFd.Value, path);
        if (n < 0) return Errno.ENOENT;
        var parent = allow.Classify(path[..n]);
        if (parent == AllowlistReach.Inside) return Errno.Ok;
        if (parent == AllowlistReach.Hidden) return Errno.ENOENT;

        var length = AppendChild(path, n, name);
        var child = length < 0 ? AllowlistReach.Hidden : allow.Classify(path[..length]);
        if (use == ChildUse.Existing) return child == AllowlistReach.Hidden ? Errno.ENOENT : Errno.Ok;
        if (child == AllowlistReach.Hidden) return use == ChildUse.Exchange ? Errno.ENOENT : Errno.EACCES;
        // A visible name in a path-only directory: what exists keeps its answers, nothing new is made.
        Span<byte> nameBuffer = stackalloc byte[MaxName + 1];
        if (Libc.fstatat(dirFd, CString(name, nameBuffer), out _, Libc.AT_SYMLINK_NOFOLLOW) == 0) return Errno.Ok;
        return use == ChildUse.Exchange ? Errno.ENOENT : Errno.EACCES;
    }
}
