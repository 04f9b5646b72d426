using Hypervisor.Protocol.Share;
using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Hypervisor.Passthrough.Tests.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Vdev.Control;

namespace Hypervisor.Vdev.Tests.Control;

public sealed class ShareControlClientTests
{
    [Fact]
    public async Task EveryRpc_RoundTripsThroughTheServer()
    {
        await using var server = await ControlTestServer.StartAsync();
        using var client = new ShareControlClient(server.SocketPath, TimeSpan.FromSeconds(10));
        ShareControl.ShareControlClient control = client.Control;

        ShareStatus status = await control.GetStatusAsync(new GetStatusRequest());
        Assert.Equal("/srv/share", status.SharedDir);
        Assert.Equal(["LOOKUP", "READ", "INIT"], status.Opcodes.Select(o => o.Name));

        Assert.True((await control.SetDirectIoAsync(new SetDirectIoRequest { Enabled = true })).DirectIo);
        Assert.True(server.Share.Options.DirectIo);
        Assert.Equal(CachePolicy.Never, (await control.SetCachePolicyAsync(new SetCachePolicyRequest { Policy = CachePolicy.Never })).CachePolicy);
        Assert.Equal(CachePolicy.Never, server.Share.Options.CachePolicy);

        Assert.Equal(["a/b"], (await control.AddAllowedPathAsync(new AllowedPathRequest { Path = "a//b/" })).Entries);
        Assert.True((await control.SetAllowlistEnabledAsync(new SetAllowlistEnabledRequest { Enabled = true })).Enabled);
        Allowlist list = await control.ListAllowedPathsAsync(new ListAllowedPathsRequest());
        Assert.True(list.Enabled);
        Assert.Equal(["a/b"], list.Entries);
        Assert.Empty((await control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "a/b" })).Entries);

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await client.Health.CheckAsync(new HealthCheckRequest())).Status);
        await control.ShutdownAsync(new ShutdownRequest());
        Assert.Equal(1, server.Share.ShutdownCalls);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await client.Health.CheckAsync(new HealthCheckRequest())).Status);
    }

    [Fact]
    public async Task ServerErrors_SurfaceAsRpcExceptionWithTheServersCodeAndMessage()
    {
        await using var server = await ControlTestServer.StartAsync();
        using var client = new ShareControlClient(server.SocketPath);

        var invalid = await Assert.ThrowsAsync<RpcException>(
            async () => await client.Control.AddAllowedPathAsync(new AllowedPathRequest { Path = "/etc" }));
        Assert.Equal(StatusCode.InvalidArgument, invalid.StatusCode);
        Assert.Contains("absolute", invalid.Status.Detail);

        var notFound = await Assert.ThrowsAsync<RpcException>(
            async () => await client.Control.RemoveAllowedPathAsync(new AllowedPathRequest { Path = "nope" }));
        Assert.Equal(StatusCode.NotFound, notFound.StatusCode);
        Assert.Equal("\"nope\" is not in the allowlist.", notFound.Status.Detail);

        var unimplemented = await Assert.ThrowsAsync<RpcException>(
            async () => await client.CallInvoker.AsyncUnaryCall(RawMethod("hypervisor.control.v1.ShareControl", "Reboot"), null, default, new GetStatusRequest()));
        Assert.Equal(StatusCode.Unimplemented, unimplemented.StatusCode);

        var unknownService = await Assert.ThrowsAsync<RpcException>(
            async () => await client.Health.CheckAsync(new HealthCheckRequest { Service = "other.Service" }));
        Assert.Equal(StatusCode.NotFound, unknownService.StatusCode);
    }

    [Fact]
    public async Task Deadline_IsReportedAsDeadlineExceededNamingTheDeadline()
    {
        var share = new InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await ControlTestServer.StartAsync(share);
        using var client = new ShareControlClient(server.SocketPath, TimeSpan.FromMilliseconds(300));
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.Control.GetStatusAsync(new GetStatusRequest()));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.Equal($"The deadline of 300 ms passed before the control service at {server.SocketPath} answered.", e.Status.Detail);
        // The server saw the deadline too: the operation's token was cancelled.
        for (int i = 0; i < 50 && !share.SawCancellation; i++)
            await Task.Delay(20);
        Assert.True(share.SawCancellation);
    }

    [Fact]
    public async Task ADeadlineGivenByTheCall_WinsOverTheDefault()
    {
        var share = new InMemoryShareControl { GetStatusDelay = TimeSpan.FromSeconds(30) };
        await using var server = await ControlTestServer.StartAsync(share);
        using var client = new ShareControlClient(server.SocketPath, TimeSpan.FromSeconds(60));
        var e = await Assert.ThrowsAsync<RpcException>(
            async () => await client.Control.GetStatusAsync(new GetStatusRequest(), deadline: DateTime.UtcNow.AddMilliseconds(200)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.StartsWith("The deadline of ", e.Status.Detail);
    }

    [Fact]
    public async Task MissingSocket_IsUnavailableWithAClearSentence()
    {
        string directory = ControlTestServer.NewDirectory();
        string path = Path.Combine(directory, "absent.sock");
        using var client = new ShareControlClient(path);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.Control.GetStatusAsync(new GetStatusRequest()));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.Equal($"The control socket {path} does not exist; check --socket and that the share's daemon is running.", e.Status.Detail);
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
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.Control.GetStatusAsync(new GetStatusRequest()));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.StartsWith($"Nothing is listening on the control socket {path}", e.Status.Detail);
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    [Trait("Category", "Root")]
    public async Task SocketThisUserMayNotOpen_IsPermissionDeniedWithAClearSentence()
    {
        Assert.True(Environment.IsPrivilegedProcess, "This test runs the client as uid 65534 (nobody) and must run as root.");
        await using var server = await ControlTestServer.StartAsync();
        File.SetUnixFileMode(server.Directory, (UnixFileMode)0b111_101_101);
        var (exit, output, error) = await VdevCtlAsNobodyAsync("--socket", server.SocketPath, "status");
        Assert.Equal(3, exit);
        Assert.Equal("", output);
        Assert.Equal($"vdev ctl: This user may not open the control socket {server.SocketPath}; run the command as the daemon's user or as root.", error.TrimEnd());
    }

    [Fact]
    [Trait("Category", "Root")]
    public async Task APeerTheServerRefuses_IsUnavailableWithAClearSentence()
    {
        Assert.True(Environment.IsPrivilegedProcess, "This test runs the client as uid 65534 (nobody) and must run as root.");
        await using var server = await ControlTestServer.StartAsync();
        // The socket opened up to everyone (a misconfiguration): the server's SO_PEERCRED check still closes the connection.
        File.SetUnixFileMode(server.Directory, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(server.SocketPath, (UnixFileMode)0b110_110_110);
        var (exit, _, error) = await VdevCtlAsNobodyAsync("--socket", server.SocketPath, "status");
        Assert.Equal(3, exit);
        Assert.StartsWith($"vdev ctl: The control service at {server.SocketPath} closed the connection", error);
        Assert.Contains("it accepts only its own user and root.", error);
        Assert.Equal(0, server.Share.GetStatusCalls);
    }

    /// <summary>
    /// Runs the built vdev's <c>ctl</c> as uid and gid 65534 with <c>setpriv</c>, from a copy of the test's output folder
    /// in a world-readable temporary folder (the build's own folder may be below one that nobody cannot enter).
    /// </summary>
    private static async Task<(int Exit, string Out, string Err)> VdevCtlAsNobodyAsync(params string[] args)
    {
        string copy = Directory.CreateTempSubdirectory("hv-ctl-nobody-").FullName;
        try
        {
            File.SetUnixFileMode(copy, (UnixFileMode)0b111_101_101);
            foreach (string file in Directory.EnumerateFiles(AppContext.BaseDirectory))
            {
                string target = Path.Combine(copy, Path.GetFileName(file));
                File.Copy(file, target);
                File.SetUnixFileMode(target, (UnixFileMode)0b110_100_100);
            }
            var psi = new ProcessStartInfo("/usr/bin/setpriv") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (string arg in new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "dotnet", Path.Combine(copy, "vdev.dll"), "ctl" })
                psi.ArgumentList.Add(arg);
            foreach (string arg in args)
                psi.ArgumentList.Add(arg);
            // Nobody's processes cannot write below /root; the runtime is pointed elsewhere for its own files.
            psi.Environment["HOME"] = copy;
            psi.Environment["DOTNET_CLI_HOME"] = copy;
            using Process process = Process.Start(psi)!;
            Task<string> output = process.StandardOutput.ReadToEndAsync();
            Task<string> error = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            return (process.ExitCode, await output, await error);
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    private static Method<GetStatusRequest, ShareStatus> RawMethod(string service, string method)
        => new(MethodType.Unary, service, method,
            Marshallers.Create<GetStatusRequest>(m => m.ToByteArray(), GetStatusRequest.Parser.ParseFrom),
            Marshallers.Create<ShareStatus>(m => m.ToByteArray(), ShareStatus.Parser.ParseFrom));
}
