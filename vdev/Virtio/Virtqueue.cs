using Hypervisor.Protocol.Share;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Device;
using Hypervisor.Interop;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Virtio;

/// <summary>The three parts of a ring translated through one memory table, which the view keeps referenced.</summary>
internal sealed unsafe class RingView(GuestMemoryTable table, byte* desc, byte* avail, byte* used)
{
    public readonly GuestMemoryTable Table = table;
    public readonly byte* Desc = desc;
    public readonly byte* Avail = avail;
    public readonly byte* Used = used;
}

/// <summary>
/// One split virtqueue (virtio 1.2, 2.7) served by its own worker thread, woken by the kick eventfd.
/// Configuration members are set by the vhost-user control thread only while the ring is stopped; the worker
/// owns the avail side; completions (any thread) push to the used side under <see cref="_usedLock"/>.
/// A chain that breaks a rule is returned with length 0; a ring whose indices or addresses are corrupt
/// is marked broken and left alone until the front-end stops and restarts it.
/// </summary>
internal sealed unsafe class Virtqueue(VirtioFsDevice device, QueueIndex index, ILogger log) : IDisposable
{
    private const int SlotFree = 0, SlotInFlight = 1, SlotBusy = 2;
    /// <summary>Largest indirect table accepted: descriptor indices are 16-bit.</summary>
    public const int MaxIndirectEntries = 32768;

    private readonly VirtioFsDevice _device = device;
    private readonly ILogger _log = log;
    private readonly object _usedLock = new();
    private readonly SafeFd _control = Libc.EventFd(Libc.EFD_NONBLOCK);
    private volatile bool _stopRequested;
    private CancellationTokenSource _cancel = new();
    private Thread? _worker;
    private VirtqueueRequest?[] _slots = [];
    private RingView? _view;
    private uint _generation;
    private int _inFlight;
    private long _replySpinTicks;
    private bool _lastSubmittedLarge;
    private SpinCredit _spinCredit = new() { Share = ReplySpinCpuShare };
    private SpinHistory _replySpins;
    // When the worker went to sleep on a reply it would have polled for had its recent polls paid (0: it did not).
    private long _replySleepSkippedAt;
    // Whether the current ProcessAvail handed the transport a frame, so that it flushes once at the end (worker only).
    private bool _submitted;
    private volatile bool _broken;
    private long _rejectedChains;

    public QueueIndex Index { get; } = index;
    public int Size { get; set; }
    public ulong DescAddr, AvailAddr, UsedAddr;
    public bool AddressSet;
    /// <summary>Next avail-ring index the device will process (SET/GET_VRING_BASE).</summary>
    public ushort LastAvail { get; set; }
    private ushort _usedIdx;
    private bool _usedIdxKnown;
    // Used entries published since the last interrupt decision (under _usedLock): an interrupt held back by a
    // quiet completion covers every entry from _heldBackFrom on.
    private bool _heldBack;
    private ushort _heldBackFrom;
    public SafeFd? Kick, Call, Err;
    public volatile bool Enabled;
    public bool Started => _worker != null;
    public bool Broken => _broken;
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Starts the worker: the ring now has size, addresses and a kick fd (vhost-user "Starting and stopping rings").</summary>
    public void Start()
    {
        if (_worker != null) return;
        if (_slots.Length != Size) _slots = new VirtqueueRequest?[Size];
        // The used index the driver last saw is in the ring; on a restart it is authoritative. The worker reads
        // it once the ring is translated (EnsureView).
        _view = null;
        _broken = false;
        _usedIdxKnown = false;
        StartWorker();
    }

    private void StartWorker()
    {
        _stopRequested = false;
        // Not disposed: a transport may still hold the old token; a source without timers needs no disposal.
        if (_cancel.IsCancellationRequested) _cancel = new CancellationTokenSource();
        _worker = new Thread(Run) { IsBackground = true, Name = $"vq{Index.Value}" };
        _worker.Start();
    }

    /// <summary>Wakes the worker to look at the avail ring (after SET_VRING_ENABLE or a memory table change).</summary>
    public void Wake() => Libc.EventFdSignal(_control);

