using System.Diagnostics;
using System.Text.Json;
using Hypervisor.Interop;
using Hypervisor.Launcher.Tests.Support;

namespace Hypervisor.Launcher.Tests;

/// <summary>
/// fuse_launcher run as a process, with small scripts as the daemon where a test needs one that behaves in a
/// chosen way: how it starts the daemon (session, descriptors, environment), and how it fails.
/// </summary>
public class FuseLauncherTests
{
    [Fact]
    public void ReadyDaemon_PrintsOneJsonLine_AndRunsInItsOwnSessionWithExactlyTheNamedFds()
    {
        using var share = new TempShare();
        var script = share.ReadyScript();
        // Created first so that its number lies below the named ones: closefrom above them cannot be what keeps it out.
        int leak = InheritableFds.Memfd("launcher-test-not-named");
        int memfd = InheritableFds.Memfd("launcher-test-ring-memfd");
        int doorbell = InheritableFds.Memfd("launcher-test-extra");
        var control = Path.Combine(share.Root, "control.sock");
        int pid = 0;
        try
        {
            var run = LauncherRun.Start([
                "--shared-dir", share.Share, "--sandbox", "none", "--mount", Path.Combine(share.Root, "mnt"), "--tag", "data",
                "--ring", $"memfd={memfd},queues=1,sq0={doorbell},sqf0={doorbell},cq0={doorbell},cqf0={doorbell}", "--inherit-fd", doorbell.ToString(),
                "--control-socket", control, "--passthrough", script]);

            Assert.True(run.ExitCode == 0, run.Stderr);
            var line = Assert.Single(run.StdoutLines);
            using var json = JsonDocument.Parse(line);
            pid = json.RootElement.GetProperty("pid").GetInt32();
            Assert.Equal(share.ScriptPid(), pid);
            Assert.Equal(control, json.RootElement.GetProperty("control").GetString());
            Assert.Equal("data", json.RootElement.GetProperty("tag").GetString());
            Assert.Equal(new[] { "pid", "control", "tag" }, json.RootElement.EnumerateObject().Select(p => p.Name));

            // It outlived the launcher, leads its own session and process group.
            Assert.True(ProcFs.IsRunning(pid));
            Assert.Equal(pid, Libc.getsid(pid));
            Assert.Equal(pid, Libc.getpgid(pid));
            Assert.NotEqual(Libc.getsid(Environment.ProcessId), Libc.getsid(pid));

            // Exactly stdin (/dev/null), stdout+stderr (one pipe), and the ring's two descriptors under their numbers;
            // not the memfd this test host leaked without naming it, and no longer the ready pipe (closed). Read once the
            // script has closed the pipe and exec'ed sleep: it writes the ready line first, and fuse_launcher may have
            // exited before the script's next line.
            // sleep itself opens and closes a few files as it starts (the dynamic linker's cache, libc, locale data), after
            // exec has named it: the set is read until it is the expected one, for 10 s at most. A descriptor fuse_launcher
            // passed on by mistake stays open, so it still fails the assertion below.
            Assert.True(ProcFs.WaitForCommand(pid, "sleep", 10_000), "the script daemon did not exec sleep after reporting ready");
            var expected = new[] { 0, 1, 2, Math.Min(memfd, doorbell), Math.Max(memfd, doorbell) };
            var fds = ProcFs.FdsOnceSettled(pid, now => now.Keys.Order().SequenceEqual(expected), 10_000);
            Assert.Equal(expected, fds.Keys.Order());
            Assert.Equal("/dev/null", fds[0]);
            Assert.StartsWith("pipe:", fds[1]);
            Assert.Equal(fds[1], fds[2]);
            Assert.Contains("launcher-test-ring-memfd", fds[memfd]);
            Assert.Contains("launcher-test-extra", fds[doorbell]);
            Assert.DoesNotContain(fds.Values, v => v.Contains("launcher-test-not-named"));

            // Signals are back at their defaults: the .NET launcher ignores SIGPIPE, and exec would pass that on.
            var ignored = Convert.ToUInt64(File.ReadAllLines($"/proc/{pid}/status").Single(l => l.StartsWith("SigIgn:"))[7..].Trim(), 16);
            var blocked = Convert.ToUInt64(File.ReadAllLines($"/proc/{pid}/status").Single(l => l.StartsWith("SigBlk:"))[7..].Trim(), 16);
            // Signals 1-31 only: glibc's posix_spawn leaves its own internal real-time signals (32, 33) ignored.
            Assert.Equal(0UL, ignored & 0x7FFF_FFFFUL);
            Assert.Equal(0UL, blocked);

            // The daemon's start-up output is passed on on stderr; stdout carries only the result line.
            Assert.Contains("script daemon starting", run.Stderr);
        }
        finally
        {
            Libc.close(memfd);
            Libc.close(doorbell);
            Libc.close(leak);
            if (pid > 0) Libc.kill(pid, Libc.SIGKILL);
        }
    }

