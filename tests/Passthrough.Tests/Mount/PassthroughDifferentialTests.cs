using System.Text.Json;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// The passthrough daemon mounted through /dev/fuse behaves like the local filesystem it serves: every case of
/// fs_ops.py (one per FUSE operation reachable from user space, plus ownership, permission and lock semantics)
/// logs the same results and errno values on the mount as on a plain directory of the same host filesystem, run
/// as root and as uid 1000.
/// </summary>
[Trait("Category", "Root")]
public sealed class PassthroughDifferentialTests(DifferentialShare fixture) : IClassFixture<DifferentialShare>
{
    /// <summary>The cases of fs_ops.py; <see cref="EveryScriptCaseIsCompared"/> keeps this list complete.</summary>
    public static readonly string[] CaseNames =
    [
        "access", "big_offsets", "byte_names", "chmod", "chown", "copy_file_range", "fallocate", "fd_attrs", "flock",
        "fsync", "link", "link_rename", "many_files", "mkdir_rmdir", "mknod", "mmap", "open_flags", "ownership",
        "perm_changes", "permissions", "posix_locks", "read_write", "readdir", "rename", "renameat2", "seek_data_hole",
        "setuid_cleared", "stat_lookup", "statfs", "symlink", "syncfs", "truncate", "unix_socket", "unlink",
        "unlinked_open", "utimens", "xattr",
    ];

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var uid in new[] { 0, 1000 })
            foreach (var name in CaseNames) data.Add(name, uid);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void CaseMatchesLocalDirectory(string caseName, int uid)
    {
        var (local, mount) = fixture.Results(uid);
        Assert.True(local.ContainsKey(caseName), $"fs_ops.py has no case {caseName}.");
        Assert.True(mount.ContainsKey(caseName), $"the mount run did not log case {caseName}.");
        AssertNoException(caseName, local[caseName], "local dir");
        var difference = FsOpsScript.Difference(caseName, local[caseName], mount[caseName]);
        Assert.True(difference is null, difference + (fixture.Share.DaemonAlive ? "" : "\nThe daemon died:\n" + fixture.Share.DaemonLog));
    }

    [Fact]
    public void EveryScriptCaseIsCompared()
    {
        var listed = JsonSerializer.Deserialize<string[]>(FsOpsScript.Run(TimeSpan.FromSeconds(30), FsOpsScript.ScriptPath, "--list"))!;
        Assert.Equal(listed.Order(StringComparer.Ordinal), CaseNames.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void DaemonSurvivesEveryCase()
    {
        fixture.Results(0);
        fixture.Results(1000);
        Assert.True(fixture.Share.DaemonAlive, fixture.Share.DaemonLog);
        Assert.True(MountedShare.IsMounted(fixture.Share.MountPoint));
        Assert.DoesNotContain("fail:", fixture.Share.DaemonLog);
    }

    private static void AssertNoException(string caseName, JsonElement log, string where)
    {
        foreach (var entry in log.EnumerateArray())
        {
            if (entry[0].GetString() == "exception")
                Assert.Fail($"case {caseName} raised on the {where} (a broken case, not a filesystem difference): {entry[1]}");
        }
    }
}
