using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Hypervisor.Vdev.Control;
using Hypervisor.Vdev.Share;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;
using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// Crash recovery end to end on the host (vdev/README.md, "Surviving a daemon crash"): the vdev process with its
/// fuse_launcher and passthrough daemon, a vhost-user front-end in the guest's place, and SIGKILL of the daemon. The
/// node ids and file handles the front-end got before the kill still name the same files after it; a file the host
/// replaced meanwhile answers ESTALE under its old node and is found afresh by a new LOOKUP.
/// </summary>
public sealed class DaemonRelaunchTests(ITestOutputHelper output) : IDisposable
{
    private const int Enoent = 2, Estale = 116;
    private static readonly TimeSpan Reply = TimeSpan.FromSeconds(20);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-relaunch-").FullName;

    /// <summary>A started vdev with one share and a front-end that has done INIT on request queue 1.</summary>
    internal sealed class Rig : IDisposable
    {
        private readonly ConcurrentQueue<string> _log = new();
        private readonly Process _vdev;
        private readonly VhostUserFrontend _fe;
        private readonly GuestRam _ram;
        private ulong _unique = 1;

        public Rig(string dir, params string[] args) : this(dir, null, args)
        {
        }

        /// <summary>The vdev started as <paramref name="user"/> (uid and gid, no supplementary groups, through setpriv) when given.</summary>
        public Rig(string dir, uint? user, string[] args)
        {
            Share = Directory.CreateDirectory(Path.Combine(dir, "share")).FullName;
            Socket = Path.Combine(dir, "vdev.sock");
            var psi = new ProcessStartInfo(user is null ? GuestBackend.ResolveVdev() : "/usr/bin/setpriv") { RedirectStandardError = true, RedirectStandardOutput = true };
            if (user is uint id)
            {
                foreach (var a in new[] { $"--reuid={id}", $"--regid={id}", "--clear-groups", "--", GuestBackend.ResolveVdev() }) psi.ArgumentList.Add(a);
            }
            foreach (var a in new[] { "--socket-path", Socket, "--shared-dir", Share, "--tag", "relaunch", "--log-level", "info" }.Concat(args))
                psi.ArgumentList.Add(a);
            _vdev = Process.Start(psi)!;
            _vdev.ErrorDataReceived += (_, e) => { if (e.Data is not null) _log.Enqueue(e.Data); };
            _vdev.OutputDataReceived += (_, e) => { if (e.Data is not null) _log.Enqueue(e.Data); };
            _vdev.BeginErrorReadLine();
            _vdev.BeginOutputReadLine();
            try
            {
                _fe = VhostUserFrontend.Connect(Socket, TimeSpan.FromSeconds(60));
                _ram = new GuestRam(16 << 20);
                _fe.Negotiate();
                _fe.SetMemTable(_ram);
                var queues = _fe.SetupQueues(_ram, 2, 32);
                Hiprio = queues[0];
                Queue = queues[1];
                var init = Call(FuseFrames.InitRequest(0));
                Assert.Equal(0, FuseFrames.ReadOutHeader(init).Error);
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public string Share { get; }
        public string Socket { get; }
        public int VdevPid => _vdev.Id;
        public FrontendQueue Queue { get; }

        /// <summary>The hiprio queue (queue 0), which carries FORGETs.</summary>
        public FrontendQueue Hiprio { get; }

        /// <summary>FORGETs <paramref name="count"/> lookups of <paramref name="node"/> on the hiprio queue; its chain comes back at once.</summary>
        public void Forget(ulong node, ulong count)
        {
            ushort head = Hiprio.Submit(FuseFrames.ForgetRequest(_unique++, node, count), 0);
            Assert.Equal((head, 0u), Hiprio.WaitUsed(Reply));
        }

        /// <summary>What the vdev (and the daemons' output it passes through) printed so far.</summary>
        public string Log => string.Join('\n', _log);

        /// <summary>The next request unique (increasing, as the guest's are).</summary>
        public ulong NextUnique() => _unique++;

        public byte[] Call(byte[] frame, int replyCapacity = 8192)
        {
            // The unique at 8: every request gets its own.
            BitConverter.TryWriteBytes(frame.AsSpan(8), _unique++);
            return Queue.Transact(frame, replyCapacity, Reply);
        }

        public static int Error(byte[] reply) => -FuseFrames.ReadOutHeader(reply).Error;

        public ulong Lookup(string name, out ulong size)
        {
            var reply = Call(FuseFrames.LookupRequest(0, FuseFrames.RootId, name));
            Assert.True(Error(reply) == 0, $"LOOKUP {name}: errno {Error(reply)}\n{Log}");
            (var node, size, _) = FuseFrames.ReadEntry(reply);
            return node;
        }

        public ulong Open(ulong node, uint flags)
        {
            var reply = Call(FuseFrames.OpenRequest(0, node, flags));
            Assert.True(Error(reply) == 0, $"OPEN {node}: errno {Error(reply)}\n{Log}");
            return FuseFrames.ReadOpenFh(reply);
        }

        public byte[] Read(ulong node, ulong fh, ulong offset, uint size)
        {
            var reply = Call(FuseFrames.ReadRequest(0, node, fh, offset, size), (int)size + 64);
            Assert.True(Error(reply) == 0, $"READ {node}/{fh}: errno {Error(reply)}\n{Log}");
            return reply[FuseFrames.OutHeader..];
        }

        /// <summary>The share's one passthrough daemon.</summary>
        public int Daemon()
        {
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (DateTime.UtcNow < deadline)
            {
                var found = HostProcesses.FindPassthroughDaemons(Share);
                if (found.Count == 1) return found[0];
                Thread.Sleep(20);
            }
            throw new TimeoutException($"not exactly one daemon serves {Share}: {string.Join(' ', HostProcesses.FindPassthroughDaemons(Share))}\n{Log}");
        }

        /// <summary>SIGKILLs the serving daemon and waits until it is gone; returns its pid.</summary>
        public int KillDaemon()
        {
            int pid = Daemon();
            Assert.True(HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(10)), $"daemon {pid} outlived SIGKILL");
            return pid;
        }

        /// <summary>`vdev ctl restart` on the share's control socket: the exit code and what it printed.</summary>
        public (int Exit, string Output) Restart()
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int exit = CtlCommand.Run(["--socket", Socket + ".ctl", "--timeout", "60", "--json", "restart"], stdout, stderr);
            return (exit, stdout.ToString() + stderr.ToString());
        }

