using Hypervisor.Protocol.Control;

namespace Hypervisor.Protocol.Tests.Control;

/// <summary>
/// The protocol assembly holds the generated control messages, service base and client, and stays a library of
/// wire formats: no HTTP stack, no ASP.NET, no gRPC transport (those belong to the daemon and the vdev).
/// </summary>
public sealed class ProtocolReferencesTests
{
    [Fact]
    public void ProtocolReferencesNeitherAspNetCoreNorAGrpcTransport()
    {
        string[] references = typeof(ShareControl).Assembly.GetReferencedAssemblies().Select(a => a.Name!).ToArray();
        Assert.Contains("Google.Protobuf", references);
        Assert.Contains("Grpc.Core.Api", references);
        Assert.DoesNotContain(references, name => name.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal)
            || name.StartsWith("Grpc.AspNetCore", StringComparison.Ordinal)
            || name.StartsWith("Grpc.Net.", StringComparison.Ordinal)
            || name == "System.Net.Http");
    }
}
