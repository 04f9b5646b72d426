using Hypervisor.Interop;
using Hypervisor.Protocol.Recovery;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Share;

/// <summary>
/// One share's descriptor store (vdev/README.md, "Descriptors that outlive the daemon"): duplicates of the descriptors
/// behind the guest's open handles and of the lock owners' lock descriptors, which each daemon of the share hands over
/// with SCM_RIGHTS, kept here by key so that a daemon's death closes none of them. A new daemon gets them all before it
/// serves and adopts them instead of reopening by file handle; that is what keeps a file unlinked while open, and the
/// OFD locks and flock locks held on those descriptions, alive across a crash.
/// <para>Each daemon has its own channel (<see cref="Connect"/>), served by one thread of its own that never touches a
/// virtqueue: a daemon that sends faster than it is read fills its socket and keeps the rest itself until the next
/// batch. What is kept is bounded by <see cref="Limit"/>; a descriptor beyond it is closed at once (its handle then falls
/// back to reopening by file handle after a crash) and logged once per daemon.</para>
/// </summary>
public sealed partial class DescriptorStore : IDisposable
{
    /// <summary>How long the channel's thread naps after a wake-up before it reads what came meanwhile.</summary>
    private const int CoalesceMs = 1;

    private readonly object _lock = new();
    private readonly Dictionary<KeptEntry, SafeFd> _kept = [];
    private readonly string _tag;
    private readonly ILogger _log;
    private readonly List<Channel> _channels = [];
    private Channel? _last;
    private bool _disposed;

