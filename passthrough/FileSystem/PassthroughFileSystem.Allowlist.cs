using System.Text;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// The allowlist applied to every operation, not only to LOOKUP and READDIR. A share-relative path is
/// <see cref="Reach.Inside"/> an allowed path (the path or below it), on the <see cref="Reach.PathOnly"/> way down to
/// one (a strict ancestor, the share root among them), or <see cref="Reach.Hidden"/>.
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
    private enum Reach
    {
        Hidden,
        PathOnly,
        Inside,
    }

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

    /// <summary>An allowlist with its paths as UTF-8 bytes, rebuilt when the operator replaces the allowlist.</summary>
    private sealed class AllowlistBytes(Allowlist list)
    {
        public readonly Allowlist List = list;
        public readonly byte[][] Paths = list.Paths.Select(Encoding.UTF8.GetBytes).ToArray();
    }

    private volatile AllowlistBytes? _allowlistBytes;
    private byte[]? _rootPathBytes;

    private AllowlistBytes? CurrentAllowlist()
    {
        var list = _settings.Allowlist;
        if (list is null) return null;
        var cached = _allowlistBytes;
        if (cached is not null && ReferenceEquals(cached.List, list)) return cached;
        cached = new AllowlistBytes(list);
        _allowlistBytes = cached;
        return cached;
    }

    private static Reach Classify(AllowlistBytes allow, ReadOnlySpan<byte> relative)
    {
        var reach = Reach.Hidden;
        foreach (var allowed in allow.Paths)
        {
            if (IsSameOrBelow(relative, allowed)) return Reach.Inside;
            if (relative.IsEmpty || IsSameOrBelow(allowed, relative)) reach = Reach.PathOnly;
        }
        return reach;
    }

    private static bool IsSameOrBelow(ReadOnlySpan<byte> path, ReadOnlySpan<byte> root) =>
        !root.IsEmpty && path.StartsWith(root) && (path.Length == root.Length || path[root.Length] == (byte)'/');

    /// <summary>
    /// Writes the share-relative path of the inode behind <paramref name="fd"/> into <paramref name="destination"/>
    /// (<see cref="PathMax"/> bytes): its length, 0 for the root, or -1 when it lies outside the share or is deleted.
    /// </summary>
    private int RelativePathBytes(SafeFd fd, Span<byte> destination)
    {
        var added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            Span<byte> proc = stackalloc byte[ProcPath.Size];
            var n = (int)Libc.readlinkat(Libc.AT_FDCWD, ProcPath.Format(fd.Value, proc), destination, (nuint)destination.Length);
            if (n <= 0 || n >= destination.Length) return -1;
            var root = _rootPathBytes ??= Encoding.UTF8.GetBytes(_rootPath);
            var full = destination[..n];
            if (full.SequenceEqual(root)) return 0;
            // The share root "/" is its own prefix; any other root is followed by '/'.
            var prefix = root.Length == 1 ? 1 : root.Length + 1;
            if (n <= prefix || !full.StartsWith(root) || (root.Length > 1 && full[root.Length] != (byte)'/')) return -1;
            full[prefix..].CopyTo(destination);
            return n - prefix;
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    /// <summary>ENOENT when the allowlist hides the node behind <paramref name="fd"/> (refused at use).</summary>
    private Errno CheckReach(SafeFd fd)
    {
        var allow = CurrentAllowlist();
        if (allow is null) return Errno.Ok;
        Span<byte> path = stackalloc byte[PathMax];
        var n = RelativePathBytes(fd, path);
        return n < 0 || Classify(allow, path[..n]) == Reach.Hidden ? Errno.ENOENT : Errno.Ok;
    }

    /// <summary>
    /// Checks <paramref name="name"/> below the directory <paramref name="dirFd"/> for an operation that uses it as
    /// <paramref name="use"/> says (see the class summary for the answers).
    /// </summary>
    private Errno CheckChild(SafeFd dirFd, ReadOnlySpan<byte> name, ChildUse use)
    {
        var allow = CurrentAllowlist();
        if (allow is null || IsDots(name)) return Errno.Ok;
        Span<byte> path = stackalloc byte[PathMax];
        var n = RelativePathBytes(dirFd, path);
        if (n < 0) return Errno.ENOENT;
        var parent = Classify(allow, path[..n]);
        if (parent == Reach.Inside) return Errno.Ok;
        if (parent == Reach.Hidden) return Errno.ENOENT;

        var child = Reach.Hidden;
        var length = n == 0 ? name.Length : n + 1 + name.Length;
        if (length < path.Length)
        {
            if (n > 0) path[n++] = (byte)'/';
            name.CopyTo(path[n..]);
            child = Classify(allow, path[..length]);
        }
        if (use == ChildUse.Existing) return child == Reach.Hidden ? Errno.ENOENT : Errno.Ok;
        if (child == Reach.Hidden) return use == ChildUse.Exchange ? Errno.ENOENT : Errno.EACCES;
        // A visible name in a path-only directory: what exists keeps its answers, nothing new is made.
        Span<byte> nameBuffer = stackalloc byte[MaxName + 1];
        if (Libc.fstatat(dirFd, CString(name, nameBuffer), out _, Libc.AT_SYMLINK_NOFOLLOW) == 0) return Errno.Ok;
        return use == ChildUse.Exchange ? Errno.ENOENT : Errno.EACCES;
    }
}
