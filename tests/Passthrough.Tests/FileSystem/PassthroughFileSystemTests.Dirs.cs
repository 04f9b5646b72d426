using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    internal readonly record struct Listed(string Name, ulong Nodeid, uint Mode, ulong Offset, uint Type);

    /// <summary>Parses one READDIR / READDIRPLUS reply.</summary>
    internal static List<Listed> Parse(ReadOnlySpan<byte> reply, bool plus)
    {
        var list = new List<Listed>();
        var pos = 0;
        while (pos < reply.Length)
        {
            if (plus)
            {
                var p = MemoryMarshal.Read<DirentPlus>(reply[pos..]);
                var name = Encoding.UTF8.GetString(reply.Slice(pos + DirentWriter.DirentPlusSize, (int)p.Dirent.Namelen));
                list.Add(new Listed(name, p.EntryOut.Nodeid, p.EntryOut.Attr.Mode, p.Dirent.Off, p.Dirent.Type));
                pos += DirentWriter.Align(DirentWriter.DirentPlusSize + (int)p.Dirent.Namelen);
            }
            else
            {
                var d = MemoryMarshal.Read<Dirent>(reply[pos..]);
                var name = Encoding.UTF8.GetString(reply.Slice(pos + DirentWriter.DirentSize, (int)d.Namelen));
                list.Add(new Listed(name, 0, d.Type << 12, d.Off, d.Type));
                pos += DirentWriter.Align(DirentWriter.DirentSize + (int)d.Namelen);
            }
        }
        return list;
    }

    /// <summary>Reads a directory to its end with replies of <paramref name="size"/> bytes, resuming at each last offset.</summary>
    internal static Dictionary<string, Listed> ReadAllEntries(TestShare share, NodeId dir, ulong fh, bool plus, int size, ulong start = 0)
    {
        var all = new Dictionary<string, Listed>();
        var offset = start;
        var buffer = new byte[size];
        while (true)
        {
            var r = share.Fs.ReadDir(Root, dir, new ReadIn { Fh = fh, Offset = offset, Size = (uint)size }, buffer, plus);
            Assert.True(r.IsOk, r.ToString());
            if (r.Value == 0) return all;
            var batch = Parse(buffer.AsSpan(0, r.Value), plus);
            Assert.NotEmpty(batch);
            foreach (var e in batch) Assert.True(all.TryAdd(e.Name, e), $"{e.Name} listed twice");
            offset = batch[^1].Offset;
        }
    }

    [Fact]
    public void ReadDir_ListsEverything_WithSmallReplies_AndResumesAtAnOffset()
    {
        using var share = new TestShare();
        var expected = new HashSet<string> { ".", ".." };
        for (var i = 0; i < 120; i++)
        {
            var name = $"file-with-a-longish-name-{i}";
            File.WriteAllText(share.HostPath(name), "");
            expected.Add(name);
        }
        var fh = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        // 200 bytes hold only a few entries: entries that did not fit must come in the next reply, none lost
        var all = ReadAllEntries(share, NodeId.Root, fh, plus: false, size: 200);
        Assert.Equal(expected, all.Keys.ToHashSet());

        // A second handle started at a cookie from the middle returns exactly the entries after it (telldir/seekdir).
        var ordered = all.Values.OrderBy(e => e.Offset).ToList();
        var ordering = new List<string>();
        var fh2 = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        var buffer = new byte[1 << 16];
        var offset = 0ul;
        while (true)
        {
            var r = share.Fs.ReadDir(Root, NodeId.Root, new ReadIn { Fh = fh2, Offset = offset, Size = (uint)buffer.Length }, buffer, false);
            if (r.Value == 0) break;
            var batch = Parse(buffer.AsSpan(0, r.Value), false);
            ordering.AddRange(batch.Select(b => b.Name));
            offset = batch[^1].Offset;
        }
        Assert.Equal(expected.Count, ordering.Count);
        var middle = all[ordering[60]].Offset;
        var fh3 = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        var rest = ReadAllEntries(share, NodeId.Root, fh3, plus: false, size: 300, start: middle);
        Assert.Equal(ordering.Skip(61).ToHashSet(), rest.Keys.ToHashSet());
        // and the same handle can go back to the start
        var again = ReadAllEntries(share, NodeId.Root, fh3, plus: false, size: 4096, start: 0);
        Assert.Equal(expected, again.Keys.ToHashSet());
        Assert.Equal(Errno.Ok, share.Fs.ReleaseDir(Root, NodeId.Root, new ReleaseIn { Fh = fh3 }));
    }

    [Fact]
    public void ReadDirPlus_CountsOneLookupPerEntry_ExceptDotAndDotDot()
    {
        using var share = new TestShare();
        for (var i = 0; i < 30; i++) File.WriteAllText(share.HostPath($"f{i}"), "");
        Directory.CreateDirectory(share.HostPath("sub"));
        var fh = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        // small replies: an entry that does not fit must not have been counted
        var all = ReadAllEntries(share, NodeId.Root, fh, plus: true, size: 600);
        Assert.Equal(33, all.Count);
        Assert.Equal(0ul, all["."].Nodeid);
        Assert.Equal(0ul, all[".."].Nodeid);
        Assert.Equal(Libc_S_IFDIR, all["sub"].Mode & 0xF000);
        Assert.Equal(32, share.Fs.KnownNodes); // root + 31 entries
        foreach (var e in all.Values.Where(e => e.Nodeid != 0))
        {
            Assert.Equal(share.Lookup(NodeId.Root, e.Name).Nodeid, e.Nodeid);
            share.Fs.Forget(new NodeId(e.Nodeid), 2); // the READDIRPLUS lookup and ours
        }
        Assert.Equal(1, share.Fs.KnownNodes);
    }

    [Fact]
    public void UnlinkedButOpenFile_StaysReadableAndWritable()
    {
        using var share = new TestShare();
        var created = share.Fs.Create(Root, NodeId.Root, N("tmp"), new CreateIn { Flags = 2, Mode = 0x1A4 });
        Assert.True(created.IsOk, created.ToString());
        var node = new NodeId(created.Value.Entry.Nodeid);
        var fh = created.Value.Open.Fh;
        Assert.Equal(5u, share.Fs.Write(Root, node, new WriteIn { Fh = fh, Size = 5 }, "hello"u8).Value);
        Assert.Equal(Errno.Ok, share.Fs.Unlink(Root, NodeId.Root, N("tmp")));
        Assert.False(File.Exists(share.HostPath("tmp")));
        Assert.Equal(Errno.ENOENT, share.Fs.Lookup(Root, NodeId.Root, N("tmp")).Error);
        Assert.Equal(6u, share.Fs.Write(Root, node, new WriteIn { Fh = fh, Offset = 5, Size = 6 }, " world"u8).Value);
        Assert.Equal("hello world", Encoding.UTF8.GetString(share.ReadAll(node, fh)));
        var attr = share.Fs.GetAttr(Root, node, new FileHandle(fh));
        Assert.True(attr.IsOk);
        Assert.Equal(0u, attr.Value.Attr.Nlink);
        Assert.Equal(11ul, attr.Value.Attr.Size);
        Assert.Equal(11, share.Fs.BytesRead);
        Assert.Equal(11, share.Fs.BytesWritten);
    }
}
