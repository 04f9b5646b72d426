using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Hypervisor.Interop;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// Replies the daemon builds in guest memory (READDIRPLUS listings, GETXATTR values), end to end: the vdev process,
/// fuse_launcher and the sandboxed daemon, driven by the test front-end with guest RAM in two adjacent memory
/// regions. A listing whose room spans both regions and several descriptors must name every entry of the host
/// directory once, with the attributes the host has, and match the listing built into a single descriptor; the guest
/// memory around each buffer must stay untouched.
/// </summary>
public sealed class GuestMemoryReplyTests : IDisposable
{
    private const uint OpenDir = 27, ReadDirPlus = 44, GetXAttr = 22, ListXAttr = 23;
    private const int Files = 700;
    private static readonly TimeSpan T = TimeSpan.FromSeconds(20);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-gmr-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private sealed class Setup : IDisposable
    {
        public required Process Vdev;
        public required VhostUserFrontend Fe;
        public required GuestRam Ram1, Ram2;
        public required FrontendQueue Q;
        public required string Share;
        public int Daemon = -1;
        public ulong Unique = 100;

        public void Dispose()
        {
            Fe.Dispose();
            if (!Vdev.HasExited) Vdev.Kill();
            Vdev.WaitForExit();
            if (Daemon > 0 && Directory.Exists($"/proc/{Daemon}")) Libc.kill(Daemon, Libc.SIGKILL);
            Vdev.Dispose();
            Ram1.Dispose();
            Ram2.Dispose();
        }
    }

    /// <summary>The vdev with its daemon over a share of <see cref="Files"/> files with long names, INIT done, both regions mapped by the daemon.</summary>
    private Setup Start(string name, params string[] extra)
    {
        var share = Directory.CreateDirectory(Path.Combine(_dir, name)).FullName;
        for (int i = 0; i < Files; i++)
            File.WriteAllBytes(Path.Combine(share, $"entry-{i:D4}-" + new string((char)('a' + i % 26), 60 + i % 90)), new byte[i % 7 * 100]);
        var socket = Path.Combine(_dir, name + ".sock");
        var psi = new ProcessStartInfo(GuestBackend.ResolveVdev()) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--socket-path", socket, "--shared-dir", share, "--tag", "gmr", "--log-level", "warn" }.Concat(extra))
            psi.ArgumentList.Add(a);
        var vdev = Process.Start(psi)!;
        vdev.BeginErrorReadLine();
        vdev.BeginOutputReadLine();
        var ram1 = new GuestRam(32 << 20, 0x1000_0000, name + "-ram1");
        var ram2 = new GuestRam(32 << 20, 0x1200_0000, name + "-ram2");
        var fe = VhostUserFrontend.Connect(socket, TimeSpan.FromSeconds(30));
        fe.Negotiate();
        fe.SetMemTable(ram1, ram2);
        var q = fe.SetupQueues(ram1, 2, 64, 16 << 10)[1];
        var s = new Setup { Vdev = vdev, Fe = fe, Ram1 = ram1, Ram2 = ram2, Q = q, Share = share };
        Assert.Equal(0, FuseFrames.ReadOutHeader(q.Transact(FuseFrames.InitRequest(1), 4096, T)).Error);
        s.Daemon = HostProcesses.FindPassthroughDaemons(share).Single();
        SpinWait.SpinUntil(() => Mappings(s.Daemon, ram1) > 0 && Mappings(s.Daemon, ram2) > 0, T);
        Assert.True(Mappings(s.Daemon, ram1) > 0 && Mappings(s.Daemon, ram2) > 0, "the daemon did not map the guest's memory");
        return s;
    }

    private static int Mappings(int pid, GuestRam ram) =>
        File.ReadAllLines($"/proc/{pid}/maps").Count(l => l.Contains("/memfd:" + ram.Name + " ", StringComparison.Ordinal));

    private static ulong OpenRootDir(Setup s)
    {
        var open = s.Q.Transact(FuseFrames.Request(OpenDir, s.Unique++, FuseFrames.RootId, new byte[8]), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(open).Error);
        return FuseFrames.ReadOpenFh(open);
    }

