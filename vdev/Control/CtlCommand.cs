using System.CommandLine;
using System.CommandLine.Help;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
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

    /// <summary>Runs <c>vdev ctl</c> with <paramref name="args"/> (the words after "ctl"), writing to the console.</summary>
    public static int Run(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs <c>vdev ctl</c>, writing results to <paramref name="stdout"/> and errors to <paramref name="stderr"/>.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        => RunAsync(args, stdout, stderr, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>Asynchronous form of <see cref="Run(string[], TextWriter, TextWriter)"/>.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var cli = new CommandLine();
        var parse = cli.Root.Parse(args);
        if (parse.Action is HelpAction)
        {
            parse.Invoke(new InvocationConfiguration { Output = stdout });
            return ExitOk;
        }
        if (!cli.TryRead(parse, out Invocation? invocation, out string? error))
        {
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
                Write(stdout, new JsonObject { ["error"] = new JsonObject { ["code"] = ShareControlClient.StatusName(e.StatusCode), ["code_number"] = (int)e.StatusCode, ["message"] = e.Status.Detail } });
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

    /// <summary>
    /// <c>vdev ctl</c>'s command line: the connection options, and one subcommand per operation. Each subcommand's
    /// words are checked here, before anything connects, with the same parsers as the daemon's.
    /// </summary>
    private sealed class CommandLine
    {
        public readonly Option<string?> Socket = new("--socket") { Description = "The share's control socket (SOCKET.ctl next to its vhost-user socket). Required.", Recursive = true };
        public readonly Option<bool> Json = new("--json") { Description = "Print JSON instead of text; errors also as {\"error\": {\"code\", \"code_number\", \"message\"}}.", Recursive = true };
        public readonly Option<string?> Timeout = new("--timeout") { Description = "Deadline of the call in seconds (default 5).", Recursive = true };
        public readonly RootCommand Root = new("vdev ctl: controls one virtio-fs share through its daemon's control socket. Exit status: 0 ok, " +
            "1 the service reported an error (or is not SERVING), 2 bad arguments, 3 the service cannot be reached or did not answer in time.");

        private readonly Argument<string[]> _words = new("words") { Arity = ArgumentArity.ZeroOrMore, Hidden = true };

        public CommandLine()
        {
            Root.Options.Add(Socket);
            Root.Options.Add(Json);
            Root.Options.Add(Timeout);
            foreach (var (name, description) in new[]
            {
                ("status", "Settings, counters and allowlist of the share."),
                ("direct-io", "direct-io on|off: direct I/O for every open from now on."),
                ("cache", "cache never|metadata|auto|always: the cache policy for replies from now on."),
                ("allow", "allow list | add PATH | remove PATH | enable | disable: the allowlist (paths relative to the share root)."),
                ("health", "SERVING or NOT_SERVING (exit 1 unless SERVING)."),
                ("shutdown", "Ask the daemon to stop gracefully."),
                ("restart", "Replace the daemon with a freshly started one (the binary installed now), without an error in the guest; answers when the new daemon serves."),
            })
            {
                var command = new Command(name, description) { TreatUnmatchedTokensAsErrors = false };
                command.Arguments.Add(_words);
                Root.Subcommands.Add(command);
            }
            Root.TreatUnmatchedTokensAsErrors = false;
            // Without a subcommand the root still parses (no "required command" error): TryRead names what is missing.
            Root.SetAction(_ => ExitUsage);
        }

        public bool TryRead(ParseResult parse, [NotNullWhen(true)] out Invocation? invocation, [NotNullWhen(false)] out string? error)
        {
            invocation = null;
            string command = parse.CommandResult.Command == Root ? "" : parse.CommandResult.Command.Name;
            var words = parse.GetValue(_words) ?? [];
            foreach (var token in parse.UnmatchedTokens)
            {
                if (token.StartsWith('-')) { error = $"Unknown option \"{token}\"; see vdev ctl --help."; return false; }
                if (command.Length == 0) { error = $"Unknown command \"{token}\"; use one of status, direct-io, cache, allow, health, shutdown, restart."; return false; }
                words = [.. words, token];
            }
            if (parse.Errors.Count > 0)
            {
                error = parse.Errors[0].Message.StartsWith("Required argument missing for option: '--socket'", StringComparison.Ordinal)
                    ? "--socket needs a path; give the share's control socket, e.g. --socket /run/vdev/share0.sock.ctl."
                    : $"{parse.Errors[0].Message.TrimEnd('.')}; see vdev ctl --help.";
                return false;
            }
            if (ShareCommandLine.Given(parse, Socket) && string.IsNullOrEmpty(parse.GetValue(Socket)))
            {
                error = "--socket needs a path; give the share's control socket, e.g. --socket /run/vdev/share0.sock.ctl.";
                return false;
            }
            var timeout = DefaultTimeout;
            if (parse.GetValue(Timeout) is { } text)
            {
                if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) || !(seconds > 0) || seconds > 86_400)
                {
                    error = $"--timeout needs a number of seconds between 0 and 86400, not \"{text}\".";
                    return false;
                }
                timeout = TimeSpan.FromSeconds(seconds);
            }
            if (command.Length == 0)
            {
                error = "No command given; use one of status, direct-io, cache, allow, health, shutdown, restart (see vdev ctl --help).";
                return false;
            }
            if (parse.GetValue(Socket) is not { Length: > 0 } socket)
            {
                error = "Missing --socket PATH; give the control socket of the share to control.";
                return false;
            }
            invocation = new Invocation(socket, parse.GetValue(Json), timeout, command, words);
            return ValidateCommand(invocation, out error);
        }
    }

    private static bool ValidateCommand(Invocation inv, [NotNullWhen(false)] out string? error)
    {
        error = null;
        string[] a = inv.Arguments;
        switch (inv.Command)
        {
            case "status" or "health" or "shutdown" or "restart":
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
            default: // allow
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
                string name = Enum.IsDefined(health) ? ShareControlClient.UpperSnake(health) : "UNKNOWN";
                if (inv.Json)
                    Write(stdout, new JsonObject { ["status"] = name });
                else
                    stdout.WriteLine(name);
                return health == HealthCheckResponse.Types.ServingStatus.Serving ? ExitOk : ExitFailed;
            case "restart":
                var restarted = await client.Control.RestartAsync(new RestartRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false);
                if (inv.Json)
                    Write(stdout, new JsonObject { ["new_pid"] = restarted.NewPid });
                else
                    stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Restarted; daemon {restarted.NewPid} serves the share now."));
                return ExitOk;
            default: // "shutdown"
                await client.Control.ShutdownAsync(new ShutdownRequest(), cancellationToken: ct).ResponseAsync.ConfigureAwait(false);
                if (inv.Json)
                    Write(stdout, new JsonObject { ["shutdown_requested"] = true });
                else
                    stdout.WriteLine("Shutdown requested; the daemon finishes requests in flight and exits.");
                return ExitOk;
        }
    }

    // The JSON of --json: field names are snake_case like the .proto fields they come from; cache policies and
    // health states are words (auto, SERVING), not numbers.
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static void Write(TextWriter stdout, JsonObject value) => stdout.WriteLine(value.ToJsonString(Indented));

    private static JsonObject ToJson(ShareOptions? o) => new()
    {
        ["direct_io"] = o?.DirectIo ?? false, ["cache"] = PolicyName(o?.CachePolicy ?? CachePolicy.Unspecified),
        ["readonly"] = o?.Readonly ?? false, ["xattr"] = o?.Xattr ?? false, ["writeback"] = o?.Writeback ?? false,
    };

    private static JsonObject ToJson(Allowlist? l) => new() { ["enabled"] = l?.Enabled ?? false, ["entries"] = new JsonArray([.. (l?.Entries ?? []).Select(e => JsonValue.Create(e))]) };

    private static void PrintOptions(TextWriter stdout, bool json, ShareOptions options)
    {
        if (json)
        {
            Write(stdout, ToJson(options));
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
            Write(stdout, ToJson(list));
            return;
        }
        stdout.WriteLine(DescribeAllowlist(list));
        foreach (string entry in list.Entries)
            stdout.WriteLine("  " + entry);
    }

    private static string DescribeAllowlist(Allowlist list)
    {
        int count = list.Entries.Count;
        string state = list.Enabled ? "enabled" : "disabled (entries kept, not enforced)";
        return $"Allowlist {state}, {count} {(count == 1 ? "entry" : "entries")}" + (count > 0 ? ":" : ".");
    }

    private static void PrintStatus(TextWriter stdout, bool json, ShareStatus s)
    {
        TimeSpan uptime = s.Uptime?.ToTimeSpan() ?? TimeSpan.Zero;
        if (json)
        {
            Write(stdout, new JsonObject
            {
                ["shared_dir"] = s.SharedDir, ["tag"] = s.Tag, ["options"] = ToJson(s.Options), ["uptime_seconds"] = uptime.TotalSeconds,
                ["open_file_handles"] = s.OpenFileHandles, ["known_nodes"] = s.KnownNodes, ["bytes_read"] = s.BytesRead,
                ["bytes_written"] = s.BytesWritten, ["allowlist"] = ToJson(s.Allowlist),
                ["opcodes"] = new JsonArray([.. s.Opcodes.Select(c => new JsonObject { ["opcode"] = c.Opcode, ["name"] = c.Name, ["requests"] = c.Requests, ["errors"] = c.Errors })]),
                ["queue_cpus"] = new JsonArray([.. s.QueueCpus.Select(cpu => JsonValue.Create(cpu))]),
                ["restarts"] = s.Restarts is not { } r ? null : new JsonObject
                {
                    ["count"] = r.Count, ["planned"] = r.Planned, ["last_cause"] = r.LastCause,
                    ["last_wait_seconds"] = r.LastWait?.ToTimeSpan().TotalSeconds ?? 0, ["total_wait_seconds"] = r.TotalWait?.ToTimeSpan().TotalSeconds ?? 0,
                },
                // The settings model is printed as its own JSON mapping, field names as in settings.proto.
                ["settings"] = s.Settings is null ? null
                    : JsonNode.Parse(new Google.Protobuf.JsonFormatter(Google.Protobuf.JsonFormatter.Settings.Default.WithPreserveProtoFieldNames(true)).Format(s.Settings)),
            });
            return;
        }
        var inv = CultureInfo.InvariantCulture;
        stdout.WriteLine($"Share          {s.SharedDir} (tag \"{s.Tag}\")");
        stdout.WriteLine($"Uptime         {FormatUptime(uptime)}");
        stdout.WriteLine($"Options        {DescribeOptions(s.Options)}");
        if (s.Restarts is { } restarts)
            stdout.WriteLine(restarts.Count == 0 ? "Restarts       none"
                : string.Create(inv, $"Restarts       {restarts.Count} ({restarts.Planned} planned, {restarts.Count - restarts.Planned} after a crash), last: {restarts.LastCause}; the guest waited {restarts.LastWait?.ToTimeSpan().TotalMilliseconds ?? 0:F0} ms (all restarts: {restarts.TotalWait?.ToTimeSpan().TotalMilliseconds ?? 0:F0} ms)"));
        if (s.Settings is not null)
            stdout.WriteLine($"Settings       {string.Join(' ', ShareVocabulary.ToArguments(s.Settings))}");
        stdout.WriteLine(string.Create(inv, $"Open handles   {s.OpenFileHandles}"));
        stdout.WriteLine(string.Create(inv, $"Known nodes    {s.KnownNodes}"));
        stdout.WriteLine($"Bytes read     {FormatBytes(s.BytesRead)}");
        stdout.WriteLine($"Bytes written  {FormatBytes(s.BytesWritten)}");
        if (s.QueueCpus.Count > 0)
            stdout.WriteLine("Queue CPUs     " + string.Join(", ", s.QueueCpus.Select((cpu, i) => string.Create(inv, $"q{i + 1} {(cpu < 0 ? "unpinned" : $"on {cpu}")}"))));
        PrintAllowlist(stdout, json: false, s.Allowlist ?? new Allowlist());
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
