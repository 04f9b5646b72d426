using System.Diagnostics;

namespace Hypervisor.Launcher.Tests.Support;

/// <summary>Runs the built fuse_launcher as a process, as the vdev does, and captures what it prints.</summary>
internal sealed record LauncherRun(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed, int LauncherPid)
{
    /// <summary>The repository root (the directory with Hypervisor.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The build configuration the tests were built in (Debug or Release), read off the output path.</summary>
    public static string Configuration { get; } = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Parent!.Name;

    /// <summary>The published passthrough daemon.</summary>
    public static string PassthroughPath => Hypervisor.Tests.Executables.Passthrough;

    /// <summary>The published fuse_launcher.</summary>
    public static string LauncherPath => Hypervisor.Tests.Executables.Launcher;

    /// <summary>The stderr lines.</summary>
    public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>The stdout lines.</summary>
    public string[] StdoutLines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Starts fuse_launcher with <paramref name="args"/>; <paramref name="whileRunning"/> sees its pid before it ends.</summary>
    public static LauncherRun Start(IEnumerable<string> args, Action<Process>? whileRunning = null, string? workingDirectory = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(LauncherPath)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? "",
        };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) info.Environment[name] = value;
        foreach (var a in args) info.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info)!;
        // Read both to end of file: this also proves the daemon holds neither of fuse_launcher's output pipes
        // (if it did, these reads would not end while the daemon runs).
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        whileRunning?.Invoke(process);
        if (!Task.WaitAll([stdout, stderr], TimeSpan.FromSeconds(60)))
        {
            process.Kill();
            throw new TimeoutException("fuse_launcher's output did not reach end of file within 60 s: a process kept its stdout or stderr open.");
        }
        process.WaitForExit();
        return new LauncherRun(process.ExitCode, stdout.Result, stderr.Result, clock.Elapsed, process.Id);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Hypervisor.sln"))) return dir.FullName;
        throw new InvalidOperationException("Hypervisor.sln not found above the test directory.");
    }
}
