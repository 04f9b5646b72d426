using Hypervisor.Protocol.Share;
using System.CommandLine;
using System.CommandLine.Help;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Launcher;

/// <summary>
/// fuse_launcher's command line: the share options in the daemon's (virtiofsd's) vocabulary plus the launcher's
/// own (<c>--passthrough</c>, <c>--timeout</c>, <c>--inherit-fd</c>). Everything is checked here, before
/// anything is started, and every failure is one sentence naming the option and what to change.
/// </summary>
public static class LaunchCommand
{
    /// <summary>sun_path holds 108 bytes including the terminating NUL.</summary>
    public const int MaxSocketPathBytes = 107;

    private static readonly Option<string?> Mount = new("--mount") { Description = "Serve the host kernel's FUSE client at DIR through /dev/fuse (root)." };
    private static readonly Option<string?> Ring = new("--ring") { Description = "The shared-memory ring's descriptor string as its creator formatted it (memfd=N,queues=Q,sq0=N,sqf0=N,cq0=N,cqf0=N,…); forwarded untouched, and the fds it names are inherited by the daemon." };
    private static readonly Option<string[]> InheritFd = new("--inherit-fd") { Description = "A further descriptor the daemon inherits under the same number; repeatable.", Arity = ArgumentArity.ZeroOrMore };
    private static readonly Option<string?> Passthrough = new("--passthrough") { Description = "The daemon: an executable or a .dll run with dotnet (default: passthrough next to fuse_launcher)." };
    private static readonly Option<string?> LogFile = new("--log-file") { Description = "Append the daemon's stdout and stderr to FILE for its whole life (default: captured while it starts, copied to fuse_launcher's stderr, then discarded)." };
    private static readonly Option<string?> TimeoutOption = new("--timeout") { Description = "Seconds the daemon may take to report ready, 0.1 to 3600 (default 10)." };
    private static readonly Option<string?> UserNamespaceFd = new("--user-namespace-fd") { Description = "Not root, with --uid-map/--gid-map: a descriptor of the share's user namespace (the vdev keeps it from the share's first daemon); the daemon joins it, with its id maps already written, instead of a new one being made (no newuidmap). Default: a new user namespace." };

    /// <summary>The outcome of reading the command line.</summary>
    public enum ParseOutcome
    {
        /// <summary>Settings are valid; launch.</summary>
        Launch,
        /// <summary>Help was asked for and printed; exit 0.</summary>
        Help,
        /// <summary>A setting is wrong; <c>error</c> says which and what to change.</summary>
        Invalid,
    }

    /// <summary>Parses and checks <paramref name="args"/>; prints help itself when asked.</summary>
    public static ParseOutcome Parse(string[] args, out LaunchSettings? settings, out string? error)
    {
        var share = new ShareCommandLine(withDevice: false);
        var root = new RootCommand("fuse_launcher: validates one share's settings, starts its passthrough daemon in its own session, waits until it serves, prints {\"pid\":…,\"control\":…,\"tag\":…} and exits")
        {
            Mount, Ring, InheritFd, Passthrough, LogFile, TimeoutOption, UserNamespaceFd,
        };
        share.AddTo(root);
        var parse = root.Parse(args);
        if (parse.Action is HelpAction)
        {
            parse.Invoke();
            settings = null;
            error = null;
            return ParseOutcome.Help;
        }
        return TryBuild(parse, share, out settings, out error) ? ParseOutcome.Launch : ParseOutcome.Invalid;
    }

