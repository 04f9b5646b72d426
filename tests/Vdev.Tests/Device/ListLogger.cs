using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>Collects formatted log lines so tests can assert what the device reported.</summary>
internal sealed class ListLogger : ILogger
{
    public readonly ConcurrentQueue<(LogLevel Level, string Text)> Lines = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        => Lines.Enqueue((logLevel, formatter(state, exception) + (exception != null ? " " + exception : "")));

    public bool Contains(string fragment) => Lines.Any(l => l.Text.Contains(fragment, StringComparison.Ordinal));
    public int Count(string fragment) => Lines.Count(l => l.Text.Contains(fragment, StringComparison.Ordinal));
    public override string ToString() => string.Join("\n", Lines.Select(l => $"{l.Level}: {l.Text}"));
}
