using System.CommandLine;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Protocol.Tests.Share;

/// <summary>
/// virtiofsd's <c>--translate-uid</c> / <c>--translate-gid</c> rules: every form, what bad input is told, the overlap
/// rule (source ranges of one direction must not meet), and the mapping each way with identity outside every rule.
/// </summary>
public class IdMapTests
{
    private static IdMap Map(params string[] rules)
    {
        Assert.True(IdMap.TryCreate(rules, out var map, out var why, out var rule), $"{rule} {why}");
        return map;
    }

    private static string Refused(params string[] rules)
    {
        Assert.False(IdMap.TryCreate(rules, out _, out var why, out var rule));
        var sentence = $"'{rule}' {why}";
        // One sentence: a single full stop, at the end.
        Assert.EndsWith(".", sentence);
        Assert.DoesNotContain(". ", sentence.TrimEnd('.'));
        return sentence;
    }

    private static uint Host(IdMap map, uint guest)
    {
        Assert.True(map.TryToHost(guest, out var host), $"guest id {guest} is forbidden");
        return host;
    }

    [Theory]
    [InlineData("guest:1000:2000:10", IdRuleKind.Guest, 1000u, 2000u, 10u)]
    [InlineData("host:2000:1000:10", IdRuleKind.Host, 2000u, 1000u, 10u)]
    [InlineData("squash-guest:0:3000:4294967295", IdRuleKind.SquashGuest, 0u, 3000u, 4294967295u)]
    [InlineData("squash-host:100:7:5", IdRuleKind.SquashHost, 100u, 7u, 5u)]
    [InlineData("forbid-guest:500:3", IdRuleKind.ForbidGuest, 500u, 0u, 3u)]
    [InlineData("map:1000:2000:10", IdRuleKind.Map, 1000u, 2000u, 10u)]
    [InlineData("map/1000/2000/10", IdRuleKind.Map, 1000u, 2000u, 10u)] // virtiofsd takes any one separator that is not part of a word
    public void EveryFormParses_AndIsWrittenBackWithColons(string text, IdRuleKind kind, uint from, uint to, uint count)
    {
        Assert.True(IdRule.TryParse(text, out var rule, out var why), why);
        Assert.Equal(new IdRule(kind, from, to, count), rule);
        Assert.Equal(text.Replace('/', ':'), rule.ToString());
    }

    [Theory]
    [InlineData("bogus:1:2:3", "is not a translation rule")]
    [InlineData("", "is not a translation rule")]
    [InlineData("map:1:2", "has 2 numbers after 'map', which takes 3")]
    [InlineData("map", "has 0 numbers after 'map', which takes 3")]
    [InlineData("forbid-guest:1:2:3", "has 3 numbers after 'forbid-guest', which takes 2")]
    [InlineData("map:1:2/3", "has 2 numbers after 'map', which takes 3")]
    [InlineData("guest:1:x:3", "has 'x' where an id from 0 to 4294967295 belongs")]
    [InlineData("guest:-1:2:3", "has '-1' where an id")]
    [InlineData("guest:1:2:4294967296", "has '4294967296' where an id")]
    [InlineData("guest:1:2:0", "covers no id")]
    [InlineData("guest:1:2:4294967295", "runs past the last id")]
    [InlineData("forbid-guest:4294967295:1", "runs past the last id")]
    [InlineData("map:0:4294967290:10", "maps onto ids past the last one")]
    public void BadRulesAreToldInOneSentence(string text, string expected)
    {
        Assert.Contains(expected, Refused(text));
    }

    [Fact]
    public void OverlappingSourceRangesOfOneDirectionAreRefused_NamingTheRuleAlreadyThere()
    {
        var sentence = Refused("guest:1000:2000:10", "squash-guest:1009:0:5");
        Assert.Contains("'squash-guest:1009:0:5' maps guest ids 1009 to 1009 that 'guest:1000:2000:10' maps already", sentence);
        Assert.Contains("host ids 2005 to 2009", Refused("map:1000:2000:10", "host:2005:0:100"));
        Assert.Contains("guest ids 5 to 5", Refused("forbid-guest:0:10", "map:5:6:1"));
    }

    [Fact]
    public void RangesOfDifferentDirectionsNeverConflict()
    {
        // guest ids 0.. to host, host ids 0.. to guest: the two directions are independent, as in virtiofsd.
        var map = Map("squash-guest:0:3000:65536", "squash-host:0:0:65536", "guest:65536:65536:1");
        Assert.Equal(3000u, Host(map, 1000));
        Assert.Equal(65536u, Host(map, 65536));
        Assert.Equal(0u, map.ToGuest(3000));
    }

