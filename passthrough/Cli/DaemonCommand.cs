using Hypervisor.Protocol.Share;
using System.CommandLine;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Cli;

/// <summary>
/// The passthrough daemon's command line. Option names follow virtiofsd's where one exists, so the same
/// vocabulary works for the launcher, the vdev and this daemon.
/// </summary>
public static class DaemonCommand
{
    /// <summary>Parsed, validated settings of one daemon run.</summary>
    public sealed record Settings(ShareOptions Share, LogLevel LogLevel, string? MountPoint, string? Ring, string? ControlSocket, int? ReadyFd)
    {
        /// <summary><c>--queue-cpus</c>: the CPU of each request queue's ring dispatcher, or null (the scheduler places them).</summary>
        public QueueCpus? QueueCpus { get; init; }

        /// <summary><c>--allow-dev</c>: with --mount, device nodes on the mount can be opened (default off: nodev).</summary>
        public bool AllowDevices { get; init; }

        /// <summary><c>--allow-suid</c>: with --mount, set-user-ID and set-group-ID bits take effect on exec (default off: nosuid).</summary>
        public bool AllowSetuid { get; init; }
    }

    private static readonly Option<string?> SharedDir = new("--shared-dir") { Description = "Host directory to share (or -o source=DIR). Required." };
    private static readonly Option<string[]> CompatOptions = new("-o") { Description = "virtiofsd-style options: source=DIR, cache=POLICY, xattr|no_xattr, readonly, writeback|no_writeback, allow_direct_io.", Arity = ArgumentArity.ZeroOrMore };
    private static readonly Option<string> Tag = new("--tag") { Description = "Mount tag of the share (default hostshare).", DefaultValueFactory = _ => "hostshare" };
    private static readonly Option<string> Cache = new("--cache") { Description = "Cache policy: never | metadata | auto | always (default auto).", DefaultValueFactory = _ => "auto" };
    private static readonly Option<bool> AllowDirectIo = new("--allow-direct-io") { Description = "Honour the guest's O_DIRECT with FOPEN_DIRECT_IO (default off)." };
    private static readonly Option<bool> DirectIo = new("--direct-io") { Description = "Direct I/O on every open, switchable at run time over the control socket (default off)." };
    private static readonly Option<bool> XAttr = new("--xattr") { Description = "Serve extended attributes (default off)." };
    private static readonly Option<bool> ReadOnly = new("--readonly") { Description = "Refuse every change with EROFS (default off)." };
    private static readonly Option<bool> Writeback = new("--writeback") { Description = "Let the guest use writeback caching (default off)." };
    private static readonly Option<int> ThreadPoolSize = new("--thread-pool-size") { Description = "Worker threads serving /dev/fuse (default 0: two per CPU, at least 8); the ring is served by one thread per queue." };
    private static readonly Option<int?> FdCacheSize = new("--fd-cache-size") { Description = "O_PATH descriptors kept for known inodes (default: RLIMIT_NOFILE less a quarter, 256 to 4096 of it, at most 65536)." };
    private static readonly Option<string> LogLevelOption = new("--log-level") { Description = "error | warn | info | debug | trace | off (default info).", DefaultValueFactory = _ => "info" };
    private static readonly Option<string?> Mount = new("--mount") { Description = "Serve the host kernel's FUSE client: mount the share at DIR through /dev/fuse (root)." };
    private static readonly Option<bool> AllowDev = new("--allow-dev") { Description = "With --mount: let device nodes on the mount be opened (default off: the mount is nodev, as libfuse mounts)." };
    private static readonly Option<bool> AllowSuid = new("--allow-suid") { Description = "With --mount: honour set-user-ID and set-group-ID bits on exec (default off: the mount is nosuid, as libfuse mounts)." };
    private static readonly Option<string?> Ring = new("--ring") { Description = "Serve a shared-memory ring handed over by fd inheritance (set by fuse_launcher)." };
    private static readonly Option<string?> QueueCpusOption = new("--queue-cpus") { Description = "With --ring: the host CPU of each request queue's dispatcher, one per request queue, e.g. 0,1 (default: none pinned)." };
    private static readonly Option<string?> ControlSocket = new("--control-socket") { Description = "UNIX socket path of the gRPC control service." };
    private static readonly Option<int?> ReadyFd = new("--ready-fd") { Description = "Inherited fd on which one 'ready' line is written once serving (set by fuse_launcher)." };

    /// <summary>Builds the command; <paramref name="run"/> receives validated settings and returns the exit code.</summary>
    public static RootCommand Create(Func<Settings, CancellationToken, Task<int>> run)
    {
        var root = new RootCommand("passthrough: the FUSE daemon of one virtio-fs share")
        {
            SharedDir, CompatOptions, Tag, Cache, AllowDirectIo, DirectIo, XAttr, ReadOnly, Writeback, ThreadPoolSize,
            FdCacheSize, LogLevelOption, Mount, AllowDev, AllowSuid, Ring, QueueCpusOption, ControlSocket, ReadyFd,
        };
        root.SetAction(async (parse, ct) =>
        {
            if (!TryBuild(parse, out var settings, out var error))
            {
                Console.Error.WriteLine($"passthrough: {error}");
                return 2;
            }
            return await run(settings!, ct);
        });
        return root;
    }

