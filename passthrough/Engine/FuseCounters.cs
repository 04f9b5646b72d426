namespace Hypervisor.Passthrough.Engine;

/// <summary>Per-opcode request and error counts since the daemon started; updated lock-free by the engine.</summary>
public sealed class FuseCounters
{
    /// <summary>Opcodes are below 64 except CUSE_INIT, which is counted as unknown.</summary>
    public const int Slots = 64;

    private readonly long[] _requests = new long[Slots];
    private readonly long[] _errors = new long[Slots];
    private long _malformed;

    internal void Count(uint opcode, bool failed)
    {
        var slot = opcode < Slots ? (int)opcode : 0;
        Interlocked.Increment(ref _requests[slot]);
        if (failed) Interlocked.Increment(ref _errors[slot]);
    }

    internal void CountMalformed() => Interlocked.Increment(ref _malformed);

    /// <summary>Requests seen with this opcode (slot 0 collects unknown opcodes).</summary>
    public long Requests(int opcode) => Volatile.Read(ref _requests[opcode]);

    /// <summary>Requests with this opcode answered with an error.</summary>
    public long Errors(int opcode) => Volatile.Read(ref _errors[opcode]);

    /// <summary>Frames dropped or refused as malformed.</summary>
    public long Malformed => Volatile.Read(ref _malformed);
}
