using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Control.Health;
using Hypervisor.Protocol.Grpc;

namespace Hypervisor.Passthrough.Control;

/// <summary>One unary method: how to parse its request and how to answer it.</summary>
internal sealed class UnaryMethod(string path, MessageParser parser, Func<IMessage, CancellationToken, ValueTask<IMessage>> invoke)
{
    public string Path { get; } = path;
    public MessageParser Parser { get; } = parser;
    public Func<IMessage, CancellationToken, ValueTask<IMessage>> Invoke { get; } = invoke;
}

/// <summary>
/// The methods of <c>hypervisor.control.v1.ShareControl</c> and <c>grpc.health.v1.Health</c>:
/// argument validation, the call into <see cref="IShareControl"/>, and the mapping of its plain
/// results onto the generated messages.
/// </summary>
internal sealed class ControlMethods
{
    public const string ShareControlService = "hypervisor.control.v1.ShareControl";
    public const string HealthService = "grpc.health.v1.Health";
    public static readonly string HealthWatchPath = GrpcProtocol.MethodPath(HealthService, "Watch");

    private readonly IShareControl _share;
    private readonly ControlServerState _state;
    private readonly Dictionary<string, UnaryMethod> _unary = new(StringComparer.Ordinal);

    public ControlMethods(IShareControl share, ControlServerState state)
    {
        _share = share;
        _state = state;
        Add(ShareControlService, "GetStatus", GetStatusRequest.Parser, GetStatusAsync);
        Add(ShareControlService, "SetDirectIo", SetDirectIoRequest.Parser, SetDirectIoAsync);
        Add(ShareControlService, "SetCachePolicy", SetCachePolicyRequest.Parser, SetCachePolicyAsync);
        Add(ShareControlService, "AddAllowedPath", AllowedPathRequest.Parser, AddAllowedPathAsync);
        Add(ShareControlService, "RemoveAllowedPath", AllowedPathRequest.Parser, RemoveAllowedPathAsync);
        Add(ShareControlService, "ListAllowedPaths", ListAllowedPathsRequest.Parser, ListAllowedPathsAsync);
        Add(ShareControlService, "SetAllowlistEnabled", SetAllowlistEnabledRequest.Parser, SetAllowlistEnabledAsync);
        Add(ShareControlService, "Shutdown", ShutdownRequest.Parser, ShutdownAsync);
        Add(HealthService, "Check", HealthCheckRequest.Parser, HealthCheckAsync);
    }

    public bool TryGetUnary(string path, out UnaryMethod method) => _unary.TryGetValue(path, out method!);

    /// <summary>The health of <paramref name="service"/>, or null for a service this server does not know.</summary>
    public HealthCheckResponse.Types.ServingStatus? HealthOf(string service)
    {
        if (service.Length != 0 && service != ShareControlService && service != HealthService)
            return null;
        return _state.IsServing ? HealthCheckResponse.Types.ServingStatus.Serving : HealthCheckResponse.Types.ServingStatus.NotServing;
    }

    private void Add<TRequest>(string service, string method, MessageParser<TRequest> parser,
        Func<TRequest, CancellationToken, ValueTask<IMessage>> invoke) where TRequest : IMessage<TRequest>
    {
        string path = GrpcProtocol.MethodPath(service, method);
        _unary.Add(path, new UnaryMethod(path, parser, (request, ct) => invoke((TRequest)request, ct)));
    }

    private void ThrowIfShuttingDown()
    {
        if (!_state.IsServing)
            throw new GrpcException(GrpcStatusCode.Unavailable, "The share is shutting down; settings can no longer be changed.");
    }

    private async ValueTask<IMessage> GetStatusAsync(GetStatusRequest request, CancellationToken ct)
        => ToMessage(await _share.GetStatusAsync(ct).ConfigureAwait(false));

    private async ValueTask<IMessage> SetDirectIoAsync(SetDirectIoRequest request, CancellationToken ct)
    {
        ThrowIfShuttingDown();
        return ToMessage(await _share.SetDirectIoAsync(request.Enabled, ct).ConfigureAwait(false));
    }

    private async ValueTask<IMessage> SetCachePolicyAsync(SetCachePolicyRequest request, CancellationToken ct)
    {
        if (request.Policy is not (CachePolicy.Never or CachePolicy.Metadata or CachePolicy.Auto or CachePolicy.Always))
            throw new GrpcException(GrpcStatusCode.InvalidArgument,
                $"Cache policy {(int)request.Policy} is not one of never (1), metadata (2), auto (3) or always (4); choose one of them.");
        ThrowIfShuttingDown();
        return ToMessage(await _share.SetCachePolicyAsync(request.Policy, ct).ConfigureAwait(false));
    }

