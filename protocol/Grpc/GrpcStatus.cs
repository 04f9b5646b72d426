namespace Hypervisor.Protocol.Grpc;

/// <summary>
/// A gRPC status: the code of the <c>grpc-status</c> trailer and the human-readable text of
/// <c>grpc-message</c> (already percent-decoded; empty when absent).
/// </summary>
public readonly record struct GrpcStatus(GrpcStatusCode Code, string Message)
{
    /// <summary>The success status.</summary>
    public static GrpcStatus Ok => new(GrpcStatusCode.OK, string.Empty);

    /// <summary>Renders as <c>CODE: message</c>, e.g. <c>NOT_FOUND: no such entry</c>.</summary>
    public override string ToString()
        => Message.Length == 0 ? Code.ToWireName() : Code.ToWireName() + ": " + Message;
}

/// <summary>
/// A call that ended with a non-OK gRPC status. Thrown by clients to surface the server's status,
/// and by service implementations to choose the status a caller receives.
/// </summary>
public sealed class GrpcException : Exception
{
    /// <summary>Creates the exception for <paramref name="code"/> with a human-readable <paramref name="detail"/>.</summary>
    public GrpcException(GrpcStatusCode code, string detail, Exception? inner = null)
        : base(detail, inner)
    {
        if (code == GrpcStatusCode.OK)
            throw new ArgumentOutOfRangeException(nameof(code), "A failed call cannot carry the OK status.");
        StatusCode = code;
        Detail = detail;
    }

    /// <summary>The status code (never <see cref="GrpcStatusCode.OK"/>).</summary>
    public GrpcStatusCode StatusCode { get; }

    /// <summary>The status message, percent-decoded.</summary>
    public string Detail { get; }

    /// <summary>The status as a value.</summary>
    public GrpcStatus Status => new(StatusCode, Detail);
}
