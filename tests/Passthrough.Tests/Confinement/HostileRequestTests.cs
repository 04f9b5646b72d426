using Hypervisor.Protocol.Share;
using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Hypervisor.Passthrough.Tests.FileSystem;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging.Abstractions;
using static Hypervisor.Passthrough.Tests.FuseFrames;

namespace Hypervisor.Passthrough.Tests.Confinement;

/// <summary>
/// A client that bypasses the guest kernel and sends arbitrary frames to the engine over the real passthrough
/// filesystem: whatever it sends, nothing outside the share is changed or revealed, every bad request gets an
/// error (never a hang or a crash), and the daemon keeps serving normal requests afterwards. The share sits next to
/// an "outside" directory holding a sentinel file that every test checks at the end.
/// </summary>
public sealed class HostileRequestTests : IDisposable
{
    private const string SentinelText = "outside secret: must never be read, changed or removed through the share";
    private readonly string _root;
    private readonly string _share;
    private readonly string _outside;
    private readonly string _sentinel;
    private readonly IFileSystem _fs;
    private readonly RawFuseClient _client;
    private readonly string[] _outsideListing;
    private readonly DateTime _sentinelMtime;
    private readonly UnixFileMode _sentinelMode;

    public HostileRequestTests()
    {
        _root = Directory.CreateTempSubdirectory("pt-hostile-").FullName;
        _share = Path.Combine(_root, "share");
        _outside = Path.Combine(_root, "outside");
        Directory.CreateDirectory(_share);
        Directory.CreateDirectory(Path.Combine(_outside, "dir"));
        _sentinel = Path.Combine(_outside, "sentinel");
        File.WriteAllText(_sentinel, SentinelText);
        File.SetUnixFileMode(_sentinel, (UnixFileMode)0b110_100_100);
        File.WriteAllText(Path.Combine(_share, "file"), "inside");
        Directory.CreateDirectory(Path.Combine(_share, "dir"));
        File.WriteAllText(Path.Combine(_share, "dir", "inner"), "inner");
        File.CreateSymbolicLink(Path.Combine(_share, "escape"), "../outside");
        File.CreateSymbolicLink(Path.Combine(_share, "sentlink"), "../outside/sentinel");
        File.CreateSymbolicLink(Path.Combine(_share, "abslink"), _sentinel);
        File.CreateSymbolicLink(Path.Combine(_share, "passwd"), "/etc/passwd");
        _outsideListing = Listing(_outside);
        _sentinelMtime = File.GetLastWriteTimeUtc(_sentinel);
        _sentinelMode = File.GetUnixFileMode(_sentinel);

        _fs = new PassthroughFileSystem(new LiveSettings(new ShareSettings { SharedDir = _share, Xattr = true }), NullLogger.Instance);
        _client = new RawFuseClient(new FuseEngine(_fs));
        Assert.True(_client.Init().Ok);
    }

    public void Dispose()
    {
        try
        {
            AssertOutsideUntouched();
            AssertStillServing();
        }
        finally
        {
            _fs.Destroy();
            (_fs as IDisposable)?.Dispose();
            Directory.Delete(_root, recursive: true);
        }
    }

    private static string[] Listing(string dir) =>
        Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray();

    private void AssertOutsideUntouched()
    {
        Assert.Equal(SentinelText, File.ReadAllText(_sentinel));
        Assert.Equal(_sentinelMtime, File.GetLastWriteTimeUtc(_sentinel));
        Assert.Equal(_sentinelMode, File.GetUnixFileMode(_sentinel));
        Assert.Equal(_outsideListing, Listing(_outside));
        Assert.Equal(new[] { _outside, _share }, Directory.GetFileSystemEntries(_root).Order(StringComparer.Ordinal).ToArray());
    }

    /// <summary>After whatever a test sent, an ordinary LOOKUP + OPEN + READ still works.</summary>
    private void AssertStillServing()
    {
        var node = _client.LookupId(1, "file");
        var open = _client.Open(node);
        Assert.True(open.Ok, $"OPEN file after the hostile requests: {open}");
        var read = _client.Read(node, open.As<OpenOut>().Fh);
        Assert.True(read.Ok, $"READ file after the hostile requests: {read}");
        Assert.Equal("inside", Encoding.UTF8.GetString(read.Payload));
        _client.Send(FuseOpcode.Release, node, Struct(new ReleaseIn { Fh = open.As<OpenOut>().Fh }));
    }

