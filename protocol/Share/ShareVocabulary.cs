using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using Hypervisor.Protocol.Control;
using MsLogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace Hypervisor.Protocol.Share;

/// <summary>Which command lines take a <see cref="ShareOption"/>.</summary>
public enum OptionScope
{
    /// <summary>Every process: the vdev, fuse_launcher and the daemon (what the daemon serves and how).</summary>
    Share,

    /// <summary>The vdev only: the vhost-user device of the share.</summary>
    Device,
}

/// <summary>
/// One field of <see cref="ShareSettings"/> in every vocabulary that sets it: its command-line name (virtiofsd's
/// where virtiofsd has one), its key in a VM configuration file, its virtiofsd <c>-o</c> key, how a value is read
/// into the model, and how the model is written back as command-line arguments.
/// </summary>
public sealed record ShareOption
{
    private readonly Func<ShareSettings, string, string?> _read;
    private readonly Func<ShareSettings, IEnumerable<string>> _write;

    internal ShareOption(string name, string? configKey, string description, Func<ShareSettings, string, string?> read,
        Func<ShareSettings, IEnumerable<string>> write, bool isFlag = false, OptionScope scope = OptionScope.Share)
    {
        Name = name;
        ConfigKeys = configKey?.Split('|') ?? [];
        Description = description;
        _read = read;
        _write = write;
        IsFlag = isFlag;
        Scope = scope;
    }

    /// <summary>The command-line name, e.g. <c>--cache</c>.</summary>
    public string Name { get; }

    /// <summary>A flag's command-line name that turns it off, e.g. <c>--no-xattr</c>; null when there is none.</summary>
    public string? Negation { get; init; }

    /// <summary>The VM configuration keys, the preferred (QNX) one first, e.g. <c>host_path</c> and <c>shared_dir</c>; none for a command-line-only option.</summary>
    public IReadOnlyList<string> ConfigKeys { get; }

    /// <summary>The virtiofsd <c>-o</c> key (<c>cache</c> for <c>-o cache=auto</c>; <c>xattr</c> for <c>-o xattr</c> and <c>-o no_xattr</c>); null when <c>-o</c> has none.</summary>
    public string? CompatKey { get; init; }

    /// <summary>The flag is virtiofsd's negative form: <c>-o KEY</c> turns it off and <c>-o no_KEY</c> on (<c>readdirplus</c> for <c>--no-readdirplus</c>).</summary>
    public bool CompatInverted { get; init; }

    /// <summary>Help text, ending with the default.</summary>
    public string Description { get; }

    /// <summary>A switch without a value on the command line (on/off in a VM configuration file).</summary>
    public bool IsFlag { get; }

    /// <summary>The option may be given several times, each adding one value.</summary>
    public bool Repeatable { get; init; }

    /// <summary>Which command lines take it.</summary>
    public OptionScope Scope { get; }

    /// <summary>
    /// Reads <paramref name="value"/> (<c>true</c>/<c>false</c> for a flag) into <paramref name="settings"/>;
    /// returns null, or what is wrong with the value as the end of a sentence that starts with the option and the
    /// value, e.g. "is not a cache policy; use never, metadata, auto or always."
    /// </summary>
    public string? Read(ShareSettings settings, string value) => _read(settings, value);

    /// <summary>The values to pass on for <paramref name="settings"/>: none when it has the default, one <c>true</c> for a set flag.</summary>
    public IEnumerable<string> Write(ShareSettings settings) => _write(settings);
}

/// <summary>
/// The one definition of a share's settings in every vocabulary that sets them: the table of
/// <see cref="ShareOption"/>s, the parser of each word (cache policy, log level, numbers, CPU lists, on/off),
/// virtiofsd's <c>-o</c> items, the defaults, and the arguments that carry a <see cref="ShareSettings"/> from one
/// process to the next. Adding a setting is a field in settings.proto and one entry in <see cref="Options"/>.
/// </summary>
public static class ShareVocabulary
{
    /// <summary>The most worker threads <c>--thread-pool-size</c> accepts (0: automatic).</summary>
    public const int MaxThreadPoolSize = 1024;

    /// <summary>The smallest fd cache <c>--fd-cache-size</c> accepts.</summary>
    public const int MinFdCacheSize = 16;

    /// <summary>The largest fd cache accepted at all; below it, the daemon's descriptor limit decides.</summary>
    public const int MaxFdCacheSize = 1 << 20;

