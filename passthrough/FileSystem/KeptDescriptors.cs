using System.Diagnostics;
using Hypervisor.Interop;
using Hypervisor.Protocol.Recovery;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// The daemon's side of the vdev's descriptor store (passthrough/FileSystem/README.md, "Descriptors kept by the vdev"):
/// the descriptors behind the guest's open handles and the lock owners' lock descriptors are duplicated to the vdev with
/// SCM_RIGHTS, so that the daemon's death closes none of them, and a new daemon adopts them before it serves.
/// <para>Keeping costs a request no syscall: <see cref="Keep"/> and <see cref="Drop"/> only note the change (under a
/// lock taken for a list append), and <see cref="Flush"/>, called by the transport when a queue has run dry, sends what
/// is due in one non-blocking sendmsg per <see cref="DescriptorStoreMessage.MaxEntries"/> notes. A lock owner's Keep
/// is due at once. A handle's Keep (<c>delayed</c>) is due <see cref="KeepDelay"/> after it was noted: a handle the
/// guest releases sooner (a file created, written and closed) is cancelled by its Drop and never reaches the vdev, so
/// it costs neither side a descriptor transfer nor the vdev a close. Drops ride with the next Keep (a released
/// descriptor stays open in the vdev a little longer, which changes nothing the guest sees: lock descriptors are
/// unlocked before they are closed), or go on their own once <see cref="DropBatch"/> wait or after
/// <see cref="DropDelay"/>. A thread of this class's own sends what falls due while no queue runs dry; it sleeps
/// without a deadline while nothing waits. A descriptor not yet sent when the daemon dies is not kept: its handle is
/// reopened by file handle as before (the window runs from the OPEN's reply to the end of the batch in which its Keep
/// fell due). A full socket (the vdev's thread has not read yet) leaves the rest for the next flush.</para>
/// </summary>
internal sealed class KeptDescriptors : IDisposable
{
    /// <summary>A Keep (with its descriptor, referenced until sent) or a Drop (no descriptor); <c>Due</c> is the
    /// <see cref="Stopwatch"/> timestamp from which a delayed Keep may be sent, 0 for a note due at once.</summary>
    private readonly record struct Note(KeptEntry Entry, SafeFd? Fd, long Due);

    private readonly SafeFd _socket;
    private readonly object _lock = new();
    // In order. Guarded by _lock.
    private readonly List<Note> _pending = [];
    private volatile int _count;
    // Keeps due at once among the pending notes (guarded by _lock; read without it by Flush).
    private volatile int _keeps;
    // Delayed Keeps among the pending notes (as _keeps), and the earliest timestamp at which one of them falls due (no
    // later than the true earliest: a cancelled Keep leaves it early, and the deadline thread then looks again).
    private volatile int _delayed;
    private long _nextDue;
    // When the Drops waiting go without a Keep (0: none waits). Guarded by _lock.
    private long _dropsDue;
    private int _flushing;
    private volatile bool _broken;
    // The deadline thread: the timestamp it sleeps until (long.MaxValue: without a deadline), and whether it is to end.
    // Guarded by _lock.
    private long _sleepingUntil;
    private bool _stopping;
    private readonly Thread _deadlines;
    // Used only by the thread that holds _flushing.
    private readonly byte[] _message = new byte[DescriptorStoreMessage.MaxSize];
    private readonly int[] _fds = new int[DescriptorStoreMessage.MaxEntries];
    private readonly Note[] _batch = new Note[DescriptorStoreMessage.MaxEntries];

    /// <summary>Drops waiting at most before a flush sends them without a Keep.</summary>
    public const int DropBatch = 32;

    /// <summary>How long a Drop waits at most for a Keep to ride with.</summary>
    public static readonly TimeSpan DropDelay = TimeSpan.FromMilliseconds(50);

    /// <summary>How long a handle's Keep waits before it is sent (a release within it cancels the Keep).</summary>
    public static readonly TimeSpan KeepDelay = TimeSpan.FromMilliseconds(5);

    private static readonly long DropTicks = (long)(DropDelay.TotalSeconds * Stopwatch.Frequency);
    private readonly long _keepTicks;

