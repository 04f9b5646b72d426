using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Protocol.Tests.Grpc;

public sealed class GrpcMessageEncodingTests
{
    [Theory]
    [InlineData("plain text: ok!", "plain text: ok!")]
    [InlineData("100%", "100%25")]
    [InlineData("café", "caf%C3%A9")]
    [InlineData("line1\nline2\t", "line1%0Aline2%09")]
    [InlineData("\u007F~", "%7F~")]
    [InlineData("", "")]
    [InlineData("😀", "%F0%9F%98%80")]
    public void Encode_EscapesExactlyTheBytesOutsidePrintableAsciiAndPercent(string message, string wire)
    {
        Assert.Equal(wire, GrpcMessageEncoding.Encode(message));
        Assert.Equal(message, GrpcMessageEncoding.Decode(wire));
    }

    [Fact]
    public void Encode_ReturnsTheSameInstanceWhenNothingNeedsEscaping()
    {
        string message = "nothing to escape here";
        Assert.Same(message, GrpcMessageEncoding.Encode(message));
    }

    [Theory]
    [InlineData("%", "%")]
    [InlineData("%4", "%4")]
    [InlineData("%zz ok", "%zz ok")]
    [InlineData("50%-off", "50%-off")]
    [InlineData("%c3%a9", "é")]          // lower-case hex is accepted
    [InlineData("%FF", "\uFFFD")]        // invalid UTF-8 becomes U+FFFD
    public void Decode_IsLenient(string wire, string expected)
        => Assert.Equal(expected, GrpcMessageEncoding.Decode(wire));
}
