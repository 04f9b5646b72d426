// Layouts of linux/fuse.h (protocol 7.38). Each struct mirrors its C struct field for field; FuseAbiLayoutTests
// compiles a C program against the kernel header and checks every size and offset.
using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Fuse;

/// <summary><c>struct fuse_in_header</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct InHeader
{
    /// <summary><c>len</c></summary>
    public uint Len;
    /// <summary><c>opcode</c></summary>
    public uint Opcode;
    /// <summary><c>unique</c></summary>
    public ulong Unique;
    /// <summary><c>nodeid</c></summary>
    public ulong Nodeid;
    /// <summary><c>uid</c></summary>
    public uint Uid;
    /// <summary><c>gid</c></summary>
    public uint Gid;
    /// <summary><c>pid</c></summary>
    public uint Pid;
    /// <summary><c>total_extlen</c></summary>
    public ushort TotalExtlen;
    /// <summary><c>padding</c></summary>
    public ushort Padding;
}

/// <summary><c>struct fuse_ext_header</c>: one record of a request's extension area.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ExtHeader
{
    /// <summary><c>size</c>: of the record, this header included, a multiple of 8.</summary>
    public uint Size;
    /// <summary><c>type</c>: 0 to FUSE_MAX_NR_SECCTX is a <c>fuse_secctx_header</c> (the type is its count); FUSE_EXT_GROUPS is 32.</summary>
    public uint Type;
}

/// <summary>
/// <c>struct fuse_supp_groups</c> (protocol 7.38): the payload of a FUSE_EXT_GROUPS extension, followed by
/// <c>nr_groups</c> gids (<c>groups[]</c>). Newer than the C header the layout tests compile against here, so its
/// layout is checked by its size alone.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct SuppGroups
{
    /// <summary><c>nr_groups</c></summary>
    public uint NrGroups;
}

/// <summary><c>struct fuse_out_header</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct OutHeader
{
    /// <summary><c>len</c></summary>
    public uint Len;
    /// <summary><c>error</c></summary>
    public int Error;
    /// <summary><c>unique</c></summary>
    public ulong Unique;
}

/// <summary><c>struct fuse_attr</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct Attr
{
    /// <summary><c>ino</c></summary>
    public ulong Ino;
    /// <summary><c>size</c></summary>
    public ulong Size;
    /// <summary><c>blocks</c></summary>
    public ulong Blocks;
    /// <summary><c>atime</c></summary>
    public ulong Atime;
    /// <summary><c>mtime</c></summary>
    public ulong Mtime;
    /// <summary><c>ctime</c></summary>
    public ulong Ctime;
    /// <summary><c>atimensec</c></summary>
    public uint Atimensec;
    /// <summary><c>mtimensec</c></summary>
    public uint Mtimensec;
    /// <summary><c>ctimensec</c></summary>
    public uint Ctimensec;
    /// <summary><c>mode</c></summary>
    public uint Mode;
    /// <summary><c>nlink</c></summary>
    public uint Nlink;
    /// <summary><c>uid</c></summary>
    public uint Uid;
    /// <summary><c>gid</c></summary>
    public uint Gid;
    /// <summary><c>rdev</c></summary>
    public uint Rdev;
    /// <summary><c>blksize</c></summary>
    public uint Blksize;
    /// <summary><c>flags</c></summary>
    public uint Flags;
}

/// <summary><c>struct fuse_kstatfs</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct KStatFs
{
    /// <summary><c>blocks</c></summary>
    public ulong Blocks;
    /// <summary><c>bfree</c></summary>
    public ulong Bfree;
    /// <summary><c>bavail</c></summary>
    public ulong Bavail;
    /// <summary><c>files</c></summary>
    public ulong Files;
    /// <summary><c>ffree</c></summary>
    public ulong Ffree;
    /// <summary><c>bsize</c></summary>
    public uint Bsize;
    /// <summary><c>namelen</c></summary>
    public uint Namelen;
    /// <summary><c>frsize</c></summary>
    public uint Frsize;
    /// <summary><c>padding</c></summary>
    public uint Padding;
    /// <summary><c>spare[6]</c></summary>
    public fixed uint Spare[6];
}

