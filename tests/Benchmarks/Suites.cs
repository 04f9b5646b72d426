namespace Hypervisor.Benchmarks;

/// <summary>Dispatches `hv-bench SUITE [options]` to the suite that measures it.</summary>
public static class Suites
{
    private static readonly Dictionary<string, (string Help, Func<string[], int> Run)> All = new(StringComparer.Ordinal)
    {
        ["fs"] = (FsBench.Help, FsBench.Run),
        ["fs-direct"] = ("passthrough filesystem called directly: lookup/forget memory, getattr/read/write rates", FileSystemSuite.Run),
        ["control"] = ("gRPC control calls over the UNIX socket: latency and throughput after a warm-up [--calls N] [--parallel P] [--warmup SECONDS, default 10]", ControlBench.Run),
        ["guest"] = (GuestBench.Help, GuestBench.Run),
        ["restart-stall"] = (RestartStallBench.Help, RestartStallBench.Run),
        ["ring"] = (RingBenchmark.Help, RingBenchmark.Run),
        ["vhost"] = ("virtqueue round trips through vhost-user: vdev (echo transport) or QEMU's virtiofsd; --compare: the vdev process against virtiofsd, 16 in flight, per-row medians and CPU", VhostBench.Run),
        ["launcher"] = ("start-up latency of a share: fuse_launcher with a script or the passthrough daemon on a ring, and virtiofsd", LauncherBench.Run),
    };

    public static int Run(string[] args)
    {
        if (args.Length == 0 || !All.TryGetValue(args[0], out var suite))
        {
            Console.Error.WriteLine("usage: hv-bench SUITE [options]; suites:");
            foreach (var (name, s) in All) Console.Error.WriteLine($"  {name,-10} {s.Help}");
            return 2;
        }
        Interruption.Install();
        try
        {
            return suite.Run(args[1..]);
        }
        catch (Exception) when (Interruption.Interrupted)
        {
            // Its processes were stopped under it; the clean-up reports and sets the exit status.
            return 1;
        }
        finally
        {
            Interruption.WaitIfInterrupted();
        }
    }
}
