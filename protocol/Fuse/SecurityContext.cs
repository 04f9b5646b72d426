using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Fuse;

/// <summary>
/// The security context a client sends with CREATE, MKDIR, MKNOD and SYMLINK once FUSE_SECURITY_CTX is agreed: the
/// xattr that labels the new file (e.g. <c>security.selinux</c>) and its value. Empty when the client's LSM gives none.
/// Views the request's bytes.
/// </summary>
public readonly ref struct SecurityContext
{
    /// <summary>The xattr name, without its NUL; empty when there is no context.</summary>
    public readonly ReadOnlySpan<byte> Name;

    /// <summary>The value to store under <see cref="Name"/>.</summary>
    public readonly ReadOnlySpan<byte> Value;

    private SecurityContext(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        Name = name;
        Value = value;
    }

    /// <summary>Whether the request carried no context.</summary>
    public bool IsEmpty => Name.IsEmpty;

    /// <summary>
    /// Reads a <c>fuse_secctx_header</c> and what follows it: before protocol 7.38 the argument after the request's names,
    /// from 7.38 on one extension (see <see cref="TryFind"/>). An empty <paramref name="area"/> is no context. False when
    /// the area contradicts itself (sizes past its end, a name without NUL) or holds more than one context, which no
    /// Linux client sends and which cannot all be honoured.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> area, out SecurityContext context)
    {
        context = default;
        if (area.IsEmpty) return true;
        if (area.Length < Unsafe.SizeOf<SecctxHeader>()) return false;
        var header = MemoryMarshal.Read<SecctxHeader>(area);
        if (header.Size < Unsafe.SizeOf<SecctxHeader>() || header.Size > (uint)area.Length) return false;
        if (header.NrSecctx == 0) return true;
        if (header.NrSecctx != 1) return false;
        var rest = area[Unsafe.SizeOf<SecctxHeader>()..(int)header.Size];
        if (rest.Length < Unsafe.SizeOf<Secctx>()) return false;
        var one = MemoryMarshal.Read<Secctx>(rest);
        rest = rest[Unsafe.SizeOf<Secctx>()..];
        var nul = rest.IndexOf((byte)0);
        if (nul <= 0) return false;
        var name = rest[..nul];
        rest = rest[(nul + 1)..];
        if (one.Size > (uint)rest.Length) return false;
        context = new SecurityContext(name, rest[..(int)one.Size]);
        return true;
    }

    /// <summary>
    /// Finds the security context among a request's extensions (protocol 7.38: the last <c>total_extlen</c> × 8 bytes,
    /// a sequence of <c>fuse_ext_header</c>-led records). Other extensions are skipped. False when the records do not
    /// add up or the context is malformed.
    /// </summary>
    public static bool TryFind(ReadOnlySpan<byte> extensions, out SecurityContext context)
    {
        context = default;
        if (!FuseRequest.TryFindExtensionRecord(extensions, 0, FuseConstants.MaxNrSecctx, out var record)) return false;
        return record.IsEmpty || TryRead(record, out context);
    }
}
