namespace Hypervisor.Protocol.Fuse;

/// <summary>FUSE request opcodes (<c>enum fuse_opcode</c> in linux/fuse.h).</summary>
public enum FuseOpcode : uint
{
    /// <summary>FUSE_LOOKUP</summary>
    Lookup = 1,
    /// <summary>FUSE_FORGET (no reply)</summary>
    Forget = 2,
    /// <summary>FUSE_GETATTR</summary>
    GetAttr = 3,
    /// <summary>FUSE_SETATTR</summary>
    SetAttr = 4,
    /// <summary>FUSE_READLINK</summary>
    ReadLink = 5,
    /// <summary>FUSE_SYMLINK</summary>
    Symlink = 6,
    /// <summary>FUSE_MKNOD</summary>
    MkNod = 8,
    /// <summary>FUSE_MKDIR</summary>
    MkDir = 9,
    /// <summary>FUSE_UNLINK</summary>
    Unlink = 10,
    /// <summary>FUSE_RMDIR</summary>
    RmDir = 11,
    /// <summary>FUSE_RENAME</summary>
    Rename = 12,
    /// <summary>FUSE_LINK</summary>
    Link = 13,
    /// <summary>FUSE_OPEN</summary>
    Open = 14,
    /// <summary>FUSE_READ</summary>
    Read = 15,
    /// <summary>FUSE_WRITE</summary>
    Write = 16,
    /// <summary>FUSE_STATFS</summary>
    StatFs = 17,
    /// <summary>FUSE_RELEASE</summary>
    Release = 18,
    /// <summary>FUSE_FSYNC</summary>
    FSync = 20,
    /// <summary>FUSE_SETXATTR</summary>
    SetXAttr = 21,
    /// <summary>FUSE_GETXATTR</summary>
    GetXAttr = 22,
    /// <summary>FUSE_LISTXATTR</summary>
    ListXAttr = 23,
    /// <summary>FUSE_REMOVEXATTR</summary>
    RemoveXAttr = 24,
    /// <summary>FUSE_FLUSH</summary>
    Flush = 25,
    /// <summary>FUSE_INIT</summary>
    Init = 26,
    /// <summary>FUSE_OPENDIR</summary>
    OpenDir = 27,
    /// <summary>FUSE_READDIR</summary>
    ReadDir = 28,
    /// <summary>FUSE_RELEASEDIR</summary>
    ReleaseDir = 29,
    /// <summary>FUSE_FSYNCDIR</summary>
    FSyncDir = 30,
    /// <summary>FUSE_GETLK</summary>
    GetLk = 31,
    /// <summary>FUSE_SETLK</summary>
    SetLk = 32,
    /// <summary>FUSE_SETLKW</summary>
    SetLkW = 33,
    /// <summary>FUSE_ACCESS</summary>
    Access = 34,
    /// <summary>FUSE_CREATE</summary>
    Create = 35,
    /// <summary>FUSE_INTERRUPT</summary>
    Interrupt = 36,
    /// <summary>FUSE_BMAP</summary>
    BMap = 37,
    /// <summary>FUSE_DESTROY</summary>
    Destroy = 38,
    /// <summary>FUSE_IOCTL</summary>
    IoCtl = 39,
    /// <summary>FUSE_POLL</summary>
    Poll = 40,
    /// <summary>FUSE_NOTIFY_REPLY</summary>
    NotifyReply = 41,
    /// <summary>FUSE_BATCH_FORGET (no reply)</summary>
    BatchForget = 42,
    /// <summary>FUSE_FALLOCATE</summary>
    FAllocate = 43,
    /// <summary>FUSE_READDIRPLUS</summary>
    ReadDirPlus = 44,
    /// <summary>FUSE_RENAME2</summary>
    Rename2 = 45,
    /// <summary>FUSE_LSEEK</summary>
    LSeek = 46,
    /// <summary>FUSE_COPY_FILE_RANGE</summary>
    CopyFileRange = 47,
    /// <summary>FUSE_SETUPMAPPING (DAX)</summary>
    SetupMapping = 48,
    /// <summary>FUSE_REMOVEMAPPING (DAX)</summary>
    RemoveMapping = 49,
    /// <summary>FUSE_SYNCFS</summary>
    SyncFs = 50,
    /// <summary>FUSE_TMPFILE</summary>
    TmpFile = 51,
    /// <summary>FUSE_STATX</summary>
    Statx = 52,
    /// <summary>FUSE_COPY_FILE_RANGE_64</summary>
    CopyFileRange64 = 53,
}

