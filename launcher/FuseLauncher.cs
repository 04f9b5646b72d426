using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Launcher;

/// <summary>
/// fuse_launcher: checks one share's settings, starts its passthrough daemon, waits until the daemon reports
/// ready, prints <c>{"pid":…,"control":…,"tag":…}</c> and exits; on any failure prints one line on stderr,
/// leaves no process behind and exits with one of <see cref="ExitCodes"/>.
/// </summary>
/// <remarks>
/// The daemon's stdout and stderr go to a pipe the launcher reads while the daemon starts, rather than to the
/// launcher's own stderr: (1) the launcher's failure line can then carry the daemon's own reason, and (2) the
/// daemon never holds the launcher's stdout/stderr, which the caller typically reads to end of file — a
/// daemon holding them would keep the caller waiting for as long as the share serves. What the daemon
/// printed while starting is copied to the launcher's stderr; what it prints after the launcher has exited
/// is discarded (the .NET runtime ignores EPIPE on console writes). To keep the daemon's log for its whole
/// life, pass <c>--log-file FILE</c>: stdout and stderr are then appended to FILE, and a failure's reason is
/// read back from what the daemon appended.
/// </remarks>
public static class FuseLauncher
{
    /// <summary>How long a daemon gets to exit after SIGTERM before SIGKILL.</summary>
    public const int StopGraceMs = 3000;

    /// <summary>
    /// Runs the launcher with <paramref name="args"/>; returns the process exit code. The result line is written
    /// straight to descriptor 1, because Console.Out swallows EPIPE: if the caller cannot receive the daemon's pid,
    /// the daemon is stopped rather than left running unknown.
    /// </summary>
    public static int Run(string[] args) => Run(args, WriteToStdoutFd, Console.Error);

