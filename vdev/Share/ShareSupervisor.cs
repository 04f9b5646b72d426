using System.Diagnostics;
using Hypervisor.Protocol.Recovery;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Config;
using Hypervisor.Vdev.Device;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Share;

/// <summary>
/// One share's daemons over the vdev's life: the first one, and each one started after the one before ended
/// (vdev/README.md, "Surviving a daemon crash"). Owns the share's state store, which every daemon of the share gets,
/// and applies the relaunch setting and the crash-loop guard.
/// </summary>
public sealed partial class ShareSupervisor : IDaemonRelauncher, IAsyncDisposable
{
    /// <summary>This many daemon ends within <see cref="CrashWindow"/> stop the relaunching (the last one is not replaced).</summary>
    public const int CrashLimit = 5;

    /// <summary>The window of the crash-loop guard.</summary>
    public static readonly TimeSpan CrashWindow = TimeSpan.FromSeconds(60);

    private readonly DeclaredShare _declared;
    private readonly string _launcher;
    private readonly ILogger _log;
    private readonly StateStore _store;
    private readonly DescriptorStore _descriptors;
    private readonly Queue<long> _ends = new();
    private readonly List<LaunchedShare> _exited = [];
    private readonly CancellationTokenSource _stopping = new();
    private LaunchedShare _current;

    private ShareSupervisor(DeclaredShare declared, string launcher, StateStore store, DescriptorStore descriptors, LaunchedShare first, ILogger log)
    {
        _declared = declared;
        _launcher = launcher;
        _store = store;
        _descriptors = descriptors;
        _current = first;
        _log = log;
    }

    /// <summary>Creates the share's state store and starts its first daemon (as <see cref="LaunchedShare.StartAsync(DeclaredShare, string, ILogger, CancellationToken)"/>).</summary>
    public static async Task<ShareSupervisor> StartAsync(DeclaredShare declared, string launcherPath, ILogger log, CancellationToken ct)
    {
        var store = StateStore.Create();
        var descriptors = new DescriptorStore(declared.Settings.Tag, DescriptorStore.LimitFor(store.HandleCapacity), log);
        try
        {
            var first = await LaunchedShare.StartAsync(declared, launcherPath, log, store, descriptors, null, ct).ConfigureAwait(false);
            return new ShareSupervisor(declared, launcherPath, store, descriptors, first, log);
        }
        catch
        {
            descriptors.Dispose();
            store.Dispose();
            throw;
        }
    }

    /// <summary>The share's declared settings.</summary>
    public ShareSettings Settings => _declared.Settings;

    /// <summary>The daemon serving now.</summary>
    public LaunchedShare Current => Volatile.Read(ref _current);

    /// <inheritdoc/>
    public ShmRingSet Rings => Current.Rings;

    /// <summary>The share's state store.</summary>
    public StateStore Store => _store;

    /// <summary>The share's descriptor store: what the guest's open handles and lock owners hold, kept across daemons.</summary>
    public DescriptorStore Descriptors => _descriptors;

    /// <summary>Whether a daemon that ends is replaced (<c>relaunch</c>, default on).</summary>
    public bool RelaunchEnabled => !_declared.Settings.HasRelaunch || _declared.Settings.Relaunch;

    /// <inheritdoc/>
    public async Task<ShmRingSet?> RelaunchAsync(ShmRingSet dead, string cause, long noticed)
    {
        var old = Current;
        if (old.Rings != dead) return old.Rings;
        old.ReleaseExited();
        lock (_exited) _exited.Add(old);
        if (!RelaunchEnabled)
        {
            LogRelaunchOff(_log, Settings.Tag, old.DaemonPid);
            return null;
        }
        _ends.Enqueue(noticed);
        while (_ends.Count > 0 && Stopwatch.GetElapsedTime(_ends.Peek(), noticed) > CrashWindow) _ends.Dequeue();
        if (_ends.Count >= CrashLimit)
        {
            LogCrashLoop(_log, Settings.Tag, _ends.Count, CrashWindow.TotalSeconds);
            return null;
        }
        var next = await LaunchedShare.StartAsync(_declared, _launcher, _log, _store, _descriptors, LiveSettings(old), _stopping.Token).ConfigureAwait(false);
        var waited = Stopwatch.GetElapsedTime(noticed);
        _store.RecordRestart(cause, (long)(waited.TotalMilliseconds * 1_000_000));
        Volatile.Write(ref _current, next);
        LogRelaunched(_log, Settings.Tag, old.DaemonPid, next.DaemonPid, waited.TotalMilliseconds);
        return next.Rings;
    }

    /// <inheritdoc/>
    public void ReleaseRings(ShmRingSet rings)
    {
        lock (_exited)
        {
            int i = _exited.FindIndex(e => e.Rings == rings);
            if (i < 0) return;
            _exited[i].DisposeRings();
            _exited.RemoveAt(i);
        }
    }

    /// <summary>
    /// What the next daemon starts with: the settings the last daemon reported in the state store (those it was
    /// started with, plus what operators changed over gRPC since), or the ones it was started with.
    /// </summary>
    private ShareSettings LiveSettings(LaunchedShare old)
    {
        var settings = old.LaunchSettings.Clone();
        if (_store.ReadSettings() is { } bytes)
        {
            try
            {
                var live = ShareSettings.Parser.ParseFrom(bytes);
                settings.DirectIo = live.DirectIo;
                settings.Cache = live.Cache;
                settings.Allow.Clear();
                settings.Allow.AddRange(live.Allow);
            }
            catch (Google.Protobuf.InvalidProtocolBufferException e)
            {
                LogSettingsUnreadable(_log, Settings.Tag, e.Message);
            }
        }
        return settings;
    }

    /// <summary>Stops the serving daemon and releases every ring set and the store.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        await Current.DisposeAsync().ConfigureAwait(false);
        lock (_exited)
        {
            foreach (var exited in _exited) exited.DisposeRings();
            _exited.Clear();
        }
        _descriptors.Dispose();
        _store.Dispose();
        _stopping.Dispose();
    }

    [LoggerMessage(EventId = 90, Level = LogLevel.Warning, Message = "share '{Tag}': daemon {Old} was replaced by daemon {New}; the guest waited {Milliseconds:F0} ms")]
    private static partial void LogRelaunched(ILogger log, string tag, int old, int @new, double milliseconds);

    [LoggerMessage(EventId = 91, Level = LogLevel.Error, Message = "share '{Tag}': daemon {Pid} ended and relaunch is off (relaunch=off); every request now fails with EIO until the guest remounts after a vdev restart")]
    private static partial void LogRelaunchOff(ILogger log, string tag, int pid);

    [LoggerMessage(EventId = 92, Level = LogLevel.Error, Message = "share '{Tag}': the daemon ended {Count} times within {Seconds} s; not starting another (crash loop). Every request now fails with EIO; fix the cause in the daemon's log above and restart the vdev")]
    private static partial void LogCrashLoop(ILogger log, string tag, int count, double seconds);

    [LoggerMessage(EventId = 93, Level = LogLevel.Warning, Message = "share '{Tag}': the live settings in the state store cannot be read ({Reason}); the new daemon starts with the last daemon's start-up settings")]
    private static partial void LogSettingsUnreadable(ILogger log, string tag, string reason);
}