    private static void AssertFails(RawFuseClient.Reply reply, string what)
    {
        Assert.True(reply.Length >= 16, $"{what}: no reply");
        Assert.True(reply.Error < 0, $"{what}: expected an error, got {reply}");
    }

    private static void AssertErrno(RawFuseClient.Reply reply, Errno expected, string what)
    {
        Assert.True(reply.Length >= 16 && reply.Error == -expected.Value, $"{what}: expected {expected}, got {reply}");
    }

    public static TheoryData<string> EscapingNames() => new()
    {
        "../outside", "../outside/sentinel", "..//outside", "dir/../../outside", "/etc/passwd", "a/b", "dir/inner",
        "escape/sentinel", "/", "//", "../../../../../../etc",
    };

    [Theory]
    [MemberData(nameof(EscapingNames))]
    public void NamesWithSlashesNeverResolve(string name)
    {
        AssertFails(_client.Lookup(1, name), $"LOOKUP '{name}'");
        AssertFails(_client.Send(FuseOpcode.MkDir, 1, Struct(new MkDirIn { Mode = 0x41ed }), Name(name)), $"MKDIR '{name}'");
        AssertFails(_client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = 0x241, Mode = 0x81a4 }), Name(name)), $"CREATE '{name}'");
        AssertFails(_client.Send(FuseOpcode.MkNod, 1, Struct(new MkNodIn { Mode = 0x81a4 }), Name(name)), $"MKNOD '{name}'");
        AssertFails(_client.Send(FuseOpcode.Symlink, 1, Name(name), Name("target")), $"SYMLINK '{name}'");
        AssertFails(_client.Send(FuseOpcode.Unlink, 1, Name(name)), $"UNLINK '{name}'");
        AssertFails(_client.Send(FuseOpcode.RmDir, 1, Name(name)), $"RMDIR '{name}'");
        AssertFails(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = 1 }), Name(name), Name("moved")), $"RENAME '{name}' to moved");
        AssertFails(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = 1 }), Name("file"), Name(name)), $"RENAME file to '{name}'");
        var file = _client.LookupId(1, "file");
        AssertFails(_client.Send(FuseOpcode.Link, 1, Struct(new LinkIn { Oldnodeid = file }), Name(name)), $"LINK file as '{name}'");
        Assert.True(File.Exists(Path.Combine(_share, "file")));
    }

    [Fact]
    public void DotDotAtTheRootIsTheRoot()
    {
        var rootAttr = _client.GetAttr(1);
        Assert.True(rootAttr.Ok);
        var dotdot = _client.Lookup(1, "..");
        Assert.True(dotdot.Ok, $"LOOKUP .. at the root: {dotdot}");
        Assert.Equal(rootAttr.As<AttrOut>().Attr.Ino, dotdot.As<EntryOut>().Attr.Ino);
        // ".." followed by a NUL and more bytes is still just "..".
        var trailing = _client.Lookup(1, Encoding.ASCII.GetBytes("..\0/outside\0"));
        Assert.True(trailing.Ok, $"LOOKUP ..\\0/outside at the root: {trailing}");
        Assert.Equal(rootAttr.As<AttrOut>().Attr.Ino, trailing.As<EntryOut>().Attr.Ino);
        // ".." of a subdirectory must not climb above the root either: from dir, ".." then ".." again.
        var dir = _client.LookupId(1, "dir");
        var up = _client.Lookup(dir, "..");
        Assert.True(up.Ok, $"LOOKUP .. in dir: {up}");
        Assert.Equal(rootAttr.As<AttrOut>().Attr.Ino, up.As<EntryOut>().Attr.Ino);
        var upup = _client.Lookup(up.As<EntryOut>().Nodeid, "..");
        Assert.True(upup.Ok, $"LOOKUP .. of the root reached through dir/..: {upup}");
        Assert.Equal(rootAttr.As<AttrOut>().Attr.Ino, upup.As<EntryOut>().Attr.Ino);
        var dot = _client.Lookup(1, ".");
        if (dot.Ok) Assert.Equal(rootAttr.As<AttrOut>().Attr.Ino, dot.As<EntryOut>().Attr.Ino);
        AssertFails(_client.Send(FuseOpcode.MkDir, 1, Struct(new MkDirIn { Mode = 0x41ed }), Name("..")), "MKDIR ..");
        AssertFails(_client.Send(FuseOpcode.RmDir, 1, Name("..")), "RMDIR ..");
        AssertFails(_client.Send(FuseOpcode.Unlink, 1, Name("..")), "UNLINK ..");
        AssertFails(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = 1 }), Name(".."), Name("x")), "RENAME .. x");
        AssertFails(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = 1 }), Name("file"), Name("..")), "RENAME file ..");
    }

    [Fact]
    public void EmptyOverlongAndUnterminatedNamesFail()
    {
        AssertFails(_client.Lookup(1, Name("")), "LOOKUP of an empty name");
        AssertFails(_client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = 0x41, Mode = 0x81a4 }), Name("")), "CREATE of an empty name");
        AssertErrno(_client.Lookup(1, Encoding.ASCII.GetBytes("file")), Errno.EINVAL, "LOOKUP without a NUL");
        AssertErrno(_client.Lookup(1, Name(new string('a', 256))), Errno.ENAMETOOLONG, "LOOKUP of a 256-byte name");
        AssertErrno(_client.Lookup(1, Name(new string('a', 4096))), Errno.ENAMETOOLONG, "LOOKUP of a 4096-byte name");
        AssertFails(_client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = 0x41, Mode = 0x81a4 }), Name(new string('b', 4096))), "CREATE of a 4096-byte name");
        AssertFails(_client.Send(FuseOpcode.Symlink, 1, Name("long-target"), Name(new string('t', 8192))), "SYMLINK with an 8 KiB target");
        AssertErrno(_client.Lookup(1, Name(new string('a', 255))), Errno.ENOENT, "LOOKUP of a 255-byte name that does not exist");
        // A NUL inside the name ends it: "file\0../outside" is "file", inside the share.
        var cut = _client.Lookup(1, Encoding.ASCII.GetBytes("file\0../outside/sentinel\0"));
        Assert.True(cut.Ok, $"LOOKUP file\\0...: {cut}");
        Assert.Equal((ulong)"inside".Length, cut.As<EntryOut>().Attr.Size);
    }

    [Fact]
    public void SymlinksPointingOutsideAreNeverFollowed()
    {
        foreach (var name in new[] { "escape", "sentlink", "abslink", "passwd" })
        {
            var entry = _client.Lookup(1, name);
            Assert.True(entry.Ok, $"LOOKUP {name}: {entry}");
            var e = entry.As<EntryOut>();
            Assert.Equal(0xA000u, e.Attr.Mode & 0xF000); // the link itself, S_IFLNK
            var node = e.Nodeid;
            AssertFails(_client.Open(node), $"OPEN {name}");
            AssertFails(_client.Open(node, 2 | 0x200), $"OPEN {name} O_RDWR|O_TRUNC");
            AssertFails(_client.OpenDir(node), $"OPENDIR {name}");
            AssertFails(_client.Lookup(node, "sentinel"), $"LOOKUP sentinel in {name}");
            AssertFails(_client.Send(FuseOpcode.Create, node, Struct(new CreateIn { Flags = 0x41, Mode = 0x81a4 }), Name("planted")), $"CREATE in {name}");
            AssertFails(_client.Send(FuseOpcode.MkDir, node, Struct(new MkDirIn { Mode = 0x41ed }), Name("planted")), $"MKDIR in {name}");
            AssertFails(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = node }), Name("file"), Name("sentinel")), $"RENAME file into {name}");
            // SETATTR on the link must not reach the target: size, mode, owner, times.
            _client.Send(FuseOpcode.SetAttr, node, Struct(new SetAttrIn { Valid = (uint)SetAttrValid.Size, Size = 0 }));
            _client.Send(FuseOpcode.SetAttr, node, Struct(new SetAttrIn { Valid = (uint)SetAttrValid.Mode, Mode = 0x81ff }));
            _client.Send(FuseOpcode.SetAttr, node, Struct(new SetAttrIn { Valid = (uint)(SetAttrValid.Uid | SetAttrValid.Gid), Uid = 1234, Gid = 1234 }));
            _client.Send(FuseOpcode.SetAttr, node, Struct(new SetAttrIn { Valid = (uint)(SetAttrValid.ATime | SetAttrValid.MTime), Atime = 1, Mtime = 1 }));
            _client.Send(FuseOpcode.SetXAttr, node, Struct(new SetXAttrIn { Size = 1 }), Name("user.planted"), [(byte)'x']);
            var readlink = _client.Send(FuseOpcode.ReadLink, node);
            Assert.True(readlink.Ok, $"READLINK {name}: {readlink}");
        }
        // Creating over an existing link must not open (and truncate) its target.
        AssertFails(_client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = 0x241 | 0x80, Mode = 0x81a4 }), Name("sentlink")), "CREATE O_EXCL over sentlink");
        var create = _client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = 0x241, Mode = 0x81a4 }), Name("sentlink"));
        if (create.Ok)
        {
            // Allowed only if it replaced nothing outside: the sentinel is checked in Dispose.
            var fh = create.As<CreateOut>().Open.Fh;
            _client.Send(FuseOpcode.Write, create.As<CreateOut>().Entry.Nodeid, Struct(new WriteIn { Fh = fh, Size = 4 }), "evil"u8.ToArray());
        }
        var passwd = File.ReadAllText("/etc/passwd");
        Assert.Equal(passwd, File.ReadAllText("/etc/passwd"));
    }

    [Fact]
    public async Task OpeningAFifoFailsWithoutBlocking()
    {
        var fifo = Path.Combine(_share, "fifo");
        Assert.Equal(0, Host.mkfifo(fifo, 0x1b6));
        var node = _client.LookupId(1, "fifo");
        foreach (var flags in new[] { 0, 1, 2 })
        {
            var open = Task.Run(() => _client.Open(node, flags));
            Assert.True(await Task.WhenAny(open, Task.Delay(TimeSpan.FromSeconds(5))) == open, $"OPEN of a FIFO with flags {flags} blocked");
            AssertFails(await open, $"OPEN of a FIFO with flags {flags}");
        }
    }

    [Fact]
    [Trait("Category", "Root")]
    public void OpeningADeviceFails()
    {
        var dev = Path.Combine(_share, "null");
        Assert.Equal(0, Host.mknod(dev, 0x2000 | 0x1b6, (1u << 8) | 3)); // char 1:3, /dev/null
        var node = _client.LookupId(1, "null");
        AssertFails(_client.Open(node, 2), "OPEN of a character device");
        // A device node the client creates itself (root may, as on virtiofsd) is just as unopenable through the daemon.
        var made = _client.Send(FuseOpcode.MkNod, 1, Struct(new MkNodIn { Mode = 0x6000 | 0x1b6, Rdev = 7u << 8 }), Name("loop0"));
        if (made.Ok)
        {
            AssertFails(_client.Open(made.As<EntryOut>().Nodeid, 2), "OPEN of a block device created through the daemon");
            Assert.Equal(0x6000u, made.As<EntryOut>().Attr.Mode & 0xF000);
        }
    }

    [Fact]
    public void UnknownAndForgottenNodesFail()
    {
        foreach (var node in new ulong[] { 0, 2_000_000, ulong.MaxValue, 1ul << 63 })
        {
            AssertErrno(_client.GetAttr(node), Errno.ENOENT, $"GETATTR node {node}");
            AssertFails(_client.Lookup(node, "file"), $"LOOKUP in node {node}");
            AssertFails(_client.Open(node), $"OPEN node {node}");
            AssertFails(_client.OpenDir(node), $"OPENDIR node {node}");
            AssertFails(_client.Send(FuseOpcode.MkDir, node, Struct(new MkDirIn { Mode = 0x41ed }), Name("x")), $"MKDIR in node {node}");
            AssertFails(_client.Send(FuseOpcode.SetAttr, node, Struct(new SetAttrIn { Valid = (uint)SetAttrValid.Size })), $"SETATTR node {node}");
            AssertFails(_client.Send(FuseOpcode.Link, 1, Struct(new LinkIn { Oldnodeid = node }), Name("x")), $"LINK node {node}");
            AssertFails(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = node }), Name("file"), Name("x")), $"RENAME into node {node}");
            Assert.Equal(0, _client.Send(FuseOpcode.Forget, node, Struct(new ForgetIn { Nlookup = 1 })).Length);
        }
        var file = _client.LookupId(1, "file");
        Assert.Equal(0, _client.Send(FuseOpcode.Forget, file, Struct(new ForgetIn { Nlookup = 1 })).Length);
        AssertFails(_client.GetAttr(file), "GETATTR of a forgotten node");
        AssertFails(_client.Open(file), "OPEN of a forgotten node");
        // Forgetting more than was looked up, twice, or the root must not break anything.
        Assert.Equal(0, _client.Send(FuseOpcode.Forget, file, Struct(new ForgetIn { Nlookup = ulong.MaxValue })).Length);
        Assert.Equal(0, _client.Send(FuseOpcode.Forget, 1, Struct(new ForgetIn { Nlookup = ulong.MaxValue })).Length);
        Assert.True(_client.GetAttr(1).Ok, "the root must survive a FORGET");
        // A forgotten id may come back for the same inode (its descriptor can still be cached), never for another.
        var again = _client.LookupId(1, "file");
        Assert.True(_client.GetAttr(again).Ok, "GETATTR after a new LOOKUP");
        File.WriteAllText(Path.Combine(_share, "another"), "");
        Assert.NotEqual(file, _client.LookupId(1, "another"));
    }

    [Fact]
    public void HandlesNeverIssuedOrOfTheWrongKindFail()
    {
        var file = _client.LookupId(1, "file");
        var dir = _client.LookupId(1, "dir");
        foreach (var fh in new ulong[] { 0, 12345, ulong.MaxValue })
        {
            AssertErrno(_client.Read(file, fh), Errno.EBADF, $"READ with fh {fh}");
            AssertErrno(_client.Send(FuseOpcode.Write, file, Struct(new WriteIn { Fh = fh, Size = 1 }), [1]), Errno.EBADF, $"WRITE with fh {fh}");
            AssertErrno(_client.ReadDir(dir, fh), Errno.EBADF, $"READDIR with fh {fh}");
            AssertFails(_client.ReadDir(dir, fh, plus: true), $"READDIRPLUS with fh {fh}");
            AssertFails(_client.Send(FuseOpcode.FSync, file, Struct(new FSyncIn { Fh = fh })), $"FSYNC with fh {fh}");
            AssertFails(_client.Send(FuseOpcode.FAllocate, file, Struct(new FAllocateIn { Fh = fh, Length = 4096 })), $"FALLOCATE with fh {fh}");
            AssertFails(_client.Send(FuseOpcode.LSeek, file, Struct(new LSeekIn { Fh = fh, Whence = 3 })), $"LSEEK with fh {fh}");
            AssertFails(_client.Send(FuseOpcode.CopyFileRange, file, Struct(new CopyFileRangeIn { FhIn = fh, FhOut = fh, NodeidOut = file, Len = 10 })), $"COPY_FILE_RANGE with fh {fh}");
            AssertFails(_client.Send(FuseOpcode.GetLk, file, Struct(new LkIn { Fh = fh, Lk = new FileLock { Type = 1, End = ulong.MaxValue } })), $"GETLK with fh {fh}");
            _client.Send(FuseOpcode.Release, file, Struct(new ReleaseIn { Fh = fh }));
            _client.Send(FuseOpcode.ReleaseDir, dir, Struct(new ReleaseIn { Fh = fh }));
            _client.Send(FuseOpcode.Flush, file, Struct(new FlushIn { Fh = fh }));
        }
        var dirHandle = _client.OpenDir(dir);
        Assert.True(dirHandle.Ok);
        var dfh = dirHandle.As<OpenOut>().Fh;
        AssertFails(_client.Read(dir, dfh), "READ with a directory handle");
        AssertFails(_client.Read(file, dfh), "READ of a file with a directory handle");
        AssertFails(_client.Send(FuseOpcode.Write, dir, Struct(new WriteIn { Fh = dfh, Size = 1 }), [1]), "WRITE with a directory handle");
        var fileHandle = _client.Open(file, 2);
        Assert.True(fileHandle.Ok);
        var ffh = fileHandle.As<OpenOut>().Fh;
        AssertFails(_client.ReadDir(file, ffh), "READDIR with a file handle");
        AssertFails(_client.ReadDir(dir, ffh), "READDIR of a directory with a file handle");
        // A released handle is gone.
        _client.Send(FuseOpcode.Release, file, Struct(new ReleaseIn { Fh = ffh }));
        AssertErrno(_client.Read(file, ffh), Errno.EBADF, "READ after RELEASE");
        _client.Send(FuseOpcode.ReleaseDir, dir, Struct(new ReleaseIn { Fh = dfh }));
        AssertErrno(_client.ReadDir(dir, dfh), Errno.EBADF, "READDIR after RELEASEDIR");
        // OPEN of a directory and OPENDIR of a file fail.
        AssertFails(_client.Open(dir), "OPEN of a directory");
        AssertFails(_client.OpenDir(file), "OPENDIR of a file");
        AssertFails(_client.Lookup(file, "x"), "LOOKUP inside a file");
    }

    [Fact]
    public void MalformedFramesAreRefusedAndChangeNothing()
    {
        var file = _client.LookupId(1, "file");
        var open = _client.Open(file, 2);
        var fh = open.As<OpenOut>().Fh;

        var frame = Build(FuseOpcode.GetAttr, 900, 1, new byte[16], lengthOverride: 4000);
        AssertErrno(_client.Raw(frame), Errno.EINVAL, "header longer than the frame");
        frame = Build(FuseOpcode.GetAttr, 901, 1, new byte[16], lengthOverride: 41);
        AssertErrno(_client.Raw(frame), Errno.EINVAL, "header shorter than the frame");
        Assert.Equal(0, _client.Raw(new byte[39]).Length);
        AssertErrno(_client.Send(FuseOpcode.Read, file, new byte[10]), Errno.EINVAL, "READ with a truncated fuse_read_in");
        AssertErrno(_client.Send(FuseOpcode.SetAttr, file, new byte[20]), Errno.EINVAL, "SETATTR with a truncated fuse_setattr_in");
        AssertErrno(_client.Send(FuseOpcode.MkDir, 1, new byte[4]), Errno.EINVAL, "MKDIR with a truncated fuse_mkdir_in");

        // WRITE whose payload is shorter than declared: refused, the file is not touched.
        AssertErrno(_client.Send(FuseOpcode.Write, file, Struct(new WriteIn { Fh = fh, Size = 100 }), "short"u8.ToArray()), Errno.EINVAL, "WRITE shorter than declared");
        AssertErrno(_client.Send(FuseOpcode.Write, file, Struct(new WriteIn { Fh = fh, Size = uint.MaxValue }), "short"u8.ToArray()), Errno.EINVAL, "WRITE declaring 4 GiB");
        Assert.Equal("inside", File.ReadAllText(Path.Combine(_share, "file")));

        // BATCH_FORGET claiming 4 billion entries with one present: no reply, no crash, no read past the frame.
        Assert.Equal(0, _client.Send(FuseOpcode.BatchForget, 0, Struct(new BatchForgetIn { Count = uint.MaxValue }), Struct(new ForgetOne { Nodeid = 1, Nlookup = 1 })).Length);
        Assert.Equal(0, _client.Send(FuseOpcode.BatchForget, 0, Struct(new BatchForgetIn { Count = 3 })).Length);

        // SETXATTR whose value size runs past the frame.
        AssertErrno(_client.Send(FuseOpcode.SetXAttr, file, Struct(new SetXAttrIn { Size = 1000 }), Name("user.x"), "abc"u8.ToArray()), Errno.EINVAL, "SETXATTR value beyond the frame");
        AssertErrno(_client.Send(FuseOpcode.SetXAttr, file, Struct(new SetXAttrIn { Size = uint.MaxValue }), Name("user.x")), Errno.EINVAL, "SETXATTR of 4 GiB");
        AssertFails(_client.Send(FuseOpcode.GetXAttr, file, Struct(new GetXAttrIn { Size = uint.MaxValue }), Name("user.x")), "GETXATTR of a missing attribute with a 4 GiB buffer");

        // RENAME and RENAME2 with the second name missing or unterminated.
        AssertErrno(_client.Send(FuseOpcode.Rename, 1, Struct(new RenameIn { Newdir = 1 }), Name("file")), Errno.EINVAL, "RENAME without a new name");
        AssertErrno(_client.Send(FuseOpcode.Rename2, 1, Struct(new Rename2In { Newdir = 1 }), Name("file"), "x"u8.ToArray()), Errno.EINVAL, "RENAME2 with an unterminated new name");
        AssertFails(_client.Send(FuseOpcode.Rename2, 1, Struct(new Rename2In { Newdir = 1, Flags = 0xffff }), Name("file"), Name("x")), "RENAME2 with unknown flags");
        AssertErrno(_client.Send(FuseOpcode.Symlink, 1, Name("only-one-name")), Errno.EINVAL, "SYMLINK without a target");
        Assert.True(File.Exists(Path.Combine(_share, "file")));

        // Lying sizes that are well-formed: a READ of 4 GiB returns at most the file.
        var read = _client.Read(file, fh, uint.MaxValue);
        Assert.True(read.Ok);
        Assert.Equal("inside", Encoding.UTF8.GetString(read.Payload));
        AssertFails(_client.Read(file, fh, 10, ulong.MaxValue), "READ at offset 2^64-1");
        AssertFails(_client.Send(FuseOpcode.Write, file, Struct(new WriteIn { Fh = fh, Size = 1, Offset = ulong.MaxValue }), [1]), "WRITE at offset 2^64-1");

        // Unknown opcodes get ENOSYS.
        AssertErrno(_client.Send((FuseOpcode)9999, 1, new byte[64]), Errno.ENOSYS, "unknown opcode");
        _client.Send(FuseOpcode.Release, file, Struct(new ReleaseIn { Fh = fh }));
    }

    [Fact]
    public void ReaddirShowsOnlyTheShare()
    {
        var open = _client.OpenDir(1);
        Assert.True(open.Ok);
        var names = new List<string>();
        ulong offset = 0;
        for (var i = 0; i < 100; i++)
        {
            var r = _client.Send(FuseOpcode.ReadDir, 1, Struct(new ReadIn { Fh = open.As<OpenOut>().Fh, Size = 4096, Offset = offset }));
            Assert.True(r.Ok, r.ToString());
            if (r.Payload.Length == 0) break;
            var span = r.Payload.AsSpan();
            while (span.Length >= 24)
            {
                var d = MemoryMarshal.Read<Dirent>(span);
                names.Add(Encoding.UTF8.GetString(span.Slice(24, (int)d.Namelen)));
                offset = d.Off;
                span = span[Math.Min(span.Length, (24 + (int)d.Namelen + 7) & ~7)..];
            }
        }
        Assert.Equal(new[] { ".", "..", "abslink", "dir", "escape", "file", "passwd", "sentlink" }, names.Order(StringComparer.Ordinal).ToArray());
        // Seeking a directory handle to an offset it never returned ends the listing or fails; it never shows other entries.
        var bogus = _client.Send(FuseOpcode.ReadDir, 1, Struct(new ReadIn { Fh = open.As<OpenOut>().Fh, Size = 4096, Offset = ulong.MaxValue - 5 }));
        Assert.True(!bogus.Ok || bogus.Payload.Length == 0 || !Encoding.UTF8.GetString(bogus.Payload).Contains("sentinel"));
    }

}
