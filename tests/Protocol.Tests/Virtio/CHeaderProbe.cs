using System.Diagnostics;

namespace Hypervisor.Protocol.Tests.Virtio;

/// <summary>Compiles and runs a small C program against the Linux UAPI headers and returns its output lines.</summary>
internal static class CHeaderProbe
{
    public static string[] Run(string cBody, string includes)
    {
        var dir = Directory.CreateTempSubdirectory("cprobe-").FullName;
        try
        {
            var src = Path.Combine(dir, "p.c");
            File.WriteAllText(src, $"#include <stdio.h>\n#include <stddef.h>\n{includes}\nint main(void) {{\n{cBody}\nreturn 0; }}\n");
            var exe = Path.Combine(dir, "p");
            Exec("gcc", ["-o", exe, src]);
            return Exec(exe, []).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static string Exec(string file, string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} failed: {err}");
        return output;
    }
}
