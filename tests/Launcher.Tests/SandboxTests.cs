using Hypervisor.Tests;
using System.Globalization;
using System.Text.Json;
using Hypervisor.Interop;
using Hypervisor.Launcher.Tests.Support;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Launcher.Tests;

/// <summary>
/// The daemon's sandbox, read from /proc of a running ring daemon that fuse_launcher started, as the vdev starts it
/// (root: namespaces, pivot_root and capabilities need it).
/// </summary>
[Trait("Category", "Root")]
public class SandboxTests
{
    private static readonly string[] Namespaces = ["mnt", "pid", "net", "ipc", "uts"];

    [Fact]
    public void ByDefault_TheDaemonIsInNamespacesOfItsOwn_WithTheShareAsRoot_TheDocumentedCapabilities_NoNewPrivs_AndSeccomp()
    {
        using var share = new TempShare();
        File.WriteAllText(Path.Combine(share.Share, "a.txt"), "a");
        Directory.CreateDirectory(Path.Combine(share.Share, "sub"));
        WithDaemon(share, [], pid =>
        {
            var expected = Capabilities.DaemonDefault.ToString("x16", CultureInfo.InvariantCulture);
            foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
            {
                // Every thread: capabilities are each thread's own.
                var status = ProcStatus.Read($"{task}/status");
                Assert.Equal(expected, status["CapEff"]);
                Assert.Equal(expected, status["CapPrm"]);
                Assert.Equal(expected, status["CapBnd"]);
                Assert.Equal("0000000000000000", status["CapInh"]);
                Assert.Equal("0000000000000000", status["CapAmb"]);
                Assert.Equal("1", status["NoNewPrivs"]);
                Assert.Equal("2", status["Seccomp"]);
            }
            foreach (var ns in Namespaces)
                Assert.NotEqual(new FileInfo($"/proc/self/ns/{ns}").LinkTarget, new FileInfo($"/proc/{pid}/ns/{ns}").LinkTarget);
            // Its root is the share and nothing else: the host's /etc, /usr, /proc cannot be named at all.
            Assert.Equal(["a.txt", "sub"], Directory.GetFileSystemEntries($"/proc/{pid}/root").Select(Path.GetFileName).Order());
            Assert.False(File.Exists($"/proc/{pid}/root/etc/passwd"));
        });
    }

    [Fact]
    public void Modcaps_AddsAndRemoves_AndSeccompNone_LeavesNoFilter()
    {
        using var share = new TempShare();
        WithDaemon(share, ["--modcaps", "+sys_admin:-mknod", "--seccomp", "none"], pid =>
        {
            Assert.True(Capabilities.TryModify(Capabilities.DaemonDefault, "+sys_admin:-mknod", out var caps, out _));
            var status = ProcStatus.Read($"/proc/{pid}/status");
            Assert.Equal(caps.ToString("x16", CultureInfo.InvariantCulture), status["CapEff"]);
            Assert.Equal("0", status["Seccomp"]);
            Assert.Equal("1", status["NoNewPrivs"]);
        });
    }

    [Fact]
    public void Chroot_KeepsTheHostsNamespaces_WithTheShareAsRoot()
    {
        using var share = new TempShare();
        File.WriteAllText(Path.Combine(share.Share, "only.txt"), "x");
        WithDaemon(share, ["--sandbox", "chroot"], pid =>
        {
            Assert.Equal(new FileInfo("/proc/self/ns/mnt").LinkTarget, new FileInfo($"/proc/{pid}/ns/mnt").LinkTarget);
            Assert.Equal(["only.txt"], Directory.GetFileSystemEntries($"/proc/{pid}/root").Select(Path.GetFileName));
            Assert.Equal("2", ProcStatus.Read($"/proc/{pid}/status")["Seccomp"]);
        });
    }

    [Theory]
    [InlineData("--modcaps", "+sys_flying", "--modcaps '+sys_flying' names \"sys_flying\", which is not a capability")]
    [InlineData("--sandbox", "jail", "--sandbox 'jail' is not a sandbox mode; use namespace, chroot or none.")]
    [InlineData("--seccomp", "maybe", "--seccomp 'maybe' is not a seccomp action; use kill, trap, log or none.")]
    public void ABadSandboxSetting_IsOneSentence_AndStartsNothing(string option, string value, string expected)
    {
        using var share = new TempShare();
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--ring", "memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9", option, value,
            "--passthrough", LauncherRun.PassthroughPath]);
        Assert.Equal(2, run.ExitCode);
        Assert.Contains(expected, Assert.Single(run.StderrLines));
    }

    [Fact]
    public void TheDaemonStartedDirectly_RefusesTheNamespaceSandbox_WithWhatToDo()
    {
        using var share = new TempShare();
        using var rings = ShmRingSet.Create(queueCount: 1);
        var info = new System.Diagnostics.ProcessStartInfo(LauncherRun.PassthroughPath) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--shared-dir", share.Share, "--ring", rings.Fds.ToString() }) info.ArgumentList.Add(a);
        using var daemon = System.Diagnostics.Process.Start(info)!;
        var stderr = daemon.StandardError.ReadToEnd();
        Assert.True(daemon.WaitForExit(30_000));
        Assert.Equal(1, daemon.ExitCode);
        Assert.Contains("--sandbox namespace: the daemon is not in namespaces of its own; fuse_launcher creates them", stderr);
    }

    [Fact]
    public void MountWithASandbox_IsRefused_NamingSandboxNone()
    {
        using var share = new TempShare();
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--mount", "/mnt", "--passthrough", LauncherRun.PassthroughPath]);
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("pass --sandbox none with --mount", Assert.Single(run.StderrLines));
    }

    private static void WithDaemon(TempShare share, string[] extra, Action<int> check)
    {
        using var rings = ShmRingSet.Create(queueCount: 2);
        int pid = 0;
        try
        {
            rings.SetInheritable(true);
            LauncherRun run;
            try
            {
                run = LauncherRun.Start(["--shared-dir", share.Share, "--ring", rings.Fds.ToString(), .. extra,
                    "--passthrough", LauncherRun.PassthroughPath, "--timeout", "30"]);
            }
            finally
            {
                rings.SetInheritable(false);
            }
            Assert.True(run.ExitCode == 0, run.Stderr);
            using var json = JsonDocument.Parse(Assert.Single(run.StdoutLines));
            pid = json.RootElement.GetProperty("pid").GetInt32();
            check(pid);
            Libc.kill(pid, Libc.SIGTERM);
            Assert.True(ProcFs.WaitGone(pid, 10_000), "the daemon did not exit on SIGTERM");
        }
        finally
        {
            if (pid > 0 && ProcFs.IsRunning(pid)) Libc.kill(pid, Libc.SIGKILL);
        }
    }
}
