using Hypervisor.Protocol.VhostUser;
using Hypervisor.Interop;

namespace Hypervisor.Vdev.VhostUser;

/// <summary>Why <see cref="VhostUserChannel.Receive"/> returned without a message.</summary>
internal enum ReceiveStatus { Message, Closed, Stopped }

/// <summary>
/// One accepted vhost-user connection: reads whole messages with the fds sent alongside (SCM_RIGHTS) and
/// writes replies. Single-threaded: only the control thread uses it.
/// </summary>
internal sealed class VhostUserChannel(SafeFd socket, SafeFd stop) : IDisposable
{
    private readonly byte[] _payload = new byte[VhostUserHeader.MaxPayloadSize];
    private readonly byte[] _send = new byte[VhostUserHeader.WireSize + VhostUserHeader.MaxPayloadSize];

    /// <summary>
    /// Receives one message. Fds that arrive with it are appended to <paramref name="fds"/> (owned by the caller).
    /// Returns <see cref="ReceiveStatus.Closed"/> on a clean end of stream between messages.
    /// </summary>
    /// <exception cref="VhostUserProtocolException">Malformed header, truncated message, or truncated fds.</exception>
    public ReceiveStatus Receive(List<SafeFd> fds, out VhostUserHeader header, out ReadOnlySpan<byte> payload)
    {
        header = default;
        payload = default;
        Span<byte> hdr = stackalloc byte[VhostUserHeader.WireSize];
        int got = 0;
        while (got < hdr.Length)
        {
            if (!Libc.WaitReadable(socket, stop)) return ReceiveStatus.Stopped;
            int n = RecvWithFds(hdr[got..], fds);
            if (n == 0)
            {
                if (got == 0) return ReceiveStatus.Closed;
                throw new VhostUserProtocolException(VhostUserError.ShortHeader, VhostUserRequest.None,
                    $"the connection closed after {got} of {VhostUserHeader.WireSize} header bytes");
            }
            got += n;
        }
        header = VhostUserHeader.Parse(hdr);
        int size = (int)header.Size;
        got = 0;
        while (got < size)
        {
            if (!Libc.WaitReadable(socket, stop)) return ReceiveStatus.Stopped;
            int n = RecvWithFds(_payload.AsSpan(got, size - got), fds);
            if (n == 0)
                throw new VhostUserProtocolException(VhostUserError.BadPayloadSize, header.Request,
                    $"the connection closed after {got} of the {size} payload bytes the header announced");
            got += n;
        }
        payload = _payload.AsSpan(0, size);
        return ReceiveStatus.Message;
    }

    private int RecvWithFds(Span<byte> buffer, List<SafeFd> fds)
    {
        Span<int> received = stackalloc int[VhostUserPayload.MaxMemTableRegions];
        nint n;
        int count, flags;
        while ((n = Libc.ReceiveWithFds(socket, buffer, received, 0, out count, out flags)) < 0)
        {
            int e = Libc.LastErrno;
            if (e == Libc.EINTR) continue;
            if (e == Libc.ECONNRESET) return 0;
            throw new SyscallException("recvmsg on the vhost-user socket", e);
        }
        // Take every fd the kernel installed before judging truncation, so that each gets closed.
        for (int i = 0; i < count; i++) fds.Add(new SafeFd(received[i]));
        if ((flags & Libc.MSG_CTRUNC) != 0)
            throw new VhostUserProtocolException(VhostUserError.BadFdCount, VhostUserRequest.None,
                $"more than {received.Length} file descriptors were sent with one message");
        return (int)n;
    }

    /// <summary>Sends a reply: the header for <paramref name="request"/> with REPLY set, then <paramref name="payload"/>.</summary>
    public void Reply(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        VhostUserHeader.ReplyTo(request, (uint)payload.Length).WriteTo(_send);
        payload.CopyTo(_send.AsSpan(VhostUserHeader.WireSize));
        int total = VhostUserHeader.WireSize + payload.Length;
        int sent = 0;
        while (sent < total)
        {
            nint n = Libc.SendWithFds(socket, _send.AsSpan(sent, total - sent), [], Libc.MSG_NOSIGNAL);
            if (n < 0)
            {
                int e = Libc.LastErrno;
                if (e == Libc.EINTR) continue;
                throw new SyscallException("sendmsg on the vhost-user socket", e);
            }
            sent += (int)n;
        }
    }

    /// <summary>Sends a REPLY_ACK u64: 0 for success, 1 for failure.</summary>
    public void Ack(VhostUserRequest request, bool success)
    {
        Span<byte> v = stackalloc byte[8];
        VhostUserPayload.WriteU64(v, success ? 0UL : 1UL);
        Reply(request, v);
    }

    public void Dispose() => socket.Dispose();
}
