using System.Collections.Concurrent;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FuseFrames;

namespace Hypervisor.Passthrough.Tests.Engine;

/// <summary>
/// SETLKW through a transport that takes deferred replies (as the ring and /dev/fuse do): a wait holds no thread,
/// is answered when the lock is released, answered EINTR at once by an INTERRUPT (also one that overtakes its
/// request, as one on the hiprio queue can), and EDEADLK when it would close a cycle of lock owners.
/// </summary>
public sealed class LockWaitTests
{
    /// <summary>Byte-range locks of whole "files" (one per node), each held by at most one owner, in memory.</summary>
    private sealed class OwnerLocks : IFileSystem
    {
        public readonly ConcurrentDictionary<ulong, ulong> Holders = new();

        public Errno SetLk(in FuseContext ctx, NodeId node, in LkIn args, bool wait)
        {
            if (args.Lk.Type == 2 /* F_UNLCK */)
            {
                Holders.TryRemove(new KeyValuePair<ulong, ulong>(node.Value, args.Owner));
                return Errno.Ok;
            }
            var holder = Holders.GetOrAdd(node.Value, args.Owner);
            return holder == args.Owner ? Errno.Ok : Errno.EAGAIN;
        }

        public int GetLockBlockers(in FuseContext ctx, NodeId node, in LkIn args, Span<ulong> owners)
        {
            if (!Holders.TryGetValue(node.Value, out var holder) || holder == args.Owner) return 0;
            owners[0] = holder;
            return 1;
        }
    }

    private sealed class Sink : IDeferredReplySink, IDisposable
    {
        private readonly BlockingCollection<(ReplyRoute Route, OutHeader Header)> _replies = new();

        public int Count => _replies.Count;

        public void SendDeferred(ReplyRoute route, ReadOnlySpan<byte> reply) => _replies.Add((route, Header(reply)));

        public (ReplyRoute Route, OutHeader Header) Next()
        {
            Assert.True(_replies.TryTake(out var reply, TimeSpan.FromSeconds(30)), "no deferred reply came");
            return reply;
        }

        public bool TryNext(TimeSpan wait) => _replies.TryTake(out _, wait);

        public void Dispose() => _replies.Dispose();
    }

    private readonly byte[] _reply = new byte[FuseEngine.MaxReplySize];

    private static FuseEngine Started(IFileSystem fs)
    {
        var engine = new FuseEngine(fs);
        Assert.True(engine.Handle(Init(flags: InitFlags.PosixLocks), new byte[FuseEngine.MaxReplySize]) > 16);
        return engine;
    }

    private static byte[] Lock(FuseOpcode opcode, ulong unique, ulong node, ulong owner, uint type) =>
        Build(opcode, unique, node, Struct(new LkIn { Fh = 1, Owner = owner, Lk = new FileLock { Start = 0, End = 9, Type = type } }));

    private static byte[] Interrupt(ulong unique) => Build(FuseOpcode.Interrupt, unique | 1, 0, Struct(new InterruptIn { Unique = unique }));

    private int Handle(FuseEngine engine, byte[] frame, Sink sink, ulong tag = 0) => engine.Handle(frame, _reply, sink, new ReplyRoute(1, tag));

    [Fact]
    public void AWaitIsDeferred_AndAnsweredWhenTheHolderUnlocks()
    {
        var fs = new OwnerLocks();
        using var engine = Started(fs);
        using var sink = new Sink();
        Assert.True(Handle(engine, Lock(FuseOpcode.SetLk, 10, 5, owner: 1, type: 1), sink) > 0);
        Assert.Equal(0, Header(_reply).Error);

        Assert.Equal(FuseEngine.Deferred, Handle(engine, Lock(FuseOpcode.SetLkW, 12, 5, owner: 2, type: 1), sink, tag: 77));
        Assert.Equal(1, engine.WaitingLocks);
        Assert.Equal(0, sink.Count);

        Handle(engine, Lock(FuseOpcode.SetLk, 14, 5, owner: 1, type: 2), sink);
        var (route, header) = sink.Next();
        Assert.Equal(new ReplyRoute(1, 77), route);
        Assert.Equal(12ul, header.Unique);
        Assert.Equal(0, header.Error);
        Assert.Equal(2ul, fs.Holders[5]);
        Assert.Equal(0, engine.WaitingLocks);
    }

