using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Share;
using Hypervisor.Vdev.Config;

namespace Hypervisor.Vdev.Tests.Config;

public class VmConfigParserTests
{
    private static string ExampleFile => Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "config", "example.vm.conf");

    [Fact]
    public void ShippedExampleDeclaresTwoShares()
    {
        var shares = VmConfigParser.ParseFile(ExampleFile);
        Assert.Equal(2, shares.Count);
        Assert.Equal("hostshare", shares[0].Settings.Tag);
        Assert.Equal("/srv/vm/shared", shares[0].Settings.SharedDir);
        Assert.Equal("/run/vdev/hostshare.sock", shares[0].Settings.SocketPath);
        Assert.False(shares[0].Settings.DirectIo);
        Assert.Equal("media", shares[1].Settings.Tag);
        Assert.True(shares[1].Settings.DirectIo);
        Assert.True(shares[1].Settings.Readonly);
        Assert.Equal(2u, shares[1].Settings.RequestQueues);
        Assert.Equal(["photos"], shares[1].Settings.Allow);
        Assert.Equal("/run/vdev/media.sock.ctl", shares[1].Settings.EffectiveControlSocket());
    }

    [Fact]
    public void XattrmapPosixAclAndSecurityLabel_AreKeysOfTheFile_AndReachTheLauncher()
    {
        var shares = VmConfigParser.Parse("""
            vdev virtio-fs
                host_path /a
                tag a
                socket /tmp/a.sock
                xattrmap :prefix:all:trusted.:user.virtiofs.: :ok:all:::
                posix_acl on
                security_label
            """, "vm.conf");
        var settings = shares[0].Settings;
        Assert.Equal(":prefix:all:trusted.:user.virtiofs.: :ok:all:::", settings.Xattrmap);
        Assert.True(settings.PosixAcl && settings.SecurityLabel && settings.Xattr);
        var args = LaunchedShare.LauncherArguments(settings, "RING", "CTL");
        Assert.Equal(["--xattrmap", ":prefix:all:trusted.:user.virtiofs.: :ok:all:::"], args.SkipWhile(a => a != "--xattrmap").Take(2));
        Assert.Contains("--posix-acl", args);
        Assert.Contains("--security-label", args);

        var bad = Assert.Throws<ConfigException>(() => VmConfigParser.Parse("vdev virtio-fs\n    host_path /a\n    tag a\n    socket /s\n    xattrmap :map:x\n", "vm.conf"));
        Assert.Equal("vm.conf:5: xattrmap ':map:x' is not an xattr map: rule 1 (map) is incomplete; write it as :map:key:prepend:, ending with the separator.", bad.Message);
    }

    [Fact]
    public void FdCacheSizeAndQueueCpusAreLeftOutUnlessGiven_QueueCpusCheckedWhicheverLineComesFirst()
    {
        var shares = VmConfigParser.Parse("""
            vdev virtio-fs
                host_path /a
                tag a
                socket /tmp/a.sock
            vdev virtio-fs
                host_path /b
                tag b
                queue_cpus 0-1
                socket /tmp/b.sock
                fd_cache_size 20000
                num_req_queues 2
            """, "vm.conf");
        Assert.False(shares[0].Settings.HasFdCacheSize);
        Assert.Null(shares[0].Settings.PinnedCpus());
        Assert.Equal(20000u, shares[1].Settings.FdCacheSize);
        Assert.Equal([0, 1], shares[1].Settings.PinnedCpus()!.Cpus);
        Assert.Equal(["--queue-cpus", "0,1"], LaunchedShare.LauncherArguments(shares[1].Settings, "RING", "CTL").SkipWhile(a => a != "--queue-cpus").Take(2));
    }

    [Fact]
    public void FileHandleSubmountAndFeatureKeys_AreRead()
    {
        var shares = VmConfigParser.Parse("""
            vdev virtio-fs
                host_path /a
                tag a
                socket /tmp/a.sock
            vdev virtio-fs
                host_path /b
                tag b
                socket /tmp/b.sock
                announce_submounts off
                inode_file_handles mandatory
                preserve_noatime on
                no_readdirplus
                killpriv_v2 off
                allow_mmap yes
                socket_group kvm
            """, "vm.conf");
        var a = shares[0].Settings;
        Assert.True(a.AnnouncesSubmounts());
        Assert.True(a.HandlesKillprivV2());
        Assert.False(a.PreserveNoatime || a.NoReaddirplus || a.AllowMmap);
        var b = shares[1].Settings;
        Assert.False(b.AnnouncesSubmounts());
        Assert.Equal(InodeFileHandles.Mandatory, b.InodeFileHandles);
        Assert.True(b.PreserveNoatime && b.NoReaddirplus && !b.HandlesKillprivV2() && b.AllowMmap);
        Assert.Equal("kvm", b.SocketGroup);
        var e = Assert.Throws<ConfigException>(() => VmConfigParser.Parse("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n inode_file_handles always\n", "vm.conf"));
        Assert.Equal("vm.conf:5: inode_file_handles 'always' is not a file handle mode; use never, prefer or mandatory.", e.Message);
    }

    [Fact]
    public void SeveralRequestQueuesGetACpuEachByDefault_NoneLeavesThemUnpinned()
    {
        var allowed = QueueCpus.AllowedCpus();
        Assert.True(allowed.Count >= 2, "this test needs two CPUs");
        var shares = VmConfigParser.Parse("""
            vdev virtio-fs
                host_path /a
                tag a
                socket /tmp/a.sock
                num_req_queues 2
            vdev virtio-fs
                host_path /b
                tag b
                queue_cpus none
                socket /tmp/b.sock
                num_req_queues 2
            vdev virtio-fs
                host_path /c
                tag c
                socket /tmp/c.sock
                num_req_queues 2
                queue_cpus 0
                queue_cpus none
            """, "vm.conf");
        Assert.Equal([allowed[0], allowed[1]], shares[0].Settings.PinnedCpus()!.Cpus);
        Assert.Equal(["--queue-cpus", $"{allowed[0]},{allowed[1]}"], LaunchedShare.LauncherArguments(shares[0].Settings, "RING", "CTL").SkipWhile(a => a != "--queue-cpus").Take(2));
        Assert.Null(shares[1].Settings.PinnedCpus());
        Assert.DoesNotContain("--queue-cpus", LaunchedShare.LauncherArguments(shares[1].Settings, "RING", "CTL"));
        Assert.Null(shares[2].Settings.PinnedCpus());
    }

    [Fact]
    public void SharesPlacedByDefault_TakeTheCpusInTurn_OthersDoNotMoveTheTurn()
    {
        var allowed = QueueCpus.AllowedCpus();
        Assert.True(allowed.Count >= 2, "this test needs two CPUs");
        int[] From(int first, int count) => [.. Enumerable.Range(first, count).Select(i => allowed[i % allowed.Count])];
        var shares = VmConfigParser.Parse("""
            vdev virtio-fs
                host_path /a
                tag a
                socket /tmp/a.sock
                num_req_queues 3
            vdev virtio-fs
                host_path /b
                tag b
                socket /tmp/b.sock
            vdev virtio-fs
                host_path /c
                tag c
                socket /tmp/c.sock
                num_req_queues 2
                queue_cpus none
            vdev virtio-fs
                host_path /d
                tag d
                socket /tmp/d.sock
                num_req_queues 3
            """, "vm.conf");
        Assert.Equal(From(0, 3), shares[0].Settings.PinnedCpus()!.Cpus);
        Assert.Null(shares[1].Settings.PinnedCpus());
        Assert.Null(shares[2].Settings.PinnedCpus());
        Assert.Equal(From(3, 3), shares[3].Settings.PinnedCpus()!.Cpus);
    }

    [Fact]
    public void OtherDevicesAndVmOptionsAreSkipped()
    {
        var shares = VmConfigParser.Parse("""
            system vm1
            ram 1G
            vdev virtio-net
                mac 00:11:22:33:44:55
            vdev virtio-fs
                host_path /a
                tag a
                socket /tmp/a.sock
            cpu
            """, "vm.conf");
        Assert.Single(shares);
    }

    [Theory]
    [InlineData("vdev virtio-fs\n tag a\n socket /s\n", 1, "no host_path")]
    [InlineData("vdev virtio-fs\n host_path /a\n socket /s\n", 1, "no tag")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n", 1, "no socket")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n bogus 1\n", 5, "unknown virtio-fs option 'bogus'")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n num_req_queues 0\n", 5, "num_req_queues '0' is not a whole number from 1 to 16.")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n queue_size 1000\n", 5, "power of two")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n fd_cache_size 8\n", 5, "fd_cache_size '8' is not a whole number from 16 to 1048576.")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n queue_cpus 0,x\n", 5, "queue_cpus '0,x' is not a CPU list")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n queue_cpus 0\n socket /s\n num_req_queues 2\n", 4, "queue_cpus 0 lists 1 CPU for 2 request queues; give one CPU per request queue.")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n queue_cpus 1023\n", 5, "queue_cpus 1023 names CPU 1023, which this process may not run on (allowed: ")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n cache sometimes\n", 5, "cache 'sometimes' is not a cache policy; use never, metadata, auto or always.")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n directio maybe\n", 5, "on/off")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n allow ../etc\n", 5, "inside the share")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag 0123456789012345678901234567890123456\n socket /s\n", 3, "36 bytes")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n translate_uid map:1:2:x\n", 5, "translate_uid 'map:1:2:x' has 'x' where an id from 0 to 4294967295 belongs.")]
    [InlineData("vdev virtio-fs\n host_path /a\n tag a\n socket /s\n translate_gid host:0:5:10\n translate_gid squash-host:9:1:1\n", 6, "translate_gid 'squash-host:9:1:1' maps host ids 9 to 9 that 'host:0:5:10' maps already; the host ranges of two rules must not overlap.")]
    [InlineData("ram 1G\n", 0, "no 'vdev virtio-fs' block")]
    [InlineData("vdev\n", 1, "needs a device type")]
    public void MistakesNameFileLineAndWhatIsExpected(string text, int line, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => VmConfigParser.Parse(text, "vm.conf"));
        Assert.Equal(line, e.Line);
        Assert.StartsWith($"vm.conf:{line}: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void DuplicateTagsAndSocketsAreRefused()
    {
        var e = Assert.Throws<ConfigException>(() => VmConfigParser.Parse(
            "vdev virtio-fs\n host_path /a\n tag a\n socket /s1\nvdev virtio-fs\n host_path /b\n tag a\n socket /s2\n", "vm.conf"));
        Assert.Contains("tag 'a' is already used by the share at vm.conf:1", e.Message);
        Assert.Equal(5, e.Line);
        e = Assert.Throws<ConfigException>(() => VmConfigParser.Parse(
            "vdev virtio-fs\n host_path /a\n tag a\n socket /s\nvdev virtio-fs\n host_path /b\n tag b\n socket /s\n", "vm.conf"));
        Assert.Contains("socket /s is already used", e.Message);
    }

    [Fact]
    public void MissingFileIsAClearError()
    {
        var e = Assert.Throws<ConfigException>(() => VmConfigParser.ParseFile("/nonexistent/vm.conf"));
        Assert.Contains("cannot read the configuration file", e.Message);
    }
}
