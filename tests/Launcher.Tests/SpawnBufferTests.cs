using Hypervisor.Tests.Support;
using System.Diagnostics;
using Hypervisor.Interop;

namespace Hypervisor.Launcher.Tests;

/// <summary>
/// The native blocks fuse_launcher allocates for glibc's opaque posix_spawn types hold them: compared with sizeof as gcc
/// compiles it on this machine.
/// </summary>
public sealed class SpawnBufferTests
{
    [Fact]
    public void EveryBlockIsAtLeastAsLargeAsItsCType()
    {
        const string program = """
            #include <stdio.h>
            #include <signal.h>
            #include <spawn.h>
            int main(void) {
              printf("%zu %zu %zu\n", sizeof(posix_spawn_file_actions_t), sizeof(posix_spawnattr_t), sizeof(sigset_t));
              return 0;
            }
            """;
        var sizes = CProgram.CompileAndRun(program).Split(' ', StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        Assert.True(sizes[0] <= Libc.FileActionsSize, $"posix_spawn_file_actions_t is {sizes[0]} bytes, the block {Libc.FileActionsSize}");
        Assert.True(sizes[1] <= Libc.SpawnAttrSize, $"posix_spawnattr_t is {sizes[1]} bytes, the block {Libc.SpawnAttrSize}");
        Assert.True(sizes[2] <= Libc.SigSetSize, $"sigset_t is {sizes[2]} bytes, the block {Libc.SigSetSize}");
    }
}
