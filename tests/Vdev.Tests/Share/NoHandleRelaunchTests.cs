using System.Text;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;
using Xunit.Abstractions;
using Rig = Hypervisor.Vdev.Tests.Share.DaemonRelaunchTests.Rig;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// Crash recovery and planned restart of a share whose inodes have no file handles (vdev/README.md, "Surviving a
/// daemon crash"; passthrough/FileSystem/README.md, "Nodes without a file handle"): on a ramfs mount (made here and
/// unmounted at the end, so the test needs root) and with <c>--inode-file-handles=never</c>. The store names such nodes
/// by parent node and name; the new daemon reopens them so, and accepts an inode only when its dev/ino are the record's.
/// </summary>
[Trait("Category", "Root")]
public sealed class NoHandleRelaunchTests(ITestOutputHelper output) : IDisposable
{
    private const int Estale = 116;
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-nohandles-").FullName;
    private string? _ramfs;

    private (string Dir, string[] Args) Share(string kind)
    {
        if (kind == "never") return (_dir, ["--inode-file-handles", "never"]);
        _ramfs = Directory.CreateDirectory(Path.Combine(_dir, "ramfs")).FullName;
        var mount = HostProcesses.Run("mount", ["-t", "ramfs", "ramfs", _ramfs], TimeSpan.FromSeconds(20));
        Assert.True(mount.ExitCode == 0, $"mount -t ramfs: {mount}");
        return (_ramfs, []);
    }

    private static byte[] RenameRequest(ulong parent, string name, ulong newParent, string newName)
    {
        var body = new List<byte>(BitConverter.GetBytes(newParent));
        body.AddRange(Encoding.UTF8.GetBytes(name));
        body.Add(0);
        body.AddRange(Encoding.UTF8.GetBytes(newName));
        body.Add(0);
        return FuseFrames.Request(12 /* RENAME */, 0, parent, body.ToArray());
    }

    private static ulong LookupIn(Rig rig, ulong parent, string name)
    {
        var reply = rig.Call(FuseFrames.LookupRequest(0, parent, name));
        Assert.True(Rig.Error(reply) == 0, $"LOOKUP {name} in {parent}: errno {Rig.Error(reply)}\n{rig.Log}");
        return FuseFrames.ReadEntry(reply).NodeId;
    }

    private static ulong Size(Rig rig, ulong node)
    {
        var reply = rig.Call(FuseFrames.GetattrRequest(0, node));
        Assert.True(Rig.Error(reply) == 0, $"GETATTR {node}: errno {Rig.Error(reply)}\n{rig.Log}");
        return FuseFrames.ReadAttr(reply).Size;
    }

    private static void Signal(int pid, string signal) =>
        Assert.Equal(0, HostProcesses.Run("kill", ["-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(10)).ExitCode);

    /// <summary>
    /// A nested file opened, a file renamed through the share, a file the host renames (another file takes its name);
    /// then the daemon is SIGKILLed (the host's rename happens while it is down: the vdev is stopped meanwhile, so no
    /// new daemon can look first) or replaced by <c>vdev ctl restart</c> (the host renamed before it). The old node ids
    /// still name their files, the open handle still reads, the renamed file is found under its new name with its old
    /// node, and the host-renamed one answers ESTALE, never the other file's bytes.
    /// </summary>
    [Theory]
    [InlineData("ramfs", false)]
    [InlineData("never", false)]
    [InlineData("ramfs", true)]
    [InlineData("never", true)]
    public void NodesWithoutHandles_SurviveAKillOrARestart_ByParentAndName(string kind, bool planned)
    {
        var (dir, args) = Share(kind);
        var nested = DaemonRelaunchTests.Pattern(6000, 11);
        var moved = DaemonRelaunchTests.Pattern(3000, 12);
        var hostMoved = DaemonRelaunchTests.Pattern(2000, 13);
        var impostor = DaemonRelaunchTests.Pattern(2000, 14);
        using var rig = new Rig(dir, args);
        Directory.CreateDirectory(Path.Combine(rig.Share, "d1", "d2"));
        File.WriteAllBytes(Path.Combine(rig.Share, "d1", "d2", "f"), nested);
        File.WriteAllBytes(Path.Combine(rig.Share, "d1", "r"), moved);
        File.WriteAllBytes(Path.Combine(rig.Share, "h"), hostMoved);
        try
        {
            var d1 = LookupIn(rig, FuseFrames.RootId, "d1");
            var d2 = LookupIn(rig, d1, "d2");
            var f = LookupIn(rig, d2, "f");
            var fh = rig.Open(f, 0);
            Assert.Equal(nested[..4096], rig.Read(f, fh, 0, 4096));
            var r = LookupIn(rig, d1, "r");
            var h = LookupIn(rig, FuseFrames.RootId, "h");
            Assert.Equal(0, Rig.Error(rig.Call(RenameRequest(d1, "r", d2, "r2"))));

            void HostRename()
            {
                File.Move(Path.Combine(rig.Share, "h"), Path.Combine(rig.Share, "h.moved"));
                File.WriteAllBytes(Path.Combine(rig.Share, "h"), impostor);
            }
            int before = rig.Daemon();
            if (planned)
            {
                HostRename();
                var (exit, text) = rig.Restart();
                Assert.True(exit == 0, $"vdev ctl restart: {text}\n{rig.Log}");
            }
            else
            {
                Signal(rig.VdevPid, "STOP");
                try
                {
                    rig.KillDaemon();
                    HostRename();
                }
                finally
                {
                    Signal(rig.VdevPid, "CONT");
                }
            }

            Assert.Equal((ulong)nested.Length, Size(rig, f));
            Assert.NotEqual(before, rig.Daemon());
            Assert.Equal(nested[4096..], rig.Read(f, fh, 4096, 4096));
            var again = rig.Open(f, 0);
            Assert.Equal(nested, rig.Read(f, again, 0, 8192));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, d1))));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, d2))));
            Assert.Equal((ulong)moved.Length, Size(rig, r));
            Assert.Equal(moved, rig.Read(r, rig.Open(r, 0), 0, 4096));
            Assert.Equal(r, LookupIn(rig, d2, "r2"));
            Assert.Equal(f, LookupIn(rig, d2, "f"));

            var attr = rig.Call(FuseFrames.GetattrRequest(0, h));
            Assert.True(Rig.Error(attr) == Estale, $"GETATTR of the host-renamed file's node: errno {Rig.Error(attr)}, expected ESTALE\n{rig.Log}");
            Assert.Equal(Estale, Rig.Error(rig.Call(FuseFrames.OpenRequest(0, h, 0))));
            var fresh = LookupIn(rig, FuseFrames.RootId, "h");
            Assert.NotEqual(h, fresh);
            Assert.Equal(impostor, rig.Read(fresh, rig.Open(fresh, 0), 0, 4096));
            Assert.Equal(Estale, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, h))));

            var restarts = rig.Status().GetProperty("restarts");
            output.WriteLine(restarts.ToString());
            Assert.Equal(1, restarts.GetProperty("count").GetInt32());
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    public void Dispose()
    {
        if (_ramfs is not null)
        {
            // The rig (and with it every daemon of the share) is gone by now; a lazy unmount covers a straggler.
            if (HostProcesses.Run("umount", [_ramfs], TimeSpan.FromSeconds(20)).ExitCode != 0)
                HostProcesses.Run("umount", ["-l", _ramfs], TimeSpan.FromSeconds(20));
        }
        Directory.Delete(_dir, recursive: true);
    }
}
