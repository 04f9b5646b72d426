namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// Finds the <c>passthrough</c> executable, so the mount tests run the real daemon, not an in-process copy.
/// </summary>
internal static class DaemonExecutable
{
    /// <summary>
    /// The command that starts the daemon: $PASSTHROUGH_EXE when set (a .dll runs through <c>dotnet</c>), else the
    /// published daemon (dist/).
    /// </summary>
    public static (string FileName, string[] PrefixArgs) Locate()
    {
        var overridden = Environment.GetEnvironmentVariable("PASSTHROUGH_EXE");
        if (!string.IsNullOrEmpty(overridden))
        {
            if (!File.Exists(overridden)) throw new FileNotFoundException($"PASSTHROUGH_EXE points at {overridden}, which does not exist; unset it or fix the path.");
            return Command(overridden);
        }

        return Command(Hypervisor.Tests.Executables.Passthrough);
    }

    private static (string, string[]) Command(string path) =>
        path.EndsWith(".dll", StringComparison.Ordinal) ? ("dotnet", [path]) : (path, []);
}
