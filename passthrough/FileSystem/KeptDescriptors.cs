using Hypervisor.Interop;
using Hypervisor.Protocol.Recovery;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// The daemon's side of the vdev's descriptor store (passthrough/FileSystem/README.md, "Descriptors kept by the vdev"):
/// the descriptors behind the guest's open handles and the lock owners' lock descriptors are duplicated to the vdev with
/// SCM_RIGHTS, so that the daemon's death closes none of them, and a new daemon adopts them before it serves.
/// <para>Keeping costs a request no syscall: <see cref="Keep"/> and <see cref="Drop"/> only note the change (under a
/// lock taken for a list append), and <see cref="Flush"/>, called by the transport when a queue has run dry, sends what
/// was noted in one non-blocking sendmsg per <see cref="DescriptorStoreMessage.MaxEntries"/> notes. Drops ride with the
/// next Keep (a released descriptor stays open in the vdev a little longer, which changes nothing the guest sees: lock
/// descriptors are unlocked before they are closed), or go on their own once <see cref="DropBatch"/> wait or after
/// <see cref="DropDelay"/>. A handle opened and released between two flushes never reaches the vdev. A descriptor noted but not yet sent when the daemon
/// dies is not kept: its handle is reopened by file handle as before (the window runs from the OPEN's reply to the end
/// of its batch). A full socket (the vdev's thread has not read yet) leaves the rest for the next flush.</para>
/// </summary>
internal sealed class KeptDescriptors : IDisposable
{
    private readonly SafeFd _socket;
    private readonly object _lock = new();
    // In order: a Keep (with its descriptor, referenced until sent) or a Drop (no descriptor). Guarded by _lock.
    private readonly List<(KeptEntry Entry, SafeFd? Fd)> _pending = [];
    private volatile int _count;
    // Keeps among the pending notes (guarded by _lock; read without it by Flush).
    private volatile int _keeps;
    private int _flushing;
    private readonly Timer _timer;
    private int _timerArmed;
    private volatile bool _broken;
    // Used only by the thread that holds _flushing.
    private readonly byte[] _message = new byte[DescriptorStoreMessage.MaxSize];
    private readonly int[] _fds = new int[DescriptorStoreMessage.MaxEntries];
    private readonly (KeptEntry Entry, SafeFd? Fd)[] _batch = new (KeptEntry, SafeFd?)[DescriptorStoreMessage.MaxEntries];

    /// <summary>Drops waiting at most before a flush sends them without a Keep.</summary>
    public const int DropBatch = 32;

    /// <summary>How long a Drop waits at most for a Keep to ride with.</summary>
    public static readonly TimeSpan DropDelay = TimeSpan.FromMilliseconds(50);

