using System.Diagnostics;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The busy-poll that both ends of a ring run before sleeping on a doorbell. It spins at most
/// <see cref="ShmRingSet.SpinDuration"/>, pausing between looks for the first half and yielding the
/// CPU for the second (on a busy machine the peer may be waiting for exactly this CPU to produce
/// what we wait for). It is adaptive: a wait that ended in a long sleep halves the next spin, so a
/// loaded machine or an idle peer does not burn CPU that the peer may need; a short wait restores it.
/// One per waiting end, used by one thread at a time.
/// </summary>
internal struct AdaptiveSpin
{
    private long _budget = long.MaxValue; // Stopwatch ticks the next spin may take
    private long _max;
    private long _started;
    private long _until;
    private long _yieldFrom;

    public AdaptiveSpin()
    {
    }

    /// <summary>Starts a wait of at most <paramref name="maxTicks"/> of spinning.</summary>
    public void Begin(long maxTicks)
    {
        _max = maxTicks;
        _started = Stopwatch.GetTimestamp();
        _until = _started + Math.Min(_budget, maxTicks);
        _yieldFrom = _started + maxTicks / 2;
    }

    /// <summary>Pauses or yields once before the caller looks again; false once the spin is used up.</summary>
    public bool Spin()
    {
        long now = Stopwatch.GetTimestamp();
        if (now >= _until) return false;
        if (now >= _yieldFrom) Thread.Yield(); else Thread.SpinWait(4);
        return true;
    }

    /// <summary>After a wait that went to sleep: sizes the next spin by how long this wait took.</summary>
    public void Slept()
    {
        long waited = Stopwatch.GetTimestamp() - _started;
        _budget = waited <= _max ? _max : Math.Min(_budget, _max) / 2;
    }
}
