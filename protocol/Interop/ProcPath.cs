namespace Hypervisor.Interop;

/// <summary>
/// Formats <c>/proc/self/fd/N</c> (NUL-terminated) into a caller's buffer: the standard way to reach the inode of an
/// O_PATH descriptor with calls that have no fd form, without ever building a path from guest bytes. A sandboxed
/// daemon has no /proc under its root: it makes its private /proc/self/fd its working directory before it pivots
/// (as virtiofsd does) and calls <see cref="UseWorkingDirectory"/>, after which the path is just <c>N</c>.
/// </summary>
internal static class ProcPath
{
    /// <summary>Enough for the prefix, ten digits and the NUL.</summary>
    public const int Size = 32;

    private static bool s_relative;

    private static ReadOnlySpan<byte> Prefix => s_relative ? [] : "/proc/self/fd/"u8;

    /// <summary>Whether paths are relative to the working directory (see <see cref="UseWorkingDirectory"/>).</summary>
    public static bool IsRelative => s_relative;

    /// <summary>From now on, paths are relative: the process's working directory is its /proc/self/fd.</summary>
    public static void UseWorkingDirectory() => s_relative = true;

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
