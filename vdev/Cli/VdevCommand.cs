using System.CommandLine;
using System.Runtime.InteropServices;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Config;
using Hypervisor.Interop;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Share;
using Hypervisor.Vdev.VhostUser;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Cli;

/// <summary>
/// The vdev process: reads its shares (a VM configuration file, or one share in virtiofsd's vocabulary), listens on
/// each share's vhost-user socket, starts each share's daemon through fuse_launcher over a fresh shared-memory ring,
/// confirms the settings over gRPC, and only then accepts the VMM on each share's vhost-user virtio-fs device. Runs
/// until SIGTERM/SIGINT or until the VMM has disconnected from every device; then shuts the daemons down.
/// </summary>
public static partial class VdevCommand
{
    /// <summary>Exit status: a setting is wrong (nothing was started).</summary>
    public const int ExitConfig = 2;

    /// <summary>Exit status: a share's daemon could not be started.</summary>
    public const int ExitStart = 1;

    /// <summary>How long a request that arrives while a share's daemon is being replaced waits for the new one before it is answered EIO.</summary>
    private static readonly TimeSpan RelaunchWait = TimeSpan.FromSeconds(10);

    /// <summary>virtiofsd's request to stay in the foreground: the vdev never daemonizes, so they are accepted silently.</summary>
    private static readonly string[] ForegroundFlags = ["--foreground", "-f"];

    /// <summary>virtiofsd options that have no meaning here, refused (exit status 2) with the reason.</summary>
    private static readonly (string Name, bool TakesValue, string Reason)[] RefusedOptions =
    [
        ("--syslog", false, "is not supported: the vdev and its daemons log to stderr; run it under a service manager that passes stderr to the journal, or redirect it."),
        ("--migration-mode", true, "is not supported: this device does not migrate (it offers no device state to the VMM)."),
        ("--migration-on-error", true, "is not supported: this device does not migrate (it offers no device state to the VMM)."),
        ("--migration-verify-handles", false, "is not supported: this device does not migrate (it offers no device state to the VMM)."),
        ("--migration-confirm-paths", false, "is not supported: this device does not migrate (it offers no device state to the VMM)."),
    ];

    /// <summary>The vdev's command line: the share vocabulary with the device options, and the vdev's own.</summary>
    internal sealed class CommandLine
    {
        public readonly ShareCommandLine Share = new(withDevice: true);
        public readonly Option<string?> Config = new("--config") { Description = "A VM configuration file: serve every 'vdev virtio-fs' block it declares." };
        public readonly Option<string?> Launcher = new("--launcher") { Description = "fuse_launcher to start the daemons with (default: the one next to vdev)." };
        public readonly Option<bool> PrintCapabilities = new("--print-capabilities") { Description = "Print the vhost-user JSON capabilities and exit." };
        public readonly Option<bool> KeepListening = new("--keep-listening") { Description = "After the VMM disconnects, wait for the next one (default: exit, as virtiofsd)." };
        public readonly List<(Option Option, string Reason)> Refused = [];
        public readonly RootCommand Root = new("vdev: virtio-fs devices for a VMM over vhost-user, one passthrough daemon per shared directory. " +
            "Run 'vdev ctl --help' for the operator commands.");

        public CommandLine()
        {
            Share.AddTo(Root);
            Root.Options.Add(Config);
            Root.Options.Add(Launcher);
            Root.Options.Add(PrintCapabilities);
            Root.Options.Add(KeepListening);
            foreach (var name in ForegroundFlags) Root.Options.Add(new Option<bool>(name) { Description = "Accepted for virtiofsd compatibility: the vdev always runs in the foreground.", Hidden = true });
            foreach (var (name, takesValue, reason) in RefusedOptions)
                Refused.Add((takesValue ? new Option<string>(name) { Hidden = true } : new Option<bool>(name) { Hidden = true }, reason));
            foreach (var (option, _) in Refused) Root.Options.Add(option);
        }
    }

    /// <summary>What the command line asks for.</summary>
    internal sealed record Request(IReadOnlyList<DeclaredShare> Shares, bool OfferTag, bool KeepListening, string? Launcher, IReadOnlyList<string> Warnings);

