namespace Hypervisor.Protocol.VhostUser;

/// <summary>Front-end message types (QEMU docs/interop/vhost-user.rst, "Front-end message types").</summary>
public enum VhostUserRequest : uint
{
    /// <summary>No request; never valid on the wire.</summary>
    None = 0,
    /// <summary>Reply: u64 virtio features the back-end offers.</summary>
    GetFeatures = 1,
    /// <summary>Payload u64: the features the driver acknowledged.</summary>
    SetFeatures = 2,
    /// <summary>Claims the back-end for this front-end; no payload.</summary>
    SetOwner = 3,
    /// <summary>Obsolete reset (treated like <see cref="ResetDevice"/>).</summary>
    ResetOwner = 4,
    /// <summary>Payload: memory regions description plus one fd per region.</summary>
    SetMemTable = 5,
    /// <summary>Dirty log base (needs LOG_SHMFD; not offered).</summary>
    SetLogBase = 6,
    /// <summary>Dirty log eventfd (needs LOG_SHMFD; not offered).</summary>
    SetLogFd = 7,
    /// <summary>Payload: vring state (index, queue size).</summary>
    SetVringNum = 8,
    /// <summary>Payload: vring address description (front-end virtual addresses).</summary>
    SetVringAddr = 9,
    /// <summary>Payload: vring state (index, next avail index).</summary>
    SetVringBase = 10,
    /// <summary>Payload: vring state (index); stops the ring; reply: vring state with the next avail index.</summary>
    GetVringBase = 11,
    /// <summary>Payload u64: index in bits 0-7, bit 8 = no fd; fd: kick eventfd.</summary>
    SetVringKick = 12,
    /// <summary>Payload u64: index in bits 0-7, bit 8 = no fd; fd: call eventfd.</summary>
    SetVringCall = 13,
    /// <summary>Payload u64: index in bits 0-7, bit 8 = no fd; fd: error eventfd.</summary>
    SetVringErr = 14,
    /// <summary>Reply: u64 protocol features.</summary>
    GetProtocolFeatures = 15,
    /// <summary>Payload u64: acknowledged protocol features.</summary>
    SetProtocolFeatures = 16,
    /// <summary>Reply: u64 number of queues (needs MQ).</summary>
    GetQueueNum = 17,
    /// <summary>Payload: vring state (index, 0 = disable / 1 = enable).</summary>
    SetVringEnable = 18,
    /// <summary>Network only.</summary>
    SendRarp = 19,
    /// <summary>Network only.</summary>
    NetSetMtu = 20,
    /// <summary>Back-end request channel (needs BACKEND_REQ; not offered).</summary>
    SetBackendReqFd = 21,
    /// <summary>IOTLB message (needs VIRTIO_F_IOMMU_PLATFORM; not offered).</summary>
    IotlbMsg = 22,
    /// <summary>Legacy ring endianness (needs CROSS_ENDIAN; not offered).</summary>
    SetVringEndian = 23,
    /// <summary>Payload: config space description; reply: the same with the bytes filled in (needs CONFIG).</summary>
    GetConfig = 24,
    /// <summary>Payload: config space description with bytes to write (needs CONFIG).</summary>
    SetConfig = 25,
    /// <summary>Crypto only.</summary>
    CreateCryptoSession = 26,
    /// <summary>Crypto only.</summary>
    CloseCryptoSession = 27,
    /// <summary>Postcopy migration (not offered).</summary>
    PostcopyAdvise = 28,
    /// <summary>Postcopy migration (not offered).</summary>
    PostcopyListen = 29,
    /// <summary>Postcopy migration (not offered).</summary>
    PostcopyEnd = 30,
    /// <summary>Inflight tracking (needs INFLIGHT_SHMFD; not offered).</summary>
    GetInflightFd = 31,
    /// <summary>Inflight tracking (needs INFLIGHT_SHMFD; not offered).</summary>
    SetInflightFd = 32,
    /// <summary>GPU only.</summary>
    GpuSetSocket = 33,
    /// <summary>Resets the device to its initial state (needs RESET_DEVICE).</summary>
    ResetDevice = 34,
    /// <summary>In-band kick (needs INBAND_NOTIFICATIONS; not offered).</summary>
    VringKick = 35,
    /// <summary>Reply: u64 maximum number of memory slots (needs CONFIGURE_MEM_SLOTS).</summary>
    GetMaxMemSlots = 36,
    /// <summary>Payload: single memory region description plus its fd (needs CONFIGURE_MEM_SLOTS).</summary>
    AddMemReg = 37,
    /// <summary>Payload: single memory region description; an fd may accompany it and is ignored.</summary>
    RemMemReg = 38,
    /// <summary>Device status (needs STATUS; not offered).</summary>
    SetStatus = 39,
    /// <summary>Device status (needs STATUS; not offered).</summary>
    GetStatus = 40,
}
