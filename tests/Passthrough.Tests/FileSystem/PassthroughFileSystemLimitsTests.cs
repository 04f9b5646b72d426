using System.Runtime.InteropServices;
using Hypervisor.Interop;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>Runs alone: these tests exhaust the process's descriptors on purpose.</summary>
[CollectionDefinition("Descriptor exhaustion", DisableParallelization = true)]
public sealed class DescriptorExhaustionCollection;

/// <summary>How <see cref="Hypervisor.Passthrough.FileSystem.PassthroughFileSystem"/> behaves at the descriptor limit and under concurrency.</summary>
[Collection("Descriptor exhaustion")]
public sealed class PassthroughFileSystemLimitsTests
{
    [Fact]
    public void AtTheDescriptorLimit_TheCacheGivesBackFirst_ThenOnlyTheRequestsNeedingOneFailWithEMFILE()
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
                var fd = Libc.dup(0);
                if (fd < 0)
                {
                    Assert.Equal(Errno.EMFILE.Value, Marshal.GetLastPInvokeError());
                    break;
                }
                hogs.Add(fd);
            }
            // At the limit the cache gives back descriptors it holds and the open is tried again: the guest's
            // request does not fail while the cache has any.
            Assert.True(share.Fs.CachedDescriptors > 0);
            var lookup = share.Fs.Lookup(Root, NodeId.Root, N("new"));
            Assert.True(lookup.IsOk, lookup.ToString());
            // Drain the cache: each OPEN at the limit makes it give back up to 64 more, which are taken at once.
            for (var round = 0; share.Fs.CachedDescriptors > 0 && round < 100; round++)
            {
                share.Fs.Open(Root, open, new OpenIn());
                for (int fd; (fd = Libc.dup(0)) >= 0;) hogs.Add(fd);
            }
            Assert.Equal(0, share.Fs.CachedDescriptors);
            // With nothing left to give, the requests that need a new descriptor fail with EMFILE.

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
    public void TheAutomaticCacheSize_FollowsTheDescriptorLimit_SoARelistedLargeDirectoryKeepsItsNodes()
    {
        using var share = new TestShare(); // --fd-cache-size left out
        Assert.Equal(DescriptorBudget.AutomaticCacheSize(DescriptorBudget.SoftLimit()), share.Fs.FdCacheCapacity);
        if (!share.Fs.UsesFileHandles) return; // pinned descriptors go with their nodes; nothing is retired
        // As many entries as the cache holds, less slack for the share's own descriptors, and at most 12,000: more
        // than a fixed 8,192 under a limit of 20,000.
        var count = Math.Min(share.Fs.FdCacheCapacity - 64, 12_000);
        for (var i = 0; i < count; i++) File.Create(share.HostPath($"f{i:D5}")).Dispose();
        var ids = new ulong[count];
        for (var i = 0; i < count; i++)
        {
            ids[i] = share.Lookup(NodeId.Root, $"f{i:D5}").Nodeid;
            share.Fs.Forget(new NodeId(ids[i]), 1);
        }
        // The guest forgot them all (as after dropping its caches) and lists the directory again in the same order:
        // every entry is still a retired node with its descriptor, so it gets its old id back and nothing is opened.
        var renewed = 0;
        for (var i = 0; i < count; i++)
        {
            if (share.Lookup(NodeId.Root, $"f{i:D5}").Nodeid != ids[i]) renewed++;
        }
        Assert.True(renewed == 0, $"{renewed} of {count} entries lost their node (cache of {share.Fs.FdCacheCapacity})");
    }

    [Theory]
    [InlineData(1024, 768)]
    [InlineData(20_000, 15_904)]
    [InlineData(524_288, 65_536)]
    [InlineData(100, 16)]
    public void TheAutomaticCacheSize_LeavesAQuarterOfTheLimit_Between256And4096Descriptors(long limit, int expected) =>
        Assert.Equal(expected, DescriptorBudget.AutomaticCacheSize(limit));

    [Fact]
    public void ConcurrentLookupsAndForgets_KeepCountsExact()
    {
        using var share = new TestShare(o => o.FdCacheSize = 4);
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
        using var share = new TestShare(o => o.FdCacheSize = 4);
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
