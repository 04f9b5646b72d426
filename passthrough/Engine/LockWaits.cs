using System.Diagnostics;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Engine;

/// <summary>
/// SETLKW requests that could not be granted at once. None of them holds a thread: each is a record retried with
/// the non-blocking SETLK by one waiter thread, at once when a guest lock owner unlocks, flushes or releases
/// (<see cref="Kick"/>), and otherwise after a pause that doubles up to <see cref="MaxPause"/>, since a host
/// process's unlock cannot be observed. A thread parked in F_OFD_SETLKW per request was the other way; it cannot be
/// cancelled without signalling the thread, and every waiting guest process would hold one.
/// <para>
/// The reply goes through the transport's <see cref="IDeferredReplySink"/>. An INTERRUPT for a parked request
/// answers it EINTR at once and drops the record (an INTERRUPT that overtakes its request, as one on the hiprio
/// queue can, is remembered for a while and applied when the request parks). A request that would close a cycle of
/// guest lock owners each waiting for the next gets EDEADLK, as fcntl's F_SETLKW does between local processes:
/// without it two guest processes that each hold what the other asks for wait forever, because Linux's virtio-fs
/// driver never sends INTERRUPT, not even for a fatal signal.
/// </para>
/// <para>
/// That driver's silence also means a guest process killed while it waits stays in the guest kernel until the
/// daemon answers. When the lock it waits for is held by another guest process that waits for the killed one in
/// some other way (a parent that kills its child and then waits for it to exit while holding the lock, as
/// stress-ng's lockf stressor does), nothing would ever answer. So where the transport's client sends no INTERRUPT,
/// a request that has been kept waiting by other guest owners for <see cref="GuestWaitLimit"/> is answered EDEADLK
/// (the error F_SETLKW gives for a wait that cannot end well): a killed waiter then leaves, a live one gets an error
/// it must already handle. A wait behind a host process's lock is not bounded: the host releases it whatever the
/// guest does.
/// </para>
/// </summary>
internal sealed partial class LockWaits(IFileSystem fs, ILogger log) : IDisposable
{
    /// <summary>The longest pause between two tries of a request blocked by a lock no guest owner holds.</summary>
    public static readonly TimeSpan MaxPause = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// How long a request whose client sends no INTERRUPT may be kept waiting by locks of the client's own owners;
    /// longer than the waits that contention between live processes causes, short enough that a killed waiter's
    /// parent is not stuck for long.
    /// </summary>
    public static readonly TimeSpan GuestWaitLimit = TimeSpan.FromSeconds(10);

    /// <summary>How far a chain of waiting owners is followed, as the kernel bounds its own deadlock search.</summary>
    private const int MaxChain = 10;

    /// <summary>INTERRUPTs kept for requests not (yet) parked; older ones are dropped first.</summary>
    private const int MaxEarlyInterrupts = 256;

    private static readonly long EarlyInterruptLifetime = Stopwatch.Frequency * 10;

    private readonly IFileSystem _fs = fs;
    private readonly ILogger _log = log;
    private readonly object _gate = new();
    private readonly Dictionary<ulong, Wait> _waits = new();
    private readonly Dictionary<ulong, long> _earlyInterrupts = new();
    private readonly List<Wait> _due = new();
    private readonly byte[] _reply = new byte[64];
    private Thread? _thread;
    private bool _kicked;
    private bool _stopped;
    private int _count;

    /// <summary>Requests parked now.</summary>
    public int Count => Volatile.Read(ref _count);

    private sealed class Wait(FuseContext ctx, NodeId node, LkIn lk, IDeferredReplySink sink, ReplyRoute route)
    {
        public readonly FuseContext Ctx = ctx;
        public readonly NodeId Node = node;
        public readonly LkIn Lk = lk;
        public readonly IDeferredReplySink Sink = sink;
        public readonly ReplyRoute Route = route;
        public long Pause = Stopwatch.Frequency / 1000;
        public long NextTry;
        public bool Trying;
        public bool Interrupted;
        /// <summary>Since when another guest owner keeps this request waiting (0: not now); tracked only where the client sends no INTERRUPT.</summary>
        public long GuestBlockedSince;
    }

    private static bool IsPosix(in LkIn lk) => (lk.LkFlags & FuseConstants.LkFlock) == 0;

