namespace Hypervisor.Vdev.VhostUser;

/// <summary>
/// Options of one vhost-user virtio-fs device, taken from the share's settings (the
/// <see cref="Hypervisor.Protocol.Share.OptionScope.Device"/> options of its vocabulary) by the vdev.
/// </summary>
public sealed class DeviceOptions
{
    /// <summary><c>--socket-path PATH</c>: create a listening socket there, removed again on exit. No default; this or <see cref="ListenFd"/> is required.</summary>
    public string? SocketPath { get; set; }

    /// <summary>Group that gets the socket at <see cref="SocketPath"/>, which is then made group-writable (--socket-group); null: left as created.</summary>
    public uint? SocketGroup { get; set; }
    /// <summary><c>--fd N</c>: accept on this inherited listening socket (libvirt). No default.</summary>
    public int? ListenFd { get; set; }
    /// <summary>
    /// <c>--tag TAG</c>: the mount tag offered in the config space through GET_CONFIG. Default: none, and then
    /// VHOST_USER_PROTOCOL_F_CONFIG is not offered (QEMU takes the tag from its own <c>tag=</c> property).
    /// </summary>
    public string? Tag { get; set; }
    /// <summary><c>--request-queues N</c>: request queues offered besides hiprio (GET_QUEUE_NUM answers N+1). Default 1.</summary>
    public int RequestQueues { get; set; } = 1;
    /// <summary><c>--queue-size N</c>: the largest queue size accepted from SET_VRING_NUM, a power of two. Default 1024.</summary>
    public int MaxQueueSize { get; set; } = 1024;
    /// <summary>
    /// <c>--keep-listening</c>: after the VMM disconnects, drop the device state and accept the next connection.
    /// Default off: like virtiofsd, exit with status 0 when the VMM disconnects.
    /// </summary>
    public bool KeepListening { get; set; }
    /// <summary>How long GET_VRING_BASE waits for requests in flight before dropping them. Default 5 s.</summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(5);
    /// <summary>
    /// How long a queue's worker keeps looking for replies before it sleeps, while only a few requests are in
    /// flight (<see cref="Virtio.Virtqueue.ReplySpinMaxInFlight"/>): a guest waiting on one request at a time then
    /// gets its reply without the worker being woken for it. A worker whose only CPU is the one the daemon's end of
    /// its queue must run on never polls (<see cref="Hypervisor.Protocol.Ring.SpinPolicy"/>). Not a command-line option. Default 30 µs; zero sleeps
    /// at once.
    /// </summary>
    public TimeSpan ReplySpin { get; set; } = TimeSpan.FromMicroseconds(30);
    /// <summary>
    /// The host CPU of each request queue's worker, one per request queue (<c>queue_cpus</c>, <c>--queue-cpus</c>,
    /// taken with the share's options); the daemon pins its dispatcher for the same queue there too. Default null:
    /// the scheduler places the workers.
    /// </summary>
    public Hypervisor.Protocol.Share.QueueCpus? QueueCpus { get; set; }

    /// <summary>
    /// Checks what the settings' parser cannot: that there is exactly one way for the VMM to connect. Throws
    /// <see cref="ArgumentException"/> with one sentence saying what to change.
    /// </summary>
    public void Validate()
    {
        if (SocketPath == null && ListenFd == null) throw new ArgumentException("Give --socket-path PATH or --fd N so the VMM can connect.");
        if (SocketPath != null && ListenFd != null) throw new ArgumentException("Give either --socket-path or --fd, not both.");
        if (SocketPath is "") throw new ArgumentException("--socket-path is empty; give the path where the VMM will connect.");
    }
}
