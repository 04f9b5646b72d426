using System.Globalization;
using System.Text;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// What one guest boot reported: the "@@HV" lines of the console (see tests/guest/hv.sh), the whole
/// console, each started process's output, and how the boot ended.
/// </summary>
public sealed class GuestResult
{
    private GuestResult() { }

    /// <summary>Every console line (kernel noise included).</summary>
    public required IReadOnlyList<string> Console { get; init; }

    /// <summary>Names of checks reported as "@@HV ok NAME", in order.</summary>
    public required IReadOnlyList<string> Passed { get; init; }

    /// <summary>Checks reported as "@@HV fail NAME DETAIL", in order.</summary>
    public required IReadOnlyList<(string Name, string Detail)> Failed { get; init; }

    /// <summary>Every "@@HV val KEY VALUE" in order (a key may repeat, e.g. one per benchmark run).</summary>
    public required IReadOnlyList<(string Key, string Value)> ValueList { get; init; }

    /// <summary>The scenario's exit code from "@@HV end RC"; null when the guest never got there.</summary>
    public int? ExitCode { get; init; }

    /// <summary>True when QEMU was killed at <see cref="GuestOptions.Timeout"/>.</summary>
    public bool TimedOut { get; init; }

    /// <summary>QEMU's exit code (null if it had to be killed).</summary>
    public int? QemuExitCode { get; init; }

    /// <summary>Host wall-clock time from starting the first backend to QEMU's exit.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>Pids of every process the harness started (backends, then QEMU); all have exited when Run returns.</summary>
    public IReadOnlyList<int> ProcessIds { get; init; } = [];

    /// <summary>Output of each process started (key "virtiofsd[tag]", "vdev[tag]", "qemu").</summary>
    public required IReadOnlyDictionary<string, string> ProcessLogs { get; init; }

    /// <summary>The last value reported for <paramref name="key"/>, or null.</summary>
    public string? Value(string key)
    {
        for (int i = ValueList.Count - 1; i >= 0; i--)
            if (ValueList[i].Key == key) return ValueList[i].Value;
        return null;
    }

    /// <summary>All values reported for <paramref name="key"/>, in order.</summary>
    public IReadOnlyList<string> Values(string key)
    {
        var list = new List<string>();
        foreach (var (k, v) in ValueList) if (k == key) list.Add(v);
        return list;
    }

    /// <summary>A value parsed as a double (invariant culture); throws naming the key when missing.</summary>
    public double Number(string key) =>
        double.Parse(Value(key) ?? throw new InvalidOperationException($"The guest reported no value '{key}'.\n{Describe()}"),
            CultureInfo.InvariantCulture);

    /// <summary>Seconds from kernel start to the end of module loading ("boot_s"), or NaN.</summary>
    public double BootSeconds => Value("boot_s") is { } s ? double.Parse(s, CultureInfo.InvariantCulture) : double.NaN;

    /// <summary>True when the scenario ended with code 0 and reported no failure.</summary>
    public bool Succeeded => ExitCode == 0 && Failed.Count == 0 && !TimedOut;

    /// <summary>Throws with a full description unless <see cref="Succeeded"/>.</summary>
    public void EnsureSucceeded()
    {
        if (!Succeeded) throw new InvalidOperationException("The guest scenario failed.\n" + Describe());
    }

    /// <summary>A readable summary: outcome, failures, console tail and process logs.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append($"exit={ExitCode?.ToString() ?? "none"} timedOut={TimedOut} qemu={QemuExitCode?.ToString() ?? "killed"} elapsed={Elapsed.TotalSeconds:0.0}s passed={Passed.Count}\n");
        foreach (var (n, d) in Failed) sb.Append($"FAIL {n}: {d}\n");
        sb.Append("--- console (last 60 lines) ---\n");
        for (int i = Math.Max(0, Console.Count - 60); i < Console.Count; i++) sb.Append(Console[i]).Append('\n');
        foreach (var (name, log) in ProcessLogs)
        {
            var text = log.Length > 4000 ? log[^4000..] : log;
            sb.Append($"--- {name} ---\n{text}\n");
        }
        return sb.ToString();
    }

    /// <summary>Parses console lines; "@@HV" may follow kernel output on the same line.</summary>
    public static GuestResult Parse(IReadOnlyList<string> console, IReadOnlyDictionary<string, string> logs,
        TimeSpan elapsed, bool timedOut, int? qemuExit, IReadOnlyList<int>? pids = null)
    {
        var passed = new List<string>();
        var failed = new List<(string, string)>();
        var values = new List<(string, string)>();
        int? end = null;
        foreach (var raw in console)
        {
            var at = raw.IndexOf("@@HV ", StringComparison.Ordinal);
            if (at < 0) continue;
            var rest = raw[(at + 5)..];
            var kind = Next(ref rest);
            switch (kind)
            {
                case "ok": passed.Add(Next(ref rest)); break;
                case "fail": failed.Add((Next(ref rest), rest)); break;
                case "val": values.Add((Next(ref rest), rest)); break;
                case "end": end = int.TryParse(Next(ref rest), out var rc) ? rc : -1; break;
            }
        }
        return new GuestResult
        {
            Console = console, Passed = passed, Failed = failed, ValueList = values, ExitCode = end,
            TimedOut = timedOut, QemuExitCode = qemuExit, Elapsed = elapsed, ProcessLogs = logs, ProcessIds = pids ?? [],
        };

        static string Next(ref string s)
        {
            var sp = s.IndexOf(' ');
            string word;
            if (sp < 0) { word = s; s = ""; }
            else { word = s[..sp]; s = s[(sp + 1)..]; }
            return word;
        }
    }
}
