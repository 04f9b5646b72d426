using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Virtio;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Device;

/// <summary>
/// The virtio-fs device state behind one vhost-user connection: negotiated features, the memory table,
/// queue 0 (hiprio) and the request queues, and the share's transport. Receives the transport's replies.
/// </summary>
internal sealed class VirtioFsDevice : IFuseCompletionSink, IDisposable
{
    private readonly ILogger _log;
    private GuestMemoryTable _memory = GuestMemoryTable.Empty;
    private int _transportDown;
    private IFuseTransport? _transport;

    /// <summary>The config space served by GET_CONFIG; null when no tag was configured (CONFIG is then not offered).</summary>
    public VirtioFsConfig? Config { get; }
    public Virtqueue[] Queues { get; }
    /// <summary>Largest queue size SET_VRING_NUM may ask for.</summary>
    public int MaxQueueSize { get; }
    /// <summary>Virtio features acknowledged by SET_FEATURES.</summary>
    public ulong Features;
    /// <summary>How long a worker polls for replies before sleeping while few requests are in flight (<see cref="VhostUser.DeviceOptions.ReplySpin"/>).</summary>
    public TimeSpan ReplySpin { get; init; }
    /// <summary>The CPU of each request queue's worker (<see cref="VhostUser.DeviceOptions.QueueCpus"/>); null: not pinned.</summary>
    public Hypervisor.Protocol.Share.QueueCpus? QueueCpus { get; init; }
    public IFuseTransport Transport => _transport ?? throw new InvalidOperationException("transport not attached");
    public bool TransportIsDown => Volatile.Read(ref _transportDown) != 0;

    public VirtioFsDevice(string? tag, int requestQueues, int maxQueueSize, ILogger log)
    {
        Config = tag == null ? null : new VirtioFsConfig(tag, (uint)requestQueues);
        MaxQueueSize = maxQueueSize;
        _log = log;
        Queues = new Virtqueue[1 + requestQueues];
        for (int i = 0; i < Queues.Length; i++) Queues[i] = new Virtqueue(this, new QueueIndex((ushort)i), log);
    }

    public void AttachTransport(IFuseTransport transport) => _transport = transport;

    /// <summary>The current memory table with a reference taken; the caller releases it.</summary>
    public GuestMemoryTable AcquireMemory()
    {
        while (true)
        {
            var m = Volatile.Read(ref _memory);
            if (m.TryAddRef()) return m;
        }
    }

    /// <summary>The current memory table without a reference (control thread only, which is the only writer).</summary>
    public GuestMemoryTable CurrentMemory => _memory;

    /// <summary>Installs a new memory table (taking over the caller's reference) and releases the old one.</summary>
    public void ReplaceMemory(GuestMemoryTable table)
    {
        var old = Interlocked.Exchange(ref _memory, table);
        old.Release();
        if (table.RegionCount > 0 && _transport is IGuestMemoryTransport direct) direct.MemoryReplaced(table);
        foreach (var q in Queues) if (q.Started) q.Wake();
    }

    public bool Complete(ulong tag, ReadOnlySpan<byte> reply) => Complete(tag, reply, notify: true);

    public bool CompleteQuietly(ulong tag, ReadOnlySpan<byte> reply) => Complete(tag, reply, notify: false);

    private bool Complete(ulong tag, ReadOnlySpan<byte> reply, bool notify)
    {
        int q = (int)((tag >> 16) & 0xffff);
        return q < Queues.Length && Queues[q].Complete((ushort)tag, tag, reply, notify);
    }

    public void NotifyGuest(QueueIndex queue)
    {
        if (queue.Value < Queues.Length) Queues[queue.Value].NotifyHeldBack();
    }

    public void TransportFailed(string reason)
    {
        bool first = Interlocked.Exchange(ref _transportDown, 1) == 0;
        int n = 0;
        foreach (var q in Queues) n += q.FailAll();
        if (first) VdevLog.TransportFailed(_log, reason, n);
    }

    /// <summary>Stops every ring without draining and forgets all state (RESET_DEVICE, RESET_OWNER, disconnect).</summary>
    public void Reset()
    {
        foreach (var q in Queues)
        {
            q.Stop(drain: false, TimeSpan.Zero);
            q.Reset();
        }
        Features = 0;
        ReplaceMemory(GuestMemoryTable.Empty);
    }

    public void Dispose()
    {
        Reset();
        _transport?.Dispose();
        foreach (var q in Queues) q.Dispose();
    }
}
