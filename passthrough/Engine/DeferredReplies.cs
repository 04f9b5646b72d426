namespace Hypervisor.Passthrough.Engine;

/// <summary>
/// Where a request came from, as the transport needs it to send a reply that the engine finishes later: the queue
/// (ring queue index; 0 for /dev/fuse) and the transport's tag for the request.
/// </summary>
public readonly record struct ReplyRoute(int Queue, ulong Tag);

/// <summary>
/// A transport that accepts replies after <see cref="FuseEngine.Handle(ReadOnlySpan{byte}, Span{byte}, IDeferredReplySink?, ReplyRoute)"/>
/// returned <see cref="FuseEngine.Deferred"/>: a SETLKW that must wait for a lock is answered from the engine's lock
/// waiter (or from the thread that handled the INTERRUPT), never from the thread that received it.
/// </summary>
public interface IDeferredReplySink
{
    /// <summary>Sends <paramref name="reply"/> (a complete fuse_out_header frame) for the request at <paramref name="route"/>.</summary>
    void SendDeferred(ReplyRoute route, ReadOnlySpan<byte> reply);

    /// <summary>
    /// Whether the client behind this transport sends INTERRUPT when a waiting caller gets a signal (the host
    /// kernel on /dev/fuse does). Where it does not, a waiter that was killed cannot be told from one that still
    /// waits, so the engine bounds how long a request waits for a lock held by another of the client's owners.
    /// </summary>
    bool SendsInterrupts => true;
}
