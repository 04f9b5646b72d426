using Hypervisor.Interop;
using Hypervisor.Protocol.Recovery;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// The daemon's side of the vdev's descriptor store (passthrough/FileSystem/README.md, "Descriptors kept by the vdev"):
/// the descriptors behind the guest's open handles and the lock owners' lock descriptors are duplicated to the vdev with
/// SCM_RIGHTS, so that the daemon's death closes none of them, and a new daemon adopts them before it serves.
/// <para>Keeping costs a request no syscall: <see cref="Keep"/> and <see cref="Drop"/> only note the change (under a
/// lock taken for a list append), and <see cref="Flush"/>, called by the transport when a queue has run dry, sends what
/// was noted in one non-blocking sendmsg per <see cref="DescriptorStoreMessage.MaxEntries"/> descriptors. A handle
/// opened and released between two flushes never reaches the vdev. A descriptor noted but not yet sent when the daemon
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
    private int _flushing;
    private volatile bool _broken;
    // Used only by the thread that holds _flushing.
    private readonly byte[] _message = new byte[DescriptorStoreMessage.MaxSize];
    private readonly int[] _fds = new int[DescriptorStoreMessage.MaxEntries];
    private readonly (KeptEntry Entry, SafeFd? Fd)[] _batch = new (KeptEntry, SafeFd?)[DescriptorStoreMessage.MaxEntries];

    /// <summary>Takes over <paramref name="socket"/>, the daemon's end of its channel (<c>fdstore=N</c>).</summary>
    public KeptDescriptors(SafeFd socket) => _socket = socket;

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
            _count = _pending.Count;
        }
    }

    /// <summary>Notes that what is kept under <paramref name="entry"/> is to be closed; a Keep of it not yet sent is cancelled instead.</summary>
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
                    _count = _pending.Count;
                    fd.DangerousRelease();
                    return;
                }
                break;
            }
            _pending.Add((entry, null));
            _count = _pending.Count;
        }
    }

    /// <summary>
    /// Sends what was noted, in order (a queue ran dry). Free when nothing was; when another thread is sending, it sends
    /// this thread's notes too or leaves them to the next flush.
    /// </summary>
    public void Flush()
    {
        if (_count == 0) return;
        if (Interlocked.Exchange(ref _flushing, 1) != 0) return;
        try
        {
            while (true)
            {
                int n;
                DescriptorStoreOp op;
                lock (_lock)
                {
                    if (_pending.Count == 0) return;
                    // One message carries one op: the leading run of Keeps or of Drops.
                    op = _pending[0].Fd is null ? DescriptorStoreOp.Drop : DescriptorStoreOp.Keep;
                    n = 0;
                    while (n < _pending.Count && n < _batch.Length && (_pending[n].Fd is null) == (op == DescriptorStoreOp.Drop))
                    {
                        _batch[n] = _pending[n];
                        n++;
                    }
                    _pending.RemoveRange(0, n);
                    _count = _pending.Count;
                }
                if (!Send(op, n))
                {
                    lock (_lock)
                    {
                        // Back in front, in order: a Drop noted meanwhile for one of them comes after its Keep.
                        _pending.InsertRange(0, _batch.AsSpan(0, n).ToArray());
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

    /// <summary>One message of the batch; false when the socket is full (try again at the next flush).</summary>
    private bool Send(DescriptorStoreOp op, int n)
    {
        int length = DescriptorStoreMessage.WriteHeader(_message, op, n);
        for (int i = 0; i < n; i++)
        {
            DescriptorStoreMessage.WriteEntry(_message, i, _batch[i].Entry);
            if (op == DescriptorStoreOp.Keep) _fds[i] = _batch[i].Fd!.Value;
        }
        while (true)
        {
            var sent = Libc.SendWithFds(_socket, _message.AsSpan(0, length), op == DescriptorStoreOp.Keep ? _fds.AsSpan(0, n) : default,
                Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
            if (sent >= 0) return true;
            int errno = Libc.LastErrno;
            if (errno == Libc.EINTR) continue;
            if (errno == Libc.EAGAIN) return false;
            // The vdev's end is gone (it is exiting): nothing more can be kept; what was noted is released as if sent.
            _broken = true;
            return true;
        }
    }

    /// <summary>Releases what was noted and not sent, and closes the channel.</summary>
    public void Dispose()
    {
        _broken = true;
        lock (_lock)
        {
            foreach (var (_, fd) in _pending) fd?.DangerousRelease();
            _pending.Clear();
            _count = 0;
        }
        _socket.Dispose();
    }
}
