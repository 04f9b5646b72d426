using System.Runtime.CompilerServices;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Engine;

/// <summary>
/// The FUSE server: parses one request frame, calls the filesystem, and encodes the reply into the caller's
/// buffer. It does not know where frames come from (/dev/fuse, the shared-memory ring, a test); it is called
/// from several threads at once.
/// </summary>
public sealed partial class FuseEngine : IDisposable
{
    /// <summary>The largest WRITE payload (and READ size) negotiated: 1 MiB.</summary>
    public const int MaxWrite = 1 << 20;

    /// <summary>max_pages announced with FUSE_MAX_PAGES, so the kernel sends 1 MiB requests.</summary>
    public const ushort MaxPages = MaxWrite / 4096;

    /// <summary>A request frame never exceeds this: header, the largest fixed arguments, and a MaxWrite payload.</summary>
    public const int MaxRequestSize = MaxWrite + 4096;

    /// <summary>A reply buffer of this size holds any reply the engine produces.</summary>
    public const int MaxReplySize = MaxWrite + 4096;

    private readonly IFileSystem _fs;
    private readonly ILogger _log;
    private readonly LockWaits _lockWaits;
    private volatile Session? _session;

    /// <summary>Serves <paramref name="fs"/>.</summary>
    public FuseEngine(IFileSystem fs, ILogger? logger = null)
    {
        _fs = fs;
        _log = logger ?? NullLogger.Instance;
        _lockWaits = new LockWaits(fs, _log);
    }

    /// <summary>
    /// What <see cref="Handle(ReadOnlySpan{byte}, Span{byte}, IDeferredReplySink?, ReplyRoute)"/> returns for a request
    /// whose reply comes later through the transport's <see cref="IDeferredReplySink"/> (a SETLKW that waits).
    /// </summary>
    public const int Deferred = -1;

    /// <summary>Stops the lock waiter; SETLKW requests still waiting are not answered (their transport is gone).</summary>
    public void Dispose() => _lockWaits.Dispose();

    /// <summary>SETLKW requests waiting for their lock now (none of them holds a thread).</summary>
    public int WaitingLocks => _lockWaits.Count;

    /// <summary>Request and error counts per opcode.</summary>
    public FuseCounters Counters { get; } = new();

    /// <summary>The negotiated protocol minor version, or 0 before INIT.</summary>
    public uint ProtocolMinor => _session?.Minor ?? 0;

    /// <summary>True once DESTROY was answered (the transport may stop).</summary>
    public bool Destroyed { get; private set; }

    private sealed record Session(uint Minor, InitFlags Flags);

    /// <summary>
    /// Called with the protocol minor and the agreed flags once an INIT is accepted, before its reply is written: the
    /// daemon records the session where a crash cannot take it (the share's state store).
    /// </summary>
    public Action<uint, InitFlags>? SessionStarted { get; set; }

    /// <summary>Called when DESTROY ends the session, before its reply is written.</summary>
    public Action? SessionEnded { get; set; }

    /// <summary>
    /// Takes over a session a previous daemon of the share agreed with the guest, which will not send INIT again:
    /// requests are served at once with that minor and those flags.
    /// </summary>
    public void Resume(uint minor, InitFlags flags)
    {
        _session = new Session(minor, flags);
        SessionStarted?.Invoke(minor, flags);
        Destroyed = false;
    }

    /// <summary>
    /// Handles one request frame and writes its reply into <paramref name="reply"/> (at least
    /// <see cref="MaxReplySize"/> bytes, or the request's reply is truncated to fit). Returns the reply length,
    /// or 0 when the request gets no reply (FORGET, BATCH_FORGET, INTERRUPT, or a frame too broken to answer).
    /// A SETLKW that has to wait blocks the calling thread until it is granted, interrupted or refused; transports
    /// use the overload with an <see cref="IDeferredReplySink"/>, which never blocks.
    /// </summary>
    public int Handle(ReadOnlySpan<byte> frame, Span<byte> reply) => Handle(frame, reply, null, default);

    /// <summary>
    /// As <see cref="Handle(ReadOnlySpan{byte}, Span{byte})"/>, except that with a <paramref name="sink"/> a SETLKW
    /// that has to wait returns <see cref="Deferred"/> at once; its reply is sent later through the sink with
    /// <paramref name="route"/>, from another thread.
    /// </summary>
    public int Handle(ReadOnlySpan<byte> frame, Span<byte> reply, IDeferredReplySink? sink, ReplyRoute route)
        => Handle(frame, reply, sink, route, default);

