using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.Control;

/// <summary>
/// What the control service asks of the daemon serving one share. The daemon implements it;
/// <see cref="ControlServer"/> turns gRPC calls into these calls and their results into replies.
/// </summary>
/// <remarks>
/// Contract for implementations:
/// <list type="bullet">
/// <item>Calls arrive concurrently from any thread; each must be safe against the FUSE request
/// path running at the same time.</item>
/// <item>Arguments are already validated: allowlist paths are normalised
/// (<see cref="AllowlistPath.TryNormalize"/>), cache policies are one of the four defined values.</item>
/// <item>To fail a call with a specific status, throw <see cref="Grpc.Core.RpcException"/>
/// (e.g. NOT_FOUND when removing a path that is not listed, FAILED_PRECONDITION when a setting
/// cannot change now). Any other exception is logged and reported as INTERNAL.</item>
/// <item>The token is cancelled when the caller's deadline passes or the caller goes away; the
/// caller receives DEADLINE_EXCEEDED at its deadline whether or not the operation observes it.</item>
/// </list>
/// </remarks>
public interface IShareControl
{
    /// <summary>Settings, counters and allowlist of the share (the service sorts opcodes and entries).</summary>
    ValueTask<ShareStatus> GetStatusAsync(CancellationToken cancellationToken);

    /// <summary>Turns direct I/O on or off for every open from now on; returns the options after the change.</summary>
    ValueTask<ShareOptions> SetDirectIoAsync(bool enabled, CancellationToken cancellationToken);

    /// <summary>Changes the cache policy for replies from now on; returns the options after the change.</summary>
    ValueTask<ShareOptions> SetCachePolicyAsync(CachePolicy policy, CancellationToken cancellationToken);

    /// <summary>Adds a normalised path to the allowlist (adding a listed path again is not an error).</summary>
    ValueTask<Allowlist> AddAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken);

    /// <summary>Removes a normalised path; throws a NOT_FOUND <see cref="Grpc.Core.RpcException"/> if it is not listed.</summary>
    ValueTask<Allowlist> RemoveAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken);

    /// <summary>The allowlist as it is.</summary>
    ValueTask<Allowlist> ListAllowedPathsAsync(CancellationToken cancellationToken);

    /// <summary>Starts or stops enforcing the allowlist; entries are kept either way.</summary>
    ValueTask<Allowlist> SetAllowlistEnabledAsync(bool enabled, CancellationToken cancellationToken);

    /// <summary>
    /// Starts a graceful shutdown and returns without waiting for it: the reply to the Shutdown
    /// call is sent after this returns, and the daemon then finishes in-flight requests, stops
    /// the control server and exits.
    /// </summary>
    ValueTask RequestShutdownAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Asks the vdev to replace this daemon (a planned restart) and returns the pid of the daemon serving once it is
    /// done. Throws a FAILED_PRECONDITION <see cref="Grpc.Core.RpcException"/> when no vdev can (the default), ABORTED
    /// when the restart failed.
    /// </summary>
    ValueTask<int> RestartAsync(CancellationToken cancellationToken)
        => throw new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.FailedPrecondition,
            "This daemon was not started by a vdev with a state store; restart it by stopping and starting it."));
}
