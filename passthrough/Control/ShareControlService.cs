using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.HealthCheck;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.Control;

/// <summary>
/// <c>hypervisor.control.v1.ShareControl</c>: argument validation, the state checks, and the call into
/// <see cref="IShareControl"/>.
/// </summary>
/// <remarks>
/// Each call waits for the daemon at most until the caller's deadline: Grpc.AspNetCore answers
/// DEADLINE_EXCEEDED at the deadline and cancels the call's token, and the handler then returns
/// even if the operation does not observe the token, so that a stuck operation does not hold the
/// server's shutdown.
/// </remarks>
internal sealed class ShareControlService(IShareControl share, ControlServerState state) : ShareControl.ShareControlBase
{
    /// <summary>The service's full name, as health and reflection report it.</summary>
    public static string Name => ShareControl.Descriptor.FullName;

    public override Task<ShareStatus> GetStatus(GetStatusRequest request, ServerCallContext context)
    {
        // The status is read from memory and is ready at once: then the reply needs no state machine of its own.
        ValueTask<ShareStatus> status = share.GetStatusAsync(context.CancellationToken);
        return status.IsCompletedSuccessfully ? Task.FromResult(Sorted(status.Result)) : SortedWithin(status, context);
    }

    private static async Task<ShareStatus> SortedWithin(ValueTask<ShareStatus> status, ServerCallContext context)
        => Sorted(await Within(status, context).ConfigureAwait(false));

    public override async Task<ShareOptions> SetDirectIo(SetDirectIoRequest request, ServerCallContext context)
        => await Within(Serving().SetDirectIoAsync(request.Enabled, context.CancellationToken), context).ConfigureAwait(false);

    public override async Task<ShareOptions> SetCachePolicy(SetCachePolicyRequest request, ServerCallContext context)
    {
        if (request.Policy is not (CachePolicy.Never or CachePolicy.Metadata or CachePolicy.Auto or CachePolicy.Always))
            throw new RpcException(new Status(StatusCode.InvalidArgument,
                $"Cache policy {(int)request.Policy} is not one of never (1), metadata (2), auto (3) or always (4); choose one of them."));
        return await Within(Serving().SetCachePolicyAsync(request.Policy, context.CancellationToken), context).ConfigureAwait(false);
    }

    public override async Task<Allowlist> AddAllowedPath(AllowedPathRequest request, ServerCallContext context)
    {
        string path = Normalize(request.Path);
        return Sorted(await Within(Serving().AddAllowedPathAsync(path, context.CancellationToken), context).ConfigureAwait(false));
    }

    public override async Task<Allowlist> RemoveAllowedPath(AllowedPathRequest request, ServerCallContext context)
    {
        string path = Normalize(request.Path);
        return Sorted(await Within(Serving().RemoveAllowedPathAsync(path, context.CancellationToken), context).ConfigureAwait(false));
    }

    public override async Task<Allowlist> ListAllowedPaths(ListAllowedPathsRequest request, ServerCallContext context)
        => Sorted(await Within(share.ListAllowedPathsAsync(context.CancellationToken), context).ConfigureAwait(false));

    public override async Task<Allowlist> SetAllowlistEnabled(SetAllowlistEnabledRequest request, ServerCallContext context)
        => Sorted(await Within(Serving().SetAllowlistEnabledAsync(request.Enabled, context.CancellationToken), context).ConfigureAwait(false));

    public override async Task<ShutdownResponse> Shutdown(ShutdownRequest request, ServerCallContext context)
    {
        // Health turns NOT_SERVING before the daemon starts winding down, so that probes stop
        // routing work here as early as possible. A second Shutdown is harmless.
        if (state.BeginShutdown())
        {
            ValueTask requested = share.RequestShutdownAsync(context.CancellationToken);
            if (!requested.IsCompletedSuccessfully)
                await requested.AsTask().WaitAsync(context.CancellationToken).ConfigureAwait(false);
        }
        return new ShutdownResponse();
    }

    public override async Task<RestartResponse> Restart(RestartRequest request, ServerCallContext context)
        => new RestartResponse { NewPid = await Serving().RestartAsync(context.CancellationToken).ConfigureAwait(false) };

