using Google.Protobuf.Reflection;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1;
using Hypervisor.Protocol.Control;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// What a generic gRPC tool finds on a share's control socket without the .proto files: the
/// services listed by server reflection, the descriptor of the share's service, and the standard
/// health service going from SERVING to NOT_SERVING when the share is shut down.
/// </summary>
public sealed class ControlServerDiscoveryTests
{
    [Fact]
    public async Task Reflection_ListsTheServicesAndDescribesShareControl()
    {
        await using var server = await RunningControlServer.StartAsync();
        var reflection = new ServerReflection.ServerReflectionClient(server.Channel);
        using AsyncDuplexStreamingCall<ServerReflectionRequest, ServerReflectionResponse> call =
            reflection.ServerReflectionInfo(deadline: DateTime.UtcNow.AddSeconds(10));

        await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        Assert.True(await call.ResponseStream.MoveNext());
        List<string> services = call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToList();
        Assert.Contains("hypervisor.control.v1.ShareControl", services);
        Assert.Contains("grpc.health.v1.Health", services);
        Assert.Contains("grpc.reflection.v1.ServerReflection", services);

        await call.RequestStream.WriteAsync(new ServerReflectionRequest { FileContainingSymbol = "hypervisor.control.v1.ShareControl" });
        Assert.True(await call.ResponseStream.MoveNext());
        ServerReflectionResponse described = call.ResponseStream.Current;
        Assert.Equal(ServerReflectionResponse.MessageResponseOneofCase.FileDescriptorResponse, described.MessageResponseCase);
        List<FileDescriptorProto> files = described.FileDescriptorResponse.FileDescriptorProto
            .Select(bytes => FileDescriptorProto.Parser.ParseFrom(bytes)).ToList();
        ServiceDescriptorProto service = files.SelectMany(f => f.Service).Single(s => s.Name == "ShareControl");
        Assert.Equal(
            ["GetStatus", "SetDirectIo", "SetCachePolicy", "AddAllowedPath", "RemoveAllowedPath", "ListAllowedPaths", "SetAllowlistEnabled", "Shutdown", "Restart"],
            service.Method.Select(m => m.Name));
        Assert.Equal(".hypervisor.control.v1.ShareStatus", service.Method[0].OutputType);

        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext());
    }

    [Fact]
    public async Task Health_AnswersServingThenNotServingAfterShutdown()
    {
        await using var server = await RunningControlServer.StartAsync();
        var health = new Health.HealthClient(server.Channel);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);

        await new ShareControl.ShareControlClient(server.Channel).ShutdownAsync(new ShutdownRequest());

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing,
            (await health.CheckAsync(new HealthCheckRequest { Service = "hypervisor.control.v1.ShareControl" })).Status);
        Assert.Equal(1, server.Share.ShutdownCalls);
    }
}
