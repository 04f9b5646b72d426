namespace Hypervisor.Tests;

/// <summary>
/// The three executables as they ship: the NativeAOT builds that <c>.ci/build</c> publishes into <c>dist/</c> at the
/// repository root (or into <c>$HV_DIST</c>). Tests and benchmarks run these, never the JIT builds under bin/: the
/// daemon's namespace sandbox needs the native build, which loads nothing from the host once it has pivoted.
/// </summary>
internal static class Executables
{
    /// <summary>The repository root (the directory with Hypervisor.sln).</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>The folder with vdev, fuse_launcher and passthrough.</summary>
    public static string Dist => Environment.GetEnvironmentVariable("HV_DIST") is { Length: > 0 } d ? d : Path.Combine(RepositoryRoot, "dist");

    /// <summary>The published vdev.</summary>
    public static string Vdev => Find("vdev");

    /// <summary>The published fuse_launcher.</summary>
    public static string Launcher => Find("fuse_launcher");

    /// <summary>The published passthrough daemon.</summary>
    public static string Passthrough => Find("passthrough");

    private static string Find(string name)
    {
        var path = Path.Combine(Dist, name);
        return File.Exists(path) ? path
            : throw new FileNotFoundException($"{path} does not exist: run `bash .ci/build` in {RepositoryRoot} (it publishes the NativeAOT executables into dist/) or set HV_DIST.", path);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Hypervisor.sln"))) return dir.FullName;
        throw new InvalidOperationException($"Hypervisor.sln not found above {AppContext.BaseDirectory}.");
    }
}