    /// <summary>The share, for a call that changes it; UNAVAILABLE once it is shutting down.</summary>
    private IShareControl Serving() => state.IsServing ? share
        : throw new RpcException(new Status(StatusCode.Unavailable, "The share is shutting down; settings can no longer be changed."));

    private static string Normalize(string path)
    {
        if (!AllowlistPath.TryNormalize(path, out string normalized, out string error))
            throw new RpcException(new Status(StatusCode.InvalidArgument, error));
        return normalized;
    }

    /// <summary>The operation's result, or cancellation once the call's token is cancelled, whichever comes first.</summary>
    private static ValueTask<T> Within<T>(ValueTask<T> operation, ServerCallContext context)
        => operation.IsCompletedSuccessfully ? operation : new ValueTask<T>(operation.AsTask().WaitAsync(context.CancellationToken));

    /// <summary>Whether the entries are already in ordinal order (the daemon keeps them so): then nothing is copied.</summary>
    private static bool InOrder(Google.Protobuf.Collections.RepeatedField<string> entries)
    {
        for (int i = 1; i < entries.Count; i++)
        {
            if (string.CompareOrdinal(entries[i - 1], entries[i]) > 0)
                return false;
        }
        return true;
    }

    /// <summary>Whether the counters are already by opcode (the daemon reports them so): then nothing is copied.</summary>
    private static bool InOrder(Google.Protobuf.Collections.RepeatedField<OpcodeCounters> opcodes)
    {
        for (int i = 1; i < opcodes.Count; i++)
        {
            if (opcodes[i - 1].Opcode > opcodes[i].Opcode)
                return false;
        }
        return true;
    }

    /// <summary>Entries in ordinal order, as the allowlist's contract says.</summary>
    internal static Allowlist Sorted(Allowlist allowlist)
    {
        if (InOrder(allowlist.Entries))
            return allowlist;
        var entries = allowlist.Entries.Order(StringComparer.Ordinal).ToArray();
        allowlist.Entries.Clear();
        allowlist.Entries.AddRange(entries);
        return allowlist;
    }

    /// <summary>Opcodes by number and the allowlist in order, as the status's contract says.</summary>
    internal static ShareStatus Sorted(ShareStatus status)
    {
        if (!InOrder(status.Opcodes))
        {
            var opcodes = status.Opcodes.OrderBy(static c => c.Opcode).ToArray();
            status.Opcodes.Clear();
            status.Opcodes.AddRange(opcodes);
        }
        if (status.Allowlist is not null) Sorted(status.Allowlist);
        return status;
    }
}

/// <summary>
/// Serving state shared by the share's service, the health service and the server: SERVING for
/// <c>""</c> and the share's service until a Shutdown call or <see cref="StopServing"/>, then
/// NOT_SERVING for good.
/// </summary>
internal sealed class ControlServerState
{
    private readonly HealthServiceImpl _health;
    private int _shuttingDown;
    private readonly TaskCompletionSource _shutdownRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ControlServerState(ControlHealthService health)
    {
        _health = health;
        _health.SetStatus(string.Empty, HealthCheckResponse.Types.ServingStatus.Serving);
        _health.SetStatus(ShareControlService.Name, HealthCheckResponse.Types.ServingStatus.Serving);
    }

    public bool IsServing => Volatile.Read(ref _shuttingDown) == 0;

    /// <summary>Completes when a Shutdown call was received.</summary>
    public Task ShutdownRequested => _shutdownRequested.Task;

    /// <summary>Marks the share NOT_SERVING because of a Shutdown call; true the first time.</summary>
    public bool BeginShutdown()
    {
        bool first = StopServing();
        _shutdownRequested.TrySetResult();
        return first;
    }

    /// <summary>Marks the share NOT_SERVING; true the first time.</summary>
    public bool StopServing()
    {
        if (Interlocked.Exchange(ref _shuttingDown, 1) != 0)
            return false;
        _health.SetStatus(string.Empty, HealthCheckResponse.Types.ServingStatus.NotServing);
        _health.SetStatus(ShareControlService.Name, HealthCheckResponse.Types.ServingStatus.NotServing);
        return true;
    }
}
