using Hypervisor.Protocol.VhostUser;
using Hypervisor.Vdev.Device;
using Hypervisor.Interop;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.VhostUser;

/// <summary>
/// Entry point of one vhost-user virtio-fs device: listens, serves one VMM connection at a time on a dedicated
/// control thread, and stops cleanly when cancelled. Does not daemonize.
/// </summary>
public static partial class VhostUserDevice
{
    /// <summary>Exit status: clean stop (cancellation, or the VMM disconnected without <c>--keep-listening</c>).</summary>
    public const int ExitOk = 0;
    /// <summary>Exit status: the VMM broke the protocol so badly that the connection was dropped, then exited.</summary>
    public const int ExitProtocolError = 1;
    /// <summary>Exit status: bad configuration (options, socket path, inherited fd).</summary>
    public const int ExitConfig = 2;

    /// <summary>
    /// The vhost-user JSON capabilities (QEMU docs/interop/vhost-user.json) printed by <c>--print-capabilities</c>.
    /// "separate-options": the vdev takes virtiofsd's separate options (<c>--shared-dir</c>, …).
    /// "migrate-precopy" is not listed: dirty logging is not offered.
    /// </summary>
    public const string Capabilities = "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"separate-options\"\n  ]\n}";

    /// <summary>Writes <see cref="Capabilities"/> and a newline.</summary>
    public static void PrintCapabilities(TextWriter output) => output.WriteLine(Capabilities);

    /// <summary>
    /// Runs the device until <paramref name="ct"/> is cancelled (SIGTERM) or, unless
    /// <see cref="DeviceOptions.KeepListening"/>, until the VMM disconnects. The transport is created once by
    /// <paramref name="transport"/> and disposed on return; the socket file made for
    /// <see cref="DeviceOptions.SocketPath"/> is removed on return. Configuration errors are logged as one
    /// sentence and return <see cref="ExitConfig"/>.
    /// </summary>
    public static Task<int> RunAsync(DeviceOptions options, IFuseTransportFactory transport, ILogger log, CancellationToken ct) =>
        Listen(options, log) is { } listener ? RunAsync(options, listener, transport, log, ct) : Task.FromResult(ExitConfig);

    /// <summary>
    /// Checks <paramref name="options"/> and creates the listening socket at <see cref="DeviceOptions.SocketPath"/> (or
    /// adopts <see cref="DeviceOptions.ListenFd"/>). From then on a VMM can connect: the kernel queues its connection, and
    /// the messages it sends wait in the socket, until <see cref="RunAsync(DeviceOptions, VhostUserListener, IFuseTransportFactory, ILogger, CancellationToken)"/>
    /// accepts it. Returns null after logging the configuration error as one sentence; the caller disposes the listener
    /// it gets unless it hands it to RunAsync (which removes the socket file made here).
    /// </summary>
    internal static VhostUserListener? Listen(DeviceOptions options, ILogger log)
    {
        try
        {
            options.Validate();
            return options.SocketPath != null ? VhostUserListener.Bind(options.SocketPath, options.SocketGroup) : VhostUserListener.Adopt(options.ListenFd!.Value);
        }
        catch (Exception e) when (e is ArgumentException or ListenerException or SyscallException)
        {
            LogConfig(log, e.Message);
            return null;
        }
    }

