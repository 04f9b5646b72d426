using Hypervisor.Protocol.VhostUser;
using Hypervisor.Protocol.Virtio;
using Hypervisor.Vdev.Device;
using Hypervisor.Interop;
using Hypervisor.Vdev.Virtio;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.VhostUser;

/// <summary>
/// Applies front-end messages to the device (QEMU docs/interop/vhost-user.rst). One instance per
/// connection, driven by the control thread. A request that is malformed, unsupported or cannot be carried
/// out is logged in one line and, when the front-end asked for a reply, answered with a failure; the
/// connection keeps going. Only a stream that cannot be resynchronised ends it.
/// </summary>
internal sealed partial class VhostUserBackend(VirtioFsDevice device, TimeSpan drainTimeout, ILogger log)
{
    /// <summary>Virtio features offered: virtio 1, event index, indirect tables, and vhost-user protocol features.</summary>
    public const ulong OfferedFeatures = VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx
        | VirtioFeatures.RingIndirectDesc | VhostUserFeatures.ProtocolFeatures;

    /// <summary>
    /// Protocol features offered. Not offered: LOG_SHMFD (no dirty logging, hence no migration), BACKEND_REQ
    /// (no DAX window), INFLIGHT_SHMFD, INBAND_NOTIFICATIONS, STATUS.
    /// </summary>
    /// CONFIG only when a tag was configured.
    public VhostUserProtocolFeatures OfferedProtocolFeatures { get; } = VhostUserProtocolFeatures.Mq
        | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.ResetDevice | VhostUserProtocolFeatures.ConfigureMemSlots
        | (device.Config != null ? VhostUserProtocolFeatures.Config : VhostUserProtocolFeatures.None);

    /// <summary>Most memory regions held at once (GET_MAX_MEM_SLOTS), as libvhost-user.</summary>
    public const int MaxMemSlots = 32;

    private VhostUserProtocolFeatures _protocolFeatures;
    private bool _protocolFeaturesAcked;

    /// <summary>A request that is well-formed but cannot be carried out: logged, and a failure ack if asked for.</summary>
    private sealed class RequestFailed(string message) : Exception(message);

    /// <summary>Handles one message; fds in <paramref name="fds"/> that the message does not take over are closed here.</summary>
    public void Handle(VhostUserChannel channel, VhostUserHeader h, ReadOnlySpan<byte> payload, List<SafeFd> fds)
    {
        if (log.IsEnabled(LogLevel.Trace)) LogMessage(log, h.Request, h.Size, fds.Count, h.NeedsReply);
        try
        {
            bool explicitReply = HasExplicitReply(h.Request);
            bool ok;
            try
            {
                ok = Dispatch(channel, h, payload, fds);
            }
            catch (Exception e) when (e is VhostUserProtocolException or RequestFailed or SyscallException or InvalidDataException)
            {
                LogRequestFailed(log, h.Request, e.Message);
                if (explicitReply) channel.Reply(h.Request, default); // an empty reply tells the front-end it failed
                else if (h.NeedsReply) channel.Ack(h.Request, false);
                return;
            }
            if (!explicitReply && h.NeedsReply) channel.Ack(h.Request, ok);
        }
        finally
        {
            foreach (var fd in fds) fd.Dispose();
            fds.Clear();
        }
    }

    private static bool HasExplicitReply(VhostUserRequest r) => r is VhostUserRequest.GetFeatures or VhostUserRequest.GetProtocolFeatures
        or VhostUserRequest.GetQueueNum or VhostUserRequest.GetVringBase or VhostUserRequest.GetConfig or VhostUserRequest.GetMaxMemSlots;

