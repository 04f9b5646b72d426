using System.Text;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Vdev.Config;

/// <summary>A mistake in a VM configuration file: file, line, and what was expected.</summary>
public sealed class ConfigException(string file, int line, string message) : Exception($"{file}:{line}: {message}")
{
    /// <summary>The configuration file.</summary>
    public string File { get; } = file;

    /// <summary>1-based line number (0 when the mistake is about the whole file).</summary>
    public int Line { get; } = line;
}

/// <summary>One share as declared: its settings and where it was declared (FILE:LINE, or "command line"), for messages.</summary>
public sealed record DeclaredShare(ShareSettings Settings, string Origin);

/// <summary>
/// Reads a VM configuration file in the QNX qvm style: one option per line, <c>#</c> comments, and a
/// <c>vdev virtio-fs</c> line that starts the block of one shared directory; the options after it (until the next
/// <c>vdev</c> line or a top-level VM option) belong to that share. Other devices and VM-wide options
/// (<c>system</c>, <c>ram</c>, <c>cpu</c>, ...) belong to the VMM and are skipped. The keys are those of
/// <see cref="ShareVocabulary"/>; the syntax is documented in config/README.md.
/// </summary>
public static class VmConfigParser
{
    private static readonly HashSet<string> VmOptions = new(StringComparer.Ordinal)
    {
        "system", "ram", "cpu", "load", "cmdline", "initrd", "rom", "pass", "reserve", "debug", "logger", "safety", "gdb", "tolerance",
    };

    /// <summary>Parses <paramref name="path"/>; throws <see cref="ConfigException"/> on the first mistake.</summary>
    public static IReadOnlyList<DeclaredShare> ParseFile(string path)
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
    public static IReadOnlyList<DeclaredShare> Parse(string text, string file)
    {
        var shares = new List<(DeclaredShare Share, int Line)>();
        Block? current = null;
        // Shares placed by default take the allowed CPUs in turn, each starting where the previous one stopped.
        int nextCpu = 0;
        var lineNumber = 0;
        void Close()
        {
            if (current is not null) shares.Add((current.Build(ref nextCpu), current.Line));
            current = null;
        }
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
                Close();
                var type = value?.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
                if (type is null) throw new ConfigException(file, lineNumber, "'vdev' needs a device type, e.g. 'vdev virtio-fs'.");
                if (type is "virtio-fs" or "vdev-virtio-fs.so" or "virtio-fs.so") current = new Block(file, lineNumber);
                continue; // another device: its options are the VMM's business
            }
            if (VmOptions.Contains(key))
            {
                Close();
                continue;
            }
            current?.Set(key, value, lineNumber);
        }
        Close();
        if (shares.Count == 0) throw new ConfigException(file, 0, "no 'vdev virtio-fs' block; declare one per shared directory (see config/README.md).");
        CheckUnique(shares, file);
        return shares.ConvertAll(s => s.Share);
    }

    private static void CheckUnique(List<(DeclaredShare Share, int Line)> shares, string file)
    {
        var tags = new Dictionary<string, DeclaredShare>(StringComparer.Ordinal);
        var sockets = new Dictionary<string, DeclaredShare>(StringComparer.Ordinal);
        foreach (var (share, line) in shares)
        {
            var s = share.Settings;
            if (!tags.TryAdd(s.Tag, share))
                throw new ConfigException(file, line, $"tag '{s.Tag}' is already used by the share at {tags[s.Tag].Origin}; each share needs its own tag.");
            if (!sockets.TryAdd(s.SocketPath, share))
                throw new ConfigException(file, line, $"socket {s.SocketPath} is already used by the share at {sockets[s.SocketPath].Origin}; each share needs its own vhost-user socket.");
        }
    }

    private sealed class Block(string file, int line)
    {
        private readonly ShareSettings _settings = ShareVocabulary.Defaults();
        private bool _tagGiven;
        private int _queueCpusLine;

        /// <summary>The line of the block's 'vdev virtio-fs'.</summary>
        public int Line => line;

        public void Set(string key, string? value, int at)
        {
            // qvm places devices in the guest's address space; a vhost-user VMM does that itself.
            if (key is "loc" or "intr" or "name") return;
            var option = ShareVocabulary.ByConfigKey(key);
            if (option is null)
                throw new ConfigException(file, at, $"unknown virtio-fs option '{key}'; expected one of {ShareVocabulary.ConfigKeys}.");
            string? problem;
            if (option.IsFlag)
            {
                problem = ShareVocabulary.TryParseSwitch(value, out var on) ? option.Read(_settings, on ? "true" : "false") : "takes no value or on/off.";
            }
            else
            {
                if (string.IsNullOrEmpty(value)) throw new ConfigException(file, at, $"'{key}' needs a value ({option.Description})");
                problem = option.Read(_settings, value);
            }
            if (problem is not null) throw new ConfigException(file, at, $"{key} '{value}' {problem}");
            if (key == "tag") _tagGiven = true;
            if (key == "queue_cpus") _queueCpusLine = at;
        }

        /// <summary>
        /// The share of this block. Without <c>queue_cpus</c>, two or more request queues are placed from the
        /// <paramref name="nextCpu"/>-th allowed CPU on, which then moves past them.
        /// </summary>
        public DeclaredShare Build(ref int nextCpu)
        {
            var s = _settings;
            if (s.SharedDir.Length == 0) throw new ConfigException(file, line, "this 'vdev virtio-fs' block has no host_path; add 'host_path /dir/to/share'.");
            if (!_tagGiven) throw new ConfigException(file, line, "this 'vdev virtio-fs' block has no tag; add 'tag NAME' (the guest mounts it with mount -t virtiofs NAME /mnt).");
            if (s.SocketPath.Length == 0) throw new ConfigException(file, line, "this 'vdev virtio-fs' block has no socket; add 'socket /run/vdev/NAME.sock' (the VMM's vhost-user chardev connects to it).");
            // Checked here, once num_req_queues is known whichever line came first.
            if (s.PlaceQueues("queue_cpus", ref nextCpu) is { } misfit) throw new ConfigException(file, _queueCpusLine, misfit);
            return new DeclaredShare(s, $"{file}:{line}");
        }
    }
}
