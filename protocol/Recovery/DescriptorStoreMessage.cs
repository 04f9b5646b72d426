using System.Buffers.Binary;

namespace Hypervisor.Protocol.Recovery;

/// <summary>What a kept descriptor is to the daemon.</summary>
public enum KeptKind : uint
{
    /// <summary>The open file or directory behind a FUSE file handle (<see cref="KeptEntry.Id"/> is the handle).</summary>
    Handle = 1,

    /// <summary>The descriptor carrying one lock owner's POSIX (OFD) locks on a node (<see cref="KeptEntry.Id"/> is the node id, <see cref="KeptEntry.Owner"/> the owner).</summary>
    LockOwner = 2,
}

/// <summary>What a message on the descriptor-store channel says.</summary>
public enum DescriptorStoreOp : uint
{
    /// <summary>
    /// Daemon → vdev: keep the attached descriptors under the entries' keys (replacing any kept under the same key), one
    /// per entry in order, except entries flagged as drops (<see cref="DescriptorStoreMessage.DropFlag"/>), which carry
    /// none and close what is kept under their key, in their place in the order.
    /// </summary>
    Keep = 1,

    /// <summary>Daemon → vdev: close what is kept under the entries' keys (no descriptors attached).</summary>
    Drop = 2,

    /// <summary>vdev → daemon: descriptors kept for this share, one per entry, for the daemon to adopt before it serves.</summary>
    Adopt = 3,

    /// <summary>vdev → daemon: every kept descriptor was sent (no entries): the daemon may serve.</summary>
    AdoptEnd = 4,
}

/// <summary>The key of a kept descriptor, and the one thing the vdev knows about it.</summary>
/// <param name="Kind">What it is.</param>
/// <param name="Id">The FUSE file handle (<see cref="KeptKind.Handle"/>) or node id (<see cref="KeptKind.LockOwner"/>).</param>
/// <param name="Owner">The lock owner (<see cref="KeptKind.LockOwner"/>); 0 otherwise.</param>
public readonly record struct KeptEntry(KeptKind Kind, ulong Id, ulong Owner);

/// <summary>
/// The wire format of the descriptor store's channel (vdev/README.md, "Descriptors that outlive the daemon"): a
/// SOCK_SEQPACKET socket pair per daemon, whose end the daemon gets as <c>fdstore=N</c> in the ring descriptor. Each
/// message is one packet: op u32 at 0, entry count u32 at 4, then that many <see cref="EntrySize"/>-byte entries (kind
/// u32 at 0, flags u32 at 4, id u64 at 8, owner u64 at 16), little-endian; <see cref="DescriptorStoreOp.Keep"/> and
/// <see cref="DescriptorStoreOp.Adopt"/> carry one SCM_RIGHTS descriptor per entry, in entry order, except for Keep's
/// entries flagged <see cref="DropFlag"/> (a Drop riding along, so that a release costs no message of its own). A message carries
/// at most <see cref="MaxEntries"/> entries, the kernel's limit of descriptors per SCM_RIGHTS message (SCM_MAX_FD).
/// This type only encodes and decodes; the I/O is the vdev's and the daemon's.
/// </summary>
public static class DescriptorStoreMessage
{
    /// <summary>Bytes of the message header.</summary>
    public const int HeaderSize = 8;

    /// <summary>Bytes of one entry.</summary>
    public const int EntrySize = 24;

    /// <summary>Entries (and descriptors) per message at most: Linux's SCM_MAX_FD.</summary>
    public const int MaxEntries = 253;

    /// <summary>The entry flag of a drop inside a Keep message: it carries no descriptor.</summary>
    public const uint DropFlag = 1;

    /// <summary>Bytes of the largest message.</summary>
    public const int MaxSize = HeaderSize + MaxEntries * EntrySize;

    /// <summary>Writes a header for <paramref name="count"/> entries; returns the message length.</summary>
    public static int WriteHeader(Span<byte> message, DescriptorStoreOp op, int count)
    {
        if ((uint)count > MaxEntries) throw new ArgumentOutOfRangeException(nameof(count), $"A descriptor-store message carries at most {MaxEntries} entries.");
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)op);
        BinaryPrimitives.WriteUInt32LittleEndian(message[4..], (uint)count);
        return HeaderSize + count * EntrySize;
    }

    /// <summary>Writes entry <paramref name="index"/> of a message; <paramref name="drop"/> flags a drop inside a Keep message.</summary>
    public static void WriteEntry(Span<byte> message, int index, in KeptEntry entry, bool drop = false)
    {
        var e = message.Slice(HeaderSize + index * EntrySize, EntrySize);
        BinaryPrimitives.WriteUInt32LittleEndian(e, (uint)entry.Kind);
        BinaryPrimitives.WriteUInt32LittleEndian(e[4..], drop ? DropFlag : 0);
        BinaryPrimitives.WriteUInt64LittleEndian(e[8..], entry.Id);
        BinaryPrimitives.WriteUInt64LittleEndian(e[16..], entry.Owner);
    }

    /// <summary>
    /// Reads a message's header: false when <paramref name="message"/> is shorter than its header, names an unknown op,
    /// or is not exactly as long as its entries say.
    /// </summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> message, out DescriptorStoreOp op, out int count)
    {
        op = default;
        count = 0;
        if (message.Length < HeaderSize) return false;
        op = (DescriptorStoreOp)BinaryPrimitives.ReadUInt32LittleEndian(message);
        uint n = BinaryPrimitives.ReadUInt32LittleEndian(message[4..]);
        if (op is < DescriptorStoreOp.Keep or > DescriptorStoreOp.AdoptEnd || n > MaxEntries || message.Length != HeaderSize + (int)n * EntrySize) return false;
        count = (int)n;
        return true;
    }

    /// <summary>Reads entry <paramref name="index"/> of a message whose header was read; false for an unknown kind.</summary>
    public static bool TryReadEntry(ReadOnlySpan<byte> message, int index, out KeptEntry entry) => TryReadEntry(message, index, out entry, out _);

    /// <summary>As <see cref="TryReadEntry(ReadOnlySpan{byte}, int, out KeptEntry)"/>, with the entry's drop flag.</summary>
    public static bool TryReadEntry(ReadOnlySpan<byte> message, int index, out KeptEntry entry, out bool drop)
    {
        var e = message.Slice(HeaderSize + index * EntrySize, EntrySize);
        drop = (BinaryPrimitives.ReadUInt32LittleEndian(e[4..]) & DropFlag) != 0;
        var kind = (KeptKind)BinaryPrimitives.ReadUInt32LittleEndian(e);
        entry = new KeptEntry(kind, BinaryPrimitives.ReadUInt64LittleEndian(e[8..]), BinaryPrimitives.ReadUInt64LittleEndian(e[16..]));
        return kind is KeptKind.Handle or KeptKind.LockOwner;
    }
}
