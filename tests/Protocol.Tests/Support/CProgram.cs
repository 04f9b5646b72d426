using System.Diagnostics;

namespace Hypervisor.Tests.Support;

/// <summary>
/// Compiles a small C program with the machine's gcc and returns what it prints: how the tests read sizes, offsets and
/// constants from the C headers themselves. Linked into each test project that checks a layout against C.
/// </summary>
internal static class CProgram
{
    public static string CompileAndRun(string source)
    {
        var dir = Directory.CreateTempSubdirectory("c-program-");
        try
        {
            var c = Path.Combine(dir.FullName, "program.c");
            var exe = Path.Combine(dir.FullName, "program");
            File.WriteAllText(c, source);
            Run("gcc", $"-o {exe} {c}");
            return Run(exe, "");
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static string Run(string file, string arguments)
    {
        using var p = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = p.StandardOutput.ReadToEnd();
        var error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} failed: {error}");
        return output;
    }
}
