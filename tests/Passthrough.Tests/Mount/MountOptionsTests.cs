using System.Diagnostics;
using Hypervisor.Interop;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// virtiofsd's options as the host kernel sees them through /dev/fuse: --inode-file-handles (how a node is found
/// again once its descriptor is gone), --preserve-noatime, --no-readdirplus and --allow-mmap. Runs with the dentry
/// cache tests (<see cref="HostDentryCacheCollection"/>): the handle tests rely on the kernel keeping their nodes.
/// </summary>
[Trait("Category", "Root")]
[Collection("Host dentry cache")]
public sealed class MountOptionsTests
{
    private static int OpenDescriptors(int pid) => Directory.GetFiles($"/proc/{pid}/fd").Length;

    private static string Python(string script, params string[] args) => FsOpsScript.Run(TimeSpan.FromSeconds(60), ["-c", script, .. args]);

    // Holds an O_PATH descriptor of the mounted directory d (so its node stays known), renames d on the host side,
    // looks up 300 other names (the fd cache of 16 evicts d's descriptor), then looks up d/x through the held
    // descriptor: a LOOKUP on d's node, which the daemon must reopen without a path.
    private const string RenamedParent = """
import os, sys
mnt, src = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(mnt, "d"), os.O_PATH | os.O_DIRECTORY)
os.rename(os.path.join(src, "d"), os.path.join(src, "moved"))
for i in range(300):
    os.stat(os.path.join(mnt, "many", "f%d" % i))
st = os.stat("x", dir_fd=fd, follow_symlinks=False)
print(st.st_size, sorted(os.listdir(os.path.join(mnt, "moved"))))
""";

    [Theory]
    [InlineData("never")]
    [InlineData("prefer")]
    [InlineData("mandatory")]
    public void ANodeStillResolves_AfterItsDescriptorWasEvicted_AndItsDirectoryRenamedOnTheHost(string mode)
    {
        using var share = MountedShare.Start("--inode-file-handles=" + mode, "--fd-cache-size", "16", "--cache", "never");
        Directory.CreateDirectory(Path.Combine(share.Source, "d"));
        File.WriteAllText(Path.Combine(share.Source, "d", "x"), "12345");
        Directory.CreateDirectory(Path.Combine(share.Source, "many"));
        for (var i = 0; i < 300; i++) File.WriteAllBytes(Path.Combine(share.Source, "many", $"f{i}"), []);
        var output = Python(RenamedParent, share.MountPoint, share.Source).Trim();
        Assert.Equal("5 ['x']", output);
    }

    [Fact]
    public void Never_PinsADescriptorPerKnownInode_PreferAndMandatoryDoNot()
    {
        const int files = 600;
        foreach (var (mode, pins) in new[] { ("never", true), ("prefer", false), ("mandatory", false) })
        {
            using var share = MountedShare.Start("--inode-file-handles=" + mode, "--fd-cache-size", "64");
            var dir = Path.Combine(share.Source, "many");
            Directory.CreateDirectory(dir);
            for (var i = 0; i < files; i++) File.WriteAllBytes(Path.Combine(dir, $"f{i}"), []);
            var before = OpenDescriptors(share.Pid);
            var mounted = Path.Combine(share.MountPoint, "many");
            for (var i = 0; i < files; i++) Assert.True(File.Exists(Path.Combine(mounted, $"f{i}")));
            var grown = OpenDescriptors(share.Pid) - before;
            if (pins) Assert.True(grown >= files, $"{mode}: {grown} more descriptors after {files} lookups; never keeps one per inode");
            else Assert.True(grown < 200, $"{mode}: {grown} more descriptors after {files} lookups; handles must not keep one per inode");
        }
    }

    [Fact]
    public void Mandatory_RefusesAnInodeWithoutAFileHandle_PreferFallsBack()
    {
        // procfs has no file handles: with mandatory its mount inside the share cannot be looked up (EOPNOTSUPP, as
        // virtiofsd answers), with prefer it is reached through a pinned descriptor.
        foreach (var (mode, reachable) in new[] { ("mandatory", false), ("prefer", true) })
        {
            using var share = MountedShare.Start("--inode-file-handles=" + mode);
            var proc = Path.Combine(share.Source, "p");
            Directory.CreateDirectory(proc);
            Assert.Equal(0, Libc.mount("proc", proc, "proc", 0, null));
            try
            {
                var result = Python("""
import os, sys
try:
    os.stat(os.path.join(sys.argv[1], "p", "self"), follow_symlinks=False)
    print("ok")
except OSError as e:
    print(e.errno)
""", share.MountPoint).Trim();
                Assert.Equal(reachable ? "ok" : "95", result);
                Assert.True(share.DaemonAlive);
            }
            finally
            {
                Libc.umount2(proc, Libc.MNT_DETACH);
            }
        }
    }