    [Fact]
    public void ShareOptions_AreForwardedInTheDaemonsVocabulary_WithAbsolutePaths()
    {
        using var share = new TempShare();
        var script = share.ReadyScript();
        int pid = 0;
        try
        {
            var run = LauncherRun.Start([
                "-o", "source=share,cache=always,xattr", "--readonly", "--writeback", "--direct-io", "--allow-direct-io",
                "--thread-pool-size", "3", "--fd-cache-size", "100", "--log-level", "debug", "--sandbox", "none", "--mount", "mnt",
                "--passthrough", script], workingDirectory: share.Root);
            Assert.True(run.ExitCode == 0, run.Stderr);
            pid = share.ScriptPid();
            var args = File.ReadAllLines(share.ArgsFile);
            Assert.Equal(
                new[] { "--shared-dir", share.Share, "--cache", "always", "--direct-io", "--allow-direct-io", "--xattr",
                 "--readonly", "--writeback", "--thread-pool-size", "3", "--fd-cache-size", "100", "--log-level", "debug",
                 "--sandbox", "none", "--mount", Path.Combine(share.Root, "mnt"), "--ready-fd", "3" },
                args);
            // The daemon runs in "/", so relative paths would have meant something else there.
            Assert.Equal("/", new DirectoryInfo($"/proc/{pid}/cwd").LinkTarget);
        }
        finally
        {
            if (pid > 0) Libc.kill(pid, Libc.SIGKILL);
        }
    }

    [Fact]
    public void TheEnvironmentPassesThrough()
    {
        using var share = new TempShare();
        var script = share.Script("env.sh", $$"""
            echo "$LAUNCHER_TEST_VALUE" > '{{share.Root}}/env'
            echo "ready pid=$$ control=$control" >&$ready
            exec sleep 60
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--passthrough", script],
            environment: new Dictionary<string, string> { ["LAUNCHER_TEST_VALUE"] = "passed through" });
        Libc.kill(share.ScriptPid(), Libc.SIGKILL);
        Assert.True(run.ExitCode == 0, run.Stderr);
        Assert.Equal("passed through", File.ReadAllText(Path.Combine(share.Root, "env")).Trim());
    }

    [Fact]
    public void DaemonThatNeverReportsReady_TimesOutWithExit3_AndItAndItsChildrenAreGone()
    {
        using var share = new TempShare();
        var childPid = Path.Combine(share.Root, "child");
        var script = share.Script("never.sh", $$"""
            echo "passthrough: still thinking" >&2
            sleep 60 &
            echo $! > '{{childPid}}'
            wait
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--timeout", "1", "--passthrough", script]);

        Assert.Equal(3, run.ExitCode);
        Assert.Empty(run.Stdout);
        var line = Assert.Single(run.StderrLines);
        Assert.StartsWith("fuse_launcher: the daemon did not report ready within 1 s and was stopped", line);
        Assert.Contains("still thinking", line);
        Assert.InRange(run.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10));
        Assert.True(ProcFs.WaitGone(share.ScriptPid(), 2000), "the daemon is still running");
        Assert.True(ProcFs.WaitGone(int.Parse(File.ReadAllText(childPid).Trim()), 2000), "the daemon's child is still running");
    }

