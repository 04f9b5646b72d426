using System.Globalization;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Config;

namespace Hypervisor.Vdev.Cli;

/// <summary>
/// The single-share command line in virtiofsd's vocabulary, so that libvirt (<c>&lt;binary path=…&gt;</c>) and
/// scripts written for virtiofsd can start the vdev instead. The vhost-user options (<c>--socket-path</c>,
/// <c>--fd</c>, <c>--tag</c>, queues) are taken by <c>DeviceOptions</c> first; this reads the share's options
/// from what is left.
/// </summary>
public static class ShareArguments
{
    /// <summary>virtiofsd options that change nothing here (the daemon is always sandboxed by its own design).</summary>
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal)
    {
        "-f", "--foreground", "--syslog", "--announce-submounts", "--inode-file-handles", "--sandbox", "--seccomp",
        "--rlimit-nofile", "--modcaps", "--killpriv-v2", "--no-killpriv-v2", "--security-label", "--posix-acl",
        "--allow-mmap", "--preserve-noatime", "--migration-mode", "--migration-on-error", "--migration-verify-handles",
        "--migration-confirm-paths", "--uid-map", "--gid-map", "--translate-uid", "--translate-gid", "--xattrmap",
    };

    /// <summary>Options of <see cref="Ignored"/> that take a value.</summary>
    private static readonly HashSet<string> IgnoredWithValue = new(StringComparer.Ordinal)
    {
        "--sandbox", "--seccomp", "--rlimit-nofile", "--modcaps", "--inode-file-handles", "--migration-mode",
        "--migration-on-error", "--uid-map", "--gid-map", "--translate-uid", "--translate-gid", "--xattrmap",
    };

    /// <summary>
    /// Builds the share from the arguments left after the device options. Throws <see cref="ArgumentException"/>
    /// with one sentence saying what to change.
    /// </summary>
    public static ShareConfig Parse(IReadOnlyList<string> args, string? socketPath, int? listenFd, string? tag, int requestQueues, int queueSize, Action<string> warn)
    {
        string? dir = null, cache = null, logLevel = null, control = null;
        bool directIo = false, allowDirectIo = false, xattr = false, readOnly = false, writeback = false;
        int threads = 0;
        int? fdCacheSize = null;
        QueueCpus? queueCpus = null;
        bool unpinned = false;
        var allow = new List<string>();
        var compat = new VirtiofsdOptions();
        for (var i = 0; i < args.Count; i++)
        {
            var a = args[i];
            string name = a, value = "";
            var eq = a.IndexOf('=');
            var inline = a.StartsWith("--", StringComparison.Ordinal) && eq > 0;
            if (inline) { name = a[..eq]; value = a[(eq + 1)..]; }
            string Value()
            {
                if (inline) return value;
                if (i + 1 >= args.Count) throw new ArgumentException($"Option {name} needs a value; write {name} VALUE.");
                return args[++i];
            }
            switch (name)
            {
                case "--shared-dir": dir = Value(); break;
                case "--cache": cache = Value(); break;
                case "--log-level": logLevel = Value(); break;
                case "--control-socket": control = Value(); break;
                case "--direct-io": directIo = true; break;
                case "--allow-direct-io": allowDirectIo = true; break;
                case "--xattr": xattr = true; break;
                case "--no-xattr": xattr = false; break;
                case "--readonly": readOnly = true; break;
                case "--writeback": writeback = true; break;
                case "--allow": allow.Add(Value()); break;
                case "--thread-pool-size":
                    if (!int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out threads) || threads > ShareLimits.MaxThreadPoolSize)
                        throw new ArgumentException($"--thread-pool-size takes a whole number from 0 to {ShareLimits.MaxThreadPoolSize}.");
                    break;
                case "--fd-cache-size":
                    if (!int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var size) || size < ShareLimits.MinFdCacheSize || size > ShareLimits.MaxFdCacheSize)
                        throw new ArgumentException($"--fd-cache-size takes a whole number from {ShareLimits.MinFdCacheSize} to {ShareLimits.MaxFdCacheSize} (the daemon also checks it against its descriptor limit).");
                    fdCacheSize = size;
                    break;
                case "--queue-cpus":
                    var cpuList = Value();
                    unpinned = QueueCpus.IsNone(cpuList);
                    if (unpinned) { queueCpus = null; break; }
                    if (!QueueCpus.TryParse(cpuList, "--queue-cpus", out queueCpus, out var cpuError, noneAllowed: true)) throw new ArgumentException(cpuError);
                    if (queueCpus.Check(requestQueues, "--queue-cpus") is { } misfit) throw new ArgumentException(misfit);
                    break;
                case "-o":
                    if (!compat.TryApply(Value(), out var error)) throw new ArgumentException(error);
                    break;
                default:
                    if (Ignored.Contains(name))
                    {
                        if (IgnoredWithValue.Contains(name) && !inline && i + 1 < args.Count && !args[i + 1].StartsWith('-')) i++;
                        warn($"{name} has no effect here.");
                        break;
                    }
                    throw new ArgumentException($"Unknown option '{a}'; see vdev --help.");
            }
        }
        foreach (var item in compat.Ignored) warn($"-o {item} has no effect here (locks, READDIRPLUS and privilege handling are always on).");
        (dir, cache, xattr, readOnly, writeback, allowDirectIo) = compat.Over(new ShareFlags(dir, cache, xattr, readOnly, writeback, allowDirectIo));
        logLevel = compat.LogLevel ?? logLevel;
        if (dir is null) throw new ArgumentException("No shared directory; give --shared-dir DIR (or -o source=DIR), or --config FILE for several shares.");
        if (cache == "none") cache = "never";
        if (cache is not (null or "never" or "metadata" or "auto" or "always"))
            throw new ArgumentException($"--cache '{cache}' is not a policy; use never, metadata, auto or always.");
        if (logLevel == "err") logLevel = "error";
        if (logLevel is not (null or "error" or "warn" or "info" or "debug" or "trace" or "off"))
            throw new ArgumentException($"--log-level '{logLevel}' is not a level; use error, warn, info, debug, trace or off.");
        return new ShareConfig
        {
            HostPath = dir,
            Tag = tag ?? "hostshare",
            SocketPath = socketPath,
            ListenFd = listenFd,
            DirectIo = directIo,
            AllowDirectIo = allowDirectIo,
            RequestQueues = requestQueues,
            QueueSize = queueSize,
            Cache = cache ?? "auto",
            ReadOnly = readOnly,
            XAttr = xattr,
            Writeback = writeback,
            ThreadPoolSize = threads,
            FdCacheSize = fdCacheSize,
            QueueCpus = queueCpus ?? (unpinned ? null : QueueCpus.Spread(requestQueues)),
            ControlSocket = control,
            Allow = allow,
            LogLevel = logLevel ?? "info",
        };
    }
}
