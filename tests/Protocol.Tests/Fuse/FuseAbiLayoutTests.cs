using Hypervisor.Tests.Support;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Protocol.Tests.Fuse;

/// <summary>
/// Checks every ABI struct against the kernel's own header: a C program compiled with gcc against
/// &lt;linux/fuse.h&gt; prints sizeof and offsetof of each field, and the managed layout must match byte for byte.
/// </summary>
public class FuseAbiLayoutTests
{
    private static readonly (Type Type, string C)[] Structs =
    [
        (typeof(InHeader), "fuse_in_header"), (typeof(OutHeader), "fuse_out_header"), (typeof(Attr), "fuse_attr"),
        (typeof(KStatFs), "fuse_kstatfs"), (typeof(FileLock), "fuse_file_lock"), (typeof(EntryOut), "fuse_entry_out"),
        (typeof(ForgetIn), "fuse_forget_in"), (typeof(ForgetOne), "fuse_forget_one"), (typeof(BatchForgetIn), "fuse_batch_forget_in"),
        (typeof(GetAttrIn), "fuse_getattr_in"), (typeof(AttrOut), "fuse_attr_out"), (typeof(MkNodIn), "fuse_mknod_in"),
        (typeof(MkDirIn), "fuse_mkdir_in"), (typeof(RenameIn), "fuse_rename_in"), (typeof(Rename2In), "fuse_rename2_in"),
        (typeof(LinkIn), "fuse_link_in"), (typeof(SetAttrIn), "fuse_setattr_in"), (typeof(OpenIn), "fuse_open_in"),
        (typeof(CreateIn), "fuse_create_in"), (typeof(OpenOut), "fuse_open_out"), (typeof(ReleaseIn), "fuse_release_in"),
        (typeof(FlushIn), "fuse_flush_in"), (typeof(ReadIn), "fuse_read_in"), (typeof(WriteIn), "fuse_write_in"),
        (typeof(WriteOut), "fuse_write_out"), (typeof(StatFsOut), "fuse_statfs_out"), (typeof(FSyncIn), "fuse_fsync_in"),
        (typeof(SetXAttrIn), "fuse_setxattr_in"), (typeof(GetXAttrIn), "fuse_getxattr_in"), (typeof(GetXAttrOut), "fuse_getxattr_out"),
        (typeof(LkIn), "fuse_lk_in"), (typeof(LkOut), "fuse_lk_out"), (typeof(AccessIn), "fuse_access_in"),
        (typeof(InitIn), "fuse_init_in"), (typeof(InitOut), "fuse_init_out"), (typeof(InterruptIn), "fuse_interrupt_in"),
        (typeof(Dirent), "fuse_dirent"), (typeof(DirentPlus), "fuse_direntplus"), (typeof(FAllocateIn), "fuse_fallocate_in"),
        (typeof(LSeekIn), "fuse_lseek_in"), (typeof(LSeekOut), "fuse_lseek_out"), (typeof(CopyFileRangeIn), "fuse_copy_file_range_in"),
        (typeof(SyncFsIn), "fuse_syncfs_in"), (typeof(SecctxHeader), "fuse_secctx_header"), (typeof(Secctx), "fuse_secctx"),
        (typeof(ExtHeader), "fuse_ext_header"),
    ];

    [Fact]
    public void EveryStructMatchesTheKernelHeader()
    {
        var program = new StringBuilder("#include <stdio.h>\n#include <stddef.h>\n#include <linux/fuse.h>\nint main(void){\n");
        var expected = new StringBuilder();
        foreach (var (type, c) in Structs)
        {
            program.Append($"printf(\"{c} size %zu\\n\", sizeof(struct {c}));\n");
            expected.Append($"{c} size {Marshal.SizeOf(type)}\n");
            foreach (var field in type.GetFields(BindingFlags.Public | BindingFlags.Instance))
            {
                var cField = CName(field.Name);
                program.Append($"printf(\"{c}.{cField} %zu %zu\\n\", offsetof(struct {c}, {cField}), sizeof(((struct {c}*)0)->{cField}));\n");
                expected.Append($"{c}.{cField} {Marshal.OffsetOf(type, field.Name)} {Marshal.SizeOf(field.FieldType)}\n");
            }
        }
        program.Append("return 0;}\n");

        var actual = CProgram.CompileAndRun(program.ToString());
        Assert.Equal(expected.ToString(), actual);
    }

    [Fact]
    public void ManagedSizeEqualsMarshalledSize()
    {
        // The engine reads and writes with MemoryMarshal, which uses the managed size: it must equal the C size.
        foreach (var (type, _) in Structs)
        {
            var managed = (int)typeof(System.Runtime.CompilerServices.Unsafe).GetMethod("SizeOf", Type.EmptyTypes)!.MakeGenericMethod(type).Invoke(null, null)!;
            Assert.Equal(Marshal.SizeOf(type), managed);
        }
    }

    [Fact]
    public void SuppGroups_IsTheCountThatPrecedesTheGids()
    {
        // struct fuse_supp_groups { uint32_t nr_groups; uint32_t groups[]; } (linux/fuse.h 7.38), newer than the
        // header installed here: the flexible array adds nothing to its size.
        Assert.Equal(4, Marshal.SizeOf<SuppGroups>());
        Assert.Equal(32u, FuseConstants.ExtGroups); // FUSE_EXT_GROUPS, after FUSE_MAX_NR_SECCTX (31)
    }

    /// <summary>PascalCase field name to the C name (a C array, such as unused[N], is a fixed buffer of the same name).</summary>
    private static string CName(string name)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < name.Length; i++)
        {
            if (i > 0 && char.IsUpper(name[i])) sb.Append('_');
            sb.Append(char.ToLowerInvariant(name[i]));
        }
        return sb.ToString();
    }
}