    [Fact]
    public void DaemonThatIgnoresSigterm_IsKilledAfterTheGracePeriod()
    {
        using var share = new TempShare();
        var script = share.Script("stubborn.sh", """
            trap '' TERM
            while true; do sleep 0.1; done
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--timeout", "0.5", "--passthrough", script]);

        Assert.Equal(3, run.ExitCode);
        Assert.InRange(run.Elapsed.TotalMilliseconds, 500 + FuseLauncher.StopGraceMs, 500 + FuseLauncher.StopGraceMs + 8000);
        Assert.True(ProcFs.WaitGone(share.ScriptPid(), 2000), "the daemon is still running");
    }

    [Fact]
    public void DaemonThatExitsBeforeReady_GivesExit1_WithItsOwnReason()
    {
        using var share = new TempShare();
        var script = share.Script("dies.sh", """
            echo "some log line" >&2
            echo "passthrough: The mount point /nowhere does not exist or is not a directory; create it first." >&2
            exit 1
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/nowhere", "--passthrough", script]);

        Assert.Equal(1, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.Equal(
            "fuse_launcher: the daemon exited with exit code 1 before it was ready: The mount point /nowhere does not exist or is not a directory; create it first.",
            Assert.Single(run.StderrLines));
    }

    [Fact]
    public void DaemonThatClosesTheReadyPipeWithoutTheLine_GivesExit1_AndIsStopped()
    {
        using var share = new TempShare();
        var script = share.Script("mute.sh", """
            exec {ready}>&-
            exec sleep 60
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--passthrough", script]);

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("did not report ready properly on its ready pipe (nothing was written)", Assert.Single(run.StderrLines));
        Assert.True(ProcFs.WaitGone(share.ScriptPid(), 2000), "the daemon is still running");
    }

    [Fact]
    public void DaemonThatReportsAnotherPid_GivesExit1_AndIsStopped()
    {
        using var share = new TempShare();
        var script = share.Script("wrapper.sh", """
            echo "ready pid=1 control=-" >&$ready
            exec sleep 60
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--passthrough", script]);

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("reported pid 1 but fuse_launcher started pid", Assert.Single(run.StderrLines));
        Assert.True(ProcFs.WaitGone(share.ScriptPid(), 2000), "the daemon is still running");
    }

    [Fact]
    public void SigtermToTheLauncherWhileWaiting_StopsTheDaemon()
    {
        using var share = new TempShare();
        var script = share.Script("slow.sh", "exec sleep 60");
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--timeout", "30", "--passthrough", script], launcher =>
        {
            var deadline = Environment.TickCount64 + 10_000;
            while (!File.Exists(share.PidFile) && Environment.TickCount64 < deadline) Thread.Sleep(20);
            Thread.Sleep(100);
            Libc.kill(launcher.Id, Libc.SIGTERM);
        });

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("interrupted by SIGTERM before the daemon was ready", Assert.Single(run.StderrLines));
        Assert.True(run.Elapsed < TimeSpan.FromSeconds(20));
        Assert.True(ProcFs.WaitGone(share.ScriptPid(), 2000), "the daemon is still running");
    }

    [Fact]
    public void LogFile_KeepsTheDaemonsOutputAfterTheLauncherHasExited()
    {
        using var share = new TempShare();
        var log = Path.Combine(share.Root, "daemon.log");
        File.WriteAllText(log, "earlier run\n");
        var script = share.Script("logs.sh", """
            echo "starting up" >&2
            echo "ready pid=$$ control=$control" >&$ready
            exec {ready}>&-
            sleep 0.3
            echo "serving for a while" >&2
            exec sleep 60
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--log-file", log, "--passthrough", script]);
        try
        {
            Assert.True(run.ExitCode == 0, run.Stderr);
            Assert.Empty(run.Stderr);
            var deadline = Environment.TickCount64 + 5000;
            while (!File.ReadAllText(log).Contains("serving for a while") && Environment.TickCount64 < deadline) Thread.Sleep(20);
            Assert.Equal(["earlier run", "starting up", "serving for a while"], File.ReadAllLines(log));
        }
        finally
        {
            Libc.kill(share.ScriptPid(), Libc.SIGKILL);
        }
    }

    [Fact]
    public void LogFile_StillGivesTheDaemonsReasonOnFailure()
    {
        using var share = new TempShare();
        var log = Path.Combine(share.Root, "daemon.log");
        File.WriteAllText(log, "passthrough: an old failure that is not this one.\n");
        var script = share.Script("dies.sh", """
            echo "passthrough: Cannot open /dev/fuse (No such device); load the fuse module or give the daemon access to the device." >&2
            exit 1
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--log-file", log, "--passthrough", script]);

        Assert.Equal(1, run.ExitCode);
        Assert.Equal(
            "fuse_launcher: the daemon exited with exit code 1 before it was ready: Cannot open /dev/fuse (No such device); load the fuse module or give the daemon access to the device.",
            Assert.Single(run.StderrLines));
    }

    [Fact]
    public void LogFileThatIsAPipe_FailureStillGivesTheExitReason_NotAnException()
    {
        // vdev passes --log-file /proc/self/fd/2; when its stderr is a pipe (a supervisor, `| tee`), the
        // daemon's output goes straight into that pipe and there is nothing to read back.
        using var share = new TempShare();
        var script = share.Script("dies.sh", """
            echo "passthrough: Cannot open /dev/fuse (No such device); load the fuse module or give the daemon access to the device." >&2
            exit 1
            """);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--log-file", "/proc/self/fd/2", "--passthrough", script]);

        Assert.Equal(1, run.ExitCode);
        Assert.DoesNotContain("Exception", run.Stderr);
        Assert.Equal(
            ["passthrough: Cannot open /dev/fuse (No such device); load the fuse module or give the daemon access to the device.",
             "fuse_launcher: the daemon exited with exit code 1 before it was ready."],
            run.StderrLines);
    }

    [Fact]
    public async Task LogFileGivenAsProcSelfFd_SilentFailure_QuotesNothingFromBeforeTheDaemonStarted()
    {
        // /proc/self/fd/N is a symlink of size 64; where the daemon's output begins is the size of the file it
        // names. Old content longer than that must not be taken for the daemon's reason.
        using var share = new TempShare();
        var log = Path.Combine(share.Root, "vdev.log");
        File.WriteAllText(log, "an earlier line of the vdev's own log that is well over sixty-four bytes long, about something else\n");
        var script = share.Script("silent.sh", "exit 1\n");
        var info = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-c", "exec 7>>\"$0\"; exec \"$@\"", log,

            LauncherRun.LauncherPath, "--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--log-file", "/proc/self/fd/7", "--passthrough", script })
            info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "the launcher did not finish within 60 s");
        p.WaitForExit();
        Assert.Equal(1, p.ExitCode);
        Assert.Equal("fuse_launcher: the daemon exited with exit code 1 before it was ready.", (await stderr).Trim());
    }