    /// <summary>
    /// Reads the command line into the shares to serve. Returns null with <paramref name="exit"/> set when there is
    /// nothing to serve (help, capabilities, or a mistake, which is written to stderr).
    /// </summary>
    internal static Request? Read(string[] args, TextWriter stderr, out int exit)
    {
        var cli = new CommandLine();
        var parse = cli.Root.Parse(args);
        exit = 0;
        if (parse.Action is System.CommandLine.Help.HelpAction)
        {
            parse.Invoke();
            return null;
        }
        if (parse.Errors.Count > 0) return Fail(stderr, $"{parse.Errors[0].Message.TrimEnd('.')}; see vdev --help.", out exit);
        if (parse.GetValue(cli.PrintCapabilities))
        {
            VhostUserDevice.PrintCapabilities(Console.Out);
            return null;
        }
        foreach (var (option, reason) in cli.Refused)
        {
            if (ShareCommandLine.Given(parse, option)) return Fail(stderr, $"{option.Name} {reason}", out exit);
        }
        var warnings = new List<string>();
        var keepListening = parse.GetValue(cli.KeepListening);
        var launcher = parse.GetValue(cli.Launcher);
        try
        {
            if (parse.GetValue(cli.Config) is { } configFile)
            {
                if (cli.Share.AnyGiven(parse))
                    return Fail(stderr, "--config declares every share; do not combine it with --socket-path, --fd or share options.", out exit);
                return new Request(VmConfigParser.ParseFile(configFile), true, keepListening, launcher, warnings);
            }
        }
        catch (ConfigException e)
        {
            return Fail(stderr, e.Message, out exit);
        }

        var settings = ShareVocabulary.Defaults();
        settings.Tag = "";
        var ignored = new List<string>();
        if (!cli.Share.TryRead(parse, settings, ignored, out var error)) return Fail(stderr, error, out exit);
        foreach (var item in ignored) warnings.Add($"-o {item} has no effect here.");
        // Without --tag the VMM supplies the tag (QEMU's tag= property): the config space is not offered.
        var offerTag = settings.Tag.Length > 0;
        if (!offerTag) settings.Tag = ShareVocabulary.DefaultTag;
        if (settings.SocketPath.Length == 0 && !settings.HasListenFd) return Fail(stderr, "Give --socket-path PATH or --fd N so the VMM can connect.", out exit);
        if (settings.SocketPath.Length > 0 && settings.HasListenFd) return Fail(stderr, "Give either --socket-path or --fd, not both.", out exit);
        if (settings.SharedDir.Length == 0) return Fail(stderr, "No shared directory; give --shared-dir DIR (or -o source=DIR), or --config FILE for several shares.", out exit);
        int firstCpu = 0;
        if (settings.PlaceQueues("--queue-cpus", ref firstCpu) is { } misfit) return Fail(stderr, misfit, out exit);
        // libvirt passes only --fd and -o source=…, never a tag, so the default /run/vdev/TAG.ctl would be the
        // same for every <filesystem> of every domain and the second vdev would fail; the path libvirt bound
        // the socket to is unique, so the control socket goes next to it, as with --socket-path.
        if (settings.HasListenFd && settings.ControlSocket.Length == 0)
        {
            using var inherited = new SafeFd(settings.ListenFd, ownsHandle: false);
            if (Libc.BoundUnixPath(inherited) is { } bound) settings.ControlSocket = bound + ".ctl";
        }
        return new Request([new DeclaredShare(settings, "command line")], offerTag, keepListening, launcher, warnings);
    }

    private static Request? Fail(TextWriter stderr, string message, out int exit)
    {
        stderr.WriteLine($"vdev: {message}");
        exit = ExitConfig;
        return null;
    }