    /// <summary>
    /// As <see cref="RunAsync(DeviceOptions, IFuseTransportFactory, ILogger, CancellationToken)"/>, on a socket
    /// <see cref="Listen"/> made; takes ownership of <paramref name="listener"/>.
    /// </summary>
    internal static Task<int> RunAsync(DeviceOptions options, VhostUserListener listener, IFuseTransportFactory transport, ILogger log, CancellationToken ct)
    {
        var stop = Libc.EventFd(0);
        var reg = ct.Register(static s => Libc.EventFdSignal((SafeFd)s!), stop);
        var done = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            int rc;
            try
            {
                rc = Serve(options, transport, listener, stop, log);
            }
            catch (Exception e)
            {
                LogFatal(log, e);
                rc = ExitProtocolError;
            }
            finally
            {
                reg.Dispose();
                listener.Dispose();
                stop.Dispose();
            }
            done.SetResult(rc);
        })
        { Name = "vhost-user", IsBackground = true };
        thread.Start();
        return done.Task;
    }

    private static int Serve(DeviceOptions o, IFuseTransportFactory factory, VhostUserListener listener, SafeFd stop, ILogger log)
    {
        using var device = new VirtioFsDevice(o.Tag, o.RequestQueues, o.MaxQueueSize, log) { ReplySpin = o.ReplySpin, QueueCpus = o.QueueCpus };
        try
        {
            device.AttachTransport(factory.Create(new FuseDeviceInfo(o.Tag ?? "", o.RequestQueues, o.MaxQueueSize), device));
        }
        catch (ArgumentException e)
        {
            // A transport that does not fit the options (e.g. a ring set with too few queues) is a configuration error.
            LogConfig(log, e.Message);
            return ExitConfig;
        }
        if (o.SocketPath is { } socketPath) LogListening(log, socketPath, o.RequestQueues);
        else LogListeningOnFd(log, o.ListenFd ?? -1, o.RequestQueues);
        if (o.QueueCpus is { } cpus) LogPinned(log, cpus);
        var fds = new List<SafeFd>();
        while (true)
        {
            var conn = listener.Accept(stop);
            if (conn == null) return ExitOk;
            LogConnected(log);
            int rc = ExitOk;
            var backend = new VhostUserBackend(device, o.DrainTimeout, log);
            using (var channel = new VhostUserChannel(conn, stop))
            {
                try
                {
                    while (true)
                    {
                        var status = channel.Receive(fds, out var header, out var payload);
                        if (status == ReceiveStatus.Stopped) { device.Reset(); return ExitOk; }
                        if (status == ReceiveStatus.Closed) { LogDisconnected(log); break; }
                        backend.Handle(channel, header, payload, fds);
                    }
                }
                catch (Exception e) when (e is VhostUserProtocolException or SyscallException)
                {
                    // The stream cannot be resynchronised after a bad header or a broken socket.
                    LogDropped(log, e.Message);
                    rc = ExitProtocolError;
                }
                finally
                {
                    foreach (var fd in fds) fd.Dispose();
                    fds.Clear();
                }
            }
            device.Reset();
            if (!o.KeepListening) return rc;
        }
    }

    [LoggerMessage(EventId = 70, Level = LogLevel.Error, Message = "Cannot serve: {Reason}")]
    private static partial void LogConfig(ILogger log, string reason);

    [LoggerMessage(EventId = 71, Level = LogLevel.Critical, Message = "the vhost-user control thread failed")]
    private static partial void LogFatal(ILogger log, Exception e);

    [LoggerMessage(EventId = 72, Level = LogLevel.Information, Message = "waiting for a vhost-user connection on {Socket} ({Queues} request queues)")]
    private static partial void LogListening(ILogger log, string socket, int queues);

    [LoggerMessage(EventId = 76, Level = LogLevel.Information, Message = "waiting for a vhost-user connection on inherited fd {Fd} ({Queues} request queues)")]
    private static partial void LogListeningOnFd(ILogger log, int fd, int queues);

    [LoggerMessage(EventId = 77, Level = LogLevel.Information, Message = "request queue i runs on the i-th of CPUs {Cpus}")]
    private static partial void LogPinned(ILogger log, Hypervisor.Protocol.Share.QueueCpus cpus);

    [LoggerMessage(EventId = 73, Level = LogLevel.Information, Message = "vhost-user front-end connected")]
    private static partial void LogConnected(ILogger log);

    [LoggerMessage(EventId = 74, Level = LogLevel.Information, Message = "vhost-user front-end disconnected; device state dropped")]
    private static partial void LogDisconnected(ILogger log);

    [LoggerMessage(EventId = 75, Level = LogLevel.Error, Message = "dropping the vhost-user connection: {Reason}")]
    private static partial void LogDropped(ILogger log, string reason);
}
