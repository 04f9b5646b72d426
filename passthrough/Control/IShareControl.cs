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
    /// <summary>Settings, counters and allowlist of the share.</summary>
    ValueTask<ShareStatusSnapshot> GetStatusAsync(CancellationToken cancellationToken);

    /// <summary>Turns direct I/O on or off for every open from now on; returns the options after the change.</summary>
    ValueTask<ShareOptionsSnapshot> SetDirectIoAsync(bool enabled, CancellationToken cancellationToken);

    /// <summary>Changes the cache policy for replies from now on; returns the options after the change.</summary>
    ValueTask<ShareOptionsSnapshot> SetCachePolicyAsync(CachePolicy policy, CancellationToken cancellationToken);

    /// <summary>Adds a normalised path to the allowlist (adding a listed path again is not an error).</summary>
    ValueTask<AllowlistSnapshot> AddAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken);

    /// <summary>Removes a normalised path; throws a NOT_FOUND <see cref="Grpc.Core.RpcException"/> if it is not listed.</summary>
    ValueTask<AllowlistSnapshot> RemoveAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken);

    /// <summary>The allowlist as it is.</summary>
    ValueTask<AllowlistSnapshot> ListAllowedPathsAsync(CancellationToken cancellationToken);

    /// <summary>Starts or stops enforcing the allowlist; entries are kept either way.</summary>
    ValueTask<AllowlistSnapshot> SetAllowlistEnabledAsync(bool enabled, CancellationToken cancellationToken);

    /// <summary>
    /// Starts a graceful shutdown and returns without waiting for it: the reply to the Shutdown
    /// call is sent after this returns, and the daemon then finishes in-flight requests, stops
    /// the control server and exits.
    /// </summary>
    ValueTask RequestShutdownAsync(CancellationToken cancellationToken);
}

/// <summary>The share's options as they apply to requests from now on.</summary>
/// <param name="DirectIo">FOPEN_DIRECT_IO is set on every OPEN/CREATE reply.</param>
/// <param name="CachePolicy">Cache policy (never, metadata, auto, always).</param>
/// <param name="ReadOnly">Every modifying request fails with EROFS.</param>
/// <param name="Xattr">Extended attribute requests are served (otherwise ENOSYS).</param>
/// <param name="Writeback">The guest's writeback cache was negotiated.</param>
public readonly record struct ShareOptionsSnapshot(bool DirectIo, CachePolicy CachePolicy, bool ReadOnly, bool Xattr, bool Writeback);

/// <summary>Requests and error replies seen for one FUSE opcode.</summary>
/// <param name="Opcode">The opcode number of linux/fuse.h (e.g. 1 for LOOKUP).</param>
/// <param name="Name">The opcode name without the FUSE_ prefix (e.g. "LOOKUP").</param>
/// <param name="Requests">Requests received.</param>
/// <param name="Errors">Requests answered with a non-zero error.</param>
public readonly record struct OpcodeCounterSnapshot(uint Opcode, string Name, ulong Requests, ulong Errors);

/// <summary>The allowlist: whether it is enforced, and its normalised entries.</summary>
public sealed record AllowlistSnapshot(bool Enabled, IReadOnlyList<string> Entries);

/// <summary>One share's state, as reported by GetStatus.</summary>
/// <param name="SharedDirectory">The host directory served, absolute.</param>
/// <param name="Tag">The virtio-fs mount tag the guest uses.</param>
/// <param name="Options">Current options.</param>
/// <param name="Uptime">Time since the daemon started serving.</param>
/// <param name="Opcodes">Counters of opcodes seen at least once (the server sorts them by opcode).</param>
/// <param name="OpenFileHandles">File and directory handles currently open by the guest.</param>
/// <param name="KnownNodes">Inodes the guest currently holds a lookup reference to.</param>
/// <param name="BytesRead">Bytes returned by READ since start.</param>
/// <param name="BytesWritten">Bytes accepted by WRITE since start.</param>
/// <param name="Allowlist">The allowlist.</param>
public sealed record ShareStatusSnapshot(
    string SharedDirectory,
    string Tag,
    ShareOptionsSnapshot Options,
    TimeSpan Uptime,
    IReadOnlyList<OpcodeCounterSnapshot> Opcodes,
    ulong OpenFileHandles,
    ulong KnownNodes,
    ulong BytesRead,
    ulong BytesWritten,
    AllowlistSnapshot Allowlist)
{
    /// <summary>
    /// The CPU each request queue's ring dispatcher is pinned to, request queue 1 first; -1 where it is not pinned.
    /// Empty when the share is not served on a ring.
    /// </summary>
    public IReadOnlyList<int> QueueCpus { get; init; } = [];
}
