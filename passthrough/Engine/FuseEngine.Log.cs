using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Engine;

public sealed partial class FuseEngine
{
    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "FUSE session started: protocol 7.{Minor} (client 7.{ClientMinor}), flags {Flags}, max_write {MaxWrite}")]
    private partial void LogInit(uint minor, uint clientMinor, InitFlagsLog flags, uint maxWrite);

    [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "FUSE client speaks protocol {Major}.{Minor}; this daemon needs 7.{MinimumMinor} or newer")]
    private partial void LogUnsupportedVersion(uint major, uint minor, uint minimumMinor);

    [LoggerMessage(EventId = 202, Level = LogLevel.Warning, Message = "Dropped {Error}")]
    private partial void LogMalformed(string error);

    [LoggerMessage(EventId = 203, Level = LogLevel.Error, Message = "Request {Opcode} unique {Unique} failed unexpectedly; replied EIO")]
    private partial void LogUnexpected(Exception exception, uint opcode, ulong unique);

    [LoggerMessage(EventId = 204, Level = LogLevel.Debug, Message = "Request {Opcode} before INIT, unique {Unique}: replied EIO")]
    private partial void LogBeforeInit(uint opcode, ulong unique);

    [LoggerMessage(EventId = 205, Level = LogLevel.Trace, Message = "{Opcode} unique {Unique} node {Node} -> {Result}")]
    private partial void LogRequest(Protocol.Fuse.FuseOpcode opcode, ulong unique, ulong node, int result);

    /// <summary>Formats init flags as hex in log lines without boxing the enum per call.</summary>
    private readonly record struct InitFlagsLog(ulong Value)
    {
        public override string ToString() => $"0x{Value:x}";
    }
}
