using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace Hypervisor.Logging;

/// <summary>
/// The logger factory of the vdev and of the daemon: one line per message on stderr,
/// <c>HH:mm:ss.fff level: category[event id] message</c> (the console logger's simple format on one line), written by
/// the console logger's own background thread.
/// </summary>
/// <remarks>
/// Built from its parts rather than through <c>LoggerFactory.Create</c>: that one composes the same parts through
/// dependency injection, which a NativeAOT executable resolves by building generic types at run time, and which both
/// processes would otherwise do before they can serve. Compiled into each assembly that logs this way (not into the
/// protocol, which does no I/O).
/// </remarks>
internal static class StderrLogging
{
    /// <summary>
    /// A factory that logs at <paramref name="minimum"/> and above; categories starting with one of
    /// <paramref name="quiet"/> (a framework's own, e.g. <c>Microsoft</c>) only from warnings on.
    /// </summary>
    public static ILoggerFactory Create(LogLevel minimum, params string[] quiet) => Create(minimum, quiet, []);

    /// <summary>
    /// As <see cref="Create(LogLevel, string[])"/>, and categories starting with one of <paramref name="silent"/> log
    /// nothing: for a framework category that writes below warnings only and does work per event whenever its logger
    /// is enabled at any level (e.g. ASP.NET Core's request diagnostics).
    /// </summary>
    public static ILoggerFactory Create(LogLevel minimum, string[] quiet, string[] silent)
    {
        ArgumentNullException.ThrowIfNull(quiet);
        ArgumentNullException.ThrowIfNull(silent);
        var filters = new LoggerFilterOptions { MinLevel = minimum };
        foreach (var category in quiet)
            filters.Rules.Add(new LoggerFilterRule(null, category, null, static (_, _, level) => level >= LogLevel.Warning));
        // The longest matching category wins, so a silent one below a quiet prefix overrides it.
        foreach (var category in silent)
            filters.Rules.Add(new LoggerFilterRule(null, category, LogLevel.None, null));
        var options = new FixedOptions(new ConsoleLoggerOptions { FormatterName = LineFormatter.FormatterName, LogToStandardErrorThreshold = LogLevel.Trace });
        var provider = new ConsoleLoggerProvider(options, [new LineFormatter()]);
        return new LoggerFactory([provider], filters);
    }

    /// <summary>Options that never change.</summary>
    private sealed class FixedOptions(ConsoleLoggerOptions value) : IOptionsMonitor<ConsoleLoggerOptions>
    {
        public ConsoleLoggerOptions CurrentValue => value;

        public ConsoleLoggerOptions Get(string? name) => value;

        public IDisposable? OnChange(Action<ConsoleLoggerOptions, string?> listener) => null;
    }

    /// <summary><c>HH:mm:ss.fff level: category[event id] message exception</c>, newlines in the message and the exception replaced by spaces.</summary>
    private sealed class LineFormatter() : ConsoleFormatter(FormatterName)
    {
        public const string FormatterName = "line";

        public override void Write<TState>(in LogEntry<TState> logEntry, IExternalScopeProvider? scopeProvider, TextWriter textWriter)
        {
            var message = logEntry.Formatter(logEntry.State, logEntry.Exception);
            if (logEntry.Exception is null && string.IsNullOrEmpty(message)) return;
            textWriter.Write(DateTimeOffset.Now.ToString("HH:mm:ss.fff ", System.Globalization.CultureInfo.InvariantCulture));
            textWriter.Write(Level(logEntry.LogLevel));
            textWriter.Write(": ");
            textWriter.Write(logEntry.Category);
            textWriter.Write('[');
            textWriter.Write(logEntry.EventId.Id);
            textWriter.Write("] ");
            textWriter.Write(OneLine(message));
            if (logEntry.Exception is { } e)
            {
                textWriter.Write(' ');
                textWriter.Write(OneLine(e.ToString()));
            }
            textWriter.Write(Environment.NewLine);
        }

        private static string OneLine(string text) => text.Contains('\n', StringComparison.Ordinal) ? text.ReplaceLineEndings(" ") : text;

        private static string Level(LogLevel level) => level switch
        {
            LogLevel.Trace => "trce",
            LogLevel.Debug => "dbug",
            LogLevel.Information => "info",
            LogLevel.Warning => "warn",
            LogLevel.Error => "fail",
            LogLevel.Critical => "crit",
            _ => level.ToString(),
        };
    }
}
