using Hypervisor.Protocol.Share;
using System.Diagnostics;
using Hypervisor.Passthrough.Tests.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Control.Health;
using Hypervisor.Protocol.Grpc;
using Hypervisor.Vdev.Control;

namespace Hypervisor.Vdev.Tests.Control;

public sealed class ShareControlClientTests
{
    [Fact]
    public async Task EveryRpc_RoundTripsThroughTheServer()
    {
        await using var server = await ControlTestServer.StartAsync();
        using var client = new ShareControlClient(server.SocketPath, TimeSpan.FromSeconds(10));

        ShareStatus status = await client.GetStatusAsync();
        Assert.Equal("/srv/share", status.SharedDir);
        Assert.Equal(["LOOKUP", "READ", "INIT"], status.Opcodes.Select(o => o.Name));

        Assert.True((await client.SetDirectIoAsync(true)).DirectIo);
        Assert.True(server.Share.Options.DirectIo);
        Assert.Equal(CachePolicy.Never, (await client.SetCachePolicyAsync(CachePolicy.Never)).CachePolicy);
        Assert.Equal(CachePolicy.Never, server.Share.Options.CachePolicy);

        Assert.Equal(["a/b"], (await client.AddAllowedPathAsync("a//b/")).Entries);
        Assert.True((await client.SetAllowlistEnabledAsync(true)).Enabled);
        Allowlist list = await client.ListAllowedPathsAsync();
        Assert.True(list.Enabled);
        Assert.Equal(["a/b"], list.Entries);
        Assert.Empty((await client.RemoveAllowedPathAsync("a/b")).Entries);

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, await client.CheckHealthAsync());
        await client.ShutdownAsync();
        Assert.Equal(1, server.Share.ShutdownCalls);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, await client.CheckHealthAsync());
    }

    [Fact]
    public async Task ServerErrors_SurfaceAsGrpcExceptionWithCodeAndMessage()
    {
        await using var server = await ControlTestServer.StartAsync();
        using var client = new ShareControlClient(server.SocketPath);

        var invalid = await Assert.ThrowsAsync<GrpcException>(() => client.AddAllowedPathAsync("/etc"));
        Assert.Equal(GrpcStatusCode.InvalidArgument, invalid.StatusCode);
        Assert.Contains("absolute", invalid.Detail);

        var notFound = await Assert.ThrowsAsync<GrpcException>(() => client.RemoveAllowedPathAsync("nope"));
        Assert.Equal(GrpcStatusCode.NotFound, notFound.StatusCode);

        var unimplemented = await Assert.ThrowsAsync<GrpcException>(
            () => client.CallUnaryAsync("hypervisor.control.v1.ShareControl", "Reboot", new GetStatusRequest(), ShareStatus.Parser));
        Assert.Equal(GrpcStatusCode.Unimplemented, unimplemented.StatusCode);

        var unknownService = await Assert.ThrowsAsync<GrpcException>(() => client.CheckHealthAsync("other.Service"));
        Assert.Equal(GrpcStatusCode.NotFound, unknownService.StatusCode);
    }

    [Fact]
    public async Task Deadline_IsReportedAsDeadlineExceeded()
    {
        var share = new InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await ControlTestServer.StartAsync(share);
        using var client = new ShareControlClient(server.SocketPath);
        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<GrpcException>(() => client.GetStatusAsync(TimeSpan.FromMilliseconds(300)));
        Assert.Equal(GrpcStatusCode.DeadlineExceeded, e.StatusCode);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5));
        // The server saw the deadline too: the operation's token was cancelled.
        for (int i = 0; i < 50 && !share.SawCancellation; i++)
            await Task.Delay(20);
        Assert.True(share.SawCancellation);
    }

    [Fact]
    public async Task MissingSocket_IsUnavailableWithAClearSentence()
    {
        string directory = ControlTestServer.NewDirectory();
        using var client = new ShareControlClient(Path.Combine(directory, "absent.sock"));
        var e = await Assert.ThrowsAsync<GrpcException>(() => client.GetStatusAsync());
        Assert.Equal(GrpcStatusCode.Unavailable, e.StatusCode);
        Assert.Contains("does not exist", e.Detail);
        Directory.Delete(directory);
    }

    [Fact]
    public async Task SocketNobodyListensOn_IsUnavailableWithAClearSentence()
    {
        string directory = ControlTestServer.NewDirectory();
        string path = Path.Combine(directory, "stale.sock");
        using (Process bind = Process.Start("/usr/bin/python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path]))
            await bind.WaitForExitAsync();
        using var client = new ShareControlClient(path);
        var e = await Assert.ThrowsAsync<GrpcException>(() => client.GetStatusAsync());
        Assert.Equal(GrpcStatusCode.Unavailable, e.StatusCode);
        Assert.Contains("Nothing is listening", e.Detail);
        Directory.Delete(directory, recursive: true);
    }
}
