using System.Runtime.InteropServices;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Protocol.Ring;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Transport;

/// <summary>
/// The daemon's mappings of guest memory, by table generation, fed by the vdev over the ring set's guest-memory
/// channel (protocol/Ring/README.md, "Payloads in guest memory"). One thread receives tables (maps them, then
/// acknowledges) and drops; request threads acquire the table a frame names, turn the frame's ranges into buffers
/// checked against the regions mapped here, and release the table when the request is done. A table is unmapped once
/// the vdev dropped it and no request holds it, so a mapping never goes while a preadv/pwritev may use it.
/// </summary>
internal sealed unsafe partial class GuestMemoryMap : IDisposable
{
    /// <summary>One region of a table as this process mapped it.</summary>
    internal readonly record struct Region(ulong GuestPhysAddr, ulong Size, nint Host, nint MapBase, nuint MapLength);

    /// <summary>A mapped table; the map's dictionary holds one reference until the vdev drops it, each request one more.</summary>
    internal sealed class Table(ulong generation, Region[] regions)
    {
        public readonly ulong Generation = generation;
        public readonly Region[] Regions = regions;
        public int Refs = 1;
    }

    private readonly SafeHandle _channel;
    private readonly ILogger _log;
    private readonly Dictionary<ulong, Table> _tables = [];
    private readonly Thread _receiver;
    private volatile bool _stopping;

    private GuestMemoryMap(SafeHandle channel, ILogger log)
    {
        _channel = channel;
        _log = log;
        _receiver = new Thread(Receive) { IsBackground = true, Name = "guest-memory" };
    }

    /// <summary>Starts receiving tables on <paramref name="channel"/>; null when the ring set has no channel (every payload then travels in the ring).</summary>
    public static GuestMemoryMap? Start(SafeHandle? channel, ILogger log)
    {
        if (channel is null) return null;
        var map = new GuestMemoryMap(channel, log);
        map._receiver.Start();
        return map;
    }

    /// <summary>Tables mapped now (for tests).</summary>
    public int TableCount
    {
        get { lock (_tables) return _tables.Count; }
    }

    /// <summary>The table of <paramref name="generation"/> with a reference taken, or null when it is not mapped here.</summary>
    public Table? Acquire(ulong generation)
    {
        lock (_tables)
        {
            if (!_tables.TryGetValue(generation, out var table)) return null;
            table.Refs++;
            return table;
        }
    }

    /// <summary>Releases a reference from <see cref="Acquire"/>; the last one unmaps the table.</summary>
    public void Release(Table table)
    {
        bool last;
        lock (_tables) last = --table.Refs == 0;
        if (last) Unmap(table.Regions);
    }

    /// <summary>
    /// Turns the ranges of a frame (<see cref="GuestMemoryFrame.TryParse"/>) into buffers in this process: each range
    /// must be non-empty and lie inside one region of <paramref name="table"/>. False on any other range: the frame is
    /// invalid and nothing of it may be touched. <paramref name="into"/> must hold <see cref="GuestMemoryFrame.MaxRanges"/>.
    /// </summary>
    public static bool TryResolve(Table table, ReadOnlySpan<byte> ranges, Span<IoBuffer> into, out int count, out long total)
    {
        count = GuestMemoryFrame.RangeCount(ranges);
        total = 0;
        if (count > into.Length) return false;
        for (int i = 0; i < count; i++)
        {
            var range = GuestMemoryFrame.ReadRange(ranges, i);
            if (range.Length == 0 || range.Length > int.MaxValue || !TryTranslate(table.Regions, range, out nint host)) return false;
            into[i] = new IoBuffer(host, (nuint)range.Length);
            total += (long)range.Length;
        }
        return true;
    }

    private static bool TryTranslate(Region[] regions, GuestRange range, out nint host)
    {
        foreach (var r in regions)
        {
            // Overflow-free: offset < size, and the length is at most what is left of the region after offset.
            if (range.Address >= r.GuestPhysAddr && range.Address - r.GuestPhysAddr < r.Size
                && range.Length <= r.Size - (range.Address - r.GuestPhysAddr))
            {
                host = r.Host + (nint)(range.Address - r.GuestPhysAddr);
                return true;
            }
        }
        host = 0;
        return false;
    }

