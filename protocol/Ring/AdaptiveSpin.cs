using System.Diagnostics;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// The busy-poll that both ends of a ring run before sleeping on a doorbell. It spins at most
/// <see cref="ShmRingSet.SpinDuration"/>, pausing between looks for the first half and yielding the
/// CPU for the second (on a busy machine the peer may be waiting for exactly this CPU to produce
/// what we wait for). It is adaptive: a wait that ended in a long sleep halves the next spin, so a
/// loaded machine or an idle peer does not burn CPU that the peer may need; a short wait restores it.
/// "Short" allows for a wake-up: a wait up to 8 times the spin counts as short, because waking from a
/// sleep on a busy machine can take longer than the spin itself, and a stricter limit lets the budget fall
/// to nothing under a steady load and stay there. Whether a wait spins at all follows the outcomes of the
/// recent spins (<see cref="SpinHistory"/>): spins that keep running out are skipped.
/// One per waiting end, used by one thread at a time.
/// </summary>
internal struct AdaptiveSpin
{
    private long _budget = long.MaxValue; // Stopwatch ticks the next spin may take
    private long _max;
    private long _started;
    private long _until;
    private long _yieldFrom;
    private bool _spinning;
    private SpinHistory _history;

    public AdaptiveSpin()
    {
    }

    private SpinCredit _credit;

    /// <summary>
    /// When above 0, the spin takes at most one part in this many of the time that passes (time is earned at that
    /// rate, at most four spins banked); 0 leaves it unlimited.
    /// </summary>
    public int CpuShare
    {
        readonly get => _credit.Share;
        set => _credit.Share = value;
    }

    /// <summary>Starts a wait of at most <paramref name="maxTicks"/> of spinning.</summary>
    public void Begin(long maxTicks)
    {
        _max = maxTicks;
        _started = Stopwatch.GetTimestamp();
        _spinning = maxTicks > 0 && _history.NextWaitSpins();
        _until = _spinning ? _started + Math.Min(_budget, maxTicks) : _started;
        _yieldFrom = _started + maxTicks / 2;
        _credit.Earn(_started, 4 * maxTicks);
    }

    /// <summary>Pauses or yields once before the caller looks again; false once the spin is used up.</summary>
    public bool Spin()
    {
        long now = Stopwatch.GetTimestamp();
        if (!_credit.Charge(now) || now >= _until) return false;
        if (now >= _yieldFrom) Thread.Yield(); else Thread.SpinWait(4);
        return true;
    }

    /// <summary>The wait ended while it spun: the spin paid.</summary>
    public void Found()
    {
        if (_spinning) _history.Found();
    }

    /// <summary>
    /// After a wait that went to sleep: sizes the next spin by how long this wait took, and notes whether its spin ran
    /// out, or whether a wait that did not spin was answered within a spin's length.
    /// </summary>
    public void Slept()
    {
        long waited = Stopwatch.GetTimestamp() - _started;
        _budget = waited <= 8 * _max ? _max : Math.Min(_budget, _max) / 2;
        if (_spinning) _history.RanOut();
        else if (_max > 0 && waited <= _max) _history.AnsweredSoon();
    }
}