    /// <summary>The most request queues a share offers besides hiprio.</summary>
    public const int MaxRequestQueues = 16;

    /// <summary>The largest split virtqueue (virtio 1.2, 2.7).</summary>
    public const int MaxQueueSize = 32768;

    /// <summary>The virtio-fs config space's tag field is 36 bytes (virtio spec 5.11.4), not NUL-terminated when full.</summary>
    public const int MaxTagBytes = 36;

    /// <summary>The default mount tag.</summary>
    public const string DefaultTag = "hostshare";

    /// <summary>virtiofsd <c>-o</c> items accepted for compatibility that change nothing here.</summary>
    private static readonly HashSet<string> CompatIgnored = new(StringComparer.Ordinal)
    {
        "flock", "no_flock", "posix_lock", "no_posix_lock", "max_idle_threads",
    };

    /// <summary>virtiofsd <c>-o</c> items that have no meaning here, refused with the reason (exit status 2).</summary>
    private static readonly Dictionary<string, string> CompatRefused = new(StringComparer.Ordinal)
    {
        ["timeout"] = "is not supported: entry and attribute timeouts follow --cache here (never 0 s, auto 1 s, metadata and always one day); use --cache.",
        ["dax"] = "is not supported: this device has no DAX window; remove it.",
    };

    /// <summary>Every setting, in the order help lists them and arguments are written.</summary>
    public static IReadOnlyList<ShareOption> Options { get; } =
    [
        Text("--shared-dir", "host_path|shared_dir", "Host directory to share (or -o source=DIR). Required.",
            s => s.SharedDir, (s, v) => s.SharedDir = v) with { CompatKey = "source" },
        new("--tag", "tag", $"Mount tag the guest uses, 1 to {MaxTagBytes} bytes (default {DefaultTag}).", ReadTag,
            s => One(s.Tag != DefaultTag, s.Tag)),
        new("--cache", "cache", "Cache policy: never | metadata | auto | always (default auto).",
            (s, v) => TryParseCache(v, out var c) ? Set(() => s.Cache = c) : "is not a cache policy; use never, metadata, auto or always.",
            s => One(s.Cache is not (CachePolicy.Auto or CachePolicy.Unspecified), Name(s.Cache))) { CompatKey = "cache" },
        Flag("--direct-io", "directio|direct_io", "FOPEN_DIRECT_IO on every open, switchable at run time (default off).",
            s => s.DirectIo, (s, v) => s.DirectIo = v),
        Flag("--allow-direct-io", "allow_direct_io", "Honour the guest's O_DIRECT (default off: it is dropped).",
            s => s.AllowDirectIo, (s, v) => s.AllowDirectIo = v) with { CompatKey = "allow_direct_io" },
        Flag("--xattr", "xattr", "Serve extended attributes (default off).", s => s.Xattr, (s, v) => s.Xattr = v)
            with { CompatKey = "xattr", Negation = "--no-xattr" },
        Flag("--readonly", "readonly", "Refuse every change with EROFS (default off).", s => s.Readonly, (s, v) => s.Readonly = v)
            with { CompatKey = "readonly" },
        Flag("--writeback", "writeback", "Let the guest cache writes (FUSE_WRITEBACK_CACHE; default off).",
            s => s.Writeback, (s, v) => s.Writeback = v) with { CompatKey = "writeback" },
        Number("--thread-pool-size", "thread_pool_size", $"Worker threads that run requests, 0 to {MaxThreadPoolSize}: on a ring, 0 runs each request on its queue's thread (virtiofsd's default); on a /dev/fuse mount, 0 sizes the pool from the CPUs (default 0).",
            0, MaxThreadPoolSize, s => s.ThreadPoolSize == 0 ? null : (uint?)s.ThreadPoolSize, (s, n) => s.ThreadPoolSize = n),
        Number("--fd-cache-size", "fd_cache_size", $"O_PATH descriptors kept for known inodes, {MinFdCacheSize} to {MaxFdCacheSize} and under the daemon's RLIMIT_NOFILE (default: derived from that limit).",
            MinFdCacheSize, MaxFdCacheSize, s => s.HasFdCacheSize ? s.FdCacheSize : (uint?)null, (s, n) => s.FdCacheSize = n),
        new("--log-level", "log_level", "error | warn | info | debug | trace | off (default info).",
            (s, v) => TryParseVerbosity(v, out var l) ? Set(() => s.LogLevel = l) : "is not a log level; use error, warn, info, debug, trace or off.",
            s => One(s.LogLevel is not (Verbosity.Info or Verbosity.Unspecified), Name(s.LogLevel))) { CompatKey = "log_level" },
        new("--allow", "allow", "A path (relative to the share) the guest may reach; repeat for several; none: the whole share.",
            (s, v) => AllowlistPath.TryNormalize(v, out var path, out var why) ? Set(() => s.Allow.Add(path)) : $"is not an allowlist path: {why}",
            s => s.Allow) { Repeatable = true },
        Text("--control-socket", "control_socket", "UNIX socket of the share's gRPC control service (default: the vhost-user socket + .ctl).",
            s => s.ControlSocket, (s, v) => s.ControlSocket = v),
        new("--queue-cpus", "queue_cpus", "Host CPU of each request queue, e.g. 0,1, or none (default: with 2+ queues, one CPU each in turn).",
            ReadQueueCpus, s => One(s.QueueCpus is { Cpus.Count: > 0 }, s.QueueCpus is null ? "" : string.Join(',', s.QueueCpus.Cpus))),
        new("--sandbox", "sandbox", "How the daemon is confined: namespace (new namespaces, the share as its root) | chroot | none (default namespace).",
            (s, v) => TryParseSandbox(v, out var m) ? Set(() => s.Sandbox = m) : "is not a sandbox mode; use namespace, chroot or none.",
            s => One(s.Sandbox is not (Sandbox.Namespace or Sandbox.Unspecified), Name(s.Sandbox))) { CompatKey = "sandbox" },
        new("--seccomp", "seccomp", "What the daemon's syscall filter does outside its allowlist: kill | trap | log | none (default kill).",
            (s, v) => TryParseSeccomp(v, out var a) ? Set(() => s.Seccomp = a) : "is not a seccomp action; use kill, trap, log or none.",
            s => One(s.Seccomp is not (SeccompAction.Kill or SeccompAction.Unspecified), Name(s.Seccomp))) { CompatKey = "seccomp" },
        new("--modcaps", "modcaps", "Capabilities added to (+) or removed from (-) the daemon's set, e.g. +sys_admin:-mknod (default: none changed).",
            (s, v) => Capabilities.TryModify(0, v, out _, out var why) ? Set(() => s.Modcaps = v) : why,
            s => One(s.Modcaps.Length > 0, s.Modcaps)) { CompatKey = "modcaps" },
        new("--rlimit-nofile", "rlimit_nofile", "The daemon's descriptor limit; 0 leaves it as inherited (default: raised to fs.nr_open where the daemon has CAP_SYS_RESOURCE, else to the hard limit).",
            (s, v) => ulong.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? Set(() => s.RlimitNofile = n) : "is not a whole number.",
            s => One(s.HasRlimitNofile, s.RlimitNofile.ToString(CultureInfo.InvariantCulture))),
        new("--translate-uid", "translate_uid", $"A uid translation rule between guest and host ({IdRule.Forms}); repeat for several (default: none, ids are the same on both sides).",
            (s, v) => ReadIdRule(s.TranslateUid, v), s => s.TranslateUid) { Repeatable = true },
        new("--translate-gid", "translate_gid", "A gid translation rule, in the forms of --translate-uid; repeat for several (default: none).",
            (s, v) => ReadIdRule(s.TranslateGid, v), s => s.TranslateGid) { Repeatable = true },
        new("--uid-map", "uid_map", "Users of the daemon's user namespace when the vdev is not root, as :inside:outside:count: (uid 0 inside must be mapped; ranges other than the vdev's own uid need newuidmap and /etc/subuid); default: the vdev's uid is root inside.",
            (s, v) => ReadNamespaceMap(v, "uid", m => s.UidMap = m), s => One(s.UidMap.Length > 0, s.UidMap)),
        new("--gid-map", "gid_map", "Groups of the daemon's user namespace when the vdev is not root, as :inside:outside:count: (gid 0 inside must be mapped; newgidmap and /etc/subgid for other ranges); default: the vdev's gid is root inside.",
            (s, v) => ReadNamespaceMap(v, "gid", m => s.GidMap = m), s => One(s.GidMap.Length > 0, s.GidMap)),
        new("--xattrmap", "xattrmap", "virtiofsd's xattr name mapping rules, e.g. :map::user.virtiofs.: (implies --xattr; default: names pass unchanged).",
            (s, v) => XattrMap.TryParse(v, out _, out var why) ? Set(() => (s.Xattrmap, s.Xattr) = (v, true)) : $"is not an xattr map: {why}",
            s => One(s.Xattrmap.Length > 0, s.Xattrmap)) { CompatKey = "xattrmap" },
        Flag("--posix-acl", "posix_acl", "POSIX ACLs stored, enforced and inherited as on the host (implies --xattr; default off).",
            s => s.PosixAcl, (s, v) => (s.PosixAcl, s.Xattr) = (v, v || s.Xattr)) with { CompatKey = "posix_acl" },
        Flag("--security-label", "security_label", "New files get the guest's security context, e.g. security.selinux, or are not created (default off).",
            s => s.SecurityLabel, (s, v) => s.SecurityLabel = v) with { CompatKey = "security_label" },
        new("--announce-submounts", "announce_submounts", "Host mounts below the share reach the guest as submounts, each with its own device number (default on).",
            (s, v) => Set(() => s.AnnounceSubmounts = v == "true"), s => One(s.HasAnnounceSubmounts && !s.AnnounceSubmounts, "false"), isFlag: true)
            { CompatKey = "announce_submounts", Negation = "--no-announce-submounts" },
        new("--inode-file-handles", "inode_file_handles", "Identify inodes by file handle: never | prefer | mandatory (default prefer).",
            (s, v) => TryParseInodeFileHandles(v, out var m) ? Set(() => s.InodeFileHandles = m) : "is not a file handle mode; use never, prefer or mandatory.",
            s => One(s.InodeFileHandles is not (InodeFileHandles.Prefer or InodeFileHandles.Unspecified), Name(s.InodeFileHandles))),
        Flag("--preserve-noatime", "preserve_noatime", "Keep the guest's O_NOATIME (default off: it is cleared).",
            s => s.PreserveNoatime, (s, v) => s.PreserveNoatime = v),
        new("--no-readdirplus", "no_readdirplus", "Do not offer READDIRPLUS to the guest (default: offered).",
            (s, v) => Set(() => s.NoReaddirplus = v == "true"), s => One(s.NoReaddirplus, "true"), isFlag: true)
            { CompatKey = "readdirplus", CompatInverted = true },
        new("--killpriv-v2", "killpriv_v2", "Offer FUSE_HANDLE_KILLPRIV_V2: the daemon clears set-user-ID and set-group-ID bits on writes as a local filesystem does (default on).",
            (s, v) => Set(() => s.KillprivV2 = v == "true"), s => One(s.HasKillprivV2 && !s.KillprivV2, "false"), isFlag: true)
            { CompatKey = "killpriv_v2", Negation = "--no-killpriv-v2" },
        Flag("--allow-mmap", "allow_mmap", "Let the guest map files opened with direct I/O shared (FUSE_DIRECT_IO_ALLOW_MMAP; default off).",
            s => s.AllowMmap, (s, v) => s.AllowMmap = v),

        new("--relaunch", "relaunch", "Replace a daemon that ends with a new one that keeps the guest's mount; --no-relaunch: every request then fails with EIO (default on).",
            (s, v) => Set(() => s.Relaunch = v == "true"), s => One(s.HasRelaunch && !s.Relaunch, "false"), isFlag: true, scope: OptionScope.Device)
            { Negation = "--no-relaunch" },
        Text("--socket-path", "socket|socket_path", "vhost-user socket to listen on, for the VMM to connect to.",
            s => s.SocketPath, (s, v) => s.SocketPath = v, OptionScope.Device),
        new("--fd", null, "An inherited listening vhost-user socket (libvirt).",
            (s, v) => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var fd) ? Set(() => s.ListenFd = fd) : "is not a descriptor number.",
            s => One(s.HasListenFd, s.ListenFd.ToString(CultureInfo.InvariantCulture)), scope: OptionScope.Device),
        Number("--request-queues", "num_req_queues|request_queues", $"Request queues besides hiprio, 1 to {MaxRequestQueues} (default 1).",
            1, MaxRequestQueues, s => s.RequestQueues is 0 or 1 ? null : (uint?)s.RequestQueues, (s, n) => s.RequestQueues = n, OptionScope.Device),
        new("--queue-size", "queue_size", $"Largest virtqueue size accepted, a power of two up to {MaxQueueSize} (default 1024).",
            (s, v) => uint.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n is >= 1 and <= MaxQueueSize && (n & (n - 1)) == 0
                ? Set(() => s.QueueSize = n) : $"is not a power of two from 1 to {MaxQueueSize}; use e.g. 256 or 1024.",
            s => One(s.QueueSize is not (0 or 1024), s.QueueSize.ToString(CultureInfo.InvariantCulture)), scope: OptionScope.Device),
        Text("--socket-group", "socket_group", "Group that owns the vhost-user socket, which is then writable by that group (default: root's, owner-only).",
            s => s.SocketGroup, (s, v) => s.SocketGroup = v, OptionScope.Device),
    ];

    /// <summary>Settings with every default filled in (what a share gets when nothing is said).</summary>
    public static ShareSettings Defaults() => new()
    {
        Tag = DefaultTag,
        Cache = CachePolicy.Auto,
        LogLevel = Verbosity.Info,
        Sandbox = Sandbox.Namespace,
        Seccomp = SeccompAction.Kill,
        RequestQueues = 1,
        QueueSize = 1024,
    };

    /// <summary>The option whose VM configuration key is <paramref name="key"/>, or null.</summary>
    public static ShareOption? ByConfigKey(string key)
    {
        foreach (var option in Options)
        {
            foreach (var k in option.ConfigKeys) if (k == key) return option;
        }
        return null;
    }

    /// <summary>Every VM configuration key, preferred spellings, for messages.</summary>
    public static string ConfigKeys => string.Join(", ", Options.Where(o => o.ConfigKeys.Count > 0).Select(o => o.ConfigKeys[0]));

    /// <summary>The <c>-o</c> keys known here, for messages.</summary>
    public static string CompatKeys => string.Join(", ", Options.Where(o => o.CompatKey is not null)
        .Select(o => o.IsFlag ? $"{o.CompatKey}, no_{o.CompatKey}" : $"{o.CompatKey}=VALUE"));

    /// <summary>
    /// Applies one virtiofsd <c>-o</c> argument (comma-separated items, later ones win) to <paramref name="settings"/>.
    /// Items that change nothing here are added to <paramref name="ignored"/>; the first unknown or bad item stops
    /// with <paramref name="error"/>.
    /// </summary>
    public static bool TryApplyCompat(ShareSettings settings, string group, ICollection<string> ignored, [NotNullWhen(false)] out string? error)
    {
        foreach (var item in group.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = item.IndexOf('=');
            var key = eq < 0 ? item : item[..eq];
            var value = eq < 0 ? null : item[(eq + 1)..];
            if (CompatIgnored.Contains(key)) { ignored.Add(item); continue; }
            var (option, on) = FindCompat(key);
            if (option is { CompatInverted: true }) on = !on;
            string? problem;
            if (CompatRefused.TryGetValue(key, out var refused)) problem = refused;
            else if (option is null) problem = $"is not a known option; use {CompatKeys}.";
            else if (option.IsFlag) problem = value is null ? option.Read(settings, on ? "true" : "false") : "takes no value.";
            else problem = string.IsNullOrEmpty(value) ? "needs a value, as in -o key=VALUE." : option.Read(settings, value);
            if (problem is not null)
            {
                error = $"-o {item} {problem}";
                return false;
            }
        }
        error = null;
        return true;
    }

    private static (ShareOption? Option, bool On) FindCompat(string key)
    {
        foreach (var option in Options)
        {
            if (option.CompatKey is null) continue;
            if (option.CompatKey == key) return (option, true);
            if (option.IsFlag && key.StartsWith("no_", StringComparison.Ordinal) && option.CompatKey == key[3..]) return (option, false);
        }
        return (null, false);
    }

    /// <summary>
    /// The arguments that give the next process <paramref name="settings"/>: every <see cref="OptionScope.Share"/>
    /// setting that differs from <see cref="Defaults"/>, in the vocabulary of the command lines that read them back.
    /// </summary>
    public static List<string> ToArguments(ShareSettings settings)
    {
        var args = new List<string>();
        foreach (var option in Options)
        {
            if (option.Scope != OptionScope.Share) continue;
            foreach (var value in option.Write(settings))
            {
                args.Add(option.IsFlag && value == "false" ? option.Negation! : option.Name);
                if (!option.IsFlag) args.Add(value);
            }
        }
        return args;
    }

    /// <summary>Parses a cache policy (virtiofsd's <c>none</c> is <c>never</c>).</summary>
    public static bool TryParseCache(string? text, out CachePolicy policy)
    {
        policy = text switch
        {
            "never" or "none" => CachePolicy.Never,
            "metadata" => CachePolicy.Metadata,
            "auto" => CachePolicy.Auto,
            "always" => CachePolicy.Always,
            _ => CachePolicy.Unspecified,
        };
        return policy != CachePolicy.Unspecified;
    }

    /// <summary>The word for a cache policy, as the command lines take it.</summary>
    public static string Name(CachePolicy policy) => policy switch
    {
        CachePolicy.Never => "never",
        CachePolicy.Metadata => "metadata",
        CachePolicy.Always => "always",
        _ => "auto",
    };

    /// <summary>Parses a log level (virtiofsd's <c>err</c> and .NET's <c>warning</c> are accepted too).</summary>
    public static bool TryParseVerbosity(string? text, out Verbosity level)
    {
        level = text switch
        {
            "off" => Verbosity.Off,
            "error" or "err" => Verbosity.Error,
            "warn" or "warning" => Verbosity.Warn,
            "info" => Verbosity.Info,
            "debug" => Verbosity.Debug,
            "trace" => Verbosity.Trace,
            _ => Verbosity.Unspecified,
        };
        return level != Verbosity.Unspecified;
    }

    /// <summary>The word for a log level, as the command lines take it.</summary>
    public static string Name(Verbosity level) => level switch
    {
        Verbosity.Off => "off",
        Verbosity.Error => "error",
        Verbosity.Warn => "warn",
        Verbosity.Debug => "debug",
        Verbosity.Trace => "trace",
        _ => "info",
    };

    /// <summary>
    /// Null, or why <paramref name="settings"/> cannot serve a host /dev/fuse mount (<c>--mount</c>): that mount is made
    /// in the host's mount namespace with the host's root, which a sandboxed daemon no longer has.
    /// </summary>
    public static string? SandboxForMount(ShareSettings settings) => settings.Sandbox is Sandbox.None ? null
        : $"--mount serves the host's own FUSE mount, which a daemon in a sandbox cannot make or reach; pass --sandbox none with --mount (--sandbox {Name(settings.Sandbox)} is for ring daemons).";

    /// <summary>Parses a sandbox mode.</summary>
    public static bool TryParseSandbox(string? text, out Sandbox mode)
    {
        mode = text switch { "namespace" => Sandbox.Namespace, "chroot" => Sandbox.Chroot, "none" => Sandbox.None, _ => Sandbox.Unspecified };
        return mode != Sandbox.Unspecified;
    }

    /// <summary>The word for a sandbox mode (unspecified is the default, namespace).</summary>
    public static string Name(Sandbox mode) => mode switch { Sandbox.Chroot => "chroot", Sandbox.None => "none", _ => "namespace" };

    /// <summary>Parses a file handle mode (virtiofsd's deprecated <c>fallback</c> is <c>prefer</c>).</summary>
    public static bool TryParseInodeFileHandles(string? text, out InodeFileHandles mode)
    {
        mode = text switch
        {
            "never" => InodeFileHandles.Never,
            "prefer" or "fallback" => InodeFileHandles.Prefer,
            "mandatory" => InodeFileHandles.Mandatory,
            _ => InodeFileHandles.Unspecified,
        };
        return mode != InodeFileHandles.Unspecified;
    }

    /// <summary>The word for a file handle mode (unspecified is the default, prefer).</summary>
    public static string Name(InodeFileHandles mode) => mode switch
    {
        InodeFileHandles.Never => "never",
        InodeFileHandles.Mandatory => "mandatory",
        _ => "prefer",
    };

    /// <summary>Whether host mounts below the share are announced to the guest (absent: on, as virtiofsd).</summary>
    public static bool AnnouncesSubmounts(this ShareSettings settings) => !settings.HasAnnounceSubmounts || settings.AnnounceSubmounts;

    /// <summary>Whether FUSE_HANDLE_KILLPRIV_V2 is offered (absent: on; see config/README.md for why virtiofsd's default is not followed).</summary>
    public static bool HandlesKillprivV2(this ShareSettings settings) => !settings.HasKillprivV2 || settings.KillprivV2;

    /// <summary>Parses a seccomp action.</summary>
    public static bool TryParseSeccomp(string? text, out SeccompAction action)
    {
        action = text switch
        {
            "kill" => SeccompAction.Kill,
            "trap" => SeccompAction.Trap,
            "log" => SeccompAction.Log,
            "none" => SeccompAction.None,
            _ => SeccompAction.Unspecified,
        };
        return action != SeccompAction.Unspecified;
    }

    /// <summary>The word for a seccomp action (unspecified is the default, kill).</summary>
    public static string Name(SeccompAction action) => action switch
    {
        SeccompAction.Trap => "trap",
        SeccompAction.Log => "log",
        SeccompAction.None => "none",
        _ => "kill",
    };

    /// <summary>The logging level of <paramref name="level"/> (unspecified is info).</summary>
    public static MsLogLevel ToLogLevel(this Verbosity level) => level switch
    {
        Verbosity.Off => MsLogLevel.None,
        Verbosity.Error => MsLogLevel.Error,
        Verbosity.Warn => MsLogLevel.Warning,
        Verbosity.Debug => MsLogLevel.Debug,
        Verbosity.Trace => MsLogLevel.Trace,
        _ => MsLogLevel.Information,
    };

    /// <summary>Parses an on/off value of a VM configuration file (no value means on).</summary>
    public static bool TryParseSwitch(string? text, out bool on)
    {
        switch (text)
        {
            case null or "on" or "yes" or "true" or "1": on = true; return true;
            case "off" or "no" or "false" or "0": on = false; return true;
            default: on = false; return false;
        }
    }

    /// <summary>The effective control socket of a share: as given, else next to its vhost-user socket, else /run/vdev/TAG.ctl.</summary>
    public static string EffectiveControlSocket(this ShareSettings settings) =>
        settings.ControlSocket.Length > 0 ? settings.ControlSocket
        : settings.SocketPath.Length > 0 ? settings.SocketPath + ".ctl"
        : Path.Combine("/run/vdev", settings.Tag + ".ctl");

    /// <summary>
    /// Checks a CPU list given for the share against its request queues (one each, CPUs this process may run on), or,
    /// when none was given, places two or more request queues from the <paramref name="first"/>-th allowed CPU on
    /// (<see cref="QueueCpus.Spread"/>), moving <paramref name="first"/> past them. Returns null, or what to change,
    /// naming <paramref name="option"/>.
    /// </summary>
    public static string? PlaceQueues(this ShareSettings settings, string option, ref int first)
    {
        var queues = (int)settings.RequestQueues;
        if (settings.PinnedCpus() is { } cpus) return cpus.Check(queues, option);
        if (settings.QueueCpus is null && QueueCpus.Spread(queues, first) is { } placed)
        {
            settings.QueueCpus = placed.ToList();
            first += queues;
        }
        return null;
    }

    /// <summary>The CPU list of the share, or null when its request queues are not pinned.</summary>
    public static QueueCpus? PinnedCpus(this ShareSettings settings) =>
        settings.QueueCpus is { Cpus.Count: > 0 } list ? QueueCpus.FromList(list) : null;

    /// <summary>
    /// Parses a virtiofsd id map, <c>:inside:outside:count:</c>: the first character is the separator, which must also
    /// end the map; three decimal numbers, a count of at least 1, neither range past 2^32-1.
    /// </summary>
    public static bool TryParseNamespaceMap(string? text, out NamespaceIdRange map)
    {
        map = default;
        if (string.IsNullOrEmpty(text) || text.Length < 2 || char.IsAsciiDigit(text[0])) return false;
        var parts = text.Split(text[0]);
        // ":a:b:c:" splits into "", a, b, c, "".
        if (parts.Length != 5 || parts[0].Length != 0 || parts[4].Length != 0) return false;
        Span<uint> n = stackalloc uint[3];
        for (int i = 0; i < 3; i++)
            if (!uint.TryParse(parts[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out n[i])) return false;
        if (n[2] == 0 || (ulong)n[0] + n[2] - 1 > uint.MaxValue || (ulong)n[1] + n[2] - 1 > uint.MaxValue) return false;
        map = new NamespaceIdRange(n[0], n[1], n[2]);
        return true;
    }

    /// <summary>
    /// Null, or why the id maps of <paramref name="settings"/> cannot be used by a vdev whose effective uid is
    /// <paramref name="euid"/>: they describe the user namespace of the sandbox, which is made only when the vdev is
    /// not root, and the daemon must be root inside it.
    /// </summary>
    public static string? NamespaceMapsProblem(ShareSettings settings, uint euid)
    {
        if (settings.UidMap.Length == 0 && settings.GidMap.Length == 0) return null;
        var option = settings.UidMap.Length > 0 ? "--uid-map" : "--gid-map";
        if (settings.Sandbox is not (Sandbox.Namespace or Sandbox.Unspecified))
            return $"{option} describes the user namespace of --sandbox namespace; drop it or use --sandbox namespace (this share has --sandbox {Name(settings.Sandbox)}).";
        if (euid == 0)
            return $"{option} describes the user namespace the sandbox makes when the vdev is not root; as root the daemon stays in the host's user namespace, so drop {option} or run the vdev as an unprivileged user.";
        return null;
    }

    private static string? ReadNamespaceMap(string value, string kind, Action<string> set)
    {
        if (!TryParseNamespaceMap(value, out var map))
            return $"is not an id map; give :inside:outside:count: (any separator character, e.g. :0:{(kind == "uid" ? 1000 : 100)}:1:), with a count of at least 1.";
        if (map.Inside != 0)
            return $"does not map {kind} 0 inside the namespace; the daemon runs as root there, so the map must start at 0 (e.g. :0:{map.Outside}:{map.Count}:).";
        set(value);
        return null;
    }

    private static string? ReadTag(ShareSettings s, string v)
    {
        var bytes = Encoding.UTF8.GetByteCount(v);
        if (bytes == 0 || bytes > MaxTagBytes || v.Contains('\0')) return $"is {bytes} bytes long; a virtio-fs tag holds 1 to {MaxTagBytes} bytes.";
        s.Tag = v;
        return null;
    }

    private static string? ReadQueueCpus(ShareSettings s, string v)
    {
        if (QueueCpus.IsNone(v))
        {
            s.QueueCpus = new CpuList();
            return null;
        }
        if (!QueueCpus.TryParse(v, out var cpus)) return $"is not a CPU list; give one host CPU per request queue, as numbers from 0 to {QueueCpus.MaxCpu} or ranges, e.g. 0,1 or 2-3, or {QueueCpus.None}.";
        s.QueueCpus = cpus.ToList();
        return null;
    }

/// <summary>Adds one translation rule after checking it, and its ranges against the rules before it.</summary>
    private static string? ReadIdRule(Google.Protobuf.Collections.RepeatedField<string> rules, string v)
    {
        if (!IdMap.TryCreate([.. rules, v], out _, out var why, out _)) return why;
        return IdRule.TryParse(v, out var rule, out why) ? Set(() => rules.Add(rule.ToString())) : why;
    }

        private static ShareOption Text(string name, string keys, string description, Func<ShareSettings, string> get, Action<ShareSettings, string> set,
        OptionScope scope = OptionScope.Share) =>
        new(name, keys, description, (s, v) => v.Length == 0 ? "is empty; give a path." : Set(() => set(s, v)),
            s => One(get(s).Length > 0, get(s)), scope: scope);

    private static ShareOption Flag(string name, string keys, string description, Func<ShareSettings, bool> get, Action<ShareSettings, bool> set) =>
        new(name, keys, description, (s, v) => Set(() => set(s, v == "true")), s => One(get(s), "true"), isFlag: true);

    private static ShareOption Number(string name, string keys, string description, uint min, uint max, Func<ShareSettings, uint?> get,
        Action<ShareSettings, uint> set, OptionScope scope = OptionScope.Share) =>
        new(name, keys, description,
            (s, v) => uint.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
                ? Set(() => set(s, n)) : $"is not a whole number from {min} to {max}.",
            s => get(s) is { } n ? [n.ToString(CultureInfo.InvariantCulture)] : [], scope: scope);

    private static string? Set(Action apply)
    {
        apply();
        return null;
    }

    private static IEnumerable<string> One(bool given, string value) => given ? [value] : [];
}

/// <summary>One range of a user namespace's id map: <see cref="Count"/> ids from <see cref="Inside"/> inside are <see cref="Outside"/> onwards outside.</summary>
public readonly record struct NamespaceIdRange(uint Inside, uint Outside, uint Count);
