using Hypervisor.Tests;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Hypervisor.Interop;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Protocol.Virtio;

namespace Hypervisor.Vdev.Tests.Frontend;

/// <summary>
/// A vhost-user front-end (the VMM's side) for tests and benchmarks: connects to a back-end's socket,
/// negotiates features, hands over guest RAM and vrings, and drives <see cref="FrontendQueue"/>s.
/// Typical use:
/// <code>
/// using var fe = VhostUserFrontend.Connect(path, TimeSpan.FromSeconds(10));
/// using var ram = new GuestRam(64 &lt;&lt; 20);
/// fe.Negotiate();                 // features + protocol features + SET_OWNER
/// fe.SetMemTable(ram);
/// var queues = fe.SetupQueues(ram, count: 2, size: 128);   // hiprio + 1 request queue
/// byte[] reply = queues[1].Transact(frame, replyCapacity: 4096, TimeSpan.FromSeconds(5));
/// </code>
/// </summary>
public sealed class VhostUserFrontend : IDisposable
{
    private readonly SafeFd _socket;
    private readonly List<FrontendQueue> _queues = [];

    /// <summary>Features the back-end offered (GET_FEATURES).</summary>
    public ulong OfferedFeatures { get; private set; }
    /// <summary>Features acknowledged with SET_FEATURES.</summary>
    public ulong Features { get; private set; }
    /// <summary>Protocol features the back-end offered.</summary>
    public VhostUserProtocolFeatures OfferedProtocolFeatures { get; private set; }
    /// <summary>Protocol features acknowledged.</summary>
    public VhostUserProtocolFeatures ProtocolFeatures { get; private set; }
    /// <summary>Default wait for a reply.</summary>
    public TimeSpan ReplyTimeout { get; set; } = TimeSpan.FromSeconds(10);

    // A back-end may listen before it serves (the vdev listens while its shares start): the first reply may take as
    // long as the connection was allowed to.
    private TimeSpan _firstReplyWait;

    private VhostUserFrontend(SafeFd socket, TimeSpan firstReplyWait)
    {
        _socket = socket;
        _firstReplyWait = firstReplyWait;
    }

    /// <summary>
    /// Connects to <paramref name="socketPath"/>, retrying until the socket accepts or <paramref name="timeout"/> passes.
    /// The first reply is waited for as long as <paramref name="timeout"/> too (or <see cref="ReplyTimeout"/> if longer):
    /// the back-end may answer only once it serves.
    /// </summary>
    public static VhostUserFrontend Connect(string socketPath, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        int length = SockaddrUn.Create(socketPath, out var addr);
        if (length < 0) throw new ArgumentException($"{socketPath} is too long for a UNIX socket address", nameof(socketPath));
        while (true)
        {
            int s = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
            if (s < 0) throw FrontendFds.Error("socket");
            var socket = new SafeFd(s);
            if (Libc.connect(socket, addr, (uint)length) == 0) return new VhostUserFrontend(socket, timeout);
            socket.Dispose();
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no vhost-user back-end accepted on {socketPath}");
            Thread.Sleep(20);
        }
    }

    /// <summary>The queues set up so far, by index.</summary>
    public IReadOnlyList<FrontendQueue> Queues => _queues;

    // ---- raw messages ----

