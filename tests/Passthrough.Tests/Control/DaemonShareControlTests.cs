using Grpc.Core;
using Hypervisor.Passthrough.Control;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Allowlist = Hypervisor.Protocol.Control.Allowlist;
using ProtoCachePolicy = Hypervisor.Protocol.Share.CachePolicy;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// <see cref="DaemonShareControl"/> against the real <see cref="LiveSettings"/> the filesystem
/// reads on every request and the engine's real <see cref="FuseCounters"/>.
/// </summary>
public sealed class DaemonShareControlTests
{
    private static LiveSettings NewSettings(Hypervisor.Passthrough.Share.Allowlist? allowlist = null) =>
        new(new ShareSettings { SharedDir = "/srv/data", Tag = "data", Xattr = true, Readonly = true }) { Allowlist = allowlist };

    private static DaemonShareControl NewControl(LiveSettings settings, FuseCounters? counters = null, Action? shutdown = null) =>
        new(settings, counters ?? new FuseCounters(), () => new ShareUsage(2, 17, 4096, 512), shutdown ?? (() => { }));

    [Fact]
    public async Task Setters_ChangeTheLiveSettings()
    {
        LiveSettings settings = NewSettings();
        DaemonShareControl control = NewControl(settings);

        ShareOptions options = await control.SetDirectIoAsync(true, default);
        Assert.True(settings.DirectIo);
        Assert.True(options.DirectIo);

        foreach ((ProtoCachePolicy proto, CachePolicy share) in new[]
                 {
                     (ProtoCachePolicy.Never, CachePolicy.Never), (ProtoCachePolicy.Metadata, CachePolicy.Metadata),
                     (ProtoCachePolicy.Always, CachePolicy.Always), (ProtoCachePolicy.Auto, CachePolicy.Auto),
                 })
        {
            options = await control.SetCachePolicyAsync(proto, default);
            Assert.Equal(share, settings.Cache);
            Assert.Equal(proto, options.CachePolicy);
        }
        Assert.True(options.Readonly);
        Assert.True(options.Xattr);
        Assert.False(options.Writeback);
    }