    /// <summary>
    /// As <see cref="Handle(ReadOnlySpan{byte}, Span{byte}, IDeferredReplySink?, ReplyRoute)"/> for a request whose
    /// payload stays in guest memory (<paramref name="payload"/>): a WRITE's frame ends after fuse_write_in and its data
    /// is <paramref name="payload"/>, which must be exactly fuse_write_in.size bytes; a READ's data, and the payload of a
    /// READDIR, READDIRPLUS, GETXATTR, LISTXATTR or READLINK reply, go into <paramref name="payload"/> and the reply is
    /// the out header alone, whose <c>len</c> counts that payload too. Any other request, or a payload going the wrong
    /// way, is answered EIO.
    /// </summary>
    public int Handle(ReadOnlySpan<byte> frame, Span<byte> reply, IDeferredReplySink? sink, ReplyRoute route, GuestPayload payload)
    {
        if (!FuseRequest.TryParse(frame, out var request, out var error))
        {
            Counters.CountMalformed();
            if (_log.IsEnabled(LogLevel.Warning)) LogMalformed(error.ToString());
            return error.CanReply ? FuseReply.Error(reply, new RequestId(error.Unique), Errno.EINVAL) : 0;
        }

        int length;
        try
        {
            length = payload.IsPresent ? DispatchGuestPayload(request, reply, payload) : Dispatch(request, reply, sink, route);
        }
        catch (Exception e)
        {
            LogUnexpected(e, request.Header.Opcode, request.Header.Unique);
            length = FuseReply.Error(reply, request.Unique, Errno.EIO);
        }

        if (length == Deferred)
        {
            Counters.Count(request.Header.Opcode, false);
            return length;
        }
        // fuse_out_header.error of the reply (0 without a reply).
        var result = length >= FuseReply.HeaderSize ? System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(reply[4..]) : 0;
        Counters.Count(request.Header.Opcode, result != 0);
        if (_log.IsEnabled(LogLevel.Trace)) LogRequest(request.Opcode, request.Header.Unique, request.Header.Nodeid, result);
        return length;
    }

