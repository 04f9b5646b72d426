using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Grpc.Core;
using Grpc.Health.V1;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Vdev.Control;

/// <summary>
/// <c>vdev ctl</c>: the operator command that controls one share through its control socket.
/// </summary>
/// <remarks>
/// Exit codes: 0 success; 1 the service answered with an error (or health is not SERVING);
/// 2 bad command line; 3 the service cannot be reached (missing socket, nobody listening,
/// permission denied, connection refused) or did not answer within the timeout.
/// </remarks>
public static class CtlCommand
{
    /// <summary>Success.</summary>
    public const int ExitOk = 0;
    /// <summary>The service answered with a gRPC error, or health is not SERVING.</summary>
    public const int ExitFailed = 1;
    /// <summary>The command line is wrong.</summary>
    public const int ExitUsage = 2;
    /// <summary>The service cannot be reached or did not answer in time.</summary>
    public const int ExitUnavailable = 3;

    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(5);

    /// <summary>The usage text printed by <c>vdev ctl --help</c>.</summary>
    public const string Usage = """
        Usage: vdev ctl --socket PATH [--json] [--timeout SECONDS] COMMAND

        Controls one virtio-fs share through its daemon's control socket.

        Commands:
          status                          settings, counters and allowlist of the share
          direct-io on|off                direct I/O for every open from now on
          cache never|metadata|auto|always
                                          cache policy for replies from now on
          allow list                      show the allowlist
          allow add PATH                  allow PATH (relative to the share root)
          allow remove PATH               remove PATH from the allowlist
          allow enable|disable            enforce the allowlist or not
          health                          SERVING or NOT_SERVING (exit 1 unless SERVING)
          shutdown                        ask the daemon to stop gracefully

        Options:
          --socket PATH      the share's control socket (required)
          --json             print JSON instead of text
          --timeout SECONDS  deadline of the call (default 5)
          -h, --help         show this text

        Errors are one sentence on stderr; with --json, stdout also gets
        {"error": {"code": "NOT_FOUND", "code_number": 5, "message": "..."}}.

        Exit status: 0 ok, 1 the service reported an error, 2 bad arguments,
        3 the service cannot be reached or did not answer in time.
        """;

