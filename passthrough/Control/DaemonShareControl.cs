using System.Diagnostics;
using Grpc.Core;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Fuse;
using Duration = Google.Protobuf.WellKnownTypes.Duration;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;
using Allowlist = Hypervisor.Protocol.Control.Allowlist;

namespace Hypervisor.Passthrough.Control;

/// <summary>How much of the share the guest is using right now.</summary>
/// <param name="OpenFileHandles">File and directory handles the guest holds open.</param>
/// <param name="KnownNodes">Inodes the guest holds lookup references to.</param>
/// <param name="BytesRead">Bytes returned by READ since start.</param>
/// <param name="BytesWritten">Bytes accepted by WRITE since start.</param>
public readonly record struct ShareUsage(ulong OpenFileHandles, ulong KnownNodes, ulong BytesRead, ulong BytesWritten);

/// <summary>
/// The daemon's side of the control service: applies settings to the share's live
/// <see cref="LiveSettings"/> (read lock-free by the filesystem on every request) and reports
/// the engine's counters and the filesystem's usage.
/// </summary>
/// <remarks>
/// The allowlist's entries are kept here, enabled or not; <see cref="LiveSettings.Allowlist"/>
/// holds them only while it is enabled (null means "everything visible"), so disabling and
/// enabling again restores the same list.
/// </remarks>
public sealed class DaemonShareControl : IShareControl
{
    private static readonly string[] OpcodeNames = BuildOpcodeNames();

    private readonly LiveSettings _settings;
    private readonly FuseCounters _counters;
    private readonly Func<ShareUsage> _usage;
    private readonly Action _requestShutdown;
    private readonly Func<IReadOnlyList<int>>? _queueCpus;
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly object _allowlistLock = new();
    private readonly SortedSet<string> _allowed = new(StringComparer.Ordinal);
    private bool _allowlistEnabled;

    /// <summary>
    /// The parts of the status that only an operator's change moves: built by the first GetStatus after a change (none
    /// before the first call, so nothing is added to the daemon's start), read without a lock until the next change
    /// drops them. Both happen under <see cref="_allowlistLock"/>, so parts built after a change always include it.
    /// Replies share these messages: nothing changes them once built.
    /// </summary>
    private volatile SettingsParts? _parts;

    /// <summary>The restart counters last reported and their message, reused while the state store reports the same.</summary>
    private volatile RestartsPart? _restarts;

    private sealed record SettingsParts(ShareOptions Options, Allowlist Allowlist, ShareSettings Settings);

    private sealed record RestartsPart(Hypervisor.Protocol.Recovery.RestartRecord Record, DaemonRestarts Message);

    /// <summary>
    /// Called with the live settings after every operator change (and once at start by the daemon): the daemon keeps
    /// them in the share's state store, so that a daemon started after a crash applies them too.
    /// </summary>
    public Action<ShareSettings>? SettingsChanged { get; init; }

    /// <summary>Reads the vdev's restart counters for the status; null when the share has no state store.</summary>
    public Func<Hypervisor.Protocol.Recovery.RestartRecord>? Restarts { get; init; }

    /// <summary>The live settings: the start-up ones with what operators changed since.</summary>
    public ShareSettings CurrentSettings() => Settings();

    private void Changed() => SettingsChanged?.Invoke(Settings());

