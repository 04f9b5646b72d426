using System.Diagnostics;
using System.Text.Json;
using Grpc.Core;
using Hypervisor.Interop;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Recovery;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Config;
using Hypervisor.Vdev.Control;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Share;

/// <summary>A share failed to start; the message is one sentence saying what went wrong and what to change.</summary>
public sealed class ShareStartException(string message) : Exception(message);

/// <summary>
/// One share's daemon as the vdev sees it: the shared-memory ring the vdev created, the daemon that
/// fuse_launcher started on it, and the gRPC client of its control socket.
/// </summary>
public sealed partial class LaunchedShare : IAsyncDisposable
{
    private readonly ILogger _log;

    private LaunchedShare(DeclaredShare config, ShareSettings launched, ShmRingSet rings, int pid, string control, ShareControlClient client, ILogger log)
    {
        Settings = config.Settings;
        LaunchSettings = launched;
        Rings = rings;
        DaemonPid = pid;
        ControlSocket = control;
        Client = client;
        _log = log;
    }

    /// <summary>The share's settings.</summary>
    public ShareSettings Settings { get; }

    /// <summary>
    /// The settings this daemon was started with: <see cref="Settings"/>, or for a daemon started after another one
    /// the live settings that one last reported (what operators changed over gRPC included).
    /// </summary>
    public ShareSettings LaunchSettings { get; }

    /// <summary>The ring set: queue 0 carries the hiprio virtqueue, queue i request queue i.</summary>
    public ShmRingSet Rings { get; }

    /// <summary>The daemon's pid (also its session id).</summary>
    public int DaemonPid { get; }

    /// <summary>The daemon's control socket.</summary>
    public string ControlSocket { get; private set; }

    /// <summary>The control client (used to confirm the settings and to shut the daemon down).</summary>
    public ShareControlClient Client { get; private set; }

    /// <summary>
    /// Creates the ring, runs fuse_launcher with the share's settings, checks its exit status and report, then
    /// confirms over gRPC that the daemon serves the right directory with the right settings and applies the
    /// allowlist. Leaves nothing behind on failure.
    /// </summary>
    public static Task<LaunchedShare> StartAsync(DeclaredShare declared, string launcherPath, ILogger log, CancellationToken ct)
        => StartAsync(declared, launcherPath, log, (StateStore?)null, null, ct);

    /// <summary>
    /// As <see cref="StartAsync(DeclaredShare, string, ILogger, CancellationToken)"/>, handing the daemon the share's
    /// state store (<paramref name="store"/>, passed with the ring as <c>state=N</c>) and starting it with
    /// <paramref name="live"/> instead of the declared settings when given (a daemon replacing another).
    /// </summary>
    public static Task<LaunchedShare> StartAsync(DeclaredShare declared, string launcherPath, ILogger log, StateStore? store, ShareSettings? live, CancellationToken ct)
        => StartAsync(declared, launcherPath, log, new DaemonBells(store, null, null, null, null), live, ct);

    /// <summary>
    /// What a daemon of a supervised share is handed besides its ring: the state store, the share's descriptor store
    /// (a channel of it is passed with the ring as <c>fdstore=N</c>: the daemon adopts the descriptors kept from its
    /// predecessors and hands over those it opens), the vdev's restart bell, and for a standby daemon (a planned
    /// restart) its takeover bell and the path it listens on until it replaces the daemon before (null: the share's
    /// control socket), and for a not-root vdev whose share maps id ranges, the user namespace its first daemon was
    /// started in, which the daemon joins (passed as fuse_launcher's <c>--user-namespace-fd N</c>; <see cref="ShareUserNamespace"/>).
    /// </summary>
    public sealed record DaemonBells(StateStore? Store, DescriptorStore? Descriptors, Bell? Restart, Bell? Takeover, string? ControlSocket)
    {
        /// <summary>The share's kept user namespace (not root, with id ranges), or null: a new one is made if one is needed.</summary>
        internal SafeFd? UserNamespace { get; init; }
    }

