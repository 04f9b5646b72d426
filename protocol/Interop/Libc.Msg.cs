using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>sendmsg(2), recvmsg(2) and recv(2) on stream sockets, with descriptors passed as SCM_RIGHTS.</summary>
internal static unsafe partial class Libc
{
    internal const int SCM_RIGHTS = 1;
    internal const int MSG_PEEK = 0x2;
    internal const int MSG_DONTWAIT = 0x40;
    internal const int MSG_CTRUNC = 0x8;
    internal const int MSG_NOSIGNAL = 0x4000;
    internal const int MSG_CMSG_CLOEXEC = 0x40000000;

    [LibraryImport(Name, SetLastError = true)]
    private static partial nint sendmsg(SafeHandle fd, MsgHdr* msg, int flags);

    [LibraryImport(Name, SetLastError = true)]
    private static partial nint recvmsg(SafeHandle fd, MsgHdr* msg, int flags);

    /// <summary><c>recv(2)</c> of at most <paramref name="count"/> bytes, which must not exceed <paramref name="buffer"/>'s length.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint recv(SafeHandle fd, Span<byte> buffer, nuint count, int flags);

    /// <summary>
    /// One sendmsg(2) of <paramref name="data"/> with <paramref name="fds"/> attached as one SCM_RIGHTS message (none
    /// when empty). Returns the bytes sent (possibly fewer than all; the descriptors go with the first byte), or -1 with
    /// errno set.
    /// </summary>
    internal static nint SendWithFds(SafeHandle socket, ReadOnlySpan<byte> data, ReadOnlySpan<int> fds, int flags)
    {
        int controlLen = fds.IsEmpty ? 0 : CmsgHdr.Space(fds.Length * sizeof(int));
        byte* control = stackalloc byte[Math.Max(controlLen, 1)];
        if (controlLen > 0)
        {
            // Safe: control is a stack buffer of controlLen bytes: the header at its start and the descriptors after
            // it fill CMSG_LEN(n) <= CMSG_SPACE(n) bytes.
            new Span<byte>(control, controlLen).Clear();
            *(CmsgHdr*)control = new CmsgHdr { Len = (nuint)CmsgHdr.Length(fds.Length * sizeof(int)), Level = SOL_SOCKET, Type = SCM_RIGHTS };
            fds.CopyTo(new Span<int>(control + CmsgHdr.Size, fds.Length));
        }
        fixed (byte* p = data)
        {
            IoVec iov = new() { Base = p, Len = (nuint)data.Length };
            MsgHdr msg = new() { Iov = &iov, IovLen = 1, Control = controlLen > 0 ? control : null, ControlLen = (nuint)controlLen };
            // Safe: msg and iov are locals, iov points into the pinned data for its length and control into the stack
            // buffer for controlLen bytes; the kernel only reads them during the call.
            return sendmsg(socket, &msg, flags);
        }
    }

    /// <summary>
    /// One recvmsg(2) into <paramref name="buffer"/> (flags MSG_CMSG_CLOEXEC and <paramref name="flags"/>), with room for
    /// <paramref name="fds"/>.Length descriptors. Returns the bytes received (0 at end of stream) or -1 with errno set.
    /// <paramref name="fdCount"/> descriptors received are stored in <paramref name="fds"/> and owned by the caller;
    /// <paramref name="msgFlags"/> has MSG_CTRUNC when the sender attached more descriptors than there was room for (the
    /// kernel closed those, and any that did not fit <paramref name="fds"/> are closed here).
    /// </summary>
    internal static nint ReceiveWithFds(SafeHandle socket, Span<byte> buffer, Span<int> fds, int flags, out int fdCount, out int msgFlags)
    {
        fdCount = 0;
        msgFlags = 0;
        int controlLen = CmsgHdr.Space(fds.Length * sizeof(int));
        byte* control = stackalloc byte[controlLen];
        new Span<byte>(control, controlLen).Clear();
        nint n;
        fixed (byte* p = buffer)
        {
            IoVec iov = new() { Base = p, Len = (nuint)buffer.Length };
            MsgHdr msg = new() { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)controlLen };
            // Safe: msg, iov and control live on this stack frame for the duration of the call; the kernel writes at
            // most buffer.Length bytes to p and controlLen bytes to control, and updates msg.
            n = recvmsg(socket, &msg, flags | MSG_CMSG_CLOEXEC);
            if (n < 0) return n;
            msgFlags = msg.Flags;
            // Safe: the walk stays inside the msg.ControlLen <= controlLen bytes the kernel wrote, header by header, and
            // stops at a header whose length is shorter than a header.
            for (byte* c = control; c + CmsgHdr.Size <= control + msg.ControlLen;)
            {
                var h = (CmsgHdr*)c;
                if (h->Len < CmsgHdr.Size) break;
                if (h->Level == SOL_SOCKET && h->Type == SCM_RIGHTS)
                {
                    int count = (int)((h->Len - CmsgHdr.Size) / sizeof(int));
                    int* data = (int*)(c + CmsgHdr.Size);
                    for (int i = 0; i < count; i++)
                    {
                        // Every descriptor the kernel installed is either handed to the caller or closed.
                        if (fdCount < fds.Length) fds[fdCount++] = data[i];
                        else { close(data[i]); msgFlags |= MSG_CTRUNC; }
                    }
                }
                c += (int)((h->Len + 7) & ~(nuint)7);
            }
        }
        return n;
    }
}
