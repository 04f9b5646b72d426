using System.Buffers.Binary;
using System.Diagnostics;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// Several threads create, rewrite, rename, read and unlink files in shared directories of the mount at once; at
/// the end every surviving file holds exactly the bytes of its last generation, through the mount and on the host,
/// and no file is missing or left over. The kernel's dentry cache is dropped meanwhile so that FORGET races LOOKUP.
/// </summary>
[Trait("Category", "Root")]
public sealed class ConcurrentWorkloadTests
{
    private const int Workers = 4;
    private const int Directories = 3;
    private static readonly TimeSpan Duration = TimeSpan.FromSeconds(4);

    /// <summary>What a path should hold: the file's identity and generation (the content derives from both).</summary>
    private readonly record struct Expected(long Id, int Generation, int Length);

    [Fact]
    public void ParallelCreateWriteRenameUnlinkKeepsEveryByte()
    {
        using var share = MountedShare.Start();
        var root = Path.Combine(share.MountPoint, "stress");
        Directory.CreateDirectory(root);
        for (var d = 0; d < Directories; d++) Directory.CreateDirectory(Path.Combine(root, $"d{d}"));

        var expected = new Dictionary<string, Expected>[Workers];
        var failures = new List<string>();
        var operations = new long[Workers];
        var threads = new Thread[Workers];
        var stop = Stopwatch.StartNew();
        for (var w = 0; w < Workers; w++)
        {
            var worker = w;
            expected[w] = new Dictionary<string, Expected>(StringComparer.Ordinal);
            threads[w] = new Thread(() =>
            {
                try
                {
                    operations[worker] = Work(worker, root, expected[worker], stop);
                }
                catch (Exception e)
                {
                    lock (failures) failures.Add($"worker {worker}: {e}");
                }
            });
            threads[w].Start();
        }
        // Meanwhile the kernel drops every unused dentry now and then, so FORGETs race with LOOKUPs of the same inodes.
        var forgetter = new Thread(() =>
        {
            while (stop.Elapsed < Duration)
            {
                File.WriteAllText("/proc/sys/vm/drop_caches", "2");
                Thread.Sleep(250);
            }
        });
        forgetter.Start();
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a worker hung on the mount");
        forgetter.Join();
        Assert.True(failures.Count == 0, string.Join("\n", failures) + "\n" + share.DaemonLog);
        Assert.True(operations.Sum() > 200, $"only {operations.Sum()} operations ran in {Duration}");

        var all = new Dictionary<string, Expected>(StringComparer.Ordinal);
        foreach (var map in expected) foreach (var (path, e) in map) all.Add(path, e);
        Assert.NotEmpty(all);
        foreach (var (relative, e) in all)
        {
            AssertContent(Path.Combine(root, relative), e);
            AssertContent(Path.Combine(share.Source, "stress", relative), e);
        }
        var present = Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f)).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(all.Keys.Order(StringComparer.Ordinal).ToArray(), present);
        Assert.True(share.DaemonAlive, share.DaemonLog);
    }

    private static long Work(int worker, string root, Dictionary<string, Expected> mine, Stopwatch clock)
    {
        var random = new Random(1000 + worker);
        long nextId = (long)worker << 40;
        long ops = 0;
        var own = new List<string>();
        while (clock.Elapsed < Duration)
        {
            ops++;
            var choice = random.Next(100);
            if (own.Count == 0 || choice < 25)
            {
                var id = nextId++;
                var path = $"d{random.Next(Directories)}/w{worker}-{id}";
                var e = new Expected(id, 0, RandomLength(random));
                WriteAtomically(root, worker, path, e);
                mine[path] = e;
                own.Add(path);
            }
            else if (choice < 45)
            {
                var path = own[random.Next(own.Count)];
                var old = mine[path];
                var e = old with { Generation = old.Generation + 1, Length = RandomLength(random) };
                WriteAtomically(root, worker, path, e);
                mine[path] = e;
            }
            else if (choice < 60)
            {
                var index = random.Next(own.Count);
                var from = own[index];
                // Half the renames replace another file of this worker, the other half go to a new name.
                var to = random.Next(2) == 0 && own.Count > 1 ? own[random.Next(own.Count)] : $"d{random.Next(Directories)}/w{worker}-r{nextId++}";
                if (to == from) continue;
                File.Move(Path.Combine(root, from), Path.Combine(root, to), overwrite: true);
                var e = mine[from];
                mine.Remove(from);
                own.RemoveAt(index);
                if (!mine.ContainsKey(to)) own.Add(to);
                mine[to] = e;
            }
            else if (choice < 70)
            {
                var index = random.Next(own.Count);
                File.Delete(Path.Combine(root, own[index]));
                mine.Remove(own[index]);
                own.RemoveAt(index);
            }
            else if (choice < 85)
            {
                var path = own[random.Next(own.Count)];
                AssertContent(Path.Combine(root, path), mine[path]);
            }
            else
            {
                // Read whatever another worker has there right now: it must be one complete generation of some file.
                var dir = Path.Combine(root, $"d{random.Next(Directories)}");
                foreach (var file in Directory.EnumerateFiles(dir, "w*").Take(3))
                {
                    // Only published names: a temporary file is being written by its owner.
                    byte[] data;
                    try
                    {
                        data = File.ReadAllBytes(file);
                    }
                    catch (FileNotFoundException)
                    {
                        continue; // renamed or removed since the listing: allowed
                    }
                    var problem = SelfCheck(data);
                    if (problem is not null) throw new InvalidDataException($"{file}: {problem}");
                }
            }
        }
        return ops;
    }

    private static int RandomLength(Random random) => random.Next(4) switch
    {
        0 => random.Next(0, 64),
        1 => random.Next(4096, 3 * 4096),
        2 => random.Next(100_000, 300_000), // spans several FUSE requests
        _ => random.Next(16, 2048),
    };

    /// <summary>Writes a temporary file and renames it over the target, so concurrent readers see whole generations.</summary>
    private static void WriteAtomically(string root, int worker, string path, Expected e)
    {
        var temp = Path.Combine(root, Path.GetDirectoryName(path)!, $".tmp-w{worker}");
        File.WriteAllBytes(temp, Content(e));
        File.Move(temp, Path.Combine(root, path), overwrite: true);
    }

    /// <summary>A 20-byte header (identity, generation, length) and bytes derived from identity and generation.</summary>
    private static byte[] Content(Expected e)
    {
        var data = new byte[20 + e.Length];
        BinaryPrimitives.WriteInt64LittleEndian(data, e.Id);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(8), e.Generation);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(12), e.Length);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(16), 0x5eed);
        Fill(data.AsSpan(20), e);
        return data;
    }

    private static void Fill(Span<byte> span, Expected e)
    {
        var x = (uint)(e.Id * 2654435761 + e.Generation * 40503 + 1);
        for (var i = 0; i < span.Length; i++)
        {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            span[i] = (byte)x;
        }
    }

    private static string? SelfCheck(byte[] data)
    {
        if (data.Length < 20) return $"only {data.Length} bytes, shorter than the header";
        var e = new Expected(BinaryPrimitives.ReadInt64LittleEndian(data), BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(8)),
            BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(12)));
        if (BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(16)) != 0x5eed) return "header magic is wrong";
        if (data.Length != 20 + e.Length) return $"length {data.Length}, header says {20 + e.Length}";
        var want = Content(e);
        var at = data.AsSpan().CommonPrefixLength(want);
        return at == data.Length ? null : $"byte {at} differs from identity {e.Id} generation {e.Generation}";
    }

    private static void AssertContent(string path, Expected e)
    {
        var data = File.ReadAllBytes(path);
        var want = Content(e);
        var at = data.AsSpan().CommonPrefixLength(want);
        Assert.True(data.Length == want.Length && at == data.Length,
            $"{path}: expected identity {e.Id} generation {e.Generation} ({want.Length} bytes); got {data.Length} bytes, first difference at {at}"
            + (data.Length >= 16 ? $" (holds identity {BinaryPrimitives.ReadInt64LittleEndian(data)} generation {BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(8))})" : ""));
    }
}
