using System.Text.Json;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// Counts known nodes through the control service, so nothing may drop the host's dentry cache meanwhile (other
/// mount tests write /proc/sys/vm/drop_caches, which makes the kernel forget this test's nodes too): the class runs
/// alone.
/// </summary>
[CollectionDefinition("Host dentry cache", DisableParallelization = true)]
public sealed class HostDentryCacheCollection;

/// <summary>
/// The limits a guest hits in production: the daemon must not hold a descriptor per inode the guest knows, and when
/// the descriptor limit (RLIMIT_NOFILE, 20,000 here) is reached anyway, only the request that needs one fails and the
/// daemon keeps serving. Runs alone: see <see cref="HostDentryCacheCollection"/>.
/// </summary>
[Trait("Category", "Root")]
[Collection("Host dentry cache")]
public sealed class MountLimitsTests
{
    private static int OpenDescriptors(int pid) => Directory.GetFiles($"/proc/{pid}/fd").Length;

    [Fact]
    public void AnFdCacheSizeThatDoesNotFitUnderTheDescriptorLimit_IsRefusedWithTheLimitNamed()
    {
        // The daemon is a .NET process as this one is, so its soft limit is the same (raised to the hard limit).
        var limit = Hypervisor.Passthrough.FileSystem.DescriptorBudget.SoftLimit();
        var error = Assert.Throws<InvalidOperationException>(() => MountedShare.Start("--fd-cache-size", limit.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Contains($"--fd-cache-size {limit} does not fit under RLIMIT_NOFILE ({limit}); use at most {limit - 256}", error.Message);
    }

    [Fact]
    public void KnownInodesDoNotPinDescriptors()
    {
        const int files = 5000;
        using var share = MountedShare.Start("--fd-cache-size", "64");
        var dir = Path.Combine(share.Source, "many");
        Directory.CreateDirectory(dir);
        for (var i = 0; i < files; i++) File.WriteAllBytes(Path.Combine(dir, $"f{i}"), []);
        var before = OpenDescriptors(share.Pid);
        // Every lstat is a LOOKUP; the kernel keeps the dentries (and the daemon the nodes) while memory allows.
        var mounted = Path.Combine(share.MountPoint, "many");
        for (var i = 0; i < files; i++) Assert.True(File.Exists(Path.Combine(mounted, $"f{i}")));
        var after = OpenDescriptors(share.Pid);
        Assert.True(after - before < 200, $"the daemon holds {after} descriptors after {files} lookups ({before} before); it must not keep one per inode");
        // And the nodes still work: every file is reachable, readable and writable through its node.
        File.WriteAllText(Path.Combine(mounted, "f0"), "zero");
        File.WriteAllText(Path.Combine(mounted, $"f{files - 1}"), "last");
        Assert.Equal("zero", File.ReadAllText(Path.Combine(dir, "f0")));
        Assert.Equal("last", File.ReadAllText(Path.Combine(mounted, $"f{files - 1}")));
        Assert.Equal(files, Directory.EnumerateFiles(mounted).Count());
    }

    /// <summary>
    /// The daemon's node table follows the kernel: thousands of lookups add nodes, and when the kernel forgets the
    /// dentries (echo 2 > drop_caches sends FORGET / BATCH_FORGET) the nodes go away again; closed files leave no
    /// open handle behind. Read from the control service's counters.
    /// </summary>
    [Fact]
    public void ForgottenNodesAndClosedFilesAreReleased()
    {
        const int files = 3000;
        using var share = MountedShare.StartWithControl();
        var dir = Path.Combine(share.Source, "many");
        Directory.CreateDirectory(dir);
        for (var i = 0; i < files; i++) File.WriteAllBytes(Path.Combine(dir, $"f{i}"), [1]);
        using var control = ControlClient.WhenServing(share.ControlSocket);
        var mounted = Path.Combine(share.MountPoint, "many");
        var open = new List<FileStream>();
        for (var i = 0; i < files; i++)
        {
            Assert.True(File.Exists(Path.Combine(mounted, $"f{i}")));
            if (i % 100 == 0) open.Add(File.OpenRead(Path.Combine(mounted, $"f{i}")));
        }
        var status = control.GetStatus();
        Assert.True(status.KnownNodes >= files, $"{status.KnownNodes} known nodes after {files} lookups");
        Assert.Equal((ulong)open.Count, status.OpenFileHandles);
        foreach (var f in open) f.Dispose();

        var deadline = System.Diagnostics.Stopwatch.StartNew();
        do
        {
            File.WriteAllText("/proc/sys/vm/drop_caches", "2");
            Thread.Sleep(200);
            status = control.GetStatus();
        } while ((status.KnownNodes > 100 || status.OpenFileHandles > 0) && deadline.Elapsed < TimeSpan.FromSeconds(15));
        Assert.True(status.KnownNodes <= 100, $"{status.KnownNodes} nodes are still known after the kernel forgot {files} dentries");
        Assert.Equal(0ul, status.OpenFileHandles);
        // Looked up again, the same files get nodes again and still work.
        Assert.Equal(new byte[] { 1 }, File.ReadAllBytes(Path.Combine(mounted, $"f{files / 2}")));
    }

    /// <summary>
    /// Two processes open one file 11,000 times each (every open holds a host descriptor in the daemon, 22,000 in
    /// all, beyond RLIMIT_NOFILE): the opens beyond the limit fail with EMFILE or ENFILE, nothing else, and once they
    /// are closed the daemon serves as before.
    /// </summary>
    [Fact]
    public async Task DescriptorExhaustionFailsOnlyTheRequestsThatNeedOne()
    {
        using var share = MountedShare.Start();
        var file = Path.Combine(share.MountPoint, "f");
        File.WriteAllText(file, "content");
        const string script = """
            import errno, json, os, resource, sys
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            fds, errors = [], {}
            for i in range(int(sys.argv[2])):
                try:
                    fds.append(os.open(sys.argv[1], os.O_RDONLY))
                except OSError as e:
                    name = errno.errorcode.get(e.errno, str(e.errno))
                    errors[name] = errors.get(name, 0) + 1
            # Every descriptor that did open reads the file.
            bad = sum(1 for fd in fds[::97] if os.pread(fd, 7, 0) != b"content")
            sys.stdout.write(json.dumps({"opened": len(fds), "errors": errors, "bad": bad}) + "\n")
            sys.stdout.flush()
            sys.stdin.read()  # hold the descriptors until told to exit
            """;
        var children = new List<System.Diagnostics.Process>();
        try
        {
            var results = new List<JsonElement>();
            for (var c = 0; c < 2; c++)
            {
                var info = new System.Diagnostics.ProcessStartInfo(FsOpsScript.Python) { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false };
                info.ArgumentList.Add("-c");
                info.ArgumentList.Add(script);
                info.ArgumentList.Add(file);
                info.ArgumentList.Add("11000");
                var child = System.Diagnostics.Process.Start(info)!;
                children.Add(child);
                var line = child.StandardOutput.ReadLineAsync();
                Assert.True(await Task.WhenAny(line, Task.Delay(TimeSpan.FromSeconds(90))) == line, "opening 11,000 files through the mount hung");
                results.Add(JsonDocument.Parse((await line)!).RootElement.Clone());
            }
            var opened = results.Sum(r => r.GetProperty("opened").GetInt32());
            Assert.True(results.All(r => r.GetProperty("bad").GetInt32() == 0), "a descriptor that opened read wrong data");
            foreach (var r in results)
                foreach (var e in r.GetProperty("errors").EnumerateObject())
                    Assert.True(e.Name is "EMFILE" or "ENFILE", $"opens failed with {e.Name} ({e.Value} times); only EMFILE/ENFILE are expected at the limit");
            Assert.True(opened < 22000, "22,000 opens succeeded; the daemon's descriptor limit should have been reached (is RLIMIT_NOFILE above 20,000?)");
            Assert.True(opened > 15000, $"only {opened} of 22,000 opens succeeded; the daemon should serve opens up to its descriptor limit");
            // While the limit is reached, requests that need no new descriptor still work.
            Assert.True(File.Exists(file));
            Assert.True(share.DaemonAlive, share.DaemonLog);
        }
        finally
        {
            foreach (var child in children)
            {
                child.StandardInput.Close();
                if (!child.WaitForExit(30_000)) child.Kill();
                child.Dispose();
            }
        }
        Assert.Equal("content", File.ReadAllText(file));
        File.WriteAllText(Path.Combine(share.MountPoint, "after"), "still serving");
        Assert.Equal("still serving", File.ReadAllText(Path.Combine(share.Source, "after")));
        Assert.True(share.DaemonAlive, share.DaemonLog);
    }
}
