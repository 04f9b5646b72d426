using Hypervisor.Protocol.Share;

namespace Hypervisor.Protocol.Tests.Share;

public class QueueCpusTests
{
    [Theory]
    [InlineData("0", new[] { 0 })]
    [InlineData("1,0", new[] { 1, 0 })]
    [InlineData("2-4", new[] { 2, 3, 4 })]
    [InlineData("0-1, 3", new[] { 0, 1, 3 })]
    [InlineData("1,1", new[] { 1, 1 })]
    public void ListsAndRangesAreReadInRequestQueueOrder(string text, int[] expected)
    {
        Assert.True(QueueCpus.TryParse(text, out var cpus));
        Assert.Equal(expected, cpus.Cpus);
        Assert.Equal(expected[0], cpus.CpuOf(1));
        Assert.Equal(string.Join(',', expected), cpus.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("a")]
    [InlineData("1-0")]
    [InlineData("0,,1")]
    [InlineData("-1")]
    [InlineData("1-2-3")]
    [InlineData("1024")]
    public void AnythingElseIsRefused(string text) => Assert.False(QueueCpus.TryParse(text, out _));

    [Fact]
    public void WithoutAList_TwoOrMoreRequestQueuesGoOnePerAllowedCpuInTurn_OneQueueIsLeftFree()
    {
        var allowed = QueueCpus.AllowedCpus();
        Assert.True(allowed.Count >= 2, "this test needs two CPUs");
        Assert.Null(QueueCpus.Spread(1));
        Assert.Equal([allowed[0], allowed[1]], QueueCpus.Spread(2)!.Cpus);
        // More queues than CPUs: round the list again.
        var many = QueueCpus.Spread(allowed.Count + 1)!;
        Assert.Equal([.. allowed, allowed[0]], many.Cpus);
        Assert.Null(many.Check(allowed.Count + 1, "queue_cpus"));
        // Counted from a later CPU, for the next share of a VM configuration.
        Assert.Equal([allowed[1], allowed[2 % allowed.Count]], QueueCpus.Spread(2, first: 1)!.Cpus);
        Assert.Equal([allowed[0], allowed[1]], QueueCpus.Spread(2, first: allowed.Count)!.Cpus);
    }

    [Fact]
    public void NoneAsksForNoPinning()
    {
        Assert.True(QueueCpus.IsNone("none"));
        Assert.True(QueueCpus.IsNone(" none "));
        Assert.False(QueueCpus.IsNone("None"));
        Assert.False(QueueCpus.IsNone("0"));
        Assert.False(QueueCpus.IsNone(null));
    }

    [Fact]
    public void TheListMustGiveOneCpuPerRequestQueue_EachOneThisProcessMayRunOn()
    {
        var allowed = QueueCpus.AllowedCpus();
        // The kernel writes the same list in the same notation.
        var kernel = File.ReadAllLines("/proc/self/status").First(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)).Split(':')[1].Trim();
        Assert.True(QueueCpus.TryParse(kernel, out var listed));
        Assert.Equal(listed.Cpus, allowed);
        Assert.True(QueueCpus.TryParse($"{allowed[0]}", out var one));
        Assert.Null(one.Check(1, "--queue-cpus"));
        Assert.Equal($"--queue-cpus {allowed[0]} lists 1 CPU for 2 request queues; give one CPU per request queue.", one.Check(2, "--queue-cpus"));
        Assert.True(QueueCpus.TryParse($"{allowed[0]},1023", out var far));
        Assert.Equal($"--queue-cpus {allowed[0]},1023 names CPU 1023, which this process may not run on (allowed: {kernel}); choose among those.", far.Check(2, "--queue-cpus"));
    }

    [Fact]
    public void APinnedThreadRunsOnItsCpuAlone()
    {
        var allowed = QueueCpus.AllowedCpus();
        int cpu = allowed[^1];
        IReadOnlyList<int>? seen = null;
        int errno = -1;
        var thread = new Thread(() =>
        {
            if (QueueCpus.TryPinCurrentThread(cpu, out errno)) seen = QueueCpus.AllowedCpus();
        });
        thread.Start();
        thread.Join();
        Assert.Equal(0, errno);
        Assert.Equal([cpu], seen);
        // Only that thread moved.
        Assert.Equal(allowed, QueueCpus.AllowedCpus());
    }

    [Fact]
    public void ACpuTheKernelRefusesLeavesTheThreadWhereItWas()
    {
        var allowed = QueueCpus.AllowedCpus();
        bool pinned = true;
        int errno = 0;
        IReadOnlyList<int>? after = null;
        var thread = new Thread(() =>
        {
            pinned = QueueCpus.TryPinCurrentThread(QueueCpus.MaxCpu, out errno);
            after = QueueCpus.AllowedCpus();
        });
        thread.Start();
        thread.Join();
        Assert.False(pinned);
        Assert.Equal(22, errno); // EINVAL: no CPU of the mask is online and allowed
        Assert.Equal(allowed, after);
    }
}
