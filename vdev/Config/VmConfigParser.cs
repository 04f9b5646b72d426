using Hypervisor.Protocol.Share;
using System.Text;

namespace Hypervisor.Vdev.Config;

/// <summary>A mistake in a VM configuration file: file, line, and what was expected.</summary>
public sealed class ConfigException(string file, int line, string message) : Exception($"{file}:{line}: {message}")
{
    /// <summary>The configuration file.</summary>
    public string File { get; } = file;

    /// <summary>1-based line number (0 when the mistake is about the whole file).</summary>
    public int Line { get; } = line;
}

/// <summary>
/// Reads a VM configuration file in the QNX qvm style: one option per line, <c>#</c> comments, and a
/// <c>vdev virtio-fs</c> line that starts the block of one shared directory; the options after it (until the next
/// <c>vdev</c> line or a top-level VM option) belong to that share. Other devices and VM-wide options
/// (<c>system</c>, <c>ram</c>, <c>cpu</c>, ...) belong to the VMM and are skipped. The syntax is documented in
/// config/README.md.
/// </summary>
public static class VmConfigParser
{
    private static readonly HashSet<string> VmOptions = new(StringComparer.Ordinal)
    {
        "system", "ram", "cpu", "load", "cmdline", "initrd", "rom", "pass", "reserve", "debug", "logger", "safety", "gdb", "tolerance",
    };

    /// <summary>Parses <paramref name="path"/>; throws <see cref="ConfigException"/> on the first mistake.</summary>
    public static IReadOnlyList<ShareConfig> ParseFile(string path)
    {
        string text;
        try
        {
            text = System.IO.File.ReadAllText(path, Encoding.UTF8);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(path, 0, $"cannot read the configuration file ({e.Message}).");
        }
        return Parse(text, path);
    }

    /// <summary>Parses configuration text; <paramref name="file"/> names it in messages.</summary>
    public static IReadOnlyList<ShareConfig> Parse(string text, string file)
    {
        var shares = new List<(ShareConfig Share, int Line)>();
        Builder? current = null;
        // Shares placed by default take the allowed CPUs in turn, each starting where the previous one stopped.
        int nextCpu = 0;
        var lineNumber = 0;
        foreach (var raw in text.Split('\n'))
        {
            lineNumber++;
            var line = raw;
            var hash = line.IndexOf('#');
            if (hash >= 0) line = line[..hash];
            line = line.Trim();
            if (line.Length == 0) continue;

            var space = line.IndexOfAny([' ', '\t']);
            var key = space < 0 ? line : line[..space];
            var value = space < 0 ? null : line[(space + 1)..].Trim();

            if (key == "vdev")
            {
                if (current is not null) shares.Add((current.Build(file, ref nextCpu), current.Line));
                current = null;
                var type = value?.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
                if (type is null) throw new ConfigException(file, lineNumber, "'vdev' needs a device type, e.g. 'vdev virtio-fs'.");
                if (type is "virtio-fs" or "vdev-virtio-fs.so" or "virtio-fs.so") current = new Builder(file, lineNumber);
                continue; // another device: its options are the VMM's business
            }
            if (VmOptions.Contains(key))
            {
                if (current is not null) shares.Add((current.Build(file, ref nextCpu), current.Line));
                current = null;
                continue;
            }
            current?.Set(key, value, lineNumber);
        }
        if (current is not null) shares.Add((current.Build(file, ref nextCpu), current.Line));
        if (shares.Count == 0) throw new ConfigException(file, 0, "no 'vdev virtio-fs' block; declare one per shared directory (see config/README.md).");
        CheckUnique(shares, file);
        return shares.ConvertAll(s => s.Share);
    }

    private static void CheckUnique(List<(ShareConfig Share, int Line)> shares, string file)
    {
        var tags = new Dictionary<string, ShareConfig>(StringComparer.Ordinal);
        var sockets = new Dictionary<string, ShareConfig>(StringComparer.Ordinal);
        foreach (var (share, line) in shares)
        {
            if (!tags.TryAdd(share.Tag, share))
                throw new ConfigException(file, line, $"tag '{share.Tag}' is already used by the share at {tags[share.Tag].Origin}; each share needs its own tag.");
            if (share.SocketPath is not null && !sockets.TryAdd(share.SocketPath, share))
                throw new ConfigException(file, line, $"socket {share.SocketPath} is already used by the share at {sockets[share.SocketPath].Origin}; each share needs its own vhost-user socket.");
        }
    }

    private sealed class Builder(string file, int line)
    {
        /// <summary>The line of the block's 'vdev virtio-fs'.</summary>
        public int Line => line;

        private string? _hostPath, _tag, _socket, _control, _cache, _logLevel;
        private bool _directIo, _allowDirectIo, _readOnly, _xattr, _writeback;
        private int _queues = 1, _queueSize = 1024, _threads;
        private int? _fdCacheSize;
        private (QueueCpus Cpus, int Line)? _queueCpus;
        private bool _unpinned;
        private readonly List<string> _allow = [];

