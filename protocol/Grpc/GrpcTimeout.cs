namespace Hypervisor.Protocol.Grpc;

/// <summary>
/// The <c>grpc-timeout</c> header of PROTOCOL-HTTP2.md:
/// <c>TimeoutValue TimeoutUnit</c>, where the value is 1 to 8 ASCII digits and the unit one of
/// <c>H</c> (hours), <c>M</c> (minutes), <c>S</c> (seconds), <c>m</c> (milliseconds),
/// <c>u</c> (microseconds), <c>n</c> (nanoseconds).
/// </summary>
public static class GrpcTimeout
{
    /// <summary>Largest value the 8-digit field can carry.</summary>
    public const long MaxValue = 99_999_999;

    /// <summary>
    /// Parses a header value. Anything but 1–8 digits followed by exactly one unit letter is
    /// rejected. Sub-tick durations (below 100 ns) round up, so a non-zero timeout never
    /// becomes zero.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<char> value, out TimeSpan timeout)
    {
        timeout = default;
        if (value.Length < 2 || value.Length > 9)
            return false;
        long n = 0;
        ReadOnlySpan<char> digits = value[..^1];
        foreach (char c in digits)
        {
            if (c < '0' || c > '9')
                return false;
            n = n * 10 + (c - '0');
        }
        long ticks;
        switch (value[^1])
        {
            case 'H': ticks = n * TimeSpan.TicksPerHour; break;
            case 'M': ticks = n * TimeSpan.TicksPerMinute; break;
            case 'S': ticks = n * TimeSpan.TicksPerSecond; break;
            case 'm': ticks = n * TimeSpan.TicksPerMillisecond; break;
            case 'u': ticks = n * TimeSpan.TicksPerMicrosecond; break;
            case 'n': ticks = (n + 99) / 100; break;
            default: return false;
        }
        // 99,999,999 hours is 3.6e18 ticks, below long.MaxValue (9.2e18): no overflow possible.
        timeout = TimeSpan.FromTicks(ticks);
        return true;
    }

    /// <summary>
    /// Formats <paramref name="timeout"/> in the finest unit whose value fits in 8 digits,
    /// rounding up so the receiver never sees a shorter deadline than the caller set.
    /// Negative timeouts are sent as <c>0n</c> (already expired).
    /// </summary>
    public static string Format(TimeSpan timeout)
    {
        if (timeout <= TimeSpan.Zero)
            return "0n";
        long ticks = timeout.Ticks;
        // Nanoseconds: ticks * 100 must fit 8 digits.
        if (ticks <= MaxValue / 100)
            return Value(ticks * 100, 'n');
        if (CeilDiv(ticks, TimeSpan.TicksPerMicrosecond) is var us && us <= MaxValue)
            return Value(us, 'u');
        if (CeilDiv(ticks, TimeSpan.TicksPerMillisecond) is var ms && ms <= MaxValue)
            return Value(ms, 'm');
        if (CeilDiv(ticks, TimeSpan.TicksPerSecond) is var s && s <= MaxValue)
            return Value(s, 'S');
        if (CeilDiv(ticks, TimeSpan.TicksPerMinute) is var min && min <= MaxValue)
            return Value(min, 'M');
        return Value(Math.Min(CeilDiv(ticks, TimeSpan.TicksPerHour), MaxValue), 'H');

        static long CeilDiv(long a, long b) => a / b + (a % b != 0 ? 1 : 0);
        static string Value(long v, char unit) => v.ToString(System.Globalization.CultureInfo.InvariantCulture) + unit;
    }
}
