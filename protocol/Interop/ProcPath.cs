namespace Hypervisor.Interop;

/// <summary>
/// Formats <c>/proc/self/fd/N</c> (NUL-terminated) into a caller's buffer: the standard way to reach the inode of an
/// O_PATH descriptor with calls that have no fd form, without ever building a path from guest bytes.
/// </summary>
internal static class ProcPath
{
    /// <summary>Enough for the prefix, ten digits and the NUL.</summary>
    public const int Size = 32;

    private static ReadOnlySpan<byte> Prefix => "/proc/self/fd/"u8;

    /// <summary>Writes the path of <paramref name="fd"/>; returns the slice including the terminating NUL.</summary>
    public static ReadOnlySpan<byte> Format(int fd, Span<byte> buffer)
    {
        Prefix.CopyTo(buffer);
        var n = Prefix.Length;
        System.Buffers.Text.Utf8Formatter.TryFormat(fd, buffer[n..], out var written);
        n += written;
        buffer[n++] = 0;
        return buffer[..n];
    }
}
