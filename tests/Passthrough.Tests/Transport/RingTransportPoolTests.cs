using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Transport;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Tests.Transport;

/// <summary>
/// <c>--thread-pool-size</c> on the ring: with N workers, N requests of one queue run at the same time (each waits in
/// the filesystem until N have arrived); without a pool the queue's dispatcher runs them one after the other. Every
/// request still gets exactly one reply with its own unique.
/// </summary>
public sealed class RingTransportPoolTests
{
    [Theory]
    [InlineData(0, 1)]
    [InlineData(3, 3)]
    public void ThePoolRunsThatManyRequestsOfOneQueueAtOnce(int poolSize, int expectedAtOnce)
    {
        const int requests = 6;
        var fs = new Gate(expectedAtOnce);
        using var rings = ShmRingSet.Create(2); // hiprio and one request queue
        // The daemon's side gets its own descriptors, as it would by inheritance.
        var fds = new RingFds(Libc.dup(rings.Fds.MemFd), [.. rings.Fds.Doorbells.Select(fd => Libc.dup(fd))]);
        using var engine = new FuseEngine(fs);
        using var transport = RingTransport.Start(engine, NullLogger.Instance, fds.ToString(), poolSize: poolSize);
        var queue = rings.GetQueue(1);

        RingSubmit.Submit(queue, FuseFrames.Init(), 1);
        Assert.Equal(1UL, Reply(queue).Unique);
        for (ulong unique = 2; unique < 2 + requests; unique++)
            RingSubmit.Submit(queue, FuseFrames.Build(FuseOpcode.GetAttr, unique, 1, FuseFrames.Struct(new GetAttrIn())), unique);
        var answered = new HashSet<ulong>();
        for (int i = 0; i < requests; i++)
        {
            var header = Reply(queue);
            Assert.Equal(0, header.Error);
            Assert.True(answered.Add(header.Unique), $"unique {header.Unique} was answered twice");
        }
        Assert.Equal(Enumerable.Range(2, requests).Select(u => (ulong)u).ToHashSet(), answered);
        Assert.Equal(expectedAtOnce, fs.MostAtOnce);
        Assert.Equal(poolSize == 0 ? new HashSet<string> { "ring-q1" } : Enumerable.Range(0, poolSize).Select(i => $"ring-pool-{i}").ToHashSet(), fs.Threads);
    }

    private static OutHeader Reply(RingQueue queue)
    {
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var frame, TimeSpan.FromSeconds(60), CancellationToken.None));
        var header = FuseFrames.Header(frame.Data);
        Assert.Equal(header.Unique, frame.Tag);
        queue.Consumer.Release();
        return header;
    }

    /// <summary>GETATTR waits (up to 20 s) until <c>atOnce</c> calls are inside, and records the most inside at once and the threads that ran them.</summary>
    private sealed class Gate(int atOnce) : IFileSystem
    {
        private readonly object _lock = new();
        private int _inside;

        public int MostAtOnce { get; private set; }

        public HashSet<string> Threads { get; } = [];

        public Result<AttrOut> GetAttr(in FuseContext ctx, NodeId node, FileHandle? handle)
        {
            lock (_lock)
            {
                _inside++;
                MostAtOnce = Math.Max(MostAtOnce, _inside);
                Threads.Add(Thread.CurrentThread.Name ?? "");
                Monitor.PulseAll(_lock);
                var deadline = Environment.TickCount64 + 20_000;
                while (MostAtOnce < atOnce && Environment.TickCount64 < deadline) Monitor.Wait(_lock, 100);
                _inside--;
            }
            return new AttrOut { AttrValid = 1 };
        }
    }
}
