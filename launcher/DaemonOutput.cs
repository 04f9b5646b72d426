using System.Text;

namespace Hypervisor.Launcher;

/// <summary>
/// What the daemon wrote to stdout/stderr while starting, split into lines and bounded (the last
/// <see cref="MaxLines"/> lines of at most <see cref="MaxLineChars"/> characters each), from which the launcher
/// takes the daemon's own reason when it fails.
/// </summary>
public sealed class DaemonOutput
{
    /// <summary>Lines kept.</summary>
    public const int MaxLines = 200;

    /// <summary>Characters kept per line.</summary>
    public const int MaxLineChars = 1000;

    private readonly Queue<string> _lines = new();
    private readonly List<byte> _partial = new();

    /// <summary>The complete lines kept so far, oldest first.</summary>
    public IReadOnlyCollection<string> Lines => _lines;

    /// <summary>Adds bytes as read from the pipe.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        foreach (var b in data)
        {
            if (b == (byte)'\n') Flush();
            else if (_partial.Count < MaxLineChars * 4) _partial.Add(b);
        }
    }

    /// <summary>Ends a last line that had no newline (the pipe reached end of file).</summary>
    public void Complete()
    {
        if (_partial.Count > 0) Flush();
    }

    private void Flush()
    {
        var line = Encoding.UTF8.GetString(_partial.ToArray()).TrimEnd('\r');
        _partial.Clear();
        if (line.Length > MaxLineChars) line = line[..MaxLineChars];
        _lines.Enqueue(line);
        if (_lines.Count > MaxLines) _lines.Dequeue();
    }

    /// <summary>
    /// The daemon's own one-line reason, if it gave one: its last "passthrough: …" sentence (the daemon's
    /// convention for fatal errors), else the message of an unhandled .NET exception, else its last line
    /// that is not a stack frame; null when it printed nothing.
    /// </summary>
    public string? Reason()
    {
        string? daemonSentence = null, unhandled = null, last = null;
        foreach (var line in _lines)
        {
            var trimmed = line.Trim();
            if (trimmed.Length == 0 || trimmed.StartsWith("at ", StringComparison.Ordinal) || trimmed.StartsWith("---", StringComparison.Ordinal)) continue;
            if (trimmed.StartsWith("passthrough: ", StringComparison.Ordinal)) daemonSentence = trimmed["passthrough: ".Length..];
            else if (trimmed.StartsWith("Unhandled exception", StringComparison.Ordinal)) unhandled = trimmed;
            last = trimmed;
        }
        return daemonSentence ?? unhandled ?? last;
    }
}
