using Google.Protobuf;
using Hypervisor.Passthrough.Cli;
using Hypervisor.Protocol.Recovery;
using Hypervisor.Protocol.Ring;
using Hypervisor.Passthrough.Control;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Share;
using Hypervisor.Passthrough.Transport;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough;

/// <summary>Composes one share's daemon: filesystem, engine, transports, control service; runs until told to stop.</summary>
public static partial class Daemon
{
    /// <summary>Runs the daemon with validated settings; returns the process exit code.</summary>
    /// <remarks>
    /// Logging goes to stderr at the level of <c>--log-level</c>; SIGTERM, SIGINT and SIGQUIT stop the daemon
    /// gracefully, as does a Shutdown call on the control socket. No generic host is built: its dependency injection
    /// and hosting services would run before the daemon can report ready and serve nothing a daemon needs.
    /// </remarks>
    public static async Task<int> RunAsync(DaemonCommand.Settings settings, Sandbox.Confinement confinement, CancellationToken ct)
    {
        // ASP.NET Core's and gRPC's own lines (connections, requests, every call that ended with an error status) are
        // noise in a daemon's log: warnings and errors only, whatever the daemon's level; the request diagnostics,
        // which have neither, not at all (ControlServer.SilentLogCategories).
        using var loggerFactory = Hypervisor.Logging.StderrLogging.Create(settings.LogLevel, ["Microsoft", "Grpc"],
            Control.ControlServer.SilentLogCategories);
        using var stopping = CancellationTokenSource.CreateLinkedTokenSource(ct);
        void Stop()
        {
            // A signal or a Shutdown call that arrives while the daemon is already returning finds the source disposed.
            try { stopping.Cancel(); }
            catch (ObjectDisposedException) { }
        }
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; Stop(); });
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; Stop(); });
        using var sigquit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, c => { c.Cancel = true; Stop(); });
        return await ServeAsync(settings, confinement, loggerFactory, Stop, stopping.Token).ConfigureAwait(false);
    }

    private static async Task<int> ServeAsync(DaemonCommand.Settings settings, Sandbox.Confinement confinement, ILoggerFactory loggerFactory,
        Action stopDaemon, CancellationToken ct)
    {
        var log = loggerFactory.CreateLogger("passthrough");

        var share = new LiveSettings(settings.Share);
        IFileSystem fs;
        try
        {
            fs = new FileSystem.PassthroughFileSystem(share, loggerFactory.CreateLogger("passthrough.fs"), confinement.Root);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            Console.Error.WriteLine($"passthrough: {e.Message}");
            return 1;
        }
        using var engine = new FuseEngine(fs, loggerFactory.CreateLogger("passthrough.fuse"));
        StateStore? store;
        Bell? restartBell = null, takeover = null;
        RingFds? ringFds = null;
        FileSystem.KeptDescriptors? kept = null;
        try
        {
            ringFds = settings.Ring is null ? null : RingFds.Parse(settings.Ring);
            store = ringFds?.StateFd is { } stateFd && fs is FileSystem.PassthroughFileSystem ? StateStore.Attach(stateFd) : null;
            if (store is not null && ringFds!.RestartFd is { } restartFd) restartBell = Bell.Adopt(restartFd);
            if (store is not null && ringFds!.TakeoverFd is { } takeoverFd) takeover = Bell.Adopt(takeoverFd);
            // A standby daemon (a planned restart) takes the session over only when the vdev says the daemon before
            // has answered everything it was sent: until then that one still writes the records and hands the vdev
            // its descriptors.
            if (store is not null && takeover is null) kept = TakeOver(store, ringFds!, fs, engine, log);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or FormatException)
        {
            Console.Error.WriteLine($"passthrough: {e.Message}");
            return 1;
        }
        using var restartBellLifetime = restartBell;
        using var takeoverLifetime = takeover;
        using var storeLifetime = store;
        var threads = settings.Share.ThreadPoolSize > 0 ? (int)settings.Share.ThreadPoolSize : Math.Max(8, 2 * Environment.ProcessorCount);

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);

        DevFuseTransport? mount = null;
        RingTransport? ring = null;
        ControlServer? control = null;
        Task<ControlServer>? controlStarting = null;
        DaemonShareControl? shareControl = null;
        try
        {
            if (confinement.Control is not null)
            {
                shareControl = new DaemonShareControl(share, engine.Counters, () => Usage(fs), stopDaemon,
                    () => ring?.RequestQueueCpus ?? [])
                {
                    SettingsChanged = store is null ? null : changed => store.WriteSettings(changed.ToByteArray()),
                    Restarts = store is null ? null : () => store.Restarts,
                    Restart = store is null || restartBell is null ? null : ct => RequestRestartAsync(store, restartBell, ct),
                };
                // A standby daemon writes the settings once it takes the session over (the daemon before still does).
                if (takeover is null) store?.WriteSettings(shareControl.CurrentSettings().ToByteArray());
            }
            if (settings.MountPoint is not null)
            {
                mount = DevFuseTransport.Mount(engine, loggerFactory.CreateLogger("passthrough.devfuse"), settings.Share.SharedDir, settings.MountPoint, threads,
                    settings.AllowDevices, settings.AllowSetuid);
                LogMounted(log, settings.Share.SharedDir, settings.MountPoint, threads);
            }
            if (settings.Ring is not null && takeover is null)
            {
                ring = RingTransport.Start(engine, loggerFactory.CreateLogger("passthrough.ring"), settings.Ring, settings.QueueCpus,
                    (int)settings.Share.ThreadPoolSize, kept is null ? null : ((FileSystem.PassthroughFileSystem)fs).FlushKept);
                LogRing(log, settings.Share.SharedDir, settings.Ring);
            }

            // The syscall filter comes last, once nothing needs more than serving does; then the daemon is ready.
            confinement.LoadFilter();
            LogConfined(log, settings.Share.Sandbox, settings.Share.Seccomp);
            if (settings.ReadyFd is { } readyFd) ReadyNotifier.Notify(readyFd, settings.ControlSocket);
            if (confinement.Control is { } listener && shareControl is not null)
            {
                // Kestrel starts once the daemon has reported ready, so that its start (the web host, its services and
                // gRPC's) does not compete for the CPUs with the daemon's way to ready. The socket is bound and listening
                // already: a control call made as soon as the daemon is ready waits in its backlog until the service
                // accepts it.
                var served = shareControl;
                controlStarting = Task.Run(() => ControlServer.StartAsync(listener, served, new ControlServerOptions(),
                    loggerFactory, stop.Token), stop.Token);
                try
                {
                    control = await controlStarting.ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    // Told to stop (a signal) while the service was starting: a graceful stop like any other.
                    return 0;
                }
                LogControl(log, control.SocketPath);
            }
            if (takeover is not null)
            {
                // Standby: ready and confirmed, the daemon waits for the vdev's word (or its end, or a stop).
                LogStandby(log);
                while (true)
                {
                    int rang = takeover.WaitOr(ringFds!.CreatorPidFd ?? -1, 100);
                    if ((rang & 1) != 0) break;
                    if ((rang & 2) != 0)
                    {
                        LogVdevDied(log);
                        return 0;
                    }
                    if (stop.IsCancellationRequested) return 0;
                }
                kept = TakeOver(store!, ringFds!, fs, engine, log);
                if (shareControl is not null) store!.WriteSettings(shareControl.CurrentSettings().ToByteArray());
                ring = RingTransport.Start(engine, loggerFactory.CreateLogger("passthrough.ring"), settings.Ring!, settings.QueueCpus,
                    (int)settings.Share.ThreadPoolSize, kept is null ? null : ((FileSystem.PassthroughFileSystem)fs).FlushKept);
                LogRing(log, settings.Share.SharedDir, settings.Ring!);
            }

            var waits = new List<Task> { Task.Delay(Timeout.Infinite, stop.Token) };
            if (mount is not null) waits.Add(mount.Completion);
            if (ring is not null) waits.Add(ring.Completion);
            await Task.WhenAny(waits).ConfigureAwait(false);
            if (mount is not null && mount.Completion.IsCompleted)
                LogUnmounted(log);
            if (ring is not null && ring.Completion.IsCompleted)
            {
                var why = ring.Completion.Result;
                if (why == Hypervisor.Protocol.Ring.RingStatus.PeerDead) LogVdevDied(log);
                else LogRingClosed(log, why);
                return why == Hypervisor.Protocol.Ring.RingStatus.Broken ? 1 : 0;
            }
            return 0;
        }
        catch (Exception e) when (e is TransportException or Hypervisor.Interop.SeccompException or Hypervisor.Interop.ControlSocketException)
        {
            Console.Error.WriteLine($"passthrough: {e.Message}");
            return 1;
        }
        finally
        {
            // The guest's session outlives this daemon: the next one the vdev starts takes it over from the store. Its
            // descriptor channel is handed what is still noted and closed first: a daemon replaced by a planned restart
            // serves nothing any more, and the new one adopts the vdev's descriptors only once this channel has ended.
            ring?.Dispose();
            (fs as FileSystem.PassthroughFileSystem)?.FlushKept();
            (fs as FileSystem.PassthroughFileSystem)?.DetachStore();
            kept?.Dispose();
            if (controlStarting is null && confinement.Control is { } unused)
            {
                // The service never started (the daemon stopped before it got that far): the socket is closed here, and
                // removed where the daemon still sees its path.
                unused.Dispose();
                if (!unused.PathLeftBehind) Hypervisor.Interop.ControlSocket.UnlinkIfOurs(unused.Path, unused.Inode);
            }
            // A start that failed after the transport (the exception went to the catch above) or was never awaited.
            if (control is null && controlStarting is not null)
            {
                try { control = await controlStarting.ConfigureAwait(false); }
                catch (Exception e) when (e is Hypervisor.Interop.ControlSocketException or OperationCanceledException or IOException) { }
            }
            if (control is not null)
            {
                // Health turns NOT_SERVING first; calls in flight (a Shutdown reply) still complete.
                control.StopServing();
                await control.DisposeAsync().ConfigureAwait(false);
            }
            mount?.Dispose();
            fs.Destroy();
        }
    }

    /// <summary>
    /// Takes over the session the share's state store holds (a daemon of this share served the guest before), and keeps
    /// the store up to date from now on.
    /// </summary>
    private static FileSystem.KeptDescriptors? TakeOver(StateStore store, RingFds ringFds, IFileSystem fs, FuseEngine engine, ILogger log)
    {
        var passthrough = (FileSystem.PassthroughFileSystem)fs;
        FileSystem.KeptDescriptors? kept = null;
        Dictionary<Hypervisor.Protocol.Recovery.KeptEntry, Hypervisor.Interop.SafeFd>? adopted = null;
        if (ringFds.DescriptorStoreFd is { } channel)
        {
            if (Hypervisor.Interop.Libc.fcntl(channel, Hypervisor.Interop.Libc.F_SETFD, Hypervisor.Interop.Libc.FD_CLOEXEC) != 0)
                throw new IOException($"The descriptor store's channel fdstore={channel} is not open in this process; the vdev must let it be inherited.");
            kept = new FileSystem.KeptDescriptors(new Hypervisor.Interop.SafeFd(channel));
            // Before serving: the vdev sends what it kept from the previous daemons, then says it is done.
            adopted = kept.Adopt();
        }
        var restored = passthrough.AttachStore(store, kept, adopted, out var minor, out var flags);
        if (restored is { } r)
        {
            engine.Resume(minor, flags);
            LogResumed(log, minor, r.Nodes, r.Stale, r.Handles, r.LostHandles, r.AdoptedHandles, r.AdoptedLockOwners);
        }
        engine.SessionStarted = (m, f) => store.WriteInit(m, (ulong)f, passthrough.Generation);
        engine.SessionEnded = store.ClearInit;
        return kept;
    }

    /// <summary>How often a Restart call looks for the vdev's answer in the store.</summary>
    private static readonly TimeSpan RestartAnswerPoll = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// A Restart call: writes the request into the store, rings the vdev's restart bell, and waits for the vdev's
    /// answer (the new daemon's pid, or why it failed).
    /// </summary>
    private static async Task<int> RequestRestartAsync(StateStore store, Bell bell, CancellationToken ct)
    {
        uint request = store.RequestRestart();
        bell.Ring();
        while (true)
        {
            if (store.TryReadRestartAnswer(request, out var answer))
            {
                if (answer.Error is { } error)
                    throw new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.Aborted, error));
                return answer.NewPid;
            }
            await Task.Delay(RestartAnswerPoll, ct).ConfigureAwait(false);
        }
    }

    private static ShareUsage Usage(IFileSystem fs) => fs is FileSystem.PassthroughFileSystem p
        ? new ShareUsage((ulong)p.OpenHandles, (ulong)p.KnownNodes, (ulong)p.BytesRead, (ulong)p.BytesWritten)
        : default;

    [LoggerMessage(EventId = 407, Level = LogLevel.Warning, Message = "Took over the guest's session from the state store (protocol 7.{Minor}): {Nodes} node ids ({Stale} stale: they answer ESTALE), {Handles} open handles ({Adopted} of them the very open files the vdev kept, the rest reopened by file handle or by name), {Lost} handles that could not be reopened (they answer EBADF), {Locks} lock owners whose locks the vdev kept")]
    private static partial void LogResumed(ILogger log, uint minor, int nodes, int stale, int handles, int lost, int adopted, int locks);

    [LoggerMessage(EventId = 408, Level = LogLevel.Information, Message = "Standing by: the vdev hands this daemon the guest's session once the daemon before has answered everything it was sent")]
    private static partial void LogStandby(ILogger log);

    [LoggerMessage(EventId = 400, Level = LogLevel.Information, Message = "Control service on {Socket}")]
    private static partial void LogControl(ILogger log, string socket);

    [LoggerMessage(EventId = 401, Level = LogLevel.Information, Message = "Serving {Dir} at {MountPoint} through /dev/fuse with {Threads} threads")]
    private static partial void LogMounted(ILogger log, string dir, string mountPoint, int threads);

    [LoggerMessage(EventId = 402, Level = LogLevel.Information, Message = "Serving {Dir} on the shared-memory ring {Ring}")]
    private static partial void LogRing(ILogger log, string dir, string ring);

    [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "The FUSE session ended (unmounted)")]
    private static partial void LogUnmounted(ILogger log);

    [LoggerMessage(EventId = 404, Level = LogLevel.Warning, Message = "The vdev died; stopping")]
    private static partial void LogVdevDied(ILogger log);

    [LoggerMessage(EventId = 406, Level = LogLevel.Information, Message = "Confined: sandbox {Sandbox}, seccomp {Seccomp}")]
    private static partial void LogConfined(ILogger log, Hypervisor.Protocol.Share.Sandbox sandbox, Hypervisor.Protocol.Share.SeccompAction seccomp);

    [LoggerMessage(EventId = 405, Level = LogLevel.Information, Message = "The vdev closed the ring ({Status}); stopping")]
    private static partial void LogRingClosed(ILogger log, Hypervisor.Protocol.Ring.RingStatus status);
}
