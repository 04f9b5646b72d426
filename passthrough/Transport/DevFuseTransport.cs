using System.Runtime.InteropServices;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Transport;

/// <summary>
/// Serves the host kernel's own FUSE client: mounts the share at a directory through /dev/fuse and runs the engine
/// on the requests the kernel sends. The mount behaves like a virtiofs mount in a guest: every user may use it
/// (allow_other) and the kernel checks permissions (default_permissions). It is nodev and nosuid unless asked
/// otherwise, as libfuse mounts: the share's files belong to whoever may write the host directory, and a device node
/// or set-user-ID program made there must not reach the host's devices or gain privileges on the host.
/// </summary>
public sealed partial class DevFuseTransport : IDisposable, IDeferredReplySink
{
    private readonly FuseEngine _engine;
    private readonly ILogger _log;
    private readonly string _mountPoint;
    private readonly SafeFd _fd;
    private readonly Thread[] _workers;
    private int _unmounted;

    /// <summary>Serves the mounted connection <paramref name="fd"/> with <paramref name="threads"/> workers, started here.</summary>
    private DevFuseTransport(FuseEngine engine, ILogger log, string mountPoint, SafeFd fd, int threads)
    {
        _engine = engine;
        _log = log;
        _mountPoint = mountPoint;
        _fd = fd;
        _connection = FindConnection(mountPoint);
        _workers = new Thread[threads];
        _running = threads;
        for (var i = 0; i < threads; i++)
        {
            _workers[i] = new Thread(Serve) { IsBackground = true, Name = $"fuse-{i}" };
            _workers[i].Start();
        }
    }

    /// <summary>Raised once when the kernel ends the session (unmount or abort) and every worker stopped.</summary>
    public Task Completion => _completion.Task;

    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _running;

    /// <summary>
    /// Mounts at <paramref name="mountPoint"/> and starts <paramref name="threads"/> workers. Fails with a
    /// <see cref="TransportException"/> whose message says what to change (not root, missing mount point, ...).
    /// The mount is nodev and nosuid unless <paramref name="allowDevices"/> or <paramref name="allowSetuid"/>.
    /// </summary>
    public static DevFuseTransport Mount(FuseEngine engine, ILogger log, string sharedDir, string mountPoint, int threads,
        bool allowDevices = false, bool allowSetuid = false)
    {
        if (Libc.geteuid() != 0)
            throw new TransportException("Mounting through /dev/fuse needs root (CAP_SYS_ADMIN); run passthrough --mount as root.");
        if (!Directory.Exists(mountPoint))
            throw new TransportException($"The mount point {mountPoint} does not exist or is not a directory; create it first.");
        var fd = Libc.open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        if (fd < 0)
            throw new TransportException($"Cannot open /dev/fuse ({Marshal.GetPInvokeErrorMessage(Libc.LastErrno)}); load the fuse module or give the daemon access to the device.");
        var data = $"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read={FuseEngine.MaxWrite}";
        var device = new SafeFd(fd);
        var flags = (allowDevices ? 0 : Libc.MS_NODEV) | (allowSetuid ? 0 : Libc.MS_NOSUID);
        if (Libc.mount(sharedDir, mountPoint, "fuse.passthrough", flags, data) != 0)
        {
            var errno = Libc.LastErrno;
            device.Dispose();
            throw new TransportException($"Cannot mount at {mountPoint}: {Marshal.GetPInvokeErrorMessage(errno)}.");
        }
        return new DevFuseTransport(engine, log, Path.GetFullPath(mountPoint).TrimEnd('/'), device, Math.Max(1, threads));
    }

