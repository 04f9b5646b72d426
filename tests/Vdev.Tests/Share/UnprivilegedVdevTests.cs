using System.Diagnostics;
using System.Globalization;
using Hypervisor.Interop;
using Hypervisor.Protocol.Share;
using Hypervisor.Tests;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// The published vdev started by a user that is not root (setpriv): its daemon runs in a user namespace of its own,
/// root there, with the vdev's ids or the <c>--uid-map</c>/<c>--gid-map</c> ranges outside, and otherwise confined as a
/// root vdev's daemon is; the control socket stays the vdev user's. The test itself runs as root (to switch users and,
/// for ranges, to give the user subordinate ids).
/// </summary>
[Trait("Category", "Root")]
[Collection(Collection)]
public sealed class UnprivilegedVdevTests : IDisposable
{
    /// <summary>The tests that edit /etc/subuid and /etc/subgid run one at a time.</summary>
    public const string Collection = "subordinate ids";

    /// <summary>A uid and gid with no account: enough for a vdev that maps only itself.</summary>
    private const uint Anonymous = 4242;

    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-userns-").FullName;

    public UnprivilegedVdevTests()
    {
        // The vdev's user creates its sockets here.
        File.SetUnixFileMode(_dir, (UnixFileMode)0b111_111_111 | UnixFileMode.StickyBit);
    }

