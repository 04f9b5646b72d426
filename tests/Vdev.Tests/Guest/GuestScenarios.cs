using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// The guest scenarios with their host-side checks, callable with any backend (the tests in
/// <see cref="VirtioFsGuestTests"/> call them with virtiofsd and vdev). Failures are xunit assertion
/// exceptions carrying the guest's console and the backends' output.
/// </summary>
public static partial class GuestScenarios
{
    /// <summary>Overwrites a scenario's mailbox (hv_phase) in place with <paramref name="word"/> padded to 16 bytes (its size never changes).</summary>
    public static void WriteMailbox(string path, string word)
    {
        var bytes = System.Text.Encoding.ASCII.GetBytes(word.PadRight(15) + "\n");
        using var f = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write);
        f.Write(bytes);
        f.Flush(flushToDisk: false);
    }

    private const int HostFiles = 1200;

    /// <summary>
    /// The single-share scenario against <paramref name="backend"/>, with host-side checks; throws
    /// (an xunit assertion) on any difference. Callable with any backend command line.
    /// </summary>
    public static void RunBasic(GuestBackend backend, Action<string>? log = null)
    {
        var dir = Directory.CreateTempSubdirectory("hvg-share-").FullName;
        try
        {
            var input = new byte[32 << 20];
            Random.Shared.NextBytes(input);
            File.WriteAllBytes(Path.Combine(dir, "host-in.bin"), input);
            Directory.CreateDirectory(Path.Combine(dir, "hostdir"));
            for (int i = 0; i < HostFiles; i++) File.WriteAllText(Path.Combine(dir, "hostdir", $"h{i:D4}"), i.ToString());

            var scenario = GuestVm.LoadScenario("basic.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                Environment = new Dictionary<string, string>
                {
                    ["HV_HOST_SHA256"] = Convert.ToHexStringLower(SHA256.HashData(input)),
                    ["HV_HOST_FILES"] = HostFiles.ToString(),
                    // "NAME SIZE" per file, in name order, as `stat -c '%n %s' *` prints them in the guest.
                    ["HV_HOST_LISTING_SHA256"] = Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes(string.Concat(
                        Enumerable.Range(0, HostFiles).Select(i => $"h{i:D4} {i.ToString().Length}\n"))))),
                },
            });
            log?.Invoke($"{backend.Name}: boot {result.BootSeconds:0.00} s (guest uptime), whole run {result.Elapsed.TotalSeconds:0.0} s");
            AssertAllChecksPassed(result, scenario);

            // What the guest wrote, as the host sees it.
            var expected = Pattern(32, 12345);
            Array.Clear(expected, 1000 * 4096, 4096);
            expected = [.. expected, .. "tail\n"u8.ToArray()];
            var big = File.ReadAllBytes(Path.Combine(dir, "big.bin"));
            Assert.Equal(expected.Length, big.Length);
            Assert.True(expected.AsSpan().SequenceEqual(big), "big.bin on the host differs from what the guest wrote.");
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Pattern(32, 12345))), result.Value("big_sha256"));
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(big)), result.Value("big3_sha256"));

            Assert.False(File.Exists(Path.Combine(dir, "a.txt")));
            Assert.Equal("hello\n", File.ReadAllText(Path.Combine(dir, "b.txt")));
            Assert.Equal("moved\n", File.ReadAllText(Path.Combine(dir, "sub", "m.txt")));
            Assert.False(File.Exists(Path.Combine(dir, "r1")));
            Assert.Equal("one\n", File.ReadAllText(Path.Combine(dir, "r2")));
            Assert.Equal("y\n", File.ReadAllText(Path.Combine(dir, "e1")));
            Assert.Equal("x\n", File.ReadAllText(Path.Combine(dir, "e2")));

            Assert.Equal(HostStat(Path.Combine(dir, "b.txt"), "%i %h"), HostStat(Path.Combine(dir, "hard.txt"), "%i %h"));
            Assert.EndsWith(" 2", HostStat(Path.Combine(dir, "b.txt"), "%i %h"));
            Assert.Equal("b.txt", new FileInfo(Path.Combine(dir, "sym")).LinkTarget);
            Assert.Equal("/nonexistent/target", new FileInfo(Path.Combine(dir, "dangling")).LinkTarget);

            var attr = Path.Combine(dir, "attr.txt");
            Assert.Equal("640 1234:5678 981173106 3", HostStat(attr, "%a %u:%g %Y %s"));

            Assert.True(Directory.Exists(Path.Combine(dir, "d1")));
            Assert.False(Directory.Exists(Path.Combine(dir, "d1", "d2")));
            Assert.False(Directory.Exists(Path.Combine(dir, "gone")));
            Assert.Equal(1500, Directory.GetFiles(Path.Combine(dir, "many")).Length);

            Assert.Equal("fifo", HostStat(Path.Combine(dir, "fifo"), "%F"));

            var sparse = HostStat(Path.Combine(dir, "sparse"), "%s %b %B").Split(' ');
            Assert.Equal(2560L * 4096 + 4096, long.Parse(sparse[0]));
            Assert.True(long.Parse(sparse[1]) * long.Parse(sparse[2]) < 1 << 20, $"sparse is not sparse on the host: {string.Join(' ', sparse)}");
            Assert.Equal(64L << 20, new FileInfo(Path.Combine(dir, "sparse64")).Length);
            Assert.Equal(4L << 20, new FileInfo(Path.Combine(dir, "falloc")).Length);
            Assert.True(File.ReadAllBytes(Path.Combine(dir, "sparse")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "sparse.copy"))),
                "sparse.copy (copy_file_range in the guest) differs from sparse on the host.");

            Assert.Equal("durable\n", File.ReadAllText(Path.Combine(dir, "durable.txt")));
            Assert.Equal("marker\n", File.ReadAllText(Path.Combine(dir, "marker")));
            Assert.False(File.Exists(Path.Combine(dir, "unlinked")));
        }
        finally
        {
            StopLeftoverDaemons(dir);
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Two devices/tags in one guest, served by <paramref name="first"/> and <paramref name="second"/>.</summary>
    public static void RunTwoShares(GuestBackend first, GuestBackend second, Action<string>? log = null) =>
        TwoShares((scenario, a, b) => GuestVm.Run(scenario, [new GuestShare("sharea", a, first), new GuestShare("shareb", b, second)]),
            $"{first.Name}+{second.Name}", log);

    /// <summary>
    /// The two-shares scenario with both devices served by ONE process of <paramref name="backend"/>
    /// (e.g. <see cref="GuestMultiBackend.VdevConfig"/>); returns the result for further checks.
    /// </summary>
    /// <paramref name="hostChecks"/> runs after the scenario's own checks, with the result and both host
    /// directories, before those are removed.
    public static GuestResult RunTwoSharesOneProcess(GuestMultiBackend backend, Action<string>? log = null,
        Action<GuestResult, string, string>? hostChecks = null) =>
        TwoShares((scenario, a, b) => GuestVm.Run(scenario, backend, [new GuestDevice("sharea", a), new GuestDevice("shareb", b)]),
            backend.Name + " (one process)", log, hostChecks);

    private static GuestResult TwoShares(Func<string, string, string, GuestResult> boot, string label, Action<string>? log,
        Action<GuestResult, string, string>? hostChecks = null)
    {
        var a = Directory.CreateTempSubdirectory("hvg-a-").FullName;
        var b = Directory.CreateTempSubdirectory("hvg-b-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(a, "whoami"), "share-a\n");
            File.WriteAllText(Path.Combine(b, "whoami"), "share-b\n");
            var scenario = GuestVm.LoadScenario("two-shares.sh");
            var result = boot(scenario, a, b);
            log?.Invoke($"{label}: boot {result.BootSeconds:0.00} s, whole run {result.Elapsed.TotalSeconds:0.0} s");
            AssertAllChecksPassed(result, scenario);

            var data = Pattern(8, 777);
            Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(a, "data.bin"))));
            Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(b, "data.bin"))));
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), result.Value("data_sha256"));
            Assert.Equal("from-guest-a\n", File.ReadAllText(Path.Combine(a, "renamed-a")));
            Assert.Equal("from-guest-b\n", File.ReadAllText(Path.Combine(b, "only-b")));
            Assert.False(File.Exists(Path.Combine(a, "only-b")));
            Assert.False(File.Exists(Path.Combine(b, "only-a")));
            Assert.False(File.Exists(Path.Combine(b, "renamed-a")));
            hostChecks?.Invoke(result, a, b);
            return result;
        }
        finally
        {
            StopLeftoverDaemons(a);
            StopLeftoverDaemons(b);
            Directory.Delete(a, recursive: true);
            Directory.Delete(b, recursive: true);
        }
    }

    /// <summary>
    /// A vdev that was killed (not stopped) cannot stop its daemons, which are no children of it (fuse_launcher
    /// exited): whatever daemon still serves <paramref name="dir"/> is ended by pid.
    /// </summary>
    private static void StopLeftoverDaemons(string dir)
    {
        foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
    }

    /// <summary>
    /// Every check named in the scenario ("hv_check NAME" / "hv_expect NAME") must have reported ok,
    /// so a scenario that stops early cannot pass.
    /// </summary>
    public static void AssertAllChecksPassed(GuestResult result, string scenario)
    {
        Assert.True(result.Succeeded, result.Describe());
        var missing = new StringBuilder();
        foreach (Match m in CheckName().Matches(scenario))
        {
            var name = m.Groups[1].Value;
            if (!result.Passed.Contains(name)) missing.Append(name).Append(' ');
        }
        Assert.True(missing.Length == 0, $"Checks that never reported ok: {missing}\n{result.Describe()}");
    }

    /// <summary>The same xorshift64 stream as `hvtool pattern FILE MIB SEED`.</summary>
    public static byte[] Pattern(int mib, ulong seed)
    {
        var bytes = new byte[mib << 20];
        ulong x = seed == 0 ? 1 : seed;
        for (int i = 0; i < bytes.Length; i += 8)
        {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            BitConverter.TryWriteBytes(bytes.AsSpan(i), x);
        }
        return bytes;
    }

    /// <summary>`stat -c FORMAT` on the host (lstat semantics), for fields .NET does not expose.</summary>
    public static string HostStat(string path, string format)
    {
        var psi = new ProcessStartInfo("stat") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(format);
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        var text = p.StandardOutput.ReadToEnd().Trim();
        var err = p.StandardError.ReadToEnd().Trim();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"stat {path} failed on the host: {err}");
        return text;
    }

    [GeneratedRegex(@"^\s*hv_(?:check|expect)\s+([A-Za-z0-9_.]+)", RegexOptions.Multiline)]
    private static partial Regex CheckName();
}
