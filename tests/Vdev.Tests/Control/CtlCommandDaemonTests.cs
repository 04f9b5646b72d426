using System.Diagnostics;
using System.Text.Json;
using Grpc.Core;
using Grpc.Health.V1;
using Hypervisor.Vdev.Control;

namespace Hypervisor.Vdev.Tests.Control;

/// <summary>
/// `vdev ctl` against the real passthrough daemon serving a directory through /dev/fuse: settings
/// changed over the control socket change what the mounted filesystem shows, and Shutdown stops
/// the daemon cleanly. Needs root (FUSE mount).
/// </summary>
[Trait("Category", "Root")]
public sealed class CtlCommandDaemonTests
{
    private static (int Exit, string Out, string Err) Ctl(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = CtlCommand.Run(args, stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Ctl_ControlsARunningDaemon()
    {
        Assert.True(Environment.IsPrivilegedProcess, "This test mounts a FUSE filesystem and must run as root.");
        string root = ControlTestServer.NewDirectory();
        string shared = Directory.CreateDirectory(Path.Combine(root, "src")).FullName;
        string mount = Directory.CreateDirectory(Path.Combine(root, "mnt")).FullName;
        string socket = Path.Combine(root, "c.sock");
        await File.WriteAllTextAsync(Path.Combine(shared, "a.txt"), "hello\n");
        Directory.CreateDirectory(Path.Combine(shared, "docs"));

        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string arg in new[]
                 {
                     Path.Combine(AppContext.BaseDirectory, "passthrough.dll"), "--shared-dir", shared, "--tag", "e2e",
                     "--sandbox", "none", "--mount", mount, "--control-socket", socket, "--cache", "never", "--log-level", "warn",
                 })
            psi.ArgumentList.Add(arg);
        using Process daemon = Process.Start(psi)!;
        Task<string> daemonErr = daemon.StandardError.ReadToEndAsync();
        try
        {
            using (var client = new ShareControlClient(socket, TimeSpan.FromSeconds(2)))
            {
                var started = Stopwatch.StartNew();
                while (true)
                {
                    Assert.False(daemon.HasExited, "passthrough exited: " + (daemon.HasExited ? await daemonErr : ""));
                    try
                    {
                        if ((await client.Health.CheckAsync(new HealthCheckRequest())).Status == HealthCheckResponse.Types.ServingStatus.Serving && Directory.Exists(Path.Combine(mount, "docs")))
                            break;
                    }
                    catch (RpcException) when (started.Elapsed < TimeSpan.FromSeconds(30))
                    {
                    }
                    await Task.Delay(100);
                }
            }
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(socket));

            Assert.Equal("hello\n", await File.ReadAllTextAsync(Path.Combine(mount, "a.txt")));
            var (exit, output, error) = await Task.Run(() => Ctl("--socket", socket, "--json", "status"));
            Assert.True(exit == 0, error);
            JsonElement status = JsonDocument.Parse(output).RootElement;
            Assert.Equal(shared, status.GetProperty("shared_dir").GetString());
            Assert.Equal("e2e", status.GetProperty("tag").GetString());
            Assert.Equal("never", status.GetProperty("options").GetProperty("cache").GetString());
            Assert.True(status.GetProperty("bytes_read").GetUInt64() >= 6);
            var names = status.GetProperty("opcodes").EnumerateArray().Select(o => o.GetProperty("name").GetString()).ToList();
            Assert.Contains("INIT", names);
            Assert.Contains("LOOKUP", names);
            Assert.Contains("READ", names);

            // The allowlist changes what the mount shows, from the next request on.
            Assert.Equal(0, (await Task.Run(() => Ctl("--socket", socket, "allow", "add", "docs"))).Exit);
            Assert.Equal(0, (await Task.Run(() => Ctl("--socket", socket, "allow", "enable"))).Exit);
            Assert.Equal(["docs"], Directory.GetFileSystemEntries(mount).Select(Path.GetFileName));
            Assert.False(File.Exists(Path.Combine(mount, "a.txt")));
            Assert.Equal(0, (await Task.Run(() => Ctl("--socket", socket, "allow", "disable"))).Exit);
            Assert.True(File.Exists(Path.Combine(mount, "a.txt")));

            (exit, output, _) = await Task.Run(() => Ctl("--socket", socket, "--json", "direct-io", "on"));
            Assert.Equal(0, exit);
            Assert.True(JsonDocument.Parse(output).RootElement.GetProperty("direct_io").GetBoolean());

            // The settings model comes back whole: as started, with what was changed since (direct I/O, the allowlist).
            (exit, output, error) = await Task.Run(() => Ctl("--socket", socket, "--json", "status"));
            Assert.True(exit == 0, error);
            JsonElement settings = JsonDocument.Parse(output).RootElement.GetProperty("settings");
            Assert.Equal(shared, settings.GetProperty("shared_dir").GetString());
            Assert.Equal("CACHE_POLICY_NEVER", settings.GetProperty("cache").GetString());
            Assert.Equal("VERBOSITY_WARN", settings.GetProperty("log_level").GetString());
            Assert.True(settings.GetProperty("direct_io").GetBoolean());
            Assert.Equal(["docs"], settings.GetProperty("allow").EnumerateArray().Select(e => e.GetString()));
            (exit, output, _) = await Task.Run(() => Ctl("--socket", socket, "status"));
            Assert.Equal(0, exit);
            Assert.Contains($"Settings       --shared-dir {shared} --tag e2e --cache never --direct-io --log-level warn --allow docs --control-socket {socket}", output);

            (exit, _, error) = await Task.Run(() => Ctl("--socket", socket, "shutdown"));
            Assert.True(exit == 0, error);
            Assert.True(daemon.WaitForExit(TimeSpan.FromSeconds(15)), "passthrough did not exit after Shutdown");
            Assert.Equal(0, daemon.ExitCode);
            Assert.False(File.Exists(socket));
            Assert.DoesNotContain(mount, await File.ReadAllTextAsync("/proc/mounts"));

            // With the daemon gone, ctl says so in one sentence.
            (exit, _, error) = Ctl("--socket", socket, "status");
            Assert.Equal(3, exit);
            Assert.Contains("does not exist", error);
        }
        finally
        {
            if (!daemon.HasExited)
            {
                daemon.Kill();
                daemon.WaitForExit(5000);
            }
            if ((await File.ReadAllTextAsync("/proc/mounts")).Contains(mount))
                Process.Start("umount", ["-l", mount])!.WaitForExit(5000);
            Directory.Delete(root, recursive: true);
        }
    }
}