    /// <param name="settings">The share's live settings.</param>
    /// <param name="counters">The engine's per-opcode counters.</param>
    /// <param name="usage">Reads the filesystem's current usage (called once per GetStatus).</param>
    /// <param name="requestShutdown">Starts the daemon's graceful stop. It is invoked on a thread-pool
    /// thread, never on the thread answering the Shutdown call, so it may wait for the control server to stop.</param>
    /// <param name="queueCpus">Reads where the ring's request queues are served (<see cref="ShareStatus.QueueCpus"/>);
    /// null, or an empty list, when the share is not on a ring.</param>
    public DaemonShareControl(LiveSettings settings, FuseCounters counters, Func<ShareUsage> usage, Action requestShutdown,
        Func<IReadOnlyList<int>>? queueCpus = null)
    {
        _queueCpus = queueCpus;
        _settings = settings;
        _counters = counters;
        _usage = usage;
        _requestShutdown = requestShutdown;
        if (settings.Allowlist is { } initial)
        {
            _allowed.UnionWith(initial.Paths);
            _allowlistEnabled = true;
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The settings, options and allowlist in the reply are the messages built after the last change, shared with every
    /// other reply until the next one (a caller must not change them); the counters, usage and uptime are read now.
    /// </remarks>
    public ValueTask<ShareStatus> GetStatusAsync(CancellationToken cancellationToken)
    {
        SettingsParts parts = _parts ?? BuildParts();
        ShareSettings start = _settings.Options;
        ShareUsage usage = _usage();
        var status = new ShareStatus
        {
            SharedDir = start.SharedDir,
            Tag = start.Tag,
            Options = parts.Options,
            Uptime = Duration.FromTimeSpan(Stopwatch.GetElapsedTime(_started)),
            OpenFileHandles = usage.OpenFileHandles,
            KnownNodes = usage.KnownNodes,
            BytesRead = usage.BytesRead,
            BytesWritten = usage.BytesWritten,
            Allowlist = parts.Allowlist,
            Settings = parts.Settings,
        };
        // Slot 0 collects opcodes the engine does not know.
        for (int op = 0; op < FuseCounters.Slots; op++)
        {
            long requests = _counters.Requests(op);
            if (requests != 0)
                status.Opcodes.Add(new OpcodeCounters { Opcode = (uint)op, Name = op == 0 ? "UNKNOWN" : OpcodeNames[op], Requests = (ulong)requests, Errors = (ulong)_counters.Errors(op) });
        }
        if (_queueCpus?.Invoke() is { Count: > 0 } cpus)
            status.QueueCpus.AddRange(cpus);
        if (Restarts?.Invoke() is { } restarts)
            status.Restarts = RestartsMessage(restarts);
        return ValueTask.FromResult(status);
    }

    /// <summary>The message for <paramref name="record"/>: the last one while the counters have not moved.</summary>
    private DaemonRestarts RestartsMessage(Hypervisor.Protocol.Recovery.RestartRecord record)
    {
        if (_restarts is { } last && last.Record == record)
            return last.Message;
        var message = new DaemonRestarts
        {
            Count = record.Count,
            LastCause = record.LastCause,
            LastWait = Duration.FromTimeSpan(TimeSpan.FromTicks(record.LastWaitNs / 100)),
            TotalWait = Duration.FromTimeSpan(TimeSpan.FromTicks(record.TotalWaitNs / 100)),
            Planned = record.Planned,
        };
        _restarts = new RestartsPart(record, message);
        return message;
    }

    /// <summary>The status's settings parts from the live settings, built once after each change.</summary>
    private SettingsParts BuildParts()
    {
        lock (_allowlistLock)
            return _parts ??= new SettingsParts(Options(), AllowlistLocked(), SettingsLocked());
    }

    /// <summary>Drops the status's settings parts after a change; every change calls it under <see cref="_allowlistLock"/>, after changing.</summary>
    private void ChangedLocked() => _parts = null;

    /// <summary>The start-up settings with what operators changed since: direct I/O, cache policy, the allowlist's entries.</summary>
    private ShareSettings Settings()
    {
        lock (_allowlistLock) return SettingsLocked();
    }

    private ShareSettings SettingsLocked()
    {
        var now = _settings.Options.Clone();
        now.DirectIo = _settings.DirectIo;
        now.Cache = _settings.Cache;
        now.Allow.Clear();
        now.Allow.AddRange(_allowed);
        return now;
    }

    /// <inheritdoc/>
    public ValueTask<ShareOptions> SetDirectIoAsync(bool enabled, CancellationToken cancellationToken)
    {
        lock (_allowlistLock)
        {
            _settings.DirectIo = enabled;
            ChangedLocked();
        }
        Changed();
        return ValueTask.FromResult(Options());
    }

    /// <inheritdoc/>
    public ValueTask<ShareOptions> SetCachePolicyAsync(CachePolicy policy, CancellationToken cancellationToken)
    {
        // The service has checked that the policy is one of the four (IShareControl's contract).
        lock (_allowlistLock)
        {
            _settings.Cache = policy;
            ChangedLocked();
        }
        Changed();
        return ValueTask.FromResult(Options());
    }

    /// <inheritdoc/>
    public ValueTask<Allowlist> AddAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken)
    {
        lock (_allowlistLock)
            return _allowed.Add(normalizedPath) ? PublishLocked() : ValueTask.FromResult(AllowlistLocked());
    }

    /// <inheritdoc/>
    public ValueTask<Allowlist> RemoveAllowedPathAsync(string normalizedPath, CancellationToken cancellationToken)
    {
        lock (_allowlistLock)
        {
            if (!_allowed.Remove(normalizedPath))
                throw new RpcException(new Status(StatusCode.NotFound, $"\"{normalizedPath}\" is not in the allowlist; list it with ListAllowedPaths."));
            return PublishLocked();
        }
    }

    /// <inheritdoc/>
    public ValueTask<Allowlist> ListAllowedPathsAsync(CancellationToken cancellationToken) => ValueTask.FromResult(Allowlist());

    /// <inheritdoc/>
    public ValueTask<Allowlist> SetAllowlistEnabledAsync(bool enabled, CancellationToken cancellationToken)
    {
        lock (_allowlistLock)
        {
            _allowlistEnabled = enabled;
            return PublishLocked();
        }
    }

    /// <summary>Asks the vdev for a planned restart and waits for its answer (the daemon's state store and restart bell); null without them.</summary>
    public Func<CancellationToken, Task<int>>? Restart { get; init; }

    /// <inheritdoc/>
    public ValueTask<int> RestartAsync(CancellationToken cancellationToken) => Restart is { } restart
        ? new ValueTask<int>(restart(cancellationToken))
        : throw new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.FailedPrecondition,
            "This daemon was not started by a vdev with a state store; restart it by stopping and starting it."));

    /// <inheritdoc/>
    public ValueTask RequestShutdownAsync(CancellationToken cancellationToken)
    {
        // The daemon's stop path disposes the control server, which waits for calls in flight,
        // this one included: running it here would make the Shutdown call wait for itself.
        ThreadPool.UnsafeQueueUserWorkItem(static stop => stop(), _requestShutdown, preferLocal: false);
        return ValueTask.CompletedTask;
    }

    private ShareOptions Options()
    {
        ShareSettings start = _settings.Options;
        return new ShareOptions { DirectIo = _settings.DirectIo, CachePolicy = _settings.Cache, Readonly = start.Readonly, Xattr = start.Xattr, Writeback = start.Writeback };
    }

    private Allowlist Allowlist()
    {
        lock (_allowlistLock)
            return AllowlistLocked();
    }

    private Allowlist AllowlistLocked() => new() { Enabled = _allowlistEnabled, Entries = { _allowed } };

    /// <summary>Publishes the list as it is now and returns it. A new immutable allowlist replaces the old one, so requests in flight see either.</summary>
    private ValueTask<Allowlist> PublishLocked()
    {
        _settings.Allowlist = _allowlistEnabled ? new Hypervisor.Passthrough.Share.Allowlist(_allowed) : null;
        ChangedLocked();
        Changed();
        return ValueTask.FromResult(AllowlistLocked());
    }

    private static string[] BuildOpcodeNames()
    {
        var names = new string[FuseCounters.Slots];
        for (int op = 0; op < names.Length; op++)
        {
            var opcode = (FuseOpcode)op;
            names[op] = opcode switch
            {
                // linux/fuse.h spells these with underscores.
                FuseOpcode.NotifyReply => "NOTIFY_REPLY",
                FuseOpcode.BatchForget => "BATCH_FORGET",
                FuseOpcode.CopyFileRange => "COPY_FILE_RANGE",
                FuseOpcode.CopyFileRange64 => "COPY_FILE_RANGE_64",
                _ => Enum.IsDefined(opcode) ? opcode.ToString().ToUpperInvariant() : "OPCODE_" + op.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
        }
        return names;
    }
}