    private static bool TryBuild(ParseResult parse, ShareCommandLine shareOptions, [NotNullWhen(true)] out LaunchSettings? settings, [NotNullWhen(false)] out string? error)
    {
        settings = null;
        if (parse.Errors.Count > 0)
        {
            error = $"{parse.Errors[0].Message.TrimEnd('.')}; run fuse_launcher --help for the options.";
            return false;
        }
        var share = ShareVocabulary.Defaults();
        // -o items that change nothing are the caller's to warn about; the daemon accepts them too.
        if (!shareOptions.TryRead(parse, share, new List<string>(), out error)) return false;
        var dir = share.SharedDir;
        if (dir.Length == 0) { error = "No shared directory was given; pass --shared-dir DIR or -o source=DIR."; return false; }
        if (!Directory.Exists(dir))
        {
            error = File.Exists(dir)
                ? $"--shared-dir {dir} is not a directory; pass the directory to share."
                : $"--shared-dir {dir} does not exist; create it or pass an existing directory.";
            return false;
        }
        share.SharedDir = Path.GetFullPath(dir);
        if (share.PinnedCpus() is { } queueCpus)
        {
            // The count is the daemon's to check: it learns the ring's request queues when it attaches.
            if ((error = queueCpus.CheckAllowed("--queue-cpus")) is not null) return false;
            if (parse.GetValue(Ring) is null) { error = "--queue-cpus places the ring's request queues; it needs --ring."; return false; }
        }

        var timeout = TimeSpan.FromSeconds(10);
        if (parse.GetValue(TimeoutOption) is { } timeoutText)
        {
            if (!double.TryParse(timeoutText, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) || !(seconds >= 0.1 && seconds <= 3600))
            {
                error = $"--timeout {timeoutText} is not a number of seconds from 0.1 to 3600; pass e.g. --timeout 10.";
                return false;
            }
            timeout = TimeSpan.FromSeconds(seconds);
        }

        var mount = parse.GetValue(Mount);
        var ring = parse.GetValue(Ring);
        if (mount is null && ring is null)
        {
            error = "Nothing to serve; pass --ring SPEC (the vdev's shared-memory ring) or --mount DIR (the host's FUSE client).";
            return false;
        }
        if (mount is not null && ShareVocabulary.SandboxForMount(share) is { } conflict)
        {
            error = conflict;
            return false;
        }
        if (ShareVocabulary.NamespaceMapsProblem(share, Libc.geteuid()) is { } idMaps)
        {
            error = idMaps;
            return false;
        }

        int? userNamespace = null;
        if (parse.GetValue(UserNamespaceFd) is { } userNamespaceText)
        {
            if (!int.TryParse(userNamespaceText, NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            {
                error = $"--user-namespace-fd {userNamespaceText} is not a descriptor number; pass a number such as --user-namespace-fd 5.";
                return false;
            }
            // Only a not-root launcher makes a user namespace for the daemon, and only --sandbox namespace has one.
            if (Libc.geteuid() == 0 || share.Sandbox is not (Sandbox.Namespace or Sandbox.Unspecified))
            {
                error = $"--user-namespace-fd {fd} names the user namespace of a daemon that fuse_launcher starts as a user that is not root with --sandbox namespace; drop it.";
                return false;
            }
            // Not inherited by the daemon: nsenter opens it through this process's /proc entry (DaemonProcess).
            if (!CheckInheritable(fd, $"--user-namespace-fd {fd}", out error)) return false;
            userNamespace = fd;
        }

        var inherited = new SortedSet<int>();
        if (ring is not null)
        {
            // The SPEC is forwarded untouched; only the descriptors it names are needed here, so that exactly those
            // stay open in the daemon.
            if (!RingFds.TryParse(ring, out var ringFds, out var ringError))
            {
                error = $"--ring: {ringError}";
                return false;
            }
            foreach (var (fd, role) in ringFds.Named())
            {
                if (!CheckInheritable(fd, $"--ring names fd {fd} as {role}", out error)) return false;
                inherited.Add(fd);
            }
        }
        foreach (var text in parse.GetValue(InheritFd) ?? [])
        {
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            {
                error = $"--inherit-fd {text} is not a descriptor number; pass a number such as --inherit-fd 5.";
                return false;
            }
            if (!CheckInheritable(fd, $"--inherit-fd {fd}", out error)) return false;
            inherited.Add(fd);
        }

        if (share.ControlSocket.Length > 0)
        {
            share.ControlSocket = Path.GetFullPath(share.ControlSocket);
            if (!CheckControlSocket(share.ControlSocket, out error)) return false;
        }

        string? logFile = parse.GetValue(LogFile);
        if (logFile is not null)
        {
            logFile = Path.GetFullPath(logFile);
            if (!CheckLogFile(logFile, out error)) return false;
        }

        if (!TryResolvePassthrough(parse.GetValue(Passthrough), out var passthrough, out var dotnet, out error)) return false;

        settings = new LaunchSettings
        {
            Share = share,
            MountPoint = mount is null ? null : Path.GetFullPath(mount),
            Ring = ring,
            InheritedFds = inherited.ToArray(),
            LogFile = logFile,
            Passthrough = passthrough,
            DotnetHost = dotnet,
            Timeout = timeout,
            UserNamespaceFd = userNamespace,
        };
        error = null;
        return true;
    }

    private static bool CheckInheritable(int fd, string what, [NotNullWhen(false)] out string? error)
    {
        if (fd <= 2)
        {
            error = $"{what}, a standard stream; the launcher gives the daemon its own fds 0-2, so pass descriptors 3 and above.";
            return false;
        }
        // Only a descriptor without FD_CLOEXEC can have come through exec from fuse_launcher's caller; one with it
        // was opened by the runtime inside this process and is not what the caller meant.
        if (!Descriptors.IsInherited(fd))
        {
            error = $"{what}, which is not open in fuse_launcher; start fuse_launcher with that descriptor inherited (without FD_CLOEXEC) or fix the number.";
            return false;
        }
        error = null;
        return true;
    }

    private static bool CheckControlSocket(string path, [NotNullWhen(false)] out string? error)
    {
        int bytes = Encoding.UTF8.GetByteCount(path);
        if (bytes > MaxSocketPathBytes)
        {
            error = $"--control-socket {path} is {bytes} bytes long; a UNIX socket path holds at most {MaxSocketPathBytes}, choose a shorter path.";
            return false;
        }
        if ((error = CheckDirectory("--control-socket", path)) is not null) return false;
        // Nothing there (or nothing statx can examine): the daemon creates the socket.
        if (Libc.FileType(path, out uint type, out _) != 0) { error = null; return true; }
        if (type != Libc.S_IFSOCK)
        {
            error = $"--control-socket {path} exists and is not a socket; remove it or choose another path.";
            return false;
        }
        // A socket file may be left over from a daemon that died (the daemon replaces a stale one), or belong to
        // one that still serves: a successful connect tells them apart.
        try
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            probe.Connect(new UnixDomainSocketEndPoint(path));
            error = $"--control-socket {path} is in use by a running server; stop it or choose another path.";
            return false;
        }
        catch (SocketException)
        {
            error = null;
            return true;
        }
    }

    private static bool CheckLogFile(string path, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (Directory.Exists(path))
        {
            error = $"--log-file {path} is a directory; pass a file path.";
            return false;
        }
        if (File.Exists(path))
        {
            if (Libc.access(path, Libc.W_OK) == 0 || Descriptors.WritableSelfFd(path) is not null) return true;
            error = $"--log-file {path} is not writable ({Libc.Describe(Libc.LastErrno)}); fix its permissions or choose another file.";
            return false;
        }
        return (error = CheckDirectory("--log-file", path)) is null;
    }

    /// <summary>Null when the directory of <paramref name="path"/> exists and fuse_launcher may create files in it, else why not.</summary>
    private static string? CheckDirectory(string option, string path)
    {
        var directory = Path.GetDirectoryName(path) ?? "/";
        if (!Directory.Exists(directory))
            return $"{option} {path}: the directory {directory} does not exist; create it or choose another path.";
        return Libc.access(directory, Libc.W_OK | Libc.X_OK) == 0 ? null
            : $"{option} {path}: the directory {directory} is not writable ({Libc.Describe(Libc.LastErrno)}); choose a directory fuse_launcher can create files in.";
    }

    private static bool TryResolvePassthrough(string? given, [NotNullWhen(true)] out string? path, out string? dotnet, [NotNullWhen(false)] out string? error)
    {
        dotnet = null;
        path = null;
        if (given is null)
        {
            var apphost = Path.Combine(AppContext.BaseDirectory, "passthrough");
            var dll = apphost + ".dll";
            if (File.Exists(apphost)) given = apphost;
            else if (File.Exists(dll)) given = dll;
            else
            {
                error = $"The passthrough daemon is not next to fuse_launcher ({apphost}); install it there or pass --passthrough PATH.";
                return false;
            }
        }
        var full = Path.GetFullPath(given);
        if (!File.Exists(full))
        {
            error = Directory.Exists(full)
                ? $"--passthrough {full} is a directory; pass the daemon's executable or .dll."
                : $"--passthrough {full} does not exist; pass the daemon's executable or .dll.";
            return false;
        }
        if (full.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
        {
            dotnet = FindDotnet();
            if (dotnet is null)
            {
                error = $"--passthrough {full} is a .dll but no dotnet host was found (DOTNET_HOST_PATH, DOTNET_ROOT, PATH); install dotnet or pass the apphost.";
                return false;
            }
        }
        else if (Libc.access(full, Libc.X_OK) != 0)
        {
            error = $"--passthrough {full} is not executable; make it executable (chmod +x) or pass the .dll.";
            return false;
        }
        path = full;
        error = null;
        return true;
    }

    private static string? FindDotnet()
    {
        static bool Usable(string? p) => !string.IsNullOrEmpty(p) && File.Exists(p) && Libc.access(p, Libc.X_OK) == 0;

        var hostPath = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (Usable(hostPath)) return hostPath;
        var self = Environment.ProcessPath;
        if (self is not null && Path.GetFileName(self) == "dotnet" && Usable(self)) return self;
        var root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && Usable(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, "dotnet");
            if (Usable(candidate)) return Path.GetFullPath(candidate);
        }
        return null;
    }
}
