using Hypervisor.Interop;
using Hypervisor.Passthrough.FileSystem;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>
/// <see cref="Credentials"/> and the fsuid/fsgid checks under it. Each test runs on a thread of its own: switching the
/// ids (and the private umask that comes with Credentials) must not leak into threads that run other tests.
/// </summary>
public sealed class CredentialsTests
{
    [Fact]
    [Trait("Category", "Root")]
    public void SetFsUidAndGid_ReportWhetherTheIdTook()
    {
        Assert.True(Libc.geteuid() == 0, "this test switches fsuid and needs root");
        OnOwnThread(() =>
        {
            Assert.True(Libc.SetFsUid(1234));
            Assert.True(Libc.SetFsGid(5678));
            // -1 is no id: the kernel keeps the current ones, and the check says so.
            Assert.False(Libc.SetFsUid(uint.MaxValue));
            Assert.False(Libc.SetFsGid(uint.MaxValue));
            Assert.Equal(1234, Libc.setfsuid(uint.MaxValue));
            Assert.Equal(5678, Libc.setfsgid(uint.MaxValue));
            Assert.True(Libc.SetFsUid(0));
            Assert.True(Libc.SetFsGid(0));
        });
    }

    [Fact]
    [Trait("Category", "Root")]
    public void TheCallersIdsHoldInsideTheScope_AndTheThreadsComeBackAfterIt()
    {
        Assert.True(Libc.geteuid() == 0, "this test switches fsuid and needs root");
        var logger = new ErrorCounter();
        OnOwnThread(() =>
        {
            using (Credentials.Enter(enabled: true, 1234, 5678, Hypervisor.Passthrough.Engine.FuseContext.NoGroup, logger))
            {
                Assert.Equal(1234, Libc.setfsuid(uint.MaxValue));
                Assert.Equal(5678, Libc.setfsgid(uint.MaxValue));
            }
            Assert.Equal(0, Libc.setfsuid(uint.MaxValue));
            Assert.Equal(0, Libc.setfsgid(uint.MaxValue));
        });
        Assert.Equal(0, logger.Errors);
    }

    [Fact]
    [Trait("Category", "Root")]
    public void ASupplementaryGroupHoldsOnThisThreadOnly_AndTheThreadsGroupsComeBackAfterIt()
    {
        Assert.True(Libc.geteuid() == 0, "this test sets supplementary groups and needs root");
        var logger = new ErrorCounter();
        Span<uint> process = stackalloc uint[64];
        var processCount = Libc.GetThreadGroups(process);
        Assert.True(processCount >= 0);
        var before = process[..processCount].ToArray();
        uint[]? inside = null;
        uint[]? otherThreadInside = null;
        // A thread that already runs (a new one would inherit the creating thread's credentials) samples its groups
        // while the switch holds: the raw syscall changed the switching thread only.
        using var sample = new ManualResetEventSlim();
        using var sampled = new ManualResetEventSlim();
        var other = new Thread(() =>
        {
            sample.Wait();
            otherThreadInside = ThreadGroups();
            sampled.Set();
        });
        other.Start();
        OnOwnThread(() =>
        {
            using (Credentials.Enter(enabled: true, 1234, 5678, 4321, logger))
            {
                inside = ThreadGroups();
                sample.Set();
                sampled.Wait();
            }
            Assert.Equal(before, ThreadGroups());
        });
        other.Join();
        Assert.Equal([4321u], inside!);
        Assert.Equal(before, otherThreadInside!);
        Assert.Equal(before, ThreadGroups());
        Assert.Equal(0, logger.Errors);
    }

    private static uint[] ThreadGroups()
    {
        Span<uint> groups = stackalloc uint[64];
        var n = Libc.GetThreadGroups(groups);
        Assert.True(n >= 0);
        return groups[..n].ToArray();
    }

    private static void OnOwnThread(Action body)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        if (failure is not null) throw new Xunit.Sdk.XunitException($"on the test's own thread: {failure}");
    }

    private sealed class ErrorCounter : ILogger
    {
        public int Errors;

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error) Interlocked.Increment(ref Errors);
        }
    }
}