    /// <summary>
    /// Stops the worker; when <paramref name="drain"/> waits up to <paramref name="drainTimeout"/> for requests
    /// in flight to be completed (GET_VRING_BASE drains), then drops whatever is left: a later reply for it is
    /// ignored and nothing is written to the ring after this returns.
    /// </summary>
    public void Stop(bool drain, TimeSpan drainTimeout)
    {
        Pause();
        if (drain && Volatile.Read(ref _inFlight) > 0)
        {
            var deadline = Environment.TickCount64 + (long)drainTimeout.TotalMilliseconds;
            // With the worker gone, this thread collects the replies of a polled transport.
            var polled = _device.Transport as IPolledFuseTransport;
            while (Volatile.Read(ref _inFlight) > 0 && Environment.TickCount64 < deadline)
            {
                if (polled?.Poll(Index) > 0) continue;
                Thread.Sleep(1);
            }
            if (Volatile.Read(ref _inFlight) > 0) VdevLog.DrainTimeout(_log, Index.Value, Volatile.Read(ref _inFlight), (int)drainTimeout.TotalMilliseconds);
        }
        lock (_usedLock)
        {
            _generation++;
            _heldBack = false;
        }
        foreach (var r in _slots)
            if (r != null && Interlocked.CompareExchange(ref r.State, SlotBusy, SlotInFlight) == SlotInFlight)
                ReleaseSlot(r);
        _view?.Table.Release();
        _view = null;
    }

    /// <summary>
    /// Stops the worker thread only: requests in flight stay in flight and complete normally. Used to swap the
    /// kick fd or ring addresses of a running ring, followed by <see cref="Resume"/>.
    /// </summary>
    public void Pause()
    {
        if (_worker == null) return;
        _stopRequested = true;
        // A Submit blocked on a full ring must give up, or stopping the ring would wait on the daemon.
        _cancel.Cancel();
        Libc.EventFdSignal(_control);
        _worker.Join();
        _worker = null;
        Libc.EventFdDrain(_control);
    }

    /// <summary>Restarts a paused worker, re-translating the ring addresses.</summary>
    public void Resume()
    {
        if (_worker != null) return;
        var old = _view;
        lock (_usedLock) _view = null;
        old?.Table.Release();
        StartWorker();
    }

    /// <summary>Releases the queue's descriptors and its cancellation source; the ring must be stopped and reset.</summary>
    public void Dispose()
    {
        _control.Dispose();
        _cancel.Dispose();
    }

    /// <summary>Returns the queue to its initial state (RESET_DEVICE, disconnect); the ring must be stopped.</summary>
    public void Reset()
    {
        Size = 0;
        AddressSet = false;
        DescAddr = AvailAddr = UsedAddr = 0;
        LastAvail = 0;
        _usedIdx = 0;
        Kick?.Dispose(); Kick = null;
        Call?.Dispose(); Call = null;
        Err?.Dispose(); Err = null;
        Enabled = false;
        _broken = false;
    }

