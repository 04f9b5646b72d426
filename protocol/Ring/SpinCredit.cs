namespace Hypervisor.Protocol.Ring;

/// <summary>
/// Holds a spinning thread to a share of the time that passes: spin time is earned at one part in
/// <see cref="Share"/> of the time between spins, at most a given cap banked, and each look charges the time
/// since the previous one. Used by <see cref="AdaptiveSpin"/> (a ring consumer's <c>SpinCpuShare</c>) and by the
/// vdev's queue workers waiting for replies. Timestamps are <see cref="System.Diagnostics.Stopwatch"/> ticks.
/// One per spinning thread.
/// </summary>
public struct SpinCredit
{
    private long _credit, _earnedAt, _chargedAt;

    /// <summary>One part in this many of the time passing may be spent spinning; 0 leaves spinning unlimited.</summary>
    public int Share { get; set; }

    /// <summary>Starts a spin at <paramref name="now"/>: adds the time earned since the last start, at most <paramref name="cap"/> in all.</summary>
    public void Earn(long now, long cap)
    {
        if (Share <= 0) return;
        _credit = Math.Min(_credit + (now - _earnedAt) / Share, cap);
        _earnedAt = _chargedAt = now;
    }

    /// <summary>Charges the time spun since the last charge (or start); false once the credit is used up.</summary>
    public bool Charge(long now)
    {
        if (Share <= 0) return true;
        _credit -= now - _chargedAt;
        _chargedAt = now;
        return _credit > 0;
    }
}
