namespace Hypervisor.Interop;

/// <summary>The file type and permission bits of st_mode / stx_mode (sys/stat.h).</summary>
internal static partial class Libc
{
    internal const uint S_IFMT = 0xF000;
    internal const uint S_IFSOCK = 0xC000;
    internal const uint S_IFLNK = 0xA000;
    internal const uint S_IFREG = 0x8000;
    internal const uint S_IFBLK = 0x6000;
    internal const uint S_IFDIR = 0x4000;
    internal const uint S_IFCHR = 0x2000;
    internal const uint S_IFIFO = 0x1000;
    internal const uint S_ISUID = 0x800;
    internal const uint S_ISGID = 0x400;
    internal const uint S_IXGRP = 0x8;
}
