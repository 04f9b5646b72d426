using Hypervisor.Protocol.Share;
using System.Diagnostics;
using System.Text;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Benchmarks;

/// <summary>
/// `hv-bench fs-direct [--files N] [--ops N]`: the passthrough filesystem called directly (no transport), single thread,
/// on a temporary directory under /tmp: LOOKUP+FORGET of N distinct files (and the memory and descriptors left
/// afterwards), then GETATTR, LOOKUP of a known name and 4 KiB READ/WRITE rates.
/// </summary>
public static class FileSystemSuite
{
    public static int Run(string[] args)
    {
        var files = IntOption(args, "--files", 100_000);
        var ops = IntOption(args, "--ops", 1_000_000);
        var dir = Path.Combine("/tmp", "hv-bench-fs-" + Environment.ProcessId);
        Directory.CreateDirectory(Path.Combine(dir, "many"));
        try
        {
            for (var i = 0; i < files; i++) File.Create(Path.Combine(dir, "many", i.ToString())).Dispose();
            File.WriteAllBytes(Path.Combine(dir, "data"), new byte[1 << 20]);
            using var fs = new PassthroughFileSystem(new LiveSettings(new ShareSettings { SharedDir = dir }), NullLogger.Instance);
            fs.Init((InitFlags)ulong.MaxValue);
            var ctx = new FuseContext(new RequestId(1), 0, 0, 1);

            var many = new NodeId(fs.Lookup(ctx, NodeId.Root, "many"u8).Value.Nodeid);
            GC.Collect();
            var rssBefore = RssKiB();
            var names = new byte[files][];
            for (var i = 0; i < files; i++) names[i] = Encoding.ASCII.GetBytes(i.ToString());
            var sw = Stopwatch.StartNew();
            var peakNodes = 0L;
            var held = new ulong[files];
            for (var i = 0; i < files; i++) held[i] = fs.Lookup(ctx, many, names[i]).Value.Nodeid;
            peakNodes = fs.KnownNodes;
            var fdsHeld = OpenFds();
            var rssHeld = RssKiB();
            for (var i = 0; i < files; i++) fs.Forget(new NodeId(held[i]), 1);
            sw.Stop();
            GC.Collect();
            Report($"lookup+forget of {files} files", files / sw.Elapsed.TotalSeconds, "ops/s");
            Console.WriteLine($"  nodes while held {peakNodes}, descriptors while held {fdsHeld} (cache bound {fs.FdCacheCapacity}), RSS while held {rssHeld} KiB");
            Console.WriteLine($"  after forgetting: nodes {fs.KnownNodes}, cached descriptors {fs.CachedDescriptors}, RSS {RssKiB()} KiB (before {rssBefore} KiB)");

            var data = new NodeId(fs.Lookup(ctx, NodeId.Root, "data"u8).Value.Nodeid);
            var fh = fs.Open(ctx, data, new OpenIn { Flags = 2 }).Value.Fh;
            var buffer = new byte[4096];
            Time("GETATTR", ops, () => fs.GetAttr(ctx, data, null));
            Time("LOOKUP (known name) + FORGET", ops / 2, () => { fs.Lookup(ctx, NodeId.Root, "data"u8); fs.Forget(data, 1); });
            Time("READ 4 KiB (page cache)", ops / 2, () => fs.Read(ctx, data, new ReadIn { Fh = fh, Offset = 8192, Size = 4096 }, buffer));
            Time("WRITE 4 KiB (page cache)", ops / 4, () => fs.Write(ctx, data, new WriteIn { Fh = fh, Offset = 8192, Size = 4096 }, buffer));
            return 0;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Time(string what, int count, Action op)
    {
        for (var i = 0; i < Math.Min(count, 10_000); i++) op();
        var gc = GC.CollectionCount(0);
        var sw = Stopwatch.StartNew();
        for (var i = 0; i < count; i++) op();
        sw.Stop();
        Report(what, count / sw.Elapsed.TotalSeconds, $"ops/s ({GC.CollectionCount(0) - gc} gen0 GCs)");
    }

    private static void Report(string what, double rate, string unit) => Console.WriteLine($"{what,-36} {rate,14:N0} {unit}");

    private static int IntOption(string[] args, string name, int fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : fallback;
    }

    private static long RssKiB()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) return long.Parse(line[6..].Trim().Split(' ')[0]);
        return -1;
    }

    private static int OpenFds() => Directory.GetFiles("/proc/self/fd").Length;
}
