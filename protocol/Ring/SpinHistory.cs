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
/// of waits that sleep at once after it, up to <see cref="MaxSkipped"/>, and every spin that finds what it waited for
/// halves that number. So spinning goes on while most spins pay (a steady stream of quick answers spins as before) and
/// stops while most run out (a stream of late answers, with one quick answer among a few late ones, spins about once
/// in <see cref="MaxSkipped"/> waits). A wait that slept without spinning, but was answered within the length of a
/// spin, lets the next wait spin again (a spin would have found the answer), without shortening the back-off.</para>
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

    /// <summary>The spin found what it waited for: the next wait spins, and the back-off after a spin that runs out halves.</summary>
    public void Found()
    {
        _backoff /= 2;
        _skip = 0;
    }

    /// <summary>The spin ran out and the thread went to sleep: the next waits sleep at once.</summary>
    public void RanOut()
    {
        _backoff = _backoff == 0 ? 1 : Math.Min(2 * _backoff, MaxSkipped);
        _skip = _backoff;
    }

    /// <summary>A wait that did not spin was answered within the length of a spin: the next wait spins again.</summary>
    public void AnsweredSoon() => _skip = 0;
}
