namespace Hypervisor.Protocol.VhostUser;

/// <summary>vhost-user specific bits in the virtio feature word.</summary>
public static class VhostUserFeatures
{
    /// <summary>Bit number of VHOST_USER_F_PROTOCOL_FEATURES: GET/SET_PROTOCOL_FEATURES exist and rings start disabled.</summary>
    public const int ProtocolFeaturesBit = 30;
    /// <summary>Mask of VHOST_USER_F_PROTOCOL_FEATURES.</summary>
    public const ulong ProtocolFeatures = 1UL << ProtocolFeaturesBit;
}

/// <summary>vhost-user protocol feature bits ("Protocol features") that this back-end offers or checks, as masks.</summary>
[Flags]
public enum VhostUserProtocolFeatures : ulong
{
    /// <summary>No protocol feature.</summary>
    None = 0,
    /// <summary>Bit 0, MQ: GET_QUEUE_NUM is supported.</summary>
    Mq = 1UL << 0,
    /// <summary>Bit 1, LOG_SHMFD.</summary>
    LogShmfd = 1UL << 1,
    /// <summary>Bit 3, REPLY_ACK: NEED_REPLY asks for a u64 status reply.</summary>
    ReplyAck = 1UL << 3,
    /// <summary>Bit 9, CONFIG: GET_CONFIG/SET_CONFIG are supported.</summary>
    Config = 1UL << 9,
    /// <summary>Bit 13, RESET_DEVICE: RESET_DEVICE is supported.</summary>
    ResetDevice = 1UL << 13,
    /// <summary>Bit 15, CONFIGURE_MEM_SLOTS: GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG are supported.</summary>
    ConfigureMemSlots = 1UL << 15,
}
