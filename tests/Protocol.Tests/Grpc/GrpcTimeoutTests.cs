using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Protocol.Tests.Grpc;

public sealed class GrpcTimeoutTests
{
    [Theory]
    [InlineData("1H", 36_000_000_000L)]
    [InlineData("2M", 1_200_000_000L)]
    [InlineData("3S", 30_000_000L)]
    [InlineData("250m", 2_500_000L)]
    [InlineData("7u", 70L)]
    [InlineData("100n", 1L)]
    [InlineData("1n", 1L)]         // sub-tick rounds up, never to zero
    [InlineData("0n", 0L)]
    [InlineData("00000000S", 0L)]
    [InlineData("99999999H", 99_999_999L * 36_000_000_000L)]
    public void TryParse_AcceptsEveryUnit(string value, long ticks)
    {
        Assert.True(GrpcTimeout.TryParse(value, out TimeSpan timeout));
        Assert.Equal(ticks, timeout.Ticks);
    }

    [Theory]
    [InlineData("")]
    [InlineData("S")]
    [InlineData("10")]
    [InlineData("123456789S")]  // 9 digits
    [InlineData("10s")]         // unit letters are case-sensitive: 's' is not a unit
    [InlineData("10h")]
    [InlineData("-1S")]
    [InlineData(" 1S")]
    [InlineData("1.5S")]
    [InlineData("1SS")]
    public void TryParse_RejectsMalformedValues(string value)
        => Assert.False(GrpcTimeout.TryParse(value, out _));

    [Theory]
    [InlineData(0L, "0n")]
    [InlineData(-5L, "0n")]
    [InlineData(1L, "100n")]
    [InlineData(999_999L, "99999900n")]
    [InlineData(1_000_000L, "100000u")]            // 100 ms
    [InlineData(50_000_000L, "5000000u")]          // 5 s
    [InlineData(1_000_000_000L, "100000m")]        // 100 s
    [InlineData(36_000_000_000L, "3600000m")]      // 1 h
    [InlineData(864_000_000_000_000L, "86400000S")] // 1000 days
    public void Format_UsesTheFinestUnitThatFits(long ticks, string expected)
        => Assert.Equal(expected, GrpcTimeout.Format(TimeSpan.FromTicks(ticks)));

    [Fact]
    public void Format_NeverShortensAndRoundTrips()
    {
        var random = new Random(1234);
        for (int i = 0; i < 2000; i++)
        {
            var t = TimeSpan.FromTicks((long)(random.NextDouble() * TimeSpan.FromDays(20000).Ticks) >> random.Next(0, 50));
            string text = GrpcTimeout.Format(t);
            Assert.InRange(text.Length, 2, 9);
            Assert.True(GrpcTimeout.TryParse(text, out TimeSpan parsed), text);
            Assert.True(parsed >= t, $"{t} became {text} = {parsed}");
            // Rounding up costs at most one unit of the chosen resolution. Units step by at most
            // 1000, so a value that no longer fits 8 digits in one unit is at least 100,000 of
            // the next: the relative error stays below 1e-5.
            Assert.True((parsed - t).Ticks <= Math.Max(1, t.Ticks / 99_999), $"{t} became {parsed}");
        }
        Assert.Equal("99999999H", GrpcTimeout.Format(TimeSpan.MaxValue));
    }
}