    private void Run()
    {
        _replySpinTicks = (long)(_device.ReplySpin.TotalSeconds * Stopwatch.Frequency);
        // Beside the daemon's dispatcher for the same queue, which the daemon pins to the same CPU. A CPU that cannot
        // be had leaves the queue served where the scheduler puts it.
        int queueCpu = -1;
        if (!Index.IsHiprio && _device.QueueCpus is { } cpus)
        {
            queueCpu = cpus.CpuOf(Index.Value);
            if (!QueueCpus.TryPinCurrentThread(queueCpu, out int errno)) VdevLog.WorkerNotPinned(_log, Index.Value, queueCpu, errno);
        }
        // Polling for replies pays only while the daemon's dispatcher can produce them on another CPU: on this
        // worker's CPU it could not run until the poll ends.
        if (_replySpinTicks != 0 && _device.Transport is IPolledFuseTransport peer && !SpinPolicy.CurrentThreadCanSpinFor(peer.PeerPid, queueCpu))
            _replySpinTicks = 0;
        try
        {
            // Entries may already be waiting (restart after SET_VRING_BASE, or kicks sent before the fd).
            if (Enabled) ProcessAvail();
            var kick = Kick!;
            var polled = _device.Transport as IPolledFuseTransport;
            while (true)
            {
                int replyFd = -1, peerExitFd = -1;
                _replySleepSkippedAt = 0;
                if (polled != null)
                {
                    // Replies first: they free the chains the driver is waiting for.
                    if (polled.Poll(Index) > 0 || AwaitReplyBriefly(polled) || !polled.ArmWakeup(Index, out replyFd, out peerExitFd))
                    {
                        if (_stopRequested) return;
                        if (Enabled && !_broken) ProcessAvail();
                        continue;
                    }
                }
                int ready = Libc.WaitAny(kick, _control, replyFd, peerExitFd);
                if (replyFd >= 0) polled!.DisarmWakeup(Index, replyRang: (ready & 4) != 0, peerExited: (ready & 8) != 0);
                if (_replySleepSkippedAt != 0)
                {
                    // A reply that came within a poll's length would have been found by the poll skipped.
                    if ((ready & 4) != 0 && Stopwatch.GetTimestamp() - _replySleepSkippedAt <= _replySpinTicks) _replySpins.AnsweredSoon();
                    _replySleepSkippedAt = 0;
                }
                if (_stopRequested) return;
                if ((ready & 1) != 0) Libc.EventFdDrain(kick);
                if ((ready & 2) != 0) Libc.EventFdDrain(_control);
                if (Enabled && !_broken) ProcessAvail();
            }
        }
        catch (Exception e)
        {
            VdevLog.WorkerCrashed(_log, Index.Value, e);
            _broken = true;
        }
    }

    /// <summary>Most requests in flight for which the worker polls for a reply before sleeping (<see cref="AwaitReplyBriefly"/>).</summary>
    public const int ReplySpinMaxInFlight = 2;

    /// <summary>
    /// Largest request or reply (bytes) whose answer the worker polls for: moving more takes the daemon longer
    /// than the spin, so the spin would only burn the CPU.
    /// </summary>
    public const int ReplySpinMaxBytes = 16 << 10;

    /// <summary>
    /// The worker spins for replies at most one part in this many of the time that passes (an eighth of a CPU).
    /// </summary>
    public const int ReplySpinCpuShare = 8;

    /// <summary>
    /// With one or two small requests in flight, the guest is most likely waiting on them: polls for their replies
    /// for up to <see cref="VirtioFsDevice.ReplySpin"/>, giving the CPU away between looks (the daemon producing the
    /// reply may need this very CPU), and returns true as soon as one was delivered. Sleeping instead costs the
    /// reply a wake-up of this thread. With more in flight it returns false at once: under load the daemon needs
    /// the CPU more than this thread needs the head start, and the next kick or reply comes soon anyway. It does
    /// the same when the last request submitted moves more than <see cref="ReplySpinMaxBytes"/>, once it has
    /// spun for more than its share of the time (<see cref="ReplySpinCpuShare"/>), and while its recent polls ran out
    /// without a reply (<see cref="SpinHistory"/>: the daemon answers later than the poll lasts, e.g. because the CPU
    /// it was woken on is busy, and each poll only takes CPU time from the guest's vCPUs).
    /// </summary>
    private bool AwaitReplyBriefly(IPolledFuseTransport polled)
    {
        long spin = _replySpinTicks;
        int inFlight = Volatile.Read(ref _inFlight);
        if (spin == 0 || inFlight == 0 || inFlight > ReplySpinMaxInFlight || _lastSubmittedLarge) return false;
        long start = Stopwatch.GetTimestamp();
        if (!_replySpins.NextWaitSpins())
        {
            _replySleepSkippedAt = start;
            return false;
        }
        // Spin time is earned at a fixed share of the time that passes, so that a steady stream of requests that
        // each find the queue nearly empty cannot turn the worker into a busy loop.
        _spinCredit.Earn(start, 4 * spin);
        if (!_spinCredit.Charge(start)) return false;
        long until = start + spin;
        while (true)
        {
            Thread.Yield();
            bool delivered = polled.Poll(Index) > 0;
            long now = Stopwatch.GetTimestamp();
            bool charged = _spinCredit.Charge(now);
            if (delivered)
            {
                _replySpins.Found();
                return true;
            }
            if (!charged || now >= until || _stopRequested)
            {
                _replySpins.RanOut();
                return false;
            }
        }
    }