    [Fact]
    public async Task LogFileThatIsASocket_TheDaemonWritesToThatSocket()
    {
        // A vdev run by systemd has the journal's stream socket as stderr; /proc/self/fd/2 of a socket cannot
        // be opened (ENXIO), so the launcher must hand the daemon the inherited descriptor itself.
        using var share = new TempShare();
        var script = share.Script("serves.sh", """
            echo "ready pid=$$ control=$control" >&$ready
            exec {ready}>&-
            echo "serving, logging to the socket" >&2
            exec sleep 60
            """);
        const string Wrapper = """
            import socket, subprocess, sys
            a, b = socket.socketpair()
            p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=b.fileno())
            b.close()
            out = p.stdout.read().decode().strip()
            rc = p.wait()
            a.settimeout(10)
            data = b""
            while b"serving" not in data:
                try:
                    d = a.recv(4096)
                except socket.timeout:
                    break
                if not d:
                    break
                data += d
            print("rc=%d" % rc)
            print("stdout=" + out)
            print("socket=" + data.decode().replace("\n", "|"))
            """;
        var info = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-c", Wrapper,
            LauncherRun.LauncherPath, "--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--log-file", "/proc/self/fd/2", "--passthrough", script })
            info.ArgumentList.Add(a);
        try
        {
            using var wrapper = Process.Start(info)!;
            var stdout = wrapper.StandardOutput.ReadToEndAsync();
            var stderr = wrapper.StandardError.ReadToEndAsync();
            Assert.True(wrapper.WaitForExit(TimeSpan.FromSeconds(60)), "the launcher did not finish within 60 s");
            var output = await stdout;
            var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(lines.Length == 3, output + await stderr);
            Assert.True(lines[0] == "rc=0", string.Join("\n", lines));
            Assert.StartsWith("stdout={\"pid\":", lines[1]);
            Assert.Equal("socket=serving, logging to the socket|", lines[2]);
        }
        finally
        {
            if (File.Exists(share.PidFile)) Libc.kill(share.ScriptPid(), Libc.SIGKILL);
        }
    }

    [Fact]
    public void StdoutClosedByTheCaller_StopsTheDaemon_InsteadOfLeavingItUnknown()
    {
        using var share = new TempShare();
        var script = share.Script("late.sh", """
            sleep 0.5
            echo "ready pid=$$ control=$control" >&$ready
            exec sleep 60
            """);
        var info = new ProcessStartInfo(LauncherRun.LauncherPath) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--passthrough", script })
            info.ArgumentList.Add(a);
        using var launcher = Process.Start(info)!;
        launcher.StandardOutput.Close();
        var stderr = launcher.StandardError.ReadToEnd();
        launcher.WaitForExit();

        Assert.Equal(1, launcher.ExitCode);
        Assert.Contains("the result line could not be written to stdout", stderr);
        Assert.True(ProcFs.WaitGone(share.ScriptPid(), 2000), "the daemon is still running");
    }

    [Fact]
    public void ExecFailure_GivesExit1()
    {
        using var share = new TempShare();
        var notAProgram = Path.Combine(share.Root, "garbage");
        File.WriteAllBytes(notAProgram, [0x7f, (byte)'E', (byte)'L', (byte)'F', 0, 0, 0]);
        File.SetUnixFileMode(notAProgram, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var run = LauncherRun.Start(["--shared-dir", share.Share, "--sandbox", "none", "--mount", "/mnt", "--passthrough", notAProgram]);

        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith($"fuse_launcher: Could not start {notAProgram}: ", Assert.Single(run.StderrLines));
    }
}
