using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// The calling thread's capabilities (capget/capset, version 3: two 32-bit words per set), its bounding set and its
/// no_new_privs bit (prctl). Every one of these is per thread in Linux.
/// </summary>
internal static partial class Libc
{
    internal const uint LINUX_CAPABILITY_VERSION_3 = 0x20080522;
    internal const int PR_CAPBSET_DROP = 24;
    internal const int PR_SET_NO_NEW_PRIVS = 38;
    internal const int PR_CAP_AMBIENT = 47;
    internal const int PR_CAP_AMBIENT_CLEAR_ALL = 4;

    /// <summary><c>struct __user_cap_header_struct</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct CapHeader
    {
        public uint Version;
        public int Pid;
    }

    /// <summary><c>struct __user_cap_data_struct</c>; version 3 passes two of them (capabilities 0-31, 32-63).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct CapData
    {
        public uint Effective;
        public uint Permitted;
        public uint Inheritable;
    }

    [LibraryImport(Name, SetLastError = true)]
    internal static unsafe partial int capset(CapHeader* header, CapData* data);

    [LibraryImport(Name, SetLastError = true)]
    internal static unsafe partial int capget(CapHeader* header, CapData* data);

    /// <summary>The calling thread's permitted set (a bit per capability); 0 if capget fails.</summary>
    internal static unsafe ulong ThreadPermittedCapabilities()
    {
        var header = new CapHeader { Version = LINUX_CAPABILITY_VERSION_3 };
        // Safe: two CapData on this frame's stack, the count version 3 writes.
        CapData* data = stackalloc CapData[2];
        return capget(&header, data) != 0 ? 0 : data[0].Permitted | ((ulong)data[1].Permitted << 32);
    }

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    /// <summary>Sets the calling thread's effective and permitted sets to <paramref name="capabilities"/> (a bit per capability), the inheritable set empty.</summary>
    internal static unsafe int SetThreadCapabilities(ulong capabilities)
    {
        var header = new CapHeader { Version = LINUX_CAPABILITY_VERSION_3 };
        // Safe: two CapData on this frame's stack, the count version 3 reads and writes.
        CapData* data = stackalloc CapData[2];
        data[0] = new CapData { Effective = (uint)capabilities, Permitted = (uint)capabilities };
        data[1] = new CapData { Effective = (uint)(capabilities >> 32), Permitted = (uint)(capabilities >> 32) };
        return capset(&header, data);
    }
}
