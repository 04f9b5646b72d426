using System.Runtime.InteropServices;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>Runs alone: these tests exhaust the process's descriptors on purpose.</summary>
[CollectionDefinition("Descriptor exhaustion", DisableParallelization = true)]
public sealed class DescriptorExhaustionCollection;

/// <summary>How <see cref="Hypervisor.Passthrough.FileSystem.PassthroughFileSystem"/> behaves at the descriptor limit and under concurrency.</summary>
[Collection("Descriptor exhaustion")]
public sealed partial class PassthroughFileSystemLimitsTests
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial int dup(int fd);

    [Fact]
    public void OutOfDescriptors_FailsThatRequestWithEMFILE_AndEverythingElseKeepsWorking()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("open"), "still readable");
        File.WriteAllText(share.HostPath("cached"), "x");
        File.WriteAllText(share.HostPath("new"), "y");
        var open = share.Walk("open");
        var fh = share.OpenFile(open, 0);
        var cached = share.Walk("cached");

        var hogs = new List<int>();
        try
        {
            while (true)
            {
                var fd = dup(0);
                if (fd < 0)
                {
                    Assert.Equal(Errno.EMFILE.Value, Marshal.GetLastPInvokeError());
                    break;
                }
                hogs.Add(fd);
            }
            // The cache gives some descriptors back on EMFILE, so free nothing else: take those too.
            var lookup = share.Fs.Lookup(Root, NodeId.Root, N("new"));
            Assert.Equal(Errno.EMFILE, lookup.Error);
            for (int fd; (fd = dup(0)) >= 0;) hogs.Add(fd);

            Assert.Equal(Errno.EMFILE, share.Fs.Lookup(Root, NodeId.Root, N("new")).Error);
            Assert.Equal(Errno.EMFILE, share.Fs.Open(Root, open, new OpenIn()).Error);
            // what needs no new descriptor keeps working
            Assert.Equal("still readable", System.Text.Encoding.UTF8.GetString(share.ReadAll(open, fh)));
            Assert.True(share.Fs.GetAttr(Root, open, new FileHandle(fh)).IsOk);
        }
        finally
        {
            foreach (var fd in hogs) Host.close(fd);
        }
        // and once descriptors are free again, everything works
        Assert.True(share.Fs.Lookup(Root, NodeId.Root, N("new")).IsOk);
        Assert.True(share.Fs.GetAttr(Root, cached, null).IsOk);
        Assert.True(share.Fs.Open(Root, open, new OpenIn()).IsOk);
    }

    [Fact]
    public void ConcurrentLookupsAndForgets_KeepCountsExact()
    {
        using var share = new TestShare(o => o with { FdCacheSize = 4 });
        const int files = 16, threads = 4, rounds = 2000;
        for (var i = 0; i < files; i++) File.WriteAllText(share.HostPath($"f{i}"), "x");
        var ids = new ulong[files];
        for (var i = 0; i < files; i++) ids[i] = share.Lookup(NodeId.Root, $"f{i}").Nodeid; // one pinned lookup each
        var failures = 0;
        Parallel.For(0, threads, t =>
        {
            for (var r = 0; r < rounds; r++)
            {
                var i = (r * 7 + t) % files;
                var e = share.Fs.Lookup(Root, NodeId.Root, N($"f{i}"));
                if (!e.IsOk || e.Value.Nodeid != ids[i]) Interlocked.Increment(ref failures);
                if (!share.Fs.GetAttr(Root, new NodeId(ids[i]), null).IsOk) Interlocked.Increment(ref failures);
                share.Fs.Forget(new NodeId(ids[i]), 1);
            }
        });
        Assert.Equal(0, failures);
        Assert.Equal(files + 1, share.Fs.KnownNodes);
        for (var i = 0; i < files; i++) share.Fs.Forget(new NodeId(ids[i]), 1);
        Assert.Equal(1, share.Fs.KnownNodes);
    }

    [Fact]
    public void ConcurrentLookupsAndForgets_RetiringAndRevivingNodes_AnswerTheRightInode()
    {
        // Nobody holds a lookup between rounds, so nodes are retired, revived through the fstatat probe, and evicted
        // from a cache smaller than the working set, all at once from several threads.
        using var share = new TestShare(o => o with { FdCacheSize = 4 });
        const int files = 16, threads = 4, rounds = 3000;
        var inos = new ulong[files];
        for (var i = 0; i < files; i++)
        {
            File.WriteAllText(share.HostPath($"f{i}"), new string('x', i));
            inos[i] = Host.Ino(share.HostPath($"f{i}"));
        }
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Parallel.For(0, threads, t =>
        {
            for (var r = 0; r < rounds; r++)
            {
                var i = (r * 5 + t * 3) % files;
                var e = share.Fs.Lookup(Root, NodeId.Root, N($"f{i}"));
                if (!e.IsOk || e.Value.Attr.Ino != inos[i] || e.Value.Attr.Size != (ulong)i)
                {
                    failures.Enqueue($"LOOKUP f{i}: {e}");
                    continue;
                }
                var id = new NodeId(e.Value.Nodeid);
                var attr = share.Fs.GetAttr(Root, id, null);
                if (!attr.IsOk || attr.Value.Attr.Ino != inos[i]) failures.Enqueue($"GETATTR f{i} node {id.Value}: {attr}");
                share.Fs.Forget(id, 1);
            }
        });
        Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
        Assert.Equal(1, share.Fs.KnownNodes);
        Assert.True(share.Fs.CachedDescriptors <= 4, $"{share.Fs.CachedDescriptors} cached");
    }
}
