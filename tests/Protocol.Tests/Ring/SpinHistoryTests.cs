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
    public void ASpinThatFindsItsAnswerEndsTheBackOff()
    {
        var history = new SpinHistory();
        for (int i = 0; i < 5; i++)
        {
            Assert.True(history.NextWaitSpins());
            history.RanOut();
            Spinning(ref history, history.Skipping);
        }
        Assert.True(history.NextWaitSpins());
        history.Found();
        Assert.True(history.NextWaitSpins());
        history.RanOut();
        Assert.Equal(1, history.Skipping);
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
        var history = new SpinHistory();
        int spun = 0;
        const int waits = 10_000;
        for (int i = 0; i < waits; i++)
        {
            if (!history.NextWaitSpins()) continue;
            spun++;
            history.RanOut();
        }
        // Seven spins to reach the cap, then one per MaxSkipped + 1 waits.
        Assert.True(spun <= 7 + waits / (SpinHistory.MaxSkipped + 1) + 1, $"{spun} spins in {waits} waits");
    }
}
