using Hypervisor.Interop;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Virtio;

namespace Hypervisor.Vdev.Tests.Virtio;

public sealed unsafe class GuestMemoryTableTests
{
    [Fact]
    public void TranslationSucceedsOnlyForRangesInsideOneRegion()
    {
        using var ram = new GuestRam(1 << 16);
        const ulong gpa = 0xffff_ffff_fff0_0000, va = 0x7000_0000_0000;
        var region = MappedRegion.Map(new VhostUserMemoryRegion(gpa, 1 << 16, va, 0), new SafeFd(ram.Fd, ownsHandle: false));
        var table = new GuestMemoryTable([region]);
        try
        {
            Assert.True(table.TryGuest(gpa, 1 << 16, out var p0));
            Assert.True(table.TryGuest(gpa + 100, 28, out var p1));
            Assert.Equal(100, (long)(p1 - p0));
            Assert.True(table.TryGuest(gpa + 0xffff, 1, out _));
            Assert.False(table.TryGuest(gpa + 0xffff, 2, out _));
            Assert.False(table.TryGuest(gpa + 0x10000, 0, out _));
            Assert.False(table.TryGuest(gpa - 1, 1, out _));
            Assert.False(table.TryGuest(gpa + 8, ulong.MaxValue, out _)); // a length that would wrap
            Assert.False(table.TryGuest(ulong.MaxValue, 1, out _));
            Assert.True(table.TryFrontEnd(va + 16, 16, out var v));
            Assert.Equal(16, (long)(v - p0));
            Assert.False(table.TryFrontEnd(gpa, 16, out _)); // guest-physical is not a front-end address
            Assert.True(table.TryGuestPrefix(gpa + 0xfff0, 100, out _, out var avail));
            Assert.Equal(16ul, avail);
            // Writes through the translation land in the memfd.
            p1[0] = 0x5a;
            Assert.Equal(0x5a, ram.At(ram.GuestBase + 100, 1)[0]);
        }
        finally
        {
            table.Release();
        }
        Assert.False(table.TryAddRef()); // released tables cannot be revived
    }

    [Fact]
    public void TheEmptyTableTranslatesNothing()
    {
        Assert.False(GuestMemoryTable.Empty.TryGuest(0, 0, out _));
        Assert.False(GuestMemoryTable.Empty.TryFrontEnd(0, 1, out _));
    }
}
