using System.Diagnostics;
using Google.Protobuf;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Control.Health;
using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// Unit tests of the control service (<see cref="ControlServer"/>) over its real UNIX socket and
/// HTTP/2, against an in-memory <see cref="IShareControl"/>; each checks what a gRPC client sees
/// on the wire as grpc/grpc doc/PROTOCOL-HTTP2.md defines it.
/// </summary>
public sealed class ControlServerTests
{
    private const string Svc = "/hypervisor.control.v1.ShareControl/";

    [Fact]
    public async Task GetStatus_ReturnsTheSnapshotWithOpcodesSortedAndOkTrailers()
    {
        await using var server = await RunningControlServer.StartAsync();
        RawResponse response = await server.CallAsync(Svc + "GetStatus", new GetStatusRequest());

        Assert.Equal(200, response.HttpStatus);
        Assert.Equal("application/grpc", response.ContentType);
        Assert.False(response.IsTrailersOnly);
        Assert.Equal("0", response.Trailers["grpc-status"]);
        ShareStatus status = response.Single(ShareStatus.Parser);
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
    }

    [Fact]
    public async Task SetDirectIo_ReachesTheShareAndReturnsTheNewOptions()
    {
        await using var server = await RunningControlServer.StartAsync();
        ShareOptions on = (await server.CallAsync(Svc + "SetDirectIo", new SetDirectIoRequest { Enabled = true })).Single(ShareOptions.Parser);
        Assert.True(on.DirectIo);
        Assert.True(server.Share.Options.DirectIo);
        ShareOptions off = (await server.CallAsync(Svc + "SetDirectIo", new SetDirectIoRequest { Enabled = false })).Single(ShareOptions.Parser);
        Assert.False(off.DirectIo);
        Assert.False(server.Share.Options.DirectIo);
    }

    [Fact]
    public async Task SetCachePolicy_AcceptsTheFourPoliciesAndRejectsOthersAsInvalidArgument()
    {
        await using var server = await RunningControlServer.StartAsync();
        foreach (CachePolicy policy in new[] { CachePolicy.Never, CachePolicy.Metadata, CachePolicy.Always, CachePolicy.Auto })
        {
            ShareOptions options = (await server.CallAsync(Svc + "SetCachePolicy", new SetCachePolicyRequest { Policy = policy })).Single(ShareOptions.Parser);
            Assert.Equal(policy, options.CachePolicy);
            Assert.Equal(policy, server.Share.Options.CachePolicy);
        }
        foreach (CachePolicy bad in new[] { CachePolicy.Unspecified, (CachePolicy)99 })
        {
            RawResponse response = await server.CallAsync(Svc + "SetCachePolicy", new SetCachePolicyRequest { Policy = bad });
            Assert.True(response.IsTrailersOnly);
            Assert.Equal(GrpcStatusCode.InvalidArgument, response.Status);
            Assert.Contains("never", response.Message);
        }
        Assert.Equal(CachePolicy.Auto, server.Share.Options.CachePolicy);
    }

