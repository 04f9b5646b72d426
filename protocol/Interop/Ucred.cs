using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct ucred</c> (sys/socket.h): the peer credentials of a UNIX socket, as SO_PEERCRED returns them.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Ucred
{
    public int Pid;
    public uint Uid;
    public uint Gid;
}
