using System.Text;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Protocol.Tests.Share;

/// <summary>
/// virtiofsd's xattr mapping language: the examples of its documentation (Rust virtiofsd's doc/xattr-mapping.md, QEMU's
/// docs/tools/virtiofsd.rst) behave as documented, the map shorthand expands as documented, and bad maps are refused
/// with a sentence naming the rule and the problem.
/// </summary>
public class XattrMapTests
{
    private static XattrMap Parse(string text)
    {
        Assert.True(XattrMap.TryParse(text, out var map, out var error), error);
        return map;
    }

    /// <summary>The host name for a guest name, or the errno name.</summary>
    private static string Client(XattrMap map, string name)
    {
        Span<byte> buffer = stackalloc byte[XattrMap.NameMax];
        var e = map.MapClient(Encoding.UTF8.GetBytes(name), buffer, out var length);
        return e.IsError ? e.Name : Encoding.UTF8.GetString(buffer[..length]);
    }

    /// <summary>The guest name for a host name, or "hidden".</summary>
    private static string Server(XattrMap map, string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        return map.TryMapServer(bytes, out var start) ? Encoding.UTF8.GetString(bytes.AsSpan(start)) : "hidden";
    }

    [Fact]
    public void PrefixClient_PrefixesMatchingClientNames_AndLeavesServerNamesUnmatched()
    {
        var map = Parse(":prefix:client:trusted.:user.virtiofs.:");
        Assert.Equal("user.virtiofs.trusted.x", Client(map, "trusted.x"));
        Assert.Equal("EPERM", Client(map, "user.x")); // no rule matches: refused
        Assert.Equal("hidden", Server(map, "user.virtiofs.trusted.x")); // client scope only
    }

    [Fact]
    public void PrefixServer_StripsThePrefixFromEveryServerName()
    {
        var map = Parse(":prefix:server::user.virtiofs.:");
        Assert.Equal("trusted.x", Server(map, "user.virtiofs.trusted.x"));
        Assert.Equal("hidden", Server(map, "user.other"));
    }

    [Fact]
    public void PrefixAll_CombinesBoth()
    {
        var map = Parse(":prefix:all:trusted.:user.virtiofs.:");
        Assert.Equal("user.virtiofs.trusted.x", Client(map, "trusted.x"));
        Assert.Equal("trusted.x", Server(map, "user.virtiofs.trusted.x"));
    }

    [Fact]
    public void OkAndBad_PassOrRefuseAndHide()
    {
        var ok = Parse(":ok:client:user.:: :bad:all:::");
        Assert.Equal("user.a", Client(ok, "user.a"));
        Assert.Equal("EPERM", Client(ok, "security.a"));
        var okServer = Parse(":ok:server::security.: :bad:all:::");
        Assert.Equal("security.selinux", Server(okServer, "security.selinux"));
        Assert.Equal("hidden", Server(okServer, "user.a"));
        var all = Parse(":ok:all:::");
        Assert.Equal("anything.at.all", Client(all, "anything.at.all"));
        Assert.Equal("anything.at.all", Server(all, "anything.at.all"));
        var badServer = Parse(":bad:server::security.: :ok:all:::");
        Assert.Equal("hidden", Server(badServer, "security.selinux"));
        Assert.Equal("user.a", Server(badServer, "user.a"));
        Assert.Equal("security.selinux", Client(badServer, "security.selinux")); // server scope only
    }

    [Fact]
    public void Unsupported_RefusesWithEopnotsupp_AndHides()
    {
        var map = Parse(":unsupported:all:security.:security.: :ok:all:::");
        Assert.Equal("EOPNOTSUPP", Client(map, "security.capability"));
        Assert.Equal("hidden", Server(map, "security.capability"));
        Assert.Equal("user.a", Client(map, "user.a"));
    }

    [Fact]
    public void Example1_PrefixEverything_HidesUnprefixedHostNames_AndEqualsItsMapShorthand()
    {
        foreach (var text in new[] { ":prefix:all::user.virtiofs.::bad:all:::", ":map::user.virtiofs.:" })
        {
            var map = Parse(text);
            Assert.Equal("user.virtiofs.trusted.a", Client(map, "trusted.a"));
            Assert.Equal("user.virtiofs.user.b", Client(map, "user.b"));
            Assert.Equal("user.virtiofs.security.selinux", Client(map, "security.selinux"));
            Assert.Equal("trusted.a", Server(map, "user.virtiofs.trusted.a"));
            Assert.Equal("hidden", Server(map, "user.b"));
            Assert.Equal("hidden", Server(map, "security.selinux"));
        }
        Assert.Equal(Parse(":prefix:all::user.virtiofs.::bad:all:::").ToString(), Parse(":map::user.virtiofs.:").ToString());
    }

    [Fact]
    public void Example2_PrefixTrustedOnly_BlocksDirectUseOfTheTarget_AndEqualsItsMapShorthand()
    {
        const string rules = "/prefix/all/trusted./user.virtiofs./\n            /bad/server//trusted./\n            /bad/client/user.virtiofs.//\n            /ok/all///";
        foreach (var text in new[] { rules, "/map/trusted./user.virtiofs./" })
        {
            var map = Parse(text);
            Assert.Equal("user.virtiofs.trusted.a", Client(map, "trusted.a"));
            Assert.Equal("EPERM", Client(map, "user.virtiofs.sneaky"));
            Assert.Equal("user.other", Client(map, "user.other"));
            Assert.Equal("trusted.a", Server(map, "user.virtiofs.trusted.a"));
            Assert.Equal("hidden", Server(map, "trusted.hostonly"));
            Assert.Equal("user.other", Server(map, "user.other"));
        }
    }