    [Fact]
    public void NotRoot_TheDaemonIsRootOfItsOwnUserNamespace_AsTheVdevsUser_AndConfinedAsUnderRoot()
    {
        var share = ShareOwnedBy(Anonymous);
        File.WriteAllText(Path.Combine(share, "marker"), "m");
        var socket = Path.Combine(_dir, "a.sock");
        using var vdev = StartAs(Anonymous, "--socket-path", socket, "--shared-dir", share);
        Frontend.VhostUserFrontend? vmm = null;
        try
        {
            vmm = VdevServing.Connect(vdev, socket);
            int daemon = DaemonOf(share);
            var status = ProcStatus.Read($"/proc/{daemon}/status");
            Assert.StartsWith($"{Anonymous}\t", status["Uid"], StringComparison.Ordinal);
            Assert.Equal($"0 {Anonymous} 1", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));
            Assert.Equal($"0 {Anonymous} 1", Squeeze(File.ReadAllText($"/proc/{daemon}/gid_map")));
            foreach (var ns in new[] { "user", "mnt", "pid", "net", "ipc", "uts" })
                Assert.NotEqual(Readlink($"/proc/self/ns/{ns}"), Readlink($"/proc/{daemon}/ns/{ns}"));
            // Its capabilities are those of its namespace, the documented set; the filter and NoNewPrivs as under root.
            Assert.Equal(Capabilities.DaemonDefault.ToString("x16", CultureInfo.InvariantCulture), status["CapEff"]);
            Assert.Equal("2", status["Seccomp"]);
            Assert.Equal("1", status["NoNewPrivs"]);
            // Its root is the share and nothing else.
            Assert.Equal("marker", string.Join(",", Directory.GetFileSystemEntries($"/proc/{daemon}/root").Select(Path.GetFileName).Order()));
            // The vdev's own threads.
            foreach (var task in Directory.GetDirectories($"/proc/{vdev.Id}/task"))
            {
                var t = ProcStatus.Read($"{task}/status");
                Assert.Equal("1", t["NoNewPrivs"]);
                Assert.Equal("2", t["Seccomp"]);
            }
            // The control socket is the vdev user's, and that user controls the share.
            Assert.Equal(Anonymous, Owner(socket + ".ctl"));
            var ctl = RunAs(Anonymous, "ctl", "--socket", socket + ".ctl", "status");
            Assert.True(ctl.ExitCode == 0, $"vdev ctl status as uid {Anonymous} failed: {ctl.Output}");
            Assert.Contains($"Share          {share}", ctl.Output, StringComparison.Ordinal);

            Stop(vdev);
            Assert.False(File.Exists(socket), "the vhost-user socket was left behind");
            Assert.False(File.Exists(socket + ".ctl"), "the control socket was left behind");
        }
        finally
        {
            vmm?.Dispose();
            Stop(vdev);
        }
    }

    [Fact]
    public void NotRoot_WithUidAndGidMaps_TheRangesComeFromNewuidmap_AndTheVdevStillControlsItsShare()
    {
        const uint first = 300000, count = 65536;
        var saved = GrantSubordinateIds(first, count);
        var share = ShareOwnedBy(first);
        var socket = Path.Combine(_dir, "r.sock");
        Process? vdev = null;
        Frontend.VhostUserFrontend? vmm = null;
        try
        {
            vdev = StartAs(65534, "--socket-path", socket, "--shared-dir", share,
                "--uid-map", $":0:{first}:{count}:", "--gid-map", $":0:{first}:{count}:");
            vmm = VdevServing.Connect(vdev, socket);
            int daemon = DaemonOf(share);
            Assert.Equal($"0 {first} {count}", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));
            Assert.Equal($"0 {first} {count}", Squeeze(File.ReadAllText($"/proc/{daemon}/gid_map")));
            Assert.StartsWith($"{first}\t", ProcStatus.Read($"/proc/{daemon}/status")["Uid"], StringComparison.Ordinal);
            // The daemon's root outside is not the vdev's user, so fuse_launcher made the control socket as that user.
            Assert.Equal(65534u, Owner(socket + ".ctl"));
            var ctl = RunAs(65534, "ctl", "--socket", socket + ".ctl", "status");
            Assert.True(ctl.ExitCode == 0, $"vdev ctl status as nobody failed: {ctl.Output}");
            Assert.Contains($"--uid-map :0:{first}:{count}:", ctl.Output, StringComparison.Ordinal);
        }
        finally
        {
            vmm?.Dispose();
            if (vdev is not null) Stop(vdev);
            vdev?.Dispose();
            Restore(saved);
        }
    }

    /// <summary>
    /// Not root with id ranges, the daemons that replace the first one (a relaunch after SIGKILL, a planned restart's)
    /// join the user namespace the vdev kept from it, since newuidmap no longer works once the vdev has NoNewPrivs
    /// (vdev/README.md, "A not-root vdev with id maps"). The guest's node ids and handles stay valid, files keep their
    /// bytes, new files get the mapped owner on the host, and the vdev stays confined.
    /// </summary>
    [Fact]
    public void NotRoot_WithUidAndGidMaps_AKilledDaemonAndAPlannedRestart_AreReplacedInTheFirstDaemonsUserNamespace()
    {
        const uint first = 300000, count = 65536;
        const uint CreateReadWrite = 0x42; // O_CREAT | O_RDWR
        var saved = GrantSubordinateIds(first, count);
        // The share is the namespace's root's, as a root vdev's daemon would own it.
        var share = Directory.CreateDirectory(Path.Combine(_dir, "share")).FullName;
        Chown(share, first);
        DaemonRelaunchTests.Rig? rig = null;
        try
        {
            rig = new DaemonRelaunchTests.Rig(_dir, 65534, ["--uid-map", $":0:{first}:{count}:", "--gid-map", $":0:{first}:{count}:"]);
            int daemon = rig.Daemon();
            var userNamespace = Readlink($"/proc/{daemon}/ns/user");
            Assert.NotEqual(Readlink("/proc/self/ns/user"), userNamespace);
            Assert.Equal($"0 {first} {count}", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));

            // A file written through the share; its handle stays open across the kill and the restart.
            var created = rig.Call(DaemonRelaunchTests.CreateRequest(FuseFrames.RootId, "before", CreateReadWrite));
            Assert.True(DaemonRelaunchTests.Rig.Error(created) == 0, $"CREATE before: errno {DaemonRelaunchTests.Rig.Error(created)}\n{rig.Log}");
            var node = FuseFrames.ReadEntry(created).NodeId;
            var fh = BitConverter.ToUInt64(created, FuseFrames.OutHeader + 128);
            var data = DaemonRelaunchTests.Pattern(8192, 11);
            Assert.Equal(0, DaemonRelaunchTests.Rig.Error(rig.Call(FuseFrames.WriteRequest(0, node, fh, 0, data))));
            Assert.Equal($"{first}:{first}", OwnerAndGroup(Path.Combine(share, "before")));

            // SIGKILL: the next daemon serves the same node and handle, in the same namespace with the same maps.
            int killed = rig.KillDaemonAndWaitNoticed();
            var attr = rig.Call(FuseFrames.GetattrRequest(0, node));
            Assert.True(DaemonRelaunchTests.Rig.Error(attr) == 0, $"GETATTR after the kill: errno {DaemonRelaunchTests.Rig.Error(attr)}\n{rig.Log}");
            Assert.Equal((ulong)data.Length, FuseFrames.ReadAttr(attr).Size);
            Assert.Equal(data, rig.Read(node, fh, 0, (uint)data.Length));
            int relaunched = rig.Daemon();
            Assert.NotEqual(killed, relaunched);
            AssertInNamespace(relaunched, userNamespace, first, count);
            var after = rig.Call(DaemonRelaunchTests.CreateRequest(FuseFrames.RootId, "after", CreateReadWrite));
            Assert.True(DaemonRelaunchTests.Rig.Error(after) == 0, $"CREATE after the kill: errno {DaemonRelaunchTests.Rig.Error(after)}\n{rig.Log}");
            Assert.Equal($"{first}:{first}", OwnerAndGroup(Path.Combine(share, "after")));
            Assert.Equal(0, DaemonRelaunchTests.Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, FuseFrames.ReadEntry(after).NodeId,
                BitConverter.ToUInt64(after, FuseFrames.OutHeader + 128), 2))));

            // `vdev ctl restart`: a standby daemon joins the namespace too and takes over.
            var (exit, text) = rig.Restart();
            Assert.True(exit == 0, $"vdev ctl restart: exit {exit}: {text}\n{rig.Log}");
            int restarted = WaitForOtherDaemon(rig, relaunched);
            AssertInNamespace(restarted, userNamespace, first, count);
            Assert.Equal(node, rig.Lookup("before", out var size));
            Assert.Equal((ulong)data.Length, size);
            Assert.Equal(data, rig.Read(node, fh, 0, (uint)data.Length));
            Assert.Equal(0, DaemonRelaunchTests.Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, node, fh, 2))));
            Assert.Equal(data, File.ReadAllBytes(Path.Combine(share, "before")));
            Assert.Equal(2, rig.Status().GetProperty("restarts").GetProperty("count").GetInt32());

            // The vdev kept NoNewPrivs and its filter on every thread.
            foreach (var task in Directory.GetDirectories($"/proc/{rig.VdevPid}/task"))
            {
                var t = ProcStatus.Read($"{task}/status");
                Assert.Equal("1", t["NoNewPrivs"]);
                Assert.Equal("2", t["Seccomp"]);
            }
        }
        finally
        {
            rig?.Dispose();
            Restore(saved);
        }
    }

    /// <summary>The daemon that serves once <paramref name="replaced"/> has gone (a planned restart retires it after the hand-over).</summary>
    private static int WaitForOtherDaemon(DaemonRelaunchTests.Rig rig, int replaced)
    {
        var deadline = Environment.TickCount64 + 20_000;
        while (Environment.TickCount64 < deadline)
        {
            var daemons = HostProcesses.FindPassthroughDaemons(rig.Share);
            if (daemons.Count == 1 && daemons[0] != replaced) return daemons[0];
            Thread.Sleep(20);
        }
        throw new TimeoutException($"daemon {replaced} was not replaced by exactly one other\n{rig.Log}");
    }

    private static void AssertInNamespace(int daemon, string userNamespace, uint first, uint count)
    {
        Assert.Equal(userNamespace, Readlink($"/proc/{daemon}/ns/user"));
        Assert.Equal($"0 {first} {count}", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));
        Assert.Equal($"0 {first} {count}", Squeeze(File.ReadAllText($"/proc/{daemon}/gid_map")));
        var status = ProcStatus.Read($"/proc/{daemon}/status");
        Assert.StartsWith($"{first}\t", status["Uid"], StringComparison.Ordinal);
        Assert.Equal("2", status["Seccomp"]);
        Assert.Equal("1", status["NoNewPrivs"]);
        Assert.Equal(Capabilities.DaemonDefault.ToString("x16", CultureInfo.InvariantCulture), status["CapEff"]);
        // Its own pid, mount and net namespaces, not the host's; and it keeps no descriptor of its user namespace.
        foreach (var ns in new[] { "pid", "mnt", "net" })
            Assert.NotEqual(Readlink($"/proc/self/ns/{ns}"), Readlink($"/proc/{daemon}/ns/{ns}"));
        Assert.DoesNotContain(Directory.GetFiles($"/proc/{daemon}/fd"), fd => Readlink(fd).StartsWith("user:", StringComparison.Ordinal));
    }

    /// <summary>Gives nobody (65534, on every Debian system) the subordinate ids <paramref name="first"/>…; returns what to restore.</summary>
    private static Dictionary<string, string?> GrantSubordinateIds(uint first, uint count)
    {
        Assert.True(File.Exists("/usr/bin/newuidmap"), "newuidmap is missing: install the uidmap package (.ci/setup does).");
        var saved = new Dictionary<string, string?>();
        foreach (var file in new[] { "/etc/subuid", "/etc/subgid" })
        {
            saved[file] = File.Exists(file) ? File.ReadAllText(file) : null;
            File.AppendAllText(file, $"nobody:{first}:{count}\n");
        }
        return saved;
    }

    private static void Restore(Dictionary<string, string?> saved)
    {
        foreach (var (file, text) in saved)
        {
            if (text is null) File.Delete(file);
            else File.WriteAllText(file, text);
        }
    }

    [Fact]
    public void Root_WithAUidMap_IsRefusedWithOneSentence_AndStartsNothing()
    {
        var share = ShareOwnedBy(0);
        var socket = Path.Combine(_dir, "root.sock");
        var run = HostProcesses.Run(Executables.Vdev, ["--socket-path", socket, "--shared-dir", share, "--uid-map", ":0:100000:65536:"], TimeSpan.FromSeconds(30));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("--uid-map describes the user namespace the sandbox makes when the vdev is not root", run.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(socket));
    }

    private string ShareOwnedBy(uint id)
    {
        var share = Directory.CreateDirectory(Path.Combine(_dir, $"share{id}")).FullName;
        Chown(share, id);
        return share;
    }

    private static void Chown(string path, uint id)
    {
        var chown = HostProcesses.Run("/bin/chown", [$"{id}:{id}", path], TimeSpan.FromSeconds(10));
        Assert.True(chown.ExitCode == 0, chown.ToString());
    }

    private static Process StartAs(uint id, params string[] args)
    {
        var info = new ProcessStartInfo("/usr/bin/setpriv") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { $"--reuid={id}", $"--regid={id}", "--clear-groups", "--", Executables.Vdev }) info.ArgumentList.Add(a);
        foreach (var a in args) info.ArgumentList.Add(a);
        var process = Process.Start(info)!;
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        return process;
    }

    private static (int ExitCode, string Output) RunAs(uint id, params string[] args)
    {
        var run = HostProcesses.Run("/usr/bin/setpriv", [$"--reuid={id}", $"--regid={id}", "--clear-groups", "--", Executables.Vdev, .. args], TimeSpan.FromSeconds(30));
        return (run.ExitCode, run.Stdout + run.Stderr);
    }

    /// <summary>The daemon serving <paramref name="share"/>: the passthrough process itself, not the unshare that waits for it.</summary>
    private static int DaemonOf(string share) => Assert.Single(HostProcesses.FindPassthroughDaemons(share));

    private static string Squeeze(string map) => string.Join(' ', map.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries));

    private static string Readlink(string path) => new FileInfo(path).LinkTarget ?? "";

    private static uint Owner(string path)
    {
        var stat = HostProcesses.Run("/usr/bin/stat", ["-c", "%u", path], TimeSpan.FromSeconds(10));
        Assert.True(stat.ExitCode == 0, stat.ToString());
        return uint.Parse(stat.Stdout.Trim(), CultureInfo.InvariantCulture);
    }

    /// <summary>The owner of <paramref name="path"/> as uid:gid.</summary>
    private static string OwnerAndGroup(string path)
    {
        var stat = HostProcesses.Run("/usr/bin/stat", ["-c", "%u:%g", path], TimeSpan.FromSeconds(10));
        Assert.True(stat.ExitCode == 0, stat.ToString());
        return stat.Stdout.Trim();
    }

    private static void Stop(Process vdev)
    {
        if (vdev.HasExited) return;
        // SIGTERM: the vdev stops its daemon and removes its sockets.
        Libc.kill(vdev.Id, Libc.SIGTERM);
        if (!vdev.WaitForExit(20_000)) vdev.Kill();
        vdev.WaitForExit();
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}

[CollectionDefinition(UnprivilegedVdevTests.Collection, DisableParallelization = true)]
public sealed class SubordinateIdsCollection;