    [Fact]
    public async Task Allowlist_IsPublishedOnlyWhileEnabledAndSurvivesDisable()
    {
        LiveSettings settings = NewSettings();
        DaemonShareControl control = NewControl(settings);

        await control.AddAllowedPathAsync("docs/reports", default);
        await control.AddAllowedPathAsync("bin", default);
        Assert.Null(settings.Allowlist);

        Allowlist enabled = await control.SetAllowlistEnabledAsync(true, default);
        Assert.Equal(["bin", "docs/reports"], enabled.Entries);
        Assert.NotNull(settings.Allowlist);
        Assert.True(settings.Allowlist!.Permits("docs"u8));          // an ancestor, to walk through
        Assert.True(settings.Allowlist.Permits("docs/reports/q1"u8));
        Assert.False(settings.Allowlist.Permits("etc"u8));

        await control.SetAllowlistEnabledAsync(false, default);
        Assert.Null(settings.Allowlist);
        Allowlist again = await control.SetAllowlistEnabledAsync(true, default);
        Assert.Equal(["bin", "docs/reports"], again.Entries);
        Assert.Equal(["bin", "docs/reports"], settings.Allowlist!.Paths);

        await control.RemoveAllowedPathAsync("bin", default);
        Assert.Equal(["docs/reports"], settings.Allowlist!.Paths);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await control.RemoveAllowedPathAsync("bin", default));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
    }

    [Fact]
    public async Task Status_TakenBeforeAChange_KeepsWhatItReported()
    {
        // The status's settings parts are shared between replies until the next change: the status after a change
        // has new ones, and those of a reply already handed out (still being serialized, perhaps) stay as they were.
        DaemonShareControl control = NewControl(NewSettings());
        ShareStatus before = await control.GetStatusAsync(default);
        ShareStatus same = await control.GetStatusAsync(default);
        Assert.Equal(before.Settings, same.Settings);

        await control.SetDirectIoAsync(true, default);
        await control.SetCachePolicyAsync(ProtoCachePolicy.Always, default);
        await control.AddAllowedPathAsync("docs", default);
        await control.SetAllowlistEnabledAsync(true, default);
        ShareStatus after = await control.GetStatusAsync(default);

        Assert.False(before.Settings.DirectIo);
        Assert.False(before.Options.DirectIo);
        Assert.Equal(ProtoCachePolicy.Auto, before.Settings.Cache);
        Assert.Empty(before.Settings.Allow);
        Assert.Empty(before.Allowlist.Entries);
        Assert.False(before.Allowlist.Enabled);

        Assert.True(after.Settings.DirectIo);
        Assert.True(after.Options.DirectIo);
        Assert.Equal(ProtoCachePolicy.Always, after.Settings.Cache);
        Assert.Equal(ProtoCachePolicy.Always, after.Options.CachePolicy);
        Assert.Equal(["docs"], after.Settings.Allow);
        Assert.Equal(["docs"], after.Allowlist.Entries);
        Assert.True(after.Allowlist.Enabled);
    }

    [Fact]
    public async Task StartupAllowlist_IsReportedEnabled()
    {
        DaemonShareControl control = NewControl(NewSettings(new Hypervisor.Passthrough.Share.Allowlist(["a", "b"])));
        Allowlist list = await control.ListAllowedPathsAsync(default);
        Assert.True(list.Enabled);
        Assert.Equal(["a", "b"], list.Entries);
    }

    [Fact]
    public async Task Status_ReportsCountersWithLinuxOpcodeNamesAndUsage()
    {
        var counters = new FuseCounters();
        counters.Count(1, failed: false);
        counters.Count(1, failed: true);
        counters.Count(15, failed: false);
        counters.Count(47, failed: false);
        DaemonShareControl control = NewControl(NewSettings(), counters);

        ShareStatus status = await control.GetStatusAsync(default);
        Assert.Equal("/srv/data", status.SharedDir);
        Assert.Equal("data", status.Tag);
        Assert.Equal(
            [new OpcodeCounters { Opcode = 1, Name = "LOOKUP", Requests = 2, Errors = 1 }, new OpcodeCounters { Opcode = 15, Name = "READ", Requests = 1 },
             new OpcodeCounters { Opcode = 47, Name = "COPY_FILE_RANGE", Requests = 1 }],
            status.Opcodes);
        Assert.Equal((2ul, 17ul, 4096ul, 512ul), (status.OpenFileHandles, status.KnownNodes, status.BytesRead, status.BytesWritten));
        Assert.InRange(status.Uptime.ToTimeSpan(), TimeSpan.Zero, TimeSpan.FromMinutes(1));
    }

    [Fact]
    public async Task Status_ReportsTheStartSettingsWithWhatOperatorsChangedSince()
    {
        LiveSettings settings = NewSettings();
        DaemonShareControl control = NewControl(settings);
        await control.SetDirectIoAsync(true, default);
        await control.SetCachePolicyAsync(CachePolicy.Never, default);
        await control.AddAllowedPathAsync("docs", default);

        ShareSettings reported = (await control.GetStatusAsync(default)).Settings;
        var expected = settings.Options.Clone();
        expected.DirectIo = true;
        expected.Cache = CachePolicy.Never;
        expected.Allow.Add("docs");
        Assert.Equal(expected, reported);
        // The start-up settings themselves are left as they were.
        Assert.False(settings.Options.DirectIo);
    }

    [Fact]
    public async Task Shutdown_RunsTheDaemonsStopOffTheCallingThread()
    {
        using var release = new ManualResetEventSlim();
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        DaemonShareControl control = NewControl(NewSettings(), shutdown: () =>
        {
            // A stop that waits (as disposing the control server does) must not hold up the reply.
            release.Wait(TimeSpan.FromSeconds(10));
            stopped.SetResult();
        });
        ValueTask call = control.RequestShutdownAsync(default);
        Assert.True(call.IsCompleted);
        release.Set();
        await stopped.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
