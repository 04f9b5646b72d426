using Hypervisor.Interop;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Protocol.Recovery;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>
/// The daemon's side of the vdev's descriptor store, against a socket pair standing for the vdev: notes cost no message
/// until a flush, a handle opened and released between two flushes never leaves, and adoption reads what the vdev sent.
/// </summary>
public sealed class KeptDescriptorsTests : IDisposable
{
    private readonly SafeFd _vdev;
    private readonly KeptDescriptors _kept;
    private readonly string _file = Path.GetTempFileName();

    public KeptDescriptorsTests()
    {
        Span<int> pair = stackalloc int[2];
        Assert.Equal(0, Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair));
        _vdev = new SafeFd(pair[0]);
        _kept = new KeptDescriptors(new SafeFd(pair[1]));
    }

    private SafeFd OpenFile() => new(Libc.open(_file, Libc.O_RDONLY | Libc.O_CLOEXEC, 0));

    /// <summary>The next message the vdev would read, or null when none is waiting.</summary>
    private (DescriptorStoreOp Op, List<KeptEntry> Entries, int[] Fds)? Next() => Next(_vdev);

    private static (DescriptorStoreOp Op, List<KeptEntry> Entries, int[] Fds)? Next(SafeFd vdev)
    {
        var message = new byte[DescriptorStoreMessage.MaxSize];
        var fds = new int[DescriptorStoreMessage.MaxEntries];
        var n = Libc.ReceiveWithFds(vdev, message, fds, Libc.MSG_DONTWAIT, out int fdCount, out _);
        if (n < 0) return null;
        Assert.True(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, (int)n), out var op, out int count));
        var entries = new List<KeptEntry>();
        for (int i = 0; i < count; i++)
        {
            Assert.True(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, (int)n), i, out var e));
            entries.Add(e);
        }
        return (op, entries, fds[..fdCount]);
    }

    [Fact]
    public void NotesAreSentAtTheFlush_InOrder_AndAKeepDroppedBeforeItIsNeverSent()
    {
        using var a = OpenFile();
        using var b = OpenFile();
        var ea = new KeptEntry(KeptKind.Handle, 1, 0);
        var eb = new KeptEntry(KeptKind.LockOwner, 2, 99);
        _kept.Keep(ea, a);
        _kept.Keep(eb, b);
        Assert.Null(Next());
        _kept.Drop(ea);
        Assert.Equal(1, _kept.Pending);

        _kept.Flush();
        var keep = Next();
        Assert.NotNull(keep);
        Assert.Equal(DescriptorStoreOp.Keep, keep.Value.Op);
        Assert.Equal([eb], keep.Value.Entries);
        var sent = Assert.Single(keep.Value.Fds);
        // The duplicate is the same open file description.
        Assert.Equal(0, Libc.fstat(sent, out var got));
        Assert.Equal(0, Libc.fstat(b, out var want));
        Assert.Equal((want.Dev, want.Ino), (got.Dev, got.Ino));
        Libc.close(sent);
        Assert.Null(Next());

        // A Drop alone waits for a Keep to ride with, or for its deadline.
        _kept.Drop(eb);
        _kept.Flush();
        Assert.Null(Next());
        (DescriptorStoreOp Op, List<KeptEntry> Entries, int[] Fds)? drop = null;
        for (int i = 0; i < 100 && drop is null; i++)
        {
            Thread.Sleep(20);
            drop = Next();
        }
        Assert.NotNull(drop);
        Assert.Equal([eb], drop.Value.Entries);
        Assert.Empty(drop.Value.Fds);
        _kept.Flush();
        Assert.Null(Next());
    }

    [Fact]
    public void ADrop_RidesWithTheNextKeep_InItsPlaceInTheOrder()
    {
        using var a = OpenFile();
        using var b = OpenFile();
        var ea = new KeptEntry(KeptKind.Handle, 1, 0);
        var eb = new KeptEntry(KeptKind.Handle, 2, 0);
        _kept.Keep(ea, a);
        _kept.Flush();
        Libc.close(Assert.Single(Next()!.Value.Fds));
        _kept.Drop(ea);
        _kept.Keep(eb, b);
        _kept.Flush();
        var message = new byte[DescriptorStoreMessage.MaxSize];
        var fds = new int[4];
        var n = Libc.ReceiveWithFds(_vdev, message, fds, Libc.MSG_DONTWAIT, out int fdCount, out _);
        Assert.True(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, (int)n), out var op, out int count));
        Assert.Equal((DescriptorStoreOp.Keep, 2, 1), (op, count, fdCount));
        Assert.True(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, (int)n), 0, out var first, out bool firstDrop));
        Assert.True(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, (int)n), 1, out var second, out bool secondDrop));
        Assert.Equal((ea, true, eb, false), (first, firstDrop, second, secondDrop));
        Libc.close(fds[0]);
    }

    [Fact]
    public void AHandlesKeep_WaitsForItsDelay_ABriefHandleNeverLeaves_AndALaterOneGoesWithoutAFlush()
    {
        using var a = OpenFile();
        using var b = OpenFile();
        var ea = new KeptEntry(KeptKind.Handle, 1, 0);
        var eb = new KeptEntry(KeptKind.Handle, 2, 0);

        // Released before its delay (an hour here, so that a slow machine cannot make it due): cancelled in place,
        // nothing reaches the vdev, not even a Drop.
        using (var patient = Patient(out var vdev))
        {
            patient.Keep(ea, a, delayed: true);
            patient.Flush();
            patient.Drop(ea);
            Assert.Equal(0, patient.Pending);
            patient.Flush();
            Assert.Null(Next(vdev));
        }

        // Kept longer than its delay: the deadline thread sends it although no queue runs dry.
        _kept.Keep(eb, b, delayed: true);
        (DescriptorStoreOp Op, List<KeptEntry> Entries, int[] Fds)? keep = null;
        for (int i = 0; i < 100 && keep is null; i++)
        {
            Thread.Sleep(10);
            keep = Next();
        }
        Assert.NotNull(keep);
        Assert.Equal(DescriptorStoreOp.Keep, keep.Value.Op);
        Assert.Equal([eb], keep.Value.Entries);
        Libc.close(Assert.Single(keep.Value.Fds));
        Assert.Equal(0, _kept.Pending);
        Assert.Null(Next());
    }

    [Fact]
    public void ADelayedKeep_StaysBehind_WhileADueOneAndItsDropsGo_InOrder()
    {
        using var a = OpenFile();
        using var b = OpenFile();
        using var c = OpenFile();
        var ea = new KeptEntry(KeptKind.Handle, 1, 0);
        var eb = new KeptEntry(KeptKind.Handle, 2, 0);
        var ec = new KeptEntry(KeptKind.LockOwner, 3, 7);
        using var patient = Patient(out var vdev);
        patient.Keep(ea, a);
        patient.Flush();
        Libc.close(Assert.Single(Next(vdev)!.Value.Fds));

        patient.Drop(ea);
        patient.Keep(eb, b, delayed: true);
        patient.Keep(ec, c);
        patient.Flush();
        var message = new byte[DescriptorStoreMessage.MaxSize];
        var fds = new int[4];
        var n = Libc.ReceiveWithFds(vdev, message, fds, Libc.MSG_DONTWAIT, out int fdCount, out _);
        Assert.True(DescriptorStoreMessage.TryReadHeader(message.AsSpan(0, (int)n), out var op, out int count));
        Assert.Equal((DescriptorStoreOp.Keep, 2, 1), (op, count, fdCount));
        Assert.True(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, (int)n), 0, out var first, out bool firstDrop));
        Assert.True(DescriptorStoreMessage.TryReadEntry(message.AsSpan(0, (int)n), 1, out var second, out bool secondDrop));
        Assert.Equal((ea, true, ec, false), (first, firstDrop, second, secondDrop));
        Libc.close(fds[0]);
        // The handle's Keep is still noted, and releases its descriptor reference when the channel is disposed.
        Assert.Equal(1, patient.Pending);
        Assert.Null(Next(vdev));
    }

    private readonly List<SafeFd> _patientEnds = [];

    /// <summary>A daemon side whose handle Keeps wait an hour, and the vdev's end of its channel.</summary>
    private KeptDescriptors Patient(out SafeFd vdev)
    {
        Span<int> pair = stackalloc int[2];
        Assert.Equal(0, Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair));
        vdev = new SafeFd(pair[0]);
        _patientEnds.Add(vdev);
        return new KeptDescriptors(new SafeFd(pair[1]), TimeSpan.FromHours(1));
    }

    [Fact]
    public void ManyKeeps_GoInMessagesOfAtMostTheScmRightsLimit()
    {
        var files = Enumerable.Range(0, 300).Select(_ => OpenFile()).ToList();
        try
        {
            for (int i = 0; i < files.Count; i++) _kept.Keep(new KeptEntry(KeptKind.Handle, (ulong)i + 1, 0), files[i]);
            _kept.Flush();
            var first = Next()!.Value;
            var second = Next()!.Value;
            Assert.Equal(DescriptorStoreMessage.MaxEntries, first.Fds.Length);
            Assert.Equal(300 - DescriptorStoreMessage.MaxEntries, second.Fds.Length);
            Assert.Equal(1UL, first.Entries[0].Id);
            Assert.Equal((ulong)DescriptorStoreMessage.MaxEntries + 1, second.Entries[0].Id);
            foreach (var fd in first.Fds.Concat(second.Fds)) Libc.close(fd);
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    [Fact]
    public void Adopt_ReadsWhatTheVdevSent_UntilAdoptEnd()
    {
        using var a = OpenFile();
        var message = new byte[DescriptorStoreMessage.MaxSize];
        int length = DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.Adopt, 1);
        var entry = new KeptEntry(KeptKind.Handle, 5, 0);
        DescriptorStoreMessage.WriteEntry(message, 0, entry);
        Assert.True(Libc.SendWithFds(_vdev, message.AsSpan(0, length), [a.Value], 0) > 0);
        int end = DescriptorStoreMessage.WriteHeader(message, DescriptorStoreOp.AdoptEnd, 0);
        Assert.True(Libc.SendWithFds(_vdev, message.AsSpan(0, end), [], 0) > 0);

        var adopted = _kept.Adopt();
        var fd = Assert.Single(adopted);
        Assert.Equal(entry, fd.Key);
        Assert.Equal(0, Libc.fstat(fd.Value, out var got));
        Assert.Equal(0, Libc.fstat(a, out var want));
        Assert.Equal((want.Dev, want.Ino), (got.Dev, got.Ino));
        fd.Value.Dispose();
    }

    public void Dispose()
    {
        _kept.Dispose();
        _vdev.Dispose();
        foreach (var end in _patientEnds) end.Dispose();
        File.Delete(_file);
    }
}
