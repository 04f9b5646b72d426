using System.Collections.Concurrent;
using System.Diagnostics;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Tests;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Vdev.Tests.Cli;

/// <summary>
/// When the published vdev's vhost-user socket appears (vdev/README.md, "When the socket appears"): as soon as the vdev
/// listens, while its share is still starting; a VMM that connects then waits for its first answer until the share
/// serves, and a share that fails to start ends the vdev with its message and takes the socket away. The share's start
/// is held by a launcher that waits for the test's word before it runs the real fuse_launcher (or fails).
/// </summary>
[Trait("Category", "Root")]
public sealed class VdevStartupTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-startup-").FullName;

    [Fact]
    public void TheSocketListensWhileTheShareStarts_AndAVmmConnectedMeanwhileIsAnsweredOnceTheShareServes()
    {
        var (vdev, log) = Start($"exec {Executables.Launcher} \"$@\"");
        VhostUserFrontend? vmm = null;
        try
        {
            WaitFor(() => File.Exists(Started), vdev, log, "the vdev did not start its launcher");
            Assert.True(File.Exists(Socket), "the socket does not exist while the share starts");
            Assert.Empty(HostProcesses.FindPassthroughDaemons(Share));

            vmm = VhostUserFrontend.Connect(Socket, TimeSpan.FromSeconds(10));
            vmm.Send(VhostUserRequest.GetFeatures, default);
            // Nothing is answered while the share has not started (the launcher waits for the word below).
            Assert.Throws<TimeoutException>(() => vmm.Receive(TimeSpan.FromMilliseconds(300)));
            Assert.False(vdev.HasExited, Log(log));

            File.WriteAllText(Go, "");
            var (header, payload) = vmm.Receive(TimeSpan.FromSeconds(30));
            Assert.Equal(VhostUserRequest.GetFeatures, header.Request);
            var features = BitConverter.ToUInt64(payload);
            Assert.NotEqual(0UL, features & (1UL << VirtioFeatures.Version1Bit));
            Assert.Single(HostProcesses.FindPassthroughDaemons(Share));
        }
        finally
        {
            vmm?.Dispose();
            Stop(vdev);
        }
        Assert.False(File.Exists(Socket), "the socket was left behind");
    }

    [Fact]
    public void AShareThatFailsToStart_EndsTheVdevWithItsMessageAndStatus1_ClosesAWaitingVmm_AndRemovesTheSocket()
    {
        var (vdev, log) = Start("echo 'fuse_launcher: the test refuses this share' >&2; exit 1");
        VhostUserFrontend? vmm = null;
        try
        {
            WaitFor(() => File.Exists(Started), vdev, log, "the vdev did not start its launcher");
            vmm = VhostUserFrontend.Connect(Socket, TimeSpan.FromSeconds(10));
            vmm.Send(VhostUserRequest.GetFeatures, default);

            File.WriteAllText(Go, "");
            Assert.True(vdev.WaitForExit(30_000), "the vdev did not exit after its share failed to start");
            vdev.WaitForExit();
            Assert.Equal(1, vdev.ExitCode);
            Assert.Contains("vdev: command line: the daemon of share 'startup' did not start: it could not start (fuse_launcher exit 1; its reason is the line above).",
                Log(log), StringComparison.Ordinal);
            Assert.Throws<EndOfStreamException>(() => vmm.Receive(TimeSpan.FromSeconds(10)));
            Assert.False(File.Exists(Socket), "the socket was left behind");
        }
        finally
        {
            vmm?.Dispose();
            Stop(vdev);
        }
    }

    private string Share => Path.Combine(_dir, "share");
    private string Socket => Path.Combine(_dir, "s.sock");
    private string Started => Path.Combine(_dir, "launcher-started");
    private string Go => Path.Combine(_dir, "go");

    /// <summary>Starts the vdev with a launcher that notes it was started, waits for <see cref="Go"/>, then runs <paramref name="then"/>.</summary>
    private (Process Vdev, ConcurrentQueue<string> Log) Start(string then)
    {
        Directory.CreateDirectory(Share);
        var launcher = Path.Combine(_dir, "launcher.sh");
        File.WriteAllText(launcher, $"#!/bin/sh\n: > {Started}\nwhile [ ! -e {Go} ]; do sleep 0.02; done\n{then}\n");
        File.SetUnixFileMode(launcher, (UnixFileMode)0b111_101_101);
        var info = new ProcessStartInfo(Executables.Vdev) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--socket-path", Socket, "--shared-dir", Share, "--tag", "startup", "--launcher", launcher }) info.ArgumentList.Add(a);
        var log = new ConcurrentQueue<string>();
        var vdev = Process.Start(info)!;
        vdev.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        vdev.OutputDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        vdev.BeginErrorReadLine();
        vdev.BeginOutputReadLine();
        return (vdev, log);
    }

    private static void WaitFor(Func<bool> condition, Process vdev, ConcurrentQueue<string> log, string failure)
    {
        var deadline = Environment.TickCount64 + 30_000;
        while (!condition() && !vdev.HasExited && Environment.TickCount64 < deadline) Thread.Sleep(10);
        Assert.True(condition(), $"{failure}: {Log(log)}");
    }

    private static string Log(ConcurrentQueue<string> log) => string.Join('\n', log);

    private static void Stop(Process vdev)
    {
        using (vdev)
        {
            if (vdev.HasExited) return;
            // SIGTERM: the vdev stops its daemon and removes its sockets.
            Hypervisor.Interop.Libc.kill(vdev.Id, Hypervisor.Interop.Libc.SIGTERM);
            if (!vdev.WaitForExit(20_000)) vdev.Kill();
        }
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
