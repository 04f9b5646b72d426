using Hypervisor.Interop;

namespace Hypervisor.Vdev.Tests.Frontend;

/// <summary>
/// Guest RAM for tests: a memfd mapped MAP_SHARED here and handed to the backend with SET_MEM_TABLE or
/// ADD_MEM_REG, as QEMU does with <c>memory-backend-memfd,share=on</c>. Guest-physical addresses start at
/// <see cref="GuestBase"/>; the front-end's "userspace address" is the real address of the local mapping.
/// A bump allocator hands out ring and buffer space.
/// </summary>
public sealed unsafe class GuestRam : IDisposable
{
    private readonly byte* _host;
    private long _next;

    /// <summary>The memfd (owned).</summary>
    public int Fd { get; }
    /// <summary>Guest-physical address of the first byte.</summary>
    public ulong GuestBase { get; }
    /// <summary>Size in bytes.</summary>
    public long Size { get; }
    /// <summary>The front-end virtual address of the first byte (sent as userspace_addr).</summary>
    public ulong UserAddr => (ulong)_host;

    /// <summary>The memfd's name (shows in /proc/PID/maps as <c>/memfd:NAME</c>).</summary>
    public string Name { get; }

    public GuestRam(long size, ulong guestBase = 0x1000_0000, string name = "guest-ram")
    {
        Name = name;
        Fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC);
        if (Fd < 0) throw FrontendFds.Error("memfd_create");
        if (Libc.ftruncate(Fd, size) < 0) throw FrontendFds.Error("ftruncate");
        nint p = Libc.mmap(0, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, Fd, 0);
        if (p == Libc.MAP_FAILED) throw FrontendFds.Error("mmap");
        _host = (byte*)p;
        Size = size;
        GuestBase = guestBase;
    }

    /// <summary>True when [gpa, gpa+len) lies in this RAM.</summary>
    public bool Contains(ulong gpa, long len) => gpa >= GuestBase && gpa - GuestBase <= (ulong)Size && (ulong)len <= (ulong)Size - (gpa - GuestBase);

    /// <summary>The bytes at guest-physical <paramref name="gpa"/>.</summary>
    public Span<byte> At(ulong gpa, int length)
    {
        if (!Contains(gpa, length)) throw new ArgumentOutOfRangeException(nameof(gpa), $"0x{gpa:x}+{length} is outside guest RAM");
        // Safe: the range was checked against the mapping just above.
        return new Span<byte>(_host + (gpa - GuestBase), length);
    }

    /// <summary>Allocates <paramref name="length"/> zeroed bytes aligned to <paramref name="align"/>; returns the guest-physical address.</summary>
    public ulong Alloc(long length, int align = 64)
    {
        long start = (_next + align - 1) & ~(long)(align - 1);
        if (start + length > Size) throw new InvalidOperationException($"guest RAM of {Size} bytes is exhausted");
        _next = start + length;
        new Span<byte>(_host + start, checked((int)length)).Clear();
        return GuestBase + (ulong)start;
    }

    public void Dispose()
    {
        Libc.munmap((nint)_host, (nuint)Size);
        Libc.close(Fd);
    }
}
