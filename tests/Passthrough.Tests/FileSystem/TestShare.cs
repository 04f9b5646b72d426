using System.Text;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>A temporary host directory under /tmp served by a <see cref="PassthroughFileSystem"/>.</summary>
internal sealed class TestShare : IDisposable
{
    public TestShare(Action<ShareSettings>? configure = null, bool fileHandles = true)
    {
        Dir = Path.Combine("/tmp", "pt-fs-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Dir);
        var options = ShareVocabulary.Defaults();
        options.SharedDir = Dir;
        configure?.Invoke(options);
        Settings = new LiveSettings(options);
        Fs = new PassthroughFileSystem(Settings, NullLogger.Instance, fileHandles);
        Fs.Init((InitFlags)ulong.MaxValue);
    }

    public string Dir { get; }
    public LiveSettings Settings { get; }
    public PassthroughFileSystem Fs { get; }

    public static FuseContext Root => new(new RequestId(1), 0, 0, 1);

    public static FuseContext As(uint uid, uint gid) => new(new RequestId(1), uid, gid, 1);

    public static byte[] N(string name) => Encoding.UTF8.GetBytes(name);

    public string HostPath(string relative) => Path.Combine(Dir, relative);

    public EntryOut Lookup(NodeId parent, string name)
    {
        var r = Fs.Lookup(Root, parent, N(name));
        Assert.True(r.IsOk, $"lookup {name}: {r}");
        return r.Value;
    }

    /// <summary>Walks a '/'-separated path from the root, one LOOKUP per component.</summary>
    public NodeId Walk(string path)
    {
        var node = NodeId.Root;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries)) node = new NodeId(Lookup(node, part).Nodeid);
        return node;
    }

    public ulong OpenFile(NodeId node, int flags)
    {
        var r = Fs.Open(Root, node, new OpenIn { Flags = (uint)flags });
        Assert.True(r.IsOk, $"open: {r}");
        return r.Value.Fh;
    }

    public byte[] ReadAll(NodeId node, ulong fh, int size = 65536)
    {
        var buffer = new byte[size];
        var r = Fs.Read(Root, node, new ReadIn { Fh = fh, Offset = 0, Size = (uint)size }, buffer);
        Assert.True(r.IsOk, $"read: {r}");
        return buffer[..r.Value];
    }

    public void Dispose()
    {
        Fs.Dispose();
        try
        {
            foreach (var file in Directory.EnumerateFileSystemEntries(Dir, "*", SearchOption.AllDirectories))
            {
                try { File.SetAttributes(file, FileAttributes.Normal); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// Path calls the tests use to prepare the host directory and to compare errnos with a local one, made with the
/// daemon's own *at calls: relative to the working directory (as the path calls are), or to nothing for an absolute path.
/// </summary>
internal static class Host
{
    private static readonly SafeFd WorkingDirectory = new(Libc.open(".", Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0));

    /// <summary>The path NUL-terminated, as the *at calls take it.</summary>
    private static byte[] Z(string path) => Encoding.UTF8.GetBytes(path + "\0");

    public static int mkfifo(string path, uint mode) => Libc.mknodat(WorkingDirectory, Z(path), Libc.S_IFIFO | mode, 0);

    public static int mknod(string path, uint mode, ulong dev) => Libc.mknodat(WorkingDirectory, Z(path), mode, dev);

    public static int chown(string path, uint uid, uint gid) => Libc.fchownat(WorkingDirectory, Z(path), uid, gid, 0);

    public static int chmod(string path, uint mode) => Libc.fchmodat(Libc.AT_FDCWD, Z(path), mode, 0);

    public static int rmdir(string path) => Libc.unlinkat(WorkingDirectory, Z(path), Libc.AT_REMOVEDIR);

    public static int unlink(string path) => Libc.unlinkat(WorkingDirectory, Z(path), 0);

    public static int mkdir(string path, uint mode) => Libc.mkdirat(WorkingDirectory, Z(path), mode);

    public static int rename(string from, string to) => Libc.renameat2(WorkingDirectory, Z(from), WorkingDirectory, Z(to), 0);

    public static int link(string from, string to) => Libc.linkat(Libc.AT_FDCWD, Z(from), WorkingDirectory, Z(to), 0);

    public static int open(string path, int flags, uint mode) => Libc.open(path, flags, mode);

    public static int close(int fd) => Libc.close(fd);

    public static nint getxattr(string path, string name, Span<byte> value) => Libc.getxattr(Z(path), Z(name), value, (nuint)value.Length);

    public static int setxattr(string path, string name, ReadOnlySpan<byte> value, int flags) => Libc.setxattr(Z(path), Z(name), value, (nuint)value.Length, flags);

    public static nint listxattr(string path, Span<byte> list) => Libc.listxattr(Z(path), list, (nuint)list.Length);

    public static int removexattr(string path, string name) => Libc.removexattr(Z(path), Z(name));

    public static int Errno() => Libc.LastErrno;

    /// <summary>mode (with type bits), uid, gid of a host path, not following a symlink.</summary>
    public static (uint Mode, uint Uid, uint Gid) Stat(string path)
    {
        Assert.Equal(0, Libc.fstatat(Libc.AT_FDCWD, Z(path), out var st, Libc.AT_SYMLINK_NOFOLLOW));
        return (st.Mode, st.Uid, st.Gid);
    }

    /// <summary>The inode number of a host path.</summary>
    public static ulong Ino(string path)
    {
        Assert.Equal(0, Libc.fstatat(Libc.AT_FDCWD, Z(path), out var st, Libc.AT_SYMLINK_NOFOLLOW));
        return st.Ino;
    }

    public static bool IsRoot => Libc.geteuid() == 0;
}
