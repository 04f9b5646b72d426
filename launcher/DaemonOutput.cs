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

    /// <summary>
    /// Adds what the daemon appended to its <c>--log-file</c> from <paramref name="start"/> on (at most the last
    /// 64 KiB of it); a file that cannot be read or is not seekable (a pipe, a socket) adds nothing.
    /// </summary>
    public void AppendFile(string path, long start)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            // A pipe (e.g. /proc/self/fd/2 of a vdev whose stderr is a pipe) has no size and no past: its
            // reader already got the daemon's output, and reading here would take it away from them.
            if (!file.CanSeek) return;
            long from = Math.Max(start, file.Length - 65536);
            if (from >= file.Length) return;
            file.Position = from;
            var bytes = new byte[file.Length - from];
            file.ReadExactly(bytes);
            Append(bytes);
            Complete();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        catch (NotSupportedException) { }
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