        /// <summary>
        /// SIGKILLs the serving daemon and waits until the vdev has noticed (it logs that requests wait): a request
        /// sent after that never reaches the dead daemon's ring, so it is not one of those in flight at the crash,
        /// which a non-repeatable opcode would answer EIO.
        /// </summary>
        public int KillDaemonAndWaitNoticed()
        {
            int before = Noticed();
            int pid = KillDaemon();
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (Noticed() <= before && DateTime.UtcNow < deadline) Thread.Sleep(10);
            return pid;
        }

        private int Noticed() => _log.Count(l => l.Contains("requests wait for a new daemon", StringComparison.Ordinal));

        public JsonElement Status()
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            Assert.True(CtlCommand.Run(["--socket", Socket + ".ctl", "--json", "status"], stdout, stderr) == 0, stderr.ToString());
            return JsonDocument.Parse(stdout.ToString()).RootElement;
        }

        public void Dispose()
        {
            _fe?.Dispose();
            _ram?.Dispose();
            if (!_vdev.HasExited) _vdev.Kill();
            _vdev.WaitForExit();
            _vdev.Dispose();
            // Killing the vdev leaves its daemon to notice the ring's peer ended; only this share's daemons are ours.
            foreach (var pid in HostProcesses.FindPassthroughDaemons(Share)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
        }
    }

