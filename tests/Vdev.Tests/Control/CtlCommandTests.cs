using Hypervisor.Protocol.Share;
using System.Text.Json;
using Hypervisor.Protocol.Control;
using Hypervisor.Vdev.Control;

namespace Hypervisor.Vdev.Tests.Control;

public sealed class CtlCommandTests
{
    private static (int Exit, string Out, string Err) Ctl(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = CtlCommand.Run(args, stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Status_Text_ShowsSettingsCountersAndAllowlist()
    {
        await using var server = await ControlTestServer.StartAsync();
        await Task.Run(() => Ctl("--socket", server.SocketPath, "allow", "add", "docs/x"));
        var (exit, output, error) = await Task.Run(() => Ctl("--socket", server.SocketPath, "status"));
        Assert.Equal(0, exit);
        Assert.Equal("", error);
        Assert.Contains("Share          /srv/share (tag \"share0\")", output);
        Assert.Contains("Uptime         01:02:03", output);
        Assert.Contains("direct-io off, cache auto, read-write, xattr on, writeback off", output);
        Assert.Contains("Known nodes    42", output);
        Assert.Contains("Queue CPUs     q1 on 1, q2 unpinned", output);
        Assert.Contains("Bytes read     1048576 (1.0 MiB)", output);
        Assert.Contains("Allowlist disabled (entries kept, not enforced), 1 entry:", output);
        Assert.Contains("  docs/x", output);
        Assert.Matches(@"LOOKUP \(1\)\s+120\s+7", output);
        Assert.True(output.IndexOf("LOOKUP", StringComparison.Ordinal) < output.IndexOf("READ (15)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Status_Json_IsMachineReadable()
    {
        await using var server = await ControlTestServer.StartAsync();
        var (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "--json", "status"));
        Assert.Equal(0, exit);
        using JsonDocument doc = JsonDocument.Parse(output);
        JsonElement root = doc.RootElement;
        Assert.Equal("/srv/share", root.GetProperty("shared_dir").GetString());
        Assert.Equal("share0", root.GetProperty("tag").GetString());
        Assert.Equal(3723.5, root.GetProperty("uptime_seconds").GetDouble());
        Assert.Equal("auto", root.GetProperty("options").GetProperty("cache").GetString());
        Assert.False(root.GetProperty("options").GetProperty("direct_io").GetBoolean());
        Assert.Equal(42ul, root.GetProperty("known_nodes").GetUInt64());
        Assert.Equal([1, -1], root.GetProperty("queue_cpus").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(1_048_576ul, root.GetProperty("bytes_read").GetUInt64());
        Assert.False(root.GetProperty("allowlist").GetProperty("enabled").GetBoolean());
        JsonElement lookup = root.GetProperty("opcodes")[0];
        Assert.Equal(("LOOKUP", 1u, 120ul, 7ul),
            (lookup.GetProperty("name").GetString(), lookup.GetProperty("opcode").GetUInt32(),
             lookup.GetProperty("requests").GetUInt64(), lookup.GetProperty("errors").GetUInt64()));
    }

    [Fact]
    public async Task Setters_ChangeTheShareAndPrintTheNewState()
    {
        await using var server = await ControlTestServer.StartAsync();
        var (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "direct-io", "on"));
        Assert.Equal(0, exit);
        Assert.Contains("direct-io on", output);
        Assert.True(server.Share.Options.DirectIo);

        (exit, output, _) = await Task.Run(() => Ctl("--socket=" + server.SocketPath, "--json", "cache", "metadata"));
        Assert.Equal(0, exit);
        Assert.Equal("metadata", JsonDocument.Parse(output).RootElement.GetProperty("cache").GetString());
        Assert.Equal(CachePolicy.Metadata, server.Share.Options.CachePolicy);

        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "allow", "enable"));
        Assert.Equal(0, exit);
        Assert.Contains("Allowlist enabled, 0 entries.", output);

        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "--json", "allow", "add", "./src//lib"));
        Assert.Equal(0, exit);
        JsonElement list = JsonDocument.Parse(output).RootElement;
        Assert.True(list.GetProperty("enabled").GetBoolean());
        Assert.Equal("src/lib", list.GetProperty("entries")[0].GetString());

        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "allow", "list"));
        Assert.Equal(0, exit);
        Assert.Contains("Allowlist enabled, 1 entry:\n  src/lib", output.Replace("\r", ""));

        (exit, _, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "allow", "remove", "src/lib"));
        Assert.Equal(0, exit);
        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "allow", "disable"));
        Assert.Equal(0, exit);
        Assert.Contains("Allowlist disabled", output);
    }

    [Fact]
    public async Task HealthAndShutdown()
    {
        await using var server = await ControlTestServer.StartAsync();
        var (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "health"));
        Assert.Equal((0, "SERVING"), (exit, output.Trim()));
        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "--json", "shutdown"));
        Assert.Equal(0, exit);
        Assert.True(JsonDocument.Parse(output).RootElement.GetProperty("shutdown_requested").GetBoolean());
        Assert.Equal(1, server.Share.ShutdownCalls);
        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "--json", "health"));
        Assert.Equal(1, exit);
        Assert.Equal("NOT_SERVING", JsonDocument.Parse(output).RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task ServerError_IsOneSentenceAndExit1_JsonAlsoOnStdout()
    {
        await using var server = await ControlTestServer.StartAsync();
        var (exit, output, error) = await Task.Run(() => Ctl("--socket", server.SocketPath, "allow", "remove", "never/added"));
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.StartsWith("vdev ctl: NOT_FOUND: ", error);
        Assert.Single(error.TrimEnd().Split('\n'));

        (exit, output, _) = await Task.Run(() => Ctl("--socket", server.SocketPath, "--json", "allow", "remove", "never/added"));
        Assert.Equal(1, exit);
        JsonElement e = JsonDocument.Parse(output).RootElement.GetProperty("error");
        Assert.Equal("NOT_FOUND", e.GetProperty("code").GetString());
        Assert.Equal(5, e.GetProperty("code_number").GetInt32());
    }

    [Fact]
    public void MissingSocketFile_IsExit3WithASentence()
    {
        string directory = ControlTestServer.NewDirectory();
        var (exit, output, error) = Ctl("--socket", Path.Combine(directory, "gone.sock"), "status");
        Assert.Equal(3, exit);
        Assert.Equal("", output);
        Assert.Contains("does not exist", error);
        Assert.EndsWith(".", error.TrimEnd());
        Directory.Delete(directory);
    }

    [Fact]
    public async Task SlowService_IsExit3AfterTheTimeout()
    {
        var share = new Hypervisor.Passthrough.Tests.Control.InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await ControlTestServer.StartAsync(share);
        var (exit, _, error) = await Task.Run(() => Ctl("--socket", server.SocketPath, "--timeout", "0.3", "status"));
        Assert.Equal(3, exit);
        Assert.Contains("deadline", error);
        Assert.Contains("--timeout", error);
    }

    [Theory]
    [InlineData(new[] { "status" }, "Missing --socket")]
    [InlineData(new[] { "--socket", "/tmp/x.sock" }, "No command given")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "frobnicate" }, "Unknown command \"frobnicate\"")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "direct-io", "maybe" }, "direct-io needs on or off")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "cache", "sometimes" }, "cache needs one of never, metadata, auto, always")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "allow", "add" }, "needs exactly one PATH")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "allow", "add", "/etc" }, "is absolute")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "allow", "add", "../up" }, "leaves the share root")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "allow", "frob" }, "Unknown allow subcommand")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "status", "extra" }, "takes no arguments")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "--timeout", "soon", "status" }, "--timeout needs a number")]
    [InlineData(new[] { "--socket", "/tmp/x.sock", "--verbose", "status" }, "Unknown option \"--verbose\"")]
    [InlineData(new[] { "--socket" }, "--socket needs a path")]
    public void BadArguments_AreExit2WithOneSentence(string[] args, string expected)
    {
        var (exit, output, error) = Ctl(args);
        Assert.Equal(2, exit);
        Assert.Equal("", output);
        Assert.Contains(expected, error);
        Assert.Single(error.TrimEnd().Split('\n'));
        Assert.EndsWith(".", error.TrimEnd());
    }

    [Fact]
    public void Help_PrintsUsageAndExit0()
    {
        var (exit, output, _) = Ctl("--help");
        Assert.Equal(0, exit);
        foreach (var word in new[] { "--socket", "--json", "--timeout", "status", "direct-io", "cache", "allow", "health", "shutdown" })
            Assert.Contains(word, output);
    }
}
