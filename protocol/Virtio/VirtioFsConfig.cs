using System.Buffers.Binary;
using System.Text;

namespace Hypervisor.Protocol.Virtio;

/// <summary>
/// The virtio-fs device configuration space (virtio 1.2, 5.11.4: C <c>struct virtio_fs_config</c>):
/// <c>u8 tag[36]</c>, <c>le32 num_request_queues</c>, <c>le32 notify_buf_size</c> (the last only with
/// VIRTIO_FS_F_NOTIFICATION, which this stack does not offer).
/// </summary>
public readonly record struct VirtioFsConfig
{
    /// <summary>Size of the tag field; a tag of exactly this length is not NUL-terminated.</summary>
    public const int TagSize = 36;
    /// <summary>Offset of <c>num_request_queues</c>.</summary>
    public const int NumRequestQueuesOffset = 36;
    /// <summary>Size of the configuration space including <c>notify_buf_size</c>.</summary>
    public const int Size = 44;

    /// <summary>The mount tag as UTF-8 bytes, 1..36 bytes, no NUL.</summary>
    public ReadOnlyMemory<byte> Tag { get; }
    /// <summary>Number of request queues (queues 1..N; queue 0 is hiprio).</summary>
    public uint NumRequestQueues { get; }

    /// <summary>Creates a configuration; throws <see cref="ArgumentException"/> for an empty or too long tag or zero queues.</summary>
    public VirtioFsConfig(string tag, uint numRequestQueues)
    {
        var bytes = Encoding.UTF8.GetBytes(tag);
        if (bytes.Length == 0 || bytes.Length > TagSize || Array.IndexOf(bytes, (byte)0) >= 0)
            throw new ArgumentException($"The tag must be 1 to {TagSize} bytes of UTF-8 without NUL; '{tag}' is {bytes.Length} bytes.", nameof(tag));
        if (numRequestQueues == 0)
            throw new ArgumentException("The number of request queues must be at least 1.", nameof(numRequestQueues));
        Tag = bytes;
        NumRequestQueues = numRequestQueues;
    }

    /// <summary>Writes the whole configuration space (<see cref="Size"/> bytes) into <paramref name="dest"/>.</summary>
    public void WriteTo(Span<byte> dest)
    {
        dest[..Size].Clear();
        Tag.Span.CopyTo(dest);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[NumRequestQueuesOffset..], NumRequestQueues);
    }
}
