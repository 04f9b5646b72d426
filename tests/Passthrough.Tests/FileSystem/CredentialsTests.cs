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
            using (Credentials.Enter(enabled: true, 1234, 5678, logger))
            {
                Assert.Equal(1234, Libc.setfsuid(uint.MaxValue));
                Assert.Equal(5678, Libc.setfsgid(uint.MaxValue));
            }
            Assert.Equal(0, Libc.setfsuid(uint.MaxValue));
            Assert.Equal(0, Libc.setfsgid(uint.MaxValue));
        });
        Assert.Equal(0, logger.Errors);
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