    private void MarkBroken(string reason)
    {
        _broken = true;
        VdevLog.QueueBroken(_log, Index.Value, reason);
    }

    /// <summary>Translates the ring through the current memory table when it changed; false (and broken) when outside.</summary>
    private bool EnsureView(GuestMemoryTable mem)
    {
        if (_view != null && ReferenceEquals(_view.Table, mem)) return true;
        int n = Size;
        if (!mem.TryFrontEnd(DescAddr, (ulong)SplitVirtqueue.DescTableBytes(n), out var d)
            || !mem.TryFrontEnd(AvailAddr, (ulong)SplitVirtqueue.AvailRingBytes(n), out var a)
            || !mem.TryFrontEnd(UsedAddr, (ulong)SplitVirtqueue.UsedRingBytes(n), out var u))
        {
            MarkBroken($"ring addresses desc 0x{DescAddr:x} avail 0x{AvailAddr:x} used 0x{UsedAddr:x} (size {n}) are not inside the memory table");
            return false;
        }
        if (((ulong)d & (SplitVirtqueue.DescAlign - 1)) != 0 || ((ulong)a & (SplitVirtqueue.AvailAlign - 1)) != 0 || ((ulong)u & (SplitVirtqueue.UsedAlign - 1)) != 0)
        {
            MarkBroken("ring parts are not aligned as virtio 2.7 requires");
            return false;
        }
        mem.TryAddRef();
        var old = _view;
        RingView view = new(mem, d, a, u);
        lock (_usedLock)
        {
            _view = view;
            if (!_usedIdxKnown)
            {
                // Safe: `u` was validated above to hold the whole used ring.
                _usedIdx = Volatile.Read(ref *(ushort*)(u + SplitVirtqueue.UsedIdxOffset));
                _usedIdxKnown = true;
            }
        }
        old?.Table.Release();
        return true;
    }

    private bool EventIdx => (_device.Features & VirtioFeatures.RingEventIdx) != 0;

    private void ProcessAvail()
    {
        var mem = _device.AcquireMemory();
        _submitted = false;
        try
        {
            if (!EnsureView(mem)) return;
            var view = _view!;
            // Safe (all pointer arithmetic below): view's three parts were bounds-checked for Size entries in EnsureView,
            // and every index is reduced modulo Size (a power of two) before use.
            ushort* availIdx = (ushort*)(view.Avail + SplitVirtqueue.AvailIdxOffset);
            ushort* usedFlags = (ushort*)(view.Used + SplitVirtqueue.UsedFlagsOffset);
            ushort* availEvent = (ushort*)(view.Used + SplitVirtqueue.AvailEventOffset(Size));
            bool eventIdx = EventIdx;
            while (true)
            {
                if (!eventIdx) Volatile.Write(ref *usedFlags, SplitVirtqueue.UsedFlagNoNotify);
                while (!_stopRequested && !_broken)
                {
                    ushort idx = Volatile.Read(ref *availIdx);
                    ushort pending = (ushort)(idx - LastAvail);
                    if (pending == 0) break;
                    if (pending > Size)
                    {
                        MarkBroken($"avail index {idx} is more than the queue size ahead of {LastAvail}");
                        return;
                    }
                    ushort head = Volatile.Read(ref *(ushort*)(view.Avail + SplitVirtqueue.AvailRingEntryOffset(LastAvail & (Size - 1))));
                    LastAvail++;
                    // With EVENT_IDX the device asks to be kicked once the driver passes what it has consumed.
                    if (eventIdx) Volatile.Write(ref *availEvent, LastAvail);
                    HandleChain(view, head);
                }
                if (_stopRequested || _broken) return;
                if (eventIdx) Volatile.Write(ref *availEvent, LastAvail);
                else Volatile.Write(ref *usedFlags, (ushort)0);
                // Full barrier: publishing avail_event / clearing NO_NOTIFY must be visible before re-reading
                // avail->idx, or a kick sent in between is lost (virtio 2.7.10 / 2.7.7.2).
                Interlocked.MemoryBarrier();
                if (Volatile.Read(ref *availIdx) == LastAvail) return;
            }
        }
        finally
        {
            if (_submitted) _device.Transport.Flush(Index);
            mem.Release();
        }
    }