    /// <summary>
    /// Takes over <paramref name="socket"/>, the daemon's end of its channel (<c>fdstore=N</c>). <paramref name="keepDelay"/>
    /// replaces <see cref="KeepDelay"/> (tests that must not depend on the machine's speed).
    /// </summary>
    public KeptDescriptors(SafeFd socket, TimeSpan? keepDelay = null)
    {
        _socket = socket;
        _keepTicks = (long)((keepDelay ?? KeepDelay).TotalSeconds * Stopwatch.Frequency);
        _deadlines = new Thread(static s => ((KeptDescriptors)s!).RunDeadlines()) { IsBackground = true, Name = "kept fds" };
        _deadlines.Start(this);
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

    /// <summary>
    /// Notes that <paramref name="fd"/> is to be kept under <paramref name="entry"/>; its close waits until it was sent.
    /// <paramref name="delayed"/>: not before <see cref="KeepDelay"/> (a handle's descriptor); otherwise at the next
    /// flush (a lock owner's, a reopened handle's).
    /// </summary>
    public void Keep(in KeptEntry entry, SafeFd fd, bool delayed = false)
    {
        if (_broken) return;
        bool added = false;
        fd.DangerousAddRef(ref added);
        long due = delayed ? Stopwatch.GetTimestamp() + _keepTicks : 0;
        lock (_lock)
        {
            _pending.Add(new Note(entry, fd, due));
            if (delayed)
            {
                if (_delayed == 0 || due < _nextDue) _nextDue = due;
                _delayed++;
                WakeFor(due);
            }
            else
            {
                _keeps++;
            }
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
                    if (_pending[i].Due != 0) _delayed--;
                    else _keeps--;
                    _pending.RemoveAt(i);
                    _count = _pending.Count;
                    fd.DangerousRelease();
                    return;
                }
                break;
            }
            _pending.Add(new Note(entry, null, 0));
            _count = _pending.Count;
            if (_dropsDue == 0)
            {
                _dropsDue = Stopwatch.GetTimestamp() + DropTicks;
                WakeFor(_dropsDue);
            }
        }
    }

    /// <summary>Wakes the deadline thread when it sleeps past <paramref name="due"/> (the lock is held).</summary>
    private void WakeFor(long due)
    {
        if (due < _sleepingUntil) Monitor.Pulse(_lock);
    }

    /// <summary>
    /// Sends what is due, in order (a queue ran dry): everything when a Keep is due, otherwise only once
    /// <see cref="DropBatch"/> Drops wait. Free when nothing is to be sent (one clock read while a delayed Keep waits);
    /// when another thread is sending, it sends this thread's notes too or leaves them to the next flush.
    /// </summary>
    public void Flush()
    {
        if (_count == 0) return;
        if (_keeps == 0 && _count - _delayed < DropBatch && (_delayed == 0 || Stopwatch.GetTimestamp() < Volatile.Read(ref _nextDue))) return;
        Send();
    }

    /// <summary>The deadline thread: sends delayed Keeps as they fall due and Drops after their delay, when no flush did.</summary>
    private void RunDeadlines()
    {
        while (true)
        {
            lock (_lock)
            {
                while (true)
                {
                    if (_stopping) return;
                    long now = Stopwatch.GetTimestamp();
                    if (_delayed > 0 && _nextDue <= now) _nextDue = EarliestDelayed();
                    long due = long.MaxValue;
                    if (_delayed > 0) due = _nextDue;
                    if (_dropsDue != 0 && _dropsDue < due) due = _dropsDue;
                    if (due <= now) break;
                    _sleepingUntil = due;
                    if (due == long.MaxValue) Monitor.Wait(_lock);
                    else Monitor.Wait(_lock, (int)Math.Min(int.MaxValue, ((due - now) * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency));
                    _sleepingUntil = 0;
                }
            }
            // Another thread is sending (its snapshot may predate a deadline that passed since): let it finish.
            if (!Send()) Thread.Sleep(1);
            lock (_lock)
            {
                // Not sent (a full socket, or the flushing thread took them before they were due): try again later
                // rather than at once.
                long now = Stopwatch.GetTimestamp();
                if (_dropsDue != 0 && _dropsDue <= now) _dropsDue = now + DropTicks;
            }
        }
    }

    /// <summary>The earliest due time of the delayed Keeps waiting (the lock is held; <see cref="_delayed"/> is above 0).</summary>
    private long EarliestDelayed()
    {
        long earliest = long.MaxValue;
        foreach (var note in _pending)
            if (note.Fd is not null && note.Due != 0 && note.Due < earliest) earliest = note.Due;
        return earliest;
    }

    /// <summary>Sends every note that is due; false when another thread was sending (and this one sent nothing).</summary>
    private bool Send()
    {
        if (Interlocked.Exchange(ref _flushing, 1) != 0) return false;
        try
        {
            long now = Stopwatch.GetTimestamp();
            while (true)
            {
                int n = 0, keeps = 0, delayed = 0;
                lock (_lock)
                {
                    if (_pending.Count == 0) return true;
                    // Every note that is due, up to a message's worth, in order; delayed Keeps not due yet stay, in order.
                    int kept = 0;
                    for (int i = 0; i < _pending.Count; i++)
                    {
                        var note = _pending[i];
                        if (note.Due > now || n == _batch.Length)
                        {
                            _pending[kept++] = note;
                            continue;
                        }
                        _batch[n++] = note;
                        if (note.Fd is null) continue;
                        if (note.Due != 0) delayed++;
                        else keeps++;
                    }
                    _pending.RemoveRange(kept, _pending.Count - kept);
                    _keeps -= keeps;
                    _delayed -= delayed;
                    _count = _pending.Count;
                    if (n == 0) return true;
                }
                if (!Send(n))
                {
                    lock (_lock)
                    {
                        // Back in front, in order, due at once: a Drop noted meanwhile for one of them comes after its Keep.
                        for (int i = 0; i < n; i++) _batch[i] = _batch[i] with { Due = 0 };
                        _pending.InsertRange(0, _batch.AsSpan(0, n).ToArray());
                        _keeps += keeps + delayed;
                        _count = _pending.Count;
                    }
                    Array.Clear(_batch);
                    return true;
                }
                lock (_lock)
                {
                    if (_count == _keeps + _delayed) _dropsDue = 0;
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

    /// <summary>Releases what was noted and not sent, ends the deadline thread, and closes the channel.</summary>
    public void Dispose()
    {
        _broken = true;
        lock (_lock)
        {
            _stopping = true;
            Monitor.Pulse(_lock);
        }
        if (Thread.CurrentThread != _deadlines) _deadlines.Join(TimeSpan.FromSeconds(1));
        lock (_lock)
        {
            foreach (var note in _pending) note.Fd?.DangerousRelease();
            _pending.Clear();
            _count = 0;
            _keeps = 0;
            _delayed = 0;
        }
        _socket.Dispose();
    }
}
