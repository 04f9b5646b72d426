using System.Diagnostics;
using System.Text.Json;
using Grpc.Core;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Ring;
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

    private LaunchedShare(ShareConfig config, ShmRingSet rings, int pid, string control, ShareControlClient client, ILogger log)
    {
        Config = config;
        Rings = rings;
        DaemonPid = pid;
        ControlSocket = control;
        Client = client;
        _log = log;
    }

    /// <summary>The share's settings.</summary>
    public ShareConfig Config { get; }

    /// <summary>The ring set: queue 0 carries the hiprio virtqueue, queue i request queue i.</summary>
    public ShmRingSet Rings { get; }

    /// <summary>The daemon's pid (also its session id).</summary>
    public int DaemonPid { get; }

    /// <summary>The daemon's control socket.</summary>
    public string ControlSocket { get; }

    /// <summary>The control client (used to confirm the settings and to shut the daemon down).</summary>
    public ShareControlClient Client { get; }

    /// <summary>
    /// Creates the ring, runs fuse_launcher with the share's settings, checks its exit status and report, then
    /// confirms over gRPC that the daemon serves the right directory with the right settings and applies the
    /// allowlist. Leaves nothing behind on failure.
    /// </summary>
    public static async Task<LaunchedShare> StartAsync(ShareConfig share, string launcherPath, ILogger log, CancellationToken ct)
    {
        if (!Directory.Exists(share.HostPath))
            throw new ShareStartException(File.Exists(share.HostPath)
                ? $"{share.Origin}: the shared directory (host_path, --shared-dir) {share.HostPath} is a file; give a directory to share."
                : $"{share.Origin}: the shared directory (host_path, --shared-dir) {share.HostPath} does not exist; create it or fix the path.");
        if (!File.Exists(launcherPath))
            throw new ShareStartException($"fuse_launcher was not found at {launcherPath}; install it next to vdev or pass --launcher PATH.");
        var control = Path.GetFullPath(share.EffectiveControlSocket);
        var controlDir = Path.GetDirectoryName(control)!;
        try
        {
            Directory.CreateDirectory(controlDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ShareStartException($"Cannot create {controlDir} for the control socket of share '{share.Tag}' ({e.Message}); set control_socket to a writable place.");
        }

        var rings = ShmRingSet.Create(1 + share.RequestQueues, RingLayout.DefaultMaxFrameSize, 8L << 20);
        // The vdev's waits on this set (a completion thread waiting for replies, a virtqueue worker waiting for
        // room) sleep on the doorbell at once instead of spinning: these threads share the CPUs with the
        // daemon's dispatchers, which are the ones producing what they wait for, and measured on 2 cores both
        // CPU per request and throughput were better without the spin (tests/Benchmarks/VdevBench.md,
        // "Experiments"). The daemon keeps its own spin, which small reads need. The one exception is in the
        // virtqueue worker, with at most two requests in flight (DeviceOptions.ReplySpin).
        rings.SpinDuration = TimeSpan.Zero;
        int pid;
        try
        {
            pid = await RunLauncherAsync(share, launcherPath, rings, control, log, ct).ConfigureAwait(false);
        }
        catch
        {
            rings.Dispose();
            throw;
        }
        rings.SetPeerProcess(pid);

        var client = new ShareControlClient(control, TimeSpan.FromSeconds(5));
        var launched = new LaunchedShare(share, rings, pid, control, client, log);
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

    private static async Task<int> RunLauncherAsync(ShareConfig share, string launcherPath, ShmRingSet rings, string control, ILogger log, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(launcherPath)
        {
            RedirectStandardOutput = true,
            // stderr is the vdev's own: the launcher's one-line reasons and (through --log-file /proc/self/fd/2)
            // the daemon's log for its whole life reach the operator in the vdev's log stream.
            RedirectStandardError = false,
            UseShellExecute = false,
        };
        foreach (var arg in LauncherArguments(share, rings.Fds.ToString(), control)) psi.ArgumentList.Add(arg);

        Process process;
        // The ring's descriptors are inheritable only while the launcher is being started (it passes exactly
        // those on to the daemon).
        rings.SetInheritable(true);
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
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync(ct);
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
                throw new ShareStartException($"{share.Origin}: the daemon of share '{share.Tag}' did not start: {why} (fuse_launcher exit {process.ExitCode}; its reason is the line above).");
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

    /// <summary>The launcher's command line for <paramref name="share"/> (the daemon's vocabulary plus the ring and control socket).</summary>
    public static IEnumerable<string> LauncherArguments(ShareConfig share, string ringSpec, string control)
    {
        yield return "--shared-dir"; yield return Path.GetFullPath(share.HostPath);
        yield return "--tag"; yield return share.Tag;
        yield return "--cache"; yield return share.Cache;
        yield return "--log-level"; yield return share.LogLevel;
        yield return "--thread-pool-size"; yield return share.ThreadPoolSize.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (share.FdCacheSize is { } fdCacheSize) { yield return "--fd-cache-size"; yield return fdCacheSize.ToString(System.Globalization.CultureInfo.InvariantCulture); }
        if (share.QueueCpus is { } cpus) { yield return "--queue-cpus"; yield return cpus.ToString(); }
        if (share.DirectIo) yield return "--direct-io";
        if (share.AllowDirectIo) yield return "--allow-direct-io";
        if (share.XAttr) yield return "--xattr";
        if (share.ReadOnly) yield return "--readonly";
        if (share.Writeback) yield return "--writeback";
        yield return "--ring"; yield return ringSpec;
        yield return "--control-socket"; yield return control;
        // The daemon's log joins the vdev's own stderr for its whole life (like virtiofsd's single log stream).
        yield return "--log-file"; yield return "/proc/self/fd/2";
    }

    private async Task ConfirmAsync(CancellationToken ct)
    {
        try
        {
            await ConfirmSettingsAsync(ct).ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
        {
            throw new OperationCanceledException("The vdev is stopping.", e, ct);
        }
        catch (RpcException e)
        {
            var detail = e.Status.Detail.TrimEnd('.');
            throw new ShareStartException($"The daemon of share '{Config.Tag}' reported ready but its control service on {ControlSocket} failed: {ShareControlClient.StatusName(e.StatusCode)}: {detail}.");
        }
        LogConfirmed(_log, Config.Tag, DaemonPid, ControlSocket);
    }

    private async Task ConfirmSettingsAsync(CancellationToken ct)
    {
        var status = await Client.Control.GetStatusAsync(new GetStatusRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false);
        var expected = Path.GetFullPath(Config.HostPath);
        if (status.SharedDir != expected)
            throw new ShareStartException($"The daemon on {ControlSocket} serves {status.SharedDir}, not {expected}; another process owns that control socket.");
        if (status.Options.DirectIo != Config.DirectIo)
            throw new ShareStartException($"The daemon of share '{Config.Tag}' reports direct I/O {(status.Options.DirectIo ? "on" : "off")} but the configuration asks for {(Config.DirectIo ? "on" : "off")}.");
        if (Config.Allow.Count > 0)
        {
            foreach (var path in Config.Allow)
                await Client.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = path }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false);
            await Client.Control.SetAllowlistEnabledAsync(new SetAllowlistEnabledRequest { Enabled = true }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false);
        }
    }

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
        Client.Dispose();
        Rings.Close();
        if (!await WaitForExitAsync(DaemonPid, TimeSpan.FromSeconds(5)).ConfigureAwait(false))
        {
            LogKilling(_log, Config.Tag, DaemonPid);
            Interop.ProcessSignals.Kill(DaemonPid, Interop.ProcessSignals.SIGTERM);
            if (!await WaitForExitAsync(DaemonPid, TimeSpan.FromSeconds(3)).ConfigureAwait(false))
                Interop.ProcessSignals.Kill(DaemonPid, Interop.ProcessSignals.SIGKILL);
        }
        Rings.Dispose();
    }

    private static async Task<bool> WaitForExitAsync(int pid, TimeSpan timeout)
    {
        // The daemon is the launcher's child, not ours: it is reaped by init, so its /proc entry goes away on exit
        // (or turns into a zombie briefly, which counts as gone).
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < deadline)
        {
            if (!Interop.ProcessSignals.IsAlive(pid)) return true;
            await Task.Delay(50).ConfigureAwait(false);
        }
        return !Interop.ProcessSignals.IsAlive(pid);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "share '{Tag}': daemon {Pid} serves, settings confirmed on {Control}")]
    private static partial void LogConfirmed(ILogger log, string tag, int pid, string control);

    [LoggerMessage(Level = LogLevel.Warning, Message = "share '{Tag}': daemon {Pid} did not stop when asked; sending signals")]
    private static partial void LogKilling(ILogger log, string tag, int pid);
}