    private bool Dispatch(VhostUserChannel ch, VhostUserHeader h, ReadOnlySpan<byte> p, List<SafeFd> fds)
    {
        var r = h.Request;
        Span<byte> reply = stackalloc byte[VhostUserConfigHeader.WireSize + VhostUserConfigHeader.MaxConfigSize];
        switch (r)
        {
            case VhostUserRequest.GetFeatures:
            case VhostUserRequest.GetProtocolFeatures:
            case VhostUserRequest.GetQueueNum:
            case VhostUserRequest.GetMaxMemSlots:
                NoFds(r, fds); VhostUserPayload.ReadEmpty(r, p);
                VhostUserPayload.WriteU64(reply, r switch
                {
                    VhostUserRequest.GetFeatures => OfferedFeatures,
                    VhostUserRequest.GetProtocolFeatures => (ulong)OfferedProtocolFeatures,
                    VhostUserRequest.GetQueueNum => (ulong)device.Queues.Length,
                    _ => MaxMemSlots,
                });
                ch.Reply(r, reply[..8]);
                return true;

            case VhostUserRequest.SetFeatures:
            {
                NoFds(r, fds);
                ulong f = VhostUserPayload.ReadU64(r, p);
                if ((f & ~OfferedFeatures) != 0) throw new RequestFailed($"features 0x{f:x} include 0x{f & ~OfferedFeatures:x}, which were not offered");
                device.Features = f;
                _protocolFeaturesAcked = (f & VhostUserFeatures.ProtocolFeatures) != 0;
                return true;
            }

            case VhostUserRequest.SetProtocolFeatures:
            {
                NoFds(r, fds);
                var f = (VhostUserProtocolFeatures)VhostUserPayload.ReadU64(r, p);
                if ((f & ~OfferedProtocolFeatures) != 0) throw new RequestFailed($"protocol features 0x{(ulong)f:x} include ones that were not offered");
                _protocolFeatures = f;
                return true;
            }

            case VhostUserRequest.SetOwner:
                NoFds(r, fds); VhostUserPayload.ReadEmpty(r, p);
                return true;

            case VhostUserRequest.ResetOwner:
            case VhostUserRequest.ResetDevice:
                NoFds(r, fds); VhostUserPayload.ReadEmpty(r, p);
                device.Reset();
                _protocolFeaturesAcked = false;
                return true;

            case VhostUserRequest.SetMemTable:
                SetMemTable(VhostUserPayload.ReadMemoryTable(p), fds);
                return true;

            case VhostUserRequest.AddMemReg:
                AddMemReg(VhostUserPayload.ReadSingleRegion(r, p), fds);
                return true;

            case VhostUserRequest.RemMemReg:
                // Front-ends historically send the region's fd along; it is accepted and closed.
                if (fds.Count > 1) throw FdCount(r, fds.Count, "0 or 1");
                RemMemReg(VhostUserPayload.ReadSingleRegion(r, p));
                return true;

            case VhostUserRequest.SetVringNum:
            {
                var (s, q) = ReadVringState(r, p, fds);
                if (q.Started) throw new RequestFailed($"queue {s.Index} is running; its size can change only while it is stopped");
                if (!SplitVirtqueue.IsValidSize((int)Math.Min(s.Num, int.MaxValue)) || s.Num > (uint)device.MaxQueueSize)
                    throw new RequestFailed($"queue size {s.Num} is not a power of two between 1 and {device.MaxQueueSize}");
                q.Size = (int)s.Num;
                return true;
            }

            case VhostUserRequest.SetVringAddr:
            {
                NoFds(r, fds);
                var a = VhostUserPayload.ReadVringAddress(r, p);
                var q = Queue(r, a.Index);
                if ((a.Flags & VringAddress.FlagLog) != 0) throw new RequestFailed("used-ring logging was requested but VHOST_F_LOG_ALL is not offered");
                bool running = q.Started;
                if (running) q.Pause();
                q.DescAddr = a.Descriptor;
                q.AvailAddr = a.Available;
                q.UsedAddr = a.Used;
                q.AddressSet = true;
                if (running) q.Resume();
                return true;
            }

            case VhostUserRequest.SetVringBase:
            {
                var (s, q) = ReadVringState(r, p, fds);
                if (q.Started) throw new RequestFailed($"queue {s.Index} is running; its base can change only while it is stopped");
                if (s.Num > ushort.MaxValue) throw new RequestFailed($"split-ring base {s.Num} does not fit 16 bits");
                q.LastAvail = (ushort)s.Num;
                return true;
            }

            case VhostUserRequest.GetVringBase:
            {
                var (s, q) = ReadVringState(r, p, fds);
                // Stop the ring and drain what is in flight (the normal GET_VRING_BASE semantics), so that a
                // later SET_VRING_BASE with this index loses nothing. A new SET_VRING_KICK restarts the ring.
                q.Stop(drain: true, drainTimeout);
                q.Kick?.Dispose();
                q.Kick = null;
                new VringState(s.Index, q.LastAvail).WriteTo(reply);
                ch.Reply(r, reply[..VringState.WireSize]);
                return true;
            }

            case VhostUserRequest.SetVringKick:
            {
                var (index, hasFd) = VhostUserPayload.ReadVringFd(r, p);
                var q = Queue(r, index);
                var fd = TakeVringFd(r, hasFd, fds);
                if (fd == null) throw new RequestFailed("kick polling (no kick fd) is not supported; send an eventfd");
                if (q.Size == 0 || !q.AddressSet)
                {
                    fd.Dispose();
                    throw new RequestFailed($"queue {index} cannot start before SET_VRING_NUM and SET_VRING_ADDR");
                }
                bool running = q.Started;
                if (running) q.Pause();
                q.Kick?.Dispose();
                q.Kick = fd;
                // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as soon as it starts.
                if (!_protocolFeaturesAcked) q.Enabled = true;
                if (running) q.Resume(); else q.Start();
                return true;
            }

            case VhostUserRequest.SetVringCall:
            case VhostUserRequest.SetVringErr:
            {
                var (index, hasFd) = VhostUserPayload.ReadVringFd(r, p);
                var q = Queue(r, index);
                var fd = TakeVringFd(r, hasFd, fds);
                var old = r == VhostUserRequest.SetVringCall ? Interlocked.Exchange(ref q.Call, fd) : Interlocked.Exchange(ref q.Err, fd);
                old?.Dispose();
                return true;
            }

            case VhostUserRequest.SetVringEnable:
            {
                var (s, q) = ReadVringState(r, p, fds);
                if (!_protocolFeaturesAcked) throw new RequestFailed("SET_VRING_ENABLE needs VHOST_USER_F_PROTOCOL_FEATURES to be negotiated");
                if (s.Num > 1) throw new RequestFailed($"SET_VRING_ENABLE takes 0 or 1, not {s.Num}");
                q.Enabled = s.Num == 1;
                if (q.Enabled && q.Started) q.Wake();
                return true;
            }

            case VhostUserRequest.GetConfig:
            {
                NoFds(r, fds);
                var c = VhostUserPayload.ReadConfig(r, p, out _);
                if (device.Config is not { } config) throw new RequestFailed("no --tag was configured, so there is no config space to read");
                if ((ulong)c.Offset + c.Size > VirtioFsConfig.Size)
                    throw new RequestFailed($"config read at {c.Offset}+{c.Size} is outside the {VirtioFsConfig.Size}-byte virtio-fs config space");
                Span<byte> space = stackalloc byte[VirtioFsConfig.Size];
                config.WriteTo(space);
                c.WriteTo(reply);
                space.Slice((int)c.Offset, (int)c.Size).CopyTo(reply[VhostUserConfigHeader.WireSize..]);
                ch.Reply(r, reply[..(VhostUserConfigHeader.WireSize + (int)c.Size)]);
                return true;
            }

            case VhostUserRequest.SetConfig:
                NoFds(r, fds);
                VhostUserPayload.ReadConfig(r, p, out _);
                throw new RequestFailed("the virtio-fs config space (tag, num_request_queues) is read-only to the driver (virtio 5.11.4)");

            default:
                LogUnsupported(log, (uint)r, r.ToString(), fds.Count);
                return false;
        }
    }

