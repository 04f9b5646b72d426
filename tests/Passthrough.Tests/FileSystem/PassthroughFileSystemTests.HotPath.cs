using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    [Fact]
    public void HotPaths_AllocateNothingPerRequest()
    {
        using var share = new TestShare();
        File.WriteAllBytes(share.HostPath("f"), new byte[8192]);
        var f = share.Walk("f");
        var fh = share.OpenFile(f, 2);
        var name = N("f");
        var buffer = new byte[4096];
        var ctx = Root;

        // No assertions inside the loop: the assertion library allocates, the filesystem must not.
        int Requests(int count)
        {
            var failures = 0;
            for (var i = 0; i < count; i++)
            {
                if (!share.Fs.Lookup(ctx, NodeId.Root, name).IsOk) failures++;
                share.Fs.Forget(f, 1);
                if (!share.Fs.GetAttr(ctx, f, null).IsOk) failures++;
                if (!share.Fs.GetAttr(ctx, f, new FileHandle(fh)).IsOk) failures++;
                if (share.Fs.Read(ctx, f, new ReadIn { Fh = fh, Offset = 0, Size = 4096 }, buffer).Value != 4096) failures++;
                if (share.Fs.Write(ctx, f, new WriteIn { Fh = fh, Offset = 4096, Size = 4096 }, buffer).Value != 4096) failures++;
            }
            return failures;
        }

        Assert.Equal(0, Requests(200)); // JIT and tiering
        var before = GC.GetAllocatedBytesForCurrentThread();
        var failures = Requests(1000);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, failures);
        Assert.True(allocated < 1000, $"{allocated} bytes allocated by 1000 rounds of LOOKUP/FORGET/GETATTR/READ/WRITE");
    }
}
