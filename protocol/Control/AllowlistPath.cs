using System.Text;

namespace Hypervisor.Protocol.Control;

/// <summary>
/// Validation and normalisation of allowlist paths, which name entries relative to the share
/// root. The server applies it to every path it receives; clients may apply it first to fail
/// early with the same message.
/// </summary>
/// <remarks>
/// Normalisation is lexical: empty and <c>.</c> components are dropped and <c>..</c> removes the
/// component before it. That is sound here because the daemon resolves paths one component at
/// a time without following symlinks, so <c>a/..</c> can only mean the share root again. A
/// <c>..</c> with nothing left to remove would leave the share and is rejected, as are absolute
/// paths, NUL characters, components longer than NAME_MAX and paths longer than PATH_MAX.
/// </remarks>
public static class AllowlistPath
{
    /// <summary>Linux NAME_MAX: the longest component, in UTF-8 bytes.</summary>
    public const int MaxComponentBytes = 255;

    /// <summary>Linux PATH_MAX less the terminating NUL: the longest path, in UTF-8 bytes.</summary>
    public const int MaxPathBytes = 4095;

    /// <summary>
    /// Normalises <paramref name="path"/>. On failure <paramref name="error"/> is one sentence
    /// saying what to change and <paramref name="normalized"/> is empty.
    /// </summary>
    public static bool TryNormalize(string? path, out string normalized, out string error)
    {
        normalized = string.Empty;
        if (string.IsNullOrEmpty(path))
        {
            error = "The allowlist path is empty; give a path relative to the share root, such as \"docs/reports\".";
            return false;
        }
        if (path[0] == '/')
        {
            error = $"The allowlist path \"{path}\" is absolute; give it relative to the share root, without the leading '/'.";
            return false;
        }
        if (path.Contains('\0'))
        {
            error = "The allowlist path contains a NUL character; remove it.";
            return false;
        }
        if (Encoding.UTF8.GetByteCount(path) > MaxPathBytes)
        {
            error = $"The allowlist path is longer than {MaxPathBytes} bytes; shorten it.";
            return false;
        }

        var parts = new List<string>();
        foreach (string component in path.Split('/'))
        {
            if (component.Length == 0 || component == ".")
                continue;
            if (component == "..")
            {
                if (parts.Count == 0)
                {
                    error = $"The allowlist path \"{path}\" leaves the share root through \"..\"; name an entry inside the share.";
                    return false;
                }
                parts.RemoveAt(parts.Count - 1);
                continue;
            }
            if (Encoding.UTF8.GetByteCount(component) > MaxComponentBytes)
            {
                error = $"The allowlist path \"{path}\" has a component longer than {MaxComponentBytes} bytes; shorten it.";
                return false;
            }
            parts.Add(component);
        }
        if (parts.Count == 0)
        {
            error = $"The allowlist path \"{path}\" names the share root itself; to allow the whole share, disable the allowlist instead.";
            return false;
        }
        normalized = string.Join('/', parts);
        error = string.Empty;
        return true;
    }
}