    /// <summary>
    /// SETLKW: tries once; when the lock is held by someone else, either answers EDEADLK (the wait would close a
    /// cycle of guest owners) or parks the request and returns false (the reply comes later through
    /// <paramref name="sink"/>). Returns true with <paramref name="result"/> when the request is answered now.
    /// </summary>
    public bool TryAnswerNow(in FuseContext ctx, NodeId node, in LkIn lk, IDeferredReplySink sink, ReplyRoute route, out Errno result)
    {
        result = _fs.SetLk(ctx, node, lk, wait: false);
        if (!IsBlocked(result)) return true;
        lock (_gate)
        {
            // Checked and parked under one lock: two requests that close a cycle together cannot both miss it.
            if (_earlyInterrupts.Remove(ctx.Unique.Value))
            {
                result = Errno.EINTR;
                return true;
            }
            if (IsPosix(lk) && ClosesCycle(ctx, node, lk))
            {
                if (_log.IsEnabled(LogLevel.Debug)) LogDeadlock(ctx.Unique.Value, lk.Owner);
                result = Errno.EDEADLK;
                return true;
            }
            if (_stopped)
            {
                result = Errno.EINTR;
                return true;
            }
            var wait = new Wait(ctx, node, lk, sink, route);
            wait.NextTry = Stopwatch.GetTimestamp() + wait.Pause;
            _waits[ctx.Unique.Value] = wait;
            _count = _waits.Count;
            if (_thread is null)
            {
                _thread = new Thread(Run) { IsBackground = true, Name = "fuse-lock-waits" };
                _thread.Start();
            }
            Monitor.Pulse(_gate);
        }
        if (_log.IsEnabled(LogLevel.Debug)) LogParked(ctx.Unique.Value, lk.Owner, node.Value);
        return false;
    }

    /// <summary>INTERRUPT of <paramref name="unique"/>: a parked request is answered EINTR now.</summary>
    public void Interrupt(ulong unique)
    {
        Wait? answer = null;
        lock (_gate)
        {
            if (_waits.TryGetValue(unique, out var wait))
            {
                wait.Interrupted = true;
                // A try in progress decides: granted stays granted (FUSE lets an interrupted request complete).
                if (wait.Trying) return;
                _waits.Remove(unique);
                _count = _waits.Count;
                answer = wait;
            }
            else
            {
                RememberEarly(unique);
            }
        }
        if (answer is not null)
        {
            if (_log.IsEnabled(LogLevel.Debug)) LogInterrupted(unique);
            Send(answer, Errno.EINTR, new byte[FuseReply.HeaderSize]);
        }
    }

    private void RememberEarly(ulong unique)
    {
        var now = Stopwatch.GetTimestamp();
        if (_earlyInterrupts.Count >= MaxEarlyInterrupts)
        {
            List<ulong>? stale = null;
            foreach (var (id, at) in _earlyInterrupts)
                if (now - at > EarlyInterruptLifetime) (stale ??= new()).Add(id);
            if (stale is null) _earlyInterrupts.Clear();
            else foreach (var id in stale) _earlyInterrupts.Remove(id);
        }
        _earlyInterrupts[unique] = now;
    }

    /// <summary>A guest owner released locks (SETLK, FLUSH, RELEASE): every parked request is tried again now.</summary>
    public void Kick()
    {
        if (Volatile.Read(ref _count) == 0) return;
        lock (_gate)
        {
            _kicked = true;
            Monitor.Pulse(_gate);
        }
    }

    /// <summary>The session ended (DESTROY or a new INIT): parked requests are answered EINTR and forgotten.</summary>
    public void CancelAll()
    {
        List<Wait> all;
        lock (_gate)
        {
            all = new List<Wait>(_waits.Values);
            _waits.Clear();
            _earlyInterrupts.Clear();
            _count = 0;
        }
        foreach (var wait in all) Send(wait, Errno.EINTR, new byte[FuseReply.HeaderSize]);
    }

    private void Run()
    {
        while (true)
        {
            lock (_gate)
            {
                while (true)
                {
                    if (_stopped) return;
                    var now = Stopwatch.GetTimestamp();
                    var earliest = long.MaxValue;
                    _due.Clear();
                    foreach (var wait in _waits.Values)
                    {
                        if (_kicked || wait.NextTry <= now)
                        {
                            wait.Trying = true;
                            _due.Add(wait);
                        }
                        else if (wait.NextTry < earliest)
                        {
                            earliest = wait.NextTry;
                        }
                    }
                    _kicked = false;
                    if (_due.Count > 0) break;
                    if (earliest == long.MaxValue) Monitor.Wait(_gate);
                    else Monitor.Wait(_gate, TimeSpan.FromTicks(Math.Max(1, (earliest - now) * TimeSpan.TicksPerSecond / Stopwatch.Frequency)));
                }
            }

            foreach (var wait in _due)
            {
                Errno result;
                try
                {
                    result = _fs.SetLk(wait.Ctx, wait.Node, wait.Lk, wait: false);
                }
                catch (Exception e)
                {
                    LogRetryFailed(e, wait.Ctx.Unique.Value);
                    result = Errno.EIO;
                }
                var blocked = IsBlocked(result);
                var overdue = blocked && IsOverdue(wait);
                lock (_gate)
                {
                    wait.Trying = false;
                    if (!_waits.ContainsKey(wait.Ctx.Unique.Value)) continue; // answered by CancelAll
                    if (blocked && !wait.Interrupted && !overdue)
                    {
                        wait.Pause = Math.Min(wait.Pause * 2, MaxPause.Ticks * Stopwatch.Frequency / TimeSpan.TicksPerSecond);
                        wait.NextTry = Stopwatch.GetTimestamp() + wait.Pause;
                        continue;
                    }
                    _waits.Remove(wait.Ctx.Unique.Value);
                    _count = _waits.Count;
                }
                if (blocked) result = wait.Interrupted ? Errno.EINTR : Errno.EDEADLK;
                LogAnswered(wait.Ctx.Unique.Value, result);
                Send(wait, result, _reply);
            }
            _due.Clear();
        }
    }