    /// <summary>Runs <c>vdev ctl</c> with <paramref name="args"/> (the words after "ctl"), writing to the console.</summary>
    public static int Run(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs <c>vdev ctl</c>, writing results to <paramref name="stdout"/> and errors to <paramref name="stderr"/>.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        => RunAsync(args, stdout, stderr, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>Asynchronous form of <see cref="Run(string[], TextWriter, TextWriter)"/>.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (!TryParse(args, out Invocation? invocation, out string? error))
        {
            if (error is null)
            {
                stdout.WriteLine(Usage);
                return ExitOk;
            }
            stderr.WriteLine("vdev ctl: " + error);
            return ExitUsage;
        }

        using var client = new ShareControlClient(invocation.SocketPath, invocation.Timeout);
        try
        {
            return await ExecuteAsync(client, invocation, stdout, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            if (invocation.Json)
                Write(stdout, new ErrorEnvelopeJson(new ErrorJson(ShareControlClient.StatusName(e.StatusCode), (int)e.StatusCode, e.Status.Detail)), CtlJsonContext.Default.ErrorEnvelopeJson);
            stderr.WriteLine("vdev ctl: " + Sentence(e));
            return e.StatusCode is StatusCode.Unavailable or StatusCode.PermissionDenied or StatusCode.DeadlineExceeded
                ? ExitUnavailable
                : ExitFailed;
        }
    }

    private static string Sentence(RpcException e)
    {
        string detail = e.Status.Detail.Length == 0 ? "no detail given." : e.Status.Detail;
        if (!detail.EndsWith('.'))
            detail += ".";
        return e.StatusCode switch
        {
            StatusCode.Unavailable or StatusCode.PermissionDenied => detail,
            StatusCode.DeadlineExceeded => detail.StartsWith("The deadline", StringComparison.Ordinal)
                ? detail[..^1] + "; raise --timeout or check the daemon."
                : detail,
            _ => $"{ShareControlClient.StatusName(e.StatusCode)}: {detail}",
        };
    }

    private sealed record Invocation(string SocketPath, bool Json, TimeSpan Timeout, string Command, string[] Arguments);

    private static bool TryParse(string[] args, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Invocation? invocation, out string? error)
    {
        invocation = null;
        error = null;
        string? socket = null;
        bool json = false;
        TimeSpan timeout = DefaultTimeout;
        var words = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (words.Count > 0 && !arg.StartsWith("--", StringComparison.Ordinal))
            {
                words.Add(arg);
                continue;
            }
            string? inlineValue = null;
            int eq = arg.IndexOf('=');
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inlineValue = arg[(eq + 1)..];
                arg = arg[..eq];
            }
            switch (arg)
            {
                case "-h" or "--help":
                    return false;
                case "--json":
                    json = true;
                    break;
                case "--socket":
                    socket = inlineValue ?? (i + 1 < args.Length ? args[++i] : null);
                    if (string.IsNullOrEmpty(socket))
                    {
                        error = "--socket needs a path; give the share's control socket, e.g. --socket /run/hypervisor/share0.sock.";
                        return false;
                    }
                    break;
                case "--timeout":
                    string? value = inlineValue ?? (i + 1 < args.Length ? args[++i] : null);
                    if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)
                        || !(seconds > 0) || seconds > 86_400)
                    {
                        error = $"--timeout needs a number of seconds between 0 and 86400, not \"{value}\".";
                        return false;
                    }
                    timeout = TimeSpan.FromSeconds(seconds);
                    break;
                default:
                    if (arg.StartsWith('-'))
                    {
                        error = $"Unknown option \"{args[i]}\"; see vdev ctl --help.";
                        return false;
                    }
                    words.Add(arg);
                    break;
            }
        }

        if (words.Count == 0)
        {
            error = "No command given; use one of status, direct-io, cache, allow, health, shutdown (see vdev ctl --help).";
            return false;
        }
        if (socket is null)
        {
            error = "Missing --socket PATH; give the control socket of the share to control.";
            return false;
        }
        invocation = new Invocation(socket, json, timeout, words[0], words.Skip(1).ToArray());
        return ValidateCommand(invocation, out error);
    }

    private static bool ValidateCommand(Invocation inv, out string? error)
    {
        error = null;
        string[] a = inv.Arguments;
        switch (inv.Command)
        {
            case "status" or "health" or "shutdown":
                if (a.Length != 0)
                    error = $"\"{inv.Command}\" takes no arguments; remove \"{string.Join(' ', a)}\".";
                break;
            case "direct-io":
                if (a.Length != 1 || a[0] is not ("on" or "off"))
                    error = "direct-io needs on or off, e.g. vdev ctl --socket PATH direct-io on.";
                break;
            case "cache":
                if (a.Length != 1 || ParsePolicy(a[0]) is null)
                    error = "cache needs one of never, metadata, auto, always.";
                break;
            case "allow":
                if (a.Length == 0)
                    error = "allow needs a subcommand: list, add PATH, remove PATH, enable or disable.";
                else if (a[0] is "list" or "enable" or "disable")
                {
                    if (a.Length != 1)
                        error = $"allow {a[0]} takes no further arguments.";
                }
                else if (a[0] is "add" or "remove")
                {
                    if (a.Length != 2)
                        error = $"allow {a[0]} needs exactly one PATH relative to the share root.";
                    else if (!AllowlistPath.TryNormalize(a[1], out _, out string pathError))
                        error = pathError;
                }
                else
                    error = $"Unknown allow subcommand \"{a[0]}\"; use list, add PATH, remove PATH, enable or disable.";
                break;
            default:
                error = $"Unknown command \"{inv.Command}\"; use one of status, direct-io, cache, allow, health, shutdown.";
                break;
        }
        return error is null;
    }

    private static CachePolicy? ParsePolicy(string word) => ShareVocabulary.TryParseCache(word, out var policy) ? policy : null;

    private static string PolicyName(CachePolicy policy) => policy == CachePolicy.Unspecified ? "unspecified" : ShareVocabulary.Name(policy);

    private static async Task<int> ExecuteAsync(ShareControlClient client, Invocation inv, TextWriter stdout, CancellationToken ct)
    {
        string[] a = inv.Arguments;
        switch (inv.Command)
        {
            case "status":
                PrintStatus(stdout, inv.Json, await client.Control.GetStatusAsync(new GetStatusRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false));
                return ExitOk;
            case "direct-io":
                PrintOptions(stdout, inv.Json, await client.Control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = a[0] == "on" }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false));
                return ExitOk;
            case "cache":
                PrintOptions(stdout, inv.Json, await client.Control.SetCachePolicyAsync(new SetCachePolicyRequest { Policy = ParsePolicy(a[0])!.Value }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false));
                return ExitOk;
            case "allow":
                Allowlist list = a[0] switch
                {
                    "list" => await client.Control.ListAllowedPathsAsync(new ListAllowedPathsRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false),
                    "add" => await client.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = a[1] }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false),
                    "remove" => await client.Control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = a[1] }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false),
                    "enable" => await client.Control.SetAllowlistEnabledAsync(new SetAllowlistEnabledRequest { Enabled = true }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false),
                    _ => await client.Control.SetAllowlistEnabledAsync(new SetAllowlistEnabledRequest { Enabled = false }, cancellationToken: ct).ResponseAsync.ConfigureAwait(false),
                };
                PrintAllowlist(stdout, inv.Json, list);
                return ExitOk;
            case "health":
                HealthCheckResponse.Types.ServingStatus health = (await client.Health.CheckAsync(new HealthCheckRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false)).Status;
                string name = health switch
                {
                    HealthCheckResponse.Types.ServingStatus.Serving => "SERVING",
                    HealthCheckResponse.Types.ServingStatus.NotServing => "NOT_SERVING",
                    HealthCheckResponse.Types.ServingStatus.ServiceUnknown => "SERVICE_UNKNOWN",
                    _ => "UNKNOWN",
                };
                if (inv.Json)
                    Write(stdout, new HealthJson(name), CtlJsonContext.Default.HealthJson);
                else
                    stdout.WriteLine(name);
                return health == HealthCheckResponse.Types.ServingStatus.Serving ? ExitOk : ExitFailed;
            default: // "shutdown"
                await client.Control.ShutdownAsync(new ShutdownRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false);
                if (inv.Json)
                    Write(stdout, new ShutdownJson(true), CtlJsonContext.Default.ShutdownJson);
                else
                    stdout.WriteLine("Shutdown requested; the daemon finishes requests in flight and exits.");
                return ExitOk;
        }
    }

    private static void Write<T>(TextWriter stdout, T value, JsonTypeInfo<T> type)
        => stdout.WriteLine(JsonSerializer.Serialize(value, type));

    private static OptionsJson ToJson(ShareOptions? o)
        => o is null ? new OptionsJson(false, "unspecified", false, false, false)
            : new OptionsJson(o.DirectIo, PolicyName(o.CachePolicy), o.Readonly, o.Xattr, o.Writeback);

    private static AllowlistJson ToJson(Allowlist? l) => new(l?.Enabled ?? false, l is null ? [] : [.. l.Entries]);

    private static void PrintOptions(TextWriter stdout, bool json, ShareOptions options)
    {
        if (json)
        {
            Write(stdout, ToJson(options), CtlJsonContext.Default.OptionsJson);
            return;
        }
        stdout.WriteLine("Options now: " + DescribeOptions(options) + " (applies to opens from now on).");
    }

    private static string DescribeOptions(ShareOptions? o) => o is null ? "unknown" :
        $"direct-io {OnOff(o.DirectIo)}, cache {PolicyName(o.CachePolicy)}, {(o.Readonly ? "read-only" : "read-write")}, xattr {OnOff(o.Xattr)}, writeback {OnOff(o.Writeback)}";

    private static string OnOff(bool value) => value ? "on" : "off";

    private static void PrintAllowlist(TextWriter stdout, bool json, Allowlist list)
    {
        if (json)
        {
            Write(stdout, ToJson(list), CtlJsonContext.Default.AllowlistJson);
            return;
        }
        stdout.WriteLine(DescribeAllowlist(list));
        foreach (string entry in list.Entries)
            stdout.WriteLine("  " + entry);
    }

    private static string DescribeAllowlist(Allowlist? list)
    {
        int count = list?.Entries.Count ?? 0;
        string state = list?.Enabled == true ? "enabled" : "disabled (entries kept, not enforced)";
        return $"Allowlist {state}, {count} {(count == 1 ? "entry" : "entries")}" + (count > 0 ? ":" : ".");
    }

    private static void PrintStatus(TextWriter stdout, bool json, ShareStatus s)
    {
        TimeSpan uptime = s.Uptime?.ToTimeSpan() ?? TimeSpan.Zero;
        if (json)
        {
            var opcodes = new List<OpcodeJson>(s.Opcodes.Count);
            foreach (OpcodeCounters c in s.Opcodes)
                opcodes.Add(new OpcodeJson(c.Opcode, c.Name, c.Requests, c.Errors));
            Write(stdout, new StatusJson(s.SharedDir, s.Tag, ToJson(s.Options), uptime.TotalSeconds, s.OpenFileHandles, s.KnownNodes,
                s.BytesRead, s.BytesWritten, ToJson(s.Allowlist), opcodes, [.. s.QueueCpus]), CtlJsonContext.Default.StatusJson);
            return;
        }
        var inv = CultureInfo.InvariantCulture;
        stdout.WriteLine($"Share          {s.SharedDir} (tag \"{s.Tag}\")");
        stdout.WriteLine($"Uptime         {FormatUptime(uptime)}");
        stdout.WriteLine($"Options        {DescribeOptions(s.Options)}");
        stdout.WriteLine(string.Create(inv, $"Open handles   {s.OpenFileHandles}"));
        stdout.WriteLine(string.Create(inv, $"Known nodes    {s.KnownNodes}"));
        stdout.WriteLine($"Bytes read     {FormatBytes(s.BytesRead)}");
        stdout.WriteLine($"Bytes written  {FormatBytes(s.BytesWritten)}");
        if (s.QueueCpus.Count > 0)
            stdout.WriteLine("Queue CPUs     " + string.Join(", ", s.QueueCpus.Select((cpu, i) => string.Create(inv, $"q{i + 1} {(cpu < 0 ? "unpinned" : $"on {cpu}")}"))));
        stdout.WriteLine(DescribeAllowlist(s.Allowlist));
        if (s.Allowlist is not null)
        {
            foreach (string entry in s.Allowlist.Entries)
                stdout.WriteLine("  " + entry);
        }
        if (s.Opcodes.Count == 0)
        {
            stdout.WriteLine("No FUSE requests yet.");
            return;
        }
        stdout.WriteLine("FUSE requests:");
        stdout.WriteLine($"  {"OPCODE",-20} {"REQUESTS",12} {"ERRORS",10}");
        foreach (OpcodeCounters c in s.Opcodes)
            stdout.WriteLine(string.Create(inv, $"  {c.Name + " (" + c.Opcode + ")",-20} {c.Requests,12} {c.Errors,10}"));
    }

    private static string FormatUptime(TimeSpan t)
    {
        var inv = CultureInfo.InvariantCulture;
        string clock = string.Create(inv, $"{t.Hours:00}:{t.Minutes:00}:{t.Seconds:00}");
        return t.Days > 0 ? string.Create(inv, $"{t.Days}d {clock}") : clock;
    }

    private static string FormatBytes(ulong bytes)
    {
        var inv = CultureInfo.InvariantCulture;
        if (bytes < 1024)
            return string.Create(inv, $"{bytes} B");
        string[] units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double value = bytes;
        int unit = -1;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return string.Create(inv, $"{bytes} ({value:0.0} {units[unit]})");
    }
}
