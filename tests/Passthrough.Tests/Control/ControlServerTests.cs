using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// The control service (<see cref="ControlServer"/>) over its real UNIX socket, called with a
/// standard gRPC client (Grpc.Net.Client and the generated client), against an in-memory
/// <see cref="IShareControl"/>: what an operator's call does to the share and which status code
/// and message it gets back.
/// </summary>
public sealed class ControlServerTests
{
    [Fact]
    public async Task GetStatus_ReturnsTheSnapshotWithOpcodesSorted()
    {
        await using var server = await RunningControlServer.StartAsync();
        ShareStatus status = await server.Control.GetStatusAsync(new GetStatusRequest());

        Assert.Equal("/srv/share", status.SharedDir);
        Assert.Equal("share0", status.Tag);
        Assert.Equal(CachePolicy.Auto, status.Options.CachePolicy);
        Assert.True(status.Options.Xattr);
        Assert.Equal(TimeSpan.FromSeconds(3723.5), status.Uptime.ToTimeSpan());
        Assert.Equal([1u, 15u, 26u], status.Opcodes.Select(o => o.Opcode));
        Assert.Equal(("LOOKUP", 120ul, 7ul), (status.Opcodes[0].Name, status.Opcodes[0].Requests, status.Opcodes[0].Errors));
        Assert.Equal(3ul, status.OpenFileHandles);
        Assert.Equal(42ul, status.KnownNodes);
        Assert.Equal(1_048_576ul, status.BytesRead);
        Assert.Equal(4096ul, status.BytesWritten);
        Assert.Equal([1, -1], status.QueueCpus);
    }

    [Fact]
    public async Task GetStatus_OfTheDaemon_ShowsEachSettingsChangeInTheNextReply()
    {
        // The daemon's status reuses its settings parts between changes; every change made over gRPC must show in
        // the very next GetStatus, on the same connection, with nothing in between.
        string directory = RunningControlServer.CreateTempDirectory();
        try
        {
            var settings = new Hypervisor.Passthrough.Share.LiveSettings(new ShareSettings { SharedDir = "/srv/data", Tag = "data" });
            var share = new DaemonShareControl(settings, new Hypervisor.Passthrough.Engine.FuseCounters(), () => default, () => { });
            await using ControlServer server = await ControlServer.StartAsync(Path.Combine(directory, "control.sock"), share,
                new ControlServerOptions { ShutdownTimeout = TimeSpan.FromSeconds(2) });
            using var channel = RunningControlServer.CreateChannel(server.SocketPath);
            var control = new ShareControl.ShareControlClient(channel);

            ShareStatus status = await control.GetStatusAsync(new GetStatusRequest());
            Assert.False(status.Settings.DirectIo);
            Assert.False(status.Options.DirectIo);
            for (int i = 0; i < 3; i++)
            {
                bool on = i % 2 == 0;
                await control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = on });
                status = await control.GetStatusAsync(new GetStatusRequest());
                Assert.Equal(on, status.Settings.DirectIo);
                Assert.Equal(on, status.Options.DirectIo);
            }

            await control.SetCachePolicyAsync(new SetCachePolicyRequest { Policy = CachePolicy.Never });
            status = await control.GetStatusAsync(new GetStatusRequest());
            Assert.Equal(CachePolicy.Never, status.Settings.Cache);
            Assert.Equal(CachePolicy.Never, status.Options.CachePolicy);

            await control.AddAllowedPathAsync(new AllowedPathRequest { Path = "docs" });
            status = await control.GetStatusAsync(new GetStatusRequest());
            Assert.Equal(["docs"], status.Settings.Allow);
            Assert.Equal(["docs"], status.Allowlist.Entries);
            Assert.False(status.Allowlist.Enabled);

            await control.SetAllowlistEnabledAsync(new SetAllowlistEnabledRequest { Enabled = true });
            status = await control.GetStatusAsync(new GetStatusRequest());
            Assert.True(status.Allowlist.Enabled);