    /// <summary>As <see cref="StartAsync(DeclaredShare, string, ILogger, StateStore?, ShareSettings?, CancellationToken)"/>, with the descriptors and paths of <paramref name="bells"/>.</summary>
    public static async Task<LaunchedShare> StartAsync(DeclaredShare declared, string launcherPath, ILogger log, DaemonBells bells, ShareSettings? live, CancellationToken ct)
    {
        var store = bells.Store;
        var share = live ?? declared.Settings;
        var origin = declared.Origin;
        if (!Directory.Exists(share.SharedDir))
            throw new ShareStartException(File.Exists(share.SharedDir)
                ? $"{origin}: the shared directory (host_path, --shared-dir) {share.SharedDir} is a file; give a directory to share."
                : $"{origin}: the shared directory (host_path, --shared-dir) {share.SharedDir} does not exist; create it or fix the path.");
        if (!File.Exists(launcherPath))
            throw new ShareStartException($"fuse_launcher was not found at {launcherPath}; install it next to vdev or pass --launcher PATH.");
        var control = Path.GetFullPath(bells.ControlSocket ?? share.EffectiveControlSocket());
        var controlDir = Path.GetDirectoryName(control)!;
        try
        {
            Directory.CreateDirectory(controlDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ShareStartException($"Cannot create {controlDir} for the control socket of share '{share.Tag}' ({e.Message}); set control_socket to a writable place.");
        }

        var rings = ShmRingSet.Create(1 + (int)share.RequestQueues, RingLayout.DefaultMaxFrameSize, 8L << 20);
        // The vdev's waits on this set (a completion thread waiting for replies, a virtqueue worker waiting for
        // room) sleep on the doorbell at once instead of spinning: these threads share the CPUs with the
        // daemon's dispatchers, which are the ones producing what they wait for (tests/Benchmarks/VdevBench.md
        // has the measurements). The one exception is in the virtqueue worker, with at most two requests in
        // flight and the daemon able to run on another CPU (DeviceOptions.ReplySpin).
        rings.SpinDuration = TimeSpan.Zero;
        int pid;
        try
        {
            // The daemon's end of its descriptor channel is its own once the launcher has passed it on: closed here in
            // any case, so that the daemon's death (or a start that failed) ends the channel.
            using var channel = bells.Descriptors?.Connect();
            pid = await RunLauncherAsync(share, origin, launcherPath, rings, bells, channel, control, ct).ConfigureAwait(false);
        }
        catch
        {
            rings.Dispose();
            throw;
        }
        rings.SetPeerProcess(pid);

        var client = new ShareControlClient(control, TimeSpan.FromSeconds(5));
        var launched = new LaunchedShare(declared, share, rings, pid, control, client, log);
        try
        {
            await launched.ConfirmAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            await launched.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return launched;
    }

    private static async Task<int> RunLauncherAsync(ShareSettings share, string origin, string launcherPath, ShmRingSet rings, DaemonBells bells, SafeFd? descriptors, string control, CancellationToken ct)
    {
        var store = bells.Store;
        var psi = new ProcessStartInfo(launcherPath)
        {
            RedirectStandardOutput = true,
            // stderr is the vdev's own: the launcher's one-line reasons and (through --log-file /proc/self/fd/2)
            // the daemon's log for its whole life reach the operator in the vdev's log stream.
            RedirectStandardError = false,
            UseShellExecute = false,
        };
        var ringSpec = store is null ? rings.Fds.ToString() : $"{rings.Fds},state={store.Fd}";
        if (store is not null && bells.Restart is { } restart) ringSpec += FormattableString.Invariant($",restart={restart.Fd}");
        if (store is not null && bells.Takeover is { } takeover) ringSpec += FormattableString.Invariant($",takeover={takeover.Fd}");
        if (descriptors is not null) ringSpec += FormattableString.Invariant($",fdstore={descriptors.Value}");
        foreach (var arg in LauncherArguments(share, ringSpec, control)) psi.ArgumentList.Add(arg);
        if (bells.UserNamespace is { } userNamespace)
        {
            psi.ArgumentList.Add("--user-namespace-fd");
            psi.ArgumentList.Add(userNamespace.Value.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        Process process;
        // The ring's descriptors are inheritable only while the launcher is being started (it passes exactly
        // those on to the daemon).
        rings.SetInheritable(true);
        store?.SetInheritable(true);
        bells.Restart?.SetInheritable(true);
        bells.Takeover?.SetInheritable(true);
        if (descriptors is not null) SetInheritable(descriptors, true);
        if (bells.UserNamespace is not null) SetInheritable(bells.UserNamespace, true);
        try
        {
            process = Process.Start(psi) ?? throw new ShareStartException($"Cannot start {launcherPath}.");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ShareStartException($"Cannot start {launcherPath} ({e.Message}); check it is executable.");
        }
        finally
        {
            rings.SetInheritable(false);
            store?.SetInheritable(false);
            bells.Restart?.SetInheritable(false);
            bells.Takeover?.SetInheritable(false);
            if (descriptors is not null) SetInheritable(descriptors, false);
            if (bells.UserNamespace is not null) SetInheritable(bells.UserNamespace, false);
        }
        using (process)
        {
            // Disposed here: Process.Dispose leaves a standard output stream that was read from open until the
            // finalizer runs, one pipe per daemon started (and a share's daemons are started again after a crash).
            using var reader = process.StandardOutput;
            var stdout = reader.ReadToEndAsync(ct);
            await process.WaitForExitAsync(ct).ConfigureAwait(false);
            var output = (await stdout.ConfigureAwait(false)).Trim();
            if (process.ExitCode != 0)
            {
                var why = process.ExitCode switch
                {
                    2 => "a setting was refused",
                    3 => "it did not report ready in time",
                    _ => "it could not start",
                };
                throw new ShareStartException($"{origin}: the daemon of share '{share.Tag}' did not start: {why} (fuse_launcher exit {process.ExitCode}; its reason is the line above).");
            }
            try
            {
                using var report = JsonDocument.Parse(output);
                return report.RootElement.GetProperty("pid").GetInt32();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new ShareStartException($"fuse_launcher for share '{share.Tag}' exited 0 but reported '{output}' instead of {{\"pid\":…}}.");
            }
        }
    }

    private static void SetInheritable(SafeFd fd, bool inheritable)
    {
        int flags = Libc.fcntl(fd.Value, Libc.F_GETFD, 0);
        if (flags >= 0) Libc.fcntl(fd.Value, Libc.F_SETFD, inheritable ? flags & ~Libc.FD_CLOEXEC : flags | Libc.FD_CLOEXEC);
    }

    /// <summary>
    /// The launcher's command line for <paramref name="share"/>: the share's settings in the common vocabulary (the
    /// directory made absolute, the allowlist included), the ring and the control socket.
    /// </summary>
    public static List<string> LauncherArguments(ShareSettings share, string ringSpec, string control)
    {
        var args = ShareVocabulary.ToArguments(DaemonSettings(share, control));
        args.AddRange(["--ring", ringSpec]);
        // The daemon's log joins the vdev's own stderr for its whole life (like virtiofsd's single log stream).
        args.AddRange(["--log-file", "/proc/self/fd/2"]);
        return args;
    }

    /// <summary>The settings the daemon is started with: the share's, with the directory absolute and the vdev's control socket.</summary>
    private static ShareSettings DaemonSettings(ShareSettings share, string control)
    {
        var daemon = share.Clone();
        daemon.SharedDir = Path.GetFullPath(share.SharedDir);
        daemon.ControlSocket = control;
        return daemon;
    }

    /// <summary>How often <see cref="ConfirmAsync"/> asks a daemon whose control service answers UNAVAILABLE.</summary>
    private const int ConfirmAttempts = 5;
    private static readonly TimeSpan ConfirmRetryDelay = TimeSpan.FromMilliseconds(100);
    /// <summary>How long one such call may wait for the control service to accept and answer.</summary>
    private static readonly TimeSpan ConfirmDeadline = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The daemon's settings, as its status reports them, must be the ones it was started with: the same share
    /// settings written the same way (another daemon on the control socket, or a setting lost on the way, differs).
    /// </summary>
    private async Task ConfirmAsync(CancellationToken ct)
    {
        ShareStatus status;
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                // Wait for ready: after a failed connection the channel backs off before it connects again, and a call
                // that does not wait fails at once with UNAVAILABLE during that time, however often it is repeated.
                var options = new CallOptions(deadline: DateTime.UtcNow + ConfirmDeadline, cancellationToken: ct).WithWaitForReady();
                status = await Client.Control.GetStatusAsync(new GetStatusRequest(), options).ResponseAsync.ConfigureAwait(false);
                break;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
                throw new OperationCanceledException("The vdev is stopping.", e, ct);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && attempt < ConfirmAttempts)
            {
                // The daemon reports ready once it serves the ring; its control service starts after that, and a
                // connection that reaches the listening socket before the service runs can be closed unanswered
                // (seen when a relaunched daemon is asked at once). Asked again, a bounded number of times.
                await Task.Delay(ConfirmRetryDelay, ct).ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                var detail = e.Status.Detail.TrimEnd('.');
                throw new ShareStartException($"The daemon of share '{Settings.Tag}' reported ready but its control service on {ControlSocket} failed: {ShareControlClient.StatusName(e.StatusCode)}: {detail}.");
            }
        }
        var expected = Path.GetFullPath(Settings.SharedDir);
        if (status.SharedDir != expected)
            throw new ShareStartException($"The daemon on {ControlSocket} serves {status.SharedDir}, not {expected}; another process owns that control socket.");
        var asked = string.Join(' ', ShareVocabulary.ToArguments(DaemonSettings(LaunchSettings, ControlSocket)));
        var applied = string.Join(' ', ShareVocabulary.ToArguments(status.Settings ?? new ShareSettings()));
        if (asked != applied)
            throw new ShareStartException($"The daemon of share '{Settings.Tag}' applies '{applied}' but was started with '{asked}'; check that the installed passthrough is the vdev's own version.");
        LogConfirmed(_log, Settings.Tag, DaemonPid, ControlSocket);
    }

    /// <summary>
    /// Lets go of a daemon that has exited (or is being replaced after it stopped serving): its control client goes
    /// but neither the control socket (the next daemon's now) nor the ring set
    /// (the transport may still collect replies the old daemon committed; <see cref="DisposeRings"/> releases it later).
    /// </summary>
    public void ReleaseExited()
    {
        Client.Dispose();
    }

    /// <summary>
    /// Moves the control socket this daemon listens on to <paramref name="path"/> (a standby daemon that replaced the
    /// daemon before takes over the share's control socket path: one rename(2), which replaces the old daemon's socket
    /// file while its listening socket, and a call in flight on it, live on). The control client follows.
    /// </summary>
    public void MoveControlSocket(string path)
    {
        if (ControlSocket == path) return;
        File.Move(ControlSocket, path, overwrite: true);
        ControlSocket = path;
        Client.Dispose();
        Client = new ShareControlClient(path, TimeSpan.FromSeconds(5));
    }

    /// <summary>
    /// Lets go of a daemon a planned restart replaced (it answered everything it was sent and the guest's session is
    /// its successor's): closes its ring, which stops it, and ends it by signal if it still runs after 5 s.
    /// </summary>
    public async Task RetireAsync()
    {
        Client.Dispose();
        try
        {
            Rings.Close();
        }
        catch (ObjectDisposedException)
        {
        }
        // A daemon whose dispatcher slept through the close (not yet understood; vdev/README.md, "Planned restart") is
        // woken by its doorbells rung again, every 100 ms for up to 5 s, before it is signalled.
        for (int i = 0; i < 50; i++)
        {
            if (await WaitForExitAsync(DaemonPid, TimeSpan.FromMilliseconds(100)).ConfigureAwait(false)) return;
            try
            {
                Rings.RingClosedAgain();
            }
            catch (ObjectDisposedException)
            {
            }
        }
        LogKilling(_log, Settings.Tag, DaemonPid);
        Libc.kill(DaemonPid, Libc.SIGTERM);
        if (!await WaitForExitAsync(DaemonPid, TimeSpan.FromSeconds(3)).ConfigureAwait(false)) Libc.kill(DaemonPid, Libc.SIGKILL);
    }

    /// <summary>Releases the ring set of a daemon let go with <see cref="ReleaseExited"/>.</summary>
    public void DisposeRings() => Rings.Dispose();

    /// <summary>Asks the daemon to shut down over gRPC, then by SIGTERM/SIGKILL to its pid if it lingers; closes the ring.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await Client.Control.ShutdownAsync(new ShutdownRequest(), deadline: DateTime.UtcNow.AddSeconds(2)).ResponseAsync.ConfigureAwait(false);
        }
        catch (RpcException)
        {
        }
        catch (ObjectDisposedException)
        {
            // Let go of already (ReleaseExited): the daemon has exited.
        }
        Client.Dispose();
        Rings.Close();
        if (!await WaitForExitAsync(DaemonPid, TimeSpan.FromSeconds(5)).ConfigureAwait(false))
        {
            LogKilling(_log, Settings.Tag, DaemonPid);
            Libc.kill(DaemonPid, Libc.SIGTERM);
            if (!await WaitForExitAsync(DaemonPid, TimeSpan.FromSeconds(3)).ConfigureAwait(false))
                Libc.kill(DaemonPid, Libc.SIGKILL);
        }
        Rings.Dispose();
        // A sandboxed daemon cannot remove its control socket (the path is outside its root). The daemon is gone or
        // going (its last threads may still hold the listening socket for a moment, so no connect probe): remove it.
        if (Libc.FileType(ControlSocket, out uint type, out _) == 0 && type == Libc.S_IFSOCK)
        {
            try { File.Delete(ControlSocket); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { LogSocketLeft(_log, ControlSocket, e.Message); }
        }
    }

    private static async Task<bool> WaitForExitAsync(int pid, TimeSpan timeout)
    {
        // The daemon is the launcher's child, not ours: it is reaped by init, so its /proc entry goes away on exit
        // (or turns into a zombie briefly, which counts as gone).
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < deadline)
        {
            if (!IsAlive(pid)) return true;
            await Task.Delay(50).ConfigureAwait(false);
        }
        return !IsAlive(pid);
    }

    /// <summary>True while the process exists and is not a zombie.</summary>
    private static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    [LoggerMessage(EventId = 10, Level = LogLevel.Information, Message = "share '{Tag}': daemon {Pid} serves, settings confirmed on {Control}")]
    private static partial void LogConfirmed(ILogger log, string tag, int pid, string control);

    [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "share '{Tag}': daemon {Pid} did not stop when asked; sending signals")]
    private static partial void LogKilling(ILogger log, string tag, int pid);

    [LoggerMessage(EventId = 13, Level = LogLevel.Warning, Message = "The control socket {Socket} could not be removed: {Reason}")]
    private static partial void LogSocketLeft(ILogger log, string socket, string reason);
}
