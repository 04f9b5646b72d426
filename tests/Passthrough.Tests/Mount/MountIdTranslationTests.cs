namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// <c>--translate-uid</c> / <c>--translate-gid</c> and FUSE_CREATE_SUPP_GROUP on a /dev/fuse mount, where the host
/// kernel (6.2 and later) plays the guest: processes using the mount are the guest's callers, the shared directory is
/// what the host sees. Each test checks both sides: the owner the host sees for what is made through the mount, and the
/// owner the mount shows for what the host made.
/// </summary>
[Trait("Category", "Root")]
public sealed class MountIdTranslationTests
{
    /// <summary>
    /// argv: mount dir, source dir. Through the mount: creates as root and chowns, creates as other users (a forked
    /// child with setresuid), and chowns to a forbidden id; in the source: makes files with host owners, then stats
    /// them through the mount. Prints "what: result" lines.
    /// </summary>
    private const string TranslateScript = """
import errno, os, sys
mnt, src = sys.argv[1], sys.argv[2]
def owner(path):
    st = os.lstat(path)
    return "%d:%d" % (st.st_uid, st.st_gid)
def as_user(uid, gid, fn):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            fn()
            os._exit(0)
        except OSError as e:
            os._exit(100 + e.errno)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else errno.errorcode.get(code - 100, str(code))
os.mkdir(os.path.join(mnt, "pub"))
os.chmod(os.path.join(mnt, "pub"), 0o777)
# guest -> host: owners given by chown, and the owner of what a caller creates (create, mkdir, mknod, symlink)
for name, uid, gid in (("c-map", 1003, 0), ("c-squash", 0, 550), ("c-guest", 0, 102), ("c-none", 77, 88)):
    p = os.path.join(mnt, "pub", name)
    open(p, "w").close()
    os.chown(p, uid, gid)
    print("chown %s %d:%d host %s guest %s" % (name, uid, gid, owner(os.path.join(src, "pub", name)), owner(p)))
def make_all():
    base = os.path.join(mnt, "pub")
    open(os.path.join(base, "u-file"), "w").close()
    os.mkdir(os.path.join(base, "u-dir"))
    os.mkfifo(os.path.join(base, "u-fifo"))
    os.symlink("u-file", os.path.join(base, "u-link"))
print("create as 1002:101 %s" % as_user(1002, 101, make_all))
for name in ("u-file", "u-dir", "u-fifo", "u-link"):
    print("created %s host %s guest %s" % (name, owner(os.path.join(src, "pub", name)), owner(os.path.join(mnt, "pub", name))))
os.link(os.path.join(mnt, "pub", "u-file"), os.path.join(mnt, "pub", "u-hard"))
print("linked u-hard guest %s" % owner(os.path.join(mnt, "pub", "u-hard")))
# forbidden guest ids: no new file, no chown to them
print("create as forbidden uid 4005 %s" % as_user(4005, 0, lambda: open(os.path.join(mnt, "pub", "f-uid"), "w").close()))
print("create as forbidden gid 4005 %s" % as_user(0, 4005, lambda: open(os.path.join(mnt, "pub", "f-gid"), "w").close()))
print("exists f-uid %s f-gid %s" % (os.path.exists(os.path.join(src, "pub", "f-uid")), os.path.exists(os.path.join(src, "pub", "f-gid"))))
for uid, gid in ((4005, -1), (-1, 4009)):
    try:
        os.chown(os.path.join(mnt, "pub", "c-none"), uid, gid)
        print("chown to forbidden %d:%d ok" % (uid, gid))
    except OSError as e:
        print("chown to forbidden %d:%d %s" % (uid, gid, errno.errorcode[e.errno]))
print("after forbidden chowns host %s" % owner(os.path.join(src, "pub", "c-none")))
# host -> guest: what the host made, as the mount shows it (stat, and a directory listing with attributes)
for name, uid, gid in (("h-map", 2005, 0), ("h-squash", 5050, 302), ("h-guest", 1102, 202), ("h-none", 1003, 7000)):
    p = os.path.join(src, name)
    open(p, "w").close()
    os.chown(p, uid, gid)
    print("host %s %d:%d guest %s" % (name, uid, gid, owner(os.path.join(mnt, name))))
listed = {e.name: "%d:%d" % (e.stat(follow_symlinks=False).st_uid, e.stat(follow_symlinks=False).st_gid) for e in os.scandir(mnt)}
print("listed h-map %s h-squash %s" % (listed["h-map"], listed["h-squash"]))
""";

