using Hypervisor.Protocol.Share;
using System.Net.Sockets;
using Hypervisor.Interop;
using Hypervisor.Launcher.Tests.Support;

namespace Hypervisor.Launcher.Tests;

/// <summary>
/// The launcher's checks of a share's settings, run as the vdev runs it: each bad setting gives exit 2, one line
/// on stderr naming the option and what to change, nothing on stdout, and no daemon started.
/// </summary>
public class LaunchCommandTests
{
    /// <summary>Placeholders: SHARE (a share dir), ROOT (the temp dir), FILE (a regular file), SCRIPT (a daemon script).</summary>
    public static TheoryData<string, string> BadSettings => new()
    {
        { "--mount /mnt --passthrough SCRIPT", "No shared directory was given; pass --shared-dir DIR or -o source=DIR." },
        { "--shared-dir ROOT/missing --mount /mnt --passthrough SCRIPT", "--shared-dir ROOT/missing does not exist; create it or pass an existing directory." },
        { "--shared-dir FILE --mount /mnt --passthrough SCRIPT", "--shared-dir FILE is not a directory; pass the directory to share." },
        { "-o source=ROOT/missing --mount /mnt --passthrough SCRIPT", "--shared-dir ROOT/missing does not exist" },
        { "-o source=SHARE,bogus --mount /mnt --passthrough SCRIPT", "-o bogus is not a known option; use source=VALUE, cache=VALUE" },
        { "--shared-dir SHARE --cache sometimes --mount /mnt --passthrough SCRIPT", "--cache 'sometimes' is not a cache policy; use never, metadata, auto or always." },
        { "-o source=SHARE,cache=sometimes --mount /mnt --passthrough SCRIPT", "-o cache=sometimes is not a cache policy" },
        { "--shared-dir SHARE --log-level loud --mount /mnt --passthrough SCRIPT", "--log-level 'loud' is not a log level; use error, warn, info, debug, trace or off." },
        { "--shared-dir SHARE --thread-pool-size 5000 --mount /mnt --passthrough SCRIPT", "--thread-pool-size '5000' is not a whole number from 0 to 1024." },
        { "--shared-dir SHARE --thread-pool-size many --mount /mnt --passthrough SCRIPT", "--thread-pool-size 'many' is not a whole number" },
        { "--shared-dir SHARE --fd-cache-size 8 --mount /mnt --passthrough SCRIPT", "--fd-cache-size '8' is not a whole number from 16 to 1048576" },
        { "--shared-dir SHARE --fd-cache-size 2000000 --mount /mnt --passthrough SCRIPT", "--fd-cache-size '2000000' is not a whole number" },
        { "--shared-dir SHARE --queue-cpus 0 --mount /mnt --passthrough SCRIPT", "--queue-cpus places the ring's request queues; it needs --ring." },
        { "--shared-dir SHARE --queue-cpus 0-x --mount /mnt --passthrough SCRIPT", "--queue-cpus '0-x' is not a CPU list; give one host CPU per request queue" },
        { "--shared-dir SHARE --queue-cpus 1023 --mount /mnt --passthrough SCRIPT", "--queue-cpus 1023 names CPU 1023, which this process may not run on (allowed: " },
        { "--shared-dir SHARE --timeout 0 --mount /mnt --passthrough SCRIPT", "--timeout 0 is not a number of seconds from 0.1 to 3600; pass e.g. --timeout 10." },
        { "--shared-dir SHARE --timeout soon --mount /mnt --passthrough SCRIPT", "--timeout soon is not a number of seconds" },
        { "--shared-dir SHARE --tag 0123456789012345678901234567890123456 --mount /mnt --passthrough SCRIPT", "--tag '0123456789012345678901234567890123456' is 37 bytes long; a virtio-fs tag holds 1 to 36 bytes." },
        { "--shared-dir SHARE --passthrough SCRIPT", "Nothing to serve; pass --ring SPEC" },
        { "--shared-dir SHARE --sandbox none --mount /mnt --control-socket ROOT/nodir/c.sock --passthrough SCRIPT", "--control-socket ROOT/nodir/c.sock: the directory ROOT/nodir does not exist; create it or choose another path." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --control-socket ROOT/LONG --passthrough SCRIPT", "bytes long; a UNIX socket path holds at most 107, choose a shorter path." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --control-socket FILE --passthrough SCRIPT", "--control-socket FILE exists and is not a socket; remove it or choose another path." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --control-socket ROOT --passthrough SCRIPT", "--control-socket ROOT exists and is not a socket" },
        { "--shared-dir SHARE --sandbox none --mount /mnt --inherit-fd 2 --passthrough SCRIPT", "--inherit-fd 2, a standard stream; the launcher gives the daemon its own fds 0-2, so pass descriptors 3 and above." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --inherit-fd 987 --passthrough SCRIPT", "--inherit-fd 987, which is not open in fuse_launcher; start fuse_launcher with that descriptor inherited (without FD_CLOEXEC) or fix the number." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --inherit-fd five --passthrough SCRIPT", "--inherit-fd five is not a descriptor number; pass a number such as --inherit-fd 5." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --user-namespace-fd five --passthrough SCRIPT", "--user-namespace-fd five is not a descriptor number; pass a number such as --user-namespace-fd 5." },
        // The tests run as root, whose daemon stays in the host's user namespace.
        { "--shared-dir SHARE --ring memfd=5,queues=1 --user-namespace-fd 5 --passthrough SCRIPT", "--user-namespace-fd 5 names the user namespace of a daemon that fuse_launcher starts as a user that is not root with --sandbox namespace; drop it." },
        { "--shared-dir SHARE --ring memfd=5,queues=1 --passthrough SCRIPT", "--ring: The ring descriptor 'memfd=5,queues=1' lacks sq0= for queue 0 of 1;" },
        { "--shared-dir SHARE --ring memfd=985,queues=1,sq0=986,sqf0=986,cq0=987,cqf0=987 --passthrough SCRIPT", "--ring names fd 985 as memfd, which is not open in fuse_launcher" },
        { "--shared-dir SHARE --sandbox none --mount /mnt --passthrough ROOT/missing", "--passthrough ROOT/missing does not exist; pass the daemon's executable or .dll." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --passthrough FILE", "--passthrough FILE is not executable; make it executable (chmod +x) or pass the .dll." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --passthrough ROOT", "--passthrough ROOT is a directory; pass the daemon's executable or .dll." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --bogus --passthrough SCRIPT", "--bogus" },
        { "--shared-dir SHARE --sandbox none --mount /mnt --log-file ROOT --passthrough SCRIPT", "--log-file ROOT is a directory; pass a file path." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --log-file ROOT/nodir/d.log --passthrough SCRIPT", "--log-file ROOT/nodir/d.log: the directory ROOT/nodir does not exist; create it or choose another path." },
        { "--shared-dir SHARE --sandbox none --mount /mnt --log-file /proc/self/d.log --passthrough SCRIPT", "--log-file /proc/self/d.log: the directory /proc/self is not writable" },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public void BadSetting_GivesExit2_OneSentence_AndStartsNothing(string arguments, string expected)
    {
        using var share = new TempShare();
        var file = Path.Combine(share.Root, "file");
        File.WriteAllText(file, "not a directory");
        var script = share.ReadyScript();
        var longName = new string('s', 120);
        string Expand(string s) => s.Replace("SHARE", share.Share).Replace("ROOT/LONG", share.Root + "/" + longName)
            .Replace("ROOT", share.Root).Replace("FILE", file).Replace("SCRIPT", script);

        var run = LauncherRun.Start(arguments.Split(' ').Select(Expand));

        Assert.Equal(2, run.ExitCode);
        Assert.Empty(run.Stdout);
        var line = Assert.Single(run.StderrLines);
        Assert.StartsWith("fuse_launcher: ", line);
        Assert.Contains(Expand(expected), line);
        Assert.EndsWith(".", line);
        Assert.False(File.Exists(share.StartedMarker), "a daemon was started despite a bad setting");
    }

    [Fact]
    public void ControlSocketInUse_GivesExit2()
    {
        using var share = new TempShare();
        var path = Path.Combine(share.Root, "busy.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen();
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--control-socket", path, "--passthrough", share.ReadyScript()]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal($"fuse_launcher: --control-socket {path} is in use by a running server; stop it or choose another path.", Assert.Single(run.StderrLines));
        Assert.False(File.Exists(share.StartedMarker));
    }

    [Fact]
    public void StaleControlSocket_IsAccepted()
    {
        using var share = new TempShare();
        var path = Path.Combine(share.Root, "stale.sock");
        using (var gone = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            gone.Bind(new UnixDomainSocketEndPoint(path));
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--control-socket", path, "--passthrough", share.ReadyScript()]);
        Libc.kill(share.ScriptPid(), Libc.SIGKILL);

        Assert.True(run.ExitCode == 0, run.Stderr);
    }

    [Fact]
    public void ControlSocketInAReadOnlyDirectory_GivesExit2()
    {
        // /proc/self is not writable even for root: access(W_OK) fails with EACCES.
        using var share = new TempShare();
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--control-socket", "/proc/self/c.sock", "--passthrough", share.ReadyScript()]);

        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith("fuse_launcher: --control-socket /proc/self/c.sock: the directory /proc/self is not writable", Assert.Single(run.StderrLines));
    }

    [Fact]
    public void Parse_ReadsVirtiofsdStyleOptions_AndMakesPathsAbsolute()
    {
        using var share = new TempShare();
        var script = share.ReadyScript();
        Assert.Equal(LaunchCommand.ParseOutcome.Launch, LaunchCommand.Parse(
            ["-o", $"source={share.Share},cache=none,xattr,no_xattr,readonly,flock", "-o", "writeback", "--sandbox", "none", "--mount", "relative/mnt", "--passthrough", script, "--timeout", "2.5"],
            out var settings, out var error));
        Assert.Null(error);
        Assert.NotNull(settings);
        Assert.Equal(share.Share, settings.Share.SharedDir);
        Assert.Equal(CachePolicy.Never, settings.Share.Cache); // virtiofsd's "none" is this stack's "never"
        Assert.False(settings.Share.Xattr);
        Assert.True(settings.Share.Readonly);
        Assert.True(settings.Share.Writeback);
        Assert.Equal(Path.GetFullPath("relative/mnt"), settings.MountPoint);
        Assert.Equal(TimeSpan.FromSeconds(2.5), settings.Timeout);
        Assert.Null(settings.DotnetHost);
        Assert.Equal(0u, settings.Share.ThreadPoolSize);
        Assert.Empty(settings.InheritedFds);
    }

    [Fact]
    public void Parse_ADll_IsRunThroughTheDotnetHost()
    {
        using var share = new TempShare();
        var dll = Path.Combine(share.Root, "passthrough.dll");
        File.WriteAllText(dll, "");
        Assert.Equal(LaunchCommand.ParseOutcome.Launch, LaunchCommand.Parse(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--passthrough", dll], out var settings, out var error));
        Assert.NotNull(settings);
        Assert.Equal(dll, settings.Passthrough);
        Assert.NotNull(settings.DotnetHost);
        Assert.Equal("dotnet", Path.GetFileName(settings.DotnetHost));
    }

    [Fact]
    public void Help_ListsTheOptions_AndExits0()
    {
        var run = LauncherRun.Start(["--help"]);
        Assert.Equal(0, run.ExitCode);
        foreach (var option in new[] { "--shared-dir", "--cache", "--ring", "--control-socket", "--inherit-fd", "--passthrough", "--timeout" })
            Assert.Contains(option, run.Stdout);
    }
}
