using System.Diagnostics;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Ring;

/// <summary>Helpers shared by the ring tests: in-process pairs and child-process peers.</summary>
internal static class RingTestSupport
{
    /// <summary>
    /// A creator and an attacher in this process. The attacher gets duplicates of the creator's
    /// descriptors, as a child would after inheriting them, so each side owns its own.
    /// </summary>
    public static (ShmRingSet Creator, ShmRingSet Attacher) Pair(int queues = 1, int maxFrame = RingLayout.DefaultMaxFrameSize, long directionBytes = 0)
    {
        var creator = ShmRingSet.Create(queues, maxFrame, directionBytes);
        var fds = creator.Fds;
        var attacher = ShmRingSet.Attach(DupAll(fds));
        return (creator, attacher);
    }

    /// <summary>Duplicates every descriptor of a set, as inheriting them would.</summary>
    public static RingFds DupAll(RingFds fds)
    {
        var bells = new int[fds.Doorbells.Count];
        for (int i = 0; i < bells.Length; i++) bells[i] = Dup(fds.Doorbells[i]);
        return new RingFds(Dup(fds.MemFd), bells);
    }

    public static int Dup(int fd)
    {
        int copy = Libc.fcntl(fd, Libc.F_DUPFD_CLOEXEC, 3);
        Assert.True(copy >= 0, "dup of a ring descriptor failed");
        return copy;
    }

    /// <summary>Fills a span with bytes that depend on the frame's identity, so any mix-up shows.</summary>
    public static void Fill(Span<byte> span, ulong seed)
    {
        ulong x = seed * 0x9E3779B97F4A7C15UL + 1;
        for (int i = 0; i < span.Length; i++)
        {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            span[i] = (byte)x;
        }
    }

    /// <summary>Index of the first byte that differs from <see cref="Fill"/>'s pattern, or -1.</summary>
    public static int FirstMismatch(ReadOnlySpan<byte> span, ulong seed)
    {
        ulong x = seed * 0x9E3779B97F4A7C15UL + 1;
        for (int i = 0; i < span.Length; i++)
        {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (span[i] != (byte)x) return i;
        }
        return -1;
    }

    /// <summary>Sends one frame filled with the pattern of <paramref name="seed"/>, waiting up to 10 s for space.</summary>
    public static void Send(RingProducer producer, int length, ulong tag, ulong seed)
    {
        Assert.Equal(RingStatus.Ok, producer.Reserve(length, out var span, TimeSpan.FromSeconds(10)));
        Fill(span, seed);
        producer.Commit(length, tag);
    }

    /// <summary>
    /// Starts this test assembly again as a ring peer (see <see cref="RingPeer"/>) with the
    /// creator's descriptors inherited.
    /// </summary>
    public static Process StartPeer(ShmRingSet creator, string mode)
    {
        creator.SetInheritable(true);
        try
        {
            return StartPeer(mode, creator.Fds.ToString());
        }
        finally
        {
            creator.SetInheritable(false);
        }
    }

    /// <summary>Starts this test assembly again as a ring peer with the given arguments after the verb.</summary>
    public static Process StartPeer(params string[] args)
    {
        string dll = typeof(RingPeer).Assembly.Location;
        var psi = new ProcessStartInfo(DotnetHost())
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add(RingPeer.Verb);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi) ?? throw new InvalidOperationException("the peer process did not start");
    }

    private static string DotnetHost()
    {
        string? self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        string? root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        return "dotnet";
    }
}

/// <summary>A test thread whose assertion failures surface in <see cref="Join"/> instead of killing the test host.</summary>
internal sealed class Worker
{
    private readonly Thread _thread;
    private Exception? _failure;

    private Worker(Action body)
    {
        _thread = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { _failure = e; }
        }) { IsBackground = true };
    }

    public static Worker Start(Action body)
    {
        var w = new Worker(body);
        w._thread.Start();
        return w;
    }

    /// <summary>Waits for every thread before reporting the first failure, so that no thread outlives the ring it uses.</summary>
    public static void JoinAll(IEnumerable<Worker> workers)
    {
        Exception? first = null;
        foreach (var w in workers)
        {
            try { w.Join(); }
            catch (Exception e) { first ??= e; }
        }
        if (first is not null) throw first;
    }

    /// <summary>Waits for the thread (at most 60 s) and rethrows its failure, if any.</summary>
    public void Join()
    {
        Assert.True(_thread.Join(TimeSpan.FromSeconds(60)), "a test thread did not finish within 60 s");
        if (_failure is not null) throw new Xunit.Sdk.XunitException("test thread failed: " + _failure);
    }
}