    private void HandleChain(RingView view, ushort head)
    {
        if (head >= Size)
        {
            MarkBroken($"avail ring names head descriptor {head}, outside a queue of {Size}");
            return;
        }
        var req = _slots[head] ??= new VirtqueueRequest();
        if (Volatile.Read(ref req.State) != SlotFree)
        {
            MarkBroken($"the driver made head descriptor {head} available again while it is still in flight");
            return;
        }
        req.ResetChain();
        var error = WalkChain(view, head, req);
        if (error == null && !req.CaptureHeader()) error = "request shorter than a fuse_in_header";
        if (error != null)
        {
            // A hostile guest can send bad chains forever: log the first ones and then every 1000th.
            long bad = ++_rejectedChains;
            if (bad <= 10 || bad % 1000 == 0) VdevLog.BadChain(_log, Index.Value, head, error, bad);
            PushUsed(view, _generation, head, 0);
            return;
        }
        if (_log.IsEnabled(LogLevel.Debug)) VdevLog.Request(_log, Index.Value, req.Opcode, req.Unique, req.ReadableLength, req.WritableLength);
        if (_device.TransportIsDown)
        {
            PushUsed(view, _generation, head, req.ExpectsReply ? req.WriteError(-Libc.EIO) : 0);
            return;
        }
        view.Table.TryAddRef();
        req.Memory = view.Table;
        req.View = view;
        req.Head = head;
        req.Queue = Index;
        req.Generation = _generation;
        req.Cancellation = _cancel.Token;
        req.Tag = ((ulong)_generation << 32) | ((ulong)Index.Value << 16) | head;
        Interlocked.Increment(ref _inFlight);
        _lastSubmittedLarge = Math.Max(req.ReadableLength, req.WritableLength) > ReplySpinMaxBytes;
        Volatile.Write(ref req.State, SlotInFlight);
        bool delivered;
        _submitted = true;
        try
        {
            delivered = _device.Transport.Submit(req);
        }
        catch (Exception e)
        {
            // The device boundary: a transport bug must not take the queue down. The guest gets EIO.
            VdevLog.SubmitFailed(_log, Index.Value, req.Opcode, req.Unique, e);
            delivered = false;
        }
        if (!req.ExpectsReply || !delivered)
        {
            if (Interlocked.CompareExchange(ref req.State, SlotBusy, SlotInFlight) != SlotInFlight) return;
            int written = req.ExpectsReply ? req.WriteError(-Libc.EIO) : 0;
            FinishSlot(req, written);
        }
    }

