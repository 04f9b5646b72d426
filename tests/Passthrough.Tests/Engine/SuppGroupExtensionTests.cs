using Hypervisor.Passthrough.Engine;

namespace Hypervisor.Passthrough.Tests.Engine;

/// <summary>
/// The FUSE_EXT_GROUPS extension of a creating request (FUSE_CREATE_SUPP_GROUP) as the engine reads it: the record
/// Linux sends (fuse_ext_header, nr_groups 1, one gid, aligned to 8 bytes), records of other types passed over, and
/// every disagreement between sizes and counts refused as malformed rather than read past.
/// </summary>
public class SuppGroupExtensionTests
{
    private static byte[] Record(uint type, params uint[] words)
    {
        var size = (8 + words.Length * 4 + 7) & ~7;
        var bytes = new byte[size];
        BitConverter.TryWriteBytes(bytes.AsSpan(0), (uint)size);
        BitConverter.TryWriteBytes(bytes.AsSpan(4), type);
        for (var i = 0; i < words.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(8 + 4 * i), words[i]);
        return bytes;
    }

    [Fact]
    public void TheRecordLinuxSends_GivesTheParentsGroup()
    {
        Assert.Equal(1, FuseEngine.ReadSuppGroup(Record(32, 1, 3000), out var group));
        Assert.Equal(3000u, group);
    }

    [Fact]
    public void OtherRecordsArePassedOver_AndNoRecordMeansNoGroup()
    {
        // A security context record (type = its count, below 32) first, then the groups.
        Assert.Equal(1, FuseEngine.ReadSuppGroup([.. Record(1, 24, 0, 0x41414141, 0x42), .. Record(32, 1, 77)], out var group));
        Assert.Equal(77u, group);
        Assert.Equal(0, FuseEngine.ReadSuppGroup(Record(1, 8, 0), out group));
        Assert.Equal(FuseContext.NoGroup, group);
        Assert.Equal(0, FuseEngine.ReadSuppGroup([], out group));
        Assert.Equal(0, FuseEngine.ReadSuppGroup(Record(32, 0), out group));
        Assert.Equal(FuseContext.NoGroup, group);
    }

    [Fact]
    public void SeveralGroupsAreCounted_TheEngineAnswersThoseEinval()
    {
        Assert.Equal(3, FuseEngine.ReadSuppGroup(Record(32, 3, 10, 11, 12), out _));
    }

    [Fact]
    public void SizesThatDisagree_AreMalformed()
    {
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(Record(32, 2, 3000), out _)); // two groups announced, one sent
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(Record(32, 1, 3000, 0, 0), out _)); // a record longer than its groups
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(Record(32, uint.MaxValue, 1), out _));
        var record = Record(32, 1, 3000);
        record[0] = 12; // not a multiple of 8
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(record, out _));
        record[0] = 24; // past the area
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(record, out _));
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(record.AsSpan(0, 4), out _)); // shorter than a header
        Assert.Equal(-1, FuseEngine.ReadSuppGroup(Record(32, 1).AsSpan(0, 12), out _));
    }
}
