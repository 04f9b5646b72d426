namespace Hypervisor.Protocol.VhostUser;

/// <summary>What was wrong with a malformed vhost-user message.</summary>
public enum VhostUserError
{
    /// <summary>Fewer than 12 header bytes arrived.</summary>
    ShortHeader,
    /// <summary>The version bits of the flags are not 1.</summary>
    BadVersion,
    /// <summary>The header announces a payload larger than any message defines.</summary>
    PayloadTooLarge,
    /// <summary>The front-end sent a message with the REPLY flag.</summary>
    UnexpectedReply,
    /// <summary>The payload size does not match what the request type carries.</summary>
    BadPayloadSize,
    /// <summary>A field holds a value outside its allowed range.</summary>
    BadField,
    /// <summary>The message came with the wrong number of file descriptors.</summary>
    BadFdCount,
}

/// <summary>
/// A vhost-user message that breaks the wire format. This is a protocol violation by the front-end,
/// distinct from a request that is well-formed but cannot be carried out.
/// </summary>
public sealed class VhostUserProtocolException : Exception
{
    /// <summary>The kind of violation.</summary>
    public VhostUserError Error { get; }
    /// <summary>The request type of the offending message (<see cref="VhostUserRequest.None"/> if the header was unreadable).</summary>
    public VhostUserRequest Request { get; }

    /// <summary>Creates the exception; <paramref name="detail"/> is one sentence without a trailing period.</summary>
    public VhostUserProtocolException(VhostUserError error, VhostUserRequest request, string detail)
        : base($"malformed vhost-user {request} message: {detail}.")
    {
        Error = error;
        Request = request;
    }
}
