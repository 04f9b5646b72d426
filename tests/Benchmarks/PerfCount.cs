using System.Diagnostics;
using System.Globalization;

namespace Hypervisor.Benchmarks;

/// <summary>
/// Counts, with <c>perf stat</c>, one process's on-CPU time (the <c>task-clock</c> software event, in nanoseconds of
/// every thread, not sampled by the scheduler tick as /proc's utime and stime are) and the system calls it enters
/// (<c>raw_syscalls:sys_enter</c>) over a window the caller opens and closes. perf is started with its counters off
/// (<c>-D -1</c>) and driven through a control FIFO; <see cref="Enable"/> and <see cref="Disable"/> return only once
/// perf acknowledged, so the window holds exactly what the process did between the two calls. Neither event needs a
/// hardware counter; both only count what the process itself does, so they are the same on a quiet machine and on a
/// loaded one for the same work (the task clock still grows with spinning that waits for a descheduled peer).
/// </summary>
internal sealed class PerfCount : IDisposable
{
    private readonly Process _perf;
    private readonly string _dir;
    private readonly FileStream _ctl, _ack;
    private readonly List<string> _lines = [];
    private bool _stopped;

    /// <summary>The counted process.</summary>
    public int Pid { get; }

    private PerfCount(int pid, Process perf, string dir, FileStream ctl, FileStream ack)
    {
        Pid = pid;
        _perf = perf;
        _dir = dir;
        _ctl = ctl;
        _ack = ack;
        perf.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_lines) _lines.Add(e.Data); };
        perf.BeginErrorReadLine();
    }

    /// <summary>Attaches perf to <paramref name="pid"/> (all its threads, and threads it starts later) with the counters off.</summary>
    public static PerfCount Attach(int pid)
    {
        var dir = Directory.CreateTempSubdirectory("hv-bench-perf-").FullName;
        string ctl = Path.Combine(dir, "ctl"), ack = Path.Combine(dir, "ack");
        HostCommand.Run("mkfifo", ctl, ack);
        var psi = new ProcessStartInfo("perf") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "stat", "-x", ",", "-D", "-1", "--control", $"fifo:{ctl},{ack}", "-e", "task-clock,raw_syscalls:sys_enter", "-p", pid.ToString(CultureInfo.InvariantCulture) })
            psi.ArgumentList.Add(a);
        var perf = Process.Start(psi) ?? throw new InvalidOperationException("perf could not be started");
        perf.OutputDataReceived += (_, _) => { };
        perf.BeginOutputReadLine();
        // perf opens both FIFOs read-write, so these opens return at once whether or not it has yet.
        var c = new FileStream(ctl, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1);
        var k = new FileStream(ack, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1);
        return new PerfCount(pid, perf, dir, c, k);
    }

    /// <summary>Turns the counters on; returns once perf has.</summary>
    public void Enable() => Command("enable");

    /// <summary>Turns the counters off; returns once perf has.</summary>
    public void Disable() => Command("disable");

    private void Command(string command)
    {
        var bytes = System.Text.Encoding.ASCII.GetBytes(command + "\n");
        _ctl.Write(bytes);
        _ctl.Flush();
        // perf answers "ack\n" once the command took effect; a perf that died never answers.
        var buffer = new byte[4];
        int got = 0;
        var read = Task.Run(() => { while (got < 4) { int n = _ack.Read(buffer, got, 4 - got); if (n <= 0) break; got += n; } });
        if (!read.Wait(TimeSpan.FromSeconds(20)) || got < 4)
        {
            lock (_lines) throw new InvalidOperationException($"perf stat -p {Pid} did not acknowledge {command}: {string.Join(" / ", _lines)}");
        }
    }

    /// <summary>Stops perf and returns the window's task clock (ns) and system calls; NaN for a figure perf did not report.</summary>
    public (double TaskClockNs, double Syscalls) Stop()
    {
        if (!_stopped)
        {
            _stopped = true;
            HostCommand.RunQuiet("kill", "-INT", _perf.Id.ToString(CultureInfo.InvariantCulture));
            if (!_perf.WaitForExit(10_000)) { _perf.Kill(); }
            _perf.WaitForExit();
        }
        double clock = double.NaN, calls = double.NaN;
        lock (_lines)
        {
            foreach (var line in _lines)
            {
                // CSV: value, unit, event, ... ("<not counted>" when the window saw nothing of the process).
                var f = line.Split(',');
                if (f.Length < 3 || !double.TryParse(f[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) continue;
                if (f[2].StartsWith("task-clock", StringComparison.Ordinal)) clock = f[1] == "msec" ? v * 1e6 : v;
                else if (f[2].StartsWith("raw_syscalls:sys_enter", StringComparison.Ordinal)) calls = v;
            }
        }
        return (clock, calls);
    }

    public void Dispose()
    {
        try { Stop(); } catch (InvalidOperationException) { }
        _ctl.Dispose();
        _ack.Dispose();
        _perf.Dispose();
        HostCommand.RunQuiet("rm", "-rf", _dir);
    }
}
