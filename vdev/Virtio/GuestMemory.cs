using Hypervisor.Protocol.VhostUser;
using Hypervisor.Interop;

namespace Hypervisor.Vdev.Virtio;

/// <summary>
/// One region of guest RAM from the memory table, mapped MAP_SHARED once. Shared by every
/// <see cref="GuestMemoryTable"/> that lists it (ADD_MEM_REG builds a new table from the old one's regions),
/// unmapped when the last table holding it is released.
/// </summary>
internal sealed unsafe class MappedRegion
{
    private readonly nint _mapBase;
    private readonly nuint _mapLength;
    private readonly SafeFd _fd;
    private int _refs = 1;

    public VhostUserMemoryRegion Description { get; }
    /// <summary>Host address of guest-physical <c>GuestPhysAddr</c> (mapping base + mmap_offset).</summary>
    public byte* Host { get; }

    /// <summary>
    /// The region's own descriptor (a close-on-exec duplicate of the front-end's), kept while the region is mapped so
    /// that the region can be handed to the daemon with every later table that lists it.
    /// </summary>
    public SafeFd Fd => _fd;

    private MappedRegion(VhostUserMemoryRegion d, nint mapBase, nuint mapLength, SafeFd fd)
    {
        Description = d;
        _fd = fd;
        _mapBase = mapBase;
        _mapLength = mapLength;
        Host = (byte*)mapBase + d.MmapOffset;
    }

    /// <summary>
    /// Maps <paramref name="fd"/> from offset 0 through mmap_offset + size, as libvhost-user does: the
    /// offset need not be aligned to the backing's (possibly huge) page size, mapping from 0 always is.
    /// </summary>
    public static MappedRegion Map(VhostUserMemoryRegion d, SafeFd fd)
    {
        ulong length = d.MmapOffset + d.MemorySize;
        if (length > (ulong)nint.MaxValue)
            throw new InvalidDataException($"memory region at guest 0x{d.GuestPhysAddr:x} is too large to map (0x{length:x} bytes)");
        int copy = Libc.fcntl(fd.Value, Libc.F_DUPFD_CLOEXEC, 0);
        if (copy < 0) throw SyscallException.Last($"dup of the descriptor of guest memory region 0x{d.GuestPhysAddr:x}");
        var own = new SafeFd(copy);
        nint p = Libc.mmap(0, (nuint)length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
        if (p == Libc.MAP_FAILED)
        {
            var e = SyscallException.Last($"mmap of guest memory region 0x{d.GuestPhysAddr:x}+0x{d.MemorySize:x}");
            own.Dispose();
            throw e;
        }
        return new MappedRegion(d, p, (nuint)length, own);
    }

    public void AddRef() => Interlocked.Increment(ref _refs);

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        Libc.munmap(_mapBase, _mapLength);
        _fd.Dispose();
    }
}

/// <summary>
/// An immutable snapshot of the memory table. Every guest access goes through <see cref="TryGuest"/> or
/// <see cref="TryFrontEnd"/>, which succeed only when the whole range lies inside one mapped region.
/// Reference-counted: the device holds one reference for the current table, and each queue batch and
/// each in-flight request holds one, so a table replaced by SET_MEM_TABLE or REM_MEM_REG stays mapped
/// until nothing can touch it any more.
/// </summary>
internal sealed unsafe class GuestMemoryTable
{
    private static long s_lastGeneration;
    private readonly MappedRegion[] _regions;
    private int _refs = 1;
    private volatile object? _mappedBy;
    private Action<ulong>? _released;

    public static readonly GuestMemoryTable Empty = new([]);

    public GuestMemoryTable(MappedRegion[] regions)
    {
        _regions = regions;
        Generation = (ulong)Interlocked.Increment(ref s_lastGeneration);
    }

    /// <summary>
    /// This table's number, unique in the process and growing with each table made: a frame whose payload stays in
    /// guest memory names the table its addresses were checked against.
    /// </summary>
    public ulong Generation { get; }

    /// <summary>
    /// True once the daemon behind <paramref name="daemon"/> (the transport that handed it the table) acknowledged that
    /// it mapped this table: only then may that transport's frames name it. Until then (and when it never does), and on
    /// any other transport, requests of this table carry their payload in the ring. Per transport because a daemon
    /// that replaces a dead one (vdev/README.md, "Surviving a daemon crash") has mapped only what it was handed itself.
    /// </summary>
    public bool IsMappedBy(object daemon) => ReferenceEquals(_mappedBy, daemon);

    /// <summary>
    /// Arranges that <paramref name="released"/> runs with <see cref="Generation"/> once the last reference is
    /// released (the table was replaced and no request that could name it is in flight); set before the table is
    /// announced to the daemon.
    /// </summary>
    public void OnReleased(Action<ulong> released) => _released = released;

    /// <summary>Records the acknowledgement of the daemon behind <paramref name="daemon"/> (see <see cref="IsMappedBy"/>); the last one counts.</summary>
    public void MarkDaemonMapped(object daemon) => _mappedBy = daemon;

    public int RegionCount => _regions.Length;
    public IReadOnlyList<MappedRegion> Regions => _regions;

    /// <summary>Takes a reference unless the table has already been released (then false).</summary>
    public bool TryAddRef()
    {
        if (ReferenceEquals(this, Empty)) return true;
        int r = Volatile.Read(ref _refs);
        while (r > 0)
        {
            int seen = Interlocked.CompareExchange(ref _refs, r + 1, r);
            if (seen == r) return true;
            r = seen;
        }
        return false;
    }

    public void Release()
    {
        if (ReferenceEquals(this, Empty)) return;
        if (Interlocked.Decrement(ref _refs) != 0) return;
        foreach (var r in _regions) r.Release();
        _released?.Invoke(Generation);
    }

    /// <summary>
    /// Translates guest-physical [<paramref name="gpa"/>, +<paramref name="length"/>) when it lies inside one
    /// region. A zero length must still name an address inside a region.
    /// </summary>
    public bool TryGuest(ulong gpa, ulong length, out byte* host) => TryGuestPrefix(gpa, length, out host, out var available) && available == length;

    /// <summary>
    /// Like <see cref="TryGuest"/> but allows the range to continue into a region that follows it directly in
    /// guest-physical space; returns the length available in the first region (at most <paramref name="length"/>).
    /// Used to split one descriptor across adjacent regions into several segments.
    /// </summary>
    public bool TryGuestPrefix(ulong gpa, ulong length, out byte* host, out ulong available) =>
        TryPrefix(gpa, length, frontEnd: false, out host, out available);

    /// <summary>Translates a front-end virtual address range (vring addresses) when it lies inside one region.</summary>
    public bool TryFrontEnd(ulong va, ulong length, out byte* host) =>
        TryPrefix(va, length, frontEnd: true, out host, out var available) && available == length;

    private bool TryPrefix(ulong address, ulong length, bool frontEnd, out byte* host, out ulong available)
    {
        foreach (var r in _regions)
        {
            var d = r.Description;
            ulong start = frontEnd ? d.UserspaceAddr : d.GuestPhysAddr;
            // Overflow-free: address - start < size, and the available length is at most size - (address - start).
            if (address >= start && address - start < d.MemorySize)
            {
                host = r.Host + (address - start);
                available = Math.Min(length, d.MemorySize - (address - start));
                return true;
            }
        }
        host = null;
        available = 0;
        return false;
    }
}
