using Hypervisor.Protocol.Share;

namespace Hypervisor.Launcher.Tests;

public class LaunchSettingsTests
{
    [Theory]
    [InlineData(new int[0], 3)]
    [InlineData(new[] { 5, 6 }, 3)]
    [InlineData(new[] { 3, 4, 6 }, 5)]
    [InlineData(new[] { 3, 4, 5 }, 6)]
    public void ReadyFd_IsTheLowestNumberFromThreeNotInherited(int[] inherited, int expected)
    {
        var settings = new LaunchSettings { Share = new ShareSettings { SharedDir = "/s" }, Passthrough = "/p", InheritedFds = inherited };
        Assert.Equal(expected, settings.ReadyFdNumber());
    }

    [Fact]
    public void DaemonArguments_ForwardOnlyWhatWasGiven_AndRunADllThroughDotnet()
    {
        var share = ShareVocabulary.Defaults();
        share.SharedDir = "/s";
        share.ControlSocket = "/run/c.sock";
        var settings = new LaunchSettings { Share = share, Passthrough = "/p/passthrough.dll", DotnetHost = "/usr/bin/dotnet", Ring = "memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9" };
        Assert.Equal(
            new[] { "/usr/bin/dotnet", "/p/passthrough.dll", "--shared-dir", "/s", "--control-socket", "/run/c.sock", "--ring", "memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9", "--ready-fd", "3" },
            settings.DaemonArguments(3));
    }

    [Fact]
    public void ResultLine_IsCompactJson_WithNullControlWhenThereIsNone()
    {
        Assert.Equal("{\"pid\":42,\"control\":null,\"tag\":\"a\\\"b\"}", FuseLauncher.ResultLine(42, null, "a\"b"));
        Assert.Equal("{\"pid\":7,\"control\":\"/run/x.sock\",\"tag\":\"t\"}", FuseLauncher.ResultLine(7, "/run/x.sock", "t"));
    }

    [Theory]
    [InlineData("/run/dir with space/x.sock", "tag")]
    [InlineData("/run/\\back\\slash\"quote", "t\u00e9g\u65e5")]
    [InlineData("/run/ctl\n\r\t\b\f\u0001\u001f\u007f\u2028\u2029", "\ud83d\ude00")]
    public void ResultLine_IsJsonThatReadsBackAsTheSameValues_OnOneLine(string control, string tag)
    {
        var line = FuseLauncher.ResultLine(1234, control, tag);
        Assert.DoesNotContain('\n', line);
        Assert.DoesNotContain('\u2028', line);
        using var json = System.Text.Json.JsonDocument.Parse(line);
        Assert.Equal(1234, json.RootElement.GetProperty("pid").GetInt32());
        Assert.Equal(control, json.RootElement.GetProperty("control").GetString());
        Assert.Equal(tag, json.RootElement.GetProperty("tag").GetString());
    }

    [Fact]
    public void ResultLine_RefusesTextThatIsNotValidUtf16()
    {
        Assert.Throws<ArgumentException>(() => FuseLauncher.ResultLine(1, "/run/\ud800x", "t"));
    }
}
