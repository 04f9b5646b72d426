using System.CommandLine;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Protocol.Tests.Share;

/// <summary>
/// The one settings model in each vocabulary: a setting read from a command line, written as arguments for the next
/// process and read there again arrives unchanged, and every word has one meaning wherever it is written.
/// </summary>
public class ShareVocabularyTests
{
    private static ShareSettings Read(bool device, params string[] args)
    {
        var cli = new ShareCommandLine(device);
        var root = new RootCommand();
        cli.AddTo(root);
        var settings = ShareVocabulary.Defaults();
        Assert.True(cli.TryRead(root.Parse(args), settings, new List<string>(), out var error), error);
        return settings;
    }

    [Fact]
    public void EverySettingSurvivesTheTripFromOneProcessToTheNext()
    {
        var given = Read(false, "--shared-dir", "/srv/a", "--tag", "t1", "--cache", "always", "--direct-io", "--allow-direct-io",
            "--xattr", "--readonly", "--writeback", "--thread-pool-size", "3", "--fd-cache-size", "100", "--log-level", "debug",
            "--allow", "x", "--allow", "y/z", "--control-socket", "/run/c.sock", "--queue-cpus", "1,0",
            "--sandbox", "chroot", "--seccomp", "log", "--modcaps", "+sys_admin:-mknod", "--rlimit-nofile", "4096",
            "--translate-uid", "map:1000:2000:10", "--translate-uid", "forbid-guest:5:1", "--translate-gid", "squash-host:0:7:100",
            "--uid-map", ":0:1000:1:", "--gid-map", "/0/100000/65536/",
            "--xattrmap", ":map::user.virtiofs.:", "--posix-acl", "--security-label",
            "--no-announce-submounts", "--inode-file-handles", "mandatory", "--preserve-noatime", "--no-readdirplus", "--no-killpriv-v2",
            "--allow-mmap");
        var passed = ShareVocabulary.ToArguments(given);
        Assert.Equal(given, Read(false, [.. passed]));
        // Each share option is written (a flag that is on by default as its negation); none is lost on the way.
        foreach (var option in ShareVocabulary.Options.Where(o => o.Scope == OptionScope.Share))
            Assert.True(passed.Contains(option.Name) || (option.Negation is { } off && passed.Contains(off)), $"{option.Name} was not passed on");
    }

    [Fact]
    public void DefaultsAreNotWritten()
    {
        var settings = ShareVocabulary.Defaults();
        settings.SharedDir = "/s";
        Assert.Equal(["--shared-dir", "/s"], ShareVocabulary.ToArguments(settings));
    }

    [Fact]
    public void OItemsAreLaidOverTheOptions_LaterItemsWin()
    {
        var settings = Read(false, "--xattr", "--cache", "auto", "-o", "no_xattr,cache=none,source=/a", "-o", "writeback,no_writeback,readonly");
        Assert.False(settings.Xattr);
        Assert.Equal(CachePolicy.Never, settings.Cache);
        Assert.Equal("/a", settings.SharedDir);
        Assert.False(settings.Writeback);
        Assert.True(settings.Readonly);
    }

    [Theory]
    [InlineData("warning", Verbosity.Warn)]
    [InlineData("warn", Verbosity.Warn)]
    [InlineData("err", Verbosity.Error)]
    [InlineData("off", Verbosity.Off)]
    public void ALogLevelMeansTheSameOnTheCommandLine_InOItems_AndInAConfigurationFile(string word, Verbosity expected)
    {
        Assert.Equal(expected, Read(false, "--log-level", word).LogLevel);
        Assert.Equal(expected, Read(false, "-o", "log_level=" + word).LogLevel);
        var fromFile = ShareVocabulary.Defaults();
        Assert.Null(ShareVocabulary.ByConfigKey("log_level")!.Read(fromFile, word));
        Assert.Equal(expected, fromFile.LogLevel);
    }

    [Fact]
    public void DeviceOptionsAreTheVdevsOnly()
    {
        var cli = new ShareCommandLine(withDevice: false);
        var root = new RootCommand();
        cli.AddTo(root);
        Assert.NotEmpty(root.Parse(["--socket-path", "/s"]).Errors);
        Assert.Equal("/s", Read(true, "--socket-path", "/s").SocketPath);
    }