/// <summary><c>struct fuse_file_lock</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FileLock
{
    /// <summary><c>start</c></summary>
    public ulong Start;
    /// <summary><c>end</c></summary>
    public ulong End;
    /// <summary><c>type</c></summary>
    public uint Type;
    /// <summary><c>pid</c></summary>
    public uint Pid;
}

/// <summary><c>struct fuse_entry_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct EntryOut
{
    /// <summary><c>nodeid</c></summary>
    public ulong Nodeid;
    /// <summary><c>generation</c></summary>
    public ulong Generation;
    /// <summary><c>entry_valid</c></summary>
    public ulong EntryValid;
    /// <summary><c>attr_valid</c></summary>
    public ulong AttrValid;
    /// <summary><c>entry_valid_nsec</c></summary>
    public uint EntryValidNsec;
    /// <summary><c>attr_valid_nsec</c></summary>
    public uint AttrValidNsec;
    /// <summary><c>attr</c></summary>
    public Attr Attr;
}

/// <summary><c>struct fuse_forget_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ForgetIn
{
    /// <summary><c>nlookup</c></summary>
    public ulong Nlookup;
}

/// <summary><c>struct fuse_forget_one</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ForgetOne
{
    /// <summary><c>nodeid</c></summary>
    public ulong Nodeid;
    /// <summary><c>nlookup</c></summary>
    public ulong Nlookup;
}

/// <summary><c>struct fuse_batch_forget_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct BatchForgetIn
{
    /// <summary><c>count</c></summary>
    public uint Count;
    /// <summary><c>dummy</c></summary>
    public uint Dummy;
}

/// <summary><c>struct fuse_getattr_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct GetAttrIn
{
    /// <summary><c>getattr_flags</c></summary>
    public uint GetattrFlags;
    /// <summary><c>dummy</c></summary>
    public uint Dummy;
    /// <summary><c>fh</c></summary>
    public ulong Fh;
}

/// <summary><c>struct fuse_attr_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct AttrOut
{
    /// <summary><c>attr_valid</c></summary>
    public ulong AttrValid;
    /// <summary><c>attr_valid_nsec</c></summary>
    public uint AttrValidNsec;
    /// <summary><c>dummy</c></summary>
    public uint Dummy;
    /// <summary><c>attr</c></summary>
    public Attr Attr;
}

