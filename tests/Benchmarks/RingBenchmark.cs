using System.Diagnostics;
using System.Globalization;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench ring`: the shared-memory ring between two processes against the same frames through
/// a UNIX socketpair, plus memcpy bandwidth of 1 MiB blocks, all in one run. The benchmark starts
/// itself again as the peer (ring descriptors or socket inherited). The peer does what the daemon
/// does with a request: copies its payload out (as pwrite would) and writes a 16-byte reply.
/// Each figure is the median of several runs.
/// </summary>
public static class RingBenchmark
{
    public const string Help = "shm ring vs socketpair: round trips/s (64 B -> 16 B), MB/s of 1 MiB frames, 1 and 2 queues; memcpy";

    private const int SmallRequest = 64;
    private const int Reply = 16;
    private const int Large = 1 << 20;
    private const int Queues = 2;
    private const ulong EndOfStream = ulong.MaxValue;
    private static TimeSpan? s_spin;

    /// <summary>
    /// What a consumer's spin costs while nothing arrives: 20 empty waits of 30 ms with a 20 ms spin each, unlimited and
    /// held to a quarter of the time (RingConsumer.SpinCpuShare); the CPU time of the waiting thread against the time passed.
    /// </summary>
    private static void SpinShare()
    {
        foreach (int share in new[] { 0, 4 })
        {
            using var rings = ShmRingSet.Create(1, 1000, 4096);
            rings.SpinDuration = TimeSpan.FromMilliseconds(20);
            var consumer = rings.GetQueue(0).Consumer;
            consumer.SpinCpuShare = share;
            long cpu0 = ThreadCpuNs();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < 20; i++) consumer.Peek(out _, TimeSpan.FromMilliseconds(30));
            double cpu = (ThreadCpuNs() - cpu0) / 1e6;
            Console.WriteLine($"  idle waits, spin share {(share == 0 ? "unlimited" : "1/" + share)}: {cpu:F0} ms CPU in {sw.Elapsed.TotalMilliseconds:F0} ms");
        }

        static long ThreadCpuNs() => long.Parse(File.ReadAllText("/proc/thread-self/schedstat").Split(' ')[0], CultureInfo.InvariantCulture);
    }

    public static int Run(string[] args)
    {
        if (args.Length == 3 && args[0] == "--ring-peer") return RingPeer(args[1], TimeSpan.FromMicroseconds(double.Parse(args[2], CultureInfo.InvariantCulture)));
        if (args.Length >= 2 && args[0] == "--socket-peer") return SocketPeer(args[1..]);

        int runs = 5;
        double seconds = 0.5;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--runs" && i + 1 < args.Length && int.TryParse(args[++i], out runs) && runs > 0) continue;
            if (args[i] == "--spin-us" && i + 1 < args.Length && double.TryParse(args[++i], NumberStyles.Float, CultureInfo.InvariantCulture, out double us) && us >= 0)
            {
                s_spin = TimeSpan.FromMicroseconds(us);
                continue;
            }
            if (args[i] == "--seconds" && i + 1 < args.Length && double.TryParse(args[++i], NumberStyles.Float, CultureInfo.InvariantCulture, out seconds) && seconds > 0) continue;
            Console.Error.WriteLine("usage: hv-bench ring [--runs N (default 5)] [--seconds S per measurement (default 0.5)] [--spin-us N (ring spin before sleeping; default: the ring's)]");
            return 2;
        }

        Console.WriteLine($"ring benchmark: {runs} runs of {seconds.ToString(CultureInfo.InvariantCulture)} s each, medians; {Environment.ProcessorCount} CPUs");
        SpinShare();
        double memcpy = Median(runs, () => Memcpy(seconds));
        Console.WriteLine($"  memcpy 1 MiB blocks: {memcpy:N0} MB/s");

        var results = new Dictionary<string, double>();
        using (var ring = new RingTransport())
        using (var socket = new SocketTransport())
        {
            // Warm up both (JIT, page faults in rings and buffers), then alternate ring and
            // socketpair runs so that both see the same machine load.
            foreach (ITransport t in new ITransport[] { ring, socket })
            {
                RoundTrips(t, 1, 0.2);
                Stream(t, 1, 0.2);
            }
            Compare("round trips, 1 queue", t => RoundTrips(t, 1, seconds));
            Compare("round trips, 2 queues", t => RoundTrips(t, Queues, seconds));
            Compare("1 MiB frames, 1 queue", t => Stream(t, 1, seconds));
            Compare("1 MiB frames, 2 queues", t => Stream(t, Queues, seconds));

            void Compare(string name, Func<ITransport, double> measure)
            {
                var r = new double[runs];
                var s = new double[runs];
                for (int i = 0; i < runs; i++)
                {
                    r[i] = measure(ring);
                    s[i] = measure(socket);
                }
                results["ring " + name] = Median(r);
                results["socketpair " + name] = Median(s);
                results["best ring " + name] = r.Max();
                results["best socketpair " + name] = s.Max();
                Console.WriteLine($"  {name,-24} ring {string.Join(" ", r.Select(v => v.ToString("F0", CultureInfo.InvariantCulture)))} | socketpair {string.Join(" ", s.Select(v => v.ToString("F0", CultureInfo.InvariantCulture)))}");
            }
        }

        Console.WriteLine();
        Console.WriteLine($"{"measurement (median of runs)",-34} {"ring",14} {"socketpair",14} {"ring/socket",12} {"best ring",14} {"best socket",14}");
        foreach (var (name, unit) in new[] { ("round trips, 1 queue", "rt/s"), ("round trips, 2 queues", "rt/s"), ("1 MiB frames, 1 queue", "MB/s"), ("1 MiB frames, 2 queues", "MB/s") })
        {
            double r = results["ring " + name], s = results["socketpair " + name];
            Console.WriteLine($"{name + " (" + unit + ")",-34} {r,14:N0} {s,14:N0} {r / s,11:F2}x {results["best ring " + name],14:N0} {results["best socketpair " + name],14:N0}");
        }
        Console.WriteLine($"{"memcpy 1 MiB blocks (MB/s)",-34} {memcpy,14:N0}");
        Console.WriteLine($"ring 1 MiB, 1 queue / memcpy:  {results["ring 1 MiB frames, 1 queue"] / memcpy:F2}");
        Console.WriteLine($"ring 1 MiB, 2 queues / memcpy: {results["ring 1 MiB frames, 2 queues"] / memcpy:F2}");
        return 0;
    }

    private static double Median(int runs, Func<double> measure)
    {
        var values = new double[runs];
        for (int i = 0; i < runs; i++) values[i] = measure();
        return Median(values);
    }

    private static double Median(double[] values)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    /// <summary>MB/s (10^6 bytes) of copying 1 MiB blocks from one buffer to another.</summary>
    private static double Memcpy(double seconds)
    {
        var src = new byte[Large];
        var dst = new byte[Large];
        Random.Shared.NextBytes(src);
        long copies = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < 16; i++) src.AsSpan().CopyTo(dst);
            copies += 16;
        }
        return copies * (double)Large / sw.Elapsed.TotalSeconds / 1e6;
    }

    /// <summary>Round trips per second: each queue's thread sends a 64-byte request and waits for the 16-byte reply.</summary>
    private static double RoundTrips(ITransport transport, int queues, double seconds)
    {
        long total = 0;
        var start = new Barrier(queues + 1);
        var threads = new Thread[queues];
        double elapsed = 0;
        for (int q = 0; q < queues; q++)
        {
            int queue = q;
            threads[q] = new Thread(() =>
            {
                Span<byte> request = stackalloc byte[SmallRequest];
                request.Fill(0x5A);
                start.SignalAndWait();
                var sw = Stopwatch.StartNew();
                long n = 0;
                while ((n & 63) != 0 || sw.Elapsed.TotalSeconds < seconds)
                {
                    transport.Send(queue, request, (ulong)n);
                    ulong tag = transport.Receive(queue);
                    if (tag != (ulong)n) throw new InvalidOperationException($"reply {tag} for request {n}");
                    n++;
                }
                Interlocked.Add(ref total, n);
                lock (threads) elapsed = Math.Max(elapsed, sw.Elapsed.TotalSeconds);
            });
            threads[q].Start();
        }
        start.SignalAndWait();
        foreach (var t in threads) t.Join();
        return total / elapsed;
    }

    /// <summary>MB/s of 1 MiB requests: per queue a sender streams frames (filled from a private buffer) while a receiver collects the replies.</summary>
    private static double Stream(ITransport transport, int queues, double seconds)
    {
        long frames = 0;
        var start = new Barrier(2 * queues + 1);
        var threads = new List<Thread>();
        double elapsed = 0;
        for (int q = 0; q < queues; q++)
        {
            int queue = q;
            var source = new byte[Large];
            Random.Shared.NextBytes(source);
            var sender = new Thread(() =>
            {
                start.SignalAndWait();
                var sw = Stopwatch.StartNew();
                long n = 0;
                while (sw.Elapsed.TotalSeconds < seconds)
                    transport.Send(queue, source, (ulong)n++);
                // A small last frame tells the receiver that no more replies will come.
                transport.Send(queue, source.AsSpan(0, 1), EndOfStream);
            });
            var receiver = new Thread(() =>
            {
                start.SignalAndWait();
                var sw = Stopwatch.StartNew();
                long n = 0;
                for (;;)
                {
                    ulong tag = transport.Receive(queue);
                    if (tag == EndOfStream) break;
                    if (tag != (ulong)n) throw new InvalidOperationException($"reply {tag} for request {n}");
                    n++;
                }
                Interlocked.Add(ref frames, n);
                lock (threads) elapsed = Math.Max(elapsed, sw.Elapsed.TotalSeconds);
            });
            threads.Add(sender);
            threads.Add(receiver);
        }
        foreach (var t in threads) t.Start();
        start.SignalAndWait();
        foreach (var t in threads) t.Join();
        return frames * (double)Large / elapsed / 1e6;
    }

    private interface ITransport : IDisposable
    {
        void Send(int queue, ReadOnlySpan<byte> payload, ulong tag);
        ulong Receive(int queue);
    }

    /// <summary>The creator (vdev) end of a two-queue ring set, with the peer process serving it.</summary>
    private sealed class RingTransport : ITransport
    {
        private readonly ShmRingSet _set = ShmRingSet.Create(Queues);
        private readonly Process _peer;

        public RingTransport()
        {
            if (s_spin is { } spin) _set.SpinDuration = spin;
            _set.SetInheritable(true);
            try { _peer = SpawnSelf("--ring-peer", _set.Fds.ToString(), _set.SpinDuration.TotalMicroseconds.ToString(CultureInfo.InvariantCulture)); }
            finally { _set.SetInheritable(false); }
        }

        public void Send(int queue, ReadOnlySpan<byte> payload, ulong tag)
        {
            var producer = _set.GetQueue(queue).Producer;
            var status = producer.Reserve(payload.Length, out var frame, Timeout.InfiniteTimeSpan);
            if (status != RingStatus.Ok) throw new InvalidOperationException($"ring reserve: {status}");
            payload.CopyTo(frame);
            producer.Commit(payload.Length, tag);
        }

        public ulong Receive(int queue)
        {
            var consumer = _set.GetQueue(queue).Consumer;
            var status = consumer.Peek(out var reply, Timeout.InfiniteTimeSpan);
            if (status != RingStatus.Ok) throw new InvalidOperationException($"ring peek: {status}");
            ulong tag = reply.Tag;
            consumer.Release();
            return tag;
        }

        public void Dispose()
        {
            _set.Close();
            _peer.WaitForExit(10_000);
            _set.Dispose();
        }
    }

    /// <summary>The peer of <see cref="RingTransport"/>: one thread per queue serving requests until the ring closes.</summary>
    private static int RingPeer(string descriptor, TimeSpan spin)
    {
        using var set = ShmRingSet.Attach(descriptor);
        set.SpinDuration = spin;
        var threads = new Thread[set.QueueCount];
        for (int q = 0; q < set.QueueCount; q++)
        {
            var queue = set.GetQueue(q);
            threads[q] = new Thread(() =>
            {
                var sink = new byte[Large + 4096];
                for (;;)
                {
                    if (queue.Consumer.Peek(out var request, Timeout.InfiniteTimeSpan) != RingStatus.Ok) return;
                    request.Data.CopyTo(sink);
                    if (queue.Producer.Reserve(Reply, out var reply, Timeout.InfiniteTimeSpan) != RingStatus.Ok) return;
                    BitConverter.TryWriteBytes(reply, (long)request.Data.Length);
                    BitConverter.TryWriteBytes(reply[8..], request.Tag);
                    queue.Producer.Commit(Reply, request.Tag);
                    queue.Consumer.Release();
                }
            });
            threads[q].Start();
        }
        foreach (var t in threads) t.Join();
        return 0;
    }

    /// <summary>
    /// The same exchange over one AF_UNIX stream socketpair per queue: a 16-byte header (length,
    /// tag) and the payload one way, a 16-byte header and the 16-byte reply the other way.
    /// </summary>
    private sealed class SocketTransport : ITransport
    {
        private readonly int[] _fds = new int[Queues];
        private readonly Process _peer;
        private readonly byte[][] _sendBuffers = new byte[Queues][];

        public SocketTransport()
        {
            var peerFds = new string[Queues];
            var theirs = new int[Queues];
            for (int q = 0; q < Queues; q++)
            {
                (_fds[q], theirs[q]) = SocketPair.Create();
                Libc.fcntl(theirs[q], Libc.F_SETFD, 0);
                peerFds[q] = theirs[q].ToString(CultureInfo.InvariantCulture);
                _sendBuffers[q] = new byte[16 + 4096];
            }
            _peer = SpawnSelf(["--socket-peer", .. peerFds]);
            foreach (int fd in theirs) Libc.close(fd);
        }

        public void Send(int queue, ReadOnlySpan<byte> payload, ulong tag)
        {
            int fd = _fds[queue];
            var buffer = _sendBuffers[queue].AsSpan();
            BitConverter.TryWriteBytes(buffer, (long)payload.Length);
            BitConverter.TryWriteBytes(buffer[8..], tag);
            bool ok;
            if (payload.Length <= 4096)
            {
                // Small frames go out in one write, as a socket transport would do.
                payload.CopyTo(buffer[16..]);
                ok = SocketPair.WriteAll(fd, buffer[..(16 + payload.Length)]);
            }
            else
            {
                ok = SocketPair.WriteAll(fd, buffer[..16]) && SocketPair.WriteAll(fd, payload);
            }
            if (!ok) throw new InvalidOperationException("socket peer went away");
        }

        public ulong Receive(int queue)
        {
            Span<byte> reply = stackalloc byte[16 + Reply];
            if (!SocketPair.ReadExactly(_fds[queue], reply)) throw new InvalidOperationException("socket peer went away");
            return BitConverter.ToUInt64(reply[8..]);
        }

        public void Dispose()
        {
            foreach (int fd in _fds) Libc.close(fd);
            _peer.WaitForExit(10_000);
        }
    }

    private static int SocketPeer(string[] fds)
    {
        var threads = new Thread[fds.Length];
        for (int q = 0; q < fds.Length; q++)
        {
            int fd = int.Parse(fds[q], CultureInfo.InvariantCulture);
            threads[q] = new Thread(() =>
            {
                var sink = new byte[Large + 4096];
                Span<byte> header = stackalloc byte[16];
                Span<byte> reply = stackalloc byte[16 + Reply];
                for (;;)
                {
                    if (!SocketPair.ReadExactly(fd, header)) return;
                    long length = BitConverter.ToInt64(header);
                    if ((ulong)length > (ulong)sink.Length || !SocketPair.ReadExactly(fd, sink.AsSpan(0, (int)length))) return;
                    ulong tag = BitConverter.ToUInt64(header[8..]);
                    BitConverter.TryWriteBytes(reply, (long)Reply);
                    BitConverter.TryWriteBytes(reply[8..], tag);
                    BitConverter.TryWriteBytes(reply[16..], length);
                    BitConverter.TryWriteBytes(reply[24..], tag);
                    if (!SocketPair.WriteAll(fd, reply)) return;
                }
            });
            threads[q].Start();
        }
        foreach (var t in threads) t.Join();
        return 0;
    }

    /// <summary>Starts this benchmark again with the given arguments after `ring`.</summary>
    private static Process SpawnSelf(params string[] args)
    {
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this executable to start the peer");
        var psi = new ProcessStartInfo(host) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") psi.ArgumentList.Add(typeof(RingBenchmark).Assembly.Location);
        psi.ArgumentList.Add("ring");
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi) ?? throw new InvalidOperationException("the peer process did not start");
    }
}
