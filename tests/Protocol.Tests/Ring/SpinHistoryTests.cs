using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Ring;

public class SpinHistoryTests
{
    /// <summary>How many of the next <paramref name="waits"/> waits would spin (each call counts as one wait).</summary>
    private static int Spinning(ref SpinHistory history, int waits)
    {
        int spun = 0;
        for (int i = 0; i < waits; i++)
            if (history.NextWaitSpins()) spun++;
        return spun;
    }

    /// <summary>
    /// How many of <paramref name="waits"/> waits of a new history spin, when the spin of wait <c>i</c> finds its answer
    /// if <paramref name="pays"/>(i) and runs out otherwise.
    /// </summary>
    private static int SpinsIn(int waits, Func<int, bool> pays)
    {
        var history = new SpinHistory();
        int spun = 0;
        for (int i = 0; i < waits; i++)
        {
            if (!history.NextWaitSpins()) continue;
            spun++;
            if (pays(i)) history.Found(); else history.RanOut();
        }
        return spun;
    }

    [Fact]
    public void ANewHistorySpinsEveryWait()
    {
        var history = new SpinHistory();
        Assert.Equal(10, Spinning(ref history, 10));
    }

    [Fact]
    public void SpinsThatFindTheirAnswerKeepSpinning()
    {
        var history = new SpinHistory();
        for (int i = 0; i < 100; i++)
        {
            Assert.True(history.NextWaitSpins());
            history.Found();
        }
    }

    [Fact]
    public void EachSpinThatRunsOutDoublesTheWaitsThatSleepAtOnce()
    {
        var history = new SpinHistory();
        foreach (int skipped in new[] { 1, 2, 4, 8, 16, 32, 64, 64, 64 })
        {
            Assert.True(history.NextWaitSpins());
            history.RanOut();
            Assert.Equal(skipped, history.Skipping);
            Assert.Equal(0, Spinning(ref history, skipped));
        }
        Assert.True(history.NextWaitSpins());
    }

    [Fact]
    public void EachSpinThatFindsItsAnswerHalvesTheBackOff()
    {
        var history = new SpinHistory();
        for (int i = 0; i < 5; i++)
        {
            Assert.True(history.NextWaitSpins());
            history.RanOut();
            Spinning(ref history, history.Skipping);
        }
        // Backing off 16 waits after each spin that runs out; two spins that pay bring it down to 4.
        Assert.True(history.NextWaitSpins());
        history.Found();
        Assert.True(history.NextWaitSpins());
        history.Found();
        Assert.True(history.NextWaitSpins());
        history.RanOut();
        Assert.Equal(8, history.Skipping);
    }

    [Fact]
    public void ASpinThatFindsItsAnswerAfterOneThatRanOutLetsEveryWaitSpin()
    {
        var history = new SpinHistory();
        history.NextWaitSpins();
        history.RanOut();
        Assert.False(history.NextWaitSpins());
        Assert.True(history.NextWaitSpins());
        history.Found();
        Assert.Equal(10, Spinning(ref history, 10));
    }

    [Fact]
    public void OneQuickAnswerAmongThreeLateOnesStopsTheSpinning()
    {
        const int waits = 4000;
        int spun = SpinsIn(waits, i => i % 4 == 3);
        Assert.True(spun < waits / 8, $"{spun} spins in {waits} waits");
    }

    [Fact]
    public void MostlyQuickAnswersKeepSpinning()
    {
        const int waits = 4000;
        int spun = SpinsIn(waits, i => i % 8 != 7);
        Assert.True(spun > waits * 3 / 4, $"{spun} spins in {waits} waits");
    }

    [Fact]
    public void AWaitAnsweredWithinASpinLetsTheNextWaitSpinWithoutEndingTheBackOff()
    {
        var history = new SpinHistory();
        for (int i = 0; i < 4; i++)
        {
            history.NextWaitSpins();
            history.RanOut();
            if (i < 3) Spinning(ref history, history.Skipping);
        }
        Assert.Equal(8, history.Skipping);
        Assert.False(history.NextWaitSpins());
        history.AnsweredSoon();
        Assert.True(history.NextWaitSpins());
        // That spin ran out as well: the back-off goes on from where it was.
        history.RanOut();
        Assert.Equal(16, history.Skipping);
    }

    [Fact]
    public void AStreamOfLateAnswersSpinsOnceInMaxSkippedWaitsAtMost()
    {
        const int waits = 10_000;
        int spun = SpinsIn(waits, _ => false);
        // Seven spins to reach the cap, then one per MaxSkipped + 1 waits.
        Assert.True(spun <= 7 + waits / (SpinHistory.MaxSkipped + 1) + 1, $"{spun} spins in {waits} waits");
    }
}
