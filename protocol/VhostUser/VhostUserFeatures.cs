namespace Hypervisor.Protocol.VhostUser;

/// <summary>vhost-user specific bits in the virtio feature word.</summary>
public static class VhostUserFeatures
{
    /// <summary>Bit number of VHOST_USER_F_PROTOCOL_FEATURES: GET/SET_PROTOCOL_FEATURES exist and rings start disabled.</summary>
    public const int ProtocolFeaturesBit = 30;
    /// <summary>Mask of VHOST_USER_F_PROTOCOL_FEATURES.</summary>
    public const ulong ProtocolFeatures = 1UL << ProtocolFeaturesBit;
}

/// <summary>vhost-user protocol feature bits ("Protocol features"), as masks.</summary>
[Flags]
public enum VhostUserProtocolFeatures : ulong
{
    /// <summary>No protocol feature.</summary>
    None = 0,
    /// <summary>Bit 0, MQ: GET_QUEUE_NUM is supported.</summary>
    Mq = 1UL << 0,
    /// <summary>Bit 1, LOG_SHMFD.</summary>
    LogShmfd = 1UL << 1,
    /// <summary>Bit 2, RARP.</summary>
    Rarp = 1UL << 2,
    /// <summary>Bit 3, REPLY_ACK: NEED_REPLY asks for a u64 status reply.</summary>
    ReplyAck = 1UL << 3,
    /// <summary>Bit 4, MTU.</summary>
    Mtu = 1UL << 4,
    /// <summary>Bit 5, BACKEND_REQ.</summary>
    BackendReq = 1UL << 5,
    /// <summary>Bit 6, CROSS_ENDIAN.</summary>
    CrossEndian = 1UL << 6,
    /// <summary>Bit 7, CRYPTO_SESSION.</summary>
    CryptoSession = 1UL << 7,
    /// <summary>Bit 8, PAGEFAULT.</summary>
    Pagefault = 1UL << 8,
    /// <summary>Bit 9, CONFIG: GET_CONFIG/SET_CONFIG are supported.</summary>
    Config = 1UL << 9,
    /// <summary>Bit 10, BACKEND_SEND_FD.</summary>
    BackendSendFd = 1UL << 10,
    /// <summary>Bit 11, HOST_NOTIFIER.</summary>
    HostNotifier = 1UL << 11,
    /// <summary>Bit 12, INFLIGHT_SHMFD.</summary>
    InflightShmfd = 1UL << 12,
    /// <summary>Bit 13, RESET_DEVICE: RESET_DEVICE is supported.</summary>
    ResetDevice = 1UL << 13,
    /// <summary>Bit 14, INBAND_NOTIFICATIONS.</summary>
    InbandNotifications = 1UL << 14,
    /// <summary>Bit 15, CONFIGURE_MEM_SLOTS: GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG are supported.</summary>
    ConfigureMemSlots = 1UL << 15,
    /// <summary>Bit 16, STATUS.</summary>
    Status = 1UL << 16,
}
