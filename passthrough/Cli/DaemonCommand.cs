using Hypervisor.Protocol.Share;
using System.CommandLine;
using Hypervisor.Passthrough.FileSystem;
using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Cli;

/// <summary>
/// The passthrough daemon's command line. Option names follow virtiofsd's where one exists, so the same
/// vocabulary works for the launcher, the vdev and this daemon.
/// </summary>
public static class DaemonCommand
{
    /// <summary>Parsed, validated settings of one daemon run: the share's, and where to serve it.</summary>
    public sealed record Settings(ShareSettings Share, string? MountPoint, string? Ring, int? ReadyFd)
    {
        /// <summary>The log level of the share's settings.</summary>
        public LogLevel LogLevel => Share.LogLevel.ToLogLevel();

        /// <summary><c>--control-socket</c>, or null when there is no control service.</summary>
        public string? ControlSocket => Share.ControlSocket.Length > 0 ? Share.ControlSocket : null;

        /// <summary><c>--queue-cpus</c>: the CPU of each request queue's ring dispatcher, or null (the scheduler places them).</summary>
        public QueueCpus? QueueCpus => Share.PinnedCpus();

        /// <summary><c>--control-fd</c>: the control socket, bound and listening, made by fuse_launcher outside the daemon's user namespace; null: the daemon binds <see cref="ControlSocket"/> itself.</summary>
        public int? ControlFd { get; init; }

        /// <summary><c>--allow-dev</c>: with --mount, device nodes on the mount can be opened (default off: nodev).</summary>
        public bool AllowDevices { get; init; }

        /// <summary><c>--allow-suid</c>: with --mount, set-user-ID and set-group-ID bits take effect on exec (default off: nosuid).</summary>
        public bool AllowSetuid { get; init; }
    }

    private static readonly Option<string?> Mount = new("--mount") { Description = "Serve the host kernel's FUSE client: mount the share at DIR through /dev/fuse (root)." };
    private static readonly Option<bool> AllowDev = new("--allow-dev") { Description = "With --mount: let device nodes on the mount be opened (default off: the mount is nodev, as libfuse mounts)." };
    private static readonly Option<bool> AllowSuid = new("--allow-suid") { Description = "With --mount: honour set-user-ID and set-group-ID bits on exec (default off: the mount is nosuid, as libfuse mounts)." };
    private static readonly Option<string?> Ring = new("--ring") { Description = "Serve a shared-memory ring handed over by fd inheritance (set by fuse_launcher)." };
    private static readonly Option<int?> ReadyFd = new("--ready-fd") { Description = "Inherited fd on which one 'ready' line is written once serving (set by fuse_launcher)." };
    private static readonly Option<int?> ControlFd = new("--control-fd") { Description = "Inherited fd of the --control-socket, already listening (set by fuse_launcher when it makes a user namespace)." };

    /// <summary>
    /// Parses <paramref name="args"/> into the settings of a run; or, for help, version or a command-line error, lets
    /// System.CommandLine print what it prints and returns null with its exit code in <paramref name="exitCode"/>.
    /// Settings that do not go together are reported on stderr (exit code 2).
    /// </summary>
    public static Settings? ParseRun(string[] args, out int exitCode)
    {
        var (root, share) = Build();
        root.SetAction(_ => 0);
        var parse = root.Parse(args);
        exitCode = 0;
        if (parse.Errors.Count > 0 || !ReferenceEquals(parse.Action, root.Action))
        {
            exitCode = parse.Invoke();
            return null;
        }
        if (TryBuild(parse, share, out var settings, out var error)) return settings;
        Console.Error.WriteLine($"passthrough: {error}");
        exitCode = 2;
        return null;
    }

    /// <summary>Parses and checks <paramref name="args"/> without running anything.</summary>
    public static bool TryParse(string[] args, [NotNullWhen(true)] out Settings? settings, [NotNullWhen(false)] out string? error)
    {
        var (root, share) = Build();
        return TryBuild(root.Parse(args), share, out settings, out error);
    }