    /// <summary>A store that keeps at most <paramref name="limit"/> descriptors for share <paramref name="tag"/>.</summary>
    public DescriptorStore(string tag, int limit, ILogger log)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        _tag = tag;
        Limit = limit;
        _log = log;
    }

    /// <summary>Descriptors kept at most.</summary>
    public int Limit { get; }

    /// <summary>Descriptors kept now.</summary>
    public int Count
    {
        get { lock (_lock) return _kept.Count; }
    }

    /// <summary>Whether a descriptor is kept under <paramref name="entry"/> (for tests and diagnostics).</summary>
    public bool Holds(KeptEntry entry)
    {
        lock (_lock) return _kept.ContainsKey(entry);
    }

    /// <summary>
    /// The limit for a share whose state store has room for <paramref name="handles"/> open handles: one descriptor per
    /// handle and as many lock descriptors, within half of this process's RLIMIT_NOFILE (the vdev's own descriptors, its
    /// guest memory and every share's rings need the rest).
    /// </summary>
    public static int LimitFor(int handles)
    {
        long budget = Libc.getrlimit(Libc.RLIMIT_NOFILE, out var limit) == 0 ? (long)Math.Min(limit.Current, int.MaxValue) / 2 : 512;
        return (int)Math.Clamp(Math.Min(2L * handles, budget), 1, int.MaxValue);
    }

    /// <summary>
    /// A channel for a daemon about to start: returns the daemon's end of a new socket pair (close-on-exec; pass it in the
    /// ring descriptor as <c>fdstore=N</c> while the launcher starts, and close it here after, so that the daemon's end
    /// is its own and its death ends the channel). The channel's thread first waits for the previous daemon's channel to
    /// end (so that its last Keep and Drop are applied), sends the new daemon everything kept, then applies the new
    /// daemon's Keep and Drop until it ends.
    /// </summary>
    internal SafeFd Connect()
    {
        Span<int> pair = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
            throw SyscallException.Last("socketpair for the descriptor store");
        var mine = new SafeFd(pair[0]);
        var theirs = new SafeFd(pair[1]);
        lock (_lock)
        {
            if (_disposed)
            {
                mine.Dispose();
                theirs.Dispose();
                throw new ObjectDisposedException(nameof(DescriptorStore));
            }
            var channel = new Channel(this, mine, _last);
            _last = channel;
            _channels.Add(channel);
            channel.Start();
        }
        return theirs;
    }

    /// <summary>Ends every channel and closes everything kept.</summary>
    public void Dispose()
    {
        Channel[] channels;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            channels = [.. _channels];
        }
        foreach (var c in channels) c.Stop();
        foreach (var c in channels) c.Join();
        lock (_lock)
        {
            foreach (var fd in _kept.Values) fd.Dispose();
            _kept.Clear();
        }
    }

    /// <summary>One daemon's channel and the thread that serves it.</summary>
    private sealed class Channel(DescriptorStore store, SafeFd socket, Channel? previous)
    {
        private readonly Thread _thread = new(static s => ((Channel)s!).Run()) { IsBackground = true, Name = "vdev fd store" };
        private bool _overLimitLogged;

        // Dropped once this channel has ended, so that a long life of daemons does not chain every channel.
        public Channel? Previous = previous;

        public void Start() => _thread.Start(this);

        public void Stop()
        {
            try
            {
                Libc.shutdown(socket, Libc.SHUT_RDWR);
            }
            catch (ObjectDisposedException)
            {
                // The channel had ended.
            }
        }

        public void Join() => _thread.Join();

        private void Run()
        {
            try
            {
                // The previous daemon is gone when a new one is started; its channel ends at the end of what it sent.
                // One that is still alive after a while (a daemon not dead yet) must not hold up the new one's start.
                if (Previous is { } before && !before._thread.Join(TimeSpan.FromSeconds(5))) LogPreviousNotEnded(store._log, store._tag);
                Previous = null;
                if (SendKept()) Receive();
            }
            catch (Exception e) when (e is ObjectDisposedException or SyscallException)
            {
            }
            finally
            {
                lock (store._lock)
                {
                    store._channels.Remove(this);
                    // Stop (from Dispose) may still shut the socket down; disposing it is done under the same lock.
                    socket.Dispose();
                }
            }
        }

        /// <summary>Sends every kept descriptor (Adopt messages), then AdoptEnd; false when the daemon's end is gone.</summary>
        private bool SendKept()
        {
            List<(KeptEntry Entry, SafeFd Fd)> kept;
            lock (store._lock)
            {
                kept = new(store._kept.Count);
                foreach (var (entry, fd) in store._kept)
                {
                    bool added = false;
                    // The reference keeps the number valid until it is sent, whatever happens to the entry meanwhile.
                    fd.DangerousAddRef(ref added);
                    kept.Add((entry, fd));
                }
            }
            var message = new byte[DescriptorStoreMessage.MaxSize];
            var fds = new int[DescriptorStoreMessage.MaxEntries];
            try
            {
                for (int start = 0; start < kept.Count; start += DescriptorStoreMessage.MaxEntries)
                {
                    int n = Math.Min(DescriptorStoreMessage.MaxEntries, kept.Count - start);
                    int length = DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.Adopt, n);
                    for (int i = 0; i < n; i++)
                    {
                        DescriptorStoreMessage.WriteEntry(message, i, kept[start + i].Entry);
                        fds[i] = kept[start + i].Fd.Value;
                    }
                    if (!Send(message.AsSpan(0, length), fds.AsSpan(0, n))) return false;
                }
                int end = DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.AdoptEnd, 0);
                return Send(message.AsSpan(0, end), []);
            }
            finally
            {
                foreach (var (_, fd) in kept) fd.DangerousRelease();
            }
        }

        private bool Send(ReadOnlySpan<byte> message, ReadOnlySpan<int> fds)
        {
            while (true)
            {
                // Blocking: this thread has nothing else to do until the daemon has read them.
                if (Libc.SendWithFds(socket, message, fds, Libc.MSG_NOSIGNAL) >= 0) return true;
                if (Libc.LastErrno != Libc.EINTR) return false;
            }
        }

        /// <summary>
        /// Applies the daemon's Keep and Drop until its end closes. After each wake-up the thread naps for
        /// <see cref="CoalesceMs"/> and then reads whatever came meanwhile without waiting: under load the daemon's
        /// messages are read a batch per wake-up instead of one wake-up each. What waits in the socket is as safe as what
        /// was read: the descriptors in its queue belong to this end, whatever becomes of the daemon.
        /// </summary>
        private void Receive()
        {
            var message = new byte[DescriptorStoreMessage.MaxSize];
            var fds = new int[DescriptorStoreMessage.MaxEntries];
            while (true)
            {
                var n = Libc.ReceiveWithFds(socket, message, fds, 0, out int fdCount, out _);
                if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
                // End of stream: the daemon is gone (or the store is being disposed).
                if (n <= 0) return;
                Apply(message.AsSpan(0, (int)n), fds.AsSpan(0, fdCount));
                Thread.Sleep(CoalesceMs);
                while (true)
                {
                    n = Libc.ReceiveWithFds(socket, message, fds, Libc.MSG_DONTWAIT, out fdCount, out _);
                    if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
                    if (n < 0) break;
                    if (n == 0) return;
                    Apply(message.AsSpan(0, (int)n), fds.AsSpan(0, fdCount));
                }
            }
        }

        private void Apply(ReadOnlySpan<byte> message, Span<int> fds)
        {
            int used = 0;
            if (DescriptorStoreMessage.TryReadHeader(message, out var op, out int count) && Attached(message, op, count) == fds.Length)
            {
                lock (store._lock)
                {
                    for (int i = 0; i < count; i++)
                    {
                        bool known = DescriptorStoreMessage.TryReadEntry(message, i, out var entry, out bool drop);
                        if (op == DescriptorStoreOp.Drop || drop)
                        {
                            if (store._kept.Remove(entry, out var dropped)) dropped.Dispose();
                            continue;
                        }
                        int fd = fds[used++];
                        if (!known || (store._kept.Count >= store.Limit && !store._kept.ContainsKey(entry)))
                        {
                            Libc.close(fd);
                            if (known && !_overLimitLogged)
                            {
                                _overLimitLogged = true;
                                LogOverLimit(store._log, store._tag, store.Limit);
                            }
                            continue;
                        }
                        if (store._kept.Remove(entry, out var replaced)) replaced.Dispose();
                        store._kept[entry] = new SafeFd(fd);
                    }
                }
            }
            else
            {
                LogMalformed(store._log, store._tag, message.Length, fds.Length);
            }
            // Whatever was attached and not kept is closed: a malformed message loses nothing the daemon still relies on
            // except survival across a crash.
            for (int i = used; i < fds.Length; i++) Libc.close(fds[i]);
        }

        /// <summary>How many descriptors a well-formed message with this header carries; -1 for an op the daemon does not send.</summary>
        private static int Attached(ReadOnlySpan<byte> message, DescriptorStoreOp op, int count)
        {
            if (op == DescriptorStoreOp.Drop) return 0;
            if (op != DescriptorStoreOp.Keep) return -1;
            int keeps = 0;
            for (int i = 0; i < count; i++)
            {
                DescriptorStoreMessage.TryReadEntry(message, i, out _, out bool drop);
                if (!drop) keeps++;
            }
            return keeps;
        }
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Warning, Message = "share '{Tag}': the descriptor store is full ({Limit} descriptors); files opened from now on are reopened by file handle after a daemon crash, and a file unlinked while open does not survive one")]
    private static partial void LogOverLimit(ILogger log, string tag, int limit);

    [LoggerMessage(EventId = 111, Level = LogLevel.Error, Message = "share '{Tag}': the daemon sent a malformed descriptor-store message ({Length} bytes, {Fds} descriptors); its descriptors were closed")]
    private static partial void LogMalformed(ILogger log, string tag, int length, int fds);

    [LoggerMessage(EventId = 112, Level = LogLevel.Warning, Message = "share '{Tag}': the previous daemon's descriptor channel had not ended after 5 s; the new daemon adopts what was kept until then")]
    private static partial void LogPreviousNotEnded(ILogger log, string tag);
}
