using System.Text.Json;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// The comparison every differential test class runs: one test per fs_ops.py case and uid, the case's log on the
/// mount equal to its log on a plain directory of the same host filesystem.
/// </summary>
public abstract class DifferentialCases(DifferentialShare fixture)
{
    /// <summary>The cases of fs_ops.py; <see cref="PassthroughDifferentialTests.EveryScriptCaseIsCompared"/> keeps this list complete.</summary>
    public static readonly string[] CaseNames =
    [
        "access", "big_offsets", "byte_names", "chmod", "chown", "copy_file_range", "fallocate", "fd_attrs", "flock",
        "fsync", "link", "link_rename", "many_files", "mkdir_rmdir", "mknod", "mmap", "open_flags", "ownership",
        "perm_changes", "permissions", "posix_locks", "read_write", "readdir", "rename", "renameat2", "seek_data_hole",
        "setuid_cleared", "stat_lookup", "statfs", "symlink", "syncfs", "truncate", "unix_socket", "unlink",
        "unlinked_open", "utimens", "xattr",
    ];

    protected DifferentialShare Fixture => fixture;

    /// <summary>Every case as root and as uid 1000, except <paramref name="excluded"/> (each class says why).</summary>
    protected static TheoryData<string, int> CasesExcept(params string[] excluded)
    {
        var data = new TheoryData<string, int>();
        foreach (var uid in new[] { 0, 1000 })
            foreach (var name in CaseNames)
                if (Array.IndexOf(excluded, name) < 0) data.Add(name, uid);
        return data;
    }

    protected void Compare(string caseName, int uid)
    {
        var (local, mount) = fixture.Results(uid);
        Assert.True(local.ContainsKey(caseName), $"fs_ops.py has no case {caseName}.");
        Assert.True(mount.ContainsKey(caseName), $"the mount run did not log case {caseName}.");
        AssertNoException(caseName, local[caseName], "local dir");
        var difference = FsOpsScript.Difference(caseName, local[caseName], mount[caseName]);
        Assert.True(difference is null, difference + (fixture.Share.DaemonAlive ? "" : "\nThe daemon died:\n" + fixture.Share.DaemonLog));
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

/// <summary>
/// The passthrough daemon mounted through /dev/fuse with its default options (and --xattr) behaves like the local
/// filesystem it serves: every case of fs_ops.py (one per FUSE operation reachable from user space, plus ownership,
/// permission and lock semantics) logs the same results and errno values on the mount as on a plain directory of
/// the same host filesystem, run as root and as uid 1000.
/// </summary>
[Trait("Category", "Root")]
public sealed class PassthroughDifferentialTests(DifferentialShare fixture) : DifferentialCases(fixture), IClassFixture<DifferentialShare>
{
    public static TheoryData<string, int> Cases() => CasesExcept();

    [Theory]
    [MemberData(nameof(Cases))]
    public void CaseMatchesLocalDirectory(string caseName, int uid) => Compare(caseName, uid);

    [Fact]
    public void EveryScriptCaseIsCompared()
    {
        var listed = JsonSerializer.Deserialize<string[]>(FsOpsScript.Run(TimeSpan.FromSeconds(30), FsOpsScript.ScriptPath, "--list"))!;
        Assert.Equal(listed.Order(StringComparer.Ordinal), CaseNames.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void DaemonSurvivesEveryCase()
    {
        Fixture.Results(0);
        Fixture.Results(1000);
        Assert.True(Fixture.Share.DaemonAlive, Fixture.Share.DaemonLog);
        Assert.True(MountedShare.IsMounted(Fixture.Share.MountPoint));
        Assert.DoesNotContain("fail:", Fixture.Share.DaemonLog);
    }
}

/// <summary>The same comparison with <c>--writeback</c> (the kernel caches writes, times and sizes).</summary>
[Trait("Category", "Root")]
public sealed class WritebackDifferentialTests(WritebackDifferentialShare fixture) : DifferentialCases(fixture), IClassFixture<WritebackDifferentialShare>
{
    public static TheoryData<string, int> Cases() => CasesExcept();

    [Theory]
    [MemberData(nameof(Cases))]
    public void CaseMatchesLocalDirectory(string caseName, int uid) => Compare(caseName, uid);
}

/// <summary>The same comparison with <c>--cache always</c>.</summary>
[Trait("Category", "Root")]
public sealed class AlwaysCachedDifferentialTests(AlwaysCachedDifferentialShare fixture) : DifferentialCases(fixture), IClassFixture<AlwaysCachedDifferentialShare>
{
    public static TheoryData<string, int> Cases() => CasesExcept();

    [Theory]
    [MemberData(nameof(Cases))]
    public void CaseMatchesLocalDirectory(string caseName, int uid) => Compare(caseName, uid);
}

/// <summary>
/// The same comparison with <c>--cache never</c> (direct I/O on every open). A shared writable mmap of a direct-I/O
/// file is refused by the kernel (ENODEV) unless the server negotiates FUSE_DIRECT_IO_ALLOW_MMAP (protocol 7.39);
/// virtiofsd behaves the same without its mmap option, so the mmap case is checked on its own.
/// </summary>
[Trait("Category", "Root")]
public sealed class UncachedDifferentialTests(UncachedDifferentialShare fixture) : DifferentialCases(fixture), IClassFixture<UncachedDifferentialShare>
{
    public static TheoryData<string, int> Cases() => CasesExcept("mmap");

    [Theory]
    [MemberData(nameof(Cases))]
    public void CaseMatchesLocalDirectory(string caseName, int uid) => Compare(caseName, uid);

    [Fact]
    public void SharedWritableMmapIsRefusedWithENODEV()
    {
        var (_, mount) = Fixture.Results(0);
        var first = mount["mmap"][0];
        Assert.Equal("exception", first[0].GetString());
        Assert.Contains("Errno 19", first[1].GetString());
    }
}