    private Virtqueue Queue(VhostUserRequest r, uint index)
    {
        if (index >= (uint)device.Queues.Length)
            throw new VhostUserProtocolException(VhostUserError.BadField, r, $"queue index {index} is outside the device's {device.Queues.Length} queues");
        return device.Queues[index];
    }

    /// <summary>A vring state message (no fds) and the queue it names.</summary>
    private (VringState State, Virtqueue Queue) ReadVringState(VhostUserRequest r, ReadOnlySpan<byte> p, List<SafeFd> fds)
    {
        NoFds(r, fds);
        var s = VhostUserPayload.ReadVringState(r, p);
        return (s, Queue(r, s.Index));
    }

    private static void NoFds(VhostUserRequest r, List<SafeFd> fds)
    {
        if (fds.Count != 0) throw FdCount(r, fds.Count, "none");
    }

    private static VhostUserProtocolException FdCount(VhostUserRequest r, int got, string expected)
        => new(VhostUserError.BadFdCount, r, $"{got} file descriptors arrived, expected {expected}");

    /// <summary>Takes the single fd of a vring fd message, or none when the no-fd flag is set.</summary>
    private static SafeFd? TakeVringFd(VhostUserRequest r, bool hasFd, List<SafeFd> fds)
    {
        if (fds.Count != (hasFd ? 1 : 0)) throw FdCount(r, fds.Count, hasFd ? "1" : "none (the no-fd flag is set)");
        if (!hasFd) return null;
        var fd = fds[0];
        fds.Clear();
        return fd;
    }

