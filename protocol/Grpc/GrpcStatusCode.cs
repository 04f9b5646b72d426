namespace Hypervisor.Protocol.Grpc;

/// <summary>
/// gRPC status codes as carried in the <c>grpc-status</c> trailer (grpc/grpc doc/statuscodes.md).
/// The numbers are part of the wire protocol and must not change.
/// </summary>
public enum GrpcStatusCode
{
    /// <summary>Not an error; returned on success.</summary>
    OK = 0,
    /// <summary>The operation was cancelled, typically by the caller.</summary>
    Cancelled = 1,
    /// <summary>Unknown error, e.g. a status from another error space, or an error without enough information.</summary>
    Unknown = 2,
    /// <summary>The client specified an invalid argument, independent of the system's state.</summary>
    InvalidArgument = 3,
    /// <summary>The deadline expired before the operation could complete.</summary>
    DeadlineExceeded = 4,
    /// <summary>A requested entity was not found.</summary>
    NotFound = 5,
    /// <summary>The entity a client attempted to create already exists.</summary>
    AlreadyExists = 6,
    /// <summary>The caller does not have permission to execute the operation.</summary>
    PermissionDenied = 7,
    /// <summary>Some resource has been exhausted (quota, message size, ...).</summary>
    ResourceExhausted = 8,
    /// <summary>The system is not in a state required for the operation's execution.</summary>
    FailedPrecondition = 9,
    /// <summary>The operation was aborted, typically due to a concurrency issue.</summary>
    Aborted = 10,
    /// <summary>The operation was attempted past the valid range.</summary>
    OutOfRange = 11,
    /// <summary>The operation is not implemented or not supported by this server.</summary>
    Unimplemented = 12,
    /// <summary>An invariant expected by the underlying system has been broken.</summary>
    Internal = 13,
    /// <summary>The service is currently unavailable; retrying may succeed.</summary>
    Unavailable = 14,
    /// <summary>Unrecoverable data loss or corruption.</summary>
    DataLoss = 15,
    /// <summary>The request does not have valid authentication credentials.</summary>
    Unauthenticated = 16,
}

/// <summary>Helpers for <see cref="GrpcStatusCode"/>.</summary>
public static class GrpcStatusCodes
{
    private static readonly string[] Names =
    [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    ];

    /// <summary>The canonical upper-case name of a code (e.g. <c>DEADLINE_EXCEEDED</c>), or the number for codes outside 0..16.</summary>
    public static string ToWireName(this GrpcStatusCode code)
        => (uint)code < (uint)Names.Length ? Names[(int)code] : ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Parses a <c>grpc-status</c> value: a non-negative decimal integer. Codes outside 0..16 are
    /// returned as <see cref="GrpcStatusCode.Unknown"/>, as statuscodes.md asks of clients.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<char> value, out GrpcStatusCode code)
    {
        code = GrpcStatusCode.Unknown;
        if (value.IsEmpty || value.Length > 10)
            return false;
        long n = 0;
        foreach (char c in value)
        {
            if (c < '0' || c > '9')
                return false;
            n = n * 10 + (c - '0');
        }
        code = n <= (long)GrpcStatusCode.Unauthenticated ? (GrpcStatusCode)n : GrpcStatusCode.Unknown;
        return true;
    }

    /// <summary>
    /// The gRPC status a client derives from a non-200 HTTP status when the response carries no
    /// <c>grpc-status</c> (grpc/grpc doc/http-grpc-status-mapping.md).
    /// </summary>
    public static GrpcStatusCode FromHttpStatus(int httpStatus) => httpStatus switch
    {
        400 => GrpcStatusCode.Internal,
        401 => GrpcStatusCode.Unauthenticated,
        403 => GrpcStatusCode.PermissionDenied,
        404 => GrpcStatusCode.Unimplemented,
        429 or 502 or 503 or 504 => GrpcStatusCode.Unavailable,
        _ => GrpcStatusCode.Unknown,
    };
}
