using System.Diagnostics;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Tests.Frontend;

namespace Hypervisor.Vdev.Tests.Vmm;

/// <summary>
/// A transport for guest tests that forwards each frame to QEMU's C virtiofsd through the test front-end
/// and hands its replies back: guest → QEMU → vdev → this → virtiofsd. It gives the vdev a real
/// filesystem behind it before the project's own daemon and ring exist.
/// </summary>
internal sealed class VirtiofsdProxyTransport : IFuseTransportFactory, IFuseTransport
{
    private const int ProxyQueueSize = 16;
    private readonly string _dir;
    private readonly Process _daemon;
    private readonly VhostUserFrontend _fe;
    private readonly GuestRam _ram;
    private readonly FrontendQueue[] _queues;
    private readonly ulong[][] _tags;
    private readonly Thread _completer;
    private volatile bool _stop;
    private IFuseCompletionSink _sink = null!;

    public VirtiofsdProxyTransport(string sharedDir)
    {
        _dir = Directory.CreateTempSubdirectory("vfsd-proxy-").FullName;
        var sock = Path.Combine(_dir, "vfsd.sock");
        var psi = new ProcessStartInfo("/usr/lib/qemu/virtiofsd") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { $"--socket-path={sock}", "-o", $"source={sharedDir}", "-o", "cache=auto", "-o", "sandbox=chroot" }) psi.ArgumentList.Add(a);
        _daemon = Process.Start(psi)!;
        _daemon.ErrorDataReceived += (_, _) => { };
        _daemon.OutputDataReceived += (_, _) => { };
        _daemon.BeginErrorReadLine();
        _daemon.BeginOutputReadLine();
        _fe = VhostUserFrontend.Connect(sock, TimeSpan.FromSeconds(10));
        int slot = 4096 + 2 * ((1 << 20) + (64 << 10));
        _ram = new GuestRam(2L * ProxyQueueSize * slot + (8 << 20));
        _fe.Negotiate();
        _fe.SetMemTable(_ram);
        _queues = [.. _fe.SetupQueues(_ram, 2, ProxyQueueSize, slot)];
        _tags = [new ulong[ProxyQueueSize], new ulong[ProxyQueueSize]];
        _completer = new Thread(Complete) { IsBackground = true, Name = "proxy-completer" };
    }

    public IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink)
    {
        _sink = sink;
        _completer.Start();
        return this;
    }

    public bool Submit(VirtqueueRequest request)
    {
        var frame = new byte[request.ReadableLength];
        request.CopyFrameTo(frame);
        var q = _queues[request.Queue.IsHiprio ? 0 : 1];
        lock (q)
        {
            while (q.InFlight >= ProxyQueueSize) Monitor.Wait(q, 100);
            ushort head = q.Submit(frame, request.ExpectsReply ? Math.Min(request.WritableLength, q.ReplyArea) : 0, indirect: true);
            _tags[request.Queue.IsHiprio ? 0 : 1][head] = request.ExpectsReply ? request.Tag : ulong.MaxValue;
        }
        return true;
    }

    private void Complete()
    {
        var done = new List<(ulong Tag, byte[] Reply)>();
        while (!_stop)
        {
            FrontendFds.WaitReadable(_queues[1].CallFd, 20);
            FrontendFds.ReadEventFd(_queues[1].CallFd);
            FrontendFds.ReadEventFd(_queues[0].CallFd);
            for (int i = 0; i < 2; i++)
            {
                var q = _queues[i];
                lock (q)
                {
                    while (q.TryTakeUsed(out var head, out var len))
                    {
                        ulong tag = _tags[i][head];
                        if (tag != ulong.MaxValue) done.Add((tag, q.ReplyBytes(head, len)));
                    }
                    Monitor.PulseAll(q);
                }
            }
            foreach (var (tag, reply) in done) _sink.Complete(tag, reply);
            done.Clear();
        }
    }

    private int _disposed;

    /// <summary>Idempotent: the device disposes its transport when it stops, and the test does too.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop = true;
        if (_completer.IsAlive) _completer.Join();
        _fe.Dispose();
        _ram.Dispose();
        if (!_daemon.HasExited) { _daemon.Kill(); _daemon.WaitForExit(); }
        _daemon.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
