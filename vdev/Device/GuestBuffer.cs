namespace Hypervisor.Vdev.Device;

/// <summary>
/// One contiguous piece of a descriptor chain in guest memory, already bounds-checked against the memory
/// table. The span stays valid while the request that carries it is in flight (the request holds a
/// reference on the mapping), and only then. Guest memory is shared with a guest that may change it at any
/// moment: copy bytes out once and parse the copy.
/// </summary>
public readonly unsafe struct GuestBuffer
{
    private readonly byte* _host;

    /// <summary>Length in bytes.</summary>
    public int Length { get; }

    /// <summary>Guest-physical address of the first byte.</summary>
    public ulong GuestAddress { get; }

    internal GuestBuffer(byte* host, int length, ulong guestAddress = 0)
    {
        _host = host;
        Length = length;
        GuestAddress = guestAddress;
    }

    /// <summary>The bytes in guest memory.</summary>
    // Safe: constructed only from a range the memory table validated (GuestMemoryTable.TryGuest*), whose
    // mapping is kept alive by the owning request's reference.
    public Span<byte> Span => new(_host, Length);
}
