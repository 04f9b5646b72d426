using System.Text;
using Hypervisor.Launcher.Tests.Support;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>
/// The mode without file handles (a filesystem without them, or a daemon that is not root): every node pins an
/// O_PATH descriptor for its lifetime, and forgetting the node closes it.
/// </summary>
public sealed class PassthroughFileSystemPinnedTests
{
    [Fact]
    public void Nodes_PinOneDescriptorEach_AndReleaseItOnForget()
    {
        using var share = new TestShare(fileHandles: false);
        Assert.False(share.Fs.UsesFileHandles);
        for (var i = 0; i < 50; i++) File.WriteAllText(share.HostPath($"f{i}"), $"{i}");
        var files = Enumerable.Range(0, 50).Select(i => share.HostPath($"f{i}")).ToHashSet();
        Assert.Equal(0, DescriptorsOnto(files));
        var ids = new ulong[50];
        for (var i = 0; i < 50; i++) ids[i] = share.Lookup(NodeId.Root, $"f{i}").Nodeid;
        Assert.Equal(50, DescriptorsOnto(files));
        Assert.Equal(0, share.Fs.CachedDescriptors);
        for (var i = 0; i < 50; i++)
        {
            var fh = share.OpenFile(new NodeId(ids[i]), 0);
            Assert.Equal($"{i}", Encoding.UTF8.GetString(share.ReadAll(new NodeId(ids[i]), fh)));
            share.Fs.Release(Root, new NodeId(ids[i]), new ReleaseIn { Fh = fh });
            share.Fs.Forget(new NodeId(ids[i]), 1);
            Assert.Equal(Errno.ENOENT, share.Fs.GetAttr(Root, new NodeId(ids[i]), null).Error);
        }
        Assert.Equal(0, DescriptorsOnto(files));
        Assert.Equal(1, share.Fs.KnownNodes);
    }

    /// <summary>
    /// How many of this process's descriptors refer to one of <paramref name="files"/>. Counting every descriptor of the
    /// process instead would count what other tests, and finalizers, open and close meanwhile.
    /// </summary>
    private static int DescriptorsOnto(HashSet<string> files) =>
        ProcFs.Fds(Environment.ProcessId).Values.Count(files.Contains);

    [Fact]
    public void HardLinks_Symlinks_AndReadDirPlus_Work()
    {
        using var share = new TestShare(fileHandles: false);
        File.WriteAllText(share.HostPath("a"), "data");
        var link = share.Fs.Link(Root, share.Walk("a"), NodeId.Root, N("b"));
        Assert.Equal(share.Lookup(NodeId.Root, "a").Nodeid, link.Value.Nodeid);
        var sym = share.Fs.Symlink(Root, NodeId.Root, N("s"), N("a"));
        Assert.True(sym.IsOk);
        var target = new byte[64];
        Assert.Equal("a", Encoding.UTF8.GetString(target, 0, share.Fs.ReadLink(Root, new NodeId(sym.Value.Nodeid), target).Value));
        var dirFh = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        var entries = PassthroughFileSystemTests.ReadAllEntries(share, NodeId.Root, dirFh, plus: true, 4096);
        Assert.Equal(entries["a"].Nodeid, entries["b"].Nodeid);
        Assert.Equal(sym.Value.Nodeid, entries["s"].Nodeid);
    }
}
