using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// An in-memory <see cref="IShareControl"/> for unit tests of the control service: it keeps the
/// settings and allowlist in fields and records calls, so tests can check that RPCs reach the
/// daemon with the right arguments. It is not the passthrough daemon; that integration is tested
/// with the daemon itself.
/// </summary>
public sealed class InMemoryShareControl : IShareControl
{
    private readonly object _lock = new();
    private readonly SortedSet<string> _allowed = new(StringComparer.Ordinal);
    private bool _allowlistEnabled;
    private ShareOptions _options = new() { DirectIo = false, CachePolicy = CachePolicy.Auto, Readonly = false, Xattr = true, Writeback = false };
    private readonly TaskCompletionSource _shutdown = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string SharedDirectory { get; init; } = "/srv/share";
    public string Tag { get; init; } = "share0";
    public TimeSpan Uptime { get; init; } = TimeSpan.FromSeconds(3723.5);
    public List<OpcodeCounters> Opcodes { get; } =
    [
        new() { Opcode = 15, Name = "READ", Requests = 40 },
        new() { Opcode = 1, Name = "LOOKUP", Requests = 120, Errors = 7 },
        new() { Opcode = 26, Name = "INIT", Requests = 1 },
    ];
    public ulong OpenFileHandles { get; set; } = 3;
    public ulong KnownNodes { get; set; } = 42;
    public IReadOnlyList<int> QueueCpus { get; set; } = [1, -1];
    public ulong BytesRead { get; set; } = 1_048_576;
    public ulong BytesWritten { get; set; } = 4096;

    /// <summary>When set, GetStatus waits this long (observing the token) before answering.</summary>
    public TimeSpan? GetStatusDelay { get; set; }

    /// <summary>When set, GetStatus ignores its token and waits this long: the server must still answer at the deadline.</summary>
    public TimeSpan? GetStatusDelayIgnoringToken { get; set; }

    /// <summary>When set, GetStatus throws it (to test the server's catch-all).</summary>
    public Exception? GetStatusFailure { get; set; }

    /// <summary>Whether a token passed to a slow GetStatus was cancelled.</summary>
    public bool SawCancellation { get; private set; }

    private int _shutdownCalls;

    public int ShutdownCalls => Volatile.Read(ref _shutdownCalls);

    public Task ShutdownCalled => _shutdown.Task;

    public ShareOptions Options
    {
        get { lock (_lock) return _options.Clone(); }
    }

    /// <summary>GetStatus calls that reached the share.</summary>
    public int GetStatusCalls => Volatile.Read(ref _getStatusCalls);

    private int _getStatusCalls;

    public async ValueTask<ShareStatus> GetStatusAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _getStatusCalls);
        if (GetStatusFailure is { } failure)
            throw failure;
        if (GetStatusDelay is { } delay)
        {
            try
            {
                await Task.Delay(delay, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                SawCancellation = true;
                throw;
            }
        }
        if (GetStatusDelayIgnoringToken is { } stubborn)
            await Task.Delay(stubborn, CancellationToken.None);
        lock (_lock)
        {
            var status = new ShareStatus
            {
                SharedDir = SharedDirectory, Tag = Tag, Options = _options.Clone(), Uptime = Duration.FromTimeSpan(Uptime),
                OpenFileHandles = OpenFileHandles, KnownNodes = KnownNodes, BytesRead = BytesRead, BytesWritten = BytesWritten,
                Allowlist = AllowlistLocked(),
            };
            status.Opcodes.AddRange(Opcodes.Select(o => o.Clone()));
            status.QueueCpus.AddRange(QueueCpus);
            return status;
        }
    }

    public ValueTask<ShareOptions> SetDirectIoAsync(bool enabled, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _options.DirectIo = enabled;
            return ValueTask.FromResult(_options.Clone());
        }
    }

    public ValueTask<ShareOptions> SetCachePolicyAsync(CachePolicy policy, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _options.CachePolicy = policy;
            return ValueTask.FromResult(_options.Clone());
        }
    }

    public ValueTask<Allowlist> AddAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _allowed.Add(normalizedPath);
            return ValueTask.FromResult(AllowlistLocked());
        }
    }

    public ValueTask<Allowlist> RemoveAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_allowed.Remove(normalizedPath))
                throw new RpcException(new Status(StatusCode.NotFound, $"\"{normalizedPath}\" is not in the allowlist."));
            return ValueTask.FromResult(AllowlistLocked());
        }
    }

    public ValueTask<Allowlist> ListAllowedPathsAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
            return ValueTask.FromResult(AllowlistLocked());
    }

    public ValueTask<Allowlist> SetAllowlistEnabledAsync(bool enabled, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _allowlistEnabled = enabled;
            return ValueTask.FromResult(AllowlistLocked());
        }
    }

    public ValueTask RequestShutdownAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _shutdownCalls);
        _shutdown.TrySetResult();
        return ValueTask.CompletedTask;
    }

    private Allowlist AllowlistLocked() => new() { Enabled = _allowlistEnabled, Entries = { _allowed } };
}