            await control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "docs" });
            status = await control.GetStatusAsync(new GetStatusRequest());
            Assert.Empty(status.Settings.Allow);
            Assert.Empty(status.Allowlist.Entries);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task SetDirectIo_ReachesTheShareAndReturnsTheNewOptions()
    {
        await using var server = await RunningControlServer.StartAsync();
        ShareOptions on = await server.Control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = true });
        Assert.True(on.DirectIo);
        Assert.True(server.Share.Options.DirectIo);
        ShareOptions off = await server.Control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = false });
        Assert.False(off.DirectIo);
        Assert.False(server.Share.Options.DirectIo);
    }

    [Fact]
    public async Task SetCachePolicy_AcceptsTheFourPoliciesAndRejectsOthersAsInvalidArgument()
    {
        await using var server = await RunningControlServer.StartAsync();
        foreach (CachePolicy policy in new[] { CachePolicy.Never, CachePolicy.Metadata, CachePolicy.Always, CachePolicy.Auto })
        {
            ShareOptions options = await server.Control.SetCachePolicyAsync(new SetCachePolicyRequest { Policy = policy });
            Assert.Equal(policy, options.CachePolicy);
            Assert.Equal(policy, server.Share.Options.CachePolicy);
        }
        foreach (CachePolicy bad in new[] { CachePolicy.Unspecified, (CachePolicy)99 })
        {
            var e = await Assert.ThrowsAsync<RpcException>(
                async () => await server.Control.SetCachePolicyAsync(new SetCachePolicyRequest { Policy = bad }));
            Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
            Assert.Contains("never", e.Status.Detail);
        }
        Assert.Equal(CachePolicy.Auto, server.Share.Options.CachePolicy);
    }

    [Fact]
    public async Task Allowlist_PathsAreNormalisedListedAndRemoved()
    {
        await using var server = await RunningControlServer.StartAsync();
        Allowlist list = await server.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = "docs//reports/./2024/" });
        Assert.Equal(["docs/reports/2024"], list.Entries);
        list = await server.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = "src/../bin" });
        Assert.Equal(["bin", "docs/reports/2024"], list.Entries);
        Assert.False(list.Enabled);

        list = await server.Control.SetAllowlistEnabledAsync(new SetAllowlistEnabledRequest { Enabled = true });
        Assert.True(list.Enabled);
        list = await server.Control.ListAllowedPathsAsync(new ListAllowedPathsRequest());
        Assert.True(list.Enabled);
        Assert.Equal(["bin", "docs/reports/2024"], list.Entries);

        list = await server.Control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "./bin" });
        Assert.Equal(["docs/reports/2024"], list.Entries);

        var missing = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "bin" }));
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        Assert.Contains("\"bin\" is not in the allowlist", missing.Status.Detail);
    }

    [Theory]
    [InlineData("/etc/passwd", "absolute")]
    [InlineData("..", "leaves the share")]
    [InlineData("a/../../etc", "leaves the share")]
    [InlineData("", "empty")]
    [InlineData("./.", "share root itself")]
    public async Task Allowlist_BadPathsAreInvalidArgumentAndChangeNothing(string path, string reason)
    {
        await using var server = await RunningControlServer.StartAsync();
        var e = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = path }));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(reason, e.Status.Detail);
        Assert.Empty((await server.Control.ListAllowedPathsAsync(new ListAllowedPathsRequest())).Entries);
    }

    [Fact]
    public async Task StatusMessage_WithNonAsciiAndPercentSigns_ReachesTheClientIntact()
    {
        await using var server = await RunningControlServer.StartAsync();
        var e = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "café 100%" }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Contains("\"café 100%\" is not in the allowlist", e.Status.Detail);
    }

    [Theory]
    [InlineData("hypervisor.control.v1.ShareControl", "Frobnicate")]
    [InlineData("no.such.Service", "GetStatus")]
    public async Task UnknownMethodOrService_IsUnimplemented(string service, string method)
    {
        await using var server = await RunningControlServer.StartAsync();
        var e = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Channel.CreateCallInvoker().AsyncUnaryCall(RawMethod(service, method), null, default, new GetStatusRequest()));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
    }

    [Fact]
    public async Task OversizedMessage_IsResourceExhaustedAndChangesNothing()
    {
        await using var server = await RunningControlServer.StartAsync(options: new ControlServerOptions { MaxReceiveMessageSize = 64 });
        var e = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = new string('a', 100) }));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.Empty((await server.Control.ListAllowedPathsAsync(new ListAllowedPathsRequest())).Entries);
    }

    [Fact]
    public async Task Deadline_SlowOperationIsDeadlineExceededAndItsTokenIsCancelled()
    {
        var share = new InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await RunningControlServer.StartAsync(share);
        var e = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Control.GetStatusAsync(new GetStatusRequest(), deadline: DateTime.UtcNow.AddMilliseconds(200)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        // The server cancels the operation's token at the same deadline; allow it a moment to be observed.
        for (int i = 0; i < 100 && !share.SawCancellation; i++)
            await Task.Delay(10);
        Assert.True(share.SawCancellation);
    }

    [Fact]
    public async Task Deadline_TheServerAnswersAtTheDeadlineEvenWhenTheOperationIgnoresItsToken()
    {
        // A client that leaves the deadline to the server (grpc-timeout only, no timer of its own)
        // still gets DEADLINE_EXCEEDED; the operation would take far longer than the client waits.
        var share = new InMemoryShareControl { GetStatusDelayIgnoringToken = TimeSpan.FromSeconds(60) };
        await using var server = await RunningControlServer.StartAsync(share);
        using var http = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream,
                    System.Net.Sockets.ProtocolType.Unspecified);
                await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(server.SocketPath), ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        }) { Timeout = TimeSpan.FromSeconds(30) };
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://localhost/hypervisor.control.v1.ShareControl/GetStatus")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            // One length-prefixed message: uncompressed, zero bytes (an empty GetStatusRequest).
            Content = new ByteArrayContent([0, 0, 0, 0, 0]),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Headers.TryAddWithoutValidation("grpc-timeout", "300m");
        using HttpResponseMessage response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        string? status = response.TrailingHeaders.TryGetValues("grpc-status", out var trailer) ? trailer.Single()
            : response.Headers.TryGetValues("grpc-status", out var header) ? header.Single() : null;
        Assert.Equal(((int)StatusCode.DeadlineExceeded).ToString(System.Globalization.CultureInfo.InvariantCulture), status);
    }

    [Fact]
    public async Task UnexpectedFailure_IsInternalLoggedOnceAndTheServerKeepsServing()
    {
        var log = new RecordingLoggerProvider();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Trace));
        var share = new InMemoryShareControl { GetStatusFailure = new InvalidOperationException("counter table torn") };
        await using var server = await RunningControlServer.StartAsync(share, loggerFactory: loggerFactory);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await server.Control.GetStatusAsync(new GetStatusRequest()));
        Assert.Equal(StatusCode.Internal, e.StatusCode);
        Assert.Contains("counter table torn", e.Status.Detail);

        share.GetStatusFailure = null;
        Assert.Equal("/srv/share", (await server.Control.GetStatusAsync(new GetStatusRequest())).SharedDir);

        // One line, at error level, with the method and the exception; the frameworks add none of their own above debug.
        RecordingLoggerProvider.Entry failure = Assert.Single(log.Entries, entry => entry.Level >= LogLevel.Warning);
        Assert.Equal(LogLevel.Error, failure.Level);
        Assert.Contains("/hypervisor.control.v1.ShareControl/GetStatus", failure.Message);
        Assert.Equal("counter table torn", failure.Exception?.Message);
    }

    [Fact]
    public async Task Health_IsServingUntilShutdownThenNotServing()
    {
        await using var server = await RunningControlServer.StartAsync();
        foreach (string service in new[] { "", "hypervisor.control.v1.ShareControl" })
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await server.Health.CheckAsync(new HealthCheckRequest { Service = service })).Status);
        var unknown = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Health.CheckAsync(new HealthCheckRequest { Service = "nope.Service" }));
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);

        await server.Control.ShutdownAsync(new ShutdownRequest());
        await server.Share.ShutdownCalled.WaitAsync(TimeSpan.FromSeconds(5));
        await server.Server.ShutdownRequested.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(server.Server.IsServing);
        foreach (string service in new[] { "", "hypervisor.control.v1.ShareControl" })
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await server.Health.CheckAsync(new HealthCheckRequest { Service = service })).Status);

        // A second Shutdown is answered but does not reach the daemon again; settings are refused, reading still works.
        await server.Control.ShutdownAsync(new ShutdownRequest());
        Assert.Equal(1, server.Share.ShutdownCalls);
        var refused = await Assert.ThrowsAsync<RpcException>(
            async () => await server.Control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = true }));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        Assert.False(server.Share.Options.DirectIo);
        Assert.Equal("/srv/share", (await server.Control.GetStatusAsync(new GetStatusRequest())).SharedDir);
    }

    [Fact]
    public async Task HealthWatch_StreamsServingThenNotServing_AndEndsWithOkWhenTheServerStops()
    {
        var server = await RunningControlServer.StartAsync();
        try
        {
            using AsyncServerStreamingCall<HealthCheckResponse> watch = server.Health.Watch(new HealthCheckRequest());
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            Assert.True(await watch.ResponseStream.MoveNext(timeout.Token));
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, watch.ResponseStream.Current.Status);

            server.Server.StopServing();
            Assert.True(await watch.ResponseStream.MoveNext(timeout.Token));
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, watch.ResponseStream.Current.Status);

            // Stopping the server ends the watch cleanly instead of holding the stop until its timeout.
            Task stopped = server.Server.DisposeAsync().AsTask();
            Assert.False(await watch.ResponseStream.MoveNext(timeout.Token));
            Assert.Equal(StatusCode.OK, watch.GetStatus().StatusCode);
            await stopped;
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    private static Method<GetStatusRequest, ShareStatus> RawMethod(string service, string method)
        => new(MethodType.Unary, service, method,
            Marshallers.Create<GetStatusRequest>(m => m.ToByteArray(), GetStatusRequest.Parser.ParseFrom),
            Marshallers.Create<ShareStatus>(m => m.ToByteArray(), ShareStatus.Parser.ParseFrom));
}
