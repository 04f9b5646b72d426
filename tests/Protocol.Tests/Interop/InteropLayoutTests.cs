using Hypervisor.Tests.Support;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Tests.Interop;

/// <summary>
/// Checks every structure of the interop source set that the kernel or the C library reads or writes against the C
/// headers: a program compiled with gcc prints sizeof, and offsetof and sizeof of each member, and the managed layout
/// must match byte for byte. Every field of a structure must be named here, so that a field added without a C
/// counterpart fails the test.
/// </summary>
public sealed class InteropLayoutTests
{
    private static readonly (Type Type, string C, (string Field, string Member)[] Fields)[] Structs =
    [
        (typeof(Stat), "struct stat",
        [
            ("Dev", "st_dev"), ("Ino", "st_ino"), ("Nlink", "st_nlink"), ("Mode", "st_mode"), ("Uid", "st_uid"), ("Gid", "st_gid"),
            ("Pad0", "__pad0"), ("Rdev", "st_rdev"), ("Size", "st_size"), ("Blksize", "st_blksize"), ("Blocks", "st_blocks"),
            ("Atime", "st_atim.tv_sec"), ("AtimeNsec", "st_atim.tv_nsec"), ("Mtime", "st_mtim.tv_sec"), ("MtimeNsec", "st_mtim.tv_nsec"),
            ("Ctime", "st_ctim.tv_sec"), ("CtimeNsec", "st_ctim.tv_nsec"),
            ("Reserved0", "__glibc_reserved[0]"), ("Reserved1", "__glibc_reserved[1]"), ("Reserved2", "__glibc_reserved[2]"),
        ]),
        (typeof(Timespec), "struct timespec", [("Sec", "tv_sec"), ("Nsec", "tv_nsec")]),
        (typeof(Statx), "struct statx",
        [
            ("Mask", "stx_mask"), ("Blksize", "stx_blksize"), ("Attributes", "stx_attributes"), ("Nlink", "stx_nlink"),
            ("Uid", "stx_uid"), ("Gid", "stx_gid"), ("Mode", "stx_mode"), ("Spare0", "__spare0"), ("Ino", "stx_ino"),
            ("Size", "stx_size"), ("Blocks", "stx_blocks"), ("AttributesMask", "stx_attributes_mask"),
            ("Atime", "stx_atime"), ("Btime", "stx_btime"), ("Ctime", "stx_ctime"), ("Mtime", "stx_mtime"),
            ("RdevMajor", "stx_rdev_major"), ("RdevMinor", "stx_rdev_minor"), ("DevMajor", "stx_dev_major"), ("DevMinor", "stx_dev_minor"),
            ("MntId", "stx_mnt_id"), ("DioMemAlign", "stx_dio_mem_align"), ("DioOffsetAlign", "stx_dio_offset_align"), ("Spare3", "__spare3"),
        ]),
        (typeof(StatxTimestamp), "struct statx_timestamp", [("TvSec", "tv_sec"), ("TvNsec", "tv_nsec"), ("Reserved", "__reserved")]),
        (typeof(StatVfs), "struct statvfs",
        [
            ("Bsize", "f_bsize"), ("Frsize", "f_frsize"), ("Blocks", "f_blocks"), ("Bfree", "f_bfree"), ("Bavail", "f_bavail"),
            ("Files", "f_files"), ("Ffree", "f_ffree"), ("Favail", "f_favail"), ("Fsid", "f_fsid"), ("Flag", "f_flag"),
            ("Namemax", "f_namemax"), ("Spare", "__f_spare"),
        ]),
        (typeof(Flock), "struct flock", [("Type", "l_type"), ("Whence", "l_whence"), ("Start", "l_start"), ("Len", "l_len"), ("Pid", "l_pid")]),
        (typeof(RLimit), "struct rlimit", [("Current", "rlim_cur"), ("Maximum", "rlim_max")]),
        (typeof(PollFd), "struct pollfd", [("Fd", "fd"), ("Events", "events"), ("Revents", "revents")]),
        (typeof(Ucred), "struct ucred", [("Pid", "pid"), ("Uid", "uid"), ("Gid", "gid")]),
        (typeof(SockaddrUn), "struct sockaddr_un", [("Family", "sun_family"), ("Path", "sun_path")]),
        (typeof(IoVec), "struct iovec", [("Base", "iov_base"), ("Len", "iov_len")]),
        (typeof(MsgHdr), "struct msghdr",
        [
            ("Name", "msg_name"), ("NameLen", "msg_namelen"), ("Iov", "msg_iov"), ("IovLen", "msg_iovlen"),
            ("Control", "msg_control"), ("ControlLen", "msg_controllen"), ("Flags", "msg_flags"),
        ]),
        (typeof(CmsgHdr), "struct cmsghdr", [("Len", "cmsg_len"), ("Level", "cmsg_level"), ("Type", "cmsg_type")]),
    ];