    /// <summary>Whether <paramref name="wait"/> has been kept waiting by other guest owners for longer than <see cref="GuestWaitLimit"/>.</summary>
    private bool IsOverdue(Wait wait)
    {
        if (wait.Sink.SendsInterrupts || !IsPosix(wait.Lk)) return false;
        Span<ulong> blockers = stackalloc ulong[1];
        if (_fs.GetLockBlockers(wait.Ctx, wait.Node, wait.Lk, blockers) == 0)
        {
            wait.GuestBlockedSince = 0;
            return false;
        }
        var now = Stopwatch.GetTimestamp();
        if (wait.GuestBlockedSince == 0) wait.GuestBlockedSince = now;
        if (Stopwatch.GetElapsedTime(wait.GuestBlockedSince, now) < GuestWaitLimit) return false;
        if (_log.IsEnabled(LogLevel.Debug)) LogOverdue(wait.Ctx.Unique.Value, wait.Lk.Owner);
        return true;
    }

    private static bool IsBlocked(Errno result) => result == Errno.EAGAIN || result == Errno.EACCES;

    private static void Send(Wait wait, Errno result, byte[] buffer)
    {
        var length = result.IsError
            ? FuseReply.Error(buffer, wait.Ctx.Unique, result)
            : FuseReply.Finish(buffer, wait.Ctx.Unique, 0);
        try
        {
            wait.Sink.SendDeferred(wait.Route, buffer.AsSpan(0, length));
        }
        catch (Exception e) when (e is ObjectDisposedException or IOException or InvalidOperationException)
        {
            // The transport is gone: nobody waits for this reply any more.
        }
    }

    /// <summary>
    /// Whether the owner of <paramref name="lk"/>, by waiting for the guest owner that blocks it, would wait for
    /// itself: the blocking owner waits (parked here) for an owner that waits ... for the requester. Called under
    /// <see cref="_gate"/>.
    /// </summary>
    private bool ClosesCycle(in FuseContext ctx, NodeId node, in LkIn lk)
    {
        Span<ulong> blockers = stackalloc ulong[8];
        var requester = lk.Owner;
        var frontier = new List<ulong>();
        var seen = new HashSet<ulong> { requester };
        var n = _fs.GetLockBlockers(ctx, node, lk, blockers);
        for (var i = 0; i < n; i++) if (seen.Add(blockers[i])) frontier.Add(blockers[i]);
        for (var depth = 0; depth < MaxChain && frontier.Count > 0; depth++)
        {
            var next = new List<ulong>();
            foreach (var owner in frontier)
            {
                foreach (var wait in _waits.Values)
                {
                    if (wait.Lk.Owner != owner || !IsPosix(wait.Lk)) continue;
                    var m = _fs.GetLockBlockers(wait.Ctx, wait.Node, wait.Lk, blockers);
                    for (var i = 0; i < m; i++)
                    {
                        if (blockers[i] == requester) return true;
                        if (seen.Add(blockers[i])) next.Add(blockers[i]);
                    }
                }
            }
            frontier = next;
        }
        return false;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopped = true;
            Monitor.PulseAll(_gate);
        }
        _thread?.Join(TimeSpan.FromSeconds(2));
    }

    [LoggerMessage(EventId = 210, Level = LogLevel.Debug, Message = "SETLKW unique {Unique} (owner {Owner:x}) waits for a lock on node {Node}")]
    private partial void LogParked(ulong unique, ulong owner, ulong node);

    [LoggerMessage(EventId = 211, Level = LogLevel.Debug, Message = "SETLKW unique {Unique} interrupted: answered EINTR")]
    private partial void LogInterrupted(ulong unique);

    [LoggerMessage(EventId = 212, Level = LogLevel.Debug, Message = "SETLKW unique {Unique} (owner {Owner:x}) would deadlock: answered EDEADLK")]
    private partial void LogDeadlock(ulong unique, ulong owner);

    [LoggerMessage(EventId = 213, Level = LogLevel.Debug, Message = "SETLKW unique {Unique} answered {Result} after waiting")]
    private partial void LogAnswered(ulong unique, Errno result);

    [LoggerMessage(EventId = 215, Level = LogLevel.Debug, Message = "SETLKW unique {Unique} (owner {Owner:x}) kept waiting by guest owners for too long, with no INTERRUPT to tell a killed waiter: answered EDEADLK")]
    private partial void LogOverdue(ulong unique, ulong owner);

    [LoggerMessage(EventId = 214, Level = LogLevel.Error, Message = "Retrying SETLKW unique {Unique} failed unexpectedly; replied EIO")]
    private partial void LogRetryFailed(Exception exception, ulong unique);
}