    [Fact]
    public async Task Allowlist_PathsAreNormalisedListedAndRemoved()
    {
        await using var server = await RunningControlServer.StartAsync();
        Allowlist list = (await server.CallAsync(Svc + "AddAllowedPath", new AllowedPathRequest { Path = "docs//reports/./2024/" })).Single(Allowlist.Parser);
        Assert.Equal(["docs/reports/2024"], list.Entries);
        list = (await server.CallAsync(Svc + "AddAllowedPath", new AllowedPathRequest { Path = "src/../bin" })).Single(Allowlist.Parser);
        Assert.Equal(["bin", "docs/reports/2024"], list.Entries);
        Assert.False(list.Enabled);

        list = (await server.CallAsync(Svc + "SetAllowlistEnabled", new SetAllowlistEnabledRequest { Enabled = true })).Single(Allowlist.Parser);
        Assert.True(list.Enabled);
        list = (await server.CallAsync(Svc + "ListAllowedPaths", new ListAllowedPathsRequest())).Single(Allowlist.Parser);
        Assert.True(list.Enabled);
        Assert.Equal(["bin", "docs/reports/2024"], list.Entries);

        list = (await server.CallAsync(Svc + "RemoveAllowedPath", new AllowedPathRequest { Path = "./bin" })).Single(Allowlist.Parser);
        Assert.Equal(["docs/reports/2024"], list.Entries);

        RawResponse missing = await server.CallAsync(Svc + "RemoveAllowedPath", new AllowedPathRequest { Path = "bin" });
        Assert.Equal(GrpcStatusCode.NotFound, missing.Status);
        Assert.True(missing.IsTrailersOnly);
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
        RawResponse response = await server.CallAsync(Svc + "AddAllowedPath", new AllowedPathRequest { Path = path });
        Assert.Equal(200, response.HttpStatus);
        Assert.True(response.IsTrailersOnly);
        Assert.Equal(GrpcStatusCode.InvalidArgument, response.Status);
        Assert.Contains(reason, response.Message);
        Allowlist list = (await server.CallAsync(Svc + "ListAllowedPaths", new ListAllowedPathsRequest())).Single(Allowlist.Parser);
        Assert.Empty(list.Entries);
    }

    [Fact]
    public async Task StatusMessage_IsPercentEncodedOnTheWire()
    {
        await using var server = await RunningControlServer.StartAsync();
        RawResponse response = await server.CallAsync(Svc + "RemoveAllowedPath", new AllowedPathRequest { Path = "café 100%" });
        Assert.Equal(GrpcStatusCode.NotFound, response.Status);
        Assert.Contains("caf%C3%A9 100%25", response.Headers["grpc-message"]);
        Assert.Contains("café 100%", response.Message);
    }

    [Fact]
    public async Task UnknownMethod_IsUnimplementedInATrailersOnlyResponse()
    {
        await using var server = await RunningControlServer.StartAsync();
        foreach (string path in new[] { Svc + "Frobnicate", "/no.such.Service/GetStatus", "/" })
        {
            RawResponse response = await server.CallAsync(path, new GetStatusRequest());
            Assert.Equal(200, response.HttpStatus);
            Assert.Equal("application/grpc", response.ContentType);
            Assert.True(response.IsTrailersOnly);
            Assert.Equal(GrpcStatusCode.Unimplemented, response.Status);
        }
    }

    [Fact]
    public async Task NonPost_Is405AndNonGrpcContentTypeIs415()
    {
        await using var server = await RunningControlServer.StartAsync();
        RawResponse get = await server.SendAsync(Svc + "GetStatus", null, null, HttpMethod.Get);
        Assert.Equal(405, get.HttpStatus);
        Assert.Equal("POST", get.Headers["Allow"]);

        RawResponse json = await server.SendAsync(Svc + "GetStatus", "{}"u8.ToArray(), "application/json");
        Assert.Equal(415, json.HttpStatus);
        Assert.False(json.Headers.ContainsKey("grpc-status"));

        RawResponse grpcJson = await server.SendAsync(Svc + "GetStatus", RunningControlServer.Frame([]), "application/grpc+json");
        Assert.Equal(GrpcStatusCode.Internal, grpcJson.Status);

        RawResponse explicitProto = await server.SendAsync(Svc + "GetStatus", RunningControlServer.Frame([]), "application/grpc+proto");
        Assert.Equal(GrpcStatusCode.OK, explicitProto.Status);
    }

    [Fact]
    public async Task CompressedFlagWithoutEncoding_IsInternal()
    {
        await using var server = await RunningControlServer.StartAsync();
        RawResponse response = await server.SendAsync(Svc + "GetStatus", RunningControlServer.Frame([], flag: 1));
        Assert.True(response.IsTrailersOnly);
        Assert.Equal(GrpcStatusCode.Internal, response.Status);
    }

