using Hypervisor.Protocol.Recovery;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Recovery;

/// <summary>The descriptor store's wire format: what one side writes the other reads back, and nothing else passes.</summary>
public sealed class DescriptorStoreMessageTests
{
    [Fact]
    public void EntriesWritten_AreReadBack_WithTheirOpAndCount()
    {
        var message = new byte[DescriptorStoreMessage.MaxSize];
        var entries = new[] { new KeptEntry(KeptKind.Handle, 42, 0), new KeptEntry(KeptKind.LockOwner, 7, 0xdeadbeefcafe) };
        int length = DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.Keep, entries.Length);
        for (int i = 0; i < entries.Length; i++) DescriptorStoreMessage.WriteEntry(message, i, entries[i]);
        Assert.Equal(DescriptorStoreMessage.HeaderSize + 2 * DescriptorStoreMessage.EntrySize, length);

        Assert.True(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, length), out var op, out int count));
        Assert.Equal(DescriptorStoreOp.Keep, op);
        Assert.Equal(2, count);
        for (int i = 0; i < count; i++)
        {
            Assert.True(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, length), i, out var entry));
            Assert.Equal(entries[i], entry);
        }
    }

    [Fact]
    public void MalformedMessages_AreRefused()
    {
        var message = new byte[DescriptorStoreMessage.MaxSize];
        int length = DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.Drop, 1);
        DescriptorStoreMessage.WriteEntry(message, 0, new KeptEntry(KeptKind.Handle, 1, 0));
        // Shorter or longer than its entries say, shorter than a header, an unknown op.
        Assert.False(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, length - 1), out _, out _));
        Assert.False(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, length + 1), out _, out _));
        Assert.False(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, 4), out _, out _));
        message[0] = 9;
        Assert.False(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, length), out _, out _));
        // An unknown kind is reported as such; more entries than SCM_RIGHTS carries cannot be written.
        message[DescriptorStoreMessage.HeaderSize] = 77;
        Assert.False(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, length), 0, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.Keep, DescriptorStoreMessage.MaxEntries + 1));
    }

    [Fact]
    public void TheRingDescriptor_CarriesTheChannel_AsFdstore()
    {
        var fds = RingFds.Parse("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9,state=10,fdstore=11");
        Assert.Equal(11, fds.DescriptorStoreFd);
        Assert.Contains((11, "fdstore"), fds.Named());
        Assert.Equal("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9,state=10,fdstore=11", fds.ToString());
        Assert.Null(RingFds.Parse("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9").DescriptorStoreFd);
    }
}
