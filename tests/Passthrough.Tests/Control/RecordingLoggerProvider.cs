using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>Keeps every line logged through it, with its level and exception, for tests that check what a server logs.</summary>
internal sealed class RecordingLoggerProvider : ILoggerProvider
{
    public sealed record Entry(string Category, LogLevel Level, string Message, Exception? Exception);

    private readonly ConcurrentQueue<Entry> _entries = new();

    public IReadOnlyCollection<Entry> Entries => _entries.ToArray();

    public ILogger CreateLogger(string categoryName) => new Category(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Category(RecordingLoggerProvider owner, string name) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => owner._entries.Enqueue(new Entry(name, logLevel, formatter(state, exception), exception));
    }
}
