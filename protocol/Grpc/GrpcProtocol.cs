namespace Hypervisor.Protocol.Grpc;

/// <summary>
/// Names and values fixed by grpc/grpc doc/PROTOCOL-HTTP2.md that both ends of a call use.
/// </summary>
public static class GrpcProtocol
{
    /// <summary>Content type of a gRPC request or response whose messages are protobuf.</summary>
    public const string ContentType = "application/grpc";

    /// <summary>The explicit protobuf subtype, equivalent to <see cref="ContentType"/>.</summary>
    public const string ContentTypeProto = "application/grpc+proto";

    /// <summary>Trailer (or trailers-only header) carrying the decimal status code.</summary>
    public const string StatusHeader = "grpc-status";

    /// <summary>Trailer (or trailers-only header) carrying the percent-encoded status message.</summary>
    public const string MessageHeader = "grpc-message";

    /// <summary>Request header carrying the caller's deadline as a relative timeout.</summary>
    public const string TimeoutHeader = "grpc-timeout";

    /// <summary>Header naming the compression of messages whose compressed flag is set.</summary>
    public const string EncodingHeader = "grpc-encoding";

    /// <summary>Header listing the message encodings the sender accepts.</summary>
    public const string AcceptEncodingHeader = "grpc-accept-encoding";

    /// <summary>The only message encoding this implementation supports: no compression.</summary>
    public const string IdentityEncoding = "identity";

    /// <summary>
    /// Default limit on a received message (4 MiB), the default of the reference implementations;
    /// larger messages end the call with RESOURCE_EXHAUSTED.
    /// </summary>
    public const int DefaultMaxReceiveMessageSize = 4 * 1024 * 1024;

    /// <summary>The request path of a method: <c>/{package.Service}/{Method}</c>.</summary>
    public static string MethodPath(string fullServiceName, string methodName) => "/" + fullServiceName + "/" + methodName;

    /// <summary>How a request's content type is to be treated by a server that speaks protobuf.</summary>
    public enum ContentTypeKind
    {
        /// <summary><c>application/grpc</c> or <c>application/grpc+proto</c>, with or without parameters.</summary>
        GrpcProto,
        /// <summary>A gRPC content type with another subtype (e.g. <c>+json</c>): no codec for it.</summary>
        GrpcOtherSubtype,
        /// <summary>Not gRPC at all: the spec asks servers to answer HTTP 415.</summary>
        NotGrpc,
    }

    /// <summary>Classifies a Content-Type header value (case-insensitive, parameters ignored).</summary>
    public static ContentTypeKind ClassifyContentType(ReadOnlySpan<char> contentType)
    {
        int semicolon = contentType.IndexOf(';');
        ReadOnlySpan<char> media = (semicolon >= 0 ? contentType[..semicolon] : contentType).Trim();
        if (!media.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase))
            return ContentTypeKind.NotGrpc;
        ReadOnlySpan<char> rest = media[ContentType.Length..];
        if (rest.IsEmpty || rest.Equals("+proto", StringComparison.OrdinalIgnoreCase))
            return ContentTypeKind.GrpcProto;
        return rest[0] == '+' ? ContentTypeKind.GrpcOtherSubtype : ContentTypeKind.NotGrpc;
    }
}
