using Hypervisor.Interop;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// What the /dev/fuse mount lets a file grant: device nodes and set-user-ID programs (nodev,nosuid by default, as
/// libfuse mounts; --allow-dev and --allow-suid lift them), and what a write leaves of the set-user-ID and
/// set-group-ID bits. Every answer is compared with a tmpfs mounted with the same flags, or with a plain directory
/// on the host, by the same script.
/// </summary>
[Trait("Category", "Root")]
public sealed class MountPrivilegeTests
{
    /// <summary>mknod c 1 3 (the host's /dev/null), then open it for writing: the errno, or "written".</summary>
    private const string DeviceScript = """
import errno, os, stat, sys
path = os.path.join(sys.argv[1], "null1")
os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
try:
    fd = os.open(path, os.O_WRONLY)
    os.write(fd, b"hi\n")
    os.close(fd)
    print("written")
except OSError as e:
    print(errno.errorcode[e.errno])
""";

    /// <summary>A set-user-ID root copy of id(1), run as uid 1000: the effective uid it reports.</summary>
    private const string SetuidScript = """
import os, shutil, subprocess, sys
path = os.path.join(sys.argv[1], "id")
shutil.copyfile("/usr/bin/id", path)
os.chown(path, 0, 0)
os.chmod(path, 0o4755)
def drop():
    os.setgroups([])
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)
print(subprocess.run([path, "-u"], preexec_fn=drop, capture_output=True, text=True, check=True).stdout.strip())
""";

    /// <summary>
    /// For each mode and writer (uid:gid), a file owned by 2000:2000 with that mode written once by the writer:
    /// "MODE WRITER -> RESULT" lines.
    /// </summary>
    private const string SetgidScript = """
import os, sys
base = sys.argv[1]
for mode in (0o6767, 0o6777, 0o6757):
    for uid, gid in ((2000, 2000), (1000, 2000), (1000, 1000)):
        path = os.path.join(base, "sgid-%o-%d-%d" % (mode, uid, gid))
        with open(path, "w") as f:
            f.write("data\n")
        os.chown(path, 2000, 2000)
        os.chmod(path, mode)
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                os.write(fd, b"more\n")
                os.close(fd)
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        result = oct(os.stat(path).st_mode & 0o7777) if status == 0 else "write failed"
        print("%o %d:%d -> %s" % (mode, uid, gid, result))
""";

    /// <summary>
    /// Each case: the daemon's options, the mount option they must leave on or off, the tmpfs flags that give a plain
    /// mount the same rule, the script run on both, and what a plain tmpfs answers (EACCES for a device node on a nodev
    /// mount; the effective uid a set-uid-root program reports: 1000 where nosuid ignores the bit, 0 where it is honoured).
    /// </summary>
    public static TheoryData<string[], string, bool, ulong, string, string> Privileges => new()
    {
        { [], "nodev", true, Libc.MS_NODEV | Libc.MS_NOSUID, DeviceScript, "EACCES" },
        { ["--allow-dev"], "nodev", false, 0, DeviceScript, "written" },
        { [], "nosuid", true, Libc.MS_NODEV | Libc.MS_NOSUID, SetuidScript, "1000" },
        { ["--allow-suid"], "nosuid", false, 0, SetuidScript, "0" },
    };

    [Theory]
    [MemberData(nameof(Privileges))]
    public void DeviceNodesAndSetuidPrograms_BehaveAsOnATmpfsMountedTheSameWay(string[] options, string mountOption, bool set, ulong tmpfsFlags, string script, string expected)
    {
        using var share = MountedShare.Start(options);
        Assert.Equal(set, MountOptions(share.MountPoint).Contains(mountOption));
        var plain = WithTmpfs(share, tmpfsFlags, dir => Python(script, dir));
        var mounted = Python(script, share.MountPoint);
        Assert.Equal(expected, plain);
        Assert.Equal(plain, mounted);
    }

    [Fact]
    public async Task AllowDev_WithoutMount_IsRefusedWithOneSentence()
    {
        var (file, prefix) = DaemonExecutable.Locate();
        var dir = Directory.CreateTempSubdirectory("pt-allowdev-").FullName;
        try
        {
            var info = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in prefix) info.ArgumentList.Add(a);
            foreach (var a in new[] { "--shared-dir", dir, "--ring", "memfd=1", "--allow-dev" }) info.ArgumentList.Add(a);
            using var p = System.Diagnostics.Process.Start(info)!;
            var stderr = p.StandardError.ReadToEndAsync();
            Assert.True(p.WaitForExit(30_000), "passthrough did not exit");
            Assert.Equal(2, p.ExitCode);
            Assert.Contains("--allow-dev is an option of the /dev/fuse mount", await stderr);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Owner, member (primary group 2000) and non-member writing a 2000:2000 file with both bits set: whatever the
    /// local kernel leaves on a plain directory (a non-member loses set-group-ID even without group execute), the
    /// mount leaves too.
    /// </summary>
    [Fact]
    public void WriteByOwnerMemberAndNonMember_LeavesTheModeAPlainDirectoryLeaves()
    {
        using var share = MountedShare.Start();
        var plain = Python(SetgidScript, share.LocalDir);
        var mounted = Python(SetgidScript, share.MountPoint);
        Assert.Contains("6767 1000:1000 -> 0o767", plain);
        Assert.Contains("6767 1000:2000 -> 0o2767", plain);
        Assert.Equal(plain, mounted);
    }

    private static string Python(string script, string dir) => FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", script, dir).Trim();

    /// <summary>Runs <paramref name="body"/> on a tmpfs mounted with <paramref name="flags"/> inside the share's temporary root.</summary>
    private static string WithTmpfs(MountedShare share, ulong flags, Func<string, string> body)
    {
        var dir = Path.Combine(share.Root, "tmpfs");
        Directory.CreateDirectory(dir);
        Assert.True(Libc.mount("tmpfs", dir, "tmpfs", flags, "mode=0755,size=16m") == 0, "mounting the comparison tmpfs failed");
        try
        {
            return body(dir);
        }
        finally
        {
            Libc.umount2(dir, Libc.MNT_DETACH);
        }
    }

    /// <summary>The mount options of the newest mount at <paramref name="mountPoint"/> (field 6 of mountinfo).</summary>
    private static string MountOptions(string mountPoint)
    {
        string options = "";
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 6 && fields[4] == mountPoint) options = fields[5];
        }
        return options;
    }
}