/// <summary>
/// Bits of <c>fuse_init_in.flags</c>/<c>flags2</c> and <c>fuse_init_out.flags</c>/<c>flags2</c>, as one 64-bit set: the
/// ones this implementation asks for, refuses or checks (linux/fuse.h has the others; they pass through as numbers).
/// </summary>
[Flags]
public enum InitFlags : ulong
{
    /// <summary>No flags.</summary>
    None = 0,
    /// <summary>FUSE_ASYNC_READ</summary>
    AsyncRead = 1UL << 0,
    /// <summary>FUSE_POSIX_LOCKS</summary>
    PosixLocks = 1UL << 1,
    /// <summary>FUSE_ATOMIC_O_TRUNC</summary>
    AtomicOTrunc = 1UL << 3,
    /// <summary>FUSE_EXPORT_SUPPORT</summary>
    ExportSupport = 1UL << 4,
    /// <summary>FUSE_BIG_WRITES</summary>
    BigWrites = 1UL << 5,
    /// <summary>FUSE_DONT_MASK</summary>
    DontMask = 1UL << 6,
    /// <summary>FUSE_FLOCK_LOCKS</summary>
    FlockLocks = 1UL << 10,
    /// <summary>FUSE_AUTO_INVAL_DATA</summary>
    AutoInvalData = 1UL << 12,
    /// <summary>FUSE_DO_READDIRPLUS</summary>
    DoReadDirPlus = 1UL << 13,
    /// <summary>FUSE_READDIRPLUS_AUTO</summary>
    ReadDirPlusAuto = 1UL << 14,
    /// <summary>FUSE_ASYNC_DIO</summary>
    AsyncDio = 1UL << 15,
    /// <summary>FUSE_WRITEBACK_CACHE</summary>
    WritebackCache = 1UL << 16,
    /// <summary>FUSE_PARALLEL_DIROPS</summary>
    ParallelDirOps = 1UL << 18,
    /// <summary>FUSE_POSIX_ACL</summary>
    PosixAcl = 1UL << 20,
    /// <summary>FUSE_MAX_PAGES</summary>
    MaxPages = 1UL << 22,
    /// <summary>FUSE_CACHE_SYMLINKS</summary>
    CacheSymlinks = 1UL << 23,
    /// <summary>FUSE_SUBMOUNTS: the client makes a submount of an entry whose attributes carry FUSE_ATTR_SUBMOUNT.</summary>
    Submounts = 1UL << 27,
    /// <summary>FUSE_HANDLE_KILLPRIV_V2</summary>
    HandleKillPrivV2 = 1UL << 28,
    /// <summary>FUSE_SETXATTR_EXT</summary>
    SetXAttrExt = 1UL << 29,
    /// <summary>FUSE_INIT_EXT: flags2 is valid.</summary>
    InitExt = 1UL << 30,
    /// <summary>FUSE_CREATE_SUPP_GROUP (flags2 bit 2): CREATE, MKNOD, MKDIR and SYMLINK carry a FUSE_EXT_GROUPS extension with the parent directory's group when the caller is in it through a supplementary group.</summary>
    CreateSuppGroup = 1UL << 34,
    /// <summary>FUSE_SECURITY_CTX (flags2 bit 0): CREATE, MKDIR, MKNOD and SYMLINK carry the new file's security context.</summary>
    SecurityCtx = 1UL << 32,
    /// <summary>FUSE_DIRECT_IO_ALLOW_MMAP (flags2 bit 4, protocol 7.39): shared mmap of files opened with FOPEN_DIRECT_IO.</summary>
    DirectIoAllowMmap = 1UL << 36,
}

/// <summary><c>fuse_open_out.open_flags</c> (FOPEN_*) that this implementation sets.</summary>
[Flags]
public enum OpenOutFlags : uint
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary>FOPEN_DIRECT_IO: bypass the page cache for this open file.</summary>
    DirectIo = 1 << 0,
    /// <summary>FOPEN_KEEP_CACHE: do not invalidate the data cache on open.</summary>
    KeepCache = 1 << 1,
    /// <summary>FOPEN_CACHE_DIR</summary>
    CacheDir = 1 << 3,
}

