using System.Runtime.InteropServices;
using Hypervisor.Vdev.Config;
using Hypervisor.Interop;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Share;
using Hypervisor.Vdev.VhostUser;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Cli;

/// <summary>
/// The vdev process: reads its shares (a VM configuration file, or one share in virtiofsd's vocabulary), starts
/// each share's daemon through fuse_launcher over a fresh shared-memory ring, confirms the settings over gRPC,
/// and only then serves each share as a vhost-user virtio-fs device. Runs until SIGTERM/SIGINT or until the VMM
/// has disconnected from every device; then shuts the daemons down.
/// </summary>
public static partial class VdevCommand
{
    /// <summary>Exit status: a setting is wrong (nothing was started).</summary>
    public const int ExitConfig = 2;

    /// <summary>Exit status: a share's daemon could not be started.</summary>
    public const int ExitStart = 1;

    public const string Usage = """
        usage: vdev --config FILE                        serve every 'vdev virtio-fs' share of a VM configuration file
               vdev --socket-path PATH --shared-dir DIR [options]   one share, virtiofsd's vocabulary
               vdev --fd N --shared-dir DIR [options]    one share on a listening socket handed over (libvirt)
               vdev --print-capabilities                 the vhost-user JSON capabilities
               vdev ctl --socket CONTROL ...             control a running share (vdev ctl --help)
        share options: --tag T (default: the VMM's tag), --cache never|metadata|auto|always (auto), --direct-io,
               --allow-direct-io, --xattr, --readonly, --writeback, --thread-pool-size N (0: one per CPU),
               --fd-cache-size N (16-1048576; default from RLIMIT_NOFILE),
               --queue-cpus LIST|none (one host CPU per request queue; with 2+ queues default one CPU each in turn),
               --log-level error|warn|info|debug|trace|off (info), --control-socket PATH (SOCKET.ctl),
               --allow PATH (repeatable: allowlist), -o source=DIR,cache=P,xattr,..., --request-queues N (1),
               --queue-size N (1024), --keep-listening, --launcher PATH (fuse_launcher next to vdev)
        """;

    /// <summary>Runs the vdev with <paramref name="args"/>; returns the exit status.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.Out.WriteLine(Usage);
            return 0;
        }

        string? configFile = null, launcher = null;
        var rest = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] == "--config" && i + 1 < args.Length) configFile = args[++i];
            else if (args[i].StartsWith("--config=", StringComparison.Ordinal)) configFile = args[i]["--config=".Length..];
            else if (args[i] == "--launcher" && i + 1 < args.Length) launcher = args[++i];
            else if (args[i].StartsWith("--launcher=", StringComparison.Ordinal)) launcher = args[i]["--launcher=".Length..];
            else rest.Add(args[i]);
        }

        DeviceOptions device;
        List<string> shareArgs;
        try
        {
            device = DeviceOptions.Parse(rest, out shareArgs);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"vdev: {e.Message}");
            return ExitConfig;
        }
        if (device.PrintCapabilities)
        {
            VhostUserDevice.PrintCapabilities(Console.Out);
            return 0;
        }

        var warnings = new List<string>();
        IReadOnlyList<ShareConfig> shares;
        try
        {
            if (configFile is not null)
            {
                if (shareArgs.Count > 0 || device.SocketPath is not null || device.ListenFd is not null)
                    throw new ArgumentException("--config declares every share; do not combine it with --socket-path, --fd or share options.");
                shares = VmConfigParser.ParseFile(configFile);
            }
            else
            {
                device.Validate();
                var share = ShareArguments.Parse(shareArgs, device.SocketPath, device.ListenFd, device.Tag, device.RequestQueues, device.MaxQueueSize, warnings.Add);
                // libvirt passes only --fd and -o source=…, never a tag, so the default /run/vdev/TAG.ctl would be the
                // same for every <filesystem> of every domain and the second vdev would fail; the path libvirt bound
                // the socket to is unique, so the control socket goes next to it, as with --socket-path.
                if (share.ListenFd is int listenFd && share.ControlSocket is null)
                {
                    using var inherited = new SafeFd(listenFd, ownsHandle: false);
                    if (Libc.BoundUnixPath(inherited) is { } bound) share = share with { ControlSocket = bound + ".ctl" };
                }
                shares = [share];
            }
        }
        catch (Exception e) when (e is ArgumentException or ConfigException)
        {
            Console.Error.WriteLine($"vdev: {e.Message}");
            return ExitConfig;
        }

        var level = shares.Select(s => s.LogLevel).Select(ToLevel).Min();
        using var loggerFactory = LoggerFactory.Create(b => b
            .SetMinimumLevel(level)
            .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; })
            .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
        var log = loggerFactory.CreateLogger("vdev");
        foreach (var w in warnings) LogWarning(log, w);

        using var stop = new CancellationTokenSource();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });

        launcher ??= Path.Combine(AppContext.BaseDirectory, "fuse_launcher");
        var launched = new List<LaunchedShare>();
        try
        {
            // Every daemon serves and has confirmed its settings before any VMM is accepted.
            foreach (var share in shares)
            {
                launched.Add(await LaunchedShare.StartAsync(share, launcher, loggerFactory.CreateLogger($"vdev.{share.Tag}"), stop.Token).ConfigureAwait(false));
            }

            var devices = new List<Task<int>>();
            foreach (var share in launched)
            {
                var options = new DeviceOptions
                {
                    SocketPath = share.Config.SocketPath,
                    ListenFd = share.Config.ListenFd,
                    Tag = configFile is not null ? share.Config.Tag : device.Tag,
                    RequestQueues = share.Config.RequestQueues,
                    MaxQueueSize = share.Config.QueueSize,
                    QueueCpus = share.Config.QueueCpus,
                    KeepListening = device.KeepListening,
                };
                var deviceLog = loggerFactory.CreateLogger($"vdev.{share.Config.Tag}");
                devices.Add(VhostUserDevice.RunAsync(options, ShmRingTransport.Factory(share.Rings, deviceLog), deviceLog, stop.Token));
            }
            var results = await Task.WhenAll(devices).ConfigureAwait(false);
            return results.Max();
        }
        catch (ShareStartException e)
        {
            Console.Error.WriteLine($"vdev: {e.Message}");
            return ExitStart;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            return 0;
        }
        finally
        {
            foreach (var share in launched) await share.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static LogLevel ToLevel(string level) => level switch
    {
        "error" => LogLevel.Error,
        "warn" => LogLevel.Warning,
        "debug" => LogLevel.Debug,
        "trace" => LogLevel.Trace,
        "off" => LogLevel.None,
        _ => LogLevel.Information,
    };

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Message}")]
    private static partial void LogWarning(ILogger log, string message);
}