    /// <summary>Checks every option and combines them; <paramref name="error"/> is one sentence saying what to change.</summary>
    public static bool TryBuild(ParseResult parse, out Settings? settings, out string? error)
    {
        settings = null;
        var compat = new VirtiofsdOptions();
        if (!compat.TryApply(parse.GetValue(CompatOptions) ?? [], out error)) return false;
        var (dir, cache, xattr, readOnly, writeback, allowDirectIo) = compat.Over(new ShareFlags(
            parse.GetValue(SharedDir), parse.GetValue(Cache), parse.GetValue(XAttr), parse.GetValue(ReadOnly),
            parse.GetValue(Writeback), parse.GetValue(AllowDirectIo)));
        var logLevelText = compat.LogLevel ?? parse.GetValue(LogLevelOption)!;

        if (string.IsNullOrEmpty(dir)) { error = "no shared directory given; pass --shared-dir DIR or -o source=DIR."; return false; }
        if (!Directory.Exists(dir))
        {
            error = File.Exists(dir) ? $"the shared directory {dir} is a file, not a directory." : $"the shared directory {dir} does not exist; create it or fix --shared-dir.";
            return false;
        }
        if (!TryParseCache(cache ?? "auto", out var policy)) { error = $"unknown cache policy '{cache}'; use never, metadata, auto or always."; return false; }
        if (!TryParseLogLevel(logLevelText, out var level)) { error = $"unknown log level '{logLevelText}'; use error, warn, info, debug, trace or off."; return false; }
        var threads = parse.GetValue(ThreadPoolSize);
        if (threads < 0 || threads > ShareLimits.MaxThreadPoolSize) { error = $"--thread-pool-size {threads} is out of range; use 0 (automatic) to {ShareLimits.MaxThreadPoolSize}."; return false; }
        var fdCache = parse.GetValue(FdCacheSize);
        if (fdCache is { } size && !TryCheckFdCacheSize(size, DescriptorBudget.SoftLimit(), out error)) return false;
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
        QueueCpus? queueCpus = null;
        if (parse.GetValue(QueueCpusOption) is { } cpuList)
        {
            if (ring is null) { error = "--queue-cpus places the ring's request queues; it needs --ring."; return false; }
            if (!QueueCpus.TryParse(cpuList, "--queue-cpus", out queueCpus, out error)) return false;
        }

        var share = new ShareOptions
        {
            SharedDir = Path.GetFullPath(dir),
            Tag = parse.GetValue(Tag)!,
            Cache = policy,
            AllowDirectIo = allowDirectIo,
            DirectIo = parse.GetValue(DirectIo),
            XAttr = xattr,
            ReadOnly = readOnly,
            Writeback = writeback,
            ThreadPoolSize = threads,
            FdCacheSize = fdCache,
        };
        settings = new Settings(share, level, mount, ring, parse.GetValue(ControlSocket), parse.GetValue(ReadyFd)) { QueueCpus = queueCpus, AllowDevices = allowDev, AllowSetuid = allowSuid };
        error = null;
        return true;
    }

    /// <summary>
    /// An explicit <c>--fd-cache-size</c> must leave room under the descriptor limit for open files; the error says
    /// both ways out.
    /// </summary>
    private static bool TryCheckFdCacheSize(int size, long softLimit, out string? error)
    {
        var largest = DescriptorBudget.LargestCacheSize(softLimit);
        error = size < DescriptorBudget.MinCacheSize
            ? $"--fd-cache-size {size} is too small; use at least {DescriptorBudget.MinCacheSize}, or leave it out for the automatic size."
            : size > largest
                ? $"--fd-cache-size {size} does not fit under RLIMIT_NOFILE ({softLimit}); use at most {largest}, raise the limit (ulimit -n), or leave it out for the automatic size."
                : null;
        return error is null;
    }

    /// <summary>Parses a <c>--cache</c> value (virtiofsd also accepts "none" for never).</summary>
    public static bool TryParseCache(string value, out CachePolicy policy)
    {
        switch (value)
        {
            case "never" or "none": policy = CachePolicy.Never; return true;
            case "metadata": policy = CachePolicy.Metadata; return true;
            case "auto": policy = CachePolicy.Auto; return true;
            case "always": policy = CachePolicy.Always; return true;
            default: policy = default; return false;
        }
    }

    /// <summary>Parses a <c>--log-level</c> value.</summary>
    public static bool TryParseLogLevel(string value, out LogLevel level)
    {
        switch (value)
        {
            case "error": level = LogLevel.Error; return true;
            case "warn" or "warning": level = LogLevel.Warning; return true;
            case "info": level = LogLevel.Information; return true;
            case "debug": level = LogLevel.Debug; return true;
            case "trace": level = LogLevel.Trace; return true;
            case "off": level = LogLevel.None; return true;
            default: level = default; return false;
        }
    }
}
