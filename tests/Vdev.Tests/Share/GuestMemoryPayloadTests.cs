using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using Hypervisor.Interop;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// READ and WRITE payloads that stay in guest memory, end to end: the vdev process, fuse_launcher and the sandboxed
/// passthrough daemon, driven by the test front-end with guest RAM in two adjacent memory regions. The daemon maps the
/// guest's memory itself and moves each payload with one preadv/pwritev; what the guest sees is checked against the
/// host file byte for byte, and the guest memory around each buffer is checked untouched.
/// </summary>
public sealed class GuestMemoryPayloadTests : IDisposable
{
    private const uint Write = 16;
    private const int MiB = 1 << 20;
    private static readonly TimeSpan T = TimeSpan.FromSeconds(20);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-zc-").FullName;
    private readonly byte[] _content = RandomNumberGenerator.GetBytes(4 * MiB);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>The vdev with its daemon, a front-end with two adjacent 32 MiB regions, INIT done and "big" open read-write.</summary>
    private sealed class Setup : IDisposable
    {
        public required Process Vdev;
        public required VhostUserFrontend Fe;
        public required GuestRam Ram1, Ram2;
        public required IReadOnlyList<FrontendQueue> Queues;
        public required string Share;
        public ulong Node, Fh;
        public int Daemon = -1;

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

    private Setup Start(string name, params string[] extra)
    {
        var share = Directory.CreateDirectory(Path.Combine(_dir, name)).FullName;
        File.WriteAllBytes(Path.Combine(share, "big"), _content);
        var socket = Path.Combine(_dir, name + ".sock");
        var psi = new ProcessStartInfo(GuestBackend.ResolveVdev()) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--socket-path", socket, "--shared-dir", share, "--tag", "zc", "--log-level", "warn" }.Concat(extra))
            psi.ArgumentList.Add(a);
        var vdev = Process.Start(psi)!;
        vdev.BeginErrorReadLine();
        vdev.BeginOutputReadLine();
        var ram1 = new GuestRam(32 << 20, 0x1000_0000, name + "-ram1");
        var ram2 = new GuestRam(32 << 20, 0x1200_0000, name + "-ram2");
        var fe = VhostUserFrontend.Connect(socket, TimeSpan.FromSeconds(30));
        fe.Negotiate();
        fe.SetMemTable(ram1, ram2);
        var queues = fe.SetupQueues(ram1, 2, 64, 16 << 10);
        var s = new Setup { Vdev = vdev, Fe = fe, Ram1 = ram1, Ram2 = ram2, Queues = queues, Share = share };
        var q = queues[1];
        Assert.Equal(0, FuseFrames.ReadOutHeader(q.Transact(FuseFrames.InitRequest(1), 4096, T)).Error);
        var entry = q.Transact(FuseFrames.LookupRequest(2, FuseFrames.RootId, "big"), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(entry).Error);
        s.Node = FuseFrames.ReadEntry(entry).NodeId;
        var open = q.Transact(FuseFrames.OpenRequest(3, s.Node, 2 /* O_RDWR */), 4096, T);
        Assert.Equal(0, FuseFrames.ReadOutHeader(open).Error);
        s.Fh = FuseFrames.ReadOpenFh(open);
        s.Daemon = HostProcesses.FindPassthroughDaemons(share).Single();
        return s;
    }