    [Fact]
    public void AnInterrupt_AnswersTheWaitEintrAtOnce_AndTheWaitNeverTakesTheLock()
    {
        var fs = new OwnerLocks();
        using var engine = Started(fs);
        using var sink = new Sink();
        Handle(engine, Lock(FuseOpcode.SetLk, 10, 5, owner: 1, type: 1), sink);
        Assert.Equal(FuseEngine.Deferred, Handle(engine, Lock(FuseOpcode.SetLkW, 12, 5, owner: 2, type: 1), sink));

        Assert.Equal(0, Handle(engine, Interrupt(12), sink)); // INTERRUPT itself gets no reply
        var (_, header) = sink.Next();
        Assert.Equal(12ul, header.Unique);
        Assert.Equal(-Errno.EINTR.Value, header.Error);
        Assert.Equal(0, engine.WaitingLocks);

        // The holder lets go: nobody waits any more, so the lock stays free.
        Handle(engine, Lock(FuseOpcode.SetLk, 14, 5, owner: 1, type: 2), sink);
        Assert.False(sink.TryNext(TimeSpan.FromMilliseconds(200)));
        Assert.False(fs.Holders.ContainsKey(5));
    }

    [Fact]
    public void AnInterruptThatOvertakesItsRequest_IsAppliedWhenTheRequestWouldWait()
    {
        var fs = new OwnerLocks();
        using var engine = Started(fs);
        using var sink = new Sink();
        Handle(engine, Lock(FuseOpcode.SetLk, 10, 5, owner: 1, type: 1), sink);
        Assert.Equal(0, Handle(engine, Interrupt(12), sink));
        Assert.True(Handle(engine, Lock(FuseOpcode.SetLkW, 12, 5, owner: 2, type: 1), sink) > 0);
        Assert.Equal(-Errno.EINTR.Value, Header(_reply).Error);
        Assert.Equal(0, engine.WaitingLocks);
    }

    [Fact]
    public void AWaitThatClosesACycleOfOwners_IsAnsweredEdeadlk()
    {
        var fs = new OwnerLocks();
        using var engine = Started(fs);
        using var sink = new Sink();
        Handle(engine, Lock(FuseOpcode.SetLk, 10, 5, owner: 1, type: 1), sink); // owner 1 holds node 5
        Handle(engine, Lock(FuseOpcode.SetLk, 12, 6, owner: 2, type: 1), sink); // owner 2 holds node 6
        Assert.Equal(FuseEngine.Deferred, Handle(engine, Lock(FuseOpcode.SetLkW, 14, 6, owner: 1, type: 1), sink));
        // Owner 2 now asks for what owner 1 holds while owner 1 waits for owner 2.
        Assert.True(Handle(engine, Lock(FuseOpcode.SetLkW, 16, 5, owner: 2, type: 1), sink) > 0);
        Assert.Equal(-Errno.EDEADLK.Value, Header(_reply).Error);

        // Owner 2 gives up its lock, as a process does on EDEADLK: owner 1's wait is granted.
        Handle(engine, Lock(FuseOpcode.SetLk, 18, 6, owner: 2, type: 2), sink);
        var (_, header) = sink.Next();
        Assert.Equal(14ul, header.Unique);
        Assert.Equal(0, header.Error);
    }

    [Fact]
    public async Task WithoutASink_SetlkwBlocksTheCaller_UntilTheLockIsFree()
    {
        var fs = new OwnerLocks();
        using var engine = Started(fs);
        var reply = new byte[FuseEngine.MaxReplySize];
        Assert.True(engine.Handle(Lock(FuseOpcode.SetLk, 10, 5, owner: 1, type: 1), reply) > 0);
        var waiter = Task.Run(() =>
        {
            var own = new byte[FuseEngine.MaxReplySize];
            var length = engine.Handle(Lock(FuseOpcode.SetLkW, 12, 5, owner: 2, type: 1), own);
            return (length, Header(own));
        });
        Assert.NotSame(waiter, await Task.WhenAny(waiter, Task.Delay(200)));
        engine.Handle(Lock(FuseOpcode.SetLk, 14, 5, owner: 1, type: 2), reply);
        var (length, header) = await waiter.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(16, length);
        Assert.Equal(12ul, header.Unique);
        Assert.Equal(0, header.Error);
    }
}