    /// <summary>Takes over <paramref name="socket"/>, the daemon's end of its channel (<c>fdstore=N</c>).</summary>
    public KeptDescriptors(SafeFd socket)
    {
        _socket = socket;
        _timer = new Timer(static s => ((KeptDescriptors)s!).FlushDrops(), this, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>Keeps or drops noted and not yet sent.</summary>
    public int Pending => _count;

    /// <summary>
    /// Reads what the vdev kept for this share (its Adopt messages, up to AdoptEnd): the daemon's own descriptors from
    /// now on, close-on-exec. Blocks until the vdev has sent them all; an ended channel ends the adoption with what came.
    /// </summary>
    public Dictionary<KeptEntry, SafeFd> Adopt()
    {
        var adopted = new Dictionary<KeptEntry, SafeFd>();
        var message = new byte[DescriptorStoreMessage.MaxSize];
        var fds = new int[DescriptorStoreMessage.MaxEntries];
        while (true)
        {
            var n = Libc.ReceiveWithFds(_socket, message, fds, 0, out int fdCount, out _);
            if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
            if (n <= 0) return adopted;
            int used = 0;
            if (DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, (int)n), out var op, out int count))
            {
                if (op == DescriptorStoreOp.AdoptEnd) return adopted;
                if (op == DescriptorStoreOp.Adopt && count == fdCount)
                {
                    for (; used < count; used++)
                    {
                        var fd = new SafeFd(fds[used]);
                        if (DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, (int)n), used, out var entry) && adopted.TryAdd(entry, fd)) continue;
                        fd.Dispose();
                    }
                }
            }
            for (int i = used; i < fdCount; i++) Libc.close(fds[i]);
        }
    }

    /// <summary>Notes that <paramref name="fd"/> is to be kept under <paramref name="entry"/>; its close waits until it was sent.</summary>
    public void Keep(in KeptEntry entry, SafeFd fd)
    {
        if (_broken) return;
        bool added = false;
        fd.DangerousAddRef(ref added);
        lock (_lock)
        {
            _pending.Add((entry, fd));
            _keeps++;
            _count = _pending.Count;
        }
    }

    /// <summary>
    /// Notes that what is kept under <paramref name="entry"/> is to be closed; a Keep of it not yet sent is cancelled
    /// instead. A Drop is not worth a message of its own: it rides with the next Keep, or goes once
    /// <see cref="DropBatch"/> are waiting, or after <see cref="DropDelay"/> at the latest.
    /// </summary>
    public void Drop(in KeptEntry entry)
    {
        if (_broken) return;
        lock (_lock)
        {
            for (int i = _pending.Count - 1; i >= 0; i--)
            {
                if (_pending[i].Entry != entry) continue;
                if (_pending[i].Fd is { } fd)
                {
                    // Its Keep never left: nothing to drop in the vdev (a Drop before it, if any, stays).
                    _pending.RemoveAt(i);
                    _keeps--;
                    _count = _pending.Count;
                    fd.DangerousRelease();
                    return;
                }
                break;
            }
            _pending.Add((entry, null));
            _count = _pending.Count;
        }
        if (Volatile.Read(ref _timerArmed) == 0 && Interlocked.Exchange(ref _timerArmed, 1) == 0) _timer.Change(DropDelay, Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// Sends what was noted, in order (a queue ran dry): everything when a Keep waits, otherwise only once
    /// <see cref="DropBatch"/> Drops wait. Free when nothing is to be sent; when another thread is sending, it sends this
    /// thread's notes too or leaves them to the next flush.
    /// </summary>
    public void Flush()
    {
        if (_keeps == 0 && _count < DropBatch) return;
        Send();
    }

    /// <summary>The Drops' deadline: whatever waits goes now.</summary>
    private void FlushDrops()
    {
        Volatile.Write(ref _timerArmed, 0);
        if (_count > 0) Send();
        // A Drop noted while this thread was sending (and found the timer armed) waits for the next one.
        if (_count > 0 && Interlocked.Exchange(ref _timerArmed, 1) == 0) _timer.Change(DropDelay, Timeout.InfiniteTimeSpan);
    }

    private void Send()
    {
        if (Interlocked.Exchange(ref _flushing, 1) != 0) return;
        try
        {
            while (true)
            {
                int n, keeps = 0;
                lock (_lock)
                {
                    if (_pending.Count == 0) return;
                    n = Math.Min(_pending.Count, _batch.Length);
                    for (int i = 0; i < n; i++)
                    {
                        _batch[i] = _pending[i];
                        if (_batch[i].Fd is not null) keeps++;
                    }
                    _pending.RemoveRange(0, n);
                    _keeps -= keeps;
                    _count = _pending.Count;
                }
                if (!Send(n))
                {
                    lock (_lock)
                    {
                        // Back in front, in order: a Drop noted meanwhile for one of them comes after its Keep.
                        _pending.InsertRange(0, _batch.AsSpan(0, n).ToArray());
                        _keeps += keeps;
                        _count = _pending.Count;
                    }
                    Array.Clear(_batch);
                    return;
                }
                for (int i = 0; i < n; i++) _batch[i].Fd?.DangerousRelease();
                Array.Clear(_batch, 0, n);
            }
        }
        finally
        {
            Volatile.Write(ref _flushing, 0);
        }
    }

    /// <summary>One Keep message of the batch's first <paramref name="n"/> notes (Drops flagged in their place); false when the socket is full (try again at the next flush).</summary>
    private bool Send(int n)
    {
        int length = DescriptorStoreMessage.WriteHeader(_message, DescriptorStoreOp.Keep, n);
        int fds = 0;
        for (int i = 0; i < n; i++)
        {
            var fd = _batch[i].Fd;
            DescriptorStoreMessage.WriteEntry(_message, i, _batch[i].Entry, drop: fd is null);
            if (fd is not null) _fds[fds++] = fd.Value;
        }
        while (true)
        {
            var sent = Libc.SendWithFds(_socket, _message.AsSpan(0, length), _fds.AsSpan(0, fds), Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
            if (sent >= 0) return true;
            int errno = Libc.LastErrno;
            if (errno == Libc.EINTR) continue;
            if (errno == Libc.EAGAIN) return false;
            // The vdev's end is gone (it is exiting): nothing more can be kept; what was noted is released as if sent.
            _broken = true;
            return true;
        }
    }

    /// <summary>
    /// Releases every OFD lock on <paramref name="fd"/>'s open file description before the daemon closes it: the vdev's
    /// duplicate keeps the description (and so its locks) open until it applies the Drop, and the guest's close must
    /// release the owner's locks at once, as close(2) does.
    /// </summary>
    public static void Unlock(SafeFd fd)
    {
        var all = new Flock { Type = Libc.F_UNLCK, Whence = Libc.SEEK_SET, Start = 0, Len = 0 };
        try
        {
            Libc.fcntl(fd, Libc.F_OFD_SETLK, ref all);
        }
        catch (ObjectDisposedException)
        {
            // Closed already: nothing holds its locks but the vdev's duplicate, whose Drop is on its way.
        }
    }

    /// <summary>Releases what was noted and not sent, and closes the channel.</summary>
    public void Dispose()
    {
        _broken = true;
        _timer.Dispose();
        lock (_lock)
        {
            foreach (var (_, fd) in _pending) fd?.DangerousRelease();
            _pending.Clear();
            _count = 0;
        }
        _socket.Dispose();
    }
}
