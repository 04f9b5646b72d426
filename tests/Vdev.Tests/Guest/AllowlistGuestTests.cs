using System.Diagnostics;
using System.Security.Cryptography;
using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// The allowlist over the ring, set with <c>vdev ctl</c> while a real guest runs (tests/guest/scenarios/allowlist.sh):
/// every operation that names a child is refused for a hidden name and in a directory that is only the path down to
/// an allowed one, exactly as on the daemon's own /dev/fuse mount (Passthrough.Tests' MountAllowlistTests), with the
/// host's files unchanged; a path removed while the guest holds it cached and open is refused at its next use.
/// Needs root, QEMU and the guest kernel.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class AllowlistGuestTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CtlTimeout = TimeSpan.FromSeconds(30);

    private static readonly string[] Expected =
    [
        "open-hidden ENOENT", "open-creat-hidden EACCES", "append-creat-hidden EACCES", "excl-creat-hidden EACCES",
        "creat-new-in-path-dir EACCES", "mkdir-new-in-path-dir EACCES", "mkdir-hidden EACCES", "mkdir-visible-existing EEXIST",
        "symlink-new-in-path-dir EACCES", "symlink-hidden EACCES", "link-new-in-path-dir EACCES", "link-over-hidden EACCES",
        "mknod-new-in-path-dir EACCES", "mknod-hidden EACCES", "unlink-hidden ENOENT", "rmdir-hidden ENOENT",
        "unlink-below-hidden ENOENT", "rename-hidden-source ENOENT", "rename-over-hidden EACCES",
        "rename-to-new-in-path-dir EACCES", "exchange-with-hidden ENOENT", "noreplace-over-hidden EACCES",
        "creat-in-nested-path-dir EACCES", "open-hidden-in-nested-path-dir ENOENT", "mkdir-in-nested-path-dir EACCES",
        "rename-out-of-allowed EACCES", "setxattr-hidden ENOENT", "tmpfile-in-path-dir ENOTSUP",
        "creat-in-allowed ok", "mkdir-in-allowed ok", "creat-in-nested-allowed ok",
        "list-root docs,keep.txt,mailbox,photos", "list-docs pub",
        "removed-open ENOENT", "removed-setxattr ENOENT", "removed-chmod ENOENT",
    ];

    [Fact]
    public void Allowlist_OverTheRing_RefusesEveryOperationOnHiddenNames_AndRemovedPathsAtUse()
    {
        var dir = Directory.CreateTempSubdirectory("hvg-allow-").FullName;
        var errors = new List<string>();
        string? socket = null;
        var vdev = GuestBackend.Vdev(cache: "always", extraArgs: "--xattr");
        var backend = new GuestBackend("vdev", ctx =>
        {
            socket = ctx.SocketPath;
            return vdev.CreateStartInfo(ctx);
        });
        var mailbox = Path.Combine(dir, "mailbox");
        try
        {
            Directory.CreateDirectory(Path.Combine(dir, "photos"));
            File.WriteAllText(Path.Combine(dir, "photos", "a.jpg"), "A");
            File.WriteAllText(Path.Combine(dir, "secret"), "S");
            Directory.CreateDirectory(Path.Combine(dir, "secretdir"));
            File.WriteAllText(Path.Combine(dir, "secretdir", "inner"), "I");
            Directory.CreateDirectory(Path.Combine(dir, "docs", "pub"));
            File.WriteAllText(Path.Combine(dir, "docs", "pub", "p.txt"), "P");
            File.WriteAllText(Path.Combine(dir, "docs", "private.txt"), "X");
            File.WriteAllText(Path.Combine(dir, "keep.txt"), "K");
            GuestScenarios.WriteMailbox(mailbox, "wait");
            var before = Snapshot(dir);

            var scenario = GuestVm.LoadScenario("allowlist.sh");
            var sw = Stopwatch.StartNew();
            var result = GuestVm.Run(scenario, [new GuestShare("share0", dir, backend)], new GuestOptions
            {
                Timeout = TimeSpan.FromMinutes(3),
                OnConsoleLine = line =>
                {
                    try
                    {
                        if (line.Contains("@@HV val phase 1", StringComparison.Ordinal))
                        {
                            foreach (var path in new[] { "photos", "docs/pub", "mailbox", "keep.txt" }) Ctl(socket!, "allow", "add", path);
                            Ctl(socket!, "allow", "enable");
                            GuestScenarios.WriteMailbox(mailbox, "go1");
                        }
                        else if (line.Contains("@@HV val phase 2", StringComparison.Ordinal))
                        {
                            Ctl(socket!, "allow", "remove", "keep.txt");
                            GuestScenarios.WriteMailbox(mailbox, "go2");
                        }
                        else return;
                        output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: {line.Trim()} done");
                    }
                    catch (Exception e) { lock (errors) errors.Add(e.ToString()); }
                },
            });
            Assert.True(errors.Count == 0, "the host side failed: " + string.Join("\n", errors) + "\n" + result.Describe());
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            Assert.Equal(Expected, result.Values("op"));

            var after = Snapshot(dir);
            foreach (var made in new[] { "photos/new.jpg", "photos/sub/", "docs/pub/q.txt" })
                Assert.True(after.Remove(made), $"{made} was not created on the host");
            after.Remove("mailbox");
            before.Remove("mailbox");
            Assert.Equal(before, after);
        }
        finally
        {
            foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
            Directory.Delete(dir, recursive: true);
        }
    }

    private void Ctl(string socket, params string[] args)
    {
        var outcome = HostProcesses.Run(GuestBackend.ResolveVdev(), ["ctl", "--socket", socket + ".ctl", .. args], CtlTimeout);
        if (outcome.ExitCode != 0) throw new InvalidOperationException($"vdev ctl {string.Join(' ', args)} failed: {outcome}");
        output.WriteLine($"vdev ctl {string.Join(' ', args)}: {outcome.Stdout.Trim()}");
    }

    /// <summary>Every path below <paramref name="root"/> with its mode and a hash of its content ("dir/" for directories).</summary>
    private static Dictionary<string, string> Snapshot(string root)
    {
        var result = new Dictionary<string, string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(root, entry);
            if (Directory.Exists(entry)) result[relative + "/"] = File.GetUnixFileMode(entry).ToString();
            else result[relative] = File.GetUnixFileMode(entry) + " " + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(entry)));
        }
        return result;
    }
}
