using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Device;

/// <summary>Source-generated log lines of the device: no formatting cost when the level is off.</summary>
internal static partial class VdevLog
{
    [LoggerMessage(EventId = 20, Level = LogLevel.Warning, Message = "queue {Queue}: descriptor chain at head {Head} rejected ({Reason}); completed with length 0 (rejected so far: {Count})")]
    public static partial void BadChain(ILogger log, int queue, int head, string reason, long count);

    [LoggerMessage(EventId = 21, Level = LogLevel.Error, Message = "queue {Queue} marked broken: {Reason}; it stays stopped until the VMM resets or restarts it")]
    public static partial void QueueBroken(ILogger log, int queue, string reason);

    [LoggerMessage(EventId = 22, Level = LogLevel.Error, Message = "the FUSE daemon is gone ({Reason}); answering {Count} outstanding and all further requests with EIO")]
    public static partial void TransportFailed(ILogger log, string reason, int count);

    [LoggerMessage(EventId = 23, Level = LogLevel.Warning, Message = "queue {Queue}: reply of {Length} bytes for unique {Unique} does not fit the guest's {Space} writable bytes; answered EIO")]
    public static partial void ReplyTooLarge(ILogger log, int queue, int length, ulong unique, int space);

    [LoggerMessage(EventId = 24, Level = LogLevel.Warning, Message = "queue {Queue}: {Count} requests still in flight after {Ms} ms when the ring stopped; their replies will be dropped")]
    public static partial void DrainTimeout(ILogger log, int queue, int count, int ms);

    [LoggerMessage(EventId = 25, Level = LogLevel.Error, Message = "queue {Queue}: the transport failed on opcode {Opcode} unique {Unique}; answered EIO")]
    public static partial void SubmitFailed(ILogger log, int queue, uint opcode, ulong unique, Exception e);

    [LoggerMessage(EventId = 26, Level = LogLevel.Error, Message = "queue {Queue}: worker failed unexpectedly")]
    public static partial void WorkerCrashed(ILogger log, int queue, Exception e);

    [LoggerMessage(EventId = 27, Level = LogLevel.Debug, Message = "queue {Queue}: request opcode {Opcode} unique {Unique}, {Readable} readable / {Writable} writable bytes")]
    public static partial void Request(ILogger log, int queue, uint opcode, ulong unique, int readable, int writable);

    [LoggerMessage(EventId = 28, Level = LogLevel.Warning, Message = "queue {Queue}: signalling the call eventfd failed with errno {Errno}")]
    public static partial void CallFailed(ILogger log, int queue, int errno);

    [LoggerMessage(EventId = 29, Level = LogLevel.Warning, Message = "queue {Queue}: the worker could not be placed on CPU {Cpu} (errno {Errno}); it runs where the scheduler puts it")]
    public static partial void WorkerNotPinned(ILogger log, int queue, int cpu, int errno);
}
