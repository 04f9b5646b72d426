namespace Hypervisor.Vdev.Device;

/// <summary>A virtqueue of the virtio-fs device: 0 is hiprio, 1..N are request queues.</summary>
public readonly record struct QueueIndex(ushort Value)
{
    /// <summary>True for queue 0.</summary>
    public bool IsHiprio => Value == 0;
    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>What the device tells the transport factory about the share it serves.</summary>
/// <param name="Tag">The virtio-fs mount tag.</param>
/// <param name="RequestQueues">Number of request queues (queues 1..N); queue 0 is hiprio.</param>
/// <param name="QueueSize">Maximum entries per queue, hence the most requests one queue has in flight.</param>
public sealed record FuseDeviceInfo(string Tag, int RequestQueues, int QueueSize);

/// <summary>
/// Creates the share's transport (the shm ring to the passthrough daemon, or a test double) once per
/// device. The transport outlives VMM connections.
/// </summary>
public interface IFuseTransportFactory
{
    /// <summary>Creates the transport; it reports replies and failures through <paramref name="sink"/>.</summary>
    IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink);
}

/// <summary>
/// The seam between the virtqueues and the daemon. Each queue's worker thread calls <see cref="Submit"/>
/// for every request chain it pops, in order; calls for different queues come from different threads
/// concurrently, calls for one queue never overlap.
/// </summary>
public interface IFuseTransport : IDisposable
{
    /// <summary>
    /// Hands one FUSE request frame to the daemon. The frame is the concatenation of
    /// <see cref="VirtqueueRequest.Readable"/>; copy it (for example straight into the ring's shared memory)
    /// before returning: the request object and its readable segments may be reused afterwards.
    /// When <see cref="VirtqueueRequest.ExpectsReply"/> is true, the transport must later call
    /// <see cref="IFuseCompletionSink.Complete(ulong, ReadOnlySpan{byte})"/> with <see cref="VirtqueueRequest.Tag"/>
    /// exactly once, from any thread; when false (FORGET, BATCH_FORGET, INTERRUPT) it must not, and the
    /// device returns the chain to the guest as soon as this method returns.
    /// May block the calling queue (backpressure when the ring is full), but must return promptly once the
    /// daemon is dead or <see cref="VirtqueueRequest.Cancellation"/> fires (the ring is stopping). Returns false when the frame could not be delivered (daemon gone); the device then
    /// answers the guest with EIO itself.
    /// </summary>
    bool Submit(VirtqueueRequest request);

    /// <summary>
    /// The queue's worker has submitted every chain it found available and is about to wait for the next kick.
    /// A transport may hold back waking its peer for the frames submitted since the last call (one wake-up per
    /// batch instead of one per frame); it must wake it now. Called on the queue's worker thread.
    /// </summary>
    void Flush(QueueIndex queue) { }
}

/// <summary>How the transport reports back to the device. All members are thread-safe.</summary>
public interface IFuseCompletionSink
{
    /// <summary>
    /// Completes request <paramref name="tag"/> with <paramref name="reply"/> (a whole FUSE reply: out header
    /// and body), which the device scatters into the chain's device-writable descriptors, then returns the
    /// chain to the guest. A tag that is unknown, already completed, or from before a ring stop or VMM
    /// reconnect is ignored (returns false). A reply larger than the guest's writable space is replaced by
    /// an EIO reply.
    /// </summary>
    bool Complete(ulong tag, ReadOnlySpan<byte> reply);

    /// <summary>
    /// Same as <see cref="Complete(ulong, ReadOnlySpan{byte})"/>, but the guest's interrupt
    /// for this completion is held back until <see cref="NotifyGuest"/> for the request's queue, so a batch of
    /// replies raises one interrupt. A transport that uses it must call <see cref="NotifyGuest"/> before it
    /// waits for more replies.
    /// </summary>
    bool CompleteQuietly(ulong tag, ReadOnlySpan<byte> reply);

    /// <summary>
    /// Raises the interrupt held back by <see cref="CompleteQuietly"/> on <paramref name="queue"/>, unless the
    /// driver suppresses it (used_event with EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT without).
    /// </summary>
    void NotifyGuest(QueueIndex queue);

    /// <summary>
    /// The daemon died or the transport broke for good. The device answers every outstanding request of
    /// every queue with a FUSE error reply (error = -EIO; length 0 where no out header fits), answers every
    /// later request the same way, and logs this once.
    /// </summary>
    void TransportFailed(string reason);
}

/// <summary>
/// A transport whose replies each queue's worker thread collects itself, between the chains it submits, instead of
/// threads of the transport's own: one thread per queue both feeds the daemon and returns its replies to the guest,
/// so a burst of requests costs the vdev one wake-up rather than one per thread it would cross. The worker calls
/// <see cref="Poll"/> whenever it wakes, and before it sleeps <see cref="ArmWakeup"/>, then waits on the descriptors
/// that returns as well as its kick; after the wait, <see cref="DisarmWakeup"/>.
/// While no worker runs (a stopped ring), replies stay with the transport until one runs again, or until whoever
/// stops the ring polls for them (draining on GET_VRING_BASE).
/// </summary>
public interface IPolledFuseTransport : IFuseTransport
{
    /// <summary>
    /// Delivers every reply already available on <paramref name="queue"/> through the sink, raising one interrupt
    /// for them, and reports a daemon that is gone through <see cref="IFuseCompletionSink.TransportFailed"/>.
    /// Never blocks; returns how many replies it delivered. One thread per queue at a time.
    /// </summary>
    int Poll(QueueIndex queue);

    /// <summary>
    /// Asks to be woken at <paramref name="queue"/>'s next reply. Returns false when a reply (or the daemon's
    /// end) is already there: poll instead of sleeping. Otherwise the caller also waits for
    /// <paramref name="replyFd"/> and <paramref name="peerExitFd"/> to become readable; both are -1 when there is
    /// nothing to wait for (the transport has failed), and then no <see cref="DisarmWakeup"/> follows.
    /// </summary>
    bool ArmWakeup(QueueIndex queue, out int replyFd, out int peerExitFd);

    /// <summary>
    /// Ends the wait that <see cref="ArmWakeup"/> prepared with a <c>replyFd</c> (exactly once per such call);
    /// <paramref name="replyRang"/> and <paramref name="peerExited"/> say which of its descriptors were readable.
    /// </summary>
    void DisarmWakeup(QueueIndex queue, bool replyRang, bool peerExited);

    /// <summary>
    /// The pid of the process that produces the replies, as this process names it; 0 when unknown (then it counts as
    /// running wherever this process may). Read by a queue's worker to decide whether polling for replies can pay.
    /// </summary>
    int PeerPid => 0;
}

/// <summary>
/// A transport that lets the daemon reach guest memory itself: it is told of every memory table the device
/// installs, on the vhost-user control thread, before the table's requests can name it.
/// </summary>
internal interface IGuestMemoryTransport
{
    /// <summary>
    /// <paramref name="table"/> (with a reference the device holds for the call) is now the device's table. The
    /// transport may hand it to the daemon and, once the daemon acknowledged it, mark it
    /// <see cref="Virtio.GuestMemoryTable.MarkDaemonMapped"/> for itself; it must not block for long.
    /// </summary>
    void MemoryReplaced(Virtio.GuestMemoryTable table);
}