    /// <summary>
    /// Walks the chain at <paramref name="head"/> into <paramref name="req"/>'s segments; returns null when it
    /// obeys every rule of virtio 2.7.5 / 2.7.5.3, else the rule it broke.
    /// </summary>
    private string? WalkChain(RingView view, ushort head, VirtqueueRequest req)
    {
        var mem = view.Table;
        byte* table = view.Desc;
        int tableSize = Size;
        bool indirect = false;
        bool indirectAllowed = (_device.Features & VirtioFeatures.RingIndirectDesc) != 0;
        bool seenWritable = false;
        int count = 0;
        long readable = 0, writable = 0;
        int i = head;
        while (true)
        {
            if (i >= tableSize) return $"next index {i} outside a table of {tableSize}";
            // Each table is walked at most its own length: a longer walk must revisit an entry (a loop).
            if (++count > tableSize) return indirect ? "loop or over-long chain in an indirect table" : "loop or chain longer than the queue size";
            // Safe: i < tableSize and the table (ring or indirect) was validated for tableSize entries.
            // Read the descriptor once: the guest may rewrite it while we look.
            var d = Unsafe.ReadUnaligned<VirtqDesc>(table + (long)i * VirtqDesc.Size);
            if ((d.Flags & VirtqDescFlags.Indirect) != 0)
            {
                if (!indirectAllowed) return "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
                if (indirect) return "nested indirect descriptor";
                if ((d.Flags & VirtqDescFlags.Next) != 0) return "indirect descriptor with NEXT";
                if (d.Len == 0 || d.Len % VirtqDesc.Size != 0) return $"indirect table length {d.Len} is not a non-zero multiple of 16";
                if (d.Len / VirtqDesc.Size > MaxIndirectEntries) return $"indirect table of {d.Len / VirtqDesc.Size} entries";
                if (!mem.TryGuest(d.Addr, d.Len, out var t)) return $"indirect table 0x{d.Addr:x}+{d.Len} outside guest memory";
                table = t;
                tableSize = (int)(d.Len / VirtqDesc.Size);
                indirect = true;
                count = 0;
                i = 0;
                continue;
            }
            bool isWrite = (d.Flags & VirtqDescFlags.Write) != 0;
            if (isWrite) seenWritable = true;
            else if (seenWritable) return "device-readable descriptor after a device-writable one";
            if (isWrite) writable += d.Len; else readable += d.Len;
            if (readable > int.MaxValue || writable > int.MaxValue) return "chain carries more than 2 GiB";
            ulong addr = d.Addr, left = d.Len;
            if (left == 0 && !mem.TryGuest(addr, 0, out _)) return $"buffer 0x{addr:x}+0 outside guest memory";
            while (left > 0)
            {
                // A buffer may continue into a region that follows it directly in guest-physical space.
                if (!mem.TryGuestPrefix(addr, left, out var host, out var n)) return $"buffer 0x{d.Addr:x}+{d.Len} outside guest memory";
                var seg = new GuestBuffer(host, (int)n, addr);
                if (isWrite) req.AddWritable(seg); else req.AddReadable(seg);
                addr += n;
                left -= n;
            }
            if ((d.Flags & VirtqDescFlags.Next) == 0) return null;
            i = d.Next;
        }
    }

    /// <summary>Completes an in-flight request the transport answered; false when the tag is stale or unknown.</summary>
    public bool Complete(ushort head, ulong tag, ReadOnlySpan<byte> reply, bool notify = true)
    {
        var slots = _slots;
        if (head >= slots.Length) return false;
        var req = slots[head];
        if (req == null || req.Tag != tag) return false;
        if (Interlocked.CompareExchange(ref req.State, SlotBusy, SlotInFlight) != SlotInFlight) return false;
        if (req.Tag != tag) { Volatile.Write(ref req.State, SlotInFlight); return false; }
        int written = req.DirectReadCapacity > 0 && reply.Length == VirtqueueRequest.OutHeaderSize ? DirectReadLength(req, reply) : req.Scatter(reply);
        if (written < 0)
        {
            VdevLog.ReplyTooLarge(_log, Index.Value, reply.Length, req.Unique, req.WritableLength);
            written = req.WriteError(-Libc.EIO);
        }
        FinishSlot(req, written, notify);
        return true;
    }

    /// <summary>
    /// The used length of a request whose reply payload (a READ's data, a listing, an attribute value) the daemon wrote
    /// into the chain itself: it sent the out header alone, whose
    /// <c>len</c> counts the data too. The header goes into the chain; a length the chain cannot hold (the daemon
    /// claims more than it was allowed to write) becomes -1, which the caller answers with EIO.
    /// </summary>
    private static int DirectReadLength(VirtqueueRequest req, ReadOnlySpan<byte> header)
    {
        uint len = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(header);
        int error = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
        if (error != 0) return req.Scatter(header);
        if (len < (uint)VirtqueueRequest.OutHeaderSize || len - (uint)VirtqueueRequest.OutHeaderSize > (uint)req.DirectReadCapacity) return -1;
        return req.Scatter(header) < 0 ? -1 : (int)len;
    }

    /// <summary>Answers every in-flight request with EIO (the transport died); returns how many.</summary>
    public int FailAll()
    {
        int n = 0;
        foreach (var req in _slots)
        {
            if (req == null || Interlocked.CompareExchange(ref req.State, SlotBusy, SlotInFlight) != SlotInFlight) continue;
            FinishSlot(req, req.ExpectsReply ? req.WriteError(-Libc.EIO) : 0);
            n++;
        }
        return n;
    }