    internal static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public void DaemonKilled_NodeIdsAndHandlesFromBefore_StillNameTheSameFiles()
    {
        var content = Pattern(12288, 1);
        using var rig = new Rig(_dir);
        File.WriteAllBytes(Path.Combine(rig.Share, "a"), content);
        try
        {
            var node = rig.Lookup("a", out var size);
            Assert.Equal((ulong)content.Length, size);
            var fh = rig.Open(node, 2 /* O_RDWR */);
            Assert.Equal(content[..4096], rig.Read(node, fh, 0, 4096));

            int first = rig.KillDaemon();

            // The first request after the kill waits for the new daemon and is served by it.
            var attr = rig.Call(FuseFrames.GetattrRequest(0, node));
            Assert.True(Rig.Error(attr) == 0, $"GETATTR after the kill: errno {Rig.Error(attr)}\n{rig.Log}");
            Assert.Equal((ulong)content.Length, FuseFrames.ReadAttr(attr).Size);
            Assert.Equal(content[4096..], rig.Read(node, fh, 4096, 8192));
            Assert.NotEqual(first, rig.Daemon());

            // The handle opened before the kill still writes, and the host sees it.
            var patch = Pattern(512, 2);
            var write = rig.Call(FuseFrames.WriteRequest(0, node, fh, 100, patch));
            Assert.True(Rig.Error(write) == 0, $"WRITE after the kill: errno {Rig.Error(write)}\n{rig.Log}");
            patch.CopyTo(content, 100);
            Assert.Equal(content, File.ReadAllBytes(Path.Combine(rig.Share, "a")));

            // A fresh LOOKUP of the same name finds the same node id; a second kill changes nothing either.
            Assert.Equal(node, rig.Lookup("a", out _));
            rig.KillDaemon();
            Assert.Equal(content[..4096], rig.Read(node, fh, 0, 4096));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, node, fh, 2))));

            var restarts = rig.Status().GetProperty("restarts");
            output.WriteLine(restarts.ToString());
            Assert.Equal(2, restarts.GetProperty("count").GetInt32());
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    [Fact]
    public void FileReplacedWhileTheDaemonWasDown_OldNodeAnswersEstale_FreshLookupFindsTheNewFile()
    {
        var oldBytes = Pattern(4096, 3);
        var newBytes = Pattern(6000, 4);
        using var rig = new Rig(_dir);
        var path = Path.Combine(rig.Share, "b");
        File.WriteAllBytes(path, oldBytes);
        try
        {
            var oldNode = rig.Lookup("b", out _);
            var oldFh = rig.Open(oldNode, 0);
            Assert.Equal(oldBytes, rig.Read(oldNode, oldFh, 0, 4096));
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, oldNode, oldFh))));

            rig.KillDaemon();
            // Nothing holds the old inode any more (the dead daemon's descriptors closed with it): replaced now, before
            // any request lets the new daemon look at the node, it is gone for good.
            File.WriteAllBytes(path + ".new", newBytes);
            File.Move(path + ".new", path, overwrite: true);

            var attr = rig.Call(FuseFrames.GetattrRequest(0, oldNode));
            Assert.True(Rig.Error(attr) == Estale, $"GETATTR of the replaced file's node: errno {Rig.Error(attr)}, expected ESTALE\n{rig.Log}");
            var open = rig.Call(FuseFrames.OpenRequest(0, oldNode, 0));
            Assert.Equal(Estale, Rig.Error(open));

            var newNode = rig.Lookup("b", out var size);
            Assert.NotEqual(oldNode, newNode);
            Assert.Equal((ulong)newBytes.Length, size);
            var fh = rig.Open(newNode, 0);
            Assert.Equal(newBytes, rig.Read(newNode, fh, 0, 8192));
            // The old node still answers ESTALE, never the new file's bytes.
            Assert.Equal(Estale, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, oldNode))));
            Assert.Equal(Enoent, Rig.Error(rig.Call(FuseFrames.LookupRequest(0, FuseFrames.RootId, "b.new"))));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    [Fact]
    public void ThreeRelaunches_TheVdevKeepsNoDescriptorOfTheDeadDaemons()
    {
        using var rig = new Rig(_dir);
        File.WriteAllText(Path.Combine(rig.Share, "c"), "c");
        try
        {
            var node = rig.Lookup("c", out _);
            rig.KillDaemon();
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, node))));
            // Both queues (hiprio too) catch up with the new daemon, and the dead one's ring set is let go.
            int afterOne = Settled(rig.VdevPid, -1);
            var listOne = Descriptors(rig.VdevPid);
            for (int kill = 0; kill < 2; kill++)
            {
                rig.KillDaemon();
                Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, node))));
            }
            int afterThree = Settled(rig.VdevPid, afterOne);
            Assert.True(afterOne == afterThree, $"the vdev held {afterOne} ring descriptors after one relaunch and {afterThree} after three:\n{string.Join('\n', Descriptors(rig.VdevPid).Except(listOne))}\nno more:\n{string.Join('\n', listOne.Except(Descriptors(rig.VdevPid)))}");
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>
    /// The recovery time of tests/Benchmarks/VdevBench.md: from the SIGKILL of the daemon to the reply of the first
    /// request sent right after it (a GETATTR of a node looked up before); printed, never asserted. Four kills per vdev
    /// (a fifth within a minute would be the crash-loop guard's), three vdevs, the first ten samples.
    /// </summary>
    [Fact]
    public void RecoveryTime_TenKills_FromSigkillToTheFirstRequestServed()
    {
        var times = new List<double>();
        for (int round = 0; round < 3; round++)
        {
            using var rig = new Rig(Directory.CreateDirectory(Path.Combine(_dir, $"r{round}")).FullName);
            File.WriteAllText(Path.Combine(rig.Share, "t"), "t");
            var node = rig.Lookup("t", out _);
            for (int kill = 0; kill < ShareSupervisor.CrashLimit - 1; kill++)
            {
                int pid = rig.Daemon();
                using var process = Process.GetProcessById(pid);
                var clock = Stopwatch.StartNew();
                process.Kill();
                var reply = rig.Call(FuseFrames.GetattrRequest(0, node));
                times.Add(clock.Elapsed.TotalMilliseconds);
                Assert.True(Rig.Error(reply) == 0, rig.Log);
                while (HostProcesses.IsAlive(pid)) Thread.Sleep(10);
            }
        }
        var ten = times.Take(10).Order().ToList();
        output.WriteLine(System.FormattableString.Invariant(
            $"recovery ms (sorted): {string.Join(' ', ten.Select(t => t.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))}; median {(ten[4] + ten[5]) / 2:F0} ms"));
    }

    private static int Replaced(string log) => log.Split('\n').Count(l => l.Contains("was replaced by daemon", StringComparison.Ordinal));

    /// <summary>FUSE_CREATE of <paramref name="name"/> in <paramref name="parent"/>, mode 0644; the reply is fuse_entry_out then fuse_open_out.</summary>
    internal static byte[] CreateRequest(ulong parent, string name, uint flags)
    {
        var n = System.Text.Encoding.UTF8.GetBytes(name);
        var body = new byte[16 + n.Length + 1];
        BitConverter.TryWriteBytes(body.AsSpan(0), flags);
        BitConverter.TryWriteBytes(body.AsSpan(4), 0x81a4u); // S_IFREG | 0644
        BitConverter.TryWriteBytes(body.AsSpan(8), 0x12u); // umask 022
        n.CopyTo(body, 16);
        return FuseFrames.Request(35 /* CREATE */, 0, parent, body);
    }

    /// <summary>
    /// What the guest's open(O_CREAT|O_TRUNC) does, round after round in one directory (LOOKUP of the directory as a
    /// revalidation, LOOKUP of the new name, CREATE, WRITE, RELEASE), while the daemon is killed four times at
    /// moments unrelated to the requests. A CREATE in flight at a kill may answer EIO (vdev/README.md), and is then
    /// tried again; nothing answers ENOENT but the LOOKUP of a name not created yet, and every file holds its bytes.
    /// </summary>
    [Fact]
    public void CreatesAroundFourKills_NeverAnswerEnoent_AndTheDirectoryKeepsItsNode()
    {
        const uint Creat = 0x40, Trunc = 0x200, WrOnly = 1;
        // As many as the crash-loop guard allows in a minute: the fourth relaunch in quick succession is the one that
        // found the new daemon's control service not answering yet (LaunchedShare.ConfirmAsync asks again).
        const int Kills = ShareSupervisor.CrashLimit - 1;
        using var rig = new Rig(_dir);
        Directory.CreateDirectory(Path.Combine(rig.Share, "load"));
        var errors = new List<string>();
        int kills = 0, eio = 0, rounds = 0;
        try
        {
            var dir = rig.Lookup("load", out _);
            var killer = new Thread(() =>
            {
                var random = new Random(7);
                for (int k = 0; k < Kills; k++)
                {
                    // Only a daemon that serves: one killed while it starts fails its relaunch (vdev/README.md).
                    var deadline = DateTime.UtcNow.AddSeconds(20);
                    while (Replaced(rig.Log) < k && DateTime.UtcNow < deadline) Thread.Sleep(10);
                    Thread.Sleep(150 + random.Next(400));
                    rig.KillDaemon();
                    Interlocked.Increment(ref kills);
                }
            }) { IsBackground = true };
            killer.Start();
            while (killer.IsAlive || rounds < 10)
            {
                int n = rounds++;
                string name = $"f{n:000000}";
                var again = rig.Call(FuseFrames.LookupRequest(0, FuseFrames.RootId, "load"));
                if (Rig.Error(again) != 0 || FuseFrames.ReadEntry(again).NodeId != dir)
                    errors.Add($"round {n}: LOOKUP load: errno {Rig.Error(again)}, node {(Rig.Error(again) == 0 ? FuseFrames.ReadEntry(again).NodeId : 0)} (was {dir})");
                var look = rig.Call(FuseFrames.LookupRequest(0, dir, name));
                if (Rig.Error(look) is not (0 or Enoent)) errors.Add($"round {n}: LOOKUP {name}: errno {Rig.Error(look)}");
                byte[] reply;
                int tries = 0;
                do
                {
                    reply = rig.Call(CreateRequest(dir, name, Creat | Trunc | WrOnly));
                    if (Rig.Error(reply) == 5) eio++;
                }
                while (Rig.Error(reply) == 5 && ++tries < 5);
                if (Rig.Error(reply) != 0)
                {
                    errors.Add($"round {n}: CREATE {name}: errno {Rig.Error(reply)}");
                    continue;
                }
                var node = FuseFrames.ReadEntry(reply).NodeId;
                var fh = BitConverter.ToUInt64(reply, FuseFrames.OutHeader + 128);
                var data = Pattern(4096, n);
                var write = rig.Call(FuseFrames.WriteRequest(0, node, fh, 0, data));
                if (Rig.Error(write) != 0) errors.Add($"round {n}: WRITE {name}: errno {Rig.Error(write)}");
                var release = rig.Call(FuseFrames.ReleaseRequest(0, node, fh, WrOnly));
                if (Rig.Error(release) is not (0 or 9)) errors.Add($"round {n}: RELEASE {name}: errno {Rig.Error(release)}");
                if (Rig.Error(write) == 0 && !data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(rig.Share, "load", name))))
                    errors.Add($"round {n}: {name} does not hold what was written");
            }
            // The last kill's relaunch is logged by now.
            Thread.Sleep(1000);
            output.WriteLine($"{rounds} rounds, {kills} kills, {eio} CREATEs answered EIO");
            Assert.Equal(Kills, kills);
            Assert.True(errors.Count == 0, string.Join('\n', errors) + "\n" + rig.Log);
        }
        finally
        {
            if (errors.Count > 0) output.WriteLine(rig.Log);
        }
    }

    /// <summary>
    /// The first request after a kill reuses the head of the last one before it (the front-end waits for each reply),
    /// and the queue reuses that head's request object: a CREATE there never reached the dead daemon, so it goes to the
    /// new one once, and is answered by it, never EIO, and creates exactly one handle.
    /// </summary>
    [Fact]
    public void FirstRequestAfterAKill_OnTheHeadOfTheLastOneBefore_IsServedOnce_NeverEio()
    {
        const uint Creat = 0x40, Excl = 0x80, WrOnly = 1;
        using var rig = new Rig(_dir);
        try
        {
            for (int kill = 0; kill < 3; kill++)
            {
                Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, FuseFrames.RootId))));
                rig.KillDaemonAndWaitNoticed();
                var reply = rig.Call(CreateRequest(FuseFrames.RootId, $"first{kill}", Creat | Excl | WrOnly));
                Assert.True(Rig.Error(reply) == 0, $"kill {kill}: the CREATE after it answered errno {Rig.Error(reply)}\n{rig.Log}");
                var node = FuseFrames.ReadEntry(reply).NodeId;
                var fh = BitConverter.ToUInt64(reply, FuseFrames.OutHeader + 128);
                Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.ReleaseRequest(0, node, fh, WrOnly))));
            }
            // Nothing was sent twice: the handles are all released, so the last daemon took over none.
            rig.KillDaemon();
            Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, FuseFrames.RootId))));
            // (A daemon killed right after it took over may not have written its line yet: every line written counts.)
            var deadline = Stopwatch.StartNew();
            while (Replaced(rig.Log) < 4 && deadline.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
            var takeovers = rig.Log.Split('\n').Where(l => l.Contains("Took over the guest's session", StringComparison.Ordinal)).ToList();
            Assert.True(takeovers.Count > 0, rig.Log);
            Assert.All(takeovers, line => Assert.Contains(" 0 open handles", line, StringComparison.Ordinal));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>The crash-loop guard: the fifth end within a minute is not followed by a new daemon; requests fail with EIO.</summary>
    [Fact]
    public void CrashLoop_FifthEndWithinAMinute_IsNotRelaunched_RequestsFailWithEio()
    {
        using var rig = new Rig(_dir);
        File.WriteAllText(Path.Combine(rig.Share, "l"), "l");
        try
        {
            var node = rig.Lookup("l", out _);
            for (int kill = 0; kill < ShareSupervisor.CrashLimit - 1; kill++)
            {
                rig.KillDaemon();
                Assert.Equal(0, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, node))));
            }
            rig.KillDaemon();
            Assert.Equal(5, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, node))));
            Assert.Empty(HostProcesses.FindPassthroughDaemons(rig.Share));
            // The vdev's console logger writes asynchronously: the line may follow the reply.
            var deadline = Stopwatch.StartNew();
            while (!rig.Log.Contains("(crash loop)", StringComparison.Ordinal) && deadline.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
            Assert.Single(rig.Log.Split('\n'), l => l.Contains("not starting another (crash loop)", StringComparison.Ordinal));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>
    /// `vdev ctl restart` three times while the front-end keeps 16 requests in flight (each of 16 slots in turn does a
    /// LOOKUP of its file, a READ and a WRITE through a handle opened before the restarts, and a CREATE then RELEASE of a
    /// new file): not one request fails, every LOOKUP finds the node id from before, every READ returns what the slot
    /// wrote last, the host files hold the writes, the daemon's pid changes each time, and the status counts three
    /// planned restarts.
    /// </summary>
    [Fact]
    public void PlannedRestart_ThreeTimesUnderSixteenInFlight_NoErrorAndNodeIdsAndHandlesStayValid()
    {
        const int Slots = 16, Block = 4096, Blocks = 4;
        using var rig = new Rig(_dir);
        var nodes = new ulong[Slots];
        var handles = new ulong[Slots];
        var expected = new byte[Slots][];
        var errors = new ConcurrentQueue<string>();
        var pids = new List<int>();
        int completed = 0;
        try
        {
            for (int i = 0; i < Slots; i++)
            {
                expected[i] = Pattern(Block * Blocks, 100 + i);
                File.WriteAllBytes(Path.Combine(rig.Share, $"s{i}"), expected[i]);
                nodes[i] = rig.Lookup($"s{i}", out _);
                handles[i] = rig.Open(nodes[i], 2 /* O_RDWR */);
            }
            pids.Add(rig.Daemon());
            var restarts = new List<(int Exit, string Output)>();
            bool done = false;
            var restarter = new Thread(() =>
            {
                for (int r = 0; r < 3; r++)
                {
                    Thread.Sleep(400);
                    restarts.Add(rig.Restart());
                }
                Thread.Sleep(300);
                Volatile.Write(ref done, true);
            }) { IsBackground = true };

            // Per slot: the step it is at, what its request in flight was, and the CREATE's result for the RELEASE after.
            var step = new int[Slots];
            var head = new int[Slots];
            var kind = new string[Slots];
            var pendingData = new byte[Slots][];
            var pendingBlock = new int[Slots];
            var created = new (ulong Node, ulong Fh)[Slots];
            var slotOf = new int[rig.Queue.Size];
            var random = new Random(11);
            int serial = 0;
            void Send(int i)
            {
                byte[] frame;
                int capacity = 256;
                switch (step[i] % 5)
                {
                    case 0:
                        kind[i] = "LOOKUP";
                        frame = FuseFrames.LookupRequest(0, FuseFrames.RootId, $"s{i}");
                        break;
                    case 1:
                        kind[i] = "READ";
                        pendingBlock[i] = random.Next(Blocks);
                        frame = FuseFrames.ReadRequest(0, nodes[i], handles[i], (ulong)(pendingBlock[i] * Block), Block);
                        capacity = Block + 64;
                        break;
                    case 2:
                        kind[i] = "WRITE";
                        pendingBlock[i] = random.Next(Blocks);
                        pendingData[i] = Pattern(Block, 1000 + serial);
                        frame = FuseFrames.WriteRequest(0, nodes[i], handles[i], (ulong)(pendingBlock[i] * Block), pendingData[i]);
                        break;
                    case 3:
                        kind[i] = "CREATE";
                        frame = CreateRequest(FuseFrames.RootId, $"c{i}-{serial}", 0x41 /* O_CREAT | O_WRONLY */);
                        break;
                    default:
                        kind[i] = "RELEASE";
                        frame = FuseFrames.ReleaseRequest(0, created[i].Node, created[i].Fh, 1);
                        break;
                }
                serial++;
                BitConverter.TryWriteBytes(frame.AsSpan(8), rig.NextUnique());
                head[i] = rig.Queue.Submit(frame, capacity);
                slotOf[head[i]] = i;
            }
            void Check(int i, byte[] reply)
            {
                int error = Rig.Error(reply);
                if (error != 0)
                {
                    errors.Enqueue($"{kind[i]} of slot {i}: errno {error}");
                    return;
                }
                switch (kind[i])
                {
                    case "LOOKUP" when FuseFrames.ReadEntry(reply).NodeId != nodes[i]:
                        errors.Enqueue($"LOOKUP s{i}: node {FuseFrames.ReadEntry(reply).NodeId}, was {nodes[i]}");
                        break;
                    case "READ" when !reply.AsSpan(FuseFrames.OutHeader).SequenceEqual(expected[i].AsSpan(pendingBlock[i] * Block, Block)):
                        errors.Enqueue($"READ s{i} block {pendingBlock[i]}: not what was written last");
                        break;
                    case "WRITE":
                        pendingData[i].CopyTo(expected[i], pendingBlock[i] * Block);
                        break;
                    case "CREATE":
                        created[i] = (FuseFrames.ReadEntry(reply).NodeId, BitConverter.ToUInt64(reply, FuseFrames.OutHeader + 128));
                        break;
                }
            }

            restarter.Start();
            for (int i = 0; i < Slots; i++) Send(i);
            while (true)
            {
                var (h, length) = rig.Queue.WaitUsed(Reply);
                int i = slotOf[h];
                Check(i, rig.Queue.ReplyBytes(h, length));
                completed++;
                step[i]++;
                // The slot finishes its cycle before it stops, so that no created file stays open.
                if (Volatile.Read(ref done) && step[i] % 5 == 0)
                {
                    step[i] = -1;
                    if (step.All(x => x < 0)) break;
                    continue;
                }
                Send(i);
            }
            restarter.Join();
            for (int i = 0; i < Slots; i++)
                Assert.True(expected[i].AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(rig.Share, $"s{i}"))), $"s{i} on the host differs from what was written");
            output.WriteLine($"{completed} requests completed");
            Assert.True(errors.IsEmpty, string.Join('\n', errors) + "\n" + rig.Log);
            foreach (var (exit, text) in restarts)
            {
                Assert.True(exit == 0, $"vdev ctl restart: exit {exit}: {text}\n{rig.Log}");
                pids.Add(JsonDocument.Parse(text).RootElement.GetProperty("new_pid").GetInt32());
            }
            Assert.Equal(4, pids.Distinct().Count());
            Assert.Equal(pids[^1], rig.Daemon());
            // A handle opened before the restarts still reads after them.
            Assert.Equal(expected[0][..Block], rig.Read(nodes[0], handles[0], 0, Block));
            var status = rig.Status().GetProperty("restarts");
            output.WriteLine(status.ToString());
            Assert.Equal(3, status.GetProperty("count").GetInt32());
            Assert.Equal(3, status.GetProperty("planned").GetInt32());
            Assert.Equal("restart", status.GetProperty("last_cause").GetString());
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>
    /// A planned restart right after FORGETs (what an <c>rm</c> ends with) does not wait for the hiprio worker, which
    /// sleeps on its kick with the FORGETs' empty completions untaken (the daemon does not ring for them): the drain
    /// knows from the hiprio submission ring that the daemon ran them. The restart succeeds (its drain would
    /// otherwise run into its 5 s timeout and refuse) and the node the guest forgot is gone from the new daemon too.
    /// </summary>
    [Fact]
    public void PlannedRestart_RightAfterForgets_DoesNotWaitForTheSleepingHiprioWorker()
    {
        using var rig = new Rig(_dir);
        File.WriteAllText(Path.Combine(rig.Share, "gone"), "g");
        File.WriteAllText(Path.Combine(rig.Share, "kept"), "k");
        try
        {
            var gone = rig.Lookup("gone", out _);
            var kept = rig.Lookup("kept", out _);
            int before = rig.Daemon();
            for (int round = 0; round < 3; round++)
            {
                // The host removes the file; the guest drops the dentry and forgets the node, as after an rm.
                if (round == 0)
                {
                    File.Delete(Path.Combine(rig.Share, "gone"));
                    rig.Forget(gone, 1);
                }
                else
                {
                    // A lookup and its forget, so that each restart follows a FORGET.
                    Assert.Equal(kept, rig.Lookup("kept", out _));
                    rig.Forget(kept, 1);
                }
                var (exit, text) = rig.Restart();
                Assert.True(exit == 0, text + "\n" + rig.Log);
            }
            Assert.NotEqual(before, rig.Daemon());
            Assert.Equal(Enoent, Rig.Error(rig.Call(FuseFrames.LookupRequest(0, FuseFrames.RootId, "gone"))));
            Assert.Equal(kept, rig.Lookup("kept", out _));
            Assert.Equal(3, rig.Status().GetProperty("restarts").GetProperty("planned").GetInt32());
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>A planned restart with relaunch off (which only concerns crashes) replaces the daemon all the same.</summary>
    [Fact]
    public void PlannedRestart_WithRelaunchOff_ReplacesTheDaemon()
    {
        using var rig = new Rig(_dir, "--no-relaunch");
        File.WriteAllText(Path.Combine(rig.Share, "n"), "n");
        try
        {
            var node = rig.Lookup("n", out _);
            int before = rig.Daemon();
            var (exit, text) = rig.Restart();
            Assert.True(exit == 0, text + "\n" + rig.Log);
            Assert.NotEqual(before, rig.Daemon());
            Assert.Equal(node, rig.Lookup("n", out _));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>
    /// A fuse_launcher that fails the way a daemon dying before it is ready makes it fail, at the starts listed in
    /// <paramref name="failing"/> (1 is the share's first daemon), and otherwise runs the real one.
    /// </summary>
    private string FailingLauncher(string failing)
    {
        var counter = Path.Combine(_dir, "launches");
        var script = Path.Combine(_dir, "fuse_launcher");
        var real = Path.Combine(Path.GetDirectoryName(GuestBackend.ResolveVdev())!, "fuse_launcher");
        File.WriteAllText(script, $"""
            #!/bin/sh
            n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 ))
            echo $n > {counter}
            case " {failing} " in *" $n "*) echo "fuse_launcher: the daemon exited with signal 9 before it was ready" >&2; exit 1;; esac
            exec {real} "$@"
            """);
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return script;
    }

    /// <summary>A relaunched daemon that dies before it is ready is started again: the guest's request is served.</summary>
    [Fact]
    public void RelaunchedDaemonDiesBeforeReady_ItIsStartedAgain_AndTheRequestIsServed()
    {
        using var rig = new Rig(_dir, "--launcher", FailingLauncher("2 3"));
        File.WriteAllText(Path.Combine(rig.Share, "d"), "d");
        try
        {
            var node = rig.Lookup("d", out _);
            rig.KillDaemon();
            var attr = rig.Call(FuseFrames.GetattrRequest(0, node));
            Assert.True(Rig.Error(attr) == 0, $"GETATTR after the kill: errno {Rig.Error(attr)}\n{rig.Log}");
            // The vdev's log reaches the test through a pipe reader of its own: wait for the lines to arrive.
            int Retries() => rig.Log.Split('\n').Count(l => l.Contains("did not start", StringComparison.Ordinal) && l.Contains("trying again", StringComparison.Ordinal));
            for (int i = 0; i < 200 && Retries() < 2; i++) Thread.Sleep(25);
            Assert.True(Retries() == 2, rig.Log);
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    /// <summary>
    /// Attempts that die before ready count toward the crash-loop guard: one kill and four failed starts are five ends,
    /// after which the share stops relaunching with the one crash-loop line and requests fail with EIO.
    /// </summary>
    [Fact]
    public void RelaunchesThatDieBeforeReady_CountTowardTheCrashLoopGuard()
    {
        using var rig = new Rig(_dir, "--launcher", FailingLauncher("2 3 4 5 6 7 8"));
        File.WriteAllText(Path.Combine(rig.Share, "e"), "e");
        try
        {
            var node = rig.Lookup("e", out _);
            rig.KillDaemon();
            Assert.Equal(5, Rig.Error(rig.Call(FuseFrames.GetattrRequest(0, node))));
            var deadline = Stopwatch.StartNew();
            while (!rig.Log.Contains("(crash loop)", StringComparison.Ordinal) && deadline.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
            Assert.Single(rig.Log.Split('\n'), l => l.Contains("not starting another (crash loop)", StringComparison.Ordinal));
            Assert.Equal(ShareSupervisor.CrashLimit - 1, rig.Log.Split('\n').Count(l => l.Contains("trying again", StringComparison.Ordinal)));
        }
        finally
        {
            output.WriteLine(rig.Log);
        }
    }

    private static List<string> Descriptors(int pid)
    {
        var list = new List<string>();
        foreach (var fd in Directory.EnumerateFiles($"/proc/{pid}/fd"))
        {
            try
            {
                // What a ring set holds (its memfd, its doorbells and its daemon's pidfd) and the pipes of starting one.
                var target = new FileInfo(fd).LinkTarget ?? "";
                if (target.Contains("hv-ring", StringComparison.Ordinal) || target.Contains("eventfd", StringComparison.Ordinal)
                    || target.Contains("pidfd", StringComparison.Ordinal) || target.Contains("pipe", StringComparison.Ordinal))
                    list.Add($"{Path.GetFileName(fd)} -> {target}");
            }
            catch (IOException)
            {
            }
        }
        return list;
    }

    /// <summary>The vdev's ring descriptors (memfds, eventfds, pidfds) and pipes once their count stops changing (or reaches <paramref name="expected"/>).</summary>
    private static int Settled(int pid, int expected)
    {
        int last = -1, same = 0;
        for (int i = 0; i < 200; i++)
        {
            int now = Descriptors(pid).Count;
            if (now == expected) return now;
            same = now == last ? same + 1 : 0;
            if (same >= 10) return now;
            last = now;
            Thread.Sleep(50);
        }
        return last;
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