    [Fact]
    public async Task UnsupportedEncoding_IsUnimplementedAndAdvertisesIdentity()
    {
        await using var server = await RunningControlServer.StartAsync();
        RawResponse response = await server.SendAsync(Svc + "GetStatus", RunningControlServer.Frame([], flag: 1),
            headers: ("grpc-encoding", "gzip"));
        Assert.True(response.IsTrailersOnly);
        Assert.Equal(GrpcStatusCode.Unimplemented, response.Status);
        Assert.Equal("identity", response.Headers["grpc-accept-encoding"]);

        // identity is always acceptable, and flag 0 means uncompressed whatever grpc-encoding says.
        RawResponse identity = await server.SendAsync(Svc + "GetStatus", RunningControlServer.Frame([]), headers: ("grpc-encoding", "identity"));
        Assert.Equal(GrpcStatusCode.OK, identity.Status);
    }

    [Fact]
    public async Task OversizedMessage_IsResourceExhausted()
    {
        await using var server = await RunningControlServer.StartAsync(options: new ControlServerOptions { MaxReceiveMessageSize = 64 });
        var request = new AllowedPathRequest { Path = new string('a', 100) };
        RawResponse response = await server.CallAsync(Svc + "AddAllowedPath", request);
        Assert.Equal(GrpcStatusCode.ResourceExhausted, response.Status);
        Assert.Empty((await server.CallAsync(Svc + "ListAllowedPaths", new ListAllowedPathsRequest())).Single(Allowlist.Parser).Entries);
    }

    [Fact]
    public async Task MalformedRequests_AreInternal()
    {
        await using var server = await RunningControlServer.StartAsync();
        // No message at all.
        Assert.Equal(GrpcStatusCode.Internal, (await server.SendAsync(Svc + "GetStatus", [])).Status);
        // Cut short: the prefix promises 10 bytes, 2 arrive.
        byte[] cut = [0, 0, 0, 0, 10, 1, 2];
        Assert.Equal(GrpcStatusCode.Internal, (await server.SendAsync(Svc + "GetStatus", cut)).Status);
        // Two messages in a unary call.
        byte[] two = [.. RunningControlServer.Frame([]), .. RunningControlServer.Frame([])];
        Assert.Equal(GrpcStatusCode.Internal, (await server.SendAsync(Svc + "GetStatus", two)).Status);
        // Not protobuf (a truncated varint field).
        Assert.Equal(GrpcStatusCode.Internal, (await server.SendAsync(Svc + "SetDirectIo", RunningControlServer.Frame([0x08]))).Status);
        // Reserved flag bits.
        Assert.Equal(GrpcStatusCode.Internal, (await server.SendAsync(Svc + "GetStatus", RunningControlServer.Frame([], flag: 0x80))).Status);
    }