    /// <summary>READ into, WRITE from and replies built in guest memory; see <see cref="Handle(ReadOnlySpan{byte}, Span{byte}, IDeferredReplySink?, ReplyRoute, GuestPayload)"/>.</summary>
    private int DispatchGuestPayload(in FuseRequest request, Span<byte> reply, GuestPayload payload)
    {
        var unique = request.Unique;
        var opcode = request.Opcode;
        bool toGuest = payload.Direction == Hypervisor.Protocol.Ring.GuestMemoryDirection.ToGuest;
        bool built = opcode is FuseOpcode.ReadDir or FuseOpcode.ReadDirPlus or FuseOpcode.GetXAttr or FuseOpcode.ListXAttr or FuseOpcode.ReadLink;
        // The vdev sends only these with a payload in guest memory; anything else is a frame it cannot have made.
        if (!(opcode == FuseOpcode.Read && toGuest) && !(opcode == FuseOpcode.Write && !toGuest) && !(built && toGuest))
        {
            Malformed(FrameErrorKind.PayloadMismatch, request);
            return FuseReply.Error(reply, unique, Errno.EIO);
        }
        if (_session is null) return FuseReply.Error(reply, unique, Errno.EIO);
        var ctx = new FuseContext(unique, request.Header.Uid, request.Header.Gid, request.Header.Pid);
        var args = new FuseArgReader(request.Body);
        if (built) return BuildIntoGuest(request, ctx, args, reply, payload);
        if (opcode == FuseOpcode.Read)
        {
            if (!args.TryRead(out ReadIn read)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
            // Only as many bytes as the guest asked for, never more than its buffers hold.
            long want = Math.Min(Math.Min(read.Size, MaxWrite), payload.Length);
            var buffers = Trim(payload.Buffers, want);
            var result = _fs.ReadTo(ctx, request.Node, read, buffers);
            if (!result.IsOk) return FuseReply.Error(reply, unique, result.Error);
            // The header alone: its len counts the bytes already in guest memory, which the vdev adds to the used length.
            var header = new OutHeader { Len = (uint)(FuseReply.HeaderSize + result.Value), Error = 0, Unique = unique.Value };
            System.Runtime.InteropServices.MemoryMarshal.Write(reply, in header);
            return FuseReply.HeaderSize;
        }
        if (!args.TryRead(out WriteIn write)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
        if (write.Size > MaxWrite || write.Size != payload.Length || !args.Rest.IsEmpty)
            return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
        return Reply(reply, unique, _fs.WriteFrom(ctx, request.Node, write, payload.Buffers), static size => new WriteOut { Size = size });
    }

    /// <summary>
    /// READDIR, READDIRPLUS, GETXATTR, LISTXATTR and READLINK with their reply's payload in guest memory: the listing,
    /// value or target is built straight into the guest's buffer when its first range holds all the guest asked for
    /// (a directory page, an attribute buffer: the usual case), else built in the dispatcher's scratch and copied into
    /// the ranges in order, across descriptors and region boundaries. The reply is the out header alone, whose
    /// <c>len</c> counts the payload too. The filesystem only writes the buffer it is given, never reads it back, so a
    /// guest changing it meanwhile changes nothing but its own copy. A GETXATTR or LISTXATTR of size 0 (a size query,
    /// which the vdev does not send this way, but a guest may change the size under it) gets its usual
    /// fuse_getxattr_out reply, which the vdev copies as any other.
    /// </summary>
    private unsafe int BuildIntoGuest(in FuseRequest request, in FuseContext ctx, FuseArgReader args, Span<byte> reply, GuestPayload payload)
    {
        var unique = request.Unique;
        var opcode = request.Opcode;
        var node = request.Node;
        ReadIn read = default;
        ReadOnlySpan<byte> name = default;
        uint asked;
        switch (opcode)
        {
            case FuseOpcode.ReadDir:
            case FuseOpcode.ReadDirPlus:
                if (!args.TryRead(out read)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                asked = read.Size;
                break;
            case FuseOpcode.GetXAttr:
            case FuseOpcode.ListXAttr:
                if (!args.TryRead(out GetXAttrIn getx)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (opcode == FuseOpcode.GetXAttr && !args.TryReadString(out name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                if (getx.Size == 0)
                {
                    var size = opcode == FuseOpcode.GetXAttr ? _fs.GetXAttr(ctx, node, name, Span<byte>.Empty) : _fs.ListXAttr(ctx, node, Span<byte>.Empty);
                    return size.IsOk ? FuseReply.Struct(reply, unique, new GetXAttrOut { Size = (uint)size.Value }) : FuseReply.Error(reply, unique, size.Error);
                }
                asked = getx.Size;
                break;
            default:
                // READLINK: as on the copy path, a target of at most a page.
                asked = 4096;
                break;
        }
        var buffers = payload.Buffers;
        int want = (int)Math.Min(Math.Min(asked, (uint)MaxWrite), payload.Length);
        bool direct = buffers[0].Length >= (nuint)want || payload.Scratch.IsEmpty;
        if (direct) want = (int)Math.Min((nuint)want, buffers[0].Length);
        else want = Math.Min(want, payload.Scratch.Length);
        var dest = direct ? new Span<byte>((void*)buffers[0].Address, want) : payload.Scratch[..want];
        var result = opcode switch
        {
            FuseOpcode.ReadDir or FuseOpcode.ReadDirPlus => _fs.ReadDir(ctx, node, read, dest, opcode == FuseOpcode.ReadDirPlus),
            FuseOpcode.GetXAttr => _fs.GetXAttr(ctx, node, name, dest),
            FuseOpcode.ListXAttr => _fs.ListXAttr(ctx, node, dest),
            _ => _fs.ReadLink(ctx, node, dest),
        };
        if (!result.IsOk) return FuseReply.Error(reply, unique, result.Error);
        int length = result.Value;
        if ((uint)length > (uint)want) return FuseReply.Error(reply, unique, Errno.EIO);
        if (!direct)
        {
            ReadOnlySpan<byte> left = dest[..length];
            for (int i = 0; !left.IsEmpty; i++)
            {
                int n = (int)Math.Min((nuint)left.Length, buffers[i].Length);
                left[..n].CopyTo(new Span<byte>((void*)buffers[i].Address, n));
                left = left[n..];
            }
        }
        var header = new OutHeader { Len = (uint)(FuseReply.HeaderSize + length), Error = 0, Unique = unique.Value };
        System.Runtime.InteropServices.MemoryMarshal.Write(reply, in header);
        return FuseReply.HeaderSize;
    }

    /// <summary>The first buffers of <paramref name="buffers"/> holding <paramref name="length"/> bytes, the last one shortened.</summary>
    private static ReadOnlySpan<IoBuffer> Trim(Span<IoBuffer> buffers, long length)
    {
        int i = 0;
        for (; i < buffers.Length && length > 0; i++)
        {
            if ((ulong)length < buffers[i].Length) buffers[i] = new IoBuffer(buffers[i].Address, (nuint)length);
            length -= (long)buffers[i].Length;
        }
        return buffers[..i];
    }

    private int Dispatch(in FuseRequest request, Span<byte> reply, IDeferredReplySink? sink, ReplyRoute route)
    {
        var unique = request.Unique;
        var opcode = request.Opcode;
        if (opcode == FuseOpcode.Init) return HandleInit(request, reply);

        var session = _session;
        if (session is null)
        {
            // No session yet: answer what can be answered, never touch the filesystem.
            if (opcode is FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt) return 0;
            if (_log.IsEnabled(LogLevel.Debug)) LogBeforeInit(request.Header.Opcode, request.Header.Unique);
            return FuseReply.Error(reply, unique, Errno.EIO);
        }

        var ctx = new FuseContext(unique, request.Header.Uid, request.Header.Gid, request.Header.Pid);
        if (opcode is FuseOpcode.Create or FuseOpcode.MkNod or FuseOpcode.MkDir or FuseOpcode.Symlink
            && !request.Extensions.IsEmpty && (session.Flags & InitFlags.CreateSuppGroup) != 0)
        {
            switch (ReadSuppGroup(request.Extensions, out var group))
            {
                case < 0: return Malformed(FrameErrorKind.BadExtension, request, reply);
                case > 1: return FuseReply.Error(reply, unique, Errno.EINVAL);
            }
            ctx = ctx with { SuppGid = group };
        }
        var node = request.Node;
        var args = new FuseArgReader(request.Body);

        switch (opcode)
        {
            case FuseOpcode.Destroy:
                _lockWaits.CancelAll();
                _fs.Destroy();
                _session = null;
                SessionEnded?.Invoke();
                Destroyed = true;
                return FuseReply.Finish(reply, unique, 0);

            case FuseOpcode.Forget:
                if (args.TryRead(out ForgetIn forget)) _fs.Forget(node, forget.Nlookup);
                else Malformed(FrameErrorKind.BodyTooShort, request);
                return 0;

            case FuseOpcode.BatchForget:
                HandleBatchForget(request, ref args);
                return 0;

            case FuseOpcode.Interrupt:
                // Only a lock wait can be cut short; any other request completes normally, which FUSE allows.
                if (args.TryRead(out InterruptIn interrupt)) _lockWaits.Interrupt(interrupt.Unique);
                else Malformed(FrameErrorKind.BodyTooShort, request);
                return 0;

            case FuseOpcode.Lookup:
                if (!args.TryReadString(out var lookupName)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                return Entry(reply, unique, _fs.Lookup(ctx, node, lookupName));

            case FuseOpcode.GetAttr:
            {
                if (!args.TryRead(out GetAttrIn getattr)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                FileHandle? fh = (getattr.GetattrFlags & FuseConstants.GetAttrFh) != 0 ? new FileHandle(getattr.Fh) : null;
                return Reply(reply, unique, _fs.GetAttr(ctx, node, fh));
            }

            case FuseOpcode.SetAttr:
                if (!args.TryRead(out SetAttrIn setattr)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Reply(reply, unique, _fs.SetAttr(ctx, node, setattr));

            case FuseOpcode.ReadLink:
            {
                var dest = FuseReply.Payload(reply);
                if (dest.Length > 4096) dest = dest[..4096];
                return Bytes(reply, unique, _fs.ReadLink(ctx, node, dest));
            }

            case FuseOpcode.Symlink:
            {
                if (!args.TryReadString(out var symName) || !args.TryReadString(out var target))
                    return Malformed(FrameErrorKind.MissingNul, request, reply);
                if ((session.Flags & InitFlags.SecurityCtx) == 0) return Entry(reply, unique, _fs.Symlink(ctx, node, symName, target));
                if (!TryReadLabel(session, request, args.Rest, out var label)) return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
                return Entry(reply, unique, _fs.Symlink(ctx, node, symName, target, label));
            }

            case FuseOpcode.MkNod:
            {
                if (!args.TryRead(out MkNodIn mknod)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                if ((session.Flags & InitFlags.SecurityCtx) == 0) return Entry(reply, unique, _fs.MkNod(ctx, node, name, mknod));
                if (!TryReadLabel(session, request, args.Rest, out var label)) return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
                return Entry(reply, unique, _fs.MkNod(ctx, node, name, mknod, label));
            }

            case FuseOpcode.MkDir:
            {
                if (!args.TryRead(out MkDirIn mkdir)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                if ((session.Flags & InitFlags.SecurityCtx) == 0) return Entry(reply, unique, _fs.MkDir(ctx, node, name, mkdir));
                if (!TryReadLabel(session, request, args.Rest, out var label)) return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
                return Entry(reply, unique, _fs.MkDir(ctx, node, name, mkdir, label));
            }

            case FuseOpcode.Unlink:
            case FuseOpcode.RmDir:
            {
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                return Status(reply, unique, opcode == FuseOpcode.Unlink ? _fs.Unlink(ctx, node, name) : _fs.RmDir(ctx, node, name));
            }

            case FuseOpcode.Rename:
            case FuseOpcode.Rename2:
            {
                ulong newDir;
                uint flags = 0;
                if (opcode == FuseOpcode.Rename)
                {
                    if (!args.TryRead(out RenameIn rename)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                    newDir = rename.Newdir;
                }
                else
                {
                    if (!args.TryRead(out Rename2In rename2)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                    newDir = rename2.Newdir;
                    flags = rename2.Flags;
                }
                if (!args.TryReadString(out var oldName) || !args.TryReadString(out var newName))
                    return Malformed(FrameErrorKind.MissingNul, request, reply);
                return Status(reply, unique, _fs.Rename(ctx, node, oldName, new NodeId(newDir), newName, flags));
            }

            case FuseOpcode.Link:
            {
                if (!args.TryRead(out LinkIn link)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                return Entry(reply, unique, _fs.Link(ctx, new NodeId(link.Oldnodeid), node, name));
            }

            case FuseOpcode.Open:
            case FuseOpcode.OpenDir:
            {
                if (!args.TryRead(out OpenIn open)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Reply(reply, unique, opcode == FuseOpcode.Open ? _fs.Open(ctx, node, open) : _fs.OpenDir(ctx, node, open));
            }

            case FuseOpcode.Read:
            case FuseOpcode.ReadDir:
            case FuseOpcode.ReadDirPlus:
            {
                if (!args.TryRead(out ReadIn read)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                var dest = FuseReply.Payload(reply);
                if ((uint)dest.Length > read.Size) dest = dest[..(int)read.Size];
                var result = opcode == FuseOpcode.Read
                    ? _fs.Read(ctx, node, read, dest)
                    : _fs.ReadDir(ctx, node, read, dest, opcode == FuseOpcode.ReadDirPlus);
                return Bytes(reply, unique, result);
            }

            case FuseOpcode.Write:
            {
                if (!args.TryRead(out WriteIn write)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (write.Size > MaxWrite || !args.TryReadBytes((int)write.Size, out var data))
                    return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
                return Reply(reply, unique, _fs.Write(ctx, node, write, data), static size => new WriteOut { Size = size });
            }

            case FuseOpcode.StatFs:
                return Reply(reply, unique, _fs.StatFs(ctx, node), static st => new StatFsOut { St = st });

            case FuseOpcode.Release:
            case FuseOpcode.ReleaseDir:
            {
                if (!args.TryRead(out ReleaseIn release)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (opcode == FuseOpcode.ReleaseDir) return Status(reply, unique, _fs.ReleaseDir(ctx, node, release));
                var released = _fs.Release(ctx, node, release);
                _lockWaits.Kick();
                return Status(reply, unique, released);
            }

            case FuseOpcode.FSync:
            case FuseOpcode.FSyncDir:
            {
                if (!args.TryRead(out FSyncIn fsync)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Status(reply, unique, opcode == FuseOpcode.FSync ? _fs.FSync(ctx, node, fsync) : _fs.FSyncDir(ctx, node, fsync));
            }

            case FuseOpcode.Flush:
                if (!args.TryRead(out FlushIn flush)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                var flushed = _fs.Flush(ctx, node, flush);
                _lockWaits.Kick();
                return Status(reply, unique, flushed);

            case FuseOpcode.SetXAttr:
            {
                var size = (session.Flags & InitFlags.SetXAttrExt) != 0 ? Unsafe.SizeOf<SetXAttrIn>() : FuseConstants.CompatSetXAttrInSize;
                if (!args.TryReadPrefix(size, out SetXAttrIn setx)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                if (setx.Size > 64 * 1024 || !args.TryReadBytes((int)setx.Size, out var value))
                    return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
                return Status(reply, unique, _fs.SetXAttr(ctx, node, name, value, setx));
            }

            case FuseOpcode.GetXAttr:
            case FuseOpcode.ListXAttr:
            {
                if (!args.TryRead(out GetXAttrIn getx)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                ReadOnlySpan<byte> name = default;
                if (opcode == FuseOpcode.GetXAttr && !args.TryReadString(out name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                var payload = FuseReply.Payload(reply);
                var dest = getx.Size == 0 ? Span<byte>.Empty : payload[..(int)Math.Min(getx.Size, (uint)payload.Length)];
                var result = opcode == FuseOpcode.GetXAttr ? _fs.GetXAttr(ctx, node, name, dest) : _fs.ListXAttr(ctx, node, dest);
                if (!result.IsOk) return FuseReply.Error(reply, unique, result.Error);
                // A size query (size 0) is answered with fuse_getxattr_out; otherwise the bytes themselves.
                return getx.Size == 0
                    ? FuseReply.Struct(reply, unique, new GetXAttrOut { Size = (uint)result.Value })
                    : FuseReply.Finish(reply, unique, result.Value);
            }

            case FuseOpcode.RemoveXAttr:
            {
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                return Status(reply, unique, _fs.RemoveXAttr(ctx, node, name));
            }

            case FuseOpcode.GetLk:
            {
                if (!args.TryRead(out LkIn lk)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Reply(reply, unique, _fs.GetLk(ctx, node, lk), static held => new LkOut { Lk = held });
            }

            case FuseOpcode.SetLk:
            case FuseOpcode.SetLkW:
            {
                if (!args.TryRead(out LkIn lk)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (opcode == FuseOpcode.SetLk)
                {
                    var result = _fs.SetLk(ctx, node, lk, wait: false);
                    _lockWaits.Kick();
                    return Status(reply, unique, result);
                }
                if (sink is not null)
                    return _lockWaits.TryAnswerNow(ctx, node, lk, sink, route, out var granted) ? Status(reply, unique, granted) : Deferred;
                using (var blocking = new BlockingSink())
                    return _lockWaits.TryAnswerNow(ctx, node, lk, blocking, route, out var now) ? Status(reply, unique, now) : blocking.Wait(reply);
            }

            case FuseOpcode.Access:
                if (!args.TryRead(out AccessIn access)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Status(reply, unique, _fs.Access(ctx, node, access.Mask));

            case FuseOpcode.Create:
            {
                if (!args.TryRead(out CreateIn create)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                if (!args.TryReadString(out var name)) return Malformed(FrameErrorKind.MissingNul, request, reply);
                Result<CreateOut> result;
                if ((session.Flags & InitFlags.SecurityCtx) == 0) result = _fs.Create(ctx, node, name, create);
                else if (!TryReadLabel(session, request, args.Rest, out var label)) return Malformed(FrameErrorKind.PayloadMismatch, request, reply);
                else result = _fs.Create(ctx, node, name, create, label);
                return result.IsOk
                    ? FuseReply.Structs(reply, unique, result.Value.Entry, result.Value.Open)
                    : FuseReply.Error(reply, unique, result.Error);
            }

            case FuseOpcode.FAllocate:
                if (!args.TryRead(out FAllocateIn fallocate)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Status(reply, unique, _fs.FAllocate(ctx, node, fallocate));

            case FuseOpcode.LSeek:
            {
                if (!args.TryRead(out LSeekIn lseek)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                return Reply(reply, unique, _fs.LSeek(ctx, node, lseek), static offset => new LSeekOut { Offset = offset });
            }

            case FuseOpcode.CopyFileRange:
            {
                if (!args.TryRead(out CopyFileRangeIn copy)) return Malformed(FrameErrorKind.BodyTooShort, request, reply);
                // fuse_write_out.size is 32 bits: the kernel never asks for more than that in one request.
                return Reply(reply, unique, _fs.CopyFileRange(ctx, node, copy), static n => new WriteOut { Size = (uint)Math.Min(n, uint.MaxValue) });
            }

            case FuseOpcode.SyncFs:
                return Status(reply, unique, _fs.SyncFs(ctx, node));

            default:
                // BMAP, IOCTL, POLL, NOTIFY_REPLY, DAX mappings, TMPFILE, STATX and anything unknown.
                return FuseReply.Error(reply, unique, Errno.ENOSYS);
        }
    }

    private int HandleInit(in FuseRequest request, Span<byte> reply)
    {
        var args = new FuseArgReader(request.Body);
        // Clients before 7.6 sent only major and minor; anything shorter than the 16-byte core is refused below.
        var available = Math.Min(request.Body.Length, Unsafe.SizeOf<InitIn>());
        if (available < 16 || !args.TryReadPrefix(available, out InitIn init))
            return Malformed(FrameErrorKind.BodyTooShort, request, reply);

        if (init.Major != FuseConstants.KernelVersion || init.Minor < FuseConstants.MinimumMinorVersion)
        {
            if (init.Major > FuseConstants.KernelVersion)
            {
                // A newer major: answer with ours so the client can retry with a version both speak.
                var ours = new InitOut { Major = FuseConstants.KernelVersion, Minor = FuseConstants.KernelMinorVersion };
                return FuseReply.Struct(reply, request.Unique, ours, FuseConstants.CompatInitOutSize);
            }
            LogUnsupportedVersion(init.Major, init.Minor, FuseConstants.MinimumMinorVersion);
            return FuseReply.Error(reply, request.Unique, Errno.EPROTO);
        }

        // A second INIT starts a new session: every node and handle of the old one is forgotten.
        if (_session is not null)
        {
            _lockWaits.CancelAll();
            _fs.Destroy();
        }

        var offered = (InitFlags)init.Flags;
        if ((offered & InitFlags.InitExt) != 0) offered |= (InitFlags)((ulong)init.Flags2 << 32);
        var wanted = _fs.Init(offered) | InitFlags.MaxPages | InitFlags.BigWrites;
        var flags = wanted & offered;
        if ((offered & InitFlags.InitExt) != 0) flags |= InitFlags.InitExt;
        var minor = Math.Min(init.Minor, FuseConstants.KernelMinorVersion);

        var output = new InitOut
        {
            Major = FuseConstants.KernelVersion,
            Minor = minor,
            MaxReadahead = init.MaxReadahead,
            Flags = (uint)flags,
            Flags2 = (uint)((ulong)flags >> 32),
            MaxBackground = 64,
            CongestionThreshold = 48,
            MaxWrite = MaxWrite,
            TimeGran = 1,
            MaxPages = MaxPages,
        };
        _session = new Session(minor, flags);
        Destroyed = false;
        // Recorded before the reply leaves: a daemon started after a crash must find the session the guest now has.
        SessionStarted?.Invoke(minor, flags);
        LogInit(minor, init.Minor, new InitFlagsLog((ulong)flags), MaxWrite);
        var size = minor < 5 ? FuseConstants.CompatInitOutSize : minor < 23 ? FuseConstants.Compat22InitOutSize : Unsafe.SizeOf<InitOut>();
        return FuseReply.Struct(reply, request.Unique, output, size);
    }

    /// <summary>
    /// The FUSE_EXT_GROUPS extension of a creating request: the number of groups it lists (Linux sends one, the parent
    /// directory's group) with the first in <paramref name="group"/>, 0 when there is none, -1 when it is malformed
    /// (<c>nr_groups</c> disagrees with the record's size, which is <c>fuse_supp_groups</c> and the gids, aligned to 8).
    /// </summary>
    internal static int ReadSuppGroup(ReadOnlySpan<byte> extensions, out uint group)
    {
        group = FuseContext.NoGroup;
        if (!FuseRequest.TryFindExtension(extensions, FuseConstants.ExtGroups, out var payload)) return -1;
        if (payload.IsEmpty) return 0;
        if (payload.Length < sizeof(uint)) return -1;
        var count = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(payload);
        var header = Unsafe.SizeOf<ExtHeader>();
        if (count > (uint)(payload.Length / sizeof(uint)) || ((header + sizeof(uint) * (count + 1) + 7) & ~7u) != header + payload.Length) return -1;
        if (count == 0) return 0;
        group = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(payload[sizeof(uint)..]);
        return (int)count;
    }

    /// <summary>
    /// The security context of a creating request: from protocol 7.38 on it is an extension at the end of the frame,
    /// before that the argument after the names. False when it is malformed.
    /// </summary>
    private static bool TryReadLabel(Session session, in FuseRequest request, ReadOnlySpan<byte> rest, out SecurityContext label) =>
        session.Minor >= 38 ? SecurityContext.TryFind(request.Extensions, out label) : SecurityContext.TryRead(rest, out label);

    private void HandleBatchForget(in FuseRequest request, ref FuseArgReader args)
    {
        if (!args.TryRead(out BatchForgetIn batch))
        {
            Malformed(FrameErrorKind.BodyTooShort, request);
            return;
        }
        // Forget only the entries actually present: a count larger than the frame is a lie, not a reason to read on.
        for (uint i = 0; i < batch.Count; i++)
        {
            if (!args.TryRead(out ForgetOne one))
            {
                Malformed(FrameErrorKind.PayloadMismatch, request);
                return;
            }
            _fs.Forget(new NodeId(one.Nodeid), one.Nlookup);
        }
    }

    private int Malformed(FrameErrorKind kind, in FuseRequest request, Span<byte> reply)
    {
        Malformed(kind, request);
        return FuseReply.Error(reply, request.Unique, Errno.EINVAL);
    }

    private void Malformed(FrameErrorKind kind, in FuseRequest request)
    {
        Counters.CountMalformed();
        if (_log.IsEnabled(LogLevel.Warning))
            LogMalformed(new FrameError(kind, request.Header.Opcode, request.Header.Unique).ToString());
    }

    private static int Entry(Span<byte> reply, RequestId unique, in Result<EntryOut> result) =>
        result.IsOk ? FuseReply.Struct(reply, unique, result.Value) : FuseReply.Error(reply, unique, result.Error);

    private static int Reply<T>(Span<byte> reply, RequestId unique, in Result<T> result) where T : unmanaged =>
        result.IsOk ? FuseReply.Struct(reply, unique, result.Value) : FuseReply.Error(reply, unique, result.Error);

    /// <summary>A result whose reply struct wraps the value (<paramref name="wrap"/> is static: nothing is allocated).</summary>
    private static int Reply<T, TOut>(Span<byte> reply, RequestId unique, in Result<T> result, Func<T, TOut> wrap) where TOut : unmanaged =>
        result.IsOk ? FuseReply.Struct(reply, unique, wrap(result.Value)) : FuseReply.Error(reply, unique, result.Error);

    private static int Bytes(Span<byte> reply, RequestId unique, in Result<int> result) =>
        result.IsOk ? FuseReply.Finish(reply, unique, result.Value) : FuseReply.Error(reply, unique, result.Error);

    private static int Status(Span<byte> reply, RequestId unique, Errno error) =>
        error.IsError ? FuseReply.Error(reply, unique, error) : FuseReply.Finish(reply, unique, 0);

    /// <summary>The sink of the blocking <see cref="Handle(ReadOnlySpan{byte}, Span{byte})"/>: holds the one deferred reply.</summary>
    private sealed class BlockingSink : IDeferredReplySink, IDisposable
    {
        private readonly ManualResetEventSlim _done = new();
        private byte[]? _reply;

        public void SendDeferred(ReplyRoute route, ReadOnlySpan<byte> reply)
        {
            _reply = reply.ToArray();
            _done.Set();
        }

        public int Wait(Span<byte> reply)
        {
            _done.Wait();
            _reply!.CopyTo(reply);
            return _reply!.Length;
        }

        public void Dispose() => _done.Dispose();
    }
}
