using System.Diagnostics;
using Grpc.Health.V1;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Control;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench control`: cost of one control call end to end (Grpc.Net.Client, HTTP/2 over the UNIX
/// socket, Kestrel, Grpc.AspNetCore) with a share that answers from memory, so that what is
/// measured is the control transport and not the daemon.
/// </summary>
public static class ControlBench
{
    public static int Run(string[] args)
    {
        int calls = 5000, parallel = 8;
        double warmUpSeconds = 10;
        string? socket = null;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--calls" && i + 1 < args.Length && int.TryParse(args[++i], out int c) && c > 0)
                calls = c;
            else if (args[i] == "--parallel" && i + 1 < args.Length && int.TryParse(args[++i], out int p) && p > 0)
                parallel = p;
            else if (args[i] == "--warmup" && i + 1 < args.Length
                     && double.TryParse(args[++i], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double w) && w >= 0)
                warmUpSeconds = w;
            else if (args[i] == "--socket" && i + 1 < args.Length)
                socket = args[++i];
            else
            {
                Console.Error.WriteLine($"hv-bench control: unknown or invalid option \"{args[i]}\"; use --calls N and --parallel P with positive numbers, --warmup SECONDS with zero or more, --socket PATH for a running daemon's control socket.");
                return 2;
            }
        }
        if (socket is not null)
            return MeasureAsync(socket, calls, parallel, TimeSpan.FromSeconds(warmUpSeconds)).GetAwaiter().GetResult();
        return RunInProcessAsync(calls, parallel, TimeSpan.FromSeconds(warmUpSeconds)).GetAwaiter().GetResult();
    }

    /// <summary>The control service hosted here, answering from memory: the control transport alone, both ends JIT-compiled.</summary>
    private static async Task<int> RunInProcessAsync(int calls, int parallel, TimeSpan warmUp)
    {
        string directory = Path.Combine(Path.GetTempPath(), "hv-bench-ctl-" + Environment.ProcessId);
        Directory.CreateDirectory(directory);
        try
        {
            await using ControlServer server = await ControlServer.StartAsync(Path.Combine(directory, "c.sock"), new MemoryShare());
            return await MeasureAsync(server.SocketPath, calls, parallel, warmUp);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>
    /// Calls the control service at <paramref name="socketPath"/>: the one hosted here, or a running daemon's (the
    /// server as it is installed, whatever build it is: the wire contract is the same).
    /// </summary>
    private static async Task<int> MeasureAsync(string socketPath, int calls, int parallel, TimeSpan warmUp)
    {
        using var client = new ShareControlClient(socketPath, TimeSpan.FromSeconds(10));

        var getStatus = new GetStatusRequest();
        var check = new HealthCheckRequest();
        // Warm up for a while rather than for a number of calls: tiered compilation promotes the
        // hot methods of the client, Kestrel and the gRPC stack in the background, and on a busy
        // machine that can take a while. The figures below are meant to be the
        // steady state of a long-running daemon; a one-shot `vdev ctl` runs cold instead, which
        // --warmup 0 comes closer to.
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < 500 || warm.Elapsed < warmUp; i++)
        {
            await client.Control.GetStatusAsync(getStatus);
            await client.Health.CheckAsync(check);
        }

        Report("GetStatus, sequential", await MeasureSequentialAsync(calls, async () => await client.Control.GetStatusAsync(getStatus)));
        Report("Health/Check, sequential", await MeasureSequentialAsync(calls, async () => await client.Health.CheckAsync(check)));

        var wall = Stopwatch.StartNew();
        var tasks = new Task[parallel];
        int perTask = Math.Max(1, calls / parallel);
        for (int t = 0; t < parallel; t++)
        {
            tasks[t] = Task.Run(async () =>
            {
                for (int i = 0; i < perTask; i++)
                    await client.Control.GetStatusAsync(getStatus);
            });
        }
        await Task.WhenAll(tasks);
        wall.Stop();
        Console.WriteLine($"GetStatus, {parallel} concurrent callers: {perTask * parallel / wall.Elapsed.TotalSeconds:F0} calls/s over {perTask * parallel} calls");
        return 0;
    }

    private static async Task<double[]> MeasureSequentialAsync(int calls, Func<Task> call)
    {
        var samples = new double[calls];
        for (int i = 0; i < calls; i++)
        {
            long start = Stopwatch.GetTimestamp();
            await call();
            samples[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }
        Array.Sort(samples);
        return samples;
    }

    private static void Report(string name, double[] sorted)
    {
        double Percentile(double p) => sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
        double total = 0;
        foreach (double s in sorted)
            total += s;
        Console.WriteLine($"{name}: {sorted.Length} calls, mean {total / sorted.Length:F0} us, p50 {Percentile(0.50):F0} us, p99 {Percentile(0.99):F0} us, {sorted.Length / (total / 1e6):F0} calls/s");
    }

    /// <summary>A share that answers from memory; it stands for no real daemon.</summary>
    private sealed class MemoryShare : IShareControl
    {
        private static ShareOptions Options() => new() { CachePolicy = CachePolicy.Auto, Xattr = true };
        private static readonly Allowlist Allow = new();

        public ValueTask<ShareStatus> GetStatusAsync(CancellationToken cancellationToken) => ValueTask.FromResult(new ShareStatus
        {
            SharedDir = "/srv/share", Tag = "share0", Options = Options(), Uptime = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
            Opcodes =
            {
                new OpcodeCounters { Opcode = 1, Name = "LOOKUP", Requests = 1000, Errors = 10 },
                new OpcodeCounters { Opcode = 15, Name = "READ", Requests = 5000 },
                new OpcodeCounters { Opcode = 16, Name = "WRITE", Requests = 2000 },
            },
            OpenFileHandles = 10, KnownNodes = 1000, BytesRead = 1 << 30, BytesWritten = 1 << 20, Allowlist = Allow,
        });
        public ValueTask<ShareOptions> SetDirectIoAsync(bool enabled, CancellationToken cancellationToken) { var o = Options(); o.DirectIo = enabled; return ValueTask.FromResult(o); }
        public ValueTask<ShareOptions> SetCachePolicyAsync(CachePolicy policy, CancellationToken cancellationToken) { var o = Options(); o.CachePolicy = policy; return ValueTask.FromResult(o); }
        public ValueTask<Allowlist> AddAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken) => ValueTask.FromResult(Allow);
        public ValueTask<Allowlist> RemoveAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken) => ValueTask.FromResult(Allow);
        public ValueTask<Allowlist> ListAllowedPathsAsync(CancellationToken cancellationToken) => ValueTask.FromResult(Allow);
        public ValueTask<Allowlist> SetAllowlistEnabledAsync(bool enabled, CancellationToken cancellationToken) => ValueTask.FromResult(Allow);
        public ValueTask RequestShutdownAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }
}
