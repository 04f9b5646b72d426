using Hypervisor.Tests;
using System.Runtime.CompilerServices;
using Hypervisor.Protocol.Virtio;

namespace Hypervisor.Protocol.Tests.Virtio;

public sealed class SplitVirtqueueTests
{
    [Fact]
    public void LayoutMatchesLinuxVirtioRingH()
    {
        var c = CHeaderProbe.Run("""
            struct vring v; unsigned n = 256;
            printf("%zu\n", sizeof(struct vring_desc));
            printf("%zu\n", offsetof(struct vring_desc, len));
            printf("%zu\n", offsetof(struct vring_desc, flags));
            printf("%zu\n", offsetof(struct vring_desc, next));
            printf("%zu\n", sizeof(struct vring_used_elem));
            printf("%zu\n", offsetof(struct vring_avail, ring));
            printf("%zu\n", offsetof(struct vring_used, ring));
            printf("%d %d %d\n", VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT);
            printf("%d %d\n", VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY);
            printf("%d %d\n", VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX);
            vring_init(&v, n, (void*)0x100000, 4096);
            printf("%lu\n", (unsigned long)((char*)&vring_used_event(&v) - (char*)v.avail));
            printf("%lu\n", (unsigned long)((char*)&vring_avail_event(&v) - (char*)v.used));
            """, "#include <linux/virtio_ring.h>\n#include <linux/virtio_config.h>");
        Assert.Equal(VirtqDesc.Size.ToString(), c[0]);
        Assert.Equal(VirtqDesc.Size, Unsafe.SizeOf<VirtqDesc>());
        Assert.Equal(["8", "12", "14"], c[1..4]);
        Assert.Equal(VirtqUsedElem.Size.ToString(), c[4]);
        Assert.Equal(VirtqUsedElem.Size, Unsafe.SizeOf<VirtqUsedElem>());
        Assert.Equal(SplitVirtqueue.AvailRingEntryOffset(0).ToString(), c[5]);
        Assert.Equal(SplitVirtqueue.UsedRingEntryOffset(0).ToString(), c[6]);
        Assert.Equal($"{(int)VirtqDescFlags.Next} {(int)VirtqDescFlags.Write} {(int)VirtqDescFlags.Indirect}", c[7]);
        Assert.Equal($"{SplitVirtqueue.AvailFlagNoInterrupt} {SplitVirtqueue.UsedFlagNoNotify}", c[8]);
        Assert.Equal($"{VirtioFeatures.RingIndirectDescBit} {VirtioFeatures.RingEventIdxBit}", c[9]);
        Assert.Equal(SplitVirtqueue.UsedEventOffset(256).ToString(), c[10]);
        Assert.Equal(SplitVirtqueue.AvailEventOffset(256).ToString(), c[11]);
    }

    [Fact]
    public void NeedEventAgreesWithLinuxForWrappingIndices()
    {
        ushort[] values = [0, 1, 2, 3, 100, 32767, 32768, 65534, 65535];
        var body = new System.Text.StringBuilder();
        var expected = new List<string>();
        foreach (var e in values)
            foreach (var n in values)
                foreach (var o in values)
                {
                    body.AppendLine($"printf(\"%d\\n\", vring_need_event({e}, {n}, {o}));");
                    expected.Add(SplitVirtqueue.NeedEvent(e, n, o) ? "1" : "0");
                }
        var c = CHeaderProbe.Run(body.ToString(), "#include <linux/virtio_ring.h>");
        Assert.Equal(expected, c);
        // The common cases in words: crossing the event index needs a notification, not reaching it does not.
        Assert.True(SplitVirtqueue.NeedEvent(5, 6, 5));
        Assert.False(SplitVirtqueue.NeedEvent(10, 6, 5));
        Assert.True(SplitVirtqueue.NeedEvent(65535, 1, 65534));
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(256, true)]
    [InlineData(32768, true)]
    [InlineData(0, false)]
    [InlineData(100, false)]
    [InlineData(65536, false)]
    public void QueueSizesArePowersOfTwoUpTo32768(int size, bool valid) => Assert.Equal(valid, SplitVirtqueue.IsValidSize(size));

    [Fact]
    public void VirtioFsConfigMatchesLinuxVirtioFsH()
    {
        var c = CHeaderProbe.Run("""
            printf("%zu\n", offsetof(struct virtio_fs_config, num_request_queues));
            printf("%zu\n", sizeof(((struct virtio_fs_config*)0)->tag));
            """, "#include <linux/virtio_fs.h>");
        Assert.Equal(VirtioFsConfig.NumRequestQueuesOffset.ToString(), c[0]);
        Assert.Equal(VirtioFsConfig.TagSize.ToString(), c[1]);
        var space = new byte[VirtioFsConfig.Size];
        new VirtioFsConfig("share", 3).WriteTo(space);
        Assert.Equal("share"u8.ToArray(), space[..5]);
        Assert.All(space[5..36], b => Assert.Equal(0, b));
        Assert.Equal(3, space[36]);
        Assert.Throws<ArgumentException>(() => new VirtioFsConfig(new string('x', 37), 1));
        Assert.Throws<ArgumentException>(() => new VirtioFsConfig("", 1));
        Assert.Throws<ArgumentException>(() => new VirtioFsConfig("a", 0));
    }
}