    private void Receive()
    {
        var buffer = new byte[GuestMemoryMessage.MaxSize];
        Span<int> fds = stackalloc int[GuestMemoryMessage.MaxRegions];
        try
        {
            while (!_stopping)
            {
                nint n = Libc.ReceiveWithFds(_channel, buffer, fds, 0, out int fdCount, out int flags);
                if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
                try
                {
                    // End of stream (the vdev is gone, or Dispose shut the channel down) or a broken socket: stop.
                    if (n <= 0) return;
                    var message = buffer.AsSpan(0, (int)n);
                    if (!GuestMemoryMessage.TryReadHeader(message, out var kind, out uint count, out ulong generation) || (flags & Libc.MSG_CTRUNC) != 0)
                    {
                        LogBadMessage((int)n, fdCount);
                        continue;
                    }
                    if (kind == GuestMemoryMessageKind.Table) Install(message, (int)count, generation, fds[..fdCount]);
                    else if (kind == GuestMemoryMessageKind.Drop) Drop(generation);
                }
                finally
                {
                    for (int i = 0; i < fdCount; i++) Libc.close(fds[i]);
                }
            }
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private void Install(ReadOnlySpan<byte> message, int count, ulong generation, ReadOnlySpan<int> fds)
    {
        int status = 0;
        if (fds.Length != count) status = Libc.EINVAL;
        var regions = new Region[count];
        int mapped = 0;
        for (; status == 0 && mapped < count; mapped++)
        {
            var d = GuestMemoryMessage.ReadRegion(message, mapped);
            ulong length = d.MmapOffset + d.Size;
            if (length > (ulong)nint.MaxValue) { status = Libc.EINVAL; break; }
            // Mapped from offset 0 (the offset need not be page aligned); the descriptor is closed after, the mapping stays.
            nint p = Libc.mmap(0, (nuint)length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fds[mapped], 0);
            if (p == Libc.MAP_FAILED) { status = Libc.LastErrno; break; }
            regions[mapped] = new Region(d.GuestPhysAddr, d.Size, p + (nint)d.MmapOffset, p, (nuint)length);
        }
        if (status == 0)
        {
            Table? replaced;
            lock (_tables)
            {
                _tables.Remove(generation, out replaced);
                _tables[generation] = new Table(generation, regions);
            }
            if (replaced is not null) Release(replaced);
            LogTableMapped(generation, count);
        }
        else
        {
            Unmap(regions.AsSpan(0, mapped));
            LogTableNotMapped(generation, status);
        }
        Span<byte> ack = stackalloc byte[GuestMemoryMessage.HeaderSize];
        GuestMemoryMessage.WriteHeader(ack, GuestMemoryMessageKind.Ack, (uint)status, generation);
        Libc.SendWithFds(_channel, ack, default, Libc.MSG_NOSIGNAL);
    }

    private void Drop(ulong generation)
    {
        Table? table;
        lock (_tables) _tables.Remove(generation, out table);
        if (table is not null) Release(table);
    }

    private static void Unmap(ReadOnlySpan<Region> regions)
    {
        foreach (var r in regions)
            if (r.MapBase != 0) Libc.munmap(r.MapBase, r.MapLength);
    }

    /// <summary>
    /// Stops receiving (the ring set's disposal shuts the channel down, which ends the receive) and unmaps the tables
    /// no request holds; call after the request threads have stopped.
    /// </summary>
    public void Dispose()
    {
        _stopping = true;
        List<Table> all;
        lock (_tables)
        {
            all = [.. _tables.Values];
            _tables.Clear();
        }
        foreach (var t in all) Release(t);
    }

    [LoggerMessage(EventId = 330, Level = LogLevel.Debug, Message = "Guest memory table {Generation} mapped ({Regions} regions)")]
    private partial void LogTableMapped(ulong generation, int regions);

    [LoggerMessage(EventId = 331, Level = LogLevel.Warning, Message = "Guest memory table {Generation} could not be mapped (errno {Errno}); its payloads travel in the ring")]
    private partial void LogTableNotMapped(ulong generation, int errno);

    [LoggerMessage(EventId = 332, Level = LogLevel.Warning, Message = "A malformed message ({Length} bytes, {Fds} descriptors) on the guest-memory channel was ignored")]
    private partial void LogBadMessage(int length, int fds);
}