    /// <summary>Runs the launcher, writing the result line to <paramref name="stdout"/> and diagnostics to <paramref name="stderr"/>.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, line =>
    {
        stdout.WriteLine(line);
        stdout.Flush();
        return null;
    }, stderr);

    private static string? WriteToStdoutFd(string line)
    {
        int errno = Descriptors.WriteAll(1, Encoding.UTF8.GetBytes(line + "\n"));
        return errno == 0 ? null : Libc.Describe(errno);
    }

    /// <summary><paramref name="emitResult"/> delivers the result line and returns null, or why it could not.</summary>
    private static int Run(string[] args, Func<string, string?> emitResult, TextWriter stderr)
    {
        Descriptors.EnsureStandardStreams();
        switch (LaunchCommand.Parse(args, out var settings, out var error))
        {
            case LaunchCommand.ParseOutcome.Help:
                return ExitCodes.Ready;
            case LaunchCommand.ParseOutcome.Invalid:
                stderr.WriteLine($"fuse_launcher: {error}");
                return ExitCodes.BadSettings;
        }
        return Launch(settings!, emitResult, stderr);
    }

    private static int Launch(LaunchSettings settings, Func<string, string?> emitResult, TextWriter stderr)
    {
        // A SIGTERM/SIGINT/SIGHUP while waiting means whoever started us gives up: stop the daemon and fail.
        var (wakeRead, wakeWrite) = Descriptors.CreatePipe(nonBlockingRead: true);
        using var wr = wakeRead;
        using var ww = wakeWrite;
        string? interruptedBy = null;
        PosixSignalRegistration Register(PosixSignal signal, string name) => PosixSignalRegistration.Create(signal, c =>
        {
            c.Cancel = true;
            interruptedBy ??= name;
            Libc.write(wakeWrite, "!"u8, 1);
        });
        using var term = Register(PosixSignal.SIGTERM, "SIGTERM");
        using var interrupt = Register(PosixSignal.SIGINT, "SIGINT");
        using var hangup = Register(PosixSignal.SIGHUP, "SIGHUP");

        DaemonProcess daemon;
        try
        {
            daemon = DaemonProcess.Start(settings, stderr);
        }
        catch (Exception e) when (e is SpawnException or IOException)
        {
            stderr.WriteLine($"fuse_launcher: {e.Message}");
            return ExitCodes.DaemonFailed;
        }

        using (daemon)
        {
            try
            {
                int exit = Supervise(settings, daemon, wakeRead, () => interruptedBy, emitResult, stderr);
                // A daemon that never served leaves no control socket that fuse_launcher made for it.
                if (exit != ExitCodes.Ready && daemon.ControlSocketPath is { } control) ControlSocket.UnlinkIfOurs(control.Path, control.Inode);
                return exit;
            }
            catch (Exception e)
            {
                // Whatever went wrong in here, the daemon must not be left running unknown.
                daemon.Stop(StopGraceMs);
                stderr.WriteLine($"fuse_launcher: {e.GetType().Name}: {e.Message} (the daemon was stopped).");
                return ExitCodes.DaemonFailed;
            }
        }
    }

    private static int Supervise(LaunchSettings settings, DaemonProcess daemon, SafeFd wakeRead, Func<string?> interruptedBy,
        Func<string, string?> emitResult, TextWriter stderr)
    {
        var output = new DaemonOutput();
        var watch = new StartupWatch(daemon, output, wakeRead);
        var outcome = watch.Wait(settings.Timeout);
        if (outcome == StartupWatch.Outcome.Ready)
        {
            // In its own pid namespace the daemon is pid 1 to itself.
            var expectedPid = daemon.InOwnPidNamespace ? 1 : daemon.Pid;
            if (watch.ReadyPid != expectedPid)
            {
                daemon.Stop(StopGraceMs);
                stderr.WriteLine($"fuse_launcher: the daemon reported pid {watch.ReadyPid} but fuse_launcher started pid {daemon.Pid} (pid {expectedPid} to itself); --passthrough must be the daemon itself (or exec it), not start it as a child.");
                return ExitCodes.DaemonFailed;
            }
            if (daemon.DaemonPid() is not int daemonPid)
            {
                daemon.Stop(StopGraceMs);
                stderr.WriteLine($"fuse_launcher: the daemon reported ready, but {DaemonProcess.Unshare} (pid {daemon.Pid}) has no single child that could be it; the daemon was stopped.");
                return ExitCodes.DaemonFailed;
            }
            watch.DrainOutput();
            foreach (var line in output.Lines) stderr.WriteLine(line);
            if (emitResult(ResultLine(daemonPid, watch.ReadyControl, settings.Tag)) is { } writeError)
            {
                daemon.Stop(StopGraceMs);
                stderr.WriteLine($"fuse_launcher: the result line could not be written to stdout ({writeError}), so the daemon was stopped; keep fuse_launcher's stdout open until it exits.");
                return ExitCodes.DaemonFailed;
            }
            return ExitCodes.Ready;
        }

        // A daemon that closed its ready pipe without the line is usually on its way out: give it a moment so
        // that its exit status and last words make the reason.
        if (outcome == StartupWatch.Outcome.ClosedWithoutReady && daemon.WaitForExit(1000))
            outcome = StartupWatch.Outcome.Exited;

        // Every other outcome: the daemon must not outlive us.
        bool exitedByItself = outcome == StartupWatch.Outcome.Exited;
        daemon.Stop(exitedByItself ? 0 : StopGraceMs);
        watch.DrainOutput();
        if (settings.LogFile is not null) output.AppendFile(settings.LogFile, daemon.LogStart);
        var reason = Sentence(output.Reason());
        var because = reason is null ? "" : $": {reason}";
        switch (outcome)
        {
            case StartupWatch.Outcome.TimedOut:
                stderr.WriteLine($"fuse_launcher: the daemon did not report ready within {settings.Timeout.TotalSeconds:0.###} s and was stopped{because}{(reason is null ? "; raise --timeout or check the daemon's log." : "")}");
                return ExitCodes.Timeout;
            case StartupWatch.Outcome.Interrupted:
                stderr.WriteLine($"fuse_launcher: interrupted by {interruptedBy()} before the daemon was ready; the daemon was stopped.");
                return ExitCodes.DaemonFailed;
            case StartupWatch.Outcome.Exited:
                stderr.WriteLine($"fuse_launcher: the daemon exited with {Libc.DescribeWaitStatus(daemon.WaitStatus)} before it was ready{because}{(reason is null ? "." : "")}");
                return ExitCodes.DaemonFailed;
            default:
                stderr.WriteLine($"fuse_launcher: the daemon did not report ready properly on its ready pipe ({watch.ReadyProblem}) and was stopped{because}{(reason is null ? "." : "")}");
                return ExitCodes.DaemonFailed;
        }
    }

    /// <summary>Ends the daemon's reason with a full stop if it has no final punctuation, so the launcher's line is one sentence.</summary>
    private static string? Sentence(string? reason) =>
        reason is null || reason.EndsWith('.') || reason.EndsWith('!') || reason.EndsWith('?') ? reason : reason + ".";

    /// <summary>The machine-readable success line: <c>{"pid":1234,"control":"/path","tag":"t"}</c> (control is null without a control socket).</summary>
    /// <remarks>
    /// Written by hand rather than with System.Text.Json: the line has three fixed members, and the JSON writer and its
    /// encoder (whose tables are built on first use) would be loaded and initialised on every share's start for it. The
    /// escaping is relaxed, as the line is read by programs and not embedded in HTML: '"' is \", '\' is \\, control
    /// characters and U+2028/U+2029 are \u escapes, and all other text, non-ASCII included, is written as it is (UTF-8
    /// once encoded).
    /// </remarks>
    public static string ResultLine(int pid, string? control, string tag)
    {
        var line = new StringBuilder(48 + (control?.Length ?? 4) + tag.Length);
        line.Append("{\"pid\":").Append(pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).Append(",\"control\":");
        if (control is null) line.Append("null");
        else AppendJsonString(line, control);
        line.Append(",\"tag\":");
        AppendJsonString(line, tag);
        return line.Append('}').ToString();
    }

    /// <summary>Appends <paramref name="value"/> as a JSON string (RFC 8259 section 7), quotes included.</summary>
    private static void AppendJsonString(StringBuilder line, string value)
    {
        line.Append('"');
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            switch (c)
            {
                case '"': line.Append("\\\""); break;
                case '\\': line.Append("\\\\"); break;
                case '\n': line.Append("\\n"); break;
                case '\r': line.Append("\\r"); break;
                case '\t': line.Append("\\t"); break;
                case '\b': line.Append("\\b"); break;
                case '\f': line.Append("\\f"); break;
                default:
                    // A lone surrogate cannot be encoded as UTF-8; as the JSON writer did, such text is refused (the caller
                    // stops the daemon and says why) rather than written as a line its reader would reject.
                    if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
                        line.Append(c).Append(value[++i]);
                    else if (char.IsSurrogate(c))
                        throw new ArgumentException($"the text '{value}' is not valid UTF-16 (a lone surrogate at index {i}), so it cannot be written as JSON", nameof(value));
                    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == '\u2028' || c == '\u2029')
                        line.Append("\\u").Append(((int)c).ToString("X4", System.Globalization.CultureInfo.InvariantCulture));
                    else
                        line.Append(c);
                    break;
            }
        }
        line.Append('"');
    }
}