    private static byte[] WriteRequest(ulong unique, ulong node, ulong fh, ulong offset, uint size)
    {
        var b = new byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(b, fh);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), size);
        var frame = FuseFrames.Request(Write, unique, node, b);
        // fuse_in_header.len counts the data that follows in the chain's later descriptors.
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)frame.Length + size);
        return frame;
    }

    /// <summary>How many mappings of <paramref name="ram"/> process <paramref name="pid"/> holds.</summary>
    private static int Mappings(int pid, GuestRam ram) =>
        File.ReadAllLines($"/proc/{pid}/maps").Count(l => l.Contains("/memfd:" + ram.Name + " ", StringComparison.Ordinal));

    private static void Fill(GuestRam ram, ulong gpa, int length, byte value) => ram.At(gpa, length).Fill(value);

    private static void AssertFilled(GuestRam ram, ulong gpa, int length, byte value, string what) =>
        Assert.True(ram.At(gpa, length).IndexOfAnyExcept(value) < 0, $"{what} was changed");

    [Fact]
    public void OneMiBReadAndWrite_SpanningDescriptorsAndARegionBoundary_MatchTheHostFile()
    {
        using var s = Start("span");
        var q = s.Queues[1];
        // The daemon maps both regions itself: the payload does not travel through the ring.
        SpinWait.SpinUntil(() => Mappings(s.Daemon, s.Ram1) > 0 && Mappings(s.Daemon, s.Ram2) > 0, T);
        Assert.True(Mappings(s.Daemon, s.Ram1) > 0 && Mappings(s.Daemon, s.Ram2) > 0, "the daemon did not map the guest's memory");

        // READ: out header in its own descriptor, then 500 KiB starting 300 KiB before the end of region 1 (one
        // descriptor over the boundary), then the rest in region 2 after a 4 KiB gap.
        ulong header = s.Ram1.GuestBase + (8 << 20);
        ulong d1 = s.Ram2.GuestBase - (300 << 10);
        uint l1 = 500 << 10;
        ulong d2 = d1 + l1 + 4096;
        uint l2 = MiB - l1;
        ulong request = s.Ram1.GuestBase + (9 << 20);
        Fill(s.Ram1, d1 - 4096, 4096, 0x5a);
        Fill(s.Ram2, d1 + l1, 4096, 0x5a);
        Fill(s.Ram2, d2 + l2, 4096, 0x5a);
        var read = FuseFrames.ReadRequest(10, s.Node, s.Fh, 4096, MiB);
        read.CopyTo(s.Ram1.At(request, read.Length));
        ushort head = q.SubmitChain((request, (uint)read.Length, false), (header, 16, true), (d1, l1, true), (d2, l2, true));
        var (h, len) = q.WaitUsed(T);
        Assert.Equal(head, h);
        Assert.Equal((uint)(16 + MiB), len);
        Assert.Equal(((uint)(16 + MiB), 0, 10ul), FuseFrames.ReadOutHeader(s.Ram1.At(header, 16)));
        var got = new byte[MiB];
        for (int i = 0; i < l1; i++) got[i] = d1 + (ulong)i < s.Ram2.GuestBase ? s.Ram1.At(d1 + (ulong)i, 1)[0] : s.Ram2.At(d1 + (ulong)i, 1)[0];
        s.Ram2.At(d2, (int)l2).CopyTo(got.AsSpan((int)l1));
        Assert.Equal(SHA256.HashData(_content.AsSpan(4096, MiB)), SHA256.HashData(got));
        AssertFilled(s.Ram1, d1 - 4096, 4096, 0x5a, "the guest memory before the READ buffer");
        AssertFilled(s.Ram2, d1 + l1, 4096, 0x5a, "the gap between the READ's descriptors");
        AssertFilled(s.Ram2, d2 + l2, 4096, 0x5a, "the guest memory after the READ buffer");

        // WRITE of 1 MiB from the same shape of buffers (readable this time), at offset 1 MiB + 512.
        var data = RandomNumberGenerator.GetBytes(MiB);
        for (int i = 0; i < l1; i++)
        {
            ulong a = d1 + (ulong)i;
            (a < s.Ram2.GuestBase ? s.Ram1.At(a, 1) : s.Ram2.At(a, 1))[0] = data[i];
        }
        data.AsSpan((int)l1).CopyTo(s.Ram2.At(d2, (int)l2));
        var write = WriteRequest(11, s.Node, s.Fh, MiB + 512, MiB);
        write.CopyTo(s.Ram1.At(request, write.Length));
        head = q.SubmitChain((request, (uint)write.Length, false), (d1, l1, false), (d2, l2, false), (header, 24, true));
        (h, len) = q.WaitUsed(T);
        Assert.Equal(head, h);
        Assert.Equal(24u, len);
        Assert.Equal((24u, 0, 11ul), FuseFrames.ReadOutHeader(s.Ram1.At(header, 16)));
        Assert.Equal((uint)MiB, BinaryPrimitives.ReadUInt32LittleEndian(s.Ram1.At(header + 16, 4)));
        var file = File.ReadAllBytes(Path.Combine(s.Share, "big"));
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(file.AsSpan(MiB + 512, MiB)));
        Assert.Equal(SHA256.HashData(_content.AsSpan(0, MiB + 512)), SHA256.HashData(file.AsSpan(0, MiB + 512)));
    }

    [Fact]
    public void MemoryTableReplacedUnderLoad_EveryReadIsRight_AndOldTablesAreUnmappedAfterwards()
    {
        using var s = Start("replace");
        var q = s.Queues[1];
        const int Size = 256 << 10;
        var errors = new List<string>();
        int done = 0;
        using var stop = new CancellationTokenSource();
        var reader = new Thread(() =>
        {
            ulong unique = 100;
            int slot = 0;
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    // Eight reads in flight at a time, each into its own 256 KiB buffer in region 2.
                    var heads = new Dictionary<ushort, (ulong Offset, ulong Buffer)>();
                    for (int i = 0; i < 8; i++, slot = (slot + 1) % 8)
                    {
                        ulong offset = (ulong)((unique * 4096) % (ulong)(_content.Length - Size));
                        ulong buffer = s.Ram2.GuestBase + (ulong)slot * Size;
                        ulong hdr = s.Ram1.GuestBase + (8 << 20) + (ulong)slot * 64;
                        ulong req = s.Ram1.GuestBase + (9 << 20) + (ulong)slot * 128;
                        var frame = FuseFrames.ReadRequest(unique++, s.Node, s.Fh, offset, Size);
                        frame.CopyTo(s.Ram1.At(req, frame.Length));
                        heads[q.SubmitChain((req, (uint)frame.Length, false), (hdr, 16, true), (buffer, Size, true))] = (offset, buffer);
                    }
                    for (int i = 0; i < 8; i++)
                    {
                        var (h, len) = q.WaitUsed(T);
                        var (offset, buffer) = heads[h];
                        if (len != 16 + Size || !s.Ram2.At(buffer, Size).SequenceEqual(_content.AsSpan((int)offset, Size)))
                            lock (errors) errors.Add($"read at {offset}: used length {len}, data {(s.Ram2.At(buffer, Size).SequenceEqual(_content.AsSpan((int)offset, Size)) ? "right" : "wrong")}");
                        Interlocked.Increment(ref done);
                    }
                }
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e.ToString());
            }
        }) { IsBackground = true };
        reader.Start();
        for (int i = 0; i < 20; i++)
        {
            s.Fe.SetMemTable(s.Ram1, s.Ram2);
            Thread.Sleep(20);
        }
        SpinWait.SpinUntil(() => Volatile.Read(ref done) > 200, T);
        stop.Cancel();
        Assert.True(reader.Join(T));
        Assert.Empty(errors);
        Assert.True(done > 0);
        // The vdev drops each replaced table once no request uses it; the daemon then unmaps it: one mapping per region stays.
        SpinWait.SpinUntil(() => Mappings(s.Daemon, s.Ram1) == 1 && Mappings(s.Daemon, s.Ram2) == 1, T);
        Assert.Equal((1, 1), (Mappings(s.Daemon, s.Ram1), Mappings(s.Daemon, s.Ram2)));
    }

    [Fact]
    public void DaemonKilledDuringOneMiBReads_WithRelaunchOff_TheVdevAnswersEio_AndMemoryOutsideTheBuffersIsUntouched()
    {
        using var s = Start("kill", "--no-relaunch");
        var q = s.Queues[1];
        SpinWait.SpinUntil(() => Mappings(s.Daemon, s.Ram2) > 0, T);
        const int Reads = 16;
        const ulong Stride = MiB + 8192;
        Fill(s.Ram2, s.Ram2.GuestBase, (int)(Reads * Stride), 0x5a);
        var heads = new HashSet<ushort>();
        for (int i = 0; i < Reads; i++)
        {
            ulong buffer = s.Ram2.GuestBase + (ulong)i * Stride + 4096;
            ulong hdr = s.Ram1.GuestBase + (8 << 20) + (ulong)i * 64;
            ulong req = s.Ram1.GuestBase + (9 << 20) + (ulong)i * 128;
            var frame = FuseFrames.ReadRequest(200 + (ulong)i, s.Node, s.Fh, (ulong)(i % 3) * MiB, MiB);
            frame.CopyTo(s.Ram1.At(req, frame.Length));
            heads.Add(q.SubmitChain((req, (uint)frame.Length, false), (hdr, 16, true), (buffer, MiB, true)));
        }
        Assert.Equal(0, Libc.kill(s.Daemon, Libc.SIGKILL));
        for (int i = 0; i < Reads; i++)
        {
            var (h, len) = q.WaitUsed(T);
            Assert.True(heads.Remove(h));
            // Each request either completed before the daemon died or ends with EIO, never with a partial length.
            Assert.True(len is 16 or 16 + MiB, $"used length {len}");
        }
        Assert.Empty(heads);
        for (int i = 0; i < Reads; i++)
        {
            var (hlen, error, unique) = FuseFrames.ReadOutHeader(s.Ram1.At(s.Ram1.GuestBase + (8 << 20) + (ulong)i * 64, 16));
            Assert.True(error == 0 ? hlen == 16 + MiB : error == -5 && hlen == 16, $"read {unique}: len {hlen}, error {error}");
            ulong buffer = s.Ram2.GuestBase + (ulong)i * Stride + 4096;
            AssertFilled(s.Ram2, buffer - 4096, 4096, 0x5a, $"the guest memory before read {i}'s buffer");
            AssertFilled(s.Ram2, buffer + MiB, 4096, 0x5a, $"the guest memory after read {i}'s buffer");
            if (error == 0) Assert.True(s.Ram2.At(buffer, MiB).SequenceEqual(_content.AsSpan(i % 3 * MiB, MiB)), $"read {i} succeeded with wrong data");
        }
        // The vdev survives: a later request is answered EIO at once, and the process is still there.
        var after = q.Transact(FuseFrames.GetattrRequest(300, s.Node), 4096, T);
        Assert.Equal((16u, -5, 300ul), FuseFrames.ReadOutHeader(after));
        Assert.False(s.Vdev.HasExited);
    }

    [Fact]
    public void DaemonKilled_TheNewDaemonMapsGuestMemory_AndOneMiBReadsInFlightAndAfterAreRight()
    {
        using var s = Start("relaunch");
        var q = s.Queues[1];
        SpinWait.SpinUntil(() => Mappings(s.Daemon, s.Ram1) > 0 && Mappings(s.Daemon, s.Ram2) > 0, T);
        Assert.True(Mappings(s.Daemon, s.Ram1) > 0 && Mappings(s.Daemon, s.Ram2) > 0, "the first daemon did not map the guest's memory");

        // Eight 1 MiB reads in flight at the kill: READ is sent again to the new daemon, so each must succeed.
        const int Reads = 8;
        const ulong Stride = MiB + 8192;
        Fill(s.Ram2, s.Ram2.GuestBase, (int)(Reads * Stride), 0x5a);
        var heads = new HashSet<ushort>();
        for (int i = 0; i < Reads; i++)
        {
            ulong buffer = s.Ram2.GuestBase + (ulong)i * Stride + 4096;
            ulong hdr = s.Ram1.GuestBase + (8 << 20) + (ulong)i * 64;
            ulong req = s.Ram1.GuestBase + (9 << 20) + (ulong)i * 128;
            var frame = FuseFrames.ReadRequest(400 + (ulong)i, s.Node, s.Fh, (ulong)(i % 3) * MiB, MiB);
            frame.CopyTo(s.Ram1.At(req, frame.Length));
            heads.Add(q.SubmitChain((req, (uint)frame.Length, false), (hdr, 16, true), (buffer, MiB, true)));
        }
        int old = s.Daemon;
        Assert.True(HostProcesses.KillAndWait(old, T), $"daemon {old} outlived SIGKILL");
        for (int i = 0; i < Reads; i++)
        {
            var (h, len) = q.WaitUsed(T);
            Assert.True(heads.Remove(h));
            Assert.Equal((uint)(16 + MiB), len);
        }
        for (int i = 0; i < Reads; i++)
        {
            Assert.Equal(((uint)(16 + MiB), 0, 400ul + (ulong)i), FuseFrames.ReadOutHeader(s.Ram1.At(s.Ram1.GuestBase + (8 << 20) + (ulong)i * 64, 16)));
            ulong buffer = s.Ram2.GuestBase + (ulong)i * Stride + 4096;
            Assert.True(s.Ram2.At(buffer, MiB).SequenceEqual(_content.AsSpan(i % 3 * MiB, MiB)), $"read {i} returned wrong data");
            AssertFilled(s.Ram2, buffer - 4096, 4096, 0x5a, $"the guest memory before read {i}'s buffer");
            AssertFilled(s.Ram2, buffer + MiB, 4096, 0x5a, $"the guest memory after read {i}'s buffer");
        }

        // The new daemon was handed the guest's memory table before it served, and mapped both regions.
        int next = -1;
        SpinWait.SpinUntil(() => HostProcesses.FindPassthroughDaemons(s.Share) is [var p] && (next = p) != old, T);
        Assert.True(next > 0 && next != old, "no new daemon serves the share");
        s.Daemon = next;
        SpinWait.SpinUntil(() => Mappings(next, s.Ram1) > 0 && Mappings(next, s.Ram2) > 0, T);
        Assert.True(Mappings(next, s.Ram1) > 0 && Mappings(next, s.Ram2) > 0, "the new daemon did not map the guest's memory");

        // A 1 MiB READ after the relaunch, over the region boundary, with the node id and handle from before.
        ulong header = s.Ram1.GuestBase + (8 << 20);
        ulong d1 = s.Ram2.GuestBase - (300 << 10);
        ulong request = s.Ram1.GuestBase + (9 << 20);
        Fill(s.Ram1, d1 - 4096, 4096, 0x5a);
        Fill(s.Ram2, d1 + MiB, 4096, 0x5a);
        var read = FuseFrames.ReadRequest(500, s.Node, s.Fh, 3 * MiB + 4096, MiB);
        read.CopyTo(s.Ram1.At(request, read.Length));
        ushort head = q.SubmitChain((request, (uint)read.Length, false), (header, 16, true), (d1, MiB, true));
        var (hh, l) = q.WaitUsed(T);
        Assert.Equal(head, hh);
        Assert.Equal((uint)(16 + MiB - 4096), l);
        Assert.Equal(((uint)(16 + MiB - 4096), 0, 500ul), FuseFrames.ReadOutHeader(s.Ram1.At(header, 16)));
        var got = new byte[MiB - 4096];
        for (int i = 0; i < got.Length; i++) got[i] = d1 + (ulong)i < s.Ram2.GuestBase ? s.Ram1.At(d1 + (ulong)i, 1)[0] : s.Ram2.At(d1 + (ulong)i, 1)[0];
        Assert.Equal(SHA256.HashData(_content.AsSpan(3 * MiB + 4096)), SHA256.HashData(got));
        AssertFilled(s.Ram1, d1 - 4096, 4096, 0x5a, "the guest memory before the READ buffer");
        Assert.False(s.Vdev.HasExited);
    }
}
