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

/// <summary>
/// A raw FUSE client for tests: sends frames straight to an engine (no kernel in between, so nothing is sanitised)
/// and decodes the replies.
/// </summary>
public sealed class RawFuseClient(Hypervisor.Passthrough.Engine.FuseEngine engine)
{
    private readonly byte[] _reply = new byte[Hypervisor.Passthrough.Engine.FuseEngine.MaxReplySize];
    private ulong _unique = 100;

    /// <summary>The reply of the last request: its error (0 or a negative errno) and payload.</summary>
    public readonly record struct Reply(int Length, int Error, byte[] Payload)
    {
        public bool Ok => Length >= 16 && Error == 0;
        public T As<T>() where T : unmanaged => MemoryMarshal.Read<T>(Payload);
        public override string ToString() => Length == 0 ? "no reply" : Error == 0 ? $"ok ({Payload.Length} bytes)" : $"error {new Errno(-Error)}";
    }

    /// <summary>Uid/gid put in every header (0 = root).</summary>
    public uint Uid { get; set; }
    public uint Gid { get; set; }

    public Reply Init(InitFlags flags = InitFlags.SetXAttrExt | InitFlags.PosixLocks | InitFlags.FlockLocks | InitFlags.DoReadDirPlus | InitFlags.MaxPages | InitFlags.BigWrites | InitFlags.InitExt)
        => Raw(FuseFrames.Init(flags: flags, unique: ++_unique));

    public Reply Send(FuseOpcode opcode, ulong node, params byte[][] body) =>
        Raw(FuseFrames.Build(opcode, ++_unique, node, FuseFrames.Concat(body), Uid, Gid));

    /// <summary>Sends bytes exactly as given (lying headers, truncated frames).</summary>
    public Reply Raw(byte[] frame)
    {
        var length = engine.Handle(frame, _reply);
        if (length == 0) return new Reply(0, 0, []);
        var header = FuseFrames.Header(_reply);
        if (header.Len != (uint)length) throw new InvalidOperationException($"reply header says {header.Len} bytes, engine returned {length}");
        return new Reply(length, header.Error, _reply.AsSpan(16, length - 16).ToArray());
    }

    public Reply Lookup(ulong parent, byte[] nameWithNul) => Send(FuseOpcode.Lookup, parent, nameWithNul);
    public Reply Lookup(ulong parent, string name) => Lookup(parent, FuseFrames.Name(name));

    public ulong LookupId(ulong parent, string name)
    {
        var r = Lookup(parent, name);
        if (!r.Ok) throw new InvalidOperationException($"LOOKUP {name}: {r}");
        return r.As<EntryOut>().Nodeid;
    }

    public Reply Open(ulong node, int flags = 0) => Send(FuseOpcode.Open, node, FuseFrames.Struct(new OpenIn { Flags = (uint)flags }));
    public Reply OpenDir(ulong node) => Send(FuseOpcode.OpenDir, node, FuseFrames.Struct(new OpenIn()));
    public Reply Read(ulong node, ulong fh, uint size = 4096, ulong offset = 0) =>
        Send(FuseOpcode.Read, node, FuseFrames.Struct(new ReadIn { Fh = fh, Size = size, Offset = offset }));
    public Reply ReadDir(ulong node, ulong fh, uint size = 4096, bool plus = false) =>
        Send(plus ? FuseOpcode.ReadDirPlus : FuseOpcode.ReadDir, node, FuseFrames.Struct(new ReadIn { Fh = fh, Size = size }));
    public Reply GetAttr(ulong node) => Send(FuseOpcode.GetAttr, node, FuseFrames.Struct(new GetAttrIn()));
}
