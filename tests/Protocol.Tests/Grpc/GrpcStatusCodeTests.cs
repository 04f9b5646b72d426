using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Protocol.Tests.Grpc;

public sealed class GrpcStatusCodeTests
{
    [Fact]
    public void Codes_HaveTheNumbersOfStatuscodesMd()
    {
        Assert.Equal(0, (int)GrpcStatusCode.OK);
        Assert.Equal(4, (int)GrpcStatusCode.DeadlineExceeded);
        Assert.Equal(8, (int)GrpcStatusCode.ResourceExhausted);
        Assert.Equal(12, (int)GrpcStatusCode.Unimplemented);
        Assert.Equal(13, (int)GrpcStatusCode.Internal);
        Assert.Equal(14, (int)GrpcStatusCode.Unavailable);
        Assert.Equal(16, (int)GrpcStatusCode.Unauthenticated);
        Assert.Equal("DEADLINE_EXCEEDED", GrpcStatusCode.DeadlineExceeded.ToWireName());
        Assert.Equal("INVALID_ARGUMENT", GrpcStatusCode.InvalidArgument.ToWireName());
    }

    [Theory]
    [InlineData("0", GrpcStatusCode.OK)]
    [InlineData("12", GrpcStatusCode.Unimplemented)]
    [InlineData("16", GrpcStatusCode.Unauthenticated)]
    [InlineData("17", GrpcStatusCode.Unknown)]
    [InlineData("4000000000", GrpcStatusCode.Unknown)]
    public void TryParse_MapsOutOfRangeCodesToUnknown(string value, GrpcStatusCode expected)
    {
        Assert.True(GrpcStatusCodes.TryParse(value, out GrpcStatusCode code));
        Assert.Equal(expected, code);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("OK")]
    [InlineData("1 ")]
    public void TryParse_RejectsNonNumbers(string value) => Assert.False(GrpcStatusCodes.TryParse(value, out _));

    [Theory]
    [InlineData(400, GrpcStatusCode.Internal)]
    [InlineData(401, GrpcStatusCode.Unauthenticated)]
    [InlineData(403, GrpcStatusCode.PermissionDenied)]
    [InlineData(404, GrpcStatusCode.Unimplemented)]
    [InlineData(429, GrpcStatusCode.Unavailable)]
    [InlineData(502, GrpcStatusCode.Unavailable)]
    [InlineData(503, GrpcStatusCode.Unavailable)]
    [InlineData(504, GrpcStatusCode.Unavailable)]
    [InlineData(415, GrpcStatusCode.Unknown)]
    [InlineData(500, GrpcStatusCode.Unknown)]
    public void FromHttpStatus_FollowsHttpGrpcStatusMapping(int http, GrpcStatusCode expected)
        => Assert.Equal(expected, GrpcStatusCodes.FromHttpStatus(http));

    [Fact]
    public void GrpcException_RefusesOk()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new GrpcException(GrpcStatusCode.OK, "fine"));
        var e = new GrpcException(GrpcStatusCode.NotFound, "gone");
        Assert.Equal("NOT_FOUND: gone", e.Status.ToString());
    }

    [Theory]
    [InlineData("application/grpc", GrpcProtocol.ContentTypeKind.GrpcProto)]
    [InlineData("application/grpc+proto", GrpcProtocol.ContentTypeKind.GrpcProto)]
    [InlineData("Application/GRPC; charset=utf-8", GrpcProtocol.ContentTypeKind.GrpcProto)]
    [InlineData("application/grpc+json", GrpcProtocol.ContentTypeKind.GrpcOtherSubtype)]
    [InlineData("application/grpc-web", GrpcProtocol.ContentTypeKind.NotGrpc)]
    [InlineData("application/json", GrpcProtocol.ContentTypeKind.NotGrpc)]
    [InlineData("", GrpcProtocol.ContentTypeKind.NotGrpc)]
    public void ClassifyContentType(string contentType, GrpcProtocol.ContentTypeKind kind)
        => Assert.Equal(kind, GrpcProtocol.ClassifyContentType(contentType));
}
