using System.Buffers.Binary;
using System.Diagnostics;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.VhostUser;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench vhost [--target vdev|passthrough|virtiofsd] [--op getattr|read] [--size N] [--queues N] [--depth N] [--seconds S] [--indirect]`:
/// drives FUSE requests over virtqueues from the test front-end, one thread per request queue, and reports
/// round trips per second and bytes per second. Target vdev runs the vdev's device in-process with a
/// transport that answers every frame at once (the cost of vhost-user + virtqueue handling alone); target
/// passthrough runs the device in-process over the shared-memory ring to the project's passthrough daemon
/// (the product path); target virtiofsd runs QEMU's C daemon. Both daemons serve a temporary directory.
/// `hv-bench vhost --compare ...` instead runs <see cref="VhostCompare"/>: the vdev process against virtiofsd
/// row by row (results and method in VdevBench.md).
/// </summary>
internal static class VhostBench
{
    public static int Run(string[] args)
    {
        if (args.Length > 0 && args[0] == "--compare") return VhostCompare.Run(args[1..]);
        string target = "vdev", op = "getattr";
        int size = 4096, queues = 1, depth = 1, seconds = 5, queueSize = 128;
        bool indirect = false;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--target": target = Next(); break;
                case "--op": op = Next(); break;
                case "--size": size = int.Parse(Next()); break;
                case "--queues": queues = int.Parse(Next()); break;
                case "--depth": depth = int.Parse(Next()); break;
                case "--seconds": seconds = int.Parse(Next()); break;
                case "--queue-size": queueSize = int.Parse(Next()); break;
                case "--indirect": indirect = true; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        var dir = Directory.CreateTempSubdirectory("hv-bench-vhost-").FullName;
        var sock = Path.Combine(dir, "s.sock");
        var share = Path.Combine(dir, "share");
        Directory.CreateDirectory(share);
        File.WriteAllBytes(Path.Combine(share, "data"), new byte[Math.Max(size, 1 << 20)]);
        using var cts = new CancellationTokenSource();
        Process? daemon = null;
        Task<int>? device = null;
        Hypervisor.Protocol.Ring.ShmRingSet? rings = null;
        try
        {
            if (target == "vdev")
                device = VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = sock, RequestQueues = queues }, new EchoTransportFactory(), NullLogger.Instance, cts.Token);
            else if (target == "virtiofsd")
            {
                if (queues != 1) { Console.Error.WriteLine("QEMU's C virtiofsd serves one request queue; use --queues 1."); return 2; }
                var psi = new ProcessStartInfo("/usr/lib/qemu/virtiofsd") { RedirectStandardError = true };
                foreach (var a in new[] { $"--socket-path={sock}", "-o", $"source={share}", "-o", "cache=none", "-o", "sandbox=chroot", "--thread-pool-size=0" }) psi.ArgumentList.Add(a);
                daemon = Process.Start(psi);
                daemon!.ErrorDataReceived += (_, _) => { };
                daemon.BeginErrorReadLine();
            }
            else if (target == "passthrough")
            {
                var root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../.."));
                var exe = Path.Combine(Hypervisor.Tests.Executables.Dist, "passthrough");
                if (!File.Exists(exe)) { Console.Error.WriteLine($"{exe} does not exist: run `bash .ci/build` in {root}."); return 2; }
                rings = Hypervisor.Protocol.Ring.ShmRingSet.Create(1 + queues);
                var psi = new ProcessStartInfo(exe) { RedirectStandardError = true };
                foreach (var a in new[] { "--shared-dir", share, "--ring", rings.Fds.ToString(), "--log-level", "error", "--cache", "never" }) psi.ArgumentList.Add(a);
                rings.SetInheritable(true);
                try { daemon = Process.Start(psi); }
                finally { rings.SetInheritable(false); }
                daemon!.ErrorDataReceived += (_, e) => { if (e.Data != null) Console.Error.WriteLine(e.Data); };
                daemon.BeginErrorReadLine();
                rings.SetPeerProcess(daemon.Id);
                device = VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = sock, RequestQueues = queues }, ShmRingTransport.Factory(rings, NullLogger.Instance), NullLogger.Instance, cts.Token);
            }
            else { Console.Error.WriteLine("--target takes vdev, passthrough or virtiofsd."); return 2; }

            using var fe = VhostUserFrontend.Connect(sock, TimeSpan.FromSeconds(10));
            int slot = 4096 + 2 * Math.Max(size + 4096, 8192);
            using var ram = new GuestRam((long)(queues + 1) * queueSize * slot + (16 << 20));
            fe.Negotiate();
            fe.SetMemTable(ram);
            var qs = fe.SetupQueues(ram, 1 + queues, queueSize, slot);
            var t = TimeSpan.FromSeconds(10);

            // Set up a node and a file handle on queue 1 (the echo transport answers anything).
            var q1 = qs[1];
            q1.Transact(FuseFrames.InitRequest(1), 4096, t);
            var entry = q1.Transact(FuseFrames.LookupRequest(2, FuseFrames.RootId, "data"), 4096, t);
            ulong node = target == "vdev" ? 2 : FuseFrames.ReadEntry(entry).NodeId;
            var open = q1.Transact(FuseFrames.OpenRequest(3, node), 4096, t);
            ulong fh = target == "vdev" ? 0 : FuseFrames.ReadOpenFh(open);
            if (target != "vdev" && (FuseFrames.ReadOutHeader(entry).Error != 0 || FuseFrames.ReadOutHeader(open).Error != 0))
            {
                Console.Error.WriteLine($"setup failed: LOOKUP error {FuseFrames.ReadOutHeader(entry).Error}, OPEN error {FuseFrames.ReadOutHeader(open).Error}");
                return 1;
            }

            long total = 0;
            long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
            int gen0Before = GC.CollectionCount(0);
            var sw = Stopwatch.StartNew();
            var deadline = sw.Elapsed + TimeSpan.FromSeconds(seconds);
            var threads = new Thread[queues];
            var counts = new long[queues];
            for (int qi = 0; qi < queues; qi++)
            {
                var q = qs[qi + 1];
                int index = qi;
                threads[qi] = new Thread(() =>
                {
                    byte[] frame = op == "read" ? FuseFrames.ReadRequest(0, node, fh, 0, (uint)size) : FuseFrames.GetattrRequest(0, node);
                    int reply = op == "read" ? 16 + size : 16 + 104;
                    ulong unique = (ulong)(index + 1) << 40;
                    int outstanding = 0;
                    long n = 0;
                    while (sw.Elapsed < deadline)
                    {
                        while (outstanding < depth)
                        {
                            BinaryPrimitives.WriteUInt64LittleEndian(frame.AsSpan(8), unique += 2);
                            q.Submit(frame, reply, indirect);
                            outstanding++;
                        }
                        var (h, len) = q.WaitUsed(t);
                        if (len < 16) throw new InvalidDataException($"short reply ({len} bytes)");
                        outstanding--;
                        n++;
                    }
                    while (outstanding-- > 0) q.WaitUsed(t);
                    counts[index] = n;
                });
                threads[qi].Start();
            }
            foreach (var th in threads) th.Join();
            var elapsed = sw.Elapsed.TotalSeconds;
            long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
            int gen0 = GC.CollectionCount(0) - gen0Before;
            foreach (var c in counts) total += c;
            double rps = total / elapsed;
            Console.WriteLine($"vhost target={target} op={op} size={(op == "read" ? size : 0)} queues={queues} depth={depth} indirect={indirect}: " +
                $"{total} requests in {elapsed:F2} s = {rps:F0} req/s" + (op == "read" ? $", {rps * size / (1 << 20):F1} MiB/s" : "") +
                $"; managed allocation {(double)allocated / Math.Max(total, 1):F1} B/request (front-end and device together), {gen0} gen0 GCs");
            fe.Disconnect();
            return 0;
        }
        finally
        {
            cts.Cancel();
            device?.Wait(TimeSpan.FromSeconds(10));
            if (daemon is { HasExited: false }) { daemon.Kill(); daemon.WaitForExit(); }
            rings?.Dispose();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>Answers every frame inline on the queue's thread: out header plus READ's size bytes (zeros) or an attr-sized body.</summary>
    private sealed class EchoTransportFactory : IFuseTransportFactory, IFuseTransport
    {
        private IFuseCompletionSink _sink = null!;
        private byte[][] _buffers = [];

        public IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink)
        {
            _sink = sink;
            _buffers = new byte[device.RequestQueues + 1][];
            for (int i = 0; i < _buffers.Length; i++) _buffers[i] = new byte[16 + (1 << 20)];
            return this;
        }

        public bool Submit(VirtqueueRequest request)
        {
            if (!request.ExpectsReply) return true;
            var buf = _buffers[request.Queue.Value];
            int body = 104;
            if (request.Opcode == 15)
            {
                // The size field of fuse_read_in sits right after the header; copy the first segments' bytes.
                int off = 0, want = 40 + 24;
                Span<byte> head = stackalloc byte[64];
                foreach (var seg in request.Readable)
                {
                    int n = Math.Min(seg.Length, want - off);
                    seg.Span[..n].CopyTo(head[off..]);
                    off += n;
                    if (off == want) break;
                }
                body = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(head[56..]), (uint)(buf.Length - 16));
            }
            int len = 16 + body;
            BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)len);
            BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(4), 0);
            BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(8), request.Unique);
            _sink.Complete(request.Tag, buf.AsSpan(0, len));
            return true;
        }

        public void Dispose() { }
    }
}