    private static (RootCommand Root, ShareCommandLine Share) Build()
    {
        var share = new ShareCommandLine(withDevice: false);
        var root = new RootCommand("passthrough: the FUSE daemon of one virtio-fs share") { Mount, AllowDev, AllowSuid, Ring, ReadyFd, ControlFd };
        share.AddTo(root);
        return (root, share);
    }

    /// <summary>Checks every option and combines them; <paramref name="error"/> is one sentence saying what to change.</summary>
    public static bool TryBuild(ParseResult parse, ShareCommandLine shareOptions, [NotNullWhen(true)] out Settings? settings, [NotNullWhen(false)] out string? error)
    {
        settings = null;
        var share = ShareVocabulary.Defaults();
        if (!shareOptions.TryRead(parse, share, new List<string>(), out error)) return false;
        // Checked here, not only when the filesystem opens it: the sandbox binds or enters the directory before that.
        var dir = share.SharedDir;
        if (dir.Length == 0) { error = "no shared directory given; pass --shared-dir DIR or -o source=DIR."; return false; }
        if (!Directory.Exists(dir))
        {
            error = File.Exists(dir) ? $"the shared directory {dir} is a file, not a directory." : $"the shared directory {dir} does not exist; create it or fix --shared-dir.";
            return false;
        }
        share.SharedDir = Path.GetFullPath(dir);
        if (share.HasFdCacheSize && !TryCheckFdCacheSize((int)share.FdCacheSize,
                Sandbox.Confinement.NofileLimit(share) is { } limit ? (long)Math.Min(limit, int.MaxValue) : DescriptorBudget.SoftLimit(), out error))
            return false;
        var mount = parse.GetValue(Mount);
        var ring = parse.GetValue(Ring);
        if (mount is null && ring is null) { error = "nothing to serve; pass --mount DIR (host FUSE) or --ring SPEC (from fuse_launcher)."; return false; }
        var allowDev = parse.GetValue(AllowDev);
        var allowSuid = parse.GetValue(AllowSuid);
        if ((allowDev || allowSuid) && mount is null)
        {
            error = $"{(allowDev ? "--allow-dev" : "--allow-suid")} is an option of the /dev/fuse mount; it needs --mount DIR (a guest's own mount options decide this for the ring).";
            return false;
        }
        if (mount is not null && ShareVocabulary.SandboxForMount(share) is { } conflict)
        {
            error = conflict;
            return false;
        }
        if (share.PinnedCpus() is not null && ring is null) { error = "--queue-cpus places the ring's request queues; it needs --ring."; return false; }
        var controlFd = parse.GetValue(ControlFd);
        if (controlFd is not null && share.ControlSocket.Length == 0)
        {
            error = "--control-fd needs --control-socket (the path the socket was bound at).";
            return false;
        }
        settings = new Settings(share, mount, ring, parse.GetValue(ReadyFd)) { AllowDevices = allowDev, AllowSetuid = allowSuid, ControlFd = controlFd };
        error = null;
        return true;
    }

    /// <summary>
    /// An explicit <c>--fd-cache-size</c> must leave room under the descriptor limit for open files; the error says
    /// both ways out.
    /// </summary>
    private static bool TryCheckFdCacheSize(int size, long softLimit, [NotNullWhen(false)] out string? error)
    {
        var largest = DescriptorBudget.LargestCacheSize(softLimit);
        error = size < ShareVocabulary.MinFdCacheSize
            ? $"--fd-cache-size {size} is too small; use at least {ShareVocabulary.MinFdCacheSize}, or leave it out for the automatic size."
            : size > largest
                ? $"--fd-cache-size {size} does not fit under RLIMIT_NOFILE ({softLimit}); use at most {largest}, raise the limit (ulimit -n), or leave it out for the automatic size."
                : null;
        return error is null;
    }
}
