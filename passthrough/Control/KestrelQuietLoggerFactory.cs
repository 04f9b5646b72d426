using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Control;

/// <summary>
/// Hands the daemon's logger factory to the control server's host with the frameworks' own
/// categories (Kestrel, hosting: "Microsoft.*"; Grpc.AspNetCore: "Grpc.*") limited to warnings and
/// errors, whatever level the daemon logs at: connection and request chatter, and a line for every
/// call that ended with an error status, are noise in a daemon's log.
/// </summary>
internal sealed class KestrelQuietLoggerFactory(ILoggerFactory inner) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName)
    {
        ILogger logger = inner.CreateLogger(categoryName);
        return IsFramework(categoryName) ? new WarningsOnly(logger) : logger;
    }

    /// <summary>Whether <paramref name="categoryName"/> is one of ASP.NET Core's or gRPC's own.</summary>
    public static bool IsFramework(string categoryName)
        => categoryName.StartsWith("Microsoft.", StringComparison.Ordinal) || categoryName.StartsWith("Grpc.", StringComparison.Ordinal);

    // The daemon owns the providers; the host must not add or dispose them.
    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class WarningsOnly(ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning && inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
                inner.Log(logLevel, eventId, state, exception, formatter);
        }
    }
}
