namespace Hypervisor.Protocol.Ring;

/// <summary>
/// Whether a waiting thread's recent spins have paid, to decide whether its next wait spins at all. A spin pays only
/// when what it waits for arrives while it spins. The affinity masks (<see cref="SpinPolicy"/>) say whether a spin
/// can pay: whether the peer may run on another CPU meanwhile. They cannot say whether that CPU is free: when the
/// peer answers late (a guest that takes longer to send its next request than any spin lasts, a peer woken on a CPU
/// that other threads hold, among them the guest's own vCPUs), each spin that runs out is CPU time taken from whoever
/// else could have run, and is followed by the sleep it meant to save. This history decides from outcomes, which
/// cover every such cause alike.
/// <para>After a spin that ran out the next wait sleeps at once; every further spin that runs out doubles the number
/// of waits that sleep at once, up to <see cref="MaxSkipped"/>. A spin that finds what it waited for ends the
/// back-off. A wait that slept without spinning, but was answered within the length of a spin, lets the next wait
/// spin again (a spin would have found the answer), without ending the back-off: if that spin runs out too, the next
/// run of sleeping waits is longer still. So a steady stream of quick answers keeps spinning as before, and a stream
/// of late ones spins once in <see cref="MaxSkipped"/> waits or less.</para>
/// <para>One per waiting thread; not thread-safe.</para>
/// </summary>
public struct SpinHistory
{
    /// <summary>The most waits in a row that sleep at once after spins that ran out.</summary>
    public const int MaxSkipped = 64;

    private int _skip;
    private int _backoff;

    /// <summary>Whether this wait may spin; false while the history is backing off (this counts one skipped wait).</summary>
    public bool NextWaitSpins()
    {
        if (_skip == 0) return true;
        _skip--;
        return false;
    }

    /// <summary>Waits that will still sleep at once.</summary>
    public readonly int Skipping => _skip;

    /// <summary>The spin found what it waited for: spinning pays again.</summary>
    public void Found() => _backoff = _skip = 0;

    /// <summary>The spin ran out and the thread went to sleep: the next waits sleep at once.</summary>
    public void RanOut()
    {
        _backoff = _backoff == 0 ? 1 : Math.Min(2 * _backoff, MaxSkipped);
        _skip = _backoff;
    }

    /// <summary>A wait that did not spin was answered within the length of a spin: the next wait spins again.</summary>
    public void AnsweredSoon() => _skip = 0;
}
