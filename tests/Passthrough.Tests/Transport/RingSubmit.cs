using Hypervisor.Protocol.Ring;

namespace Hypervisor.Passthrough.Tests.Transport;

/// <summary>The vdev's side of a ring queue, as the transport tests play it.</summary>
internal static class RingSubmit
{
    /// <summary>Commits <paramref name="frame"/> to <paramref name="queue"/>'s submission ring with <paramref name="tag"/> and rings the daemon.</summary>
    public static void Submit(RingQueue queue, byte[] frame, ulong tag, RingRecordFlags flags = RingRecordFlags.None)
    {
        Assert.Equal(RingStatus.Ok, queue.Producer.Reserve(frame.Length, out var span, TimeSpan.FromSeconds(30), CancellationToken.None));
        frame.CopyTo(span);
        queue.Producer.Commit(frame.Length, tag, notify: true, flags);
    }
}