    private void Serve()
    {
        // One request and one reply buffer per worker, pinned for the worker's lifetime: no allocation per request.
        var request = GC.AllocateUninitializedArray<byte>(FuseEngine.MaxRequestSize + 4096, pinned: true);
        var reply = GC.AllocateUninitializedArray<byte>(FuseEngine.MaxReplySize, pinned: true);
        try
        {
            while (true)
            {
                nint n = Libc.read(_fd, request, (nuint)request.Length);
                if (n < 0)
                {
                    var errno = Libc.LastErrno;
                    // ENOENT: the request was interrupted before it was read; EINTR/EAGAIN: try again.
                    if (errno is Libc.EINTR or Libc.ENOENT or Libc.EAGAIN) continue;
                    if (errno != Libc.ENODEV) LogReadFailed(Marshal.GetPInvokeErrorMessage(errno));
                    return;
                }
                if (n == 0) return;
                var length = _engine.Handle(request.AsSpan(0, (int)n), reply, this, default);
                if (length <= 0) continue; // no reply, or one that comes later (a SETLKW that waits)
                if (!WriteReply(reply.AsSpan(0, length))) return;
            }
        }
        finally
        {
            if (Interlocked.Decrement(ref _running) == 0) _completion.TrySetResult();
        }
    }

    /// <summary>Writes one reply; false when the connection is gone.</summary>
    private bool WriteReply(ReadOnlySpan<byte> reply)
    {
        if (Libc.write(_fd, reply, (nuint)reply.Length) >= 0) return true;
        var errno = Libc.LastErrno;
        // ENOENT: the kernel no longer waits for this reply (interrupted); anything else is logged.
        if (errno == Libc.ENODEV) return false;
        if (errno != Libc.ENOENT) LogWriteFailed(Marshal.GetPInvokeErrorMessage(errno));
        return true;
    }

    /// <inheritdoc/>
    void IDeferredReplySink.SendDeferred(ReplyRoute route, ReadOnlySpan<byte> reply)
    {
        if (Volatile.Read(ref _closed) == 0) WriteReply(reply);
    }

    private int _closed;

    /// <summary>
    /// Unmounts (lazily, so a busy mount point does not keep the daemon alive) and aborts the connection so every
    /// worker returns; waits for them up to <paramref name="timeout"/>.
    /// </summary>
    public void Unmount(TimeSpan timeout)
    {
        if (Interlocked.Exchange(ref _unmounted, 1) != 0) return;
        // EINVAL: nothing is mounted there any more (an operator unmounted it first), which is the goal.
        if (Libc.umount2(_mountPoint, Libc.MNT_DETACH) != 0 && Libc.LastErrno is var errno && errno != Libc.EINVAL)
            LogUnmountFailed(_mountPoint, Marshal.GetPInvokeErrorMessage(errno));
        AbortConnection();
        Completion.Wait(timeout);
    }

    private void AbortConnection()
    {
        // After a lazy unmount the kernel keeps the connection while files are still open on it; writing to the
        // connection's abort file (fusectl, named after the minor number of the mount's device) ends it so
        // blocked readers wake with ENODEV. Without fusectl, process exit closes /dev/fuse, which ends it too.
        if (_connection is null) return;
        var abort = $"/sys/fs/fuse/connections/{_connection}/abort";
        try
        {
            if (File.Exists(abort)) File.WriteAllText(abort, "1");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private string? _connection;

    /// <summary>The minor device number of the mount at <paramref name="mountPoint"/>, from /proc/self/mountinfo.</summary>
    private static string? FindConnection(string mountPoint)
    {
        // mountinfo: "id parent major:minor root mountpoint ..."; the last matching line is the newest mount.
        string? found = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4 && fields[4] == mountPoint)
            {
                var colon = fields[2].IndexOf(':');
                if (colon > 0) found = fields[2][(colon + 1)..];
            }
        }
        return found;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Unmount(TimeSpan.FromSeconds(2));
        // A reply the lock waiter sends after this must not reach the closed descriptor.
        Interlocked.Exchange(ref _closed, 1);
        _fd.Dispose();
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Error, Message = "Reading /dev/fuse failed: {Reason}")]
    private partial void LogReadFailed(string reason);

    [LoggerMessage(EventId = 301, Level = LogLevel.Warning, Message = "Writing a reply to /dev/fuse failed: {Reason}")]
    private partial void LogWriteFailed(string reason);

    [LoggerMessage(EventId = 302, Level = LogLevel.Warning, Message = "Unmounting {MountPoint} failed: {Reason}")]
    private partial void LogUnmountFailed(string mountPoint, string reason);
}

/// <summary>A transport could not start; the message says what to change.</summary>
public sealed class TransportException(string message) : Exception(message);