/// <summary><c>struct fuse_mknod_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct MkNodIn
{
    /// <summary><c>mode</c></summary>
    public uint Mode;
    /// <summary><c>rdev</c></summary>
    public uint Rdev;
    /// <summary><c>umask</c></summary>
    public uint Umask;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_mkdir_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct MkDirIn
{
    /// <summary><c>mode</c></summary>
    public uint Mode;
    /// <summary><c>umask</c></summary>
    public uint Umask;
}

/// <summary><c>struct fuse_rename_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct RenameIn
{
    /// <summary><c>newdir</c></summary>
    public ulong Newdir;
}

/// <summary><c>struct fuse_rename2_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct Rename2In
{
    /// <summary><c>newdir</c></summary>
    public ulong Newdir;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_link_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct LinkIn
{
    /// <summary><c>oldnodeid</c></summary>
    public ulong Oldnodeid;
}

/// <summary><c>struct fuse_setattr_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct SetAttrIn
{
    /// <summary><c>valid</c></summary>
    public uint Valid;
    /// <summary><c>padding</c></summary>
    public uint Padding;
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>size</c></summary>
    public ulong Size;
    /// <summary><c>lock_owner</c></summary>
    public ulong LockOwner;
    /// <summary><c>atime</c></summary>
    public ulong Atime;
    /// <summary><c>mtime</c></summary>
    public ulong Mtime;
    /// <summary><c>ctime</c></summary>
    public ulong Ctime;
    /// <summary><c>atimensec</c></summary>
    public uint Atimensec;
    /// <summary><c>mtimensec</c></summary>
    public uint Mtimensec;
    /// <summary><c>ctimensec</c></summary>
    public uint Ctimensec;
    /// <summary><c>mode</c></summary>
    public uint Mode;
    /// <summary><c>unused4</c></summary>
    public uint Unused4;
    /// <summary><c>uid</c></summary>
    public uint Uid;
    /// <summary><c>gid</c></summary>
    public uint Gid;
    /// <summary><c>unused5</c></summary>
    public uint Unused5;
}

/// <summary><c>struct fuse_open_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct OpenIn
{
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>open_flags</c></summary>
    public uint OpenFlags;
}

/// <summary><c>struct fuse_create_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct CreateIn
{
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>mode</c></summary>
    public uint Mode;
    /// <summary><c>umask</c></summary>
    public uint Umask;
    /// <summary><c>open_flags</c></summary>
    public uint OpenFlags;
}

/// <summary><c>struct fuse_open_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct OpenOut
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>open_flags</c></summary>
    public uint OpenFlags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_release_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ReleaseIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>release_flags</c></summary>
    public uint ReleaseFlags;
    /// <summary><c>lock_owner</c></summary>
    public ulong LockOwner;
}

/// <summary><c>struct fuse_flush_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FlushIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>unused</c></summary>
    public uint Unused;
    /// <summary><c>padding</c></summary>
    public uint Padding;
    /// <summary><c>lock_owner</c></summary>
    public ulong LockOwner;
}

