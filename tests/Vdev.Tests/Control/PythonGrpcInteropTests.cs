using Hypervisor.Protocol.Share;
using System.Diagnostics;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1;
using Hypervisor.Passthrough.Tests.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Vdev.Control;

namespace Hypervisor.Vdev.Tests.Control;

/// <summary>
/// Interoperability of the control service with a standard gRPC client: Debian's python3-grpcio
/// (the C-core implementation) calls the running service over <c>unix:PATH</c> with a generic
/// stub, sending and receiving raw protobuf bytes that the C# generated types produce and parse,
/// and must get the same answers as <see cref="ShareControlClient"/> (Grpc.Net.Client).
/// </summary>
public sealed class PythonGrpcInteropTests
{
    private const string Python = "/usr/bin/python3";

    /// <summary>
    /// The control server under test runs inside this test host and shares its thread pool with the runner and
    /// the python process's pipes. On a 2-CPU machine that pool starts with 2 threads; run alone, the health
    /// Watch test then saw its second call reach the server 1.2-1.3 s after the first call's reply, with 2-3 work
    /// items queued on a 3-thread pool, past the call's 0.5 s deadline (3 failures in 4 runs). The daemon process
    /// itself answers the same calls in milliseconds, so the host is given the threads a daemon has to itself.
    /// </summary>
    static PythonGrpcInteropTests()
    {
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, 16), io);
    }

    // Reads a JSON list of calls on stdin, makes them in order on one channel, prints a JSON list
    // of outcomes: the status code name, details, and the response bytes in hex.
    private const string Script = """
        import grpc, json, sys
        calls = json.load(sys.stdin)
        out = []
        with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
            for call in calls:
                request = bytes.fromhex(call["request"])
                timeout = call.get("timeout") or 10
                if call.get("stream") or call.get("bidi"):
                    # Server streaming (or a bidirectional stream given this one request): collect every
                    # message until the call ends.
                    if call.get("bidi"):
                        stub = channel.stream_stream(call["method"], request_serializer=None, response_deserializer=None)
                        responses = lambda: stub(iter([request]), timeout=timeout)
                    else:
                        stub = channel.unary_stream(call["method"], request_serializer=None, response_deserializer=None)
                        responses = lambda: stub(request, timeout=timeout)
                    messages = []
                    try:
                        for message in responses():
                            messages.append(message.hex())
                        out.append({"code": "OK", "details": "", "response": "", "stream": messages})
                    except grpc.RpcError as e:
                        out.append({"code": e.code().name, "details": e.details() or "", "response": "", "stream": messages})
                    continue
                stub = channel.unary_unary(call["method"], request_serializer=None, response_deserializer=None)
                try:
                    response = stub(request, timeout=timeout)
                    out.append({"code": "OK", "details": "", "response": response.hex()})
                except grpc.RpcError as e:
                    out.append({"code": e.code().name, "details": e.details() or "", "response": ""})
        print(json.dumps(out))
        """;

    private sealed record PyCall(string Method, IMessage Request, double? Timeout = null, bool Stream = false, bool Bidi = false);

    private sealed record PyOutcome(string Code, string Details, byte[] Response, List<byte[]> Stream);

    private static async Task<List<PyOutcome>> CallFromPythonAsync(string socketPath, params PyCall[] calls)
    {
        Assert.True(File.Exists(Python), "python3-grpcio is needed: apt-get install python3-grpcio.");
        var psi = new ProcessStartInfo(Python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(Script);
        psi.ArgumentList.Add(socketPath);
        // No proxy may be involved, whatever the environment says.
        psi.Environment["no_grpc_proxy"] = "*";
        psi.Environment.Remove("http_proxy");
        psi.Environment.Remove("https_proxy");
        using Process process = Process.Start(psi)!;
        var payload = calls.Select(c => new Dictionary<string, object?>
        {
            ["method"] = c.Method,
            ["request"] = Convert.ToHexString(c.Request.ToByteArray()),
            ["timeout"] = c.Timeout,
            ["stream"] = c.Stream,
            ["bidi"] = c.Bidi,
        }).ToList();
        await process.StandardInput.WriteAsync(JsonSerializer.Serialize(payload));
        process.StandardInput.Close();
        string stdout = await process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, "python grpc client failed: " + stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        return doc.RootElement.EnumerateArray().Select(e => new PyOutcome(
            e.GetProperty("code").GetString()!,
            e.GetProperty("details").GetString()!,
            Convert.FromHexString(e.GetProperty("response").GetString()!),
            e.TryGetProperty("stream", out JsonElement stream)
                ? stream.EnumerateArray().Select(m => Convert.FromHexString(m.GetString()!)).ToList()
                : [])).ToList();
    }

    private const string Svc = "/hypervisor.control.v1.ShareControl/";

    [Fact]
    public async Task PythonClient_GetsTheSameAnswersAsTheCSharpClient()
    {
        await using var server = await ControlTestServer.StartAsync();
        using var client = new ShareControlClient(server.SocketPath, TimeSpan.FromSeconds(10));

        List<PyOutcome> py = await CallFromPythonAsync(server.SocketPath,
            new PyCall("/grpc.health.v1.Health/Check", new HealthCheckRequest()),
            new PyCall(Svc + "GetStatus", new GetStatusRequest()),
            new PyCall(Svc + "SetDirectIo", new SetDirectIoRequest { Enabled = true }),
            new PyCall(Svc + "SetCachePolicy", new SetCachePolicyRequest { Policy = CachePolicy.Always }),
            new PyCall(Svc + "AddAllowedPath", new AllowedPathRequest { Path = "x/./y//" }),
            new PyCall(Svc + "SetAllowlistEnabled", new SetAllowlistEnabledRequest { Enabled = true }),
            new PyCall(Svc + "ListAllowedPaths", new ListAllowedPathsRequest()),
            new PyCall(Svc + "AddAllowedPath", new AllowedPathRequest { Path = "/abs" }),
            new PyCall(Svc + "RemoveAllowedPath", new AllowedPathRequest { Path = "not/there" }),
            new PyCall(Svc + "NoSuchMethod", new GetStatusRequest()),
            new PyCall("/grpc.health.v1.Health/Check", new HealthCheckRequest { Service = "unknown.Service" }));

        // Successful calls: identical messages.
        Assert.Equal("OK", py[0].Code);
        Assert.Equal((await client.Health.CheckAsync(new HealthCheckRequest())).Status, HealthCheckResponse.Parser.ParseFrom(py[0].Response).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, HealthCheckResponse.Parser.ParseFrom(py[0].Response).Status);

        Assert.Equal("OK", py[1].Code);
        ShareStatus pyStatus = ShareStatus.Parser.ParseFrom(py[1].Response);
        Assert.Equal("/srv/share", pyStatus.SharedDir);
        Assert.Equal(3, pyStatus.Opcodes.Count);

        Assert.True(ShareOptions.Parser.ParseFrom(py[2].Response).DirectIo);
        Assert.Equal(CachePolicy.Always, ShareOptions.Parser.ParseFrom(py[3].Response).CachePolicy);
        Assert.Equal(["x/y"], Allowlist.Parser.ParseFrom(py[4].Response).Entries);
        Assert.True(Allowlist.Parser.ParseFrom(py[5].Response).Enabled);
        Assert.Equal(await client.Control.ListAllowedPathsAsync(new ListAllowedPathsRequest()), Allowlist.Parser.ParseFrom(py[6].Response));
        ShareStatus csStatus = await client.Control.GetStatusAsync(new GetStatusRequest());
        Assert.Equal(csStatus.Options, ShareOptions.Parser.ParseFrom(py[3].Response));
        Assert.True(server.Share.Options.DirectIo);

        // Failed calls: the same status code and message as the C# client sees.
        await AssertSameError(py[7], async () => await client.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = "/abs" }), StatusCode.InvalidArgument);
        await AssertSameError(py[8], async () => await client.Control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "not/there" }), StatusCode.NotFound);
        var noSuchMethod = new Method<GetStatusRequest, ShareStatus>(MethodType.Unary, "hypervisor.control.v1.ShareControl", "NoSuchMethod",
            Marshallers.Create<GetStatusRequest>(m => m.ToByteArray(), GetStatusRequest.Parser.ParseFrom),
            Marshallers.Create<ShareStatus>(m => m.ToByteArray(), ShareStatus.Parser.ParseFrom));
        await AssertSameError(py[9], async () => await client.CallInvoker.AsyncUnaryCall(noSuchMethod, null, default, new GetStatusRequest()), StatusCode.Unimplemented);
        await AssertSameError(py[10], async () => await client.Health.CheckAsync(new HealthCheckRequest { Service = "unknown.Service" }), StatusCode.NotFound);
    }

    [Fact]
    public async Task PythonClient_SeesDeadlineExceededAndNotServingAfterShutdown()
    {
        var share = new InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await ControlTestServer.StartAsync(share);
        List<PyOutcome> py = await CallFromPythonAsync(server.SocketPath,
            new PyCall(Svc + "GetStatus", new GetStatusRequest(), Timeout: 0.3),
            new PyCall(Svc + "Shutdown", new ShutdownRequest()),
            new PyCall("/grpc.health.v1.Health/Check", new HealthCheckRequest()),
            new PyCall(Svc + "SetDirectIo", new SetDirectIoRequest { Enabled = true }));
        Assert.Equal("DEADLINE_EXCEEDED", py[0].Code);
        Assert.Equal("OK", py[1].Code);
        Assert.Equal(1, share.ShutdownCalls);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, HealthCheckResponse.Parser.ParseFrom(py[2].Response).Status);
        Assert.Equal("UNAVAILABLE", py[3].Code);
        Assert.False(share.Options.DirectIo);
    }

    [Fact]
    public async Task PythonClient_HealthWatchStreamsTheCurrentStatusUntilItsDeadline()
    {
        await using var server = await ControlTestServer.StartAsync();
        List<PyOutcome> py = await CallFromPythonAsync(server.SocketPath,
            new PyCall("/grpc.health.v1.Health/Watch", new HealthCheckRequest(), Timeout: 0.5, Stream: true),
            new PyCall("/grpc.health.v1.Health/Watch", new HealthCheckRequest { Service = "other.Service" }, Timeout: 0.5, Stream: true));
        Assert.Equal("DEADLINE_EXCEEDED", py[0].Code);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, HealthCheckResponse.Parser.ParseFrom(Assert.Single(py[0].Stream)).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.ServiceUnknown, HealthCheckResponse.Parser.ParseFrom(Assert.Single(py[1].Stream)).Status);
    }

    [Fact]
    public async Task PythonClient_ListsTheServicesThroughServerReflection()
    {
        await using var server = await ControlTestServer.StartAsync();
        List<PyOutcome> py = await CallFromPythonAsync(server.SocketPath,
            new PyCall("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", new ServerReflectionRequest { ListServices = "" }, Bidi: true),
            new PyCall("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                new Grpc.Reflection.V1Alpha.ServerReflectionRequest { ListServices = "" }, Bidi: true));
        Assert.Equal("OK", py[0].Code);
        ServerReflectionResponse v1 = ServerReflectionResponse.Parser.ParseFrom(Assert.Single(py[0].Stream));
        Assert.Contains("hypervisor.control.v1.ShareControl", v1.ListServicesResponse.Service.Select(s => s.Name));
        Assert.Contains("grpc.health.v1.Health", v1.ListServicesResponse.Service.Select(s => s.Name));
        Assert.Equal("OK", py[1].Code);
        var v1Alpha = Grpc.Reflection.V1Alpha.ServerReflectionResponse.Parser.ParseFrom(Assert.Single(py[1].Stream));
        Assert.Contains("hypervisor.control.v1.ShareControl", v1Alpha.ListServicesResponse.Service.Select(s => s.Name));
    }

    private static async Task AssertSameError(PyOutcome python, Func<Task> csharpCall, StatusCode expected)
    {
        var e = await Assert.ThrowsAsync<RpcException>(csharpCall);
        Assert.Equal(expected, e.StatusCode);
        Assert.Equal(ShareControlClient.StatusName(expected), python.Code);
        Assert.Equal(e.Status.Detail, python.Details);
    }
}
