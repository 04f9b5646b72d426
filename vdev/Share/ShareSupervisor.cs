using System.Diagnostics;
using Hypervisor.Interop;
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
    // One change of daemon at a time: a relaunch after a crash and a planned restart take turns.
    private readonly SemaphoreSlim _switching = new(1, 1);
    private readonly Bell _restartBell;
    private readonly Thread _restartWatch;
    private readonly Bell _stopBell = Bell.Create();
    // Not root with id ranges: the user namespace of the share's first daemon, which every later one joins.
    private readonly SafeFd? _userNamespace;
    private volatile RecoveringTransport? _transport;
    private LaunchedShare _current;

    /// <summary>How long a planned restart waits for the old daemon to answer what it was sent before it gives up.</summary>
    public static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(5);

    private ShareSupervisor(DeclaredShare declared, string launcher, StateStore store, DescriptorStore descriptors, Bell restartBell, SafeFd? userNamespace, LaunchedShare first, ILogger log)
    {
        _userNamespace = userNamespace;
        _declared = declared;
        _launcher = launcher;
        _store = store;
        _descriptors = descriptors;
        _restartBell = restartBell;
        _current = first;
        _log = log;
        _restartWatch = new Thread(WatchRestartRequests) { IsBackground = true, Name = $"vdev {declared.Settings.Tag} restart requests" };
        _restartWatch.Start();
    }

    /// <summary>Creates the share's state store and starts its first daemon (as <see cref="LaunchedShare.StartAsync(DeclaredShare, string, ILogger, CancellationToken)"/>).</summary>
    public static async Task<ShareSupervisor> StartAsync(DeclaredShare declared, string launcherPath, ILogger log, CancellationToken ct)
    {
        var store = StateStore.Create();
        var descriptors = new DescriptorStore(declared.Settings.Tag, DescriptorStore.LimitFor(store.HandleCapacity), log);
        var bell = Bell.Create();
        try
        {
            var first = await LaunchedShare.StartAsync(declared, launcherPath, log, new LaunchedShare.DaemonBells(store, descriptors, bell, null, null), null, ct).ConfigureAwait(false);
            SafeFd? userNamespace;
            try
            {
                userNamespace = ShareUserNamespace.Needed(declared.Settings, Libc.geteuid()) ? ShareUserNamespace.Open(first.DaemonPid, declared.Settings) : null;
            }
            catch
            {
                await first.DisposeAsync().ConfigureAwait(false);
                throw;
            }
            return new ShareSupervisor(declared, launcherPath, store, descriptors, bell, userNamespace, first, log);
        }
        catch
        {
            bell.Dispose();
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
        await _switching.WaitAsync().ConfigureAwait(false);
        try
        {
            return await RelaunchLockedAsync(dead, cause, noticed).ConfigureAwait(false);
        }
        finally
        {
            _switching.Release();
        }
    }

    private async Task<ShmRingSet?> RelaunchLockedAsync(ShmRingSet dead, string cause, long noticed)
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
        long end = noticed;
        while (true)
        {
            // Every end counts, a new daemon's that died before it was ready included.
            _ends.Enqueue(end);
            while (_ends.Count > 0 && Stopwatch.GetElapsedTime(_ends.Peek(), end) > CrashWindow) _ends.Dequeue();
            if (_ends.Count >= CrashLimit)
            {
                LogCrashLoop(_log, Settings.Tag, _ends.Count, CrashWindow.TotalSeconds);
                return null;
            }
            try
            {
                var next = await LaunchedShare.StartAsync(_declared, _launcher, _log, new LaunchedShare.DaemonBells(_store, _descriptors, _restartBell, null, null) { UserNamespace = _userNamespace },
                    LiveSettings(old), _stopping.Token).ConfigureAwait(false);
                var waited = Stopwatch.GetElapsedTime(noticed);
                _store.RecordRestart(cause, (long)(waited.TotalMilliseconds * 1_000_000));
                Volatile.Write(ref _current, next);
                LogRelaunched(_log, Settings.Tag, old.DaemonPid, next.DaemonPid, waited.TotalMilliseconds);
                return next.Rings;
            }
            catch (ShareStartException e)
            {
                // The new daemon did not get as far as serving (it died before it was ready, or its settings were
                // refused): tried again until the crash-loop guard says otherwise.
                LogRelaunchAttemptFailed(_log, Settings.Tag, e.Message);
                end = Stopwatch.GetTimestamp();
            }
        }
    }

    /// <inheritdoc/>
    public void TransportChanged(RecoveringTransport? transport) => _transport = transport;

    /// <summary>
    /// A planned restart (vdev/README.md, "Planned restart"): starts a new daemon on standby beside the serving one
    /// (the binary installed now at the launcher's daemon path), drains the serving one, hands the guest's session to
    /// the new one and lets the old one go. Returns the pid of the daemon serving afterwards, or throws
    /// <see cref="ShareStartException"/> with a sentence when the restart failed (the old daemon then keeps serving,
    /// unless it ended meanwhile, which is a crash and handled as one).
    /// </summary>
    public async Task<int> RestartAsync(CancellationToken ct)
    {
        await _switching.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var old = Current;
            var transport = _transport;
            using var takeover = Bell.Create();
            // The new daemon listens beside the old one until it replaces it; then its socket takes the share's path.
            var standbyControl = old.ControlSocket + ".next";
            LaunchedShare next;
            try
            {
                next = await LaunchedShare.StartAsync(_declared, _launcher, _log, new LaunchedShare.DaemonBells(_store, _descriptors, _restartBell, takeover, standbyControl) { UserNamespace = _userNamespace },
                    LiveSettings(old), _stopping.Token).ConfigureAwait(false);
            }
            catch (ShareStartException e)
            {
                throw new ShareStartException($"share '{Settings.Tag}': the new daemon could not be started, so daemon {old.DaemonPid} keeps serving: {e.Message}");
            }
            lock (_exited) _exited.Add(old);
            string? error = null;
            long stall = 0;
            if (transport is null)
            {
                // No guest connected: nothing in flight to drain.
                takeover.Ring();
            }
            else
            {
                (error, stall) = await transport.HandOverAsync(next.Rings, takeover.Ring, DrainTimeout).ConfigureAwait(false);
            }
            if (error is not null)
            {
                lock (_exited) _exited.Remove(old);
                await next.DisposeAsync().ConfigureAwait(false);
                throw new ShareStartException($"share '{Settings.Tag}': the restart was given up: {error}.");
            }
            Volatile.Write(ref _current, next);
            _store.RecordRestart("restart", stall, planned: true);
            try
            {
                next.MoveControlSocket(old.ControlSocket);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                LogControlSocketNotMoved(_log, Settings.Tag, next.ControlSocket, old.ControlSocket, e.Message);
            }
            // The old daemon answered everything: closing its ring stops it (it leaves the guest's session in the store).
            _ = old.RetireAsync();
            if (transport is null) ReleaseRings(old.Rings);
            LogRestarted(_log, Settings.Tag, old.DaemonPid, next.DaemonPid, stall / 1e6);
            return next.DaemonPid;
        }
        finally
        {
            _switching.Release();
        }
    }

    /// <summary>Answers the planned restart requests daemons write into the store (the Restart call) and ring the bell for.</summary>
    private void WatchRestartRequests()
    {
        uint answered = _store.RestartRequested;
        while (true)
        {
            int rang = _restartBell.WaitOr(_stopBell.Fd, -1);
            if ((rang & 2) != 0 || _stopping.IsCancellationRequested) return;
            if ((rang & 1) == 0) continue;
            _restartBell.Drain();
            uint asked = _store.RestartRequested;
            if (asked == answered) continue;
            int pid = 0;
            string? error = null;
            try
            {
                pid = RestartAsync(_stopping.Token).GetAwaiter().GetResult();
            }
            catch (ShareStartException e)
            {
                error = e.Message;
                LogRestartFailed(_log, Settings.Tag, e.Message);
            }
            catch (OperationCanceledException)
            {
                error = "the vdev is stopping";
            }
            _store.AnswerRestart(asked, pid, error);
            answered = asked;
        }
    }

    /// <inheritdoc/>
    public void ReleaseRings(ShmRingSet rings)
    {
        lock (_exited)
        {
            int i = _exited.FindIndex(e => e.Rings == rings);
            if (i < 0) return;
            // A daemon replaced by a planned restart may still run: closing the ring stops it.
            _exited[i].Rings.Close();
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
        _stopBell.Ring();
        _restartWatch.Join(TimeSpan.FromSeconds(10));
        await Current.DisposeAsync().ConfigureAwait(false);
        lock (_exited)
        {
            foreach (var exited in _exited) exited.DisposeRings();
            _exited.Clear();
        }
        _descriptors.Dispose();
        _userNamespace?.Dispose();
        _store.Dispose();
        _restartBell.Dispose();
        _stopBell.Dispose();
        _stopping.Dispose();
        _switching.Dispose();
    }

    [LoggerMessage(EventId = 90, Level = LogLevel.Warning, Message = "share '{Tag}': daemon {Old} was replaced by daemon {New}; the guest waited {Milliseconds:F0} ms")]
    private static partial void LogRelaunched(ILogger log, string tag, int old, int @new, double milliseconds);

    [LoggerMessage(EventId = 91, Level = LogLevel.Error, Message = "share '{Tag}': daemon {Pid} ended and relaunch is off (relaunch=off); every request now fails with EIO until the guest remounts after a vdev restart")]
    private static partial void LogRelaunchOff(ILogger log, string tag, int pid);

    [LoggerMessage(EventId = 92, Level = LogLevel.Error, Message = "share '{Tag}': the daemon ended {Count} times within {Seconds} s; not starting another (crash loop). Every request now fails with EIO; fix the cause in the daemon's log above and restart the vdev")]
    private static partial void LogCrashLoop(ILogger log, string tag, int count, double seconds);

    [LoggerMessage(EventId = 94, Level = LogLevel.Warning, Message = "share '{Tag}': a new daemon did not start ({Reason}); trying again")]
    private static partial void LogRelaunchAttemptFailed(ILogger log, string tag, string reason);

    [LoggerMessage(EventId = 95, Level = LogLevel.Information, Message = "share '{Tag}': planned restart: daemon {Old} was replaced by daemon {New}; the guest's requests waited at most {Milliseconds:F1} ms")]
    private static partial void LogRestarted(ILogger log, string tag, int old, int @new, double milliseconds);

    [LoggerMessage(EventId = 96, Level = LogLevel.Error, Message = "share '{Tag}': planned restart failed: {Reason}")]
    private static partial void LogRestartFailed(ILogger log, string tag, string reason);

    [LoggerMessage(EventId = 97, Level = LogLevel.Warning, Message = "share '{Tag}': the new daemon's control socket {From} could not take the path {To} ({Reason}); it stays at {From}")]
    private static partial void LogControlSocketNotMoved(ILogger log, string tag, string from, string to, string reason);

    [LoggerMessage(EventId = 93, Level = LogLevel.Warning, Message = "share '{Tag}': the live settings in the state store cannot be read ({Reason}); the new daemon starts with the last daemon's start-up settings")]
    private static partial void LogSettingsUnreadable(ILogger log, string tag, string reason);
}
