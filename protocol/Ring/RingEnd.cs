using System.Runtime.CompilerServices;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// What the two ends of one ring share: its control block and data area in the mapping, its two doorbells, and
/// the wait that spins, then sleeps on a doorbell until the end can go on. <see cref="RingProducer"/> writes the
/// ring, <see cref="RingConsumer"/> reads it.
/// </summary>
public abstract unsafe class RingEnd
{
    private protected readonly ShmRingSet _set;
    private protected readonly byte* _control;
    private protected readonly byte* _data;
    private protected readonly ulong _size;
    private protected readonly ulong _mask;
    private protected readonly int _readyBell; // rung by the producer after a commit; the consumer sleeps on it
    private protected readonly int _freedBell; // rung by the consumer after a release; the producer sleeps on it
    private protected AdaptiveSpin _spin = new();
    private protected bool _broken;
    private SafeFd? _cancelFd;

    private protected RingEnd(ShmRingSet set, int queue, byte* control, byte* data, int readyBell, int freedBell)
    {
        _set = set;
        Queue = queue;
        _control = control;
        _data = data;
        _size = (ulong)set.DirectionBytes;
        _mask = _size - 1;
        _readyBell = readyBell;
        _freedBell = freedBell;
    }

    /// <summary>
    /// Whether a waiting call (<see cref="RingConsumer.Peek"/>, <see cref="RingProducer.Reserve"/>) busy-polls
    /// before it sleeps (default true; the set's <see cref="ShmRingSet.SpinDuration"/> bounds the spin). A queue
    /// whose frames gain nothing from a quick pick-up (the virtio-fs hiprio queue: FORGET, INTERRUPT) turns it off,
    /// so that its thread does not take CPU time from the request queues after each batch, and so does an end
    /// whose peer cannot run beside it on another CPU (<see cref="SpinPolicy"/>): the peer would be waiting for the
    /// CPU the spin holds.
    /// </summary>
    public bool SpinsBeforeSleep { get; set; } = true;

    /// <summary>The queue this ring belongs to.</summary>
    public int Queue { get; }

    /// <summary>Whether the shared memory was found impossible; the ring is then unusable.</summary>
    public bool IsBroken => _broken;

    // Safe: _control points at this ring's 256-byte control block inside the mapping, whose
    // fields are naturally aligned; the mapping outlives every call (Dispose waits for waiters).
    private protected ref ulong SharedTail => ref Unsafe.AsRef<ulong>(_control + RingLayout.OffTail);
    private protected ref ulong SharedHead => ref Unsafe.AsRef<ulong>(_control + RingLayout.OffHead);
    private protected ref int ProducerWaiting => ref Unsafe.AsRef<int>(_control + RingLayout.OffProducerWaiting);
    private protected ref int ConsumerWaiting => ref Unsafe.AsRef<int>(_control + RingLayout.OffConsumerWaiting);

    /// <summary>The non-blocking step the wait repeats (a reserve or a peek of the pending request).</summary>
    private protected abstract RingStatus Attempt();

    /// <summary>
    /// Repeats <see cref="Attempt"/> while it says WouldBlock: busy-polling for up to <paramref name="spinTicks"/>,
    /// then sleeping on <paramref name="bell"/> with <paramref name="waiting"/> (this end's flag in the control block)
    /// set, until the other end rings it, the timeout passes, the token is cancelled, the peer dies or either side
    /// closes. Returns the last attempt's status, or the reason the wait ended.
    /// </summary>
    private protected RingStatus Wait(ref int waiting, int bell, long spinTicks, TimeSpan timeout, CancellationToken cancellationToken)
    {
        long deadline = Deadline(timeout);
        RingStatus status;
        _spin.Begin(spinTicks);
        while (_spin.Spin())
        {
            status = Attempt();
            if (status != RingStatus.WouldBlock)
            {
                _spin.Found();
                return status;
            }
        }
        // Registered as a waiter so that Dispose on another thread does not unmap the ring
        // while this thread sleeps; once closed, the set refuses new waiters.
        if (!_set.EnterWait()) return Attempt();
        try
        {
            for (;;)
            {
                // Publish "wake me", then look again: what the other end did before seeing the flag is
                // caught by the re-check, what it does after rings the doorbell.
                Volatile.Write(ref waiting, 1);
                Interlocked.MemoryBarrier();
                status = Attempt();
                if (status != RingStatus.WouldBlock) break;
                status = _set.Sleep(bell, ref _cancelFd, deadline, cancellationToken);
                Libc.EventFdDrain(bell);
                if (status != RingStatus.Ok)
                {
                    // The other end may have gone on at the last moment; prefer success.
                    RingStatus last = Attempt();
                    if (last != RingStatus.WouldBlock) status = last;
                    break;
                }
            }
            Volatile.Write(ref waiting, 0);
            _spin.Slept();
            return status;
        }
        finally
        {
            _set.ExitWait();
        }
    }

    private static long Deadline(TimeSpan timeout)
    {
        if (timeout == Timeout.InfiniteTimeSpan) return long.MaxValue;
        if (timeout < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), "A ring wait timeout must be zero or more, or Timeout.InfiniteTimeSpan.");
        return Environment.TickCount64 + (long)Math.Ceiling(timeout.TotalMilliseconds);
    }

    internal void DisposeCancelFd() => _cancelFd?.Dispose();
}
