using System.Globalization;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Launcher;

/// <summary>
/// Watches a starting daemon until the first of: its ready line, its exit (pidfd), its ready pipe closing
/// without the line, a signal to the launcher (wake pipe), or the timeout; meanwhile collects its output.
/// </summary>
internal sealed class StartupWatch(DaemonProcess daemon, DaemonOutput output, SafeFd wake)
{
    /// <summary>How the wait ended.</summary>
    public enum Outcome { Ready, Exited, ClosedWithoutReady, TimedOut, Interrupted }

    /// <summary>A ready line longer than this is not a ready line.</summary>
    private const int MaxReadyLine = 4096;

    private readonly List<byte> _ready = new();
    private bool _outputOpen = daemon.Output is not null;

    /// <summary>The pid the daemon reported in its ready line.</summary>
    public int ReadyPid { get; private set; }

    /// <summary>The control socket the daemon reported, or null for "-".</summary>
    public string? ReadyControl { get; private set; }

    /// <summary>What was wrong with the ready pipe when the outcome is <see cref="Outcome.ClosedWithoutReady"/>.</summary>
    public string ReadyProblem { get; private set; } = "";

    /// <summary>Waits for the outcome, at most <paramref name="timeout"/>.</summary>
    public Outcome Wait(TimeSpan timeout)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        Span<PollFd> fds = stackalloc PollFd[4];
        bool readyOpen = true;
        Span<byte> buffer = stackalloc byte[4096];
        while (true)
        {
            long left = deadline - Environment.TickCount64;
            if (left <= 0) return Outcome.TimedOut;
            fds[0] = new PollFd { Fd = readyOpen ? daemon.Ready.Value : -1, Events = Libc.POLLIN };
            fds[1] = new PollFd { Fd = _outputOpen ? daemon.Output!.Value : -1, Events = Libc.POLLIN };
            fds[2] = new PollFd { Fd = daemon.PidFd.Value, Events = Libc.POLLIN };
            fds[3] = new PollFd { Fd = wake.Value, Events = Libc.POLLIN };
            int n = Libc.poll(fds, (nuint)fds.Length, (int)Math.Min(left, int.MaxValue));
            if (n < 0)
            {
                if (Libc.LastErrno == Libc.EINTR) continue;
                throw new IOException($"poll failed: {Libc.Describe(Libc.LastErrno)}.");
            }
            if (n == 0) return Outcome.TimedOut;

            if (fds[1].Revents != 0) DrainOutput();
            if (fds[3].Revents != 0) return Outcome.Interrupted;

            Outcome? readyOutcome = null;
            if (fds[0].Revents != 0)
            {
                bool eof = ReadReady(buffer);
                readyOutcome = ParseReady(eof);
                if (eof) readyOpen = false;
            }
            // An exit wins over a ready line in the same round: a daemon that has exited does not serve.
            if (fds[2].Revents != 0)
            {
                DrainOutput();
                return Outcome.Exited;
            }
            if (readyOutcome is { } outcome) return outcome;
        }
    }

    /// <summary>Reads what the ready pipe holds; returns true at end of file.</summary>
    private bool ReadReady(Span<byte> buffer)
    {
        while (true)
        {
            int r = (int)Libc.read(daemon.Ready, buffer, (nuint)buffer.Length);
            if (r > 0)
            {
                if (_ready.Count < MaxReadyLine) _ready.AddRange(buffer[..Math.Min(r, MaxReadyLine - _ready.Count)]);
                continue;
            }
            if (r == 0) return true;
            int errno = Libc.LastErrno;
            if (errno == Libc.EINTR) continue;
            if (errno == Libc.EAGAIN) return false;
            throw new IOException($"reading the ready pipe failed: {Libc.Describe(errno)}.");
        }
    }

    /// <summary>Ready once a whole line is there and is well-formed; null while more may come.</summary>
    private Outcome? ParseReady(bool eof)
    {
        int newline = _ready.IndexOf((byte)'\n');
        if (newline < 0)
        {
            if (!eof) return _ready.Count >= MaxReadyLine ? Fail("a line longer than 4096 bytes") : null;
            return Fail(_ready.Count == 0 ? "nothing was written" : "the line has no newline");
        }
        var line = Encoding.UTF8.GetString(_ready.GetRange(0, newline).ToArray());
        // Contract (passthrough/ReadyNotifier.cs): "ready pid=PID control=PATH", PATH "-" when there is none.
        const string Prefix = "ready pid=";
        const string Control = " control=";
        int controlAt = line.IndexOf(Control, StringComparison.Ordinal);
        if (!line.StartsWith(Prefix, StringComparison.Ordinal) || controlAt < 0
            || !int.TryParse(line.AsSpan(Prefix.Length, controlAt - Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
            || controlAt + Control.Length >= line.Length)
        {
            return Fail($"the line '{(line.Length > 200 ? line[..200] : line)}' is not 'ready pid=PID control=PATH'");
        }
        ReadyPid = pid;
        var control = line[(controlAt + Control.Length)..];
        ReadyControl = control == "-" ? null : control;
        return Outcome.Ready;

        Outcome Fail(string problem)
        {
            ReadyProblem = problem;
            return Outcome.ClosedWithoutReady;
        }
    }

    /// <summary>Moves whatever the output pipe holds now into <see cref="DaemonOutput"/>, without blocking.</summary>
    public void DrainOutput()
    {
        if (!_outputOpen) return;
        Span<byte> buffer = stackalloc byte[4096];
        while (true)
        {
            int r = (int)Libc.read(daemon.Output!, buffer, (nuint)buffer.Length);
            if (r > 0) { output.Append(buffer[..r]); continue; }
            if (r == 0) { _outputOpen = false; output.Complete(); return; }
            int errno = Libc.LastErrno;
            if (errno == Libc.EINTR) continue;
            return;
        }
    }
}