    [Fact]
    public async Task Mandatory_OnAShareWithoutFileHandles_FailsAtStart_WithTheOptionNamed()
    {
        var dir = Directory.CreateTempSubdirectory("pt-nohandles-").FullName;
        var proc = Path.Combine(dir, "proc");
        var mnt = Path.Combine(dir, "mnt");
        Directory.CreateDirectory(proc);
        Directory.CreateDirectory(mnt);
        Assert.Equal(0, Libc.mount("proc", proc, "proc", 0, null));
        try
        {
            var (file, prefix) = DaemonExecutable.Locate();
            var info = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in (string[])[.. prefix, "--shared-dir", Path.Combine(proc, "sys"), "--sandbox", "none", "--mount", mnt, "--inode-file-handles=mandatory"])
                info.ArgumentList.Add(a);
            using var daemon = Process.Start(info)!;
            var stderrRead = daemon.StandardError.ReadToEndAsync();
            if (!daemon.WaitForExit(30_000))
            {
                daemon.Kill();
                Assert.Fail("the daemon started on a share without file handles");
            }
            var stderr = await stderrRead;
            Assert.NotEqual(0, daemon.ExitCode);
            Assert.Contains("--inode-file-handles=mandatory: the filesystem of the shared directory", stderr);
            Assert.Contains("has no file handles; use --inode-file-handles=prefer or never.", stderr);
        }
        finally
        {
            Libc.umount2(proc, Libc.MNT_DETACH);
            Directory.Delete(dir, recursive: true);
        }
    }

    private const string ReadWithNoatime = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOATIME)
os.read(fd, 10)
os.close(fd)
""";

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ONoatime_IsClearedByDefault_AndKeptWithPreserveNoatime(bool preserve)
    {
        using var share = preserve ? MountedShare.Start("--preserve-noatime") : MountedShare.Start();
        var path = Path.Combine(share.Source, "f");
        File.WriteAllText(path, "content");
        // An atime older than the mtime: relatime updates it on the next read, unless the read is O_NOATIME.
        var old = DateTime.UtcNow.AddDays(-3);
        File.SetLastAccessTimeUtc(path, old);
        Python(ReadWithNoatime, Path.Combine(share.MountPoint, "f"));
        var atime = File.GetLastAccessTimeUtc(path);
        if (preserve) Assert.Equal(old, atime);
        else Assert.True(atime > old.AddDays(2), $"the host atime stayed {atime:O}: the daemon kept O_NOATIME");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NoReaddirplus_ListsWithReaddirOnly(bool off)
    {
        using var share = off ? MountedShare.StartWithControl("--no-readdirplus") : MountedShare.StartWithControl();
        for (var i = 0; i < 20; i++) File.WriteAllText(Path.Combine(share.Source, $"f{i}"), "x");
        using var control = ControlClient.WhenServing(share.ControlSocket);
        Python("""
import os, sys
for name in os.listdir(sys.argv[1]):
    os.lstat(os.path.join(sys.argv[1], name))
""", share.MountPoint);
        var status = control.GetStatus();
        ulong Count(uint opcode) => status.Opcodes.FirstOrDefault(o => o.Opcode == opcode)?.Requests ?? 0;
        const uint readdir = 28, readdirplus = 44;
        if (off)
        {
            Assert.Equal(0ul, Count(readdirplus));
            Assert.True(Count(readdir) > 0, "no READDIR was served");
        }
        else Assert.True(Count(readdirplus) > 0, "no READDIRPLUS was served");
        Assert.Equal(20, Directory.GetFiles(share.MountPoint).Length);
    }

    private const string SharedMap = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
except OSError as e:
    print(e.errno)
    sys.exit(0)
m[0:5] = b"HELLO"
m.flush()
m.close()
print("mapped")
""";

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AllowMmap_LetsFilesOpenedWithDirectIoBeMappedShared(bool allow)
    {
        using var share = allow ? MountedShare.Start("--direct-io", "--allow-mmap") : MountedShare.Start("--direct-io");
        var path = Path.Combine(share.Source, "f");
        File.WriteAllBytes(path, new byte[4096]);
        var result = Python(SharedMap, Path.Combine(share.MountPoint, "f")).Trim();
        if (allow)
        {
            Assert.Equal("mapped", result);
            Assert.Equal("HELLO"u8.ToArray(), File.ReadAllBytes(path)[..5]);
        }
        else Assert.Equal("19", result); // ENODEV: the kernel refuses a shared map of a direct-I/O file
    }
}