    [Fact]
    public void Example3_HideSecurity_AllowEverythingElse()
    {
        var map = Parse("/bad/all/security./security./\n            /ok/all///");
        Assert.Equal("EPERM", Client(map, "security.selinux"));
        Assert.Equal("hidden", Server(map, "security.selinux"));
        Assert.Equal("user.a", Client(map, "user.a"));
        Assert.Equal("user.a", Server(map, "user.a"));
    }

    [Fact]
    public void EachRuleHasItsOwnSeparator_AndWhiteSpaceSeparatesRules()
    {
        var map = Parse("  :prefix:client:trusted.:user.virtiofs.:\t|ok|all|||\n");
        Assert.Equal(2, map.Rules.Count);
        Assert.Equal(new XattrRule(XattrRuleType.Ok, XattrScope.All, [], []).ToString(), map.Rules[1].ToString());
        var colonInName = Parse("/prefix/all/a:b./c:d./");
        Assert.Equal("c:d.a:b.x", Client(colonInName, "a:b.x"));
    }

    [Fact]
    public void MappedNameLongerThanXattrNameMax_IsERange()
    {
        var map = Parse(":map::user.virtiofs.:");
        Assert.Equal("ERANGE", Client(map, "user." + new string('n', 250)));
    }

    [Fact]
    public void ListReply_IsMapped_HiddenNamesDropped_SizeQueryMatches_TooSmallIsRefused()
    {
        var map = Parse(":map::user.virtiofs.:");
        var list = "user.virtiofs.trusted.a\0user.hostonly\0user.virtiofs.user.b\0security.selinux\0"u8;
        var size = map.MapServerList(list, default);
        var destination = new byte[size];
        Assert.Equal(size, map.MapServerList(list, destination));
        Assert.Equal("trusted.a\0user.b\0", Encoding.UTF8.GetString(destination));
        Assert.Equal(-1, map.MapServerList(list, new byte[size - 1]));
        Assert.Equal(0, map.MapServerList("user.hostonly\0"u8, default));
    }

    [Theory]
    [InlineData("", "has no rules")]
    [InlineData("   \n ", "has no rules")]
    [InlineData(":prefix:all:trusted.:user.vm.", "rule 1 is incomplete")]
    [InlineData(":prefix:everything::x:", "rule 1 has scope \"everything\"; use client, server or all.")]
    [InlineData(":ok:all::: :frob:all:::", "rule 2 has type \"frob\"; use prefix, ok, bad, unsupported or map.")]
    [InlineData(":map::user.virtiofs.: :ok:all:::", "rule 1 is a map rule, which must be the only map rule and the last rule.")]
    [InlineData(":map:user.:", "rule 1 (map) is incomplete")]
    [InlineData(":", "rule 1 ends before its type")]
    public void BadMaps_AreRefusedWithTheRuleAndTheProblem(string text, string expected)
    {
        Assert.False(XattrMap.TryParse(text, out var map, out var error));
        Assert.Null(map);
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Vocabulary_AcceptsTheMapOnEveryCommandLine_ImpliesXattr_AndRefusesABadOneInOneSentence()
    {
        var settings = ShareVocabulary.Defaults();
        var option = ShareVocabulary.Options.Single(o => o.Name == "--xattrmap");
        Assert.Null(option.Read(settings, ":map::user.virtiofs.:"));
        Assert.True(settings.Xattr);
        Assert.Equal(":map::user.virtiofs.:", settings.Xattrmap);
        Assert.Same(option, ShareVocabulary.ByConfigKey("xattrmap"));
        var args = ShareVocabulary.ToArguments(settings);
        Assert.Contains("--xattrmap", args);
        Assert.Contains(":map::user.virtiofs.:", args);

        var fresh = ShareVocabulary.Defaults();
        Assert.False(ShareVocabulary.TryApplyCompat(fresh, "xattrmap=:bad:nowhere:::", [], out var error));
        Assert.Equal("-o xattrmap=:bad:nowhere::: is not an xattr map: rule 1 has scope \"nowhere\"; use client, server or all.", error);
        Assert.True(ShareVocabulary.TryApplyCompat(fresh, "xattrmap=:ok:all:::,posix_acl,security_label", [], out error), error);
        Assert.True(fresh.PosixAcl && fresh.SecurityLabel && fresh.Xattr);
        Assert.True(ShareVocabulary.TryApplyCompat(fresh, "no_posix_acl,no_security_label", [], out error), error);
        Assert.False(fresh.PosixAcl || fresh.SecurityLabel);
    }

    [Fact]
    public void PosixAcl_ImpliesXattr_AsVirtiofsdDoes()
    {
        var settings = ShareVocabulary.Defaults();
        Assert.Null(ShareVocabulary.ByConfigKey("posix_acl")!.Read(settings, "true"));
        Assert.True(settings.PosixAcl);
        Assert.True(settings.Xattr);
        Assert.Null(ShareVocabulary.ByConfigKey("security_label")!.Read(settings, "true"));
        Assert.Equal(["--xattr", "--posix-acl", "--security-label"], ShareVocabulary.ToArguments(settings));
    }
}
