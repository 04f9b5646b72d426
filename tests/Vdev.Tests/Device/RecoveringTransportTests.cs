using System.Buffers.Binary;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Vdev.Device;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>The per-opcode table of what happens to a request the dead daemon may have executed (vdev/README.md).</summary>
public sealed class RecoveringTransportTests
{
    private static byte[] Frame(FuseOpcode opcode, int bodyOffset = -1, uint flags = 0)
    {
        var frame = new byte[40 + 48];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)frame.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4), (uint)opcode);
        if (bodyOffset >= 0) BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(40 + bodyOffset), flags);
        return frame;
    }

    [Theory]
    [InlineData(FuseOpcode.Lookup)]
    [InlineData(FuseOpcode.GetAttr)]
    [InlineData(FuseOpcode.Read)]
    [InlineData(FuseOpcode.ReadDir)]
    [InlineData(FuseOpcode.ReadDirPlus)]
    [InlineData(FuseOpcode.ReadLink)]
    [InlineData(FuseOpcode.StatFs)]
    [InlineData(FuseOpcode.GetXAttr)]
    [InlineData(FuseOpcode.ListXAttr)]
    [InlineData(FuseOpcode.Flush)]
    [InlineData(FuseOpcode.FSync)]
    [InlineData(FuseOpcode.Release)]
    public void RequestsWhoseRepetitionCannotChangeTheOutcome_AreSentAgain(FuseOpcode opcode)
        => Assert.True(RecoveringTransport.Replayable(opcode, Frame(opcode)));

    [Theory]
    [InlineData(FuseOpcode.Create)]
    [InlineData(FuseOpcode.MkDir)]
    [InlineData(FuseOpcode.MkNod)]
    [InlineData(FuseOpcode.Symlink)]
    [InlineData(FuseOpcode.Link)]
    [InlineData(FuseOpcode.Unlink)]
    [InlineData(FuseOpcode.RmDir)]
    [InlineData(FuseOpcode.Rename)]
    [InlineData(FuseOpcode.Rename2)]
    [InlineData(FuseOpcode.SetXAttr)]
    [InlineData(FuseOpcode.RemoveXAttr)]
    [InlineData(FuseOpcode.SetLk)]
    [InlineData(FuseOpcode.CopyFileRange)]
    public void RequestsThatCouldApplyTwice_AreAnsweredEio(FuseOpcode opcode)
        => Assert.False(RecoveringTransport.Replayable(opcode, Frame(opcode)));

    [Fact]
    public void Write_IsSentAgainOnlyWithoutOAppend()
    {
        Assert.True(RecoveringTransport.Replayable(FuseOpcode.Write, Frame(FuseOpcode.Write, 32, 0x8002)));
        Assert.False(RecoveringTransport.Replayable(FuseOpcode.Write, Frame(FuseOpcode.Write, 32, 0x402)));
    }

    [Fact]
    public void Open_IsSentAgainOnlyWhenItNeitherTruncatesNorCreates()
    {
        Assert.True(RecoveringTransport.Replayable(FuseOpcode.Open, Frame(FuseOpcode.Open, 0, 2)));
        Assert.False(RecoveringTransport.Replayable(FuseOpcode.Open, Frame(FuseOpcode.Open, 0, 0x202)));
    }
}