/// <summary><c>struct fuse_read_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ReadIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>offset</c></summary>
    public ulong Offset;
    /// <summary><c>size</c></summary>
    public uint Size;
    /// <summary><c>read_flags</c></summary>
    public uint ReadFlags;
    /// <summary><c>lock_owner</c></summary>
    public ulong LockOwner;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_write_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct WriteIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>offset</c></summary>
    public ulong Offset;
    /// <summary><c>size</c></summary>
    public uint Size;
    /// <summary><c>write_flags</c></summary>
    public uint WriteFlags;
    /// <summary><c>lock_owner</c></summary>
    public ulong LockOwner;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_write_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct WriteOut
{
    /// <summary><c>size</c></summary>
    public uint Size;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_statfs_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct StatFsOut
{
    /// <summary><c>st</c></summary>
    public KStatFs St;
}

/// <summary><c>struct fuse_fsync_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FSyncIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>fsync_flags</c></summary>
    public uint FsyncFlags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_setxattr_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct SetXAttrIn
{
    /// <summary><c>size</c></summary>
    public uint Size;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>setxattr_flags</c></summary>
    public uint SetxattrFlags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_getxattr_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct GetXAttrIn
{
    /// <summary><c>size</c></summary>
    public uint Size;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_getxattr_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct GetXAttrOut
{
    /// <summary><c>size</c></summary>
    public uint Size;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_lk_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct LkIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>owner</c></summary>
    public ulong Owner;
    /// <summary><c>lk</c></summary>
    public FileLock Lk;
    /// <summary><c>lk_flags</c></summary>
    public uint LkFlags;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_lk_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct LkOut
{
    /// <summary><c>lk</c></summary>
    public FileLock Lk;
}

/// <summary><c>struct fuse_access_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct AccessIn
{
    /// <summary><c>mask</c></summary>
    public uint Mask;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_init_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct InitIn
{
    /// <summary><c>major</c></summary>
    public uint Major;
    /// <summary><c>minor</c></summary>
    public uint Minor;
    /// <summary><c>max_readahead</c></summary>
    public uint MaxReadahead;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>flags2</c></summary>
    public uint Flags2;
    /// <summary><c>unused[11]</c></summary>
    public fixed uint Unused[11];
}

/// <summary><c>struct fuse_init_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct InitOut
{
    /// <summary><c>major</c></summary>
    public uint Major;
    /// <summary><c>minor</c></summary>
    public uint Minor;
    /// <summary><c>max_readahead</c></summary>
    public uint MaxReadahead;
    /// <summary><c>flags</c></summary>
    public uint Flags;
    /// <summary><c>max_background</c></summary>
    public ushort MaxBackground;
    /// <summary><c>congestion_threshold</c></summary>
    public ushort CongestionThreshold;
    /// <summary><c>max_write</c></summary>
    public uint MaxWrite;
    /// <summary><c>time_gran</c></summary>
    public uint TimeGran;
    /// <summary><c>max_pages</c></summary>
    public ushort MaxPages;
    /// <summary><c>map_alignment</c></summary>
    public ushort MapAlignment;
    /// <summary><c>flags2</c></summary>
    public uint Flags2;
    /// <summary><c>unused[7]</c></summary>
    public fixed uint Unused[7];
}

/// <summary><c>struct fuse_interrupt_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct InterruptIn
{
    /// <summary><c>unique</c></summary>
    public ulong Unique;
}

/// <summary><c>struct fuse_dirent</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct Dirent
{
    /// <summary><c>ino</c></summary>
    public ulong Ino;
    /// <summary><c>off</c></summary>
    public ulong Off;
    /// <summary><c>namelen</c></summary>
    public uint Namelen;
    /// <summary><c>type</c></summary>
    public uint Type;
}

/// <summary><c>struct fuse_direntplus</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct DirentPlus
{
    /// <summary><c>entry_out</c></summary>
    public EntryOut EntryOut;
    /// <summary><c>dirent</c></summary>
    public Dirent Dirent;
}

/// <summary><c>struct fuse_fallocate_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FAllocateIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>offset</c></summary>
    public ulong Offset;
    /// <summary><c>length</c></summary>
    public ulong Length;
    /// <summary><c>mode</c></summary>
    public uint Mode;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_lseek_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct LSeekIn
{
    /// <summary><c>fh</c></summary>
    public ulong Fh;
    /// <summary><c>offset</c></summary>
    public ulong Offset;
    /// <summary><c>whence</c></summary>
    public uint Whence;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

/// <summary><c>struct fuse_lseek_out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct LSeekOut
{
    /// <summary><c>offset</c></summary>
    public ulong Offset;
}

/// <summary><c>struct fuse_copy_file_range_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct CopyFileRangeIn
{
    /// <summary><c>fh_in</c></summary>
    public ulong FhIn;
    /// <summary><c>off_in</c></summary>
    public ulong OffIn;
    /// <summary><c>nodeid_out</c></summary>
    public ulong NodeidOut;
    /// <summary><c>fh_out</c></summary>
    public ulong FhOut;
    /// <summary><c>off_out</c></summary>
    public ulong OffOut;
    /// <summary><c>len</c></summary>
    public ulong Len;
    /// <summary><c>flags</c></summary>
    public ulong Flags;
}

/// <summary><c>struct fuse_syncfs_in</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct SyncFsIn
{
    /// <summary><c>padding</c></summary>
    public ulong Padding;
}

/// <summary><c>struct fuse_secctx_header</c>: starts the security-context extension of CREATE, MKDIR, MKNOD and SYMLINK.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct SecctxHeader
{
    /// <summary><c>size</c>: of the whole extension, this header included.</summary>
    public uint Size;
    /// <summary><c>nr_secctx</c>: how many <c>fuse_secctx</c> follow (at most FUSE_MAX_NR_SECCTX).</summary>
    public uint NrSecctx;
}

/// <summary><c>struct fuse_secctx</c>: followed by the context's NUL-terminated xattr name and <c>size</c> bytes of value.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct Secctx
{
    /// <summary><c>size</c>: of the context value.</summary>
    public uint Size;
    /// <summary><c>padding</c></summary>
    public uint Padding;
}

