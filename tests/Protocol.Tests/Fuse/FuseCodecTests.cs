using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Protocol.Tests.Fuse;

public class FuseCodecTests
{
    [Fact]
    public void RequestRoundTripsHeaderAndBody()
    {
        var frame = new byte[40 + 6];
        var header = new InHeader { Len = (uint)frame.Length, Opcode = (uint)FuseOpcode.Lookup, Unique = 77, Nodeid = 1, Uid = 1000, Gid = 100, Pid = 42 };
        MemoryMarshal.Write(frame, in header);
        "hello\0"u8.CopyTo(frame.AsSpan(40));

        Assert.True(FuseRequest.TryParse(frame, out var request, out _));
        Assert.Equal(FuseOpcode.Lookup, request.Opcode);
        Assert.Equal(new RequestId(77), request.Unique);
        Assert.Equal(1000u, request.Header.Uid);
        var reader = new FuseArgReader(request.Body);
        Assert.True(reader.TryReadString(out var name));
        Assert.Equal("hello", Encoding.ASCII.GetString(name));
        Assert.True(reader.Rest.IsEmpty);
    }

    [Fact]
    public void ShortFrameCannotBeAnswered()
    {
        Assert.False(FuseRequest.TryParse(new byte[39], out _, out var error));
        Assert.Equal(FrameErrorKind.ShorterThanHeader, error.Kind);
        Assert.False(error.CanReply);
    }

    [Theory]
    [InlineData(41u)]
    [InlineData(39u)]
    [InlineData(0u)]
    [InlineData(uint.MaxValue)]
    public void LyingLengthIsRejectedWithTheUnique(uint declared)
    {
        var frame = new byte[40];
        var header = new InHeader { Len = declared, Opcode = 3, Unique = 9 };
        MemoryMarshal.Write(frame, in header);
        Assert.False(FuseRequest.TryParse(frame, out _, out var error));
        Assert.Equal(FrameErrorKind.LengthMismatch, error.Kind);
        Assert.Equal(9ul, error.Unique);
        Assert.True(error.CanReply);
    }

    [Fact]
    public void ExtensionLongerThanTheFrameIsRejected()
    {
        var frame = new byte[48];
        var header = new InHeader { Len = 48, Opcode = 3, Unique = 1, TotalExtlen = 2 };
        MemoryMarshal.Write(frame, in header);
        Assert.False(FuseRequest.TryParse(frame, out _, out var error));
        Assert.Equal(FrameErrorKind.BadExtensionLength, error.Kind);
    }

    [Fact]
    public void ReaderNeverReadsPastTheEnd()
    {
        var reader = new FuseArgReader("abcdefg"u8);
        Assert.False(reader.TryRead(out ForgetIn _));
        Assert.False(reader.TryReadString(out _));
        Assert.False(reader.TryReadBytes(8, out _));
        Assert.False(reader.TryReadBytes(-1, out _));
        Assert.True(reader.TryReadBytes(7, out var all));
        Assert.Equal(7, all.Length);
    }

    [Fact]
    public void PrefixReadZeroExtendsOlderStructs()
    {
        var body = new byte[8];
        MemoryMarshal.Write(body, 123u);
        MemoryMarshal.Write(body.AsSpan(4), 4u);
        var reader = new FuseArgReader(body);
        Assert.True(reader.TryReadPrefix(8, out SetXAttrIn value));
        Assert.Equal(123u, value.Size);
        Assert.Equal(4u, value.Flags);
        Assert.Equal(0u, value.SetxattrFlags);
    }

    [Fact]
    public void ErrorReplyIsAHeaderWithNegatedErrno()
    {
        var reply = new byte[64];
        var length = FuseReply.Error(reply, new RequestId(5), Errno.ENOENT);
        Assert.Equal(16, length);
        var header = MemoryMarshal.Read<OutHeader>(reply);
        Assert.Equal(16u, header.Len);
        Assert.Equal(-2, header.Error);
        Assert.Equal(5ul, header.Unique);
    }

    [Fact]
    public void StructReplyHasExactLengthAndCanBeTruncatedForOldMinors()
    {
        var reply = new byte[256];
        var init = new InitOut { Major = 7, Minor = 22, MaxWrite = 4096 };
        Assert.Equal(16 + 64, FuseReply.Struct(reply, new RequestId(1), init));
        Assert.Equal(16 + 24, FuseReply.Struct(reply, new RequestId(1), init, 24));
        Assert.Equal(40u, MemoryMarshal.Read<OutHeader>(reply).Len);
    }

    [Fact]
    public void DirentsAreEightByteAlignedAndStopWhenFull()
    {
        var buffer = new byte[64];
        var writer = new DirentWriter(buffer);
        Assert.True(writer.TryAdd(10, 1, 8, "a"u8));          // 24 + 1 -> 32
        Assert.True(writer.TryAdd(11, 2, 4, "abcdefgh"u8));   // 24 + 8 -> 32
        Assert.False(writer.TryAdd(12, 3, 8, "x"u8));         // no room left
        Assert.Equal(64, writer.Length);
        var second = MemoryMarshal.Read<Dirent>(buffer.AsSpan(32));
        Assert.Equal(11ul, second.Ino);
        Assert.Equal(2ul, second.Off);
        Assert.Equal(8u, second.Namelen);
        Assert.Equal("abcdefgh", Encoding.ASCII.GetString(buffer, 32 + 24, 8));
    }

    [Fact]
    public void DirentPlusCarriesTheEntry()
    {
        var buffer = new byte[4096];
        var writer = new DirentWriter(buffer);
        var entry = new EntryOut { Nodeid = 5, Attr = new Attr { Ino = 99, Mode = 0x81a4 } };
        Assert.True(writer.TryAddPlus(entry, 7, 8, "file"u8));
        Assert.Equal(DirentWriter.Align(152 + 4), writer.Length);
        var plus = MemoryMarshal.Read<DirentPlus>(buffer);
        Assert.Equal(5ul, plus.EntryOut.Nodeid);
        Assert.Equal(99ul, plus.Dirent.Ino);
        Assert.Equal(7ul, plus.Dirent.Off);
    }

    [Fact]
    public void ErrnoFormatsNameAndNumber()
    {
        Assert.Equal("ENOENT (2)", Errno.ENOENT.ToString());
        Assert.Equal("E? (200)", new Errno(200).ToString());
        Result<int> failed = Errno.EIO;
        Assert.False(failed.IsOk);
        Assert.Throws<InvalidOperationException>(() => failed.Value);
        Assert.Throws<ArgumentException>(() => { Result<int> bad = Errno.Ok; });
    }
}
