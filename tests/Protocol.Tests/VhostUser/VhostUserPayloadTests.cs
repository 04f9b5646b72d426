using Hypervisor.Tests;
using System.Buffers.Binary;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Protocol.Tests.Virtio;

namespace Hypervisor.Protocol.Tests.VhostUser;

public sealed class VhostUserPayloadTests
{
    private static byte[] Header(uint request, uint flags, uint size)
    {
        var b = new byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(b, request);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), size);
        return b;
    }

    [Fact]
    public void HeaderParsesAndRoundTrips()
    {
        var h = VhostUserHeader.Parse(Header(5, 0x9, 40));
        Assert.Equal(VhostUserRequest.SetMemTable, h.Request);
        Assert.True(h.NeedsReply);
        Assert.Equal(40u, h.Size);
        var b = new byte[12];
        VhostUserHeader.ReplyTo(VhostUserRequest.GetFeatures, 8).WriteTo(b);
        Assert.Equal(Header(1, 0x5, 8), b);
    }

    [Theory]
    [InlineData(new byte[] { 1, 0, 0, 0, 1 }, VhostUserError.ShortHeader)]
    public void ShortHeadersAreRejected(byte[] bytes, VhostUserError error)
        => Assert.Equal(error, Assert.Throws<VhostUserProtocolException>(() => VhostUserHeader.Parse(bytes)).Error);

    [Fact]
    public void BadVersionsRepliesAndHugeSizesAreRejected()
    {
        Assert.Equal(VhostUserError.BadVersion, Assert.Throws<VhostUserProtocolException>(() => VhostUserHeader.Parse(Header(1, 0x2, 0))).Error);
        Assert.Equal(VhostUserError.BadVersion, Assert.Throws<VhostUserProtocolException>(() => VhostUserHeader.Parse(Header(1, 0x0, 0))).Error);
        Assert.Equal(VhostUserError.UnexpectedReply, Assert.Throws<VhostUserProtocolException>(() => VhostUserHeader.Parse(Header(1, 0x5, 0))).Error);
        var e = Assert.Throws<VhostUserProtocolException>(() => VhostUserHeader.Parse(Header(2, 0x1, 4097)));
        Assert.Equal(VhostUserError.PayloadTooLarge, e.Error);
        Assert.Contains("SetFeatures", e.Message);
    }

    [Fact]
    public void PayloadSizesMustMatchTheRequestType()
    {
        Assert.Equal(0x1234ul, VhostUserPayload.ReadU64(VhostUserRequest.SetFeatures, [0x34, 0x12, 0, 0, 0, 0, 0, 0]));
        Assert.Equal(VhostUserError.BadPayloadSize, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadU64(VhostUserRequest.SetFeatures, new byte[4])).Error);
        Assert.Equal(VhostUserError.BadPayloadSize, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadVringState(VhostUserRequest.SetVringNum, new byte[12])).Error);
        Assert.Equal(VhostUserError.BadPayloadSize, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadVringAddress(VhostUserRequest.SetVringAddr, new byte[32])).Error);
        Assert.Equal(VhostUserError.BadPayloadSize, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadEmpty(VhostUserRequest.SetOwner, new byte[8])).Error);

        var a = new byte[40];
        new VringAddress(2, 0, 0x1000, 0x3000, 0x2000, 0).WriteTo(a);
        Assert.Equal(new VringAddress(2, 0, 0x1000, 0x3000, 0x2000, 0), VhostUserPayload.ReadVringAddress(VhostUserRequest.SetVringAddr, a));
    }

    [Fact]
    public void VringFdPayloadsCarryIndexAndNoFdFlag()
    {
        var p = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(p, 3);
        Assert.Equal((3u, true), VhostUserPayload.ReadVringFd(VhostUserRequest.SetVringKick, p));
        BinaryPrimitives.WriteUInt64LittleEndian(p, 0x105);
        Assert.Equal((5u, false), VhostUserPayload.ReadVringFd(VhostUserRequest.SetVringCall, p));
        BinaryPrimitives.WriteUInt64LittleEndian(p, 0x1000);
        Assert.Equal(VhostUserError.BadField, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadVringFd(VhostUserRequest.SetVringCall, p)).Error);
    }

    [Fact]
    public void MemoryTablesAreValidated()
    {
        var t = new byte[8 + 64];
        BinaryPrimitives.WriteUInt32LittleEndian(t, 2);
        new VhostUserMemoryRegion(0, 0x10000, 0x7f0000000000, 0).WriteTo(t.AsSpan(8));
        new VhostUserMemoryRegion(0x100000000, 0x20000, 0x7f1000000000, 0x10000).WriteTo(t.AsSpan(40));
        var regions = VhostUserPayload.ReadMemoryTable(t);
        Assert.Equal(2, regions.Length);
        Assert.Equal(0x10000ul, regions[1].MmapOffset);

        Assert.Equal(VhostUserError.BadPayloadSize, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadMemoryTable(t.AsSpan(0, 40))).Error);
        BinaryPrimitives.WriteUInt32LittleEndian(t, 9);
        Assert.Equal(VhostUserError.BadField, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadMemoryTable(t)).Error);
        BinaryPrimitives.WriteUInt32LittleEndian(t, 0);
        Assert.Equal(VhostUserError.BadField, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadMemoryTable(t.AsSpan(0, 8))).Error);
        BinaryPrimitives.WriteUInt32LittleEndian(t, 2);
        new VhostUserMemoryRegion(ulong.MaxValue - 10, 0x10000, 0, 0).WriteTo(t.AsSpan(40));
        Assert.Contains("wraps", Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadMemoryTable(t)).Message);
        new VhostUserMemoryRegion(0, 0, 0, 0).WriteTo(t.AsSpan(40));
        Assert.Contains("size 0", Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadMemoryTable(t)).Message);

        var single = new byte[40];
        new VhostUserMemoryRegion(0x1000, 0x2000, 0x3000, 0).WriteTo(single.AsSpan(8));
        Assert.Equal(0x2000ul, VhostUserPayload.ReadSingleRegion(VhostUserRequest.AddMemReg, single).MemorySize);
    }

    [Fact]
    public void ConfigPayloadsAreBoundedBy256Bytes()
    {
        var p = new byte[12 + 8];
        new VhostUserConfigHeader(4, 8, 0).WriteTo(p);
        var h = VhostUserPayload.ReadConfig(VhostUserRequest.GetConfig, p, out var data);
        Assert.Equal((4u, 8u), (h.Offset, h.Size));
        Assert.Equal(8, data.Length);
        new VhostUserConfigHeader(0, 9, 0).WriteTo(p);
        Assert.Equal(VhostUserError.BadPayloadSize, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadConfig(VhostUserRequest.GetConfig, p, out _)).Error);
        var big = new byte[12 + 300];
        new VhostUserConfigHeader(0, 300, 0).WriteTo(big);
        Assert.Equal(VhostUserError.BadField, Assert.Throws<VhostUserProtocolException>(() => VhostUserPayload.ReadConfig(VhostUserRequest.GetConfig, big, out _)).Error);
    }

    [Fact]
    public void WireStructsMatchLinuxVhostTypesH()
    {
        var c = CHeaderProbe.Run("""
            printf("%zu %zu\n", sizeof(struct vhost_vring_state), sizeof(struct vhost_vring_addr));
            printf("%zu %zu\n", sizeof(struct vhost_memory_region), offsetof(struct vhost_memory, regions));
            printf("%zu %zu %zu\n", offsetof(struct vhost_vring_addr, desc_user_addr), offsetof(struct vhost_vring_addr, used_user_addr), offsetof(struct vhost_vring_addr, avail_user_addr));
            printf("%d\n", 1 << VHOST_VRING_F_LOG);
            """, "#include <linux/vhost_types.h>");
        Assert.Equal($"{VringState.WireSize} {VringAddress.WireSize}", c[0]);
        Assert.Equal($"{VhostUserMemoryRegion.WireSize} 8", c[1]);
        // VringAddress writes descriptor at 8, used at 16, available at 24: the kernel's order.
        var a = new byte[40];
        new VringAddress(0, 0, 1, 2, 3, 4).WriteTo(a);
        Assert.Equal("8 16 24", c[2]);
        Assert.Equal((1ul, 2ul, 3ul), (BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(8)), BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(16)), BinaryPrimitives.ReadUInt64LittleEndian(a.AsSpan(24))));
        Assert.Equal(VringAddress.FlagLog.ToString(), c[3]);
    }
}
