using System.Buffers.Binary;
using System.Text;
using Hypervisor.Vdev.Tests.Frontend;
using Xunit.Abstractions;
using Rig = Hypervisor.Vdev.Tests.Share.DaemonRelaunchTests.Rig;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// The vdev's descriptor store end to end on the host (vdev/README.md, "Descriptors that outlive the daemon"): the vdev
/// process, its daemons, a vhost-user front-end in the guest's place, and SIGKILL of the daemon. A file the guest holds
/// open after it was unlinked (through the guest or on the host) keeps its bytes across kills, an owner's POSIX lock
/// stays held, and neither the vdev nor the daemon gathers descriptors over open/release cycles and kills.
/// </summary>
public sealed class DescriptorStoreTests(ITestOutputHelper output) : IDisposable
{
    private const int Eagain = 11;
    private const uint Unlink = 10, GetLk = 31, SetLk = 32;
    private const uint FRdlck = 0, FWrlck = 1, FUnlck = 2;
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-fdstore-").FullName;

    private static byte[] UnlinkRequest(ulong parent, string name)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var body = new byte[n.Length + 1];
        n.CopyTo(body, 0);
        return FuseFrames.Request(Unlink, 0, parent, body);
    }

    /// <summary>struct fuse_lk_in: fh, owner, fuse_file_lock (start, end, type, pid), lk_flags, padding.</summary>
    private static byte[] LkRequest(uint opcode, ulong node, ulong fh, ulong owner, uint type, uint pid)
    {
        var body = new byte[48];
        BinaryPrimitives.WriteUInt64LittleEndian(body, fh);
        BinaryPrimitives.WriteUInt64LittleEndian(body.AsSpan(8), owner);
        BinaryPrimitives.WriteUInt64LittleEndian(body.AsSpan(16), 0);
        BinaryPrimitives.WriteUInt64LittleEndian(body.AsSpan(24), ulong.MaxValue);
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(32), type);
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(36), pid);
        return FuseFrames.Request(opcode, 0, node, body);
    }

    /// <summary>The targets of <paramref name="pid"/>'s descriptors.</summary>
    private static List<string> Targets(int pid)
    {
        var list = new List<string>();
        foreach (var fd in Directory.EnumerateFiles($"/proc/{pid}/fd"))
        {
            try
            {
                list.Add(new FileInfo(fd).LinkTarget ?? "");
            }
            catch (IOException)
            {
            }
        }
        return list;
    }

    /// <summary>
    /// Whether a descriptor target names <paramref name="relative"/> in <paramref name="share"/>, deleted or not. A
    /// descriptor the daemon opened inside its sandbox (the share is its root) reads as the path below the share from
    /// outside that mount namespace.
    /// </summary>
    private static bool Names(string target, string share, string relative)
    {
        if (target.EndsWith(" (deleted)", StringComparison.Ordinal)) target = target[..^10];
        return target == Path.Combine(share, relative) || target == "/" + relative;
    }

    /// <summary>Descriptors of <paramref name="pid"/> that name <paramref name="relative"/> in <paramref name="share"/>.</summary>
    private static int Holding(int pid, string share, string relative) => Targets(pid).Count(t => Names(t, share, relative));

    /// <summary>Descriptors of <paramref name="pid"/> that name any of <paramref name="names"/> in <paramref name="share"/>.</summary>
    private static int HoldingUnder(int pid, string share, string[] names) => Targets(pid).Count(t => names.Any(n => Names(t, share, n)));

    private static int AllDescriptors(int pid) => Directory.EnumerateFiles($"/proc/{pid}/fd").Count();

    /// <summary>Waits until <paramref name="count"/> says <paramref name="expected"/> (the vdev's thread applies what the daemon sent on its own time).</summary>
    private static int Await(Func<int> count, int expected)
    {
        int now = count();
        for (int i = 0; i < 200 && now != expected; i++)
        {
            Thread.Sleep(25);
            now = count();
        }
        return now;
    }

    /// <summary>Replaces the serving daemon: SIGKILL, or a planned restart (`vdev ctl restart`) that must succeed.</summary>
    private static void ReplaceDaemon(Rig rig, bool planned)
    {
        if (!planned)
        {
            rig.KillDaemonAndWaitNoticed();
            return;
        }
        int before = rig.Daemon();
        var (exit, text) = rig.Restart();
        Assert.True(exit == 0, $"vdev ctl restart exited {exit}: {text}\n{rig.Log}");
        Assert.NotEqual(before, rig.Daemon());
    }

    private void OpenUnlinkedSurvivesKills(bool unlinkOnHost, bool planned = false)
    {
        var content = DaemonRelaunchTests.Pattern(12288, 11);
        using var rig = new Rig(_dir);
        var path = Path.Combine(rig.Share, "gone");
        File.WriteAllBytes(path, content);
        try
        {
            var node = rig.Lookup("gone", out _);
            var fh = rig.Open(node, 2 /* O_RDWR */);
            if (unlinkOnHost) File.Delete(path);
            else Assert.Equal(0, Rig.Error(rig.Call(UnlinkRequest(FuseFrames.RootId, "gone"))));
            Assert.False(File.Exists(path));
            // The open file reached the vdev: it holds the deleted file itself.
            Assert.True(Await(() => Holding(rig.VdevPid, rig.Share, "gone"), 1) == 1, string.Join('\n', Targets(rig.VdevPid)));

            for (int kill = 0; kill < 3; kill++)
            {
                ReplaceDaemon(rig, planned);
                var read = rig.Read(node, fh, 0, 12288);
                Assert.True(content.AsSpan().SequenceEqual(read), $"kill {kill}: the unlinked file's bytes changed\n{rig.Log}");
                var patch = DaemonRelaunchTests.Pattern(700, 20 + kill);
                var write = rig.Call(FuseFrames.WriteRequest(0, node, fh, (ulong)(1000 * kill), patch));
                Assert.True(Rig.Error(write) == 0, $"kill {kill}: WRITE to the unlinked file: errno {Rig.Error(write)}\n{rig.Log}");
                patch.CopyTo(content, 1000 * kill);
                Assert.Equal(content[..4096], rig.Read(node, fh, 0, 4096));
                // The node itself (GETATTR without a handle) reaches the nameless inode too.
                var attr = rig.Call(FuseFrames.GetattrRequest(0, node));
                Assert.True(Rig.Error(attr) == 0, $"kill {kill}: GETATTR of the unlinked file's node: errno {Rig.Error(attr)}\n{rig.Log}");
                Assert.Equal((ulong)content.Length, FuseFrames.ReadAttr(attr).Size);
                // The new daemon adopted the vdev's descriptor: it made no second one for the vdev to keep.
                Assert.Equal(1, Holding(rig.VdevPid, rig.Share, Path.GetFileName(path)));
            }
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, node, fh, 2))));
            // Released: the vdev lets the file go, and with the daemon's descriptors gone its space is freed.
            Assert.Equal(0, Await(() => Holding(rig.VdevPid, rig.Share, Path.GetFileName(path)), 0));
            // The daemons' log lines reach the vdev's stream on their own time.
            Assert.Equal(1, Await(() => rig.Log.Contains("(1 of them the very open files the vdev kept", StringComparison.Ordinal) ? 1 : 0, 1));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    [Fact]
    public void FileUnlinkedByTheGuestWhileOpen_ReadsAndWritesThroughItsHandle_AcrossThreeKills() => OpenUnlinkedSurvivesKills(unlinkOnHost: false);

    [Fact]
    public void FileUnlinkedOnTheHostWhileOpen_ReadsAndWritesThroughItsHandle_AcrossThreeKills() => OpenUnlinkedSurvivesKills(unlinkOnHost: true);

    [Fact]
    public void FileUnlinkedWhileOpen_ReadsAndWritesThroughItsHandle_AcrossThreePlannedRestarts() => OpenUnlinkedSurvivesKills(unlinkOnHost: false, planned: true);

    [Fact]
    public void ManyOpenReleaseCyclesAndKills_NeitherTheVdevNorTheDaemonGathersDescriptors()
    {
        using var rig = new Rig(_dir);
        var names = Enumerable.Range(0, 8).Select(i => $"n{i}").ToArray();
        foreach (var name in names) File.WriteAllText(Path.Combine(rig.Share, name), name);
        try
        {
            var nodes = names.Select(n => rig.Lookup(n, out _)).ToArray();
            void Cycles(int rounds)
            {
                for (int r = 0; r < rounds; r++)
                {
                    var fhs = nodes.Select(n => rig.Open(n, 0)).ToArray();
                    for (int i = 0; i < nodes.Length; i++) Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, nodes[i], fhs[i]))));
                }
            }
            // One handle left open across everything: the vdev keeps exactly it.
            var held = rig.Open(nodes[0], 0);
            Cycles(20);
            Assert.Equal(1, Await(() => HoldingUnder(rig.VdevPid, rig.Share, names), 1));
            int daemon = rig.Daemon();
            int before = AllDescriptors(daemon);
            Cycles(200);
            Assert.Equal(1, Await(() => HoldingUnder(rig.VdevPid, rig.Share, names), 1));
            int after = AllDescriptors(daemon);
            output.WriteLine($"daemon {daemon}: {before} descriptors after 20 cycles, {after} after 220");
            Assert.True(after <= before + 2, $"the daemon went from {before} to {after} descriptors over 200 open/release cycles");

            int vdevBefore = AllDescriptors(rig.VdevPid);
            for (int kill = 0; kill < 3; kill++)
            {
                rig.KillDaemon();
                Cycles(50);
                Assert.Equal(names[0], Encoding.UTF8.GetString(rig.Read(nodes[0], held, 0, 100)));
            }
            Assert.Equal(1, Await(() => HoldingUnder(rig.VdevPid, rig.Share, names), 1));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, nodes[0], held))));
            Assert.Equal(0, Await(() => HoldingUnder(rig.VdevPid, rig.Share, names), 0));
            // Rings of dead daemons are released on their own time (DaemonRelaunchTests checks those); the store's own
            // channels and descriptors must not add up: at most the one channel of the serving daemon.
            int vdevAfter = Await(() => AllDescriptors(rig.VdevPid), vdevBefore - 1);
            output.WriteLine($"vdev: {vdevBefore} descriptors with one handle kept before the kills, {vdevAfter} after three kills with none");
            Assert.True(vdevAfter <= vdevBefore, $"the vdev went from {vdevBefore} to {vdevAfter} descriptors over three kills");
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    [Fact]
    public void PosixLockHeldAcrossAKill_StaysHeld_TheOwnerUnlocksIt_AndAnotherOwnerGetsIt() => LockSurvives(planned: false);

    [Fact]
    public void PosixLockHeldAcrossAPlannedRestart_StaysHeld_TheOwnerUnlocksIt_AndAnotherOwnerGetsIt() => LockSurvives(planned: true);

    private void LockSurvives(bool planned)
    {
        const ulong OwnerA = 0xA11CE, OwnerB = 0xB0B;
        using var rig = new Rig(_dir);
        var path = Path.Combine(rig.Share, "locked");
        File.WriteAllText(path, "locked");
        try
        {
            var node = rig.Lookup("locked", out _);
            var fhA = rig.Open(node, 2);
            var fhB = rig.Open(node, 2);
            Assert.Equal(0, Rig.Error(rig.Call(LkRequest(SetLk, node, fhA, OwnerA, FWrlck, 100))));
            // Both handles and owner A's lock descriptor reached the vdev.
            Assert.Equal(3, Await(() => Holding(rig.VdevPid, rig.Share, Path.GetFileName(path)), 3));

            ReplaceDaemon(rig, planned);

            // The lock outlived the daemon: owner B is refused, GETLK names owner A's process, a host process is refused too.
            Assert.Equal(Eagain, Rig.Error(rig.Call(LkRequest(SetLk, node, fhB, OwnerB, FWrlck, 200))));
            var probe = rig.Call(LkRequest(GetLk, node, fhB, OwnerB, FRdlck, 200));
            Assert.True(Rig.Error(probe) == 0, $"GETLK: errno {Rig.Error(probe)}\n{rig.Log}");
            Assert.Equal(FWrlck, BinaryPrimitives.ReadUInt32LittleEndian(probe.AsSpan(FuseFrames.OutHeader + 16)));
            using (var host = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
                Assert.ThrowsAny<IOException>(() => host.Lock(0, 1));

            // Owner A still owns it: its unlock frees it for owner B.
            Assert.Equal(0, Rig.Error(rig.Call(LkRequest(SetLk, node, fhA, OwnerA, FUnlck, 100))));
            Assert.Equal(0, Rig.Error(rig.Call(LkRequest(SetLk, node, fhB, OwnerB, FWrlck, 200))));
            Assert.Equal(Eagain, Rig.Error(rig.Call(LkRequest(SetLk, node, fhA, OwnerA, FRdlck, 100))));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, node, fhA, 2))));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, node, fhB, 2))));
            // The last release closed owner B's lock descriptor: its lock is gone at once, although the vdev may still
            // hold a duplicate of that description for a moment (its Drop rides with a later message).
            using (var host = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
                host.Lock(0, 1);
            Assert.Equal(0, Await(() => Holding(rig.VdevPid, rig.Share, Path.GetFileName(path)), 0));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