    /// <summary>Sends one message: header (version 1, optional NEED_REPLY) and payload, with <paramref name="fds"/> attached.</summary>
    public void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default, bool needReply = false)
    {
        var flags = VhostUserHeaderFlags.Version1 | (needReply ? VhostUserHeaderFlags.NeedReply : 0);
        var buf = new byte[VhostUserHeader.WireSize + payload.Length];
        new VhostUserHeader(request, flags, (uint)payload.Length).WriteTo(buf);
        payload.CopyTo(buf.AsSpan(VhostUserHeader.WireSize));
        SendRaw(buf, fds);
    }

    /// <summary>Sends arbitrary bytes with <paramref name="fds"/> attached (for malformed-message tests).</summary>
    public void SendRaw(ReadOnlySpan<byte> bytes, ReadOnlySpan<int> fds = default)
    {
        // The fds go with the first sendmsg; an empty message is still sent once, to carry them.
        int sent = 0;
        while (true)
        {
            nint r = Libc.SendWithFds(_socket, bytes[sent..], sent == 0 ? fds : default, Libc.MSG_NOSIGNAL);
            if (r < 0)
            {
                if (Marshal.GetLastPInvokeError() == Libc.EINTR) continue;
                throw FrontendFds.Error("sendmsg");
            }
            sent += (int)r;
            if (sent >= bytes.Length) return;
        }
    }

    /// <summary>Receives one reply; throws <see cref="TimeoutException"/> or <see cref="EndOfStreamException"/> (back-end closed).</summary>
    public (VhostUserHeader Header, byte[] Payload) Receive(TimeSpan? timeout = null)
    {
        Span<byte> hdr = stackalloc byte[VhostUserHeader.WireSize];
        var first = _firstReplyWait > ReplyTimeout ? _firstReplyWait : ReplyTimeout;
        _firstReplyWait = TimeSpan.Zero;
        ReadExactly(hdr, timeout ?? first);
        var h = new VhostUserHeader(
            (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(hdr),
            (VhostUserHeaderFlags)BinaryPrimitives.ReadUInt32LittleEndian(hdr[4..]),
            BinaryPrimitives.ReadUInt32LittleEndian(hdr[8..]));
        var payload = new byte[h.Size];
        ReadExactly(payload, timeout ?? ReplyTimeout);
        return (h, payload);
    }

    /// <summary>True when the back-end closed the connection within <paramref name="timeout"/>.</summary>
    public bool WaitClosed(TimeSpan timeout)
    {
        if (!FrontendFds.WaitReadable(_socket.Value, (int)timeout.TotalMilliseconds)) return false;
        Span<byte> b = stackalloc byte[1];
        return Libc.recv(_socket, b, 1, Libc.MSG_PEEK) == 0;
    }

    private void ReadExactly(Span<byte> dest, TimeSpan timeout)
    {
        int got = 0;
        var deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (got < dest.Length)
        {
            int left = (int)Math.Max(0, deadline - Environment.TickCount64);
            if (!FrontendFds.WaitReadable(_socket.Value, left)) throw new TimeoutException("the back-end did not reply in time");
            nint r = Libc.recv(_socket, dest[got..], (nuint)(dest.Length - got), 0);
            if (r == 0) throw new EndOfStreamException("the back-end closed the connection");
            if (r < 0)
            {
                if (Marshal.GetLastPInvokeError() == Libc.EINTR) continue;
                if (Marshal.GetLastPInvokeError() == Libc.ECONNRESET) throw new EndOfStreamException("the back-end reset the connection");
                throw FrontendFds.Error("recv");
            }
            got += (int)r;
        }
    }

    /// <summary>Sends a request whose answer is a u64 (GET_FEATURES, GET_QUEUE_NUM, ...) and returns it.</summary>
    public ulong GetU64(VhostUserRequest request)
    {
        Send(request, default);
        var (h, p) = Receive();
        if (h.Request != request || p.Length != 8) throw new InvalidDataException($"bad reply to {request}: {h.Request}, {p.Length} bytes");
        return BinaryPrimitives.ReadUInt64LittleEndian(p);
    }

    /// <summary>Sends a request with NEED_REPLY and returns whether the back-end acknowledged success (u64 0).</summary>
    public bool SendWithAck(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default)
    {
        Send(request, payload, fds, needReply: true);
        var (h, p) = Receive();
        if (h.Request != request || p.Length != 8 || (h.Flags & VhostUserHeaderFlags.Reply) == 0)
            throw new InvalidDataException($"bad REPLY_ACK to {request}: {h.Request}, flags {h.Flags}, {p.Length} bytes");
        return BinaryPrimitives.ReadUInt64LittleEndian(p) == 0;
    }

    private bool ReplyAck => (ProtocolFeatures & VhostUserProtocolFeatures.ReplyAck) != 0;

    /// <summary>Sends a configuration message, with NEED_REPLY when REPLY_ACK was negotiated; throws when the back-end refuses.</summary>
    public void Configure(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default)
    {
        if (ReplyAck)
        {
            if (!SendWithAck(request, payload, fds)) throw new InvalidOperationException($"the back-end refused {request}");
        }
        else Send(request, payload, fds);
    }

    /// <summary>Sends a u64 payload message.</summary>
    public void ConfigureU64(VhostUserRequest request, ulong value, int fd = -1)
    {
        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(p, value);
        if (fd >= 0) Configure(request, p, [fd]); else Configure(request, p);
    }

    /// <summary>Sends a vring-state message.</summary>
    public void ConfigureVringState(VhostUserRequest request, uint index, uint num)
    {
        Span<byte> p = stackalloc byte[8];
        new VringState(index, num).WriteTo(p);
        Configure(request, p);
    }

    // ---- the usual sequence ----

    /// <summary>
    /// GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES: acknowledges
    /// <paramref name="wantFeatures"/> ∩ offered (VERSION_1, EVENT_IDX, INDIRECT_DESC by default) and
    /// <paramref name="wantProtocol"/> ∩ offered (MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS by default).
    /// </summary>
    public void Negotiate(ulong? wantFeatures = null, VhostUserProtocolFeatures? wantProtocol = null)
    {
        OfferedFeatures = GetU64(VhostUserRequest.GetFeatures);
        ulong want = wantFeatures ?? (VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx | VirtioFeatures.RingIndirectDesc);
        if ((OfferedFeatures & VhostUserFeatures.ProtocolFeatures) != 0)
        {
            OfferedProtocolFeatures = (VhostUserProtocolFeatures)GetU64(VhostUserRequest.GetProtocolFeatures);
            var wp = wantProtocol ?? (VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck
                | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ConfigureMemSlots);
            var pf = OfferedProtocolFeatures & wp;
            ConfigureU64(VhostUserRequest.SetProtocolFeatures, (ulong)pf);
            ProtocolFeatures = pf;
            want |= VhostUserFeatures.ProtocolFeatures;
        }
        Configure(VhostUserRequest.SetOwner, default);
        Features = OfferedFeatures & want;
        ConfigureU64(VhostUserRequest.SetFeatures, Features);
    }

    /// <summary>Sends SET_MEM_TABLE with one region per <see cref="GuestRam"/>.</summary>
    public void SetMemTable(params GuestRam[] rams)
    {
        var p = new byte[8 + rams.Length * VhostUserMemoryRegion.WireSize];
        BinaryPrimitives.WriteUInt32LittleEndian(p, (uint)rams.Length);
        var fds = new int[rams.Length];
        for (int i = 0; i < rams.Length; i++)
        {
            new VhostUserMemoryRegion(rams[i].GuestBase, (ulong)rams[i].Size, rams[i].UserAddr, 0).WriteTo(p.AsSpan(8 + i * 32));
            fds[i] = rams[i].Fd;
        }
        Configure(VhostUserRequest.SetMemTable, p, fds);
    }

    /// <summary>Sends ADD_MEM_REG (or REM_MEM_REG when <paramref name="remove"/>) for <paramref name="ram"/>.</summary>
    public void ChangeMemRegion(GuestRam ram, bool remove)
    {
        var p = new byte[40];
        new VhostUserMemoryRegion(ram.GuestBase, (ulong)ram.Size, ram.UserAddr, 0).WriteTo(p.AsSpan(8));
        Configure(remove ? VhostUserRequest.RemMemReg : VhostUserRequest.AddMemReg, p, [ram.Fd]);
    }

    /// <summary>
    /// Sets up queues 0..count-1 of <paramref name="size"/> entries in <paramref name="ram"/>: NUM, BASE,
    /// ADDR, CALL, KICK, and ENABLE when protocol features were negotiated. Each request slot gets
    /// <paramref name="slotBytes"/> of buffer space.
    /// </summary>
    public IReadOnlyList<FrontendQueue> SetupQueues(GuestRam ram, int count, int size, int slotBytes = 64 << 10)
    {
        for (int i = 0; i < count; i++) SetupQueue(ram, i, size, slotBytes);
        return _queues;
    }

    /// <summary>Sets up one queue (see <see cref="SetupQueues"/>).</summary>
    public FrontendQueue SetupQueue(GuestRam ram, int index, int size, int slotBytes = 64 << 10)
    {
        var q = new FrontendQueue(this, ram, index, size, slotBytes, (Features & VirtioFeatures.RingEventIdx) != 0);
        while (_queues.Count <= index) _queues.Add(null!);
        _queues[index] = q;
        StartQueue(q);
        return q;
    }

    /// <summary>Sends NUM, BASE, ADDR, CALL, KICK (and ENABLE) for <paramref name="q"/>, starting it at <paramref name="q"/>'s current avail index.</summary>
    public void StartQueue(FrontendQueue q, uint? baseIndex = null)
    {
        uint idx = (uint)q.Index;
        ConfigureVringState(VhostUserRequest.SetVringNum, idx, (uint)q.Size);
        ConfigureVringState(VhostUserRequest.SetVringBase, idx, baseIndex ?? q.NextAvail);
        var a = new byte[VringAddress.WireSize];
        new VringAddress(idx, 0, q.Ram.UserAddr + (q.DescGpa - q.Ram.GuestBase), q.Ram.UserAddr + (q.UsedGpa - q.Ram.GuestBase),
            q.Ram.UserAddr + (q.AvailGpa - q.Ram.GuestBase), 0).WriteTo(a);
        Configure(VhostUserRequest.SetVringAddr, a);
        ConfigureU64(VhostUserRequest.SetVringCall, idx, q.CallFd);
        ConfigureU64(VhostUserRequest.SetVringKick, idx, q.KickFd);
        if ((Features & VhostUserFeatures.ProtocolFeatures) != 0) ConfigureVringState(VhostUserRequest.SetVringEnable, idx, 1);
    }

    /// <summary>GET_VRING_BASE: stops queue <paramref name="index"/> and returns the back-end's next avail index.</summary>
    public uint GetVringBase(int index)
    {
        Span<byte> p = stackalloc byte[8];
        new VringState((uint)index, 0).WriteTo(p);
        Send(VhostUserRequest.GetVringBase, p);
        var (h, r) = Receive();
        if (h.Request != VhostUserRequest.GetVringBase || r.Length != 8) throw new InvalidDataException("bad GET_VRING_BASE reply");
        return BinaryPrimitives.ReadUInt32LittleEndian(r.AsSpan(4));
    }

    /// <summary>Closes the connection (as a VMM that exits or crashes does).</summary>
    public void Disconnect()
    {
        _socket.Dispose();
    }

    public void Dispose()
    {
        Disconnect();
        foreach (var q in _queues) q?.Dispose();
    }
}
