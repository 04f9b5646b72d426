using Hypervisor.Tests.Support;
using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Hypervisor.Protocol.Tests.Interop;

/// <summary>
/// Every constant of the interop source set that names a C macro (O_PATH, EFD_CLOEXEC, SO_PEERCRED, SYS_pidfd_open, …)
/// has the value the C headers give it. The set is compiled into several assemblies, most of them invisible from here,
/// so the constants are read from its source files; gcc evaluates both the macro and the C# expression.
/// </summary>
public sealed partial class InteropConstantsTests
{
    /// <summary>Constants whose value is deliberately not the C library's, and why.</summary>
    private static readonly Dictionary<string, string> NotTheCLibrarys = new()
    {
        ["O_LARGEFILE"] = "the kernel's value, as a guest's open flags carry it; glibc defines 0 on 64-bit",
    };

    [GeneratedRegex(@"\bconst\s+(?:int|uint|short|long)\s+(?<name>[A-Z][A-Za-z0-9_]*)\s*=\s*(?<value>[^;]+);")]
    private static partial Regex Constant();

    [GeneratedRegex(@"^(?:[A-Z][A-Z0-9_]+|SYS_\w+)$")]
    private static partial Regex MacroName();

    private const string Headers = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <limits.h>
        #include <errno.h>
        #include <fcntl.h>
        #include <poll.h>
        #include <sched.h>
        #include <signal.h>
        #include <spawn.h>
        #include <unistd.h>
        #include <sys/eventfd.h>
        #include <sys/file.h>
        #include <sys/mman.h>
        #include <sys/mount.h>
        #include <sys/prctl.h>
        #include <linux/capability.h>
        #include <seccomp.h>
        /* The kernel header spells it with a leading underscore. */
        #define LINUX_CAPABILITY_VERSION_3 _LINUX_CAPABILITY_VERSION_3
        #include <sys/resource.h>
        #include <sys/socket.h>
        #include <sys/stat.h>
        #include <sys/syscall.h>
        #include <sys/wait.h>

        """;

    [Fact]
    public void EveryMacroConstantHasTheValueOfTheCHeaders()
    {
        var constants = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(InteropDirectory(), "Libc*.cs"))
            foreach (Match m in Constant().Matches(File.ReadAllText(file)))
                if (MacroName().IsMatch(m.Groups["name"].Value) && !NotTheCLibrarys.ContainsKey(m.Groups["name"].Value))
                    Assert.True(constants.TryAdd(m.Groups["name"].Value, m.Groups["value"].Value), $"{m.Groups["name"].Value} is declared twice");
        // A broken pattern must not make this test pass by finding nothing.
        Assert.True(constants.Count > 100, $"only {constants.Count} constants found in {InteropDirectory()}");

        var program = new StringBuilder(Headers).Append("int main(void) {\n");
        foreach (var (name, value) in constants)
            program.Append($"printf(\"%s %lld %lld\\n\", \"{name}\", (long long)({name}), (long long)({value}));\n");
        program.Append("return 0;\n}\n");

        var wrong = new List<string>();
        foreach (var line in CProgram.CompileAndRun(program.ToString()).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ');
            if (f[1] != f[2]) wrong.Add($"{f[0]}: C {f[1]}, C# {f[2]}");
        }
        Assert.True(wrong.Count == 0, string.Join("; ", wrong));
    }

    /// <summary>protocol/Interop of the source tree this test was built from.</summary>
    private static string InteropDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Hypervisor.sln")))
                return Path.Combine(dir.FullName, "protocol", "Interop");
        throw new DirectoryNotFoundException($"no Hypervisor.sln above {AppContext.BaseDirectory}");
    }
}
