using System.Reflection;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// Finds the built <c>passthrough</c> executable for the configuration the tests were built in (Debug or Release),
/// so the mount tests run the real daemon, not an in-process copy.
/// </summary>
internal static class DaemonExecutable
{
    /// <summary>
    /// The command that starts the daemon: the apphost when present, otherwise <c>dotnet passthrough.dll</c>.
    /// Order: $PASSTHROUGH_EXE, the Passthrough project's bin folder for this configuration, the test output folder.
    /// </summary>
    public static (string FileName, string[] PrefixArgs) Locate()
    {
        var overridden = Environment.GetEnvironmentVariable("PASSTHROUGH_EXE");
        if (!string.IsNullOrEmpty(overridden))
        {
            if (!File.Exists(overridden)) throw new FileNotFoundException($"PASSTHROUGH_EXE points at {overridden}, which does not exist; unset it or fix the path.");
            return Command(overridden);
        }

        var testDir = AppContext.BaseDirectory.TrimEnd('/');
        var configuration = Assembly.GetExecutingAssembly().GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";
        var framework = Path.GetFileName(testDir); // bin/<Configuration>/<tfm>
        var candidates = new List<string>();
        for (var dir = new DirectoryInfo(testDir); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Hypervisor.sln")))
            {
                candidates.Add(Path.Combine(dir.FullName, "passthrough", "bin", configuration, framework, "passthrough"));
                candidates.Add(Path.Combine(dir.FullName, "passthrough", "bin", configuration, framework, "passthrough.dll"));
                break;
            }
        }
        candidates.Add(Path.Combine(testDir, "passthrough"));
        candidates.Add(Path.Combine(testDir, "passthrough.dll"));
        foreach (var candidate in candidates)
        {
            if (File.Exists(candidate) && (candidate.EndsWith(".dll", StringComparison.Ordinal)
                    ? File.Exists(Path.ChangeExtension(candidate, ".runtimeconfig.json"))
                    : true))
                return Command(candidate);
        }
        throw new FileNotFoundException(
            $"The passthrough executable was not found (looked at {string.Join(", ", candidates)}); build passthrough/Passthrough.csproj in {configuration} or set PASSTHROUGH_EXE.");
    }

    private static (string, string[]) Command(string path) =>
        path.EndsWith(".dll", StringComparison.Ordinal) ? ("dotnet", [path]) : (path, []);
}
