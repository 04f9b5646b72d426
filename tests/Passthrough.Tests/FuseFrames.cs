using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.Tests;

/// <summary>Builds raw FUSE request frames the way a (possibly hostile) client would send them.</summary>
public static class FuseFrames
{
    public static byte[] Build(FuseOpcode opcode, ulong unique, ulong node, ReadOnlySpan<byte> body, uint uid = 0, uint gid = 0, uint? lengthOverride = null)
    {
        var frame = new byte[40 + body.Length];
        var header = new InHeader { Len = lengthOverride ?? (uint)frame.Length, Opcode = (uint)opcode, Unique = unique, Nodeid = node, Uid = uid, Gid = gid, Pid = 1 };
        MemoryMarshal.Write(frame, in header);
        body.CopyTo(frame.AsSpan(40));
        return frame;
    }

    public static byte[] Struct<T>(in T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    public static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    public static byte[] Name(string name) => [.. System.Text.Encoding.UTF8.GetBytes(name), 0];

    public static byte[] Init(uint minor = 38, InitFlags flags = InitFlags.None, ulong unique = 1)
    {
        var init = new InitIn { Major = 7, Minor = minor, MaxReadahead = 131072, Flags = (uint)flags, Flags2 = (uint)((ulong)flags >> 32) };
        var size = minor >= 36 ? Unsafe.SizeOf<InitIn>() : 16;
        return Build(FuseOpcode.Init, unique, 0, Struct(init).AsSpan(0, size));
    }

    public static OutHeader Header(ReadOnlySpan<byte> reply) => MemoryMarshal.Read<OutHeader>(reply);

    public static T Payload<T>(ReadOnlySpan<byte> reply) where T : unmanaged => MemoryMarshal.Read<T>(reply[16..]);
}
