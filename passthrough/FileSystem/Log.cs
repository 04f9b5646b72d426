using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.FileSystem;

internal static partial class Log
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Serving {Root} (file handles: {Handles}, fd cache {CacheSize})")]
    public static partial void Opened(ILogger logger, string root, bool handles, int cacheSize);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "Out of file descriptors (errno {Errno}) and none cached to give back; the request fails")]
    public static partial void OutOfDescriptors(ILogger logger, int errno);

    [LoggerMessage(EventId = 104, Level = LogLevel.Debug, Message = "At the descriptor limit (errno {Errno}): closed {Closed} cached descriptors, {Cached} left, and tried again")]
    public static partial void MadeRoom(ILogger logger, int errno, int closed, int cached);

    [LoggerMessage(EventId = 102, Level = LogLevel.Trace, Message = "Node {Node} dropped")]
    public static partial void NodeDropped(ILogger logger, ulong node);

    [LoggerMessage(EventId = 103, Level = LogLevel.Debug, Message = "Allowlist hides an entry below node {Node}")]
    public static partial void Hidden(ILogger logger, ulong node);

    [LoggerMessage(EventId = 105, Level = LogLevel.Error, Message = "A worker thread's filesystem ids could not be restored to fsuid {Uid} fsgid {Gid} after a request (they are fsuid {NowUid} fsgid {NowGid}); files that later requests on this thread create may get the wrong owner")]
    public static partial void CredentialsNotRestored(ILogger logger, uint uid, uint gid, uint nowUid, uint nowGid);

    [LoggerMessage(EventId = 106, Level = LogLevel.Warning, Message = "The caller's supplementary group {Gid} could not be taken for a create (errno {Errno}); it runs with the caller's uid and primary group only")]
    public static partial void GroupNotSet(ILogger logger, uint gid, int errno);

    [LoggerMessage(EventId = 107, Level = LogLevel.Error, Message = "A worker thread's supplementary groups could not be restored after a create (errno {Errno}); later requests on this thread may act with a guest caller's group")]
    public static partial void GroupsNotRestored(ILogger logger, int errno);

    [LoggerMessage(EventId = 141, Level = LogLevel.Warning, Message = "The state store is full ({Capacity} nodes): nodes looked up from now on do not survive a daemon restart")]
    public static partial void StateStoreFull(ILogger logger, int capacity);
}
