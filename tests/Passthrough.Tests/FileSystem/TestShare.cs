using System.Runtime.InteropServices;
using System.Text;
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

/// <summary>Syscalls the tests use to prepare the host directory and to compare errnos with a local one.</summary>
internal static partial class Host
{
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkfifo(string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chown(string path, uint uid, uint gid);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chmod(string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rmdir(string path);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unlink(string path);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdir(string path, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rename(string from, string to);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int link(string from, string to);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc")]
    public static partial uint geteuid();

    public static int Errno() => Marshal.GetLastPInvokeError();

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int lstat(string path, Hypervisor.Passthrough.Interop.Stat* st);

    /// <summary>mode (with type bits), uid, gid of a host path, not following a symlink.</summary>
    public static (uint Mode, uint Uid, uint Gid) Stat(string path)
    {
        Hypervisor.Passthrough.Interop.Stat st;
        unsafe
        {
            // st is a local of the blittable struct stat; lstat writes at most sizeof(struct stat) into it.
            Assert.Equal(0, lstat(path, &st));
        }
        return (st.Mode, st.Uid, st.Gid);
    }

    /// <summary>The inode number of a host path.</summary>
    public static ulong Ino(string path)
    {
        Hypervisor.Passthrough.Interop.Stat st;
        unsafe
        {
            // st is a local of the blittable struct stat; lstat writes at most sizeof(struct stat) into it.
            Assert.Equal(0, lstat(path, &st));
        }
        return st.Ino;
    }

    public static bool IsRoot => geteuid() == 0;
}