    [Fact]
    public void MapIsBothDirections_GuestAndHostOneEach()
    {
        var map = Map("map:1000:2000:10", "guest:5000:6000:2", "host:7000:8000:2");
        Assert.Equal(2000u, Host(map, 1000));
        Assert.Equal(2009u, Host(map, 1009));
        Assert.Equal(1000u, map.ToGuest(2000));
        Assert.Equal(1009u, map.ToGuest(2009));
        // guest: only guest to host; host: only host to guest
        Assert.Equal(6001u, Host(map, 5001));
        Assert.Equal(6001u, map.ToGuest(6001));
        Assert.Equal(8001u, map.ToGuest(7001));
        Assert.Equal(7001u, Host(map, 7001));
    }

    [Fact]
    public void AnIdNoRuleCoversIsItself_OnBothSides()
    {
        var map = Map("map:1000:2000:10", "squash-host:5000:1:10");
        foreach (var id in new uint[] { 0, 999, 1010, 1999, 2010, 4999, 5010, uint.MaxValue })
        {
            Assert.Equal(id, Host(map, id));
            if (id is not (>= 2000 and < 2010)) Assert.Equal(id, map.ToGuest(id));
        }
        Assert.True(IdMap.Identity.IsIdentity);
        Assert.True(Map().IsIdentity);
        Assert.Equal(42u, Host(IdMap.Identity, 42));
    }

    [Fact]
    public void SquashMapsAWholeRangeToOneId()
    {
        var map = Map("squash-guest:0:3000:1000", "squash-host:100:65534:50");
        Assert.Equal(3000u, Host(map, 0));
        Assert.Equal(3000u, Host(map, 999));
        Assert.Equal(1000u, Host(map, 1000));
        Assert.Equal(65534u, map.ToGuest(100));
        Assert.Equal(65534u, map.ToGuest(149));
        Assert.Equal(150u, map.ToGuest(150));
    }

    [Fact]
    public void AForbiddenGuestIdHasNoHostId_ItsNeighboursKeepTheirs()
    {
        var map = Map("forbid-guest:500:3", "map:1000:2000:10");
        Assert.False(map.TryToHost(500, out _));
        Assert.False(map.TryToHost(502, out _));
        Assert.Equal(499u, Host(map, 499));
        Assert.Equal(503u, Host(map, 503));
        // Host ids are never forbidden: a host file owned by 500 shows as 500.
        Assert.Equal(500u, map.ToGuest(500));
    }

    [Fact]
    public void ManyRulesAreFoundByTheirRange()
    {
        var rules = Enumerable.Range(0, 200).Select(i => $"map:{i * 100}:{1_000_000 + i * 100}:50").Reverse().ToArray();
        var map = Map(rules);
        for (uint i = 0; i < 200; i++)
        {
            Assert.Equal(1_000_000 + i * 100 + 49, Host(map, i * 100 + 49));
            Assert.Equal(i * 100 + 50, Host(map, i * 100 + 50));
            Assert.Equal(i * 100 + 7, map.ToGuest(1_000_000 + i * 100 + 7));
        }
    }

    [Fact]
    public void TheCommandLineAndTheConfigurationKeyTakeRepeatedRules_AndRefuseAnOverlapWithTheOptionNamed()
    {
        var cli = new ShareCommandLine(false);
        var root = new RootCommand();
        cli.AddTo(root);
        var settings = ShareVocabulary.Defaults();
        Assert.True(cli.TryRead(root.Parse(["--translate-uid", "map:1000:2000:10", "--translate-uid", "squash-guest:0:3000:1",
            "--translate-gid", "forbid-guest:7:1"]), settings, new List<string>(), out var error), error);
        Assert.Equal(["map:1000:2000:10", "squash-guest:0:3000:1"], settings.TranslateUid);
        Assert.Equal(["forbid-guest:7:1"], settings.TranslateGid);

        settings = ShareVocabulary.Defaults();
        Assert.False(cli.TryRead(root.Parse(["--translate-gid", "map:0:100:10", "--translate-gid", "guest:5:0:1"]), settings, new List<string>(), out error));
        Assert.Equal("--translate-gid 'guest:5:0:1' maps guest ids 5 to 5 that 'map:0:100:10' maps already; the guest ranges of two rules must not overlap.", error);

        var option = ShareVocabulary.ByConfigKey("translate_uid");
        Assert.NotNull(option);
        Assert.True(option.Repeatable);
        Assert.Equal("--translate-uid", option.Name);
        Assert.Equal("translate_gid", ShareVocabulary.ByConfigKey("translate_gid")?.ConfigKeys[0]);
    }
}