        public void Set(string key, string? value, int at)
        {
            switch (key)
            {
                case "host_path": _hostPath = Required(key, value, at, "a host directory"); break;
                case "tag": _tag = Required(key, value, at, "a mount tag"); break;
                case "socket" or "socket_path": _socket = Required(key, value, at, "a vhost-user socket path"); break;
                case "control_socket": _control = Required(key, value, at, "a control socket path"); break;
                case "cache":
                    _cache = Required(key, value, at, "never, metadata, auto or always");
                    if (_cache is not ("never" or "metadata" or "auto" or "always"))
                        throw new ConfigException(file, at, $"cache '{_cache}' is not a policy; expected never, metadata, auto or always.");
                    break;
                case "log_level":
                    _logLevel = Required(key, value, at, "error, warn, info, debug, trace or off");
                    if (_logLevel is not ("error" or "warn" or "info" or "debug" or "trace" or "off"))
                        throw new ConfigException(file, at, $"log_level '{_logLevel}' is not a level; expected error, warn, info, debug, trace or off.");
                    break;
                case "directio": _directIo = Flag(key, value, at); break;
                case "allow_direct_io": _allowDirectIo = Flag(key, value, at); break;
                case "readonly": _readOnly = Flag(key, value, at); break;
                case "xattr": _xattr = Flag(key, value, at); break;
                case "writeback": _writeback = Flag(key, value, at); break;
                case "num_req_queues": _queues = Number(key, value, at, 1, 16); break;
                case "queue_size":
                    _queueSize = Number(key, value, at, 2, 32768);
                    if ((_queueSize & (_queueSize - 1)) != 0) throw new ConfigException(file, at, $"queue_size {_queueSize} is not a power of two; expected e.g. 256, 1024.");
                    break;
                case "thread_pool_size": _threads = Number(key, value, at, 0, ShareLimits.MaxThreadPoolSize); break;
                case "fd_cache_size": _fdCacheSize = Number(key, value, at, ShareLimits.MinFdCacheSize, ShareLimits.MaxFdCacheSize); break;
                case "queue_cpus":
                    var list = Required(key, value, at, "one host CPU per request queue, e.g. 0,1, or none");
                    _unpinned = QueueCpus.IsNone(list);
                    _queueCpus = null;
                    if (_unpinned) break;
                    if (!QueueCpus.TryParse(list, "queue_cpus", out var cpus, out var error, noneAllowed: true))
                        throw new ConfigException(file, at, error);
                    _queueCpus = (cpus, at);
                    break;
                case "allow": _allow.Add(AllowedPath(Required(key, value, at, "a path relative to host_path"), at)); break;
                // qvm places devices in the guest's address space; a vhost-user VMM does that itself.
                case "loc" or "intr" or "name": break;
                default:
                    throw new ConfigException(file, at, $"unknown virtio-fs option '{key}'; expected host_path, tag, socket, directio, num_req_queues, queue_size, cache, readonly, xattr, writeback, thread_pool_size, fd_cache_size, queue_cpus, control_socket, allow, allow_direct_io or log_level.");
            }
        }

        /// <summary>
        /// The share of this block. Without <c>queue_cpus</c>, two or more request queues are placed from the
        /// <paramref name="nextCpu"/>-th allowed CPU on, which then moves past them.
        /// </summary>
        public ShareConfig Build(string f, ref int nextCpu)
        {
            if (_hostPath is null) throw new ConfigException(f, line, "this 'vdev virtio-fs' block has no host_path; add 'host_path /dir/to/share'.");
            if (_tag is null) throw new ConfigException(f, line, "this 'vdev virtio-fs' block has no tag; add 'tag NAME' (the guest mounts it with mount -t virtiofs NAME /mnt).");
            if (Encoding.UTF8.GetByteCount(_tag) > 36) throw new ConfigException(f, line, $"tag '{_tag}' is longer than 36 bytes; virtio-fs tags are at most 36 bytes.");
            if (_socket is null) throw new ConfigException(f, line, "this 'vdev virtio-fs' block has no socket; add 'socket /run/vdev/NAME.sock' (the VMM's vhost-user chardev connects to it).");
            // Checked here, once num_req_queues is known whichever line came first.
            if (_queueCpus is var (cpus, at) && cpus.Check(_queues, "queue_cpus") is { } misfit) throw new ConfigException(f, at, misfit);
            var placed = _queueCpus?.Cpus ?? (_unpinned ? null : QueueCpus.Spread(_queues, nextCpu));
            if (_queueCpus is null && placed is not null) nextCpu += _queues;
            return new ShareConfig
            {
                HostPath = _hostPath, Tag = _tag, SocketPath = _socket, ControlSocket = _control, DirectIo = _directIo,
                AllowDirectIo = _allowDirectIo, RequestQueues = _queues, QueueSize = _queueSize, Cache = _cache ?? "auto",
                ReadOnly = _readOnly, XAttr = _xattr, Writeback = _writeback, ThreadPoolSize = _threads, FdCacheSize = _fdCacheSize,
                QueueCpus = placed, Allow = _allow,
                LogLevel = _logLevel ?? "info", Origin = $"{f}:{line}",
            };
        }

        private string Required(string key, string? value, int at, string what) =>
            string.IsNullOrEmpty(value) ? throw new ConfigException(file, at, $"'{key}' needs {what}.") : value;

        private bool Flag(string key, string? value, int at) => value switch
        {
            null or "on" or "yes" or "true" or "1" => true,
            "off" or "no" or "false" or "0" => false,
            _ => throw new ConfigException(file, at, $"'{key}' takes no value or on/off, not '{value}'."),
        };

        private int Number(string key, string? value, int at, int min, int max)
        {
            if (!int.TryParse(value, out var n) || n < min || n > max)
                throw new ConfigException(file, at, $"'{key}' needs a number from {min} to {max}, not '{value}'.");
            return n;
        }

        private string AllowedPath(string value, int at)
        {
            var parts = value.Split('/', StringSplitOptions.RemoveEmptyEntries);
            if (value.StartsWith('/') || parts.Length == 0 || parts.Any(p => p is "." or ".."))
                throw new ConfigException(file, at, $"allow '{value}' must be a path inside the share, relative to host_path, without '.' or '..'.");
            return string.Join('/', parts);
        }
    }
}