    /// <summary>Frees the slot, then returns the chain: the driver may reuse the head as soon as it sees it used.</summary>
    private void FinishSlot(VirtqueueRequest req, int written, bool notify = true)
    {
        var view = req.View!;
        var gen = req.Generation;
        var head = req.Head;
        req.View = null;
        req.Memory = null;
        Volatile.Write(ref req.State, SlotFree);
        PushUsed(view, gen, head, written, notify);
        Interlocked.Decrement(ref _inFlight);
        view.Table.Release();
    }

    private void ReleaseSlot(VirtqueueRequest req)
    {
        var table = req.Memory;
        req.View = null;
        req.Memory = null;
        Volatile.Write(ref req.State, SlotFree);
        Interlocked.Decrement(ref _inFlight);
        table?.Release();
    }

    /// <summary>
    /// Puts one used element and, when <paramref name="notify"/>, notifies the driver unless suppressed (used_event
    /// with EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT without); otherwise the interrupt waits for
    /// <see cref="NotifyHeldBack"/>. Nothing is written once the ring was stopped after the chain was popped.
    /// </summary>
    private void PushUsed(RingView view, uint generation, ushort head, int written, bool notify = true)
    {
        bool signal;
        lock (_usedLock)
        {
            if (generation != _generation) return;
            int size = Size;
            ushort old = _usedIdx;
            // Safe: the view's used ring was validated for `size` entries and stays mapped while the caller holds its table.
            byte* elem = view.Used + SplitVirtqueue.UsedRingEntryOffset(old & (size - 1));
            Unsafe.WriteUnaligned(elem, new VirtqUsedElem { Id = head, Len = (uint)written });
            ushort next = (ushort)(old + 1);
            _usedIdx = next;
            // Release: the element must be visible before the index that publishes it (virtio 2.7.8.2).
            Volatile.Write(ref *(ushort*)(view.Used + SplitVirtqueue.UsedIdxOffset), next);
            if (!_heldBack)
            {
                _heldBack = true;
                _heldBackFrom = old;
            }
            if (!notify) return;
            signal = NeedsInterrupt(view);
        }
        if (signal) Signal();
    }

    /// <summary>Raises the interrupt that quiet completions held back, unless the driver suppresses it.</summary>
    public void NotifyHeldBack()
    {
        bool signal;
        lock (_usedLock)
        {
            // Under the lock a non-null view is still referenced: Stop, Resume and EnsureView clear or replace
            // it under this lock before they release its table.
            if (!_heldBack) return;
            var view = _view;
            if (view == null)
            {
                // Paused mid-batch: an interrupt the driver did not need is harmless, a missing one is not.
                _heldBack = false;
                signal = true;
            }
            else signal = NeedsInterrupt(view);
        }
        if (signal) Signal();
    }

    /// <summary>Decides the interrupt for the used entries published since the last decision; under _usedLock.</summary>
    private bool NeedsInterrupt(RingView view)
    {
        _heldBack = false;
        // Full barrier: the index write must be visible before reading used_event / flags (2.7.10).
        Interlocked.MemoryBarrier();
        // Safe: the view's avail ring was validated for Size entries and is referenced while the caller holds it.
        if (EventIdx)
        {
            ushort usedEvent = Volatile.Read(ref *(ushort*)(view.Avail + SplitVirtqueue.UsedEventOffset(Size)));
            return SplitVirtqueue.NeedEvent(usedEvent, _usedIdx, _heldBackFrom);
        }
        return (Volatile.Read(ref *(ushort*)(view.Avail + SplitVirtqueue.AvailFlagsOffset)) & SplitVirtqueue.AvailFlagNoInterrupt) == 0;
    }

    private void Signal()
    {
        var call = Call;
        if (call == null) return;
        try
        {
            int e = Libc.EventFdSignal(call);
            if (e != 0) VdevLog.CallFailed(_log, Index.Value, e);
        }
        catch (ObjectDisposedException)
        {
            // SET_VRING_CALL replaced the fd concurrently; the new one is signalled by the next completion.
        }
    }
}