    private static byte[] ReadDirPlusRequest(ulong unique, ulong fh, ulong offset, uint size)
    {
        var b = new byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(b, fh);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), size);
        return FuseFrames.Request(ReadDirPlus, unique, FuseFrames.RootId, b);
    }

    /// <summary>One fuse_direntplus: the entry's node id, its attributes' inode and size, its d_off and name.</summary>
    private readonly record struct Entry(ulong NodeId, ulong AttrIno, ulong Size, ulong DirentIno, ulong Off, string Name);

    /// <summary>Parses a READDIRPLUS payload (fuse_entry_out 128 bytes, then fuse_dirent 24 bytes and the name, 8-aligned).</summary>
    private static List<Entry> Parse(ReadOnlySpan<byte> payload)
    {
        var list = new List<Entry>();
        while (!payload.IsEmpty)
        {
            Assert.True(payload.Length >= 152, $"a truncated entry of {payload.Length} bytes");
            uint namelen = BinaryPrimitives.ReadUInt32LittleEndian(payload[144..]);
            Assert.True(namelen is > 0 and <= 255 && 152 + namelen <= payload.Length, $"name length {namelen}");
            list.Add(new Entry(BinaryPrimitives.ReadUInt64LittleEndian(payload), BinaryPrimitives.ReadUInt64LittleEndian(payload[40..]),
                BinaryPrimitives.ReadUInt64LittleEndian(payload[48..]), BinaryPrimitives.ReadUInt64LittleEndian(payload[128..]),
                BinaryPrimitives.ReadUInt64LittleEndian(payload[136..]), Encoding.UTF8.GetString(payload.Slice(152, (int)namelen))));
            payload = payload[(int)((152 + namelen + 7) & ~7u)..];
        }
        return list;
    }

    /// <summary>Reads <paramref name="length"/> guest bytes from <paramref name="gpa"/>, whichever region each lies in.</summary>
    private static byte[] Gather(Setup s, ulong gpa, int length)
    {
        var b = new byte[length];
        for (int i = 0; i < length; i++)
        {
            ulong a = gpa + (ulong)i;
            b[i] = (a < s.Ram2.GuestBase ? s.Ram1.At(a, 1) : s.Ram2.At(a, 1))[0];
        }
        return b;
    }

    private static void Fill(Setup s, ulong gpa, int length, byte value)
    {
        for (int i = 0; i < length; i++)
        {
            ulong a = gpa + (ulong)i;
            (a < s.Ram2.GuestBase ? s.Ram1.At(a, 1) : s.Ram2.At(a, 1))[0] = value;
        }
    }

    private static void AssertFilled(Setup s, ulong gpa, int length, byte value, string what) =>
        Assert.True(Gather(s, gpa, length).AsSpan().IndexOfAnyExcept(value) < 0, $"{what} was changed");

    /// <summary>The reply room of the split layout: 20 000 bytes over the region boundary, a 4 KiB gap, then 44 000 bytes more.</summary>
    private static (ulong D1, uint L1, ulong D2, uint L2) Split(Setup s) => (s.Ram2.GuestBase - 7000, 20000, s.Ram2.GuestBase - 7000 + 20000 + 4096, 44000);

    /// <summary>The whole directory read with READDIRPLUS into the split room: out header in ram1, the room in three ranges over two descriptors.</summary>
    private static List<Entry> ListSplit(Setup s, ulong fh)
    {
        var (d1, l1, d2, l2) = Split(s);
        ulong header = s.Ram1.GuestBase + (8 << 20), request = s.Ram1.GuestBase + (9 << 20);
        var all = new List<Entry>();
        ulong offset = 0;
        while (true)
        {
            Fill(s, d1 - 4096, 4096, 0x5a);
            Fill(s, d1 + l1, 4096, 0x5a);
            Fill(s, d2 + l2, 4096, 0x5a);
            ulong unique = s.Unique++;
            var frame = ReadDirPlusRequest(unique, fh, offset, l1 + l2);
            frame.CopyTo(s.Ram1.At(request, frame.Length));
            ushort head = s.Q.SubmitChain((request, (uint)frame.Length, false), (header, 16, true), (d1, l1, true), (d2, l2, true));
            var (h, len) = s.Q.WaitUsed(T);
            Assert.Equal(head, h);
            var (hlen, error, u) = FuseFrames.ReadOutHeader(s.Ram1.At(header, 16));
            Assert.Equal((len, 0, unique), (hlen, error, u));
            AssertFilled(s, d1 - 4096, 4096, 0x5a, "the guest memory before the room");
            AssertFilled(s, d1 + l1, 4096, 0x5a, "the gap between the room's descriptors");
            AssertFilled(s, d2 + l2, 4096, 0x5a, "the guest memory after the room");
            int n = (int)len - 16;
            if (n == 0) return all;
            var payload = n <= l1 ? Gather(s, d1, n) : [.. Gather(s, d1, (int)l1), .. Gather(s, d2, n - (int)l1)];
            var entries = Parse(payload);
            Assert.NotEmpty(entries);
            all.AddRange(entries);
            offset = entries[^1].Off;
        }
    }

    /// <summary>The whole directory read with READDIRPLUS into one descriptor holding the out header and a 4 KiB page after it, as a guest lays it out.</summary>
    private static List<Entry> ListWhole(Setup s, ulong fh)
    {
        var all = new List<Entry>();
        ulong offset = 0;
        while (true)
        {
            ulong unique = s.Unique++;
            var reply = s.Q.Transact(ReadDirPlusRequest(unique, fh, offset, 4096), 16 + 4096, T);
            var (hlen, error, u) = FuseFrames.ReadOutHeader(reply);
            Assert.Equal((reply.Length, 0, unique), ((int)hlen, error, u));
            if (reply.Length == 16) return all;
            var entries = Parse(reply.AsSpan(16));
            all.AddRange(entries);
            offset = entries[^1].Off;
        }
    }

    private static void AssertMatchesHost(string share, List<Entry> entries)
    {
        var names = entries.Select(e => e.Name).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        var expected = Directory.GetFileSystemEntries(share).Select(p => Path.GetFileName(p)!).Append(".").Append("..").Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, names.Order(StringComparer.Ordinal).ToList());
        foreach (var e in entries.Where(e => e.Name is not "." and not ".."))
        {
            var info = new FileInfo(Path.Combine(share, e.Name));
            Assert.True(e.NodeId != 0, $"{e.Name}: no node id");
            Assert.Equal((ulong)info.Length, e.Size);
            Assert.Equal(e.DirentIno, e.AttrIno);
        }
    }

    [Fact]
    public void ReadDirPlusOfALargeDirectory_IntoRoomOverTwoRegionsAndSeveralDescriptors_ListsWhatTheHostHas_AsOneDescriptorDoes()
    {
        using var s = Start("list");
        var split = ListSplit(s, OpenRootDir(s));
        AssertMatchesHost(s.Share, split);
        var whole = ListWhole(s, OpenRootDir(s));
        // The same entries with the same node ids and attributes, whichever way the room was laid out.
        Assert.Equal(whole.OrderBy(e => e.Name, StringComparer.Ordinal), split.OrderBy(e => e.Name, StringComparer.Ordinal));
    }

    [Fact]
    public void GetXAttrValueAcrossARegionBoundary_TheSizeQuery_ATooSmallBuffer_AndTheList()
    {
        using var s = Start("xattr", "--xattr");
        var value = RandomNumberGenerator.GetBytes(3000);
        var file = Directory.GetFiles(s.Share).Order(StringComparer.Ordinal).First();
        var set = HostProcesses.Run("setfattr", ["-n", "user.v", "-v", "0s" + Convert.ToBase64String(value), file], T);
        Assert.True(set.ExitCode == 0, set.ToString());
        var lookup = s.Q.Transact(FuseFrames.LookupRequest(s.Unique++, FuseFrames.RootId, Path.GetFileName(file)), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(lookup).Error);
        ulong node = FuseFrames.ReadEntry(lookup).NodeId;
        ulong header = s.Ram1.GuestBase + (8 << 20), request = s.Ram1.GuestBase + (9 << 20);
        byte[] Get(ulong unique, uint size) => FuseFrames.Request(GetXAttr, unique, node, [.. BitConverter.GetBytes(size), 0, 0, 0, 0, .. "user.v\0"u8]);

        // The size query: fuse_getxattr_out alone.
        ulong unique = s.Unique++;
        var probe = s.Q.Transact(Get(unique, 0), 24, T);
        Assert.Equal((24u, 0, unique), FuseFrames.ReadOutHeader(probe));
        Assert.Equal(3000u, BinaryPrimitives.ReadUInt32LittleEndian(probe.AsSpan(16)));

        // The value into 1000 bytes before the boundary and 3096 after it, in two descriptors.
        ulong d1 = s.Ram2.GuestBase - 1000, d2 = s.Ram2.GuestBase;
        Fill(s, d1 - 4096, 4096, 0x5a);
        Fill(s, d2 + 3096, 4096, 0x5a);
        unique = s.Unique++;
        var frame = Get(unique, 4096);
        frame.CopyTo(s.Ram1.At(request, frame.Length));
        ushort head = s.Q.SubmitChain((request, (uint)frame.Length, false), (header, 16, true), (d1, 1000, true), (d2, 3096, true));
        var (h, len) = s.Q.WaitUsed(T);
        Assert.Equal((head, 16u + 3000), (h, len));
        Assert.Equal((16u + 3000, 0, unique), FuseFrames.ReadOutHeader(s.Ram1.At(header, 16)));
        Assert.Equal(value, Gather(s, d1, 3000));
        AssertFilled(s, d1 - 4096, 4096, 0x5a, "the guest memory before the value");
        Assert.True(s.Ram2.At(d2 + 2000, 1096).IndexOfAnyExcept((byte)0) < 0, "the room after the value was written");
        AssertFilled(s, d2 + 3096, 4096, 0x5a, "the guest memory after the room");

        // A buffer too small for the value: ERANGE.
        unique = s.Unique++;
        Assert.Equal((16u, -34, unique), FuseFrames.ReadOutHeader(s.Q.Transact(Get(unique, 100), 16 + 100, T)));

        // LISTXATTR over the boundary names the attribute.
        unique = s.Unique++;
        var list = FuseFrames.Request(ListXAttr, unique, node, [.. BitConverter.GetBytes(4096u), 0, 0, 0, 0]);
        list.CopyTo(s.Ram1.At(request, list.Length));
        d1 = s.Ram2.GuestBase - 3;
        head = s.Q.SubmitChain((request, (uint)list.Length, false), (header, 16, true), (d1, 4096, true));
        (h, len) = s.Q.WaitUsed(T);
        Assert.Equal(head, h);
        Assert.Contains("user.v", Encoding.ASCII.GetString(Gather(s, d1, (int)len - 16)).Split('\0'));
    }

    [Fact]
    public void DaemonKilledDuringReadDirPlusIntoGuestMemory_TheRequestsAreSentAgain_AndEachListsTheSameEntries()
    {
        using var s = Start("kill");
        var reference = ListWhole(s, OpenRootDir(s));
        AssertMatchesHost(s.Share, reference);
        const int Requests = 12;
        const uint Room = 32768;
        const ulong Stride = Room + 8192;
        var handles = Enumerable.Range(0, Requests).Select(_ => OpenRootDir(s)).ToArray();
        Fill(s, s.Ram2.GuestBase, (int)(Requests * Stride), 0x5a);
        var heads = new Dictionary<ushort, int>();
        for (int i = 0; i < Requests; i++)
        {
            // Each room: 3000 bytes in one descriptor, the rest in a second one.
            ulong buffer = s.Ram2.GuestBase + (ulong)i * Stride + 4096;
            ulong hdr = s.Ram1.GuestBase + (8 << 20) + (ulong)i * 64;
            ulong req = s.Ram1.GuestBase + (9 << 20) + (ulong)i * 128;
            var frame = ReadDirPlusRequest(1000 + (ulong)i, handles[i], 0, Room);
            frame.CopyTo(s.Ram1.At(req, frame.Length));
            heads[s.Q.SubmitChain((req, (uint)frame.Length, false), (hdr, 16, true), (buffer, 3000, true), (buffer + 3000, Room - 3000, true))] = i;
        }
        int old = s.Daemon;
        Assert.True(HostProcesses.KillAndWait(old, T), $"daemon {old} outlived SIGKILL");
        var byName = reference.ToDictionary(e => e.Name);
        for (int n = 0; n < Requests; n++)
        {
            var (h, len) = s.Q.WaitUsed(T);
            Assert.True(heads.Remove(h, out int i));
            ulong buffer = s.Ram2.GuestBase + (ulong)i * Stride + 4096;
            var (hlen, error, unique) = FuseFrames.ReadOutHeader(s.Ram1.At(s.Ram1.GuestBase + (8 << 20) + (ulong)i * 64, 16));
            Assert.Equal((len, 0, 1000 + (ulong)i), (hlen, error, unique));
            Assert.True(len > 16 && len - 16 <= Room, $"request {i}: used length {len}");
            var entries = Parse(s.Ram2.At(buffer, (int)len - 16));
            // The first entries of the directory, in its order, each with the attributes the host has.
            Assert.Equal(reference.Take(entries.Count).Select(e => e.Name), entries.Select(e => e.Name));
            foreach (var e in entries) Assert.Equal((byName[e.Name].Size, byName[e.Name].AttrIno), (e.Size, e.AttrIno));
            AssertFilled(s, buffer - 4096, 4096, 0x5a, $"the guest memory before request {i}'s room");
            AssertFilled(s, buffer + Room, 4096, 0x5a, $"the guest memory after request {i}'s room");
        }
        Assert.Empty(heads);
        int next = -1;
        SpinWait.SpinUntil(() => HostProcesses.FindPassthroughDaemons(s.Share) is [var p] && (next = p) != old, T);
        s.Daemon = next;
        Assert.False(s.Vdev.HasExited);
    }
}
