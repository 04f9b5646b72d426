using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Ring;

/// <summary>
/// Entry point of this test assembly when it is started as a child process: the ring tests run
/// it as the attaching peer, with the ring descriptors inherited, to test fd inheritance and
/// peer death across real processes. Without the verb it does nothing (the test runner never
/// calls it).
/// </summary>
public static class RingPeer
{
    public const string Verb = "ring-peer";

    public static int Main(string[] args)
    {
        if (args.Length == 2 && args[0] == Verb && args[1] == "create") return Create();
        if (args.Length < 3 || args[0] != Verb) return 0;
        try
        {
            using var set = ShmRingSet.Attach(args[2]);
            Console.Out.WriteLine("attached " + Environment.ProcessId);
            Console.Out.Flush();
            return args[1] switch
            {
                "echo" => Echo(set),
                _ => 2,
            };
        }
        catch (Exception e)
        {
            Console.Error.WriteLine(e.Message);
            return 1;
        }
    }

    /// <summary>
    /// Creates a one-queue ring set, prints its descriptor string and waits for the test to
    /// attach (taking the descriptors with pidfd_getfd) and then to kill this process.
    /// </summary>
    private static int Create()
    {
        using var set = ShmRingSet.Create(1, 4096, 16384);
        Console.Out.WriteLine(set.Fds.ToString());
        Console.Out.Flush();
        Thread.Sleep(TimeSpan.FromSeconds(60));
        return 0;
    }

    /// <summary>
    /// Serves every queue on its own thread: each request comes back as a completion with the
    /// same tag and every byte incremented by one. Exits 0 when the creator closes the ring,
    /// 3 if the creator dies, 4 on any other outcome.
    /// </summary>
    private static int Echo(ShmRingSet set)
    {
        var results = new int[set.QueueCount];
        var threads = new Thread[set.QueueCount];
        for (int q = 0; q < set.QueueCount; q++)
        {
            int queue = q;
            threads[q] = new Thread(() => results[queue] = EchoQueue(set.GetQueue(queue)));
            threads[q].Start();
        }
        foreach (var t in threads) t.Join();
        return results.Max();
    }

    private static int EchoQueue(RingQueue queue)
    {
        for (;;)
        {
            var status = queue.Consumer.Peek(out var request, Timeout.InfiniteTimeSpan);
            switch (status)
            {
                case RingStatus.Ok:
                    break;
                case RingStatus.Closed:
                    return 0;
                case RingStatus.PeerDead:
                    return 3;
                default:
                    Console.Error.WriteLine($"queue {queue.Index}: {status}");
                    return 4;
            }
            var reserved = queue.Producer.Reserve(request.Data.Length, out var reply, Timeout.InfiniteTimeSpan);
            if (reserved != RingStatus.Ok)
                return reserved == RingStatus.Closed ? 0 : reserved == RingStatus.PeerDead ? 3 : 4;
            for (int i = 0; i < reply.Length; i++) reply[i] = (byte)(request.Data[i] + 1);
            queue.Producer.Commit(reply.Length, request.Tag);
            queue.Consumer.Release();
        }
    }
}
