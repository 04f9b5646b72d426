using System.Security.Cryptography;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// The allowlist set over the control service, through the /dev/fuse mount: every operation that names a child is
/// tried against a hidden name and in a directory that is only the path down to an allowed one, and the host's files
/// are compared before and after; then a path is removed from the allowlist while the mount holds it cached and open.
/// </summary>
[Trait("Category", "Root")]
public sealed class MountAllowlistTests
{
    /// <summary>Each operation and its result ("ok" or the errno's name), one per line.</summary>
    internal const string OperationsScript = """
import ctypes, errno, os, sys
base = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
def p(*parts):
    return os.path.join(base, *parts)
def run(name, call):
    try:
        r = call()
        if r is not None and r < 0:
            raise OSError(ctypes.get_errno(), "")
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
def opens(path, flags):
    return lambda: os.close(os.open(path, flags, 0o644))
def renameat2(old, new, flags):
    return lambda: libc.renameat2(-100, old.encode(), -100, new.encode(), flags)
R = os.O_RDONLY; W = os.O_WRONLY; C = os.O_CREAT
run("open-hidden", opens(p("secret"), R))
run("open-creat-hidden", opens(p("secret"), R | C))
run("append-creat-hidden", opens(p("secret"), W | os.O_APPEND | C))
run("excl-creat-hidden", opens(p("secret"), W | C | os.O_EXCL))
run("creat-new-in-path-dir", opens(p("newfile"), W | C))
run("mkdir-new-in-path-dir", lambda: os.mkdir(p("newdir")))
run("mkdir-hidden", lambda: os.mkdir(p("secret")))
run("mkdir-visible-existing", lambda: os.mkdir(p("photos")))
run("symlink-new-in-path-dir", lambda: os.symlink("photos", p("lnk")))
run("symlink-hidden", lambda: os.symlink("photos", p("secret")))
run("link-new-in-path-dir", lambda: os.link(p("photos", "a.jpg"), p("hard")))
run("link-over-hidden", lambda: os.link(p("photos", "a.jpg"), p("secret")))
run("mknod-new-in-path-dir", lambda: os.mkfifo(p("fifo")))
run("mknod-hidden", lambda: os.mkfifo(p("secret")))
run("unlink-hidden", lambda: os.unlink(p("secret")))
run("rmdir-hidden", lambda: os.rmdir(p("secretdir")))
run("unlink-below-hidden", lambda: os.unlink(p("secretdir", "inner")))
run("rename-hidden-source", lambda: os.rename(p("secret"), p("photos", "s")))
run("rename-over-hidden", lambda: os.rename(p("photos", "a.jpg"), p("secret")))
run("rename-to-new-in-path-dir", lambda: os.rename(p("photos", "a.jpg"), p("moved")))
run("exchange-with-hidden", renameat2(p("photos", "a.jpg"), p("secret"), 2))
run("noreplace-over-hidden", renameat2(p("photos", "a.jpg"), p("secret"), 1))
run("creat-in-nested-path-dir", opens(p("docs", "new.txt"), W | C))
run("open-hidden-in-nested-path-dir", opens(p("docs", "private.txt"), R))
run("mkdir-in-nested-path-dir", lambda: os.mkdir(p("docs", "d")))
run("rename-out-of-allowed", lambda: os.rename(p("docs", "pub", "p.txt"), p("docs", "p2")))
run("setxattr-hidden", lambda: os.setxattr(p("secret"), "user.x", b"1"))
run("tmpfile-in-path-dir", opens(base, W | os.O_TMPFILE))
run("creat-in-allowed", opens(p("photos", "new.jpg"), W | C))
run("mkdir-in-allowed", lambda: os.mkdir(p("photos", "sub")))
run("creat-in-nested-allowed", opens(p("docs", "pub", "q.txt"), W | C))
print("list-root", ",".join(sorted(os.listdir(base))))
print("list-docs", ",".join(sorted(os.listdir(p("docs")))))
""";

    /// <summary>The share's layout: photos and docs/pub allowed, the rest hidden.</summary>
    internal static void CreateLayout(string root)
    {
        Directory.CreateDirectory(Path.Combine(root, "photos"));
        File.WriteAllText(Path.Combine(root, "photos", "a.jpg"), "A");
        File.WriteAllText(Path.Combine(root, "secret"), "S");
        Directory.CreateDirectory(Path.Combine(root, "secretdir"));
        File.WriteAllText(Path.Combine(root, "secretdir", "inner"), "I");
        Directory.CreateDirectory(Path.Combine(root, "docs", "pub"));
        File.WriteAllText(Path.Combine(root, "docs", "pub", "p.txt"), "P");
        File.WriteAllText(Path.Combine(root, "docs", "private.txt"), "X");
    }