/// <summary><c>fuse_setattr_in.valid</c> (FATTR_*) that this implementation acts on.</summary>
[Flags]
public enum SetAttrValid : uint
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary>FATTR_MODE</summary>
    Mode = 1 << 0,
    /// <summary>FATTR_UID</summary>
    Uid = 1 << 1,
    /// <summary>FATTR_GID</summary>
    Gid = 1 << 2,
    /// <summary>FATTR_SIZE</summary>
    Size = 1 << 3,
    /// <summary>FATTR_ATIME</summary>
    ATime = 1 << 4,
    /// <summary>FATTR_MTIME</summary>
    MTime = 1 << 5,
    /// <summary>FATTR_FH</summary>
    Fh = 1 << 6,
    /// <summary>FATTR_ATIME_NOW</summary>
    ATimeNow = 1 << 7,
    /// <summary>FATTR_MTIME_NOW</summary>
    MTimeNow = 1 << 8,
    /// <summary>FATTR_KILL_SUIDGID</summary>
    KillSuidGid = 1 << 11,
}

/// <summary>Small flag constants of linux/fuse.h used by individual requests.</summary>
public static class FuseConstants
{
    /// <summary>
    /// FUSE_EXT_GROUPS: the <c>fuse_ext_header.type</c> of a supplementary group list (<see cref="SuppGroups"/>); types
    /// 0 to 31 (FUSE_MAX_NR_SECCTX) are a security context's count, which shares the record's place.
    /// </summary>
    public const uint ExtGroups = 32;

    /// <summary>The protocol major version this implementation speaks.</summary>
    public const uint KernelVersion = 7;
    /// <summary>The highest minor version this implementation speaks (7.31 is Linux 5.4's).</summary>
    public const uint KernelMinorVersion = 38;
    /// <summary>The oldest minor version accepted (Linux 5.4 sends 7.31; older clients are still served down to 7.12).</summary>
    public const uint MinimumMinorVersion = 12;
    /// <summary>FUSE_ROOT_ID</summary>
    public const ulong RootId = 1;
    /// <summary>FUSE_ATTR_SUBMOUNT (fuse_attr.flags): the entry is the root of a mount below its parent's.</summary>
    public const uint AttrSubmount = 1;
    /// <summary>FUSE_GETATTR_FH: getattr_in.fh is valid.</summary>
    public const uint GetAttrFh = 1;
    /// <summary>FUSE_WRITE_KILL_SUIDGID (FUSE_WRITE_KILL_PRIV before 7.31)</summary>
    public const uint WriteKillSuidGid = 4;
    /// <summary>FUSE_RELEASE_FLOCK_UNLOCK</summary>
    public const uint ReleaseFlockUnlock = 2;
    /// <summary>FUSE_FSYNC_FDATASYNC</summary>
    public const uint FSyncFDataSync = 1;
    /// <summary>FUSE_LK_FLOCK: the lock is a BSD flock, not a POSIX lock.</summary>
    public const uint LkFlock = 1;
    /// <summary>FUSE_OPEN_KILL_SUIDGID (open_in.open_flags / create_in.open_flags)</summary>
    public const uint OpenKillSuidGid = 1;
    /// <summary>FUSE_SETXATTR_ACL_KILL_SGID (setxattr_in.setxattr_flags): clear SGID when system.posix_acl_access is set, unless the caller may keep it.</summary>
    public const uint SetXAttrAclKillSgid = 1;
    /// <summary>FUSE_MAX_NR_SECCTX: extension types up to this are a fuse_secctx_header.</summary>
    public const uint MaxNrSecctx = 31;
    /// <summary>FUSE_COMPAT_SETXATTR_IN_SIZE: the size of fuse_setxattr_in without SETXATTR_EXT.</summary>
    public const int CompatSetXAttrInSize = 8;
    /// <summary>FUSE_COMPAT_INIT_OUT_SIZE (minor &lt; 5).</summary>
    public const int CompatInitOutSize = 8;
    /// <summary>FUSE_COMPAT_22_INIT_OUT_SIZE (minor &lt; 23).</summary>
    public const int Compat22InitOutSize = 24;
    /// <summary>RENAME_NOREPLACE</summary>
    public const uint RenameNoReplace = 1;
    /// <summary>RENAME_EXCHANGE</summary>
    public const uint RenameExchange = 2;
    /// <summary>RENAME_WHITEOUT</summary>
    public const uint RenameWhiteout = 4;
}