    [Fact]
    public void OItemsWithoutMeaningHereAreReported_UnknownOnesRefused()
    {
        var ignored = new List<string>();
        var settings = ShareVocabulary.Defaults();
        Assert.True(ShareVocabulary.TryApplyCompat(settings, "flock,xattr", ignored, out _));
        Assert.Equal(["flock"], ignored);
        Assert.False(ShareVocabulary.TryApplyCompat(settings, "xattr=1", ignored, out var error));
        Assert.Equal("-o xattr=1 takes no value.", error);
        Assert.False(ShareVocabulary.TryApplyCompat(settings, "cache=", ignored, out error));
        Assert.Equal("-o cache= needs a value, as in -o key=VALUE.", error);
    }

    [Fact]
    public void EveryConfigurationKeyAndCommandLineNameIsUnique()
    {
        var names = ShareVocabulary.Options.Select(o => o.Name).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        var keys = ShareVocabulary.Options.SelectMany(o => o.ConfigKeys).ToList();
        Assert.Equal(keys.Count, keys.Distinct().Count());
        foreach (var option in ShareVocabulary.Options.Where(o => o.ConfigKeys.Count > 0)) Assert.Same(option, ShareVocabulary.ByConfigKey(option.ConfigKeys[0]));
    }

    [Theory]
    [InlineData(":0:1000:1:", 0u, 1000u, 1u)]
    [InlineData("/0/100000/65536/", 0u, 100000u, 65536u)]
    [InlineData("x0x4294967295x1x", 0u, 4294967295u, 1u)]
    public void AnIdMapIsVirtiofsdsForm_TheFirstCharacterSeparatesTheFields(string text, uint inside, uint outside, uint count)
    {
        Assert.True(ShareVocabulary.TryParseNamespaceMap(text, out var map));
        Assert.Equal(new NamespaceIdRange(inside, outside, count), map);
    }

    [Theory]
    [InlineData("")]
    [InlineData("0:1000:1")]
    [InlineData(":0:1000:1")]
    [InlineData(":0:1000:0:")]
    [InlineData(":0:1000:1:2:")]
    [InlineData(":0;1000:1:")]
    [InlineData(":0:-1:1:")]
    [InlineData(":0:4294967295:2:")]
    [InlineData(":a:1000:1:")]
    public void AMalformedIdMapIsRefused(string text) => Assert.False(ShareVocabulary.TryParseNamespaceMap(text, out _));

    [Fact]
    public void AnIdMapThatLeavesRootUnmappedIsRefusedWithTheFix()
    {
        var cli = new ShareCommandLine(false);
        var root = new RootCommand();
        cli.AddTo(root);
        Assert.False(cli.TryRead(root.Parse(["--uid-map", ":1:1000:10:"]), ShareVocabulary.Defaults(), new List<string>(), out var error));
        Assert.Equal("--uid-map ':1:1000:10:' does not map uid 0 inside the namespace; the daemon runs as root there, so the map must start at 0 (e.g. :0:1000:10:).", error);
    }

    [Fact]
    public void IdMapsBelongToTheNamespaceSandboxOfAVdevThatIsNotRoot()
    {
        var settings = ShareVocabulary.Defaults();
        settings.GidMap = ":0:100:1:";
        Assert.Null(ShareVocabulary.NamespaceMapsProblem(settings, 1000));
        Assert.StartsWith("--gid-map describes the user namespace the sandbox makes when the vdev is not root", ShareVocabulary.NamespaceMapsProblem(settings, 0), StringComparison.Ordinal);
        settings.Sandbox = Sandbox.Chroot;
        Assert.StartsWith("--gid-map describes the user namespace of --sandbox namespace", ShareVocabulary.NamespaceMapsProblem(settings, 1000), StringComparison.Ordinal);
        Assert.Null(ShareVocabulary.NamespaceMapsProblem(ShareVocabulary.Defaults(), 0));
    }
}