    [Fact]
    public async Task Deadline_SlowOperationIsDeadlineExceededAndItsTokenIsCancelled()
    {
        var share = new InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await RunningControlServer.StartAsync(share);
        var watch = Stopwatch.StartNew();
        RawResponse response = await server.CallAsync(Svc + "GetStatus", new GetStatusRequest(), ("grpc-timeout", "200m"));
        watch.Stop();
        Assert.True(response.IsTrailersOnly);
        Assert.Equal(GrpcStatusCode.DeadlineExceeded, response.Status);
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(190), TimeSpan.FromSeconds(5));
        // The reply and the operation's cancellation are triggered by the same token; allow the
        // latter a moment to be observed.
        for (int i = 0; i < 100 && !share.SawCancellation; i++)
            await Task.Delay(10);
        Assert.True(share.SawCancellation);
    }

    [Fact]
    public async Task Deadline_IsHonouredEvenWhenTheOperationIgnoresItsToken()
    {
        var share = new InMemoryShareControl { GetStatusDelayIgnoringToken = TimeSpan.FromSeconds(10) };
        await using var server = await RunningControlServer.StartAsync(share);
        var watch = Stopwatch.StartNew();
        RawResponse response = await server.CallAsync(Svc + "GetStatus", new GetStatusRequest(), ("grpc-timeout", "300000u"));
        Assert.Equal(GrpcStatusCode.DeadlineExceeded, response.Status);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"answered after {watch.Elapsed}");
    }

    [Fact]
    public async Task Deadline_MalformedTimeoutIsInternalAndAGenerousOneSucceeds()
    {
        await using var server = await RunningControlServer.StartAsync();
        RawResponse bad = await server.CallAsync(Svc + "GetStatus", new GetStatusRequest(), ("grpc-timeout", "123456789S"));
        Assert.Equal(GrpcStatusCode.Internal, bad.Status);
        Assert.Contains("grpc-timeout", bad.Message);
        RawResponse ok = await server.CallAsync(Svc + "GetStatus", new GetStatusRequest(), ("grpc-timeout", "99999999H"));
        Assert.Equal(GrpcStatusCode.OK, ok.Status);
    }

    [Fact]
    public async Task UnexpectedFailure_IsInternalAndTheServerKeepsServing()
    {
        var share = new InMemoryShareControl { GetStatusFailure = new InvalidOperationException("counter table torn") };
        await using var server = await RunningControlServer.StartAsync(share);
        RawResponse failed = await server.CallAsync(Svc + "GetStatus", new GetStatusRequest());
        Assert.Equal(GrpcStatusCode.Internal, failed.Status);
        Assert.Contains("counter table torn", failed.Message);
        share.GetStatusFailure = null;
        Assert.Equal(GrpcStatusCode.OK, (await server.CallAsync(Svc + "GetStatus", new GetStatusRequest())).Status);
    }

    [Fact]
    public async Task Health_IsServingUntilShutdownThenNotServing()
    {
        await using var server = await RunningControlServer.StartAsync();
        const string check = "/grpc.health.v1.Health/Check";
        foreach (string service in new[] { "", "hypervisor.control.v1.ShareControl" })
        {
            HealthCheckResponse health = (await server.CallAsync(check, new HealthCheckRequest { Service = service })).Single(HealthCheckResponse.Parser);
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        }
        RawResponse unknown = await server.CallAsync(check, new HealthCheckRequest { Service = "nope.Service" });
        Assert.Equal(GrpcStatusCode.NotFound, unknown.Status);

        Assert.Equal(GrpcStatusCode.OK, (await server.CallAsync(Svc + "Shutdown", new ShutdownRequest())).Status);
        await server.Share.ShutdownCalled.WaitAsync(TimeSpan.FromSeconds(5));
        await server.Server.ShutdownRequested.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(server.Server.IsServing);

        HealthCheckResponse after = (await server.CallAsync(check, new HealthCheckRequest())).Single(HealthCheckResponse.Parser);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, after.Status);

        // A second Shutdown is answered but does not reach the daemon again; settings are refused.
        Assert.Equal(GrpcStatusCode.OK, (await server.CallAsync(Svc + "Shutdown", new ShutdownRequest())).Status);
        Assert.Equal(1, server.Share.ShutdownCalls);
        Assert.Equal(GrpcStatusCode.Unavailable, (await server.CallAsync(Svc + "SetDirectIo", new SetDirectIoRequest { Enabled = true })).Status);
        Assert.Equal(GrpcStatusCode.OK, (await server.CallAsync(Svc + "GetStatus", new GetStatusRequest())).Status);
    }

    [Fact]
    public async Task HealthWatch_StreamsServingThenNotServing()
    {
        await using var server = await RunningControlServer.StartAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://localhost/grpc.health.v1.Health/Watch")
        {
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(RunningControlServer.Frame(new HealthCheckRequest().ToByteArray())),
        };
        request.Content.Headers.ContentType = new("application/grpc");
        using HttpResponseMessage response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await using Stream stream = await response.Content.ReadAsStreamAsync();

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await ReadMessageAsync(stream)).Status);
        server.Server.StopServing();
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await ReadMessageAsync(stream)).Status);

        static async Task<HealthCheckResponse> ReadMessageAsync(Stream stream)
        {
            byte[] header = new byte[5];
            await stream.ReadExactlyAsync(header).AsTask().WaitAsync(TimeSpan.FromSeconds(5));
            Assert.Equal(GrpcFrameResult.Complete, GrpcFraming.ReadHeader(header, 1024, false, out int length, out _));
            byte[] body = new byte[length];
            await stream.ReadExactlyAsync(body);
            return HealthCheckResponse.Parser.ParseFrom(body);
        }
    }
}