    private void SetMemTable(VhostUserMemoryRegion[] regions, List<SafeFd> fds)
    {
        if (fds.Count != regions.Length) throw FdCount(VhostUserRequest.SetMemTable, fds.Count, $"{regions.Length}, one per region");
        CheckNoOverlap(regions, regions.Length);
        var mapped = new MappedRegion[regions.Length];
        try
        {
            for (int i = 0; i < regions.Length; i++) mapped[i] = MappedRegion.Map(regions[i], fds[i]);
        }
        catch
        {
            foreach (var m in mapped) m?.Release();
            throw;
        }
        // The old table is unmapped once rings and requests still using it let go.
        device.ReplaceMemory(new GuestMemoryTable(mapped));
    }

    private void AddMemReg(VhostUserMemoryRegion region, List<SafeFd> fds)
    {
        if (fds.Count != 1) throw FdCount(VhostUserRequest.AddMemReg, fds.Count, "1");
        var current = device.CurrentMemory;
        if (current.RegionCount >= MaxMemSlots) throw new RequestFailed($"all {MaxMemSlots} memory slots are in use");
        var all = new VhostUserMemoryRegion[current.RegionCount + 1];
        for (int i = 0; i < current.RegionCount; i++) all[i] = current.Regions[i].Description;
        all[^1] = region;
        CheckNoOverlap(all, all.Length);
        var added = MappedRegion.Map(region, fds[0]);
        var list = new MappedRegion[all.Length];
        for (int i = 0; i < current.RegionCount; i++)
        {
            current.Regions[i].AddRef();
            list[i] = current.Regions[i];
        }
        list[^1] = added;
        device.ReplaceMemory(new GuestMemoryTable(list));
    }

    private void RemMemReg(VhostUserMemoryRegion region)
    {
        var current = device.CurrentMemory;
        var list = new List<MappedRegion>(current.RegionCount);
        bool found = false;
        foreach (var m in current.Regions)
        {
            var d = m.Description;
            if (!found && d.GuestPhysAddr == region.GuestPhysAddr && d.MemorySize == region.MemorySize && d.UserspaceAddr == region.UserspaceAddr)
            {
                found = true;
                continue;
            }
            list.Add(m);
        }
        if (!found) throw new RequestFailed($"no memory region at guest 0x{region.GuestPhysAddr:x} of size 0x{region.MemorySize:x} to remove");
        foreach (var m in list) m.AddRef();
        device.ReplaceMemory(new GuestMemoryTable(list.ToArray()));
    }

    private static void CheckNoOverlap(VhostUserMemoryRegion[] r, int n)
    {
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (r[i].GuestPhysAddr < r[j].GuestPhysAddr + r[j].MemorySize && r[j].GuestPhysAddr < r[i].GuestPhysAddr + r[i].MemorySize)
                    throw new RequestFailed($"memory regions at guest 0x{r[i].GuestPhysAddr:x} and 0x{r[j].GuestPhysAddr:x} overlap");
    }

    [LoggerMessage(EventId = 60, Level = LogLevel.Trace, Message = "vhost-user {Request}: {Size} payload bytes, {Fds} fds, need reply {NeedReply}")]
    private static partial void LogMessage(ILogger log, VhostUserRequest request, uint size, int fds, bool needReply);

    [LoggerMessage(EventId = 61, Level = LogLevel.Warning, Message = "vhost-user {Request} failed: {Reason}")]
    private static partial void LogRequestFailed(ILogger log, VhostUserRequest request, string reason);

    [LoggerMessage(EventId = 62, Level = LogLevel.Warning, Message = "vhost-user request {Code} ({Name}) is not supported by this backend and was ignored ({Fds} fds closed)")]
    private static partial void LogUnsupported(ILogger log, uint code, string name, int fds);
}