    /// <summary>Runs the vdev with <paramref name="args"/>; returns the exit status.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        if (Read(args, Console.Error, out var exit) is not { } request) return exit;
        var shares = request.Shares;
        foreach (var share in shares)
        {
            if (ShareVocabulary.NamespaceMapsProblem(share.Settings, Libc.geteuid()) is { } problem)
            {
                Console.Error.WriteLine($"vdev: {share.Origin}: {problem}");
                return ExitConfig;
            }
        }
        // Groups are resolved before the syscall filter (NSS may open files and load libraries).
        var socketGroups = new Dictionary<string, uint>(StringComparer.Ordinal);
        foreach (var share in shares)
        {
            var group = share.Settings.SocketGroup;
            if (group.Length == 0) continue;
            if (share.Settings.SocketPath.Length == 0)
            {
                Console.Error.WriteLine($"vdev: {share.Origin}: --socket-group (socket_group) sets the group of the socket the vdev creates at --socket-path; an inherited --fd socket keeps the group its creator gave it.");
                return ExitConfig;
            }
            if (Libc.GroupId(group) is not { } gid)
            {
                Console.Error.WriteLine($"vdev: {share.Origin}: --socket-group '{group}' is not a group on this host; give an existing group name or gid.");
                return ExitConfig;
            }
            socketGroups[share.Settings.SocketPath] = gid;
        }
        // Before the logger, the signal handlers and the gRPC client start threads of their own.
        VdevConfinement confinement;
        try
        {
            confinement = VdevConfinement.Enter([.. shares.Select(s => s.Settings)]);
        }
        catch (Exception e) when (e is InvalidOperationException or SeccompException)
        {
            Console.Error.WriteLine($"vdev: {e.Message}");
            return ExitStart;
        }
        using var confined = confinement;
        var level = shares.Select(s => s.Settings.LogLevel.ToLogLevel()).Min();
        using var loggerFactory = Hypervisor.Logging.StderrLogging.Create(level);
        var log = loggerFactory.CreateLogger("vdev");
        foreach (var w in request.Warnings) LogWarning(log, w);

        using var stop = new CancellationTokenSource();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });

        var launcher = request.Launcher ?? Path.Combine(AppContext.BaseDirectory, "fuse_launcher");
        // Each device's socket listens before the shares start (vdev/README.md, "When the socket appears"): a VMM that
        // connects meanwhile is queued by the kernel, and its first messages wait in the socket until the device accepts
        // it, once every share serves. A share that fails to start ends the vdev, which removes the sockets again.
        var listeners = new List<(DeviceOptions Options, VhostUserListener Listener, ILogger Log)>();
        var launched = new List<ShareSupervisor>();
        try
        {
            foreach (var share in shares)
            {
                var settings = share.Settings;
                var options = new DeviceOptions
                {
                    SocketPath = settings.SocketPath.Length > 0 ? settings.SocketPath : null,
                    SocketGroup = socketGroups.TryGetValue(settings.SocketPath, out var gid) ? gid : null,
                    ListenFd = settings.HasListenFd ? settings.ListenFd : null,
                    Tag = request.OfferTag ? settings.Tag : null,
                    RequestQueues = (int)settings.RequestQueues,
                    MaxQueueSize = (int)settings.QueueSize,
                    QueueCpus = settings.PinnedCpus(),
                    KeepListening = request.KeepListening,
                };
                var deviceLog = loggerFactory.CreateLogger($"vdev.{settings.Tag}");
                if (VhostUserDevice.Listen(options, deviceLog) is not { } listener) return VhostUserDevice.ExitConfig;
                listeners.Add((options, listener, deviceLog));
            }

            // Every daemon serves and has confirmed its settings before any VMM is accepted.
            foreach (var share in shares)
            {
                launched.Add(await ShareSupervisor.StartAsync(share, launcher, loggerFactory.CreateLogger($"vdev.{share.Settings.Tag}"), stop.Token).ConfigureAwait(false));
            }

            confinement.LoadFilter();
            var devices = new List<Task<int>>();
            for (int i = 0; i < launched.Count; i++)
            {
                var (options, listener, deviceLog) = listeners[i];
                // The device owns the listener from here on (it removes the socket file when it returns).
                listeners[i] = default;
                devices.Add(VhostUserDevice.RunAsync(options, listener, RecoveringTransport.Factory(launched[i], RelaunchWait, deviceLog), deviceLog, stop.Token));
            }
            var results = await Task.WhenAll(devices).ConfigureAwait(false);
            return results.Max();
        }
        catch (SeccompException e)
        {
            Console.Error.WriteLine($"vdev: {e.Message}");
            return ExitStart;
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
            // A socket no device took over (a share failed to start, or the vdev was stopped before): removed before the
            // daemons stop, so that a VMM stops finding it as soon as the vdev gives up.
            foreach (var (_, listener, _) in listeners) listener?.Dispose();
            foreach (var share in launched) await share.DisposeAsync().ConfigureAwait(false);
        }
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "Command line: {Warning}")]
    private static partial void LogWarning(ILogger log, string warning);
}
