using System.Buffers;
using System.Runtime.InteropServices;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.FileSystem;

public sealed partial class PassthroughFileSystem
{
    private const int DirBufferSize = 16 * 1024;

    /// <inheritdoc/>
    public Result<OpenOut> OpenDir(in FuseContext ctx, NodeId node, in OpenIn args)
    {
        var err = Acquire(node, out var n, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            if (!n!.IsDir) return Errno.ENOTDIR;
            // "." below an O_PATH directory descriptor is that directory: no name from the guest is involved.
            var fd = OpenAt(lease.Fd, ".\0"u8, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC);
            if (fd < 0) return LastErrno();
            var dir = Register(n, new SafeFd(fd), isDir: true, Libc.O_RDONLY, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC);
            var flags = _settings.Cache == CachePolicy.Always ? OpenOutFlags.CacheDir | OpenOutFlags.KeepCache : OpenOutFlags.None;
            return new OpenOut { Fh = dir.Id, OpenFlags = (uint)flags };
        }
    }

    /// <inheritdoc/>
    public Result<int> ReadDir(in FuseContext ctx, NodeId node, in ReadIn args, Span<byte> destination, bool plus)
    {
        var err = GetFile(node, args.Fh, dir: true, out var dir);
        if (err.IsError) return err;
        if (args.Size < (uint)destination.Length) destination = destination[..(int)args.Size];
        var writer = new DirentWriter(destination);

        var allowlist = _settings.Allowlist;
        Span<byte> path = allowlist is null ? default : stackalloc byte[PathMax];
        lock (dir!)
        {
            // Released meanwhile (RELEASEDIR closes the descriptor under this lock).
            if (dir.Fd.IsClosed) return Errno.EBADF;
            var dirLength = allowlist is null ? 0 : RelativePathBytes(dir.Fd.Value, path);
            if (dirLength < 0) return 0;
            dir.Buffer ??= ArrayPool<byte>.Shared.Rent(DirBufferSize);
            if (!dir.Positioned || args.Offset != dir.NextOffset)
            {
                // A new position (first read, seekdir, or a resumed READDIR): d_off cookies are what lseek takes.
                if (args.Offset > long.MaxValue) return Errno.EINVAL;
                if (Libc.lseek(dir.Fd, (long)args.Offset, Libc.SEEK_SET) < 0) return LastErrno();
                dir.BufferPos = dir.BufferLen = 0;
                dir.NextOffset = args.Offset;
                dir.Positioned = true;
            }

            while (true)
            {
                if (dir.BufferPos >= dir.BufferLen)
                {
                    var n = Libc.getdents64(dir.Fd, dir.Buffer, (nuint)dir.Buffer.Length);
                    if (n < 0)
                    {
                        if (writer.Length == 0) return LastErrno();
                        break;
                    }
                    if (n == 0) break;
                    dir.BufferPos = 0;
                    dir.BufferLen = (int)n;
                }

                // struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name NUL-terminated.
                var record = dir.Buffer.AsSpan(dir.BufferPos, dir.BufferLen - dir.BufferPos);
                var ino = MemoryMarshal.Read<ulong>(record);
                var off = MemoryMarshal.Read<ulong>(record[8..]);
                var reclen = MemoryMarshal.Read<ushort>(record[16..]);
                var type = (uint)record[18];
                var nameArea = record[19..reclen];
                var name = nameArea[..nameArea.IndexOf((byte)0)];

                if (allowlist is not null && !IsDots(name) && !Permits(allowlist, path, AppendChild(path, dirLength, name)))
                {
                    Log.Hidden(_logger, dir.Node.Id);
                }
                else if (!plus)
                {
                    if (!writer.TryAdd(ino, off, type, name)) break;
                }
                else if (IsDots(name))
                {
                    // The kernel does not instantiate "." and ".." from READDIRPLUS; no lookup is counted.
                    var entry = new EntryOut();
                    entry.Attr.Ino = ino;
                    entry.Attr.Mode = type << 12;
                    if (!writer.TryAddPlus(entry, off, type, name)) break;
                }
                else
                {
                    // Check the room first: a lookup counted for an entry that is not sent would leak.
                    if (!writer.FitsPlus(name.Length)) break;
                    var entry = LookupAt(dir.Fd, dir.Node.Id, name, checkAllowlist: false);
                    if (!entry.IsOk)
                    {
                        // Gone since getdents: skip it. Anything else ends this reply (or fails it when empty),
                        // leaving the entry to be retried by the next READDIRPLUS.
                        if (entry.Error != Errno.ENOENT)
                        {
                            if (writer.Length == 0) return entry.Error;
                            break;
                        }
                    }
                    else
                    {
                        var e = entry.Value;
                        writer.TryAddPlus(e, off, type, name);
                    }
                }
                dir.BufferPos += reclen;
                dir.NextOffset = off;
            }
        }
        return writer.Length;
    }

    private static bool Permits(Allowlist allowlist, Span<byte> path, int length) => length >= 0 && allowlist.Permits(path[..length]);

    /// <inheritdoc/>
    public Errno ReleaseDir(in FuseContext ctx, NodeId node, in ReleaseIn args)
    {
        if (!_files.TryGetValue(args.Fh, out var dir) || !dir.IsDir || dir.Node.Id != node.Value) return Errno.EBADF;
        if (!_files.TryRemove(args.Fh, out _)) return Errno.EBADF;
        ForgetHandle(dir);
        Interlocked.Decrement(ref dir.Node.OpenCount);
        lock (dir)
        {
            if (dir.Buffer is not null) ArrayPool<byte>.Shared.Return(dir.Buffer);
            dir.Buffer = null;
            dir.Fd.Dispose();
        }
        return Errno.Ok;
    }

    /// <inheritdoc/>
    public Errno FSyncDir(in FuseContext ctx, NodeId node, in FSyncIn args)
    {
        var err = GetFile(node, args.Fh, dir: true, out var dir);
        return err.IsError ? err : Sync(dir!, args);
    }
}