    /// <summary>What every operation must answer (a name hidden behaves as absent; nothing new in a path-only directory).</summary>
    internal static readonly string[] Expected =
    [
        "open-hidden ENOENT", "open-creat-hidden EACCES", "append-creat-hidden EACCES", "excl-creat-hidden EACCES",
        "creat-new-in-path-dir EACCES", "mkdir-new-in-path-dir EACCES", "mkdir-hidden EACCES", "mkdir-visible-existing EEXIST",
        "symlink-new-in-path-dir EACCES", "symlink-hidden EACCES", "link-new-in-path-dir EACCES", "link-over-hidden EACCES",
        "mknod-new-in-path-dir EACCES", "mknod-hidden EACCES", "unlink-hidden ENOENT", "rmdir-hidden ENOENT",
        "unlink-below-hidden ENOENT", "rename-hidden-source ENOENT", "rename-over-hidden EACCES",
        "rename-to-new-in-path-dir EACCES", "exchange-with-hidden ENOENT", "noreplace-over-hidden EACCES",
        "creat-in-nested-path-dir EACCES", "open-hidden-in-nested-path-dir ENOENT", "mkdir-in-nested-path-dir EACCES",
        "rename-out-of-allowed EACCES", "setxattr-hidden ENOENT", "tmpfile-in-path-dir ENOTSUP", // TMPFILE is not served (EOPNOTSUPP, which Python names ENOTSUP)
        "creat-in-allowed ok", "mkdir-in-allowed ok", "creat-in-nested-allowed ok",
        "list-root docs,photos", "list-docs pub",
    ];

    [Fact]
    public void EveryOperationOnAHiddenNameOrInAPathOnlyDirectory_IsRefused_AndTheHostIsUnchanged()
    {
        using var share = MountedShare.StartWithControl("--xattr");
        CreateLayout(share.Source);
        using (var control = new ControlClient(share.ControlSocket))
        {
            control.AddAllowedPath("photos");
            control.AddAllowedPath("docs/pub");
            control.SetAllowlistEnabled(true);
        }
        var before = Snapshot(share.Source);
        var lines = FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", OperationsScript, share.MountPoint).Trim().Split('\n');
        Assert.Equal(Expected, lines);

        var after = Snapshot(share.Source);
        // Only what the allowed operations made is new; everything else is byte for byte as it was.
        foreach (var made in new[] { "photos/new.jpg", "photos/sub/", "docs/pub/q.txt" })
            Assert.True(after.Remove(made), $"{made} was not created on the host");
        Assert.Equal(before, after);
    }

    /// <summary>
    /// With cache always the kernel keeps the name and its attributes: removing the path from the allowlist must still
    /// refuse the next OPEN and SETXATTR of that cached node (checked at use), while a descriptor opened before keeps
    /// reading, as after a chmod on a local filesystem.
    /// </summary>
    [Fact]
    public void APathRemovedFromTheAllowlist_IsRefusedForANameTheKernelHoldsCachedAndOpen()
    {
        using var share = MountedShare.StartWithControl("--xattr", "--cache", "always");
        File.WriteAllText(Path.Combine(share.Source, "keep.txt"), "K");
        Directory.CreateDirectory(Path.Combine(share.Source, "photos"));
        using var control = new ControlClient(share.ControlSocket);
        control.AddAllowedPath("photos");
        control.AddAllowedPath("keep.txt");
        control.SetAllowlistEnabled(true);

        var path = Path.Combine(share.MountPoint, "keep.txt");
        using var held = new FileStream(path, FileMode.Open, FileAccess.Read);
        Assert.True(File.Exists(path));
        control.RemoveAllowedPath("keep.txt");

        const string script = """
import errno, os, sys
def run(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
run("open", lambda: os.close(os.open(sys.argv[1], os.O_RDONLY)))
run("setxattr", lambda: os.setxattr(sys.argv[1], "user.x", b"1"))
run("chmod", lambda: os.chmod(sys.argv[1], 0o600))
""";
        var lines = FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", script, path).Trim().Split('\n');
        Assert.Equal(["open ENOENT", "setxattr ENOENT", "chmod ENOENT"], lines);
        var buffer = new byte[1];
        Assert.Equal(1, held.Read(buffer));
        Assert.Equal((byte)'K', buffer[0]);
        Assert.Equal("K", File.ReadAllText(Path.Combine(share.Source, "keep.txt")));
    }

    /// <summary>Every path below <paramref name="root"/> with its mode and a hash of its content ("dir/" for directories).</summary>
    internal static Dictionary<string, string> Snapshot(string root)
    {
        var result = new Dictionary<string, string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(root, entry);
            var info = new FileInfo(entry);
            if (Directory.Exists(entry) && !info.Attributes.HasFlag(FileAttributes.ReparsePoint))
                result[relative + "/"] = File.GetUnixFileMode(entry).ToString();
            else
                result[relative] = File.GetUnixFileMode(entry) + " " + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(entry)));
        }
        return result;
    }
}