    private const string Headers = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <stddef.h>
        #include <fcntl.h>
        #include <poll.h>
        #include <sched.h>
        #include <sys/resource.h>
        #include <sys/socket.h>
        #include <sys/stat.h>
        #include <sys/statvfs.h>
        #include <sys/uio.h>
        #include <sys/un.h>
        #include <time.h>

        """;

    [Fact]
    public void EveryStructureMatchesTheCHeaders()
    {
        var program = new StringBuilder(Headers).Append("int main(void) {\n");
        var expected = new StringBuilder();
        foreach (var (type, c, fields) in Structs)
        {
            program.Append($"printf(\"{c} %zu\\n\", sizeof({c}));\n");
            expected.Append($"{c} {Marshal.SizeOf(type)}\n");
            foreach (var (field, member) in fields)
            {
                var info = type.GetField(field, BindingFlags.Public | BindingFlags.Instance)
                    ?? throw new InvalidOperationException($"{type.Name} has no field {field}");
                program.Append($"printf(\"{c}.{member} %zu %zu\\n\", offsetof({c}, {member}), sizeof((({c}*)0)->{member}));\n");
                expected.Append($"{c}.{member} {Marshal.OffsetOf(type, field)} {Marshal.SizeOf(info.FieldType)}\n");
            }
        }
        program.Append("return 0;\n}\n");
        Assert.Equal(expected.ToString(), CProgram.CompileAndRun(program.ToString()));
    }

    [Fact]
    public void EveryFieldIsChecked()
    {
        foreach (var (type, _, fields) in Structs)
        {
            var named = fields.Select(f => f.Field).ToHashSet();
            foreach (var field in type.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance))
                Assert.True(named.Contains(field.Name), $"{type.Name}.{field.Name} is not compared with a C member");
        }
    }

    [Fact]
    public void ManagedSizeEqualsMarshalledSize()
    {
        // Structures read with MemoryMarshal or through pointers use the managed size: it must equal the C size.
        foreach (var (type, _, _) in Structs)
        {
            var managed = (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf), Type.EmptyTypes)!.MakeGenericMethod(type).Invoke(null, null)!;
            Assert.True(Marshal.SizeOf(type) == managed, $"{type.Name}: marshalled {Marshal.SizeOf(type)} bytes, managed {managed}");
        }
    }

    [Fact]
    public void SizesAndMacrosMatchTheCHeaders()
    {
        int[] dataBytes = [0, 4, 8, 12, 32];
        var program = new StringBuilder(Headers).Append("int main(void) {\n");
        var expected = new StringBuilder();
        program.Append("printf(\"cpu_set_t %zu\\n\", sizeof(cpu_set_t));\n");
        expected.Append($"cpu_set_t {Libc.CpuMaskBytes}\n");
        program.Append("printf(\"sun_path %zu\\n\", sizeof(((struct sockaddr_un*)0)->sun_path) - 1);\n");
        expected.Append($"sun_path {SockaddrUn.MaxPathBytes}\n");
        foreach (int n in dataBytes)
        {
            program.Append($"printf(\"CMSG_LEN({n}) %zu CMSG_SPACE({n}) %zu\\n\", (size_t)CMSG_LEN({n}), (size_t)CMSG_SPACE({n}));\n");
            expected.Append($"CMSG_LEN({n}) {CmsgHdr.Length(n)} CMSG_SPACE({n}) {CmsgHdr.Space(n)}\n");
        }
        program.Append("return 0;\n}\n");
        Assert.Equal(expected.ToString(), CProgram.CompileAndRun(program.ToString()));
        Assert.Equal(CmsgHdr.Size, CmsgHdr.Length(0));
    }
}