    private async ValueTask<IMessage> AddAllowedPathAsync(AllowedPathRequest request, CancellationToken ct)
    {
        string path = Normalize(request.Path);
        ThrowIfShuttingDown();
        return ToMessage(await _share.AddAllowedPathAsync(path, ct).ConfigureAwait(false));
    }

    private async ValueTask<IMessage> RemoveAllowedPathAsync(AllowedPathRequest request, CancellationToken ct)
    {
        string path = Normalize(request.Path);
        ThrowIfShuttingDown();
        return ToMessage(await _share.RemoveAllowedPathAsync(path, ct).ConfigureAwait(false));
    }

    private async ValueTask<IMessage> ListAllowedPathsAsync(ListAllowedPathsRequest request, CancellationToken ct)
        => ToMessage(await _share.ListAllowedPathsAsync(ct).ConfigureAwait(false));

    private async ValueTask<IMessage> SetAllowlistEnabledAsync(SetAllowlistEnabledRequest request, CancellationToken ct)
    {
        ThrowIfShuttingDown();
        return ToMessage(await _share.SetAllowlistEnabledAsync(request.Enabled, ct).ConfigureAwait(false));
    }

    private async ValueTask<IMessage> ShutdownAsync(ShutdownRequest request, CancellationToken ct)
    {
        // Health turns NOT_SERVING before the daemon starts winding down, so that probes stop
        // routing work here as early as possible. A second Shutdown is harmless.
        bool first = _state.BeginShutdown();
        if (first)
            await _share.RequestShutdownAsync(ct).ConfigureAwait(false);
        return new ShutdownResponse();
    }

    private ValueTask<IMessage> HealthCheckAsync(HealthCheckRequest request, CancellationToken ct)
    {
        HealthCheckResponse.Types.ServingStatus? status = HealthOf(request.Service);
        if (status is null)
            throw new GrpcException(GrpcStatusCode.NotFound, $"Unknown service \"{request.Service}\"; ask for \"\" or \"{ShareControlService}\".");
        return ValueTask.FromResult<IMessage>(new HealthCheckResponse { Status = status.Value });
    }

    private static string Normalize(string path)
    {
        if (!AllowlistPath.TryNormalize(path, out string normalized, out string error))
            throw new GrpcException(GrpcStatusCode.InvalidArgument, error);
        return normalized;
    }

    internal static ShareOptions ToMessage(ShareOptionsSnapshot o) => new()
    {
        DirectIo = o.DirectIo,
        CachePolicy = o.CachePolicy,
        Readonly = o.ReadOnly,
        Xattr = o.Xattr,
        Writeback = o.Writeback,
    };

    internal static Allowlist ToMessage(AllowlistSnapshot a)
    {
        var message = new Allowlist { Enabled = a.Enabled };
        var entries = new List<string>(a.Entries);
        entries.Sort(StringComparer.Ordinal);
        message.Entries.AddRange(entries);
        return message;
    }

    internal static ShareStatus ToMessage(ShareStatusSnapshot s)
    {
        var message = new ShareStatus
        {
            SharedDir = s.SharedDirectory,
            Tag = s.Tag,
            Options = ToMessage(s.Options),
            Uptime = Duration.FromTimeSpan(s.Uptime < TimeSpan.Zero ? TimeSpan.Zero : s.Uptime),
            OpenFileHandles = s.OpenFileHandles,
            KnownNodes = s.KnownNodes,
            BytesRead = s.BytesRead,
            BytesWritten = s.BytesWritten,
            Allowlist = ToMessage(s.Allowlist),
        };
        var opcodes = new List<OpcodeCounterSnapshot>(s.Opcodes);
        opcodes.Sort(static (a, b) => a.Opcode.CompareTo(b.Opcode));
        foreach (OpcodeCounterSnapshot c in opcodes)
            message.Opcodes.Add(new OpcodeCounters { Opcode = c.Opcode, Name = c.Name, Requests = c.Requests, Errors = c.Errors });
        message.QueueCpus.AddRange(s.QueueCpus);
        return message;
    }
}

/// <summary>Serving state shared by the methods, the health service and the server.</summary>
internal sealed class ControlServerState
{
    private int _shuttingDown;
    private readonly TaskCompletionSource _shutdownRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _notServing = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool IsServing => Volatile.Read(ref _shuttingDown) == 0;

    /// <summary>Completes when a Shutdown call was received.</summary>
    public Task ShutdownRequested => _shutdownRequested.Task;

    /// <summary>Completes when health turns NOT_SERVING, for whatever reason.</summary>
    public Task NotServing => _notServing.Task;

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
        bool first = Interlocked.Exchange(ref _shuttingDown, 1) == 0;
        _notServing.TrySetResult();
        return first;
    }
}