    [Fact]
    public void EveryForm_TranslatesOwnersBothWays_AndForbiddenGuestIdsAreRefusedWithEperm()
    {
        using var share = MountedShare.Start(
            "--translate-uid", "map:1000:2000:10",
            "--translate-uid", "squash-host:5000:65534:100",
            "--translate-uid", "forbid-guest:4000:10",
            "--translate-gid", "squash-guest:500:7000:100",
            "--translate-gid", "guest:100:200:5",
            "--translate-gid", "host:300:400:5",
            "--translate-gid", "forbid-guest:4000:10");
        var lines = FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", TranslateScript, share.MountPoint, share.Source)
            .Trim().Split('\n');
        Assert.Equal(
        [
            // map: guest 1003 is host 2003 and shows back as 1003
            "chown c-map 1003:0 host 2003:0 guest 1003:0",
            // squash-guest: every gid of 500..599 is host 7000, which no host rule maps back
            "chown c-squash 0:550 host 0:7000 guest 0:7000",
            // guest: 102 -> 202 one way only; host 202 is shown as itself
            "chown c-guest 0:102 host 0:202 guest 0:202",
            // no rule: the same id on both sides
            "chown c-none 77:88 host 77:88 guest 77:88",
            "create as 1002:101 ok",
            "created u-file host 2002:201 guest 1002:201",
            "created u-dir host 2002:201 guest 1002:201",
            "created u-fifo host 2002:201 guest 1002:201",
            "created u-link host 2002:201 guest 1002:201",
            // LINK's reply carries the owner translated too
            "linked u-hard guest 1002:201",
            "create as forbidden uid 4005 EPERM",
            "create as forbidden gid 4005 EPERM",
            "exists f-uid False f-gid False",
            "chown to forbidden 4005:-1 EPERM",
            "chown to forbidden -1:4009 EPERM",
            "after forbidden chowns host 77:88",
            // map back: host 2005 is 1005
            "host h-map 2005:0 guest 1005:0",
            // squash-host: host uids 5000..5099 all show as 65534; host: gid 302 shows as 402
            "host h-squash 5050:302 guest 65534:402",
            // guest rules never apply host -> guest: host 1102 and 202 show as themselves
            "host h-guest 1102:202 guest 1102:202",
            "host h-none 1003:7000 guest 1003:7000",
            "listed h-map 1005:0 h-squash 65534:402",
        ], lines);
    }

    /// <summary>
    /// argv: dir. A directory owned by root and group 3000 (mode 0770, or 02770 with set-group-ID), where only group
    /// 3000 may write; then uid 1000 with primary group 1000 creates a file, a directory, a FIFO and a symlink there,
    /// once with 3000 as a supplementary group and once without. Prints each result and the new inodes' owners.
    /// </summary>
    private const string SuppGroupScript = """
import errno, os, sys
base = sys.argv[1]
def attempt(d, supp):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(supp)
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            open(os.path.join(d, "file"), "w").close()
            os.mkdir(os.path.join(d, "dir"))
            os.mkfifo(os.path.join(d, "fifo"))
            os.symlink("file", os.path.join(d, "link"))
            os._exit(0)
        except OSError as e:
            os._exit(100 + e.errno)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else errno.errorcode.get(code - 100, str(code))
for mode in (0o770, 0o2770):
    for supp in ([3000], [5, 3000], [5]):
        d = os.path.join(base, "team-%o-%s" % (mode, "-".join(map(str, supp))))
        os.mkdir(d)
        os.chown(d, 0, 3000)
        os.chmod(d, mode)
        result = attempt(d, supp)
        owners = " ".join("%s=%d:%d" % (n, os.lstat(os.path.join(d, n)).st_uid, os.lstat(os.path.join(d, n)).st_gid)
                          for n in ("file", "dir", "fifo", "link") if os.path.lexists(os.path.join(d, n)))
        print("%o groups %s: %s %s" % (mode, supp, result, owners))
""";

    [Fact]
    public void AUserWritingThroughASupplementaryGroupOnly_CreatesAsOnAPlainDirectory_WithTheSameGroup()
    {
        using var share = MountedShare.Start();
        var plain = FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", SuppGroupScript, share.LocalDir).Trim();
        var mounted = FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", SuppGroupScript, share.MountPoint).Trim();
        Assert.Contains("770 groups [3000]: ok file=1000:1000 dir=1000:1000 fifo=1000:1000 link=1000:1000", plain);
        Assert.Contains("2770 groups [5, 3000]: ok file=1000:3000 dir=1000:3000 fifo=1000:3000 link=1000:3000", plain);
        Assert.Contains("770 groups [5]: EACCES", plain);
        Assert.Equal(plain, mounted);
        // The host kernel took FUSE_CREATE_SUPP_GROUP (flags2 bit 2, bit 34 of the session's flags as logged).
        var flags = System.Text.RegularExpressions.Regex.Match(share.DaemonLog, "flags 0x([0-9a-f]+)");
        Assert.True(flags.Success, share.DaemonLog);
        Assert.NotEqual(0UL, ulong.Parse(flags.Groups[1].Value, System.Globalization.NumberStyles.HexNumber) & (ulong)Hypervisor.Protocol.Fuse.InitFlags.CreateSuppGroup);
    }

    [Fact]
    public void TheSupplementaryGroupIsTranslatedToo()
    {
        // Guest group 3000 is host group 6000: the host directory belongs to 6000, the caller's group list says 3000.
        using var share = MountedShare.Start("--translate-gid", "map:3000:6000:1", "--translate-uid", "map:1000:2000:1");
        const string script = """
import os, sys
mnt, src = sys.argv[1], sys.argv[2]
os.mkdir(src)
os.chown(src, 0, 6000)
os.chmod(src, 0o2770)
st = os.stat(mnt)
print("dir %d:%d" % (st.st_uid, st.st_gid))
pid = os.fork()
if pid == 0:
    try:
        os.setgroups([3000])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        open(os.path.join(mnt, "file"), "w").close()
        os._exit(0)
    except OSError as e:
        os._exit(100 + e.errno)
_, status = os.waitpid(pid, 0)
print("exit %d" % os.WEXITSTATUS(status))
for side, d in (("guest", mnt), ("host", src)):
    st = os.stat(os.path.join(d, "file"))
    print("%s %d:%d" % (side, st.st_uid, st.st_gid))
""";
        var output = FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", script, Path.Combine(share.MountPoint, "team"), Path.Combine(share.Source, "team")).Trim();
        // Without the group, uid 1000 (host 2000) could not write a 0770 directory of host group 6000.
        Assert.Equal("dir 0:3000\nexit 0\nguest 1000:3000\nhost 2000:6000", output);
    }
}
